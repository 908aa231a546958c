//! `networking.istio.io`: VirtualService, DestinationRule, Gateway,
//! ServiceEntry, Sidecar, WorkloadEntry and WorkloadGroup, as their `spec:`
//! bodies.
//!
//! Every field of Istio's protos is modelled so that valid YAML loads; unknown
//! fields and unknown enum values are rejected at deserialization, the rest
//! of Istio's webhook and CRD rules live in the [`Validate`] impls.
//!
//! One file per kind; the types and checks that several kinds share live
//! here.
//!
//! [`Validate`]: crate::common::Validate

use std::{net::IpAddr, time::Duration as StdDuration};

use serde::{Deserialize, Serialize};

use crate::common::{Ctx, Duration, Labels, PortSelector};

mod destination_rule;
mod gateway;
mod http_policy;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use self::{
    destination_rule::{
        ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule, Distribute,
        Failover, H2UpgradePolicy, HttpCookie, HttpSettings, LoadBalancerSettings,
        LocalityLbSetting, Maglev, OutlierDetection, PortTrafficPolicy, RetryBudget, RingHash,
        SimpleLb, Subset, TcpKeepalive, TcpSettings, TlsMode, TrafficPolicy,
    },
    gateway::{Gateway, GatewayPort, Server, ServerTlsMode, ServerTlsSettings},
    http_policy::{
        Abort, CorsPolicy, Delay, DerivePort, HeaderOperations, Headers, HttpBody,
        HttpDirectResponse, HttpFaultInjection, HttpRedirect, HttpRetry, HttpRewrite, RegexRewrite,
    },
    service_entry::{
        Location, Resolution, ServiceEntry, ServicePort, WorkloadEntry, WorkloadGroup,
        WorkloadGroupMeta,
    },
    sidecar::{
        IstioEgressListener, IstioIngressListener, OutboundMode, OutboundTrafficPolicy, Sidecar,
        SidecarPort,
    },
    virtual_service::{
        Delegate, HttpMatchRequest, HttpMirrorPolicy, HttpRoute, HttpRouteDestination,
        L4MatchAttributes, RouteDestination, TcpRoute, TlsMatchAttributes, TlsRoute,
        VirtualService,
    },
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Short names are expanded with the VirtualService's namespace.
    #[serde(default)]
    pub host: String,
    /// A DestinationRule subset name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// Only needed when the service exposes several ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `workloadSelector: {labels: …}` of DestinationRule, Sidecar and
/// ServiceEntry (unlike the `matchLabels` of the security kinds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabels {
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

// === helpers ===

/// The gateway name that stands for every sidecar in the mesh.
pub const MESH_GATEWAY: &str = "mesh";

/// What a ServiceEntry or Sidecar port may declare: the gateway protocols
/// plus those a gateway cannot terminate.
const SERVICE_PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "MONGO",
    "TCP",
    "TLS",
    "MYSQL",
    "REDIS",
    "UDP",
    "HTTP_PROXY",
];

/// Expands a short host name with the namespace of the object that wrote it
/// (not of the service): `reviews` in `default` is
/// `reviews.default.svc.cluster.local`. Dotted names and wildcards are kept.
pub fn expand_host(host: &str, namespace: &str) -> String {
    if host.is_empty() || host.contains('.') || host.starts_with('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// Whether `host` falls under `pattern`: equal (ignoring case), `*`, or a
/// `*.suffix` wildcard covering any subdomain (but not `suffix` itself).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        let suffix_starts_label = suffix.starts_with('.');
        return suffix_starts_label
            && host.len() > suffix.len()
            && host
                .get(host.len() - suffix.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix));
    }
    pattern.eq_ignore_ascii_case(host)
}

fn dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be
/// `*`, or start with `*` / `*-`.
fn wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".into());
    }
    if host.len() > 255 {
        return Err(format!("host {host:?} is longer than 255 characters"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    let first_ok = first == "*"
        || dns_label(
            first
                .strip_prefix("*-")
                .or_else(|| first.strip_prefix('*'))
                .unwrap_or(first),
        );
    if !first_ok {
        return Err(format!("host {host:?} is invalid: label {first:?}"));
    }
    if let Some(rest) = rest
        && let Some(bad) = rest.split('.').find(|l| !dns_label(l))
    {
        return Err(format!("host {host:?} is invalid: label {bad:?}"));
    }
    Ok(())
}

fn check_host(cx: &mut Ctx<'_>, field: &str, host: &str) {
    if let Err(why) = wildcard_domain(host) {
        cx.error(field, why);
    }
}

/// An IP address or CIDR block.
fn check_cidr(cx: &mut Ctx<'_>, field: &str, value: &str) {
    let (ip, prefix) = match value.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (value, None),
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        cx.error(
            field,
            format!("{value:?} is not an IP address or CIDR block"),
        );
        return;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(prefix) = prefix
        && !prefix.parse::<u8>().is_ok_and(|p| p <= max)
    {
        cx.error(field, format!("{value:?} has an invalid prefix length"));
    }
}

/// `*`, `.`, `~` or a namespace name.
fn check_export_to(cx: &mut Ctx<'_>, field: &str, export_to: &[String]) {
    for (i, ns) in export_to.iter().enumerate() {
        let ok = matches!(ns.as_str(), "*" | "." | "~")
            || (dns_label(ns) && !ns.chars().any(|c| c.is_ascii_uppercase()));
        if !ok {
            cx.error(
                format!("{field}[{i}]"),
                format!("exportTo {ns:?} must be \"*\", \".\" or a namespace name"),
            );
        }
    }
}

/// Istio rejects durations below a millisecond where a zero would make
/// Envoy misbehave (timeouts that fire at once, intervals that spin).
fn min_duration(cx: &mut Ctx<'_>, field: &str, d: Option<&Duration>) {
    if let Some(d) = d
        && d.as_std() < StdDuration::from_millis(1)
    {
        cx.error(field, format!("duration {d} must be at least 1ms"));
    }
}

fn percent_0_100(cx: &mut Ctx<'_>, field: &str, name: &str, value: Option<i32>) {
    if let Some(n) = value
        && !(0..=100).contains(&n)
    {
        cx.error(field, format!("{name} {n} is outside 0–100"));
    }
}

fn check_protocol(cx: &mut Ctx<'_>, field: &str, protocol: &str, allowed: &[&str]) {
    if protocol.is_empty() {
        cx.error(field, "protocol is required");
    } else if !allowed.iter().any(|p| p.eq_ignore_ascii_case(protocol)) {
        cx.error(
            field,
            format!(
                "unknown protocol {protocol:?}: expected one of {}",
                allowed.join(", ")
            ),
        );
    }
}

/// `host` or `namespace/host` (namespace `*`, `.` or a name; `~` too on a
/// Sidecar), where host is `*` or a DNS name with an optional wildcard.
fn check_namespaced_host(cx: &mut Ctx<'_>, field: &str, value: &str, need_namespace: bool) {
    let host = match value.split_once('/') {
        Some((ns, host)) => {
            let ns_ok = matches!(ns, "*" | ".")
                || (need_namespace && ns == "~")
                || (dns_label(ns) && !ns.chars().any(|c| c.is_ascii_uppercase()));
            if !ns_ok {
                cx.error(field, format!("invalid namespace {ns:?} in host {value:?}"));
            }
            host
        }
        None if need_namespace => {
            cx.error(
                field,
                format!("host {value:?} must be of the form namespace/dnsName"),
            );
            return;
        }
        None => value,
    };
    if host != "*" {
        check_host(cx, field, host);
    }
}

// === impl Destination ===

impl Destination {
    /// The selected port, if one is given.
    pub fn port_number(&self) -> Option<u32> {
        self.port.as_ref().map(|p| p.number).filter(|&n| n != 0)
    }

    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.host.is_empty() {
            cx.error(format!("{field}.host"), "destination host is required");
        } else {
            check_host(cx, &format!("{field}.host"), &self.host);
        }
        if let Some(port) = &self.port {
            cx.port(format!("{field}.port.number"), port.number);
        }
    }
}

#[cfg(test)]
mod tests;
