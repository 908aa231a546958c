//! VirtualService: the HTTP, TLS and TCP routes, their matches and their
//! weighted destinations. The per-route HTTP policies are in `http_policy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    CorsPolicy, Destination, Headers, HttpDirectResponse, HttpFaultInjection, HttpRedirect,
    HttpRetry, HttpRewrite, MESH_GATEWAY, check_cidr, check_export_to, check_host, dns_label,
    is_false, is_zero, is_zero_i32,
};
use crate::common::{Ctx, Duration, Labels, Percent, StringMatch, Validate, percent_or_number};

/// Routing rules for traffic addressed to `hosts`, applied by the sidecars
/// (`mesh`) and/or the named gateways.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Empty means `mesh` only; list `mesh` explicitly to add gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Ordered: the first rule whose match succeeds wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// OR-ed; an empty list matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Absent means no timeout at all (Envoy's default of 15 s is disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// The old integer form of `mirrorPercentage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<u32>,
    #[serde(
        default,
        deserialize_with = "percent_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub mirror_percentage: Option<Percent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMirrorPolicy {
    #[serde(default)]
    pub destination: Destination,
    #[serde(
        default,
        deserialize_with = "percent_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
}

/// All set fields must match (AND).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Lower-case names; an empty match (`{}`) means "present".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stat_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    #[serde(default)]
    pub destination: Destination,
    /// Relative share; a lone destination gets everything whatever its weight.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub weight: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Hands the route over to another VirtualService (which has no hosts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delegate {
    #[serde(default)]
    pub name: String,
    /// Empty means the delegating VirtualService's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<L4MatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub r#match: Vec<TlsMatchAttributes>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    #[serde(default)]
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub weight: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4MatchAttributes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// The listener (or gateway) port, not the destination's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_subnet: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsMatchAttributes {
    /// Wildcards allowed; must be a subset of the VirtualService's hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_namespace: String,
}

// === impl VirtualService ===

impl Validate for VirtualService {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.hosts.is_empty() {
            cx.error("spec.hosts", "at least one host is required");
        }
        let for_mesh = self.gateways.is_empty() || self.gateways.iter().any(|g| g == MESH_GATEWAY);
        for (i, host) in self.hosts.iter().enumerate() {
            let field = format!("spec.hosts[{i}]");
            if host == "*" && for_mesh {
                cx.error(
                    field,
                    "wildcard host \"*\" is not allowed for a VirtualService bound to the mesh \
                     (list only gateways in spec.gateways, or name the hosts)",
                );
            } else {
                check_host(cx, &field, host);
            }
        }
        for (i, gateway) in self.gateways.iter().enumerate() {
            check_gateway_ref(cx, &format!("spec.gateways[{i}]"), gateway);
        }
        check_export_to(cx, "spec.exportTo", &self.export_to);
        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            cx.error(
                "spec",
                "at least one of http, tls or tcp routes is required",
            );
        }
        for (i, route) in self.http.iter().enumerate() {
            route.validate_at(cx, &format!("spec.http[{i}]"));
        }
        for (i, route) in self.tls.iter().enumerate() {
            route.validate_at(cx, &format!("spec.tls[{i}]"));
        }
        for (i, route) in self.tcp.iter().enumerate() {
            route.validate_at(cx, &format!("spec.tcp[{i}]"));
        }
    }
}

/// `mesh`, `name` or `namespace/name`.
fn check_gateway_ref(cx: &mut Ctx<'_>, field: &str, gateway: &str) {
    let name = match gateway.split_once('/') {
        Some((ns, name)) => {
            if !dns_label(ns) {
                cx.error(field, format!("invalid namespace in gateway {gateway:?}"));
            }
            name
        }
        None => gateway,
    };
    if name.is_empty() {
        cx.error(field, "gateway name must not be empty");
    } else if !name.split('.').all(dns_label) {
        cx.error(field, format!("invalid gateway name {gateway:?}"));
    }
}

impl HttpRoute {
    /// The share of requests mirrored by `mirror`, in percent.
    pub fn mirror_share(&self) -> f64 {
        match (self.mirror_percentage, self.mirror_percent) {
            (Some(p), _) => p.value,
            (None, Some(n)) => f64::from(n),
            (None, None) => 100.0,
        }
    }

    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let actions: Vec<&str> = [
            (!self.route.is_empty(), "route"),
            (self.redirect.is_some(), "redirect"),
            (self.direct_response.is_some(), "directResponse"),
            (self.delegate.is_some(), "delegate"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        match actions.as_slice() {
            [] => cx.error(
                field,
                "one of route, redirect, directResponse or delegate is required",
            ),
            [_] => {}
            [first, second, ..] => cx.error(
                format!("{field}.{second}"),
                format!("{second} cannot be combined with {first}"),
            ),
        }
        if self.rewrite.is_some() && self.redirect.is_some() {
            cx.error(
                format!("{field}.rewrite"),
                "rewrite cannot be combined with redirect",
            );
        }
        for (i, m) in self.r#match.iter().enumerate() {
            m.validate_at(cx, &format!("{field}.match[{i}]"));
        }
        let dests: Vec<_> = self
            .route
            .iter()
            .map(|r| (&r.destination, r.weight))
            .collect();
        validate_destinations(cx, &format!("{field}.route"), &dests);
        for (i, r) in self.route.iter().enumerate() {
            if let Some(h) = &r.headers {
                h.validate_at(cx, &format!("{field}.route[{i}].headers"));
            }
        }
        if let Some(redirect) = &self.redirect {
            redirect.validate_at(cx, &format!("{field}.redirect"));
        }
        if let Some(direct) = &self.direct_response {
            direct.validate_at(cx, &format!("{field}.directResponse"));
        }
        if let Some(delegate) = &self.delegate
            && delegate.name.is_empty()
        {
            cx.error(
                format!("{field}.delegate.name"),
                "delegate name is required",
            );
        }
        if let Some(rewrite) = &self.rewrite {
            rewrite.validate_at(cx, &format!("{field}.rewrite"));
        }
        if let Some(retries) = &self.retries {
            retries.validate_at(cx, &format!("{field}.retries"));
        }
        if let Some(fault) = &self.fault {
            fault.validate_at(cx, &format!("{field}.fault"));
        }
        self.validate_mirrors(cx, field);
        if let Some(cors) = &self.cors_policy {
            cors.validate_at(cx, &format!("{field}.corsPolicy"));
        }
        if let Some(h) = &self.headers {
            h.validate_at(cx, &format!("{field}.headers"));
        }
    }

    fn validate_mirrors(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(mirror) = &self.mirror {
            mirror.validate_at(cx, &format!("{field}.mirror"));
            if !self.mirrors.is_empty() {
                cx.error(
                    format!("{field}.mirrors"),
                    "set only one of mirror and mirrors",
                );
            }
        }
        if let Some(p) = &self.mirror_percentage {
            cx.percent(format!("{field}.mirrorPercentage"), p);
        }
        if let Some(n) = self.mirror_percent
            && n > 100
        {
            cx.error(
                format!("{field}.mirrorPercent"),
                format!("mirrorPercent {n} is outside 0–100"),
            );
        }
        for (i, m) in self.mirrors.iter().enumerate() {
            m.destination
                .validate_at(cx, &format!("{field}.mirrors[{i}].destination"));
            if let Some(p) = &m.percentage {
                cx.percent(format!("{field}.mirrors[{i}].percentage"), p);
            }
        }
    }
}

/// Weighted destinations of an HTTP, TLS or TCP route.
fn validate_destinations(cx: &mut Ctx<'_>, field: &str, dests: &[(&Destination, i32)]) {
    for (i, (dest, weight)) in dests.iter().enumerate() {
        dest.validate_at(cx, &format!("{field}[{i}].destination"));
        if *weight < 0 {
            cx.error(
                format!("{field}[{i}].weight"),
                format!("weight {weight} is negative"),
            );
        }
    }
    if dests.len() > 1 && dests.iter().all(|(_, w)| *w == 0) {
        cx.error(
            field,
            "weights of all destinations are zero: give at least one a positive weight",
        );
    }
}

impl HttpMatchRequest {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        for (name, m) in [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(m) = m {
                m.validate_at(cx, &format!("{field}.{name}"));
            }
        }
        header_matches(cx, &format!("{field}.headers"), &self.headers);
        header_matches(
            cx,
            &format!("{field}.withoutHeaders"),
            &self.without_headers,
        );
        for (name, m) in &self.query_params {
            m.validate_at(cx, &format!("{field}.queryParams.{name}"));
        }
        if self.port != 0 {
            cx.port(format!("{field}.port"), self.port);
        }
        cx.labels(&format!("{field}.sourceLabels"), &self.source_labels);
        for (i, gateway) in self.gateways.iter().enumerate() {
            check_gateway_ref(cx, &format!("{field}.gateways[{i}]"), gateway);
        }
    }
}

/// Envoy lower-cases header names before matching, so an upper-case name
/// in a match could never match.
fn header_matches(cx: &mut Ctx<'_>, field: &str, headers: &BTreeMap<String, StringMatch>) {
    for (name, m) in headers {
        let f = format!("{field}.{name}");
        if name.is_empty() {
            cx.error(&f, "header name must not be empty");
        } else if name.chars().any(|c| c.is_ascii_uppercase()) {
            cx.error(&f, format!("header name {name:?} must be lower case"));
        }
        m.validate_at(cx, &f);
    }
}

impl TcpRoute {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        for (i, m) in self.r#match.iter().enumerate() {
            let f = format!("{field}.match[{i}]");
            l4_match(
                cx,
                &f,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
            if !m.source_subnet.is_empty() {
                check_cidr(cx, &format!("{f}.sourceSubnet"), &m.source_subnet);
            }
        }
        validate_l4_route(cx, field, &self.route);
    }
}

impl TlsRoute {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.r#match.is_empty() {
            cx.error(
                format!("{field}.match"),
                "a TLS route needs at least one match with sniHosts",
            );
        }
        for (i, m) in self.r#match.iter().enumerate() {
            let f = format!("{field}.match[{i}]");
            if m.sni_hosts.is_empty() {
                cx.error(format!("{f}.sniHosts"), "sniHosts is required");
            }
            for (j, host) in m.sni_hosts.iter().enumerate() {
                check_host(cx, &format!("{f}.sniHosts[{j}]"), host);
            }
            l4_match(
                cx,
                &f,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        validate_l4_route(cx, field, &self.route);
    }
}

fn l4_match(
    cx: &mut Ctx<'_>,
    field: &str,
    subnets: &[String],
    port: u32,
    source_labels: &Labels,
    gateways: &[String],
) {
    for (i, subnet) in subnets.iter().enumerate() {
        check_cidr(cx, &format!("{field}.destinationSubnets[{i}]"), subnet);
    }
    if port != 0 {
        cx.port(format!("{field}.port"), port);
    }
    cx.labels(&format!("{field}.sourceLabels"), source_labels);
    for (i, gateway) in gateways.iter().enumerate() {
        check_gateway_ref(cx, &format!("{field}.gateways[{i}]"), gateway);
    }
}

fn validate_l4_route(cx: &mut Ctx<'_>, field: &str, route: &[RouteDestination]) {
    if route.is_empty() {
        cx.error(
            format!("{field}.route"),
            "at least one route destination is required",
        );
    }
    let dests: Vec<_> = route.iter().map(|r| (&r.destination, r.weight)).collect();
    validate_destinations(cx, &format!("{field}.route"), &dests);
}
