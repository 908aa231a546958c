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

/// What an inbound listener accepts (PeerAuthentication's modes), or the
/// TLS a gateway terminates with certificates of its own.
#[derive(Clone, Debug, PartialEq)]
pub enum InboundTls {
    /// Plaintext only.
    Off,
    /// Mutual TLS or plaintext, decided per connection.
    Permissive,
    /// Mutual TLS only.
    Strict,
    /// TLS with the listener's own certificate (an HTTPS gateway server).
    Terminate(Arc<Termination>),
}

/// A gateway's server TLS, read and checked when the listener arrives.
#[derive(Debug)]
pub struct Termination {
    pub config: Arc<rustls::ServerConfig>,
    /// A digest of the settings, which decides equality.
    source: u64,
}

impl PartialEq for Termination {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

#[derive(Clone, Debug)]
pub enum ListenerKind {
    /// Shared by the listener's connections.
    Http(Arc<HttpManager>),
    Tcp {
        stat_prefix: String,
        /// Clusters with their weights; one connection goes to one of them.
        clusters: Vec<(String, u32)>,
        /// SNI passthrough: the clusters for each set of server names,
        /// chosen by the ClientHello's SNI (then `clusters` is empty).
        by_sni: Vec<SniRoute>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SniRoute {
    /// Exact names, or `*.suffix`.
    pub names: Vec<String>,
    pub clusters: Vec<(String, u32)>,
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
    /// A line per request on stdout (the HCM has a file access log).
    pub access_log: bool,
}

#[derive(Clone, Debug)]
pub struct RouteConfig {
    pub name: String,
    pub vhosts: Vec<VirtualHost>,
    /// More virtual hosts come by VHDS, fetched by host as requests need
    /// them; they take precedence over `vhosts` (which then hold only
    /// wildcard domains, which exact hosts beat).
    pub vhds: bool,
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
    /// Below this percentage of healthy hosts Envoy balances over all of
    /// them (panic mode); 0 never does.
    pub panic_threshold: f64,
    /// Localities are chosen by their weights before hosts.
    pub locality_weighted: bool,
    pub protocol: UpstreamProtocol,
    /// Upstream connections idle this long close (pool default otherwise).
    pub idle_timeout: Option<Duration>,
    /// `max_requests_per_connection`: a connection that has carried this
    /// many requests takes no more (1: a new connection for every request).
    pub max_requests_per_connection: Option<std::num::NonZeroU32>,
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
    /// STRICT_DNS and LOGICAL_DNS: host names resolved by the proxy (DNS
    /// ServiceEntries).
    Dns(Vec<DnsTarget>),
}

/// One name of a DNS cluster; each address it resolves to is an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsTarget {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub tls: bool,
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
    /// Envoy's retry budget (percent of active requests, minimum), which
    /// replaces `max_retries` when set.
    pub retry_budget: Option<(f64, u32)>,
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
    /// The locality's priority (0 first) and weight, from the assignment.
    pub priority: u32,
    pub locality_weight: u32,
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

mod cluster;
mod listener;
mod route;

pub use cluster::{LoadAssignment, endpoints};
