//! The proxy's own view of its configuration. Envoy resources are converted
//! here, at the xDS boundary (`TryFrom`), and nothing past this module sees
//! protobuf. A field the proxy does not honour makes the resource fail
//! conversion, so the control plane gets a NACK naming it instead of the
//! proxy silently behaving differently from Envoy.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster as PbCluster,
                cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy},
            },
            core::v3::{
                Address, HeaderValueOption, address, data_source,
                header_value_option::HeaderAppendAction, socket_address::PortSpecifier,
            },
            endpoint::v3::{ClusterLoadAssignment, lb_endpoint},
            listener::v3::{Listener as PbListener, filter},
            route::v3::{
                HeaderMatcher, Route as PbRoute, RouteConfiguration, RouteMatch as PbRouteMatch,
                VirtualHost as PbVirtualHost,
                header_matcher::HeaderMatchSpecifier,
                query_parameter_matcher::QueryParameterMatchSpecifier,
                redirect_action,
                route::Action as PbAction,
                route_action::{
                    ClusterSpecifier, HostRewriteSpecifier, hash_policy::PolicySpecifier,
                },
                route_match::PathSpecifier,
            },
        },
        extensions::filters::{
            http::fault::v3::{HttpFault, fault_abort::ErrorType},
            network::{
                http_connection_manager::v3::{
                    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
        r#type::{
            matcher::v3::{StringMatcher, string_matcher::MatchPattern},
            v3::{FractionalPercent, fractional_percent::DenominatorType},
        },
    },
    google::protobuf::{Any, Duration as PbDuration},
};
use http::{HeaderName, HeaderValue};
use prost::Message;
use regex::Regex;

/// Why a resource could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("{resource}: {reason}")]
pub struct Unsupported {
    pub resource: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub kind: ListenerKind,
    pub tls: InboundTls,
}

/// What an inbound listener accepts (PeerAuthentication's modes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InboundTls {
    /// Plaintext only.
    Off,
    /// Mutual TLS or plaintext, decided per connection.
    Permissive,
    /// Mutual TLS only.
    Strict,
}

#[derive(Clone, Debug)]
pub enum ListenerKind {
    Http(HttpManager),
    Tcp {
        stat_prefix: String,
        cluster: String,
    },
}

#[derive(Clone, Debug)]
pub struct HttpManager {
    pub stat_prefix: String,
    pub route_config: String,
    /// The edge (a gateway) trusts only the peer address for
    /// x-forwarded-for.
    pub use_remote_address: bool,
    pub websocket: bool,
    pub connect: bool,
    /// Set `x-forwarded-client-cert` from the peer's certificate.
    pub xfcc: bool,
}

#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
}

#[derive(Clone, Debug)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub fault: Option<Fault>,
}

#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    /// (name, value, overwrite)
    pub add: Vec<(HeaderName, HeaderValue, bool)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<(String, Option<StrMatch>)>,
}

#[derive(Clone, Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    /// Matches CONNECT requests only (Envoy's `connect_matcher`).
    Connect,
}

#[derive(Clone, Debug)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
pub struct HeaderMatch {
    pub name: String,
    /// `None` means "present".
    pub matcher: Option<StrMatch>,
    pub invert: bool,
}

#[derive(Clone, Debug)]
pub enum Action {
    Route(RouteAction),
    Redirect(Redirect),
    Direct { status: u16, body: String },
}

#[derive(Clone, Debug)]
pub struct Redirect {
    pub host: String,
    pub path: String,
    pub scheme: String,
    pub port: u32,
    pub status: u16,
}

#[derive(Clone, Debug)]
pub struct RouteAction {
    /// (cluster, weight, per-cluster request headers)
    pub clusters: Vec<WeightedCluster>,
    /// `None` disables the timeout (Envoy's `0s`).
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: Option<String>,
    /// (cluster, parts per million)
    pub mirrors: Vec<(String, u32)>,
    pub hash: Vec<HashOn>,
    /// Terminate CONNECT here and carry the tunnel's bytes over TCP.
    pub connect_tunnel: bool,
}

#[derive(Clone, Debug)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Clone, Debug)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    SourceIp,
    Query(String),
}

#[derive(Clone, Debug, Default)]
pub struct RetryPolicy {
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on_5xx: bool,
    pub on_gateway_error: bool,
    pub on_reset: bool,
    pub on_connect_failure: bool,
    pub on_refused_stream: bool,
    pub on_retriable_4xx: bool,
    pub on_status_codes: bool,
    pub status_codes: Vec<u16>,
    /// gRPC conditions, read from `grpc-status`.
    pub grpc: Vec<u32>,
    pub other_hosts: bool,
}

#[derive(Clone, Debug)]
pub struct Fault {
    /// (delay, parts per million)
    pub delay: Option<(Duration, u32)>,
    /// (status, parts per million)
    pub abort: Option<(u16, u32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub discovery: Discovery,
    pub lb: Lb,
    pub connect_timeout: Duration,
    pub limits: Limits,
    pub outlier: Option<Outlier>,
    pub protocol: UpstreamProtocol,
    /// Auto mTLS: endpoints marked as having a sidecar are reached over
    /// mutual TLS, accepting only these identities.
    pub mtls: Option<UpstreamMtls>,
    /// TLS to every endpoint with certificates from files (DestinationRule
    /// SIMPLE or MUTUAL).
    pub origination: Option<Arc<Origination>>,
}

/// TLS origination, read and checked when the cluster arrives so that a
/// missing or unreadable file NACKs the cluster.
#[derive(Debug)]
pub struct Origination {
    pub sni: String,
    /// A digest of the settings (the key among them), which decides
    /// equality.
    source: u64,
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for Origination {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamMtls {
    pub allowed: Vec<kite_identity::SpiffeId>,
    pub sni: String,
}

/// Which HTTP version to speak to a cluster's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
    /// Whatever the client spoke.
    Downstream,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    Eds(String),
    Static(Vec<Endpoint>),
    /// Envoy's dynamic forward proxy: the endpoint is the request's own
    /// authority, resolved per request.
    DynamicForward,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lb {
    LeastRequest,
    RoundRobin,
    Random,
    /// Ring hash or Maglev: both consistent; Kite uses rendezvous hashing.
    Hash,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outlier {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub locality: String,
    /// The endpoint has a sidecar (auto mTLS applies).
    pub tls: bool,
}

// === conversions ===

fn bad(resource: &str, reason: impl Into<String>) -> Unsupported {
    Unsupported {
        resource: resource.to_owned(),
        reason: reason.into(),
    }
}

fn decode<M: Message + Default>(any: &Any, resource: &str) -> Result<M, Unsupported> {
    M::decode(any.value.as_slice())
        .map_err(|e| bad(resource, format!("undecodable {}: {e}", any.type_url)))
}

fn duration(d: &PbDuration) -> Duration {
    Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    )
}

fn socket_addr(a: Option<&Address>, resource: &str) -> Result<SocketAddr, Unsupported> {
    let Some(Address {
        address: Some(address::Address::SocketAddress(sa)),
    }) = a
    else {
        return Err(bad(resource, "only socket addresses are supported"));
    };
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| bad(resource, "port out of range"))?
        }
        _ => return Err(bad(resource, "named ports are not supported")),
    };
    let ip = sa.address.parse().map_err(|_| {
        bad(
            resource,
            format!(
                "{:?} is not an IP address (DNS endpoints are not supported yet)",
                sa.address
            ),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// Envoy fractional percent as parts per million.
fn ppm(p: Option<&FractionalPercent>) -> u32 {
    let Some(p) = p else { return 1_000_000 };
    let scale = match DenominatorType::try_from(p.denominator).unwrap_or(DenominatorType::Hundred) {
        DenominatorType::Hundred => 10_000,
        DenominatorType::TenThousand => 100,
        DenominatorType::Million => 1,
    };
    p.numerator.saturating_mul(scale).min(1_000_000)
}

impl TryFrom<&Any> for Listener {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let l: PbListener = decode(any, "listener")?;
        let name = format!("listener {}", l.name);
        let addr = socket_addr(l.address.as_ref(), &name)?;
        for lf in &l.listener_filters {
            if lf.name != "envoy.filters.listener.tls_inspector" {
                return Err(bad(
                    &name,
                    format!("listener filter {} is not supported", lf.name),
                ));
            }
        }
        // Istio's inbound layouts: one plaintext chain; one mTLS chain
        // (STRICT); or an mTLS chain and a plaintext chain told apart by
        // the transport protocol (PERMISSIVE).
        let transport = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
            c.filter_chain_match
                .as_ref()
                .map(|m| m.transport_protocol.clone())
                .unwrap_or_default()
        };
        let (plain, secure) = match l.filter_chains.as_slice() {
            [only] if only.transport_socket.is_none() => (Some(only), None),
            [only] => (None, Some(only)),
            [a, b] if transport(a) == "tls" && transport(b) == "raw_buffer" => (Some(b), Some(a)),
            [a, b] if transport(b) == "tls" && transport(a) == "raw_buffer" => (Some(a), Some(b)),
            _ => {
                return Err(bad(
                    &name,
                    "unsupported filter chain layout (one plaintext chain, one TLS chain, or both matched on transport protocol)",
                ));
            }
        };
        if let Some(secure) = secure {
            downstream_tls(secure.transport_socket.as_ref(), &name)?;
        }
        let tls = match (plain, secure) {
            (Some(_), Some(_)) => InboundTls::Permissive,
            (None, Some(_)) => InboundTls::Strict,
            _ => InboundTls::Off,
        };
        let mut xfcc = false;
        if let Some(secure) = secure
            && let Some(f) = secure.filters.first()
            && let Some(filter::ConfigType::TypedConfig(cfg)) = &f.config_type
            && cfg.type_url.ends_with("HttpConnectionManager")
        {
            let hcm: HttpConnectionManager = decode(cfg, &name)?;
            xfcc = hcm.set_current_client_cert_details.is_some();
        }
        let Some(chain) = plain.or(secure) else {
            return Err(bad(&name, "no filter chain"));
        };
        let [f] = chain.filters.as_slice() else {
            return Err(bad(&name, "exactly one network filter is supported"));
        };
        let Some(filter::ConfigType::TypedConfig(cfg)) = &f.config_type else {
            return Err(bad(&name, format!("filter {} has no typed config", f.name)));
        };
        let kind = match cfg.type_url.as_str() {
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" =>
            {
                let hcm: HttpConnectionManager = decode(cfg, &name)?;
                let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                    return Err(bad(&name, "only RDS route tables are supported"));
                };
                for hf in &hcm.http_filters {
                    match hf.name.as_str() {
                        "envoy.filters.http.router"
                        | "envoy.filters.http.fault"
                        | "envoy.filters.http.cors"
                        | "envoy.filters.http.dynamic_forward_proxy" => {}
                        other => {
                            return Err(bad(
                                &name,
                                format!("HTTP filter {other} is not supported"),
                            ));
                        }
                    }
                    if let Some(http_filter::ConfigType::TypedConfig(c)) = &hf.config_type
                        && hf.name == "envoy.filters.http.fault"
                        && c.value != HttpFault::default().encode_to_vec()
                    {
                        return Err(bad(
                            &name,
                            "listener-wide fault settings are not supported (per-route only)",
                        ));
                    }
                }
                let mut websocket = false;
                let mut connect = false;
                for u in &hcm.upgrade_configs {
                    match u.upgrade_type.to_ascii_lowercase().as_str() {
                        "websocket" => websocket = u.enabled.as_ref().is_none_or(|b| b.value),
                        "connect" => connect = u.enabled.as_ref().is_none_or(|b| b.value),
                        other => {
                            return Err(bad(
                                &name,
                                format!("upgrade type {other:?} is not supported"),
                            ));
                        }
                    }
                    if !u.filters.is_empty() {
                        return Err(bad(&name, "per-upgrade filter chains are not supported"));
                    }
                }
                ListenerKind::Http(HttpManager {
                    stat_prefix: hcm.stat_prefix,
                    route_config: rds.route_config_name.clone(),
                    use_remote_address: hcm.use_remote_address.is_some_and(|b| b.value),
                    websocket,
                    connect,
                    xfcc: false,
                })
            }
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
                let tcp: TcpProxy = decode(cfg, &name)?;
                let Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) = tcp.cluster_specifier
                else {
                    return Err(bad(
                        &name,
                        "tcp_proxy needs a single cluster (weighted TCP is not supported yet)",
                    ));
                };
                ListenerKind::Tcp {
                    stat_prefix: tcp.stat_prefix,
                    cluster,
                }
            }
            other => {
                return Err(bad(
                    &name,
                    format!("network filter {other} is not supported"),
                ));
            }
        };
        let kind = match kind {
            ListenerKind::Http(mut h) => {
                h.xfcc = xfcc;
                ListenerKind::Http(h)
            }
            other => other,
        };
        Ok(Listener {
            name: l.name,
            addr,
            kind,
            tls,
        })
    }
}

/// The inbound TLS the control plane asks for: the mesh certificate by its
/// SDS names (`default`, `ROOTCA`), which Kite's proxy holds itself, and a
/// client certificate required.
fn downstream_tls(
    socket: Option<&envoy_types::pb::envoy::config::core::v3::TransportSocket>,
    name: &str,
) -> Result<(), Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::transport_socket,
        extensions::transport_sockets::tls::v3::DownstreamTlsContext,
    };
    let Some(socket) = socket else {
        return Err(bad(name, "a TLS chain without a transport socket"));
    };
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = &socket.config_type else {
        return Err(bad(name, "transport socket without typed config"));
    };
    let ctx: DownstreamTlsContext = decode(cfg, name)?;
    if ctx
        .require_client_certificate
        .as_ref()
        .is_none_or(|b| !b.value)
    {
        return Err(bad(
            name,
            "inbound TLS without client certificates is not supported (mesh mTLS only)",
        ));
    }
    let common = ctx.common_tls_context.unwrap_or_default();
    if !common.tls_certificates.is_empty()
        || common
            .tls_certificate_sds_secret_configs
            .iter()
            .any(|s| s.name != "default")
    {
        return Err(bad(
            name,
            "only the workload's own certificate (SDS name \"default\") is supported",
        ));
    }
    Ok(())
}

impl TryFrom<&Any> for RouteConfig {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let rc: RouteConfiguration = decode(any, "route configuration")?;
        let name = format!("route configuration {}", rc.name);
        let vhosts = rc
            .virtual_hosts
            .iter()
            .map(|vh| vhost(vh, &name))
            .collect::<Result<_, _>>()?;
        Ok(RouteConfig {
            name: rc.name,
            vhosts,
        })
    }
}

fn vhost(vh: &PbVirtualHost, parent: &str) -> Result<VirtualHost, Unsupported> {
    let name = format!("{parent} virtual host {}", vh.name);
    if !vh.typed_per_filter_config.is_empty() {
        return Err(bad(&name, "virtual-host filter config is not supported"));
    }
    Ok(VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        routes: vh
            .routes
            .iter()
            .map(|r| route(r, &name))
            .collect::<Result<_, _>>()?,
    })
}

fn header_ops(
    add: &[HeaderValueOption],
    remove: &[String],
    resource: &str,
) -> Result<HeaderOps, Unsupported> {
    let mut ops = HeaderOps::default();
    for opt in add {
        let Some(h) = &opt.header else { continue };
        let name = HeaderName::from_bytes(h.key.as_bytes())
            .map_err(|_| bad(resource, format!("bad header name {:?}", h.key)))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| bad(resource, format!("bad header value for {}", h.key)))?;
        let overwrite = matches!(
            HeaderAppendAction::try_from(opt.append_action),
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd | HeaderAppendAction::OverwriteIfExists)
        );
        ops.add.push((name, value, overwrite));
    }
    for r in remove {
        ops.remove.push(
            HeaderName::from_bytes(r.as_bytes())
                .map_err(|_| bad(resource, format!("bad header name {r:?}")))?,
        );
    }
    Ok(ops)
}

fn regex(pattern: &str, resource: &str) -> Result<Regex, Unsupported> {
    // Envoy's RE2 matches the whole input.
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| bad(resource, format!("regex {pattern:?}: {e}")))
}

fn str_match(m: &StringMatcher, resource: &str) -> Result<StrMatch, Unsupported> {
    if m.ignore_case {
        return Err(bad(
            resource,
            "case-insensitive string matches are not supported",
        ));
    }
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StrMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StrMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StrMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StrMatch::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => StrMatch::Regex(regex(&r.regex, resource)?),
        _ => return Err(bad(resource, "unsupported string matcher")),
    })
}

fn route_match(m: &PbRouteMatch, resource: &str) -> Result<RouteMatch, Unsupported> {
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(regex(&r.regex, resource)?),
        Some(PathSpecifier::ConnectMatcher(_)) => PathMatch::Connect,
        _ => return Err(bad(resource, "unsupported path matcher")),
    };
    let headers = m
        .headers
        .iter()
        .map(|h: &HeaderMatcher| {
            let matcher = match &h.header_match_specifier {
                Some(HeaderMatchSpecifier::StringMatch(s)) => Some(str_match(s, resource)?),
                Some(HeaderMatchSpecifier::PresentMatch(true)) | None => None,
                _ => {
                    return Err(bad(
                        resource,
                        format!("unsupported match on header {}", h.name),
                    ));
                }
            };
            Ok(HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                matcher,
                invert: h.invert_match,
            })
        })
        .collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .map(|q| {
            let matcher = match &q.query_parameter_match_specifier {
                Some(QueryParameterMatchSpecifier::StringMatch(s)) => Some(str_match(s, resource)?),
                Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
                _ => {
                    return Err(bad(
                        resource,
                        format!("unsupported match on query parameter {}", q.name),
                    ));
                }
            };
            Ok((q.name.clone(), matcher))
        })
        .collect::<Result<_, _>>()?;
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers,
        query,
    })
}

fn route(r: &PbRoute, parent: &str) -> Result<Route, Unsupported> {
    let name = format!("{parent} route {}", r.name);
    let matcher = route_match(
        r.r#match
            .as_ref()
            .ok_or_else(|| bad(&name, "route without match"))?,
        &name,
    )?;
    let mut fault = None;
    for (filter, cfg) in &r.typed_per_filter_config {
        match filter.as_str() {
            "envoy.filters.http.fault" => {
                let f: HttpFault = decode(cfg, &name)?;
                fault = Some(Fault {
                    delay: f.delay.as_ref().and_then(|d| match &d.fault_delay_secifier {
                        Some(envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier::FixedDelay(fd)) => {
                            Some((duration(fd), ppm(d.percentage.as_ref())))
                        }
                        _ => None,
                    }),
                    abort: match f.abort.as_ref() {
                        Some(a) => match a.error_type {
                            Some(ErrorType::HttpStatus(s)) => Some((
                                u16::try_from(s).map_err(|_| bad(&name, "abort status out of range"))?,
                                ppm(a.percentage.as_ref()),
                            )),
                            _ => return Err(bad(&name, "only HTTP status aborts are supported")),
                        },
                        None => None,
                    },
                });
            }
            // CORS policies are accepted; preflight handling lives in the
            // router. Kite answers preflights as Envoy's filter would only
            // once implemented, so a CORS policy is refused for now.
            other => {
                return Err(bad(
                    &name,
                    format!("per-route config for {other} is not supported yet"),
                ));
            }
        }
    }
    let action = match &r.action {
        Some(PbAction::Route(ra)) => {
            let clusters = match &ra.cluster_specifier {
                Some(ClusterSpecifier::Cluster(c)) => vec![WeightedCluster {
                    name: c.clone(),
                    weight: 1,
                    request_headers: HeaderOps::default(),
                    response_headers: HeaderOps::default(),
                }],
                Some(ClusterSpecifier::WeightedClusters(w)) => w
                    .clusters
                    .iter()
                    .map(|c| {
                        Ok(WeightedCluster {
                            name: c.name.clone(),
                            weight: c.weight.as_ref().map_or(0, |w| w.value),
                            request_headers: header_ops(
                                &c.request_headers_to_add,
                                &c.request_headers_to_remove,
                                &name,
                            )?,
                            response_headers: header_ops(
                                &c.response_headers_to_add,
                                &c.response_headers_to_remove,
                                &name,
                            )?,
                        })
                    })
                    .collect::<Result<_, Unsupported>>()?,
                _ => return Err(bad(&name, "unsupported cluster specifier")),
            };
            let retry = ra.retry_policy.as_ref().map(|p| {
                let mut rp = RetryPolicy {
                    num_retries: p.num_retries.as_ref().map_or(1, |n| n.value),
                    per_try_timeout: p
                        .per_try_timeout
                        .as_ref()
                        .map(duration)
                        .filter(|d| !d.is_zero()),
                    status_codes: p
                        .retriable_status_codes
                        .iter()
                        .filter_map(|c| u16::try_from(*c).ok())
                        .collect(),
                    other_hosts: p
                        .retry_host_predicate
                        .iter()
                        .any(|h| h.name == "envoy.retry_host_predicates.previous_hosts"),
                    ..Default::default()
                };
                for cond in p.retry_on.split(',').map(str::trim) {
                    match cond {
                        "5xx" => rp.on_5xx = true,
                        "gateway-error" => rp.on_gateway_error = true,
                        "reset" | "reset-before-request" => rp.on_reset = true,
                        "connect-failure" => rp.on_connect_failure = true,
                        "refused-stream" => rp.on_refused_stream = true,
                        "retriable-4xx" => rp.on_retriable_4xx = true,
                        "retriable-status-codes" => rp.on_status_codes = true,
                        "cancelled" => rp.grpc.push(1),
                        "deadline-exceeded" => rp.grpc.push(4),
                        "resource-exhausted" => rp.grpc.push(8),
                        "internal" => rp.grpc.push(13),
                        "unavailable" => rp.grpc.push(14),
                        _ => {}
                    }
                }
                rp
            });
            let hash = ra
                .hash_policy
                .iter()
                .filter_map(|h| match &h.policy_specifier {
                    Some(PolicySpecifier::Header(h)) => {
                        Some(HashOn::Header(h.header_name.to_ascii_lowercase()))
                    }
                    Some(PolicySpecifier::Cookie(c)) => Some(HashOn::Cookie(c.name.clone())),
                    Some(PolicySpecifier::ConnectionProperties(c)) if c.source_ip => {
                        Some(HashOn::SourceIp)
                    }
                    Some(PolicySpecifier::QueryParameter(q)) => Some(HashOn::Query(q.name.clone())),
                    _ => None,
                })
                .collect();
            Action::Route(RouteAction {
                clusters,
                // Envoy's default route timeout is 15 s; 0 disables it.
                timeout: match &ra.timeout {
                    None => Some(Duration::from_secs(15)),
                    Some(d) if duration(d).is_zero() => None,
                    Some(d) => Some(duration(d)),
                },
                retry,
                prefix_rewrite: (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone()),
                regex_rewrite: match &ra.regex_rewrite {
                    Some(rr) => Some((
                        Regex::new(
                            &rr.pattern
                                .as_ref()
                                .map(|p| p.regex.clone())
                                .unwrap_or_default(),
                        )
                        .map_err(|e| bad(&name, format!("regex rewrite: {e}")))?,
                        rr.substitution.replace("\\", "$"),
                    )),
                    None => None,
                },
                host_rewrite: match &ra.host_rewrite_specifier {
                    Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(h.clone()),
                    None => None,
                    Some(_) => return Err(bad(&name, "only literal host rewrites are supported")),
                },
                mirrors: ra
                    .request_mirror_policies
                    .iter()
                    .map(|m| {
                        (
                            m.cluster.clone(),
                            ppm(m
                                .runtime_fraction
                                .as_ref()
                                .and_then(|f| f.default_value.as_ref())),
                        )
                    })
                    .collect(),
                hash,
                connect_tunnel: ra.upgrade_configs.iter().any(|u| {
                    u.upgrade_type.eq_ignore_ascii_case("CONNECT") && u.connect_config.is_some()
                }),
            })
        }
        Some(PbAction::Redirect(rd)) => Action::Redirect(Redirect {
            host: rd.host_redirect.clone(),
            path: match &rd.path_rewrite_specifier {
                Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
                _ => String::new(),
            },
            scheme: match &rd.scheme_rewrite_specifier {
                Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
                Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
                    "https".to_owned()
                }
                _ => String::new(),
            },
            port: rd.port_redirect,
            status: match redirect_action::RedirectResponseCode::try_from(rd.response_code) {
                Ok(redirect_action::RedirectResponseCode::Found) => 302,
                Ok(redirect_action::RedirectResponseCode::SeeOther) => 303,
                Ok(redirect_action::RedirectResponseCode::TemporaryRedirect) => 307,
                Ok(redirect_action::RedirectResponseCode::PermanentRedirect) => 308,
                _ => 301,
            },
        }),
        Some(PbAction::DirectResponse(d)) => Action::Direct {
            status: u16::try_from(d.status).map_err(|_| bad(&name, "status out of range"))?,
            body: match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                Some(data_source::Specifier::InlineString(s)) => s.clone(),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                None => String::new(),
                Some(_) => return Err(bad(&name, "direct response bodies must be inline")),
            },
        },
        _ => return Err(bad(&name, "unsupported route action")),
    };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &name,
        )?,
        response_headers: header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &name,
        )?,
        fault,
    })
}

impl TryFrom<&Any> for Cluster {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let c: PbCluster = decode(any, "cluster")?;
        let name = format!("cluster {}", c.name);
        let origination = c
            .transport_socket
            .as_ref()
            .map(|t| origination(t, &name))
            .transpose()?
            .map(Arc::new);
        let discovery = match c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => {
                Discovery::Eds(
                    c.eds_cluster_config
                        .as_ref()
                        .map(|e| e.service_name.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| c.name.clone()),
                )
            }
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Static as i32 => {
                Discovery::Static(
                    c.load_assignment
                        .as_ref()
                        .map(|la| endpoints(la, &name))
                        .transpose()?
                        .unwrap_or_default(),
                )
            }
            Some(ClusterDiscoveryType::ClusterType(ref t))
                if t.name == "envoy.clusters.dynamic_forward_proxy" =>
            {
                Discovery::DynamicForward
            }
            _ => {
                return Err(bad(
                    &name,
                    "only EDS, STATIC and dynamic forward proxy clusters are supported (DNS clusters are not yet)",
                ));
            }
        };
        let lb = match LbPolicy::try_from(c.lb_policy) {
            Ok(LbPolicy::LeastRequest) => Lb::LeastRequest,
            Ok(LbPolicy::RoundRobin) => Lb::RoundRobin,
            Ok(LbPolicy::Random) => Lb::Random,
            Ok(LbPolicy::RingHash | LbPolicy::Maglev) => Lb::Hash,
            Ok(LbPolicy::ClusterProvided) if discovery == Discovery::DynamicForward => Lb::Random,
            _ => return Err(bad(&name, "unsupported load-balancing policy")),
        };
        let t = c
            .circuit_breakers
            .as_ref()
            .and_then(|cb| cb.thresholds.first());
        // Envoy's defaults where the control plane sets nothing.
        let limit = |v: Option<u32>, default: u32| v.unwrap_or(default);
        let limits = Limits {
            max_connections: limit(
                t.and_then(|t| t.max_connections.as_ref().map(|v| v.value)),
                1024,
            ),
            max_pending: limit(
                t.and_then(|t| t.max_pending_requests.as_ref().map(|v| v.value)),
                1024,
            ),
            max_requests: limit(
                t.and_then(|t| t.max_requests.as_ref().map(|v| v.value)),
                1024,
            ),
            max_retries: limit(t.and_then(|t| t.max_retries.as_ref().map(|v| v.value)), 3),
        };
        let outlier = c.outlier_detection.as_ref().map(|o| {
            let enforced =
                |v: Option<u32>, enforcing: Option<u32>| v.filter(|_| enforcing.unwrap_or(100) > 0);
            Outlier {
                consecutive_5xx: enforced(
                    o.consecutive_5xx.as_ref().map(|v| v.value).or(Some(5)),
                    o.enforcing_consecutive_5xx.as_ref().map(|v| v.value),
                ),
                consecutive_gateway: enforced(
                    o.consecutive_gateway_failure.as_ref().map(|v| v.value),
                    o.enforcing_consecutive_gateway_failure
                        .as_ref()
                        .map(|v| v.value)
                        .or(Some(0)),
                ),
                interval: o
                    .interval
                    .as_ref()
                    .map_or(Duration::from_secs(10), duration),
                base_ejection: o
                    .base_ejection_time
                    .as_ref()
                    .map_or(Duration::from_secs(30), duration),
                max_ejection_percent: o.max_ejection_percent.as_ref().map_or(10, |v| v.value),
            }
        });
        let mut protocol = UpstreamProtocol::Http1;
        for (key, any) in &c.typed_extension_protocol_options {
            use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
                HttpProtocolOptions,
                http_protocol_options::{
                    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
                },
            };
            if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
                return Err(bad(
                    &name,
                    format!("protocol options {key} are not supported"),
                ));
            }
            let opts: HttpProtocolOptions = decode(any, &name)?;
            if opts.common_http_protocol_options.is_some() || !opts.http_filters.is_empty() {
                return Err(bad(
                    &name,
                    "common HTTP protocol options and upstream filters are not supported yet",
                ));
            }
            protocol = match opts.upstream_protocol_options {
                Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                    Some(ProtocolConfig::HttpProtocolOptions(_)) | None => UpstreamProtocol::Http1,
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(bad(&name, "HTTP/3 upstreams are not supported"));
                    }
                },
                Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                    UpstreamProtocol::Downstream
                }
                Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                    return Err(bad(
                        &name,
                        "ALPN-negotiated upstream protocol (auto_config) is not supported yet",
                    ));
                }
                None => UpstreamProtocol::Http1,
            };
        }
        let mut mtls = None;
        for m in &c.transport_socket_matches {
            let wants_istio = m.r#match.as_ref().is_some_and(|s| {
                s.fields.get("tlsMode").is_some_and(|v| {
                    matches!(&v.kind, Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) if s == "istio")
                })
            });
            let socket = m.transport_socket.as_ref();
            if wants_istio {
                mtls = Some(upstream_mtls(socket, &name)?);
            } else if socket.is_some_and(|t| t.name != "envoy.transport_sockets.raw_buffer") {
                return Err(bad(
                    &name,
                    format!("transport socket match {} is not supported", m.name),
                ));
            }
        }
        Ok(Cluster {
            mtls,
            origination,
            protocol,
            name: c.name,
            discovery,
            lb,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map_or(Duration::from_secs(5), duration),
            limits,
            outlier,
        })
    }
}

/// TLS origination with files named in the cluster's transport socket.
fn origination(
    socket: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    name: &str,
) -> Result<Origination, Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::{DataSource, data_source::Specifier, transport_socket},
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    };
    if socket.name != "envoy.transport_sockets.tls" {
        return Err(bad(
            name,
            format!("transport socket {} is not supported", socket.name),
        ));
    }
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = socket.config_type.as_ref() else {
        return Err(bad(name, "TLS transport socket without typed config"));
    };
    let ctx: UpstreamTlsContext = decode(cfg, name)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let read = |field: &str, source: Option<&DataSource>| -> Result<String, Unsupported> {
        match source.and_then(|s| s.specifier.as_ref()) {
            Some(Specifier::Filename(path)) => {
                std::fs::read_to_string(path).map_err(|e| bad(name, format!("{field} {path}: {e}")))
            }
            Some(Specifier::InlineString(s)) => Ok(s.clone()),
            Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
                .map_err(|_| bad(name, format!("{field} is not PEM text"))),
            _ => Err(bad(name, format!("{field} must be a file or inline PEM"))),
        }
    };
    let (ca, sans) = match &common.validation_context_type {
        None => (None, Vec::new()),
        Some(ValidationContextType::ValidationContext(v)) => {
            let ca = read("trusted_ca", v.trusted_ca.as_ref())?;
            let sans = v
                .match_typed_subject_alt_names
                .iter()
                .map(
                    |m| match m.matcher.as_ref().and_then(|x| x.match_pattern.as_ref()) {
                        Some(MatchPattern::Exact(s)) => Ok(s.clone()),
                        _ => Err(bad(
                            name,
                            "only exact subject alt name matches are supported",
                        )),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?;
            (Some(ca), sans)
        }
        Some(_) => {
            return Err(bad(
                name,
                "TLS origination needs its CA inline or from a file (not SDS)",
            ));
        }
    };
    let client = match common.tls_certificates.as_slice() {
        [] => None,
        [c] => Some((
            read("certificate_chain", c.certificate_chain.as_ref())?,
            read("private_key", c.private_key.as_ref())?,
        )),
        _ => return Err(bad(name, "more than one client certificate")),
    };
    let config = kite_identity::tls::origination_config(
        ca.as_deref(),
        sans.clone(),
        client.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
    .map_err(|e| bad(name, format!("TLS origination: {e}")))?;
    Ok(Origination {
        source: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&ctx.sni, &ca, &sans, &client).hash(&mut h);
            h.finish()
        },
        sni: ctx.sni,
        config: Arc::new(config),
    })
}

/// The mesh mTLS a cluster asks for: Kite's own certificate (SDS
/// `default`), the mesh root (`ROOTCA`), and the identities to accept.
fn upstream_mtls(
    socket: Option<&envoy_types::pb::envoy::config::core::v3::TransportSocket>,
    name: &str,
) -> Result<UpstreamMtls, Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::transport_socket,
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    };
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) =
        socket.and_then(|s| s.config_type.as_ref())
    else {
        return Err(bad(name, "mTLS transport socket without typed config"));
    };
    let ctx: UpstreamTlsContext = decode(cfg, name)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    if !common.tls_certificates.is_empty() {
        return Err(bad(
            name,
            "upstream TLS with inline certificates is not supported (mesh mTLS only)",
        ));
    }
    let allowed = match common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .default_validation_context
            .map(|v| {
                v.match_typed_subject_alt_names
                    .iter()
                    .filter_map(|m| {
                        match m.matcher.as_ref().and_then(|x| x.match_pattern.as_ref()) {
                            Some(MatchPattern::Exact(s)) => s.parse().ok(),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => return Err(bad(name, "mTLS needs the mesh root by SDS (ROOTCA)")),
    };
    Ok(UpstreamMtls {
        allowed,
        sni: ctx.sni,
    })
}

/// Endpoints of a load assignment, as delivered by EDS or inline.
pub fn endpoints(la: &ClusterLoadAssignment, resource: &str) -> Result<Vec<Endpoint>, Unsupported> {
    let mut out = Vec::new();
    for group in &la.endpoints {
        let locality = group
            .locality
            .as_ref()
            .filter(|l| !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()))
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .unwrap_or_default();
        for e in &group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return Err(bad(resource, "named endpoints are not supported"));
            };
            let tls = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .and_then(|s| s.fields.get("tlsMode"))
                .is_some_and(|v| {
                    matches!(&v.kind, Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) if s == "istio")
                });
            out.push(Endpoint {
                tls,
                addr: socket_addr(ep.address.as_ref(), resource)?,
                weight: e
                    .load_balancing_weight
                    .as_ref()
                    .map_or(1, |w| w.value.max(1)),
                locality: locality.clone(),
            });
        }
    }
    Ok(out)
}

/// One cluster's endpoints, from EDS.
#[derive(Clone, Debug)]
pub struct LoadAssignment {
    pub cluster: String,
    pub endpoints: Vec<Endpoint>,
}

impl TryFrom<&Any> for LoadAssignment {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let la: ClusterLoadAssignment = decode(any, "load assignment")?;
        let name = format!("load assignment {}", la.cluster_name);
        Ok(LoadAssignment {
            endpoints: endpoints(&la, &name)?,
            cluster: la.cluster_name,
        })
    }
}
