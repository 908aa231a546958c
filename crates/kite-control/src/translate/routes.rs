//! VirtualService rules (and Istio's default route where none applies) as
//! Envoy routes.

use std::collections::HashSet;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{
                DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
                header_value_option::HeaderAppendAction,
            },
            route::v3::{
                DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction,
                RetryPolicy, Route, RouteAction, RouteMatch, VirtualHost, WeightedCluster,
                header_matcher::HeaderMatchSpecifier,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                redirect_action::{
                    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
                },
                retry_policy::RetryHostPredicate,
                route::Action,
                route_action::{
                    ClusterSpecifier, HashPolicy, HostRewriteSpecifier, RequestMirrorPolicy,
                    hash_policy::{self, PolicySpecifier},
                },
                route_match::PathSpecifier,
                weighted_cluster::ClusterWeight,
            },
        },
        extensions::filters::{
            common::fault::v3::{FaultDelay, fault_delay::FaultDelaySecifier},
            http::{
                cors::v3::CorsPolicy as EnvoyCors,
                fault::v3::{FaultAbort, HttpFault, fault_abort::ErrorType},
            },
        },
        r#type::{
            matcher::v3::{
                RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
            },
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{BoolValue, UInt32Value},
};
use kite_config::{
    Object, Spec, StringMatch,
    networking::{
        self, HeaderOperations, HttpMatchRequest, HttpRoute, VirtualService, expand_host,
        host_matches,
    },
};

use super::{Ctx, any, clusters, duration, outbound_cluster};
use crate::registry::contains;

/// Istio's retry policy for routes that set none.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;
pub(super) const FAULT_FILTER: &str = "envoy.filters.http.fault";
mod l4;
mod sidecar;

use l4::connect_route;
pub(super) use l4::{gateway_sni_routes, gateway_tcp_targets};
pub(super) use sidecar::{sidecar_outbound, sidecar_outbound_patch};

pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Which proxy the routes are for, for `gateways` and `match.gateways`.
#[derive(Clone, Copy)]
pub(super) enum Context<'a> {
    Mesh,
    /// `namespace/name` of the Gateway.
    Gateway(&'a str),
}

/// Virtual hosts of a gateway server: one per host of each VirtualService
/// bound to the gateway whose hosts the server admits.
pub(super) fn gateway_vhosts(
    cx: &Ctx<'_>,
    gateway: &str,
    gateway_ns: &str,
    server_hosts: &[String],
    port: u16,
    used: &mut HashSet<String>,
) -> Vec<VirtualHost> {
    let mut vhosts = Vec::new();
    for (obj, vs) in virtual_services(cx) {
        if !bound_to(vs, &obj.meta.namespace, gateway, gateway_ns) {
            continue;
        }
        for host in &vs.hosts {
            let admitted = server_hosts.iter().any(|sh| {
                let sh = sh.rsplit('/').next().unwrap_or(sh);
                host_matches(sh, host) || host_matches(host, sh)
            });
            if !admitted {
                continue;
            }
            // As Istio's gateways do: the host with any port, since the
            // Host header carries the port the client used, not the
            // gateway's.
            let mut domains = vec![host.clone()];
            if host != "*" {
                domains.push(format!("{host}:*"));
            }
            let domains: Vec<String> = domains
                .into_iter()
                .filter(|d| used.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            let key = format!("{gateway_ns}/{gateway}");
            vhosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes: vs_routes(cx, obj, vs, port, Context::Gateway(&key)),
                ..Default::default()
            });
        }
    }
    vhosts
}

fn virtual_services<'a>(
    cx: &'a Ctx<'_>,
) -> impl Iterator<Item = (&'a Object, &'a VirtualService)> + 'a {
    cx.objects(|s| match s {
        Spec::VirtualService(vs) => Some(vs),
        _ => None,
    })
}

/// Whether a VirtualService applies to the gateway `ns/name`.
fn bound_to(vs: &VirtualService, vs_ns: &str, gateway: &str, gateway_ns: &str) -> bool {
    vs.gateways
        .iter()
        .any(|g| gateway_ref_is(g, vs_ns, gateway, gateway_ns))
}

fn gateway_ref_is(reference: &str, vs_ns: &str, gateway: &str, gateway_ns: &str) -> bool {
    match reference.split_once('/') {
        Some((ns, name)) => name == gateway && (ns == gateway_ns || ns == "*"),
        None => reference == gateway && vs_ns == gateway_ns,
    }
}

/// The VirtualService for a host in the mesh: an exact host beats a
/// wildcard; among equals the first in store order wins.
fn virtual_service_for<'a>(
    cx: &'a Ctx<'_>,
    hostname: &str,
    context: Context<'_>,
) -> Option<(&'a Object, &'a VirtualService)> {
    let mesh = matches!(context, Context::Mesh);
    let candidates: Vec<_> = virtual_services(cx)
        .filter(|(_, vs)| {
            !mesh || vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
        })
        .collect();
    let expanded = |obj: &Object, h: &str| expand_host(h, &obj.meta.namespace);
    candidates
        .iter()
        .find(|(o, vs)| vs.hosts.iter().any(|h| expanded(o, h) == hostname))
        .or_else(|| {
            candidates.iter().find(|(o, vs)| {
                vs.hosts
                    .iter()
                    .any(|h| host_matches(&expanded(o, h), hostname))
            })
        })
        .copied()
}

/// The routes of one VirtualService for one port, in rule order.
fn vs_routes(
    cx: &Ctx<'_>,
    obj: &Object,
    vs: &VirtualService,
    port: u16,
    context: Context<'_>,
) -> Vec<Route> {
    let ns = obj.meta.namespace.as_str();
    let mut routes = Vec::new();
    for rule in &vs.http {
        let matches: Vec<&HttpMatchRequest> = rule
            .r#match
            .iter()
            .filter(|m| {
                let scope = Scope {
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                    gateways: &m.gateways,
                };
                scope.applies(cx, port, ns, context)
            })
            .collect();
        if !rule.r#match.is_empty() && matches.is_empty() {
            continue;
        }
        let action_route = |route_match: RouteMatch| build_route(cx, ns, rule, route_match, port);
        if matches.is_empty() {
            routes.push(action_route(prefix("/")));
        } else {
            routes.extend(matches.into_iter().map(|m| action_route(route_match(m))));
        }
    }
    routes
}

/// The match fields that select proxies or ports rather than requests,
/// shared by HTTP and TCP matches.
struct Scope<'a> {
    port: u32,
    source_labels: &'a kite_config::Labels,
    source_namespace: &'a str,
    gateways: &'a [String],
}

impl Scope<'_> {
    fn applies(&self, cx: &Ctx<'_>, port: u16, vs_ns: &str, context: Context<'_>) -> bool {
        if self.port != 0 && self.port != u32::from(port) {
            return false;
        }
        if !self.source_labels.is_empty()
            && (matches!(context, Context::Gateway(_)) || !contains(&cx.labels, self.source_labels))
        {
            return false;
        }
        if !self.source_namespace.is_empty() && self.source_namespace != cx.proxy.namespace {
            return false;
        }
        if !self.gateways.is_empty() {
            let ok = match context {
                Context::Mesh => self.gateways.iter().any(|g| g == "mesh"),
                Context::Gateway(key) => {
                    let (gns, gname) = key.split_once('/').unwrap_or(("", key));
                    self.gateways
                        .iter()
                        .any(|g| gateway_ref_is(g, vs_ns, gname, gns))
                }
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(p.to_owned())),
        ..Default::default()
    }
}

fn route_match(m: &HttpMatchRequest) -> RouteMatch {
    let mut rm = match &m.uri {
        Some(StringMatch { exact: Some(p), .. }) => RouteMatch {
            path_specifier: Some(PathSpecifier::Path(p.clone())),
            ..Default::default()
        },
        Some(StringMatch {
            prefix: Some(p), ..
        }) => prefix(p),
        Some(StringMatch { regex: Some(r), .. }) => RouteMatch {
            path_specifier: Some(PathSpecifier::SafeRegex(regex(r))),
            ..Default::default()
        },
        _ => prefix("/"),
    };
    if m.ignore_uri_case {
        rm.case_sensitive = Some(BoolValue { value: false });
    }
    let mut headers: Vec<HeaderMatcher> = m
        .headers
        .iter()
        .map(|(name, sm)| header_matcher(name, sm, false))
        .collect();
    headers.extend(
        m.without_headers
            .iter()
            .map(|(name, sm)| header_matcher(name, sm, true)),
    );
    for (pseudo, sm) in [
        (":method", &m.method),
        (":authority", &m.authority),
        (":scheme", &m.scheme),
    ] {
        if let Some(sm) = sm {
            headers.push(header_matcher(pseudo, sm, false));
        }
    }
    rm.headers = headers;
    rm.query_parameters = m
        .query_params
        .iter()
        .map(|(name, sm)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match string_matcher(sm) {
                Some(s) => QueryParameterMatchSpecifier::StringMatch(s),
                None => QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        })
        .collect();
    rm
}

fn header_matcher(name: &str, sm: &StringMatch, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        invert_match: invert,
        header_match_specifier: Some(match string_matcher(sm) {
            Some(s) => HeaderMatchSpecifier::StringMatch(s),
            // `{}` means the header is present, with any value.
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        ..Default::default()
    }
}

fn string_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    let pattern = match sm {
        StringMatch { exact: Some(v), .. } => MatchPattern::Exact(v.clone()),
        StringMatch {
            prefix: Some(v), ..
        } => MatchPattern::Prefix(v.clone()),
        StringMatch { regex: Some(v), .. } => MatchPattern::SafeRegex(regex(v)),
        _ => return None,
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_owned(),
        ..Default::default()
    }
}

/// Percent (0–100, fractional) as Envoy's parts per million.
fn fraction(percent: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

fn build_route(
    cx: &Ctx<'_>,
    ns: &str,
    rule: &HttpRoute,
    route_match: RouteMatch,
    port: u16,
) -> Route {
    let mut route = Route {
        name: rule.name.clone(),
        r#match: Some(route_match),
        ..Default::default()
    };
    if let Some(redirect) = &rule.redirect {
        route.action = Some(Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone(),
            path_rewrite_specifier: (!redirect.uri.is_empty())
                .then(|| PathRewriteSpecifier::PathRedirect(redirect.uri.clone())),
            scheme_rewrite_specifier: (!redirect.scheme.is_empty())
                .then(|| SchemeRewriteSpecifier::SchemeRedirect(redirect.scheme.clone())),
            port_redirect: redirect.port.unwrap_or(0),
            response_code: match redirect.redirect_code.unwrap_or(301) {
                302 => RedirectResponseCode::Found,
                303 => RedirectResponseCode::SeeOther,
                307 => RedirectResponseCode::TemporaryRedirect,
                308 => RedirectResponseCode::PermanentRedirect,
                _ => RedirectResponseCode::MovedPermanently,
            } as i32,
            ..Default::default()
        }));
    } else if let Some(direct) = &rule.direct_response {
        let body = direct
            .body
            .as_ref()
            .and_then(|b| b.string.clone().or_else(|| b.bytes.clone()));
        route.action = Some(Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: body.map(|s| DataSource {
                specifier: Some(data_source::Specifier::InlineString(s)),
                ..Default::default()
            }),
            ..Default::default()
        }));
    } else {
        route.action = Some(Action::Route(route_action(cx, ns, rule, port)));
    }
    if let Some(h) = &rule.headers {
        let (add, remove) = header_ops(h.request.as_ref());
        route.request_headers_to_add = add;
        route.request_headers_to_remove = remove;
        let (add, remove) = header_ops(h.response.as_ref());
        route.response_headers_to_add = add;
        route.response_headers_to_remove = remove;
    }
    if let Some(fault) = &rule.fault {
        route
            .typed_per_filter_config
            .insert(FAULT_FILTER.to_owned(), any(&http_fault(fault)));
    }
    if let Some(cors) = &rule.cors_policy {
        route
            .typed_per_filter_config
            .insert(CORS_FILTER.to_owned(), any(&cors_policy(cors)));
    }
    route
}

fn route_action(cx: &Ctx<'_>, ns: &str, rule: &HttpRoute, port: u16) -> RouteAction {
    let mut action = RouteAction::default();
    let targets: Vec<(String, u32, Option<&networking::Headers>)> = rule
        .route
        .iter()
        .map(|d| {
            let weight = if rule.route.len() == 1 {
                100
            } else {
                u32::try_from(d.weight).unwrap_or(0)
            };
            (
                cluster_for(cx, ns, &d.destination, port),
                weight,
                d.headers.as_ref(),
            )
        })
        .filter(|(_, w, _)| *w > 0)
        .collect();
    action.cluster_specifier = Some(match targets.as_slice() {
        [(cluster, _, _)] => ClusterSpecifier::Cluster(cluster.clone()),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: targets
                .iter()
                .map(|(name, weight, headers)| {
                    let (add, remove) = header_ops(headers.and_then(|h| h.request.as_ref()));
                    let (radd, rremove) = header_ops(headers.and_then(|h| h.response.as_ref()));
                    ClusterWeight {
                        name: name.clone(),
                        weight: Some(UInt32Value { value: *weight }),
                        request_headers_to_add: add,
                        request_headers_to_remove: remove,
                        response_headers_to_add: radd,
                        response_headers_to_remove: rremove,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        }),
    });
    // Istio disables the route timeout unless the VirtualService sets one.
    action.timeout = Some(duration(
        rule.timeout
            .map_or(std::time::Duration::ZERO, |t| t.as_std()),
    ));
    action.retry_policy = retry_policy(rule);
    let mirrors: Vec<(&networking::Destination, f64)> = rule
        .mirror
        .iter()
        .map(|d| (d, rule.mirror_share()))
        .chain(
            rule.mirrors
                .iter()
                .map(|m| (&m.destination, m.percentage.map_or(100.0, |p| p.value))),
        )
        .collect();
    action.request_mirror_policies = mirrors
        .into_iter()
        .map(|(d, share)| RequestMirrorPolicy {
            cluster: cluster_for(cx, ns, d, port),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(fraction(share)),
                ..Default::default()
            }),
            trace_sampled: Some(BoolValue { value: false }),
            ..Default::default()
        })
        .collect();
    if let Some(rw) = &rule.rewrite {
        if !rw.uri.is_empty() {
            action.prefix_rewrite = rw.uri.clone();
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex(&rr.r#match)),
                substitution: rr.rewrite.clone(),
            });
        }
        if !rw.authority.is_empty() {
            action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(
                rw.authority.clone(),
            ));
        }
    }
    if let Some(first) = rule.route.first() {
        action.hash_policy = hash_policy(cx, ns, &first.destination, port);
    }
    action
}

/// The cluster a destination names; the port defaults to the service's only
/// port, else the port the request came in on.
pub(super) fn cluster_for(
    cx: &Ctx<'_>,
    ns: &str,
    d: &networking::Destination,
    port: u16,
) -> String {
    let host = expand_host(&d.host, ns);
    let service = cx.registry.service(&d.host, ns);
    let port = d
        .port
        .as_ref()
        .and_then(|p| u16::try_from(p.number).ok())
        .or_else(|| match service.map(|s| s.ports.as_slice()) {
            Some([only]) => Some(only.port),
            _ => None,
        })
        .unwrap_or(port);
    outbound_cluster(port, &d.subset, &host)
}

fn retry_policy(rule: &HttpRoute) -> Option<RetryPolicy> {
    // A route that injects faults is testing failure handling; retrying
    // would hide the fault.
    if rule.fault.is_some() {
        return None;
    }
    let (attempts, retry_on, per_try) = match &rule.retries {
        Some(r) if r.attempts <= 0 => return None,
        Some(r) => (
            u32::try_from(r.attempts).unwrap_or(0),
            if r.retry_on.is_empty() {
                DEFAULT_RETRY_ON.to_owned()
            } else {
                r.retry_on.clone()
            },
            r.per_try_timeout,
        ),
        None => (DEFAULT_RETRIES, DEFAULT_RETRY_ON.to_owned(), None),
    };
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for cond in retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond.parse::<u32>() {
            Ok(code) => codes.push(code),
            Err(_) => conditions.push(cond.to_owned()),
        }
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".to_owned());
    }
    Some(RetryPolicy {
        retry_on: conditions.join(","),
        num_retries: Some(UInt32Value { value: attempts }),
        per_try_timeout: per_try.map(|d| duration(d.as_std())),
        retriable_status_codes: codes,
        // Istio retries on another host where it can.
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(
                envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                    &envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate {},
                )),
            ),
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    })
}

fn hash_policy(cx: &Ctx<'_>, ns: &str, d: &networking::Destination, port: u16) -> Vec<HashPolicy> {
    let Some(service) = cx.registry.service(&d.host, ns) else {
        return Vec::new();
    };
    let Some((_, dr)) = clusters::destination_rule(cx, service) else {
        return Vec::new();
    };
    let policy = clusters::effective_policy(dr, port, &d.subset);
    let Some(hash) = policy.load_balancer.and_then(|lb| lb.consistent_hash) else {
        return Vec::new();
    };
    let spec = if let Some(header) = hash.http_header_name {
        PolicySpecifier::Header(hash_policy::Header {
            header_name: header,
            ..Default::default()
        })
    } else if let Some(cookie) = hash.http_cookie {
        PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name,
            path: cookie.path,
            ttl: cookie.ttl.map(|t| duration(t.as_std())),
            ..Default::default()
        })
    } else if hash.use_source_ip == Some(true) {
        PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
    } else if let Some(name) = hash.http_query_parameter_name {
        PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(spec),
        terminal: false,
    }]
}

fn header_ops(ops: Option<&HeaderOperations>) -> (Vec<HeaderValueOption>, Vec<String>) {
    let Some(ops) = ops else {
        return (Vec::new(), Vec::new());
    };
    let option = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    let mut add: Vec<HeaderValueOption> = ops
        .set
        .iter()
        .map(|kv| option(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .collect();
    add.extend(
        ops.add
            .iter()
            .map(|kv| option(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
    );
    (add, ops.remove.clone())
}

fn http_fault(fault: &networking::HttpFaultInjection) -> HttpFault {
    HttpFault {
        delay: fault.delay.as_ref().and_then(|d| {
            let fixed = d.fixed_delay?;
            Some(FaultDelay {
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(duration(
                    fixed.as_std(),
                ))),
                percentage: Some(fraction(d.percentage())),
            })
        }),
        abort: fault.abort.as_ref().and_then(|a| {
            let error = match (a.http_status, a.grpc_status.as_deref()) {
                (Some(status), _) => ErrorType::HttpStatus(u32::try_from(status).ok()?),
                (None, Some(grpc)) => ErrorType::GrpcStatus(grpc_code(grpc)?),
                _ => return None,
            };
            Some(FaultAbort {
                error_type: Some(error),
                percentage: Some(fraction(a.percentage())),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

/// gRPC status names as Istio accepts them (`UNAVAILABLE`) or numbers.
fn grpc_code(s: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    s.parse().ok().or_else(|| {
        NAMES
            .iter()
            .position(|n| *n == s)
            .and_then(|i| u32::try_from(i).ok())
    })
}

fn cors_policy(cors: &networking::CorsPolicy) -> EnvoyCors {
    let mut origins: Vec<StringMatcher> = cors
        .allow_origins
        .iter()
        .filter_map(string_matcher)
        .collect();
    origins.extend(cors.allow_origin.iter().map(|o| StringMatcher {
        match_pattern: Some(MatchPattern::Exact(o.clone())),
        ignore_case: false,
    }));
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: cors.allow_methods.join(","),
        allow_headers: cors.allow_headers.join(","),
        expose_headers: cors.expose_headers.join(","),
        max_age: cors
            .max_age
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
        ..Default::default()
    }
}

/// Istio's route when no VirtualService applies: everything to the
/// service's cluster, no timeout, the default retries.
fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".to_owned(),
        r#match: Some(prefix("/")),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
            timeout: Some(duration(std::time::Duration::ZERO)),
            retry_policy: retry_policy(&HttpRoute::default()),
            ..Default::default()
        })),
        ..Default::default()
    }
}
