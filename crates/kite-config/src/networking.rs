//! `networking.istio.io`: VirtualService, DestinationRule, Gateway,
//! ServiceEntry, Sidecar, WorkloadEntry and WorkloadGroup, as their `spec:`
//! bodies.
//!
//! Every field of Istio's protos is modelled so that valid YAML loads; unknown
//! fields and unknown enum values are rejected at deserialization, the rest
//! of Istio's webhook and CRD rules live in the [`Validate`] impls.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration as StdDuration,
};

use serde::{Deserialize, Serialize};

use crate::common::{
    Ctx, Duration, Labels, Percent, PortSelector, StringMatch, Validate, percent_or_number,
};

// === VirtualService ===

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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// 0 disables retries (absent `retries` keeps Istio's default of 2).
    #[serde(default)]
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions and/or status codes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ignore_previous_hosts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// Delay and abort are independent: a request may get either, both or none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponential_delay: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "percent_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
    /// The old integer form of `percentage`, still in older docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<i32>,
    /// A gRPC status name such as `UNAVAILABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_error: Option<String>,
    #[serde(
        default,
        deserialize_with = "percent_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub percentage: Option<Percent>,
    /// The old integer form of `percentage`, still in older docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the part of the path matched by a prefix match (or the whole
    /// path for other matches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    #[serde(default, rename = "match")]
    pub r#match: String,
    /// May refer to capture groups as `\1`.
    #[serde(default)]
    pub rewrite: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<DerivePort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    /// 301 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    #[default]
    FromProtocolDefault,
    FromRequestPort,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpDirectResponse {
    #[serde(default)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// One of the two: a literal string, or base64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated exact-match form of `allowOrigins`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// `FORWARD` or `IGNORE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched_preflights: Option<String>,
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

// === DestinationRule ===

/// Policies applied to traffic for `host` after routing has happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    #[serde(default)]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
}

/// `workloadSelector: {labels: …}` of DestinationRule, Sidecar and
/// ServiceEntry (unlike the `matchLabels` of the security kinds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabels {
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Merged over the rule's top-level policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Override the policy above for single ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(
        default,
        deserialize_with = "percent_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent: Option<Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// Absent means LEAST_REQUEST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    #[default]
    Unspecified,
    LeastConn,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
}

/// Sticky sessions: exactly one hash key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated in favour of `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// When set, the proxy generates the cookie if the request lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    #[serde(default)]
    pub minimum_ring_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    #[serde(default)]
    pub table_size: u64,
}

/// Locality-aware routing; only active once outlier detection is configured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<Distribute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<Failover>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribute {
    /// `region/zone/subzone`, with `*` wildcards.
    #[serde(default)]
    pub from: String,
    /// Locality → percentage of traffic; the values sum to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failover {
    /// Regions.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
}

/// Circuit-breaking limits; overflow gives 503 with flag `UO`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<i32>,
    /// 10 s when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    // Explicit names: the digit-bearing proto names are part of the contract
    // and must not depend on how serde splits words.
    #[serde(
        default,
        rename = "http1MaxPendingRequests",
        skip_serializing_if = "Option::is_none"
    )]
    pub http1_max_pending_requests: Option<i32>,
    #[serde(
        default,
        rename = "http2MaxRequests",
        skip_serializing_if = "Option::is_none"
    )]
    pub http2_max_requests: Option<i32>,
    /// 1 disables keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    /// 1 h when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    #[serde(
        default,
        rename = "h2UpgradePolicy",
        skip_serializing_if = "Option::is_none"
    )]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<i32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

/// Passive health checking: eject hosts that keep failing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default, skip_serializing_if = "is_false")]
    pub split_external_local_origin_errors: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated name of `consecutive5xxErrors`, still in older docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<i32>,
}

/// TLS that the client proxy originates towards the destination.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    #[serde(default)]
    pub mode: TlsMode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    /// A Secret in the client proxy's namespace, instead of file paths.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    #[default]
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

// === Gateway ===

/// Listeners of the gateway pods matched by `selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Searched across all namespaces by default.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<GatewayPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// `host`, `*`, `*.suffix`, optionally prefixed by `ns/` or `./`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    /// Translated to the gateway Service's targetPort when one matches.
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS that a gateway (or a sidecar's inbound listener) terminates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP with a 301 to HTTPS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: ServerTlsMode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// A Secret in the gateway's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// `TLS_AUTO`, `TLSV1_0` … `TLSV1_3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Route on SNI without terminating.
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

// === ServiceEntry ===

/// Adds hosts (usually external ones) to the mesh's service registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// VIPs or CIDRs, for TCP services without a Host header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub resolution: Resolution,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// No mTLS, and metrics treat it as outside the mesh.
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the original destination address.
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

// === Sidecar ===

/// Narrows what a sidecar listens for and knows about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// None means the namespace default (one per namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// `DEFAULT`, `IPTABLES` or `NONE`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capture_mode: String,
    /// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT` or `unix://path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capture_mode: String,
    /// `namespace/dnsName`; the namespace may be `*`, `.` or `~`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
    /// Only with ALLOW_ANY: where unknown traffic goes instead of passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    #[default]
    AllowAny,
}

// === WorkloadEntry, WorkloadGroup ===

/// A non-Kubernetes workload (VM), or an inline ServiceEntry endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, DNS name or `unix://` path; may be empty only behind a network
    /// gateway (`network` set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name → workload port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// A template for auto-registered WorkloadEntries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMeta>,
    #[serde(default)]
    pub template: WorkloadEntry,
    /// httpGet / tcpSocket / exec / grpc readiness probe, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMeta {
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
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

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const GATEWAY_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
];

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

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*",
];

const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

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

fn non_negative(cx: &mut Ctx<'_>, field: &str, value: Option<i32>) {
    if let Some(n) = value
        && n < 0
    {
        cx.error(field, format!("{n} must not be negative"));
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

fn check_capture_mode(cx: &mut Ctx<'_>, field: &str, mode: &str) {
    if !matches!(mode, "" | "DEFAULT" | "IPTABLES" | "NONE") {
        cx.error(
            field,
            format!("unknown captureMode {mode:?}: expected DEFAULT, IPTABLES or NONE"),
        );
    }
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

impl Headers {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        for (name, ops) in [("request", &self.request), ("response", &self.response)] {
            let Some(ops) = ops else { continue };
            let f = format!("{field}.{name}");
            for (op, names) in [("set", &ops.set), ("add", &ops.add)] {
                if names.keys().any(String::is_empty) {
                    cx.error(format!("{f}.{op}"), "header name must not be empty");
                }
            }
            for (i, header) in ops.remove.iter().enumerate() {
                if header.is_empty() {
                    cx.error(format!("{f}.remove[{i}]"), "header name must not be empty");
                }
            }
        }
    }
}

impl HttpRedirect {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.uri.is_empty()
            && self.authority.is_empty()
            && self.scheme.is_empty()
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            cx.error(
                field,
                "redirect must set at least one of uri, authority, scheme, port or derivePort",
            );
        }
        if let Some(port) = self.port {
            cx.port(format!("{field}.port"), port);
            if self.derive_port.is_some() {
                cx.error(
                    format!("{field}.derivePort"),
                    "set only one of port and derivePort",
                );
            }
        }
        if let Some(code) = self.redirect_code
            && !(300..=399).contains(&code)
        {
            cx.error(
                format!("{field}.redirectCode"),
                format!("redirectCode {code} is outside 300–399"),
            );
        }
    }
}

impl HttpDirectResponse {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if !(200..=599).contains(&self.status) {
            cx.error(
                format!("{field}.status"),
                format!("status {} is outside 200–599", self.status),
            );
        }
        if let Some(body) = &self.body
            && body.string.is_some() == body.bytes.is_some()
        {
            cx.error(
                format!("{field}.body"),
                "body needs exactly one of string and bytes",
            );
        }
    }
}

impl HttpRewrite {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(re) = &self.uri_regex_rewrite {
            if !self.uri.is_empty() {
                cx.error(field, "set only one of uri and uriRegexRewrite");
            }
            cx.regex(format!("{field}.uriRegexRewrite.match"), &re.r#match);
        }
    }
}

impl HttpRetry {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.attempts < 0 {
            cx.error(
                format!("{field}.attempts"),
                format!("attempts {} is negative", self.attempts),
            );
        }
        min_duration(
            cx,
            &format!("{field}.perTryTimeout"),
            self.per_try_timeout.as_ref(),
        );
        min_duration(cx, &format!("{field}.backoff"), self.backoff.as_ref());
        for condition in self.retry_on.split(',').map(str::trim) {
            if condition.is_empty() || RETRY_ON.contains(&condition) {
                continue;
            }
            let is_status = condition
                .parse::<u16>()
                .is_ok_and(|code| (100..=599).contains(&code));
            if !is_status {
                cx.error(
                    format!("{field}.retryOn"),
                    format!("unknown retryOn condition {condition:?}"),
                );
            }
        }
    }
}

impl HttpFaultInjection {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.delay.is_none() && self.abort.is_none() {
            cx.error(field, "fault needs a delay or an abort");
        }
        if let Some(delay) = &self.delay {
            let f = format!("{field}.delay");
            match (&delay.fixed_delay, &delay.exponential_delay) {
                (None, None) => cx.error(&f, "delay needs fixedDelay or exponentialDelay"),
                (Some(_), Some(_)) => {
                    cx.error(&f, "set only one of fixedDelay and exponentialDelay");
                }
                _ => {}
            }
            min_duration(cx, &format!("{f}.fixedDelay"), delay.fixed_delay.as_ref());
            min_duration(
                cx,
                &format!("{f}.exponentialDelay"),
                delay.exponential_delay.as_ref(),
            );
            if let Some(p) = &delay.percentage {
                cx.percent(format!("{f}.percentage"), p);
            }
            percent_0_100(cx, &format!("{f}.percent"), "percent", delay.percent);
        }
        if let Some(abort) = &self.abort {
            let f = format!("{field}.abort");
            let kinds = [
                abort.http_status.is_some(),
                abort.grpc_status.is_some(),
                abort.http2_error.is_some(),
            ]
            .into_iter()
            .filter(|&set| set)
            .count();
            match kinds {
                0 => cx.error(
                    &f,
                    "abort needs one of httpStatus, grpcStatus or http2Error",
                ),
                1 => {}
                _ => cx.error(&f, "set only one of httpStatus, grpcStatus and http2Error"),
            }
            if let Some(status) = abort.http_status
                && !(200..=599).contains(&status)
            {
                cx.error(
                    format!("{f}.httpStatus"),
                    format!("httpStatus {status} is outside 200–599"),
                );
            }
            if let Some(p) = &abort.percentage {
                cx.percent(format!("{f}.percentage"), p);
            }
            percent_0_100(cx, &format!("{f}.percent"), "percent", abort.percent);
        }
    }
}

/// `percentage` wins over the old integer `percent`; neither means always.
fn fault_share(percentage: Option<&Percent>, percent: Option<i32>) -> f64 {
    match (percentage, percent) {
        (Some(p), _) => p.value,
        (None, Some(n)) => f64::from(n),
        (None, None) => 100.0,
    }
}

impl Delay {
    /// The share of requests delayed, in percent.
    pub fn percentage(&self) -> f64 {
        fault_share(self.percentage.as_ref(), self.percent)
    }
}

impl Abort {
    /// The share of requests aborted, in percent.
    pub fn percentage(&self) -> f64 {
        fault_share(self.percentage.as_ref(), self.percent)
    }
}

impl CorsPolicy {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        for (i, origin) in self.allow_origins.iter().enumerate() {
            origin.validate_at(cx, &format!("{field}.allowOrigins[{i}]"));
        }
        if !self.allow_origin.is_empty() {
            cx.warn(
                format!("{field}.allowOrigin"),
                "allowOrigin is deprecated: use allowOrigins",
            );
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&method.as_str()) {
                cx.error(
                    format!("{field}.allowMethods[{i}]"),
                    format!("{method:?} is not an HTTP method"),
                );
            }
        }
        for (name, headers) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, h) in headers.iter().enumerate() {
                if h.is_empty() {
                    cx.error(
                        format!("{field}.{name}[{i}]"),
                        "header name must not be empty",
                    );
                }
            }
        }
        if let Some(mode) = &self.unmatched_preflights
            && !matches!(mode.as_str(), "UNSPECIFIED" | "FORWARD" | "IGNORE")
        {
            cx.error(
                format!("{field}.unmatchedPreflights"),
                format!("unknown unmatchedPreflights {mode:?}: expected FORWARD or IGNORE"),
            );
        }
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

// === impl DestinationRule ===

impl Validate for DestinationRule {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.host.is_empty() {
            cx.error("spec.host", "host is required");
        } else {
            check_host(cx, "spec.host", &self.host);
        }
        if let Some(policy) = &self.traffic_policy {
            policy.validate_at(cx, "spec.trafficPolicy");
        }
        let mut names = BTreeSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let field = format!("spec.subsets[{i}]");
            let name = &subset.name;
            if name.is_empty() {
                cx.error(format!("{field}.name"), "subset name is required");
            } else if !names.insert(name.as_str()) {
                cx.error(
                    format!("{field}.name"),
                    format!("duplicate subset name {name:?}"),
                );
            } else if !dns_label(name) || name.chars().any(|c| c.is_ascii_uppercase()) {
                cx.error(
                    format!("{field}.name"),
                    format!("subset name {name:?} is not a valid DNS label"),
                );
            }
            cx.labels(&format!("{field}.labels"), &subset.labels);
            if let Some(policy) = &subset.traffic_policy {
                policy.validate_at(cx, &format!("{field}.trafficPolicy"));
            }
        }
        check_export_to(cx, "spec.exportTo", &self.export_to);
        if let Some(selector) = &self.workload_selector {
            cx.labels("spec.workloadSelector.labels", &selector.labels);
        }
    }
}

impl TrafficPolicy {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self == &TrafficPolicy::default() {
            cx.error(field, "trafficPolicy must set at least one field");
        }
        validate_policy_parts(
            cx,
            field,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
        );
        let mut ports = BTreeSet::new();
        for (i, p) in self.port_level_settings.iter().enumerate() {
            let f = format!("{field}.portLevelSettings[{i}]");
            match &p.port {
                None => cx.error(format!("{f}.port"), "port is required"),
                Some(port) => {
                    cx.port(format!("{f}.port.number"), port.number);
                    if !ports.insert(port.number) {
                        cx.error(
                            format!("{f}.port.number"),
                            format!("duplicate port-level settings for port {}", port.number),
                        );
                    }
                }
            }
            if p.load_balancer.is_none()
                && p.connection_pool.is_none()
                && p.outlier_detection.is_none()
                && p.tls.is_none()
            {
                cx.error(&f, "port-level settings must set at least one policy");
            }
            validate_policy_parts(
                cx,
                &f,
                p.load_balancer.as_ref(),
                p.connection_pool.as_ref(),
                p.outlier_detection.as_ref(),
                p.tls.as_ref(),
            );
        }
        if let Some(budget) = &self.retry_budget
            && let Some(p) = &budget.percent
        {
            cx.percent(format!("{field}.retryBudget.percent"), p);
        }
    }
}

/// The parts a top-level and a port-level traffic policy share.
fn validate_policy_parts(
    cx: &mut Ctx<'_>,
    field: &str,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        lb.validate_at(cx, &format!("{field}.loadBalancer"));
    }
    if let Some(pool) = pool {
        pool.validate_at(cx, &format!("{field}.connectionPool"));
    }
    if let Some(outlier) = outlier {
        outlier.validate_at(cx, &format!("{field}.outlierDetection"));
    }
    if let Some(tls) = tls {
        tls.validate_at(cx, &format!("{field}.tls"));
    }
}

impl LoadBalancerSettings {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            cx.error(field, "set only one of simple and consistentHash");
        }
        if let Some(hash) = &self.consistent_hash {
            hash.validate_at(cx, &format!("{field}.consistentHash"));
        }
        if let Some(locality) = &self.locality_lb_setting {
            locality.validate_at(cx, &format!("{field}.localityLbSetting"));
        }
        min_duration(
            cx,
            &format!("{field}.warmupDurationSecs"),
            self.warmup_duration_secs.as_ref(),
        );
    }
}

impl ConsistentHashLb {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let keys = [
            self.http_header_name.is_some(),
            self.http_cookie.is_some(),
            self.use_source_ip.is_some(),
            self.http_query_parameter_name.is_some(),
        ]
        .into_iter()
        .filter(|&set| set)
        .count();
        if keys != 1 {
            cx.error(
                field,
                "consistentHash needs exactly one of httpHeaderName, httpCookie, useSourceIp \
                 and httpQueryParameterName",
            );
        }
        for (name, value) in [
            ("httpHeaderName", &self.http_header_name),
            ("httpQueryParameterName", &self.http_query_parameter_name),
        ] {
            if value.as_deref() == Some("") {
                cx.error(
                    format!("{field}.{name}"),
                    format!("{name} must not be empty"),
                );
            }
        }
        if let Some(cookie) = &self.http_cookie
            && cookie.name.is_empty()
        {
            cx.error(
                format!("{field}.httpCookie.name"),
                "cookie name is required",
            );
        }
        if self.ring_hash.is_some() && self.maglev.is_some() {
            cx.error(field, "set only one of ringHash and maglev");
        }
        if self.maglev.is_some() && self.minimum_ring_size.is_some() {
            cx.error(
                format!("{field}.minimumRingSize"),
                "minimumRingSize applies to ring hash, not maglev",
            );
        }
    }
}

impl LocalityLbSetting {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if !self.failover.is_empty() && !self.distribute.is_empty() {
            cx.error(field, "set only one of failover and distribute");
        }
        for (i, d) in self.distribute.iter().enumerate() {
            let f = format!("{field}.distribute[{i}]");
            if d.from.is_empty() {
                cx.error(format!("{f}.from"), "from locality is required");
            }
            let sum: u64 = d.to.values().map(|&w| u64::from(w)).sum();
            if sum != 100 {
                cx.error(
                    format!("{f}.to"),
                    format!("weights sum to {sum}, they must sum to 100"),
                );
            }
        }
        for (i, f) in self.failover.iter().enumerate() {
            let field = format!("{field}.failover[{i}]");
            if f.from.is_empty() || f.to.is_empty() {
                cx.error(&field, "failover needs both from and to regions");
            } else if f.from == f.to {
                cx.error(&field, "failover from and to must be different regions");
            }
        }
    }
}

impl ConnectionPoolSettings {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(tcp) = &self.tcp {
            let f = format!("{field}.tcp");
            non_negative(cx, &format!("{f}.maxConnections"), tcp.max_connections);
            min_duration(
                cx,
                &format!("{f}.connectTimeout"),
                tcp.connect_timeout.as_ref(),
            );
            min_duration(
                cx,
                &format!("{f}.maxConnectionDuration"),
                tcp.max_connection_duration.as_ref(),
            );
            if let Some(keepalive) = &tcp.tcp_keepalive {
                min_duration(
                    cx,
                    &format!("{f}.tcpKeepalive.time"),
                    keepalive.time.as_ref(),
                );
                min_duration(
                    cx,
                    &format!("{f}.tcpKeepalive.interval"),
                    keepalive.interval.as_ref(),
                );
            }
        }
        if let Some(http) = &self.http {
            let f = format!("{field}.http");
            for (name, value) in [
                ("http1MaxPendingRequests", http.http1_max_pending_requests),
                ("http2MaxRequests", http.http2_max_requests),
                ("maxRequestsPerConnection", http.max_requests_per_connection),
                ("maxRetries", http.max_retries),
                ("maxConcurrentStreams", http.max_concurrent_streams),
            ] {
                non_negative(cx, &format!("{f}.{name}"), value);
            }
        }
    }
}

impl OutlierDetection {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(n) = self.consecutive_errors {
            non_negative(cx, &format!("{field}.consecutiveErrors"), Some(n));
            cx.warn(
                format!("{field}.consecutiveErrors"),
                "consecutiveErrors is deprecated: use consecutive5xxErrors",
            );
        }
        min_duration(cx, &format!("{field}.interval"), self.interval.as_ref());
        min_duration(
            cx,
            &format!("{field}.baseEjectionTime"),
            self.base_ejection_time.as_ref(),
        );
        percent_0_100(
            cx,
            &format!("{field}.maxEjectionPercent"),
            "maxEjectionPercent",
            self.max_ejection_percent,
        );
        percent_0_100(
            cx,
            &format!("{field}.minHealthPercent"),
            "minHealthPercent",
            self.min_health_percent,
        );
    }
}

impl ClientTlsSettings {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        match self.mode {
            TlsMode::Mutual => {
                if self.credential_name.is_empty()
                    && (self.client_certificate.is_empty() || self.private_key.is_empty())
                {
                    cx.error(
                        field,
                        "MUTUAL mode needs clientCertificate and privateKey, or credentialName",
                    );
                }
            }
            TlsMode::IstioMutual => {
                let files = [
                    &self.client_certificate,
                    &self.private_key,
                    &self.ca_certificates,
                    &self.credential_name,
                    &self.ca_crl,
                ];
                if files.iter().any(|s| !s.is_empty()) {
                    cx.error(
                        field,
                        "ISTIO_MUTUAL uses Istio's own certificates: do not set \
                         clientCertificate, privateKey, caCertificates, caCrl or credentialName",
                    );
                }
            }
            TlsMode::Disable | TlsMode::Simple => {}
        }
    }
}

// === impl Gateway ===

impl Validate for Gateway {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.servers.is_empty() {
            cx.error("spec.servers", "at least one server is required");
        }
        cx.labels("spec.selector", &self.selector);
        let mut port_names = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            server.validate_at(cx, &field);
            if let Some(port) = &server.port
                && !port.name.is_empty()
                && !port_names.insert(port.name.as_str())
            {
                cx.error(
                    format!("{field}.port.name"),
                    format!("duplicate server port name {:?}", port.name),
                );
            }
        }
    }
}

impl Server {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let protocol = match &self.port {
            None => {
                cx.error(format!("{field}.port"), "port is required");
                String::new()
            }
            Some(port) => {
                cx.port(format!("{field}.port.number"), port.number);
                check_protocol(
                    cx,
                    &format!("{field}.port.protocol"),
                    &port.protocol,
                    GATEWAY_PROTOCOLS,
                );
                if let Some(target) = port.target_port {
                    cx.port(format!("{field}.port.targetPort"), target);
                }
                port.protocol.to_ascii_uppercase()
            }
        };
        if self.hosts.is_empty() {
            cx.error(format!("{field}.hosts"), "at least one host is required");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            check_namespaced_host(cx, &format!("{field}.hosts[{i}]"), host, false);
        }
        let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
        match &self.tls {
            None if terminates => cx.error(
                format!("{field}.tls"),
                format!("protocol {protocol} needs tls settings (mode and credentials)"),
            ),
            None => {}
            Some(tls) if terminates => tls.validate_at(cx, &format!("{field}.tls")),
            // A plain-text server may carry tls only to redirect to HTTPS.
            Some(tls)
                if !protocol.is_empty()
                    && (!tls.https_redirect || tls.mode != ServerTlsMode::Passthrough) =>
            {
                cx.error(
                    format!("{field}.tls"),
                    format!(
                        "protocol {protocol} is plain text: its tls may only set httpsRedirect \
                         (use HTTPS or TLS to terminate TLS)"
                    ),
                );
            }
            Some(_) => {}
        }
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

fn server_tls_mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

impl ServerTlsSettings {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let mode = server_tls_mode_name(self.mode);
        let has_credential = !self.credential_name.is_empty()
            || !self.credential_names.is_empty()
            || !self.tls_certificates.is_empty();
        let has_files = !self.server_certificate.is_empty() && !self.private_key.is_empty();
        match self.mode {
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !has_credential && !has_files {
                    cx.error(
                        field,
                        format!(
                            "{mode} TLS needs credentialName(s) or serverCertificate and privateKey"
                        ),
                    );
                }
                if self.mode != ServerTlsMode::Simple
                    && !has_credential
                    && has_files
                    && self.ca_certificates.is_empty()
                {
                    cx.error(
                        format!("{field}.caCertificates"),
                        format!("{mode} TLS needs caCertificates to verify client certificates"),
                    );
                }
            }
            ServerTlsMode::IstioMutual => {
                if has_credential || has_files || !self.ca_certificates.is_empty() {
                    cx.error(
                        field,
                        "ISTIO_MUTUAL uses Istio's own certificates: do not set credentialName, \
                         serverCertificate, privateKey or caCertificates",
                    );
                }
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        }
        if !self.credential_name.is_empty() && !self.credential_names.is_empty() {
            cx.error(
                format!("{field}.credentialNames"),
                "set only one of credentialName and credentialNames",
            );
        }
        let version = |cx: &mut Ctx<'_>, name: &str, v: &Option<String>| {
            let v = v.as_deref()?;
            let rank = TLS_VERSIONS.iter().position(|t| *t == v);
            if rank.is_none() {
                cx.error(
                    format!("{field}.{name}"),
                    format!(
                        "unknown TLS version {v:?}: expected one of {}",
                        TLS_VERSIONS.join(", ")
                    ),
                );
            }
            // TLS_AUTO leaves the choice to Envoy and orders with nothing.
            rank.filter(|&r| r > 0)
        };
        let min = version(cx, "minProtocolVersion", &self.min_protocol_version);
        let max = version(cx, "maxProtocolVersion", &self.max_protocol_version);
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            cx.error(
                format!("{field}.minProtocolVersion"),
                "minProtocolVersion is above maxProtocolVersion",
            );
        }
    }
}

// === impl ServiceEntry ===

impl Validate for ServiceEntry {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.hosts.is_empty() {
            cx.error("spec.hosts", "at least one host is required");
        }
        let dns = matches!(self.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        for (i, host) in self.hosts.iter().enumerate() {
            let field = format!("spec.hosts[{i}]");
            if host == "*" {
                cx.error(field, "host \"*\" is not allowed in a ServiceEntry");
            } else if dns && self.endpoints.is_empty() && host.starts_with('*') {
                cx.error(
                    field,
                    format!(
                        "wildcard host {host:?} cannot be resolved with DNS resolution: \
                         use NONE, DYNAMIC_DNS or list endpoints"
                    ),
                );
            } else {
                check_host(cx, &field, host);
            }
        }
        for (i, address) in self.addresses.iter().enumerate() {
            check_cidr(cx, &format!("spec.addresses[{i}]"), address);
        }
        let port_names = self.validate_ports(cx);
        match self.resolution {
            Resolution::Static if self.endpoints.is_empty() && self.workload_selector.is_none() => {
                cx.error(
                    "spec.endpoints",
                    "STATIC resolution needs endpoints or a workloadSelector",
                );
            }
            Resolution::None if !self.endpoints.is_empty() => cx.error(
                "spec.endpoints",
                "NONE resolution forwards to the original destination: endpoints are not allowed",
            ),
            _ => {}
        }
        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            cx.error(
                "spec.workloadSelector",
                "set only one of endpoints and workloadSelector",
            );
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = format!("spec.endpoints[{i}]");
            endpoint.validate_parts(cx, &field, true);
            let address = &endpoint.address;
            if self.resolution == Resolution::Static
                && !address.is_empty()
                && !address.starts_with("unix://")
                && address.parse::<IpAddr>().is_err()
            {
                cx.error(
                    format!("{field}.address"),
                    format!("STATIC resolution needs an IP address, not {address:?}"),
                );
            }
            for name in endpoint.ports.keys() {
                if !port_names.contains(name.as_str()) {
                    cx.error(
                        format!("{field}.ports.{name}"),
                        format!("port {name:?} is not one of the ServiceEntry's port names"),
                    );
                }
            }
        }
        if let Some(selector) = &self.workload_selector {
            cx.labels("spec.workloadSelector.labels", &selector.labels);
        }
        check_export_to(cx, "spec.exportTo", &self.export_to);
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                cx.error(
                    format!("spec.subjectAltNames[{i}]"),
                    "subject alt name must not be empty",
                );
            }
        }
    }
}

impl ServiceEntry {
    /// Checks `ports` and returns their names.
    fn validate_ports(&self, cx: &mut Ctx<'_>) -> BTreeSet<&str> {
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            cx.port(format!("{field}.number"), port.number);
            if port.number != 0 && !numbers.insert(port.number) {
                cx.error(
                    format!("{field}.number"),
                    format!("duplicate port number {}", port.number),
                );
            }
            check_protocol(
                cx,
                &format!("{field}.protocol"),
                &port.protocol,
                SERVICE_PROTOCOLS,
            );
            if port.name.is_empty() {
                cx.error(format!("{field}.name"), "port name is required");
            } else if !names.insert(port.name.as_str()) {
                cx.error(
                    format!("{field}.name"),
                    format!("duplicate port name {:?}", port.name),
                );
            }
            if let Some(target) = port.target_port {
                cx.port(format!("{field}.targetPort"), target);
            }
        }
        names
    }
}

// === impl Sidecar ===

impl Validate for Sidecar {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if let Some(selector) = &self.workload_selector {
            cx.labels("spec.workloadSelector.labels", &selector.labels);
        }
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            cx.warn("spec", "empty Sidecar: it changes nothing");
        }
        let mut ingress_ports = BTreeSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            match &listener.port {
                None => cx.error(format!("{field}.port"), "port is required"),
                Some(port) => {
                    port.validate_at(cx, &format!("{field}.port"));
                    if !ingress_ports.insert(port.number) {
                        cx.error(
                            format!("{field}.port.number"),
                            format!("duplicate ingress port {}", port.number),
                        );
                    }
                }
            }
            check_capture_mode(cx, &format!("{field}.captureMode"), &listener.capture_mode);
            if !listener.default_endpoint.is_empty()
                && !default_endpoint_ok(&listener.default_endpoint)
            {
                cx.error(
                    format!("{field}.defaultEndpoint"),
                    format!(
                        "defaultEndpoint {:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, \
                         [::]:PORT or unix://path",
                        listener.default_endpoint
                    ),
                );
            }
            if let Some(tls) = &listener.tls {
                tls.validate_at(cx, &format!("{field}.tls"));
            }
            if let Some(pool) = &listener.connection_pool {
                pool.validate_at(cx, &format!("{field}.connectionPool"));
            }
        }
        let mut catch_all = 0;
        for (i, listener) in self.egress.iter().enumerate() {
            let field = format!("spec.egress[{i}]");
            match &listener.port {
                None => {
                    catch_all += 1;
                    if catch_all > 1 {
                        cx.error(
                            format!("{field}.port"),
                            "only one egress listener may omit the port",
                        );
                    }
                }
                Some(port) => port.validate_at(cx, &format!("{field}.port")),
            }
            check_capture_mode(cx, &format!("{field}.captureMode"), &listener.capture_mode);
            if listener.hosts.is_empty() {
                cx.error(format!("{field}.hosts"), "at least one host is required");
            }
            for (j, host) in listener.hosts.iter().enumerate() {
                check_namespaced_host(cx, &format!("{field}.hosts[{j}]"), host, true);
            }
        }
        if let Some(policy) = &self.outbound_traffic_policy
            && let Some(proxy) = &policy.egress_proxy
        {
            let field = "spec.outboundTrafficPolicy.egressProxy";
            if policy.mode == OutboundMode::RegistryOnly {
                cx.error(field, "egressProxy only applies with mode ALLOW_ANY");
            }
            proxy.validate_at(cx, field);
        }
        if let Some(pool) = &self.inbound_connection_pool {
            pool.validate_at(cx, "spec.inboundConnectionPool");
        }
    }
}

impl SidecarPort {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        cx.port(format!("{field}.number"), self.number);
        check_protocol(
            cx,
            &format!("{field}.protocol"),
            &self.protocol,
            SERVICE_PROTOCOLS,
        );
        if let Some(target) = self.target_port {
            cx.port(format!("{field}.targetPort"), target);
        }
    }
}

fn default_endpoint_ok(endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return !path.is_empty();
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return false;
    };
    matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]")
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

// === impl WorkloadEntry, WorkloadGroup ===

impl Validate for WorkloadEntry {
    fn validate(&self, cx: &mut Ctx<'_>) {
        self.validate_parts(cx, "spec", true);
    }
}

impl WorkloadEntry {
    /// `with_address` is false for a WorkloadGroup template, whose address is
    /// filled in when a VM registers.
    fn validate_parts(&self, cx: &mut Ctx<'_>, field: &str, with_address: bool) {
        let address = &self.address;
        if with_address {
            if address.is_empty() {
                if self.network.is_empty() {
                    cx.error(
                        format!("{field}.address"),
                        "address is required (it may be empty only when network is set)",
                    );
                }
            } else if !address_ok(address) {
                cx.error(
                    format!("{field}.address"),
                    format!("address {address:?} is not an IP address, DNS name or unix:// path"),
                );
            }
        }
        for (name, &port) in &self.ports {
            cx.port(format!("{field}.ports.{name}"), port);
        }
        cx.labels(&format!("{field}.labels"), &self.labels);
    }
}

fn address_ok(address: &str) -> bool {
    if let Some(path) = address.strip_prefix("unix://") {
        return !path.is_empty();
    }
    address.parse::<IpAddr>().is_ok()
        || (!address.contains('*') && wildcard_domain(address).is_ok())
}

impl Validate for WorkloadGroup {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if let Some(meta) = &self.metadata {
            cx.labels("spec.metadata.labels", &meta.labels);
        }
        if !self.template.address.is_empty() {
            cx.error(
                "spec.template.address",
                "a WorkloadGroup template has no address: it is filled in when a workload registers",
            );
        }
        self.template.validate_parts(cx, "spec.template", false);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::diag::Severity;
    use crate::test_util::{errors, sample_docs, str_field, yaml_docs};

    /// Networking YAML from Istio's task pages and API reference, in the
    /// older shapes the samples no longer use (integer `percent`,
    /// `consecutiveErrors`, locality settings, egress TLS origination).
    const DOCS_YAML: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percent: 100
        fixedDelay: 7s
      abort:
        percent: 10
        httpStatus: 500
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 100
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,503"}
    timeout: 0.5s
    corsPolicy:
      allowOrigins: [{exact: "https://example.com"}]
      allowMethods: [POST, GET]
      maxAge: 24h
    headers:
      request: {set: {x-test: "1"}}
      response: {remove: [foo]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: redirects, namespace: default}
spec:
  hosts: [example.com]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 308}
  - match: [{uri: {regex: "^/v[0-9]+/.*"}}]
    rewrite: {uriRegexRewrite: {match: "^/v[0-9]+/(.*)", rewrite: "/\\1"}}
    route: [{destination: {host: example.com, port: {number: 80}}}]
  - directResponse: {status: 503, body: {string: "unavailable"}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls-routing, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [mesh]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
  tcp:
  - match: [{port: 31400, destinationSubnets: [10.0.0.0/8]}]
    route:
    - destination: {host: tcp-echo, subset: v1}
      weight: 80
    - destination: {host: tcp-echo, subset: v2}
      weight: 20
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1, http2MaxRequests: 10, h2UpgradePolicy: UPGRADE}
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
    loadBalancer:
      localityLbSetting:
        enabled: true
        failover: [{from: us-east, to: eu-west}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egress, namespace: default}
spec:
  host: www.google.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE, sni: www.google.com}
    - port: {number: 8443}
      tls: {mode: MUTUAL, credentialName: client-credential}
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, ttl: 0s}
      localityLbSetting:
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mygateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["ns1/*", "./reviews.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: example-cert, minProtocolVersion: TLSV1_2}
  - port: {number: 9443, name: mtls, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: MUTUAL, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem, caCertificates: /etc/ca.pem}
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-svc, namespace: default}
spec:
  hosts: [mymongodb.somedomain]
  addresses: [192.192.192.192/24]
  ports: [{number: 27018, name: mongodb, protocol: MONGO}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 2.2.2.2
  - address: 3.3.3.3
    ports: {mongodb: 27019}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: bookinfo}
spec:
  workloadSelector: {labels: {app: ratings}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: somename}
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port: {number: 9080, protocol: HTTP, name: egresshttp}
    hosts: ["prod-us1/*"]
  - hosts: ["./*", "istio-system/*", "~/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-svc, namespace: default}
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels: {app: details-legacy, instance-id: vm1}
  ports: {http: 9080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: bookinfo}
spec:
  metadata:
    labels: {app.kubernetes.io/name: reviews, app.kubernetes.io/version: "1.3.4"}
  template:
    ports: {grpc: 3550, http: 8080}
    serviceAccount: default
  probe:
    initialDelaySeconds: 5
    httpGet: {path: /ready, port: 8080}
"#;

    fn errors_of(kind: &str, spec: serde_yaml::Value) -> Vec<(String, String)> {
        match kind {
            "VirtualService" => errors::<VirtualService>(spec),
            "DestinationRule" => errors::<DestinationRule>(spec),
            "Gateway" => errors::<Gateway>(spec),
            "ServiceEntry" => errors::<ServiceEntry>(spec),
            "Sidecar" => errors::<Sidecar>(spec),
            "WorkloadEntry" => errors::<WorkloadEntry>(spec),
            "WorkloadGroup" => errors::<WorkloadGroup>(spec),
            other => panic!("unexpected networking kind {other}"),
        }
    }

    /// (kind, errors) for a `networking.istio.io` document Kite models.
    fn check_doc(doc: &serde_yaml::Value) -> Option<(String, Vec<(String, String)>)> {
        let group = str_field(doc, "apiVersion")
            .split('/')
            .next()
            .unwrap_or_default();
        let kind = str_field(doc, "kind");
        let modelled = [
            "VirtualService",
            "DestinationRule",
            "Gateway",
            "ServiceEntry",
            "Sidecar",
            "WorkloadEntry",
            "WorkloadGroup",
        ];
        if group != "networking.istio.io" || !modelled.contains(&kind) {
            return None;
        }
        let spec = match doc.get("spec") {
            Some(serde_yaml::Value::Null) | None => serde_yaml::Value::Mapping(Default::default()),
            Some(spec) => spec.clone(),
        };
        Some((kind.to_owned(), errors_of(kind, spec)))
    }

    #[test]
    fn samples_and_docs_load_cleanly() {
        let mut checked = 0;
        let docs = sample_docs().into_iter().chain(
            yaml_docs(DOCS_YAML)
                .into_iter()
                .map(|d| (PathBuf::from("docs"), d)),
        );
        for (file, doc) in docs {
            if let Some((kind, errors)) = check_doc(&doc) {
                checked += 1;
                assert!(
                    errors.is_empty(),
                    "{} {kind} {:?}: {errors:?}",
                    file.display(),
                    doc.get("metadata")
                );
            }
        }
        assert!(checked >= 50, "only {checked} networking documents checked");
    }

    #[test]
    fn broken_inputs_are_located() {
        const ROUTE: &str = "route: [{destination: {host: reviews}}]";
        let vs = |http: &str| format!("{{hosts: [reviews], http: [{http}]}}");
        let cases: Vec<(&str, String, &str, &str)> = vec![
            // (kind, spec, field, message fragment)
            (
                "DestinationRule",
                "{host: reviews, subsets: [{name: v1, lables: {version: v1}}]}".into(),
                "spec.subsets[0].lables",
                "unknown field `lables`",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, timeout: 5x}}")),
                "spec.http[0].timeout",
                "invalid duration \"5x\"",
            ),
            (
                "VirtualService",
                vs(&format!("{{match: [{{uri: {{regex: '(['}}}}], {ROUTE}}}")),
                "spec.http[0].match[0].uri.regex",
                "invalid regex",
            ),
            (
                "VirtualService",
                vs(&format!(
                    "{{match: [{{headers: {{End-User: {{exact: jason}}}}}}], {ROUTE}}}"
                )),
                "spec.http[0].match[0].headers.End-User",
                "header name \"End-User\" must be lower case",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a}}, {destination: {host: b}}]}"),
                "spec.http[0].route",
                "weights of all destinations are zero",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a}, weight: 5}, {destination: {host: b}, weight: -5}]}"),
                "spec.http[0].route[1].weight",
                "weight -5 is negative",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, retries: {{attempts: 3, retryOn: '5xx,5xxx'}}}}")),
                "spec.http[0].retries.retryOn",
                "unknown retryOn condition \"5xxx\"",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{abort: {{percentage: {{value: 10}}}}}}}}")),
                "spec.http[0].fault.abort",
                "abort needs one of httpStatus, grpcStatus or http2Error",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{abort: {{httpStatus: 700}}}}}}")),
                "spec.http[0].fault.abort.httpStatus",
                "httpStatus 700 is outside 200–599",
            ),
            (
                "VirtualService",
                vs(&format!(
                    "{{{ROUTE}, fault: {{delay: {{fixedDelay: 5s, percentage: {{value: 150}}}}}}}}"
                )),
                "spec.http[0].fault.delay.percentage",
                "percentage 150 is outside 0–100",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, fault: {{delay: {{percent: 50}}}}}}")),
                "spec.http[0].fault.delay",
                "delay needs fixedDelay or exponentialDelay",
            ),
            (
                "VirtualService",
                vs(&format!("{{{ROUTE}, redirect: {{uri: /x}}}}")),
                "spec.http[0].redirect",
                "redirect cannot be combined with route",
            ),
            (
                "VirtualService",
                vs("{match: [{uri: {prefix: /}}]}"),
                "spec.http[0]",
                "one of route, redirect, directResponse or delegate is required",
            ),
            (
                "VirtualService",
                vs("{redirect: {uri: /x, redirectCode: 200}}"),
                "spec.http[0].redirect.redirectCode",
                "redirectCode 200 is outside 300–399",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {subset: v1}}]}"),
                "spec.http[0].route[0].destination.host",
                "destination host is required",
            ),
            (
                "VirtualService",
                vs("{route: [{destination: {host: a, port: {number: 70000}}}]}"),
                "spec.http[0].route[0].destination.port.number",
                "port number 70000",
            ),
            (
                "VirtualService",
                "{http: [{route: [{destination: {host: a}}]}]}".into(),
                "spec.hosts",
                "at least one host is required",
            ),
            (
                "VirtualService",
                "{hosts: ['*'], http: [{route: [{destination: {host: a}}]}]}".into(),
                "spec.hosts[0]",
                "wildcard host \"*\" is not allowed",
            ),
            (
                "VirtualService",
                "{hosts: [a.com], tls: [{match: [{port: 443}], route: [{destination: {host: a.com}}]}]}"
                    .into(),
                "spec.tls[0].match[0].sniHosts",
                "sniHosts is required",
            ),
            (
                "VirtualService",
                "{hosts: [a], tcp: [{match: [{port: 9000}]}]}".into(),
                "spec.tcp[0].route",
                "at least one route destination is required",
            ),
            (
                "DestinationRule",
                "{host: reviews, subsets: [{name: v1, labels: {version: v1}}, {name: v1, labels: {version: v2}}]}"
                    .into(),
                "spec.subsets[1].name",
                "duplicate subset name \"v1\"",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}}"
                    .into(),
                "spec.trafficPolicy.loadBalancer",
                "set only one of simple and consistentHash",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {loadBalancer: {consistentHash: {}}}}".into(),
                "spec.trafficPolicy.loadBalancer.consistentHash",
                "exactly one of",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {tls: {mode: SUPER_MUTUAL}}}".into(),
                "spec.trafficPolicy.tls.mode",
                "unknown variant `SUPER_MUTUAL`",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem}}}"
                    .into(),
                "spec.trafficPolicy.tls",
                "MUTUAL mode needs clientCertificate and privateKey",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}}"
                    .into(),
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "maxEjectionPercent 150 is outside 0–100",
            ),
            (
                "DestinationRule",
                "{host: reviews, trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -1}}}}"
                    .into(),
                "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
                "must not be negative",
            ),
            (
                "DestinationRule",
                "{host: r, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a/*, to: {a/*: 70, b/*: 20}}]}}}}"
                    .into(),
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "weights sum to 90",
            ),
            (
                "DestinationRule",
                "{host: r, trafficPolicy: {portLevelSettings: [{tls: {mode: SIMPLE}}]}}".into(),
                "spec.trafficPolicy.portLevelSettings[0].port",
                "port is required",
            ),
            (
                "Gateway",
                "{selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}}]}"
                    .into(),
                "spec.servers[0].hosts",
                "at least one host is required",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}"
                    .into(),
                "spec.servers[0].tls",
                "protocol HTTPS needs tls settings",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE}}]}"
                    .into(),
                "spec.servers[0].tls",
                "SIMPLE TLS needs credentialName(s) or serverCertificate and privateKey",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 80, name: http, protocol: HTTPX}, hosts: ['*']}]}".into(),
                "spec.servers[0].port.protocol",
                "unknown protocol \"HTTPX\"",
            ),
            (
                "Gateway",
                "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {port: {number: 81, name: http, protocol: HTTP}, hosts: ['*']}]}"
                    .into(),
                "spec.servers[1].port.name",
                "duplicate server port name \"http\"",
            ),
            (
                "Gateway",
                "{}".into(),
                "spec.servers",
                "at least one server is required",
            ),
            (
                "ServiceEntry",
                "{hosts: [db.internal], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: STATIC}"
                    .into(),
                "spec.endpoints",
                "STATIC resolution needs endpoints or a workloadSelector",
            ),
            (
                "ServiceEntry",
                "{hosts: ['*.example.com'], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}"
                    .into(),
                "spec.hosts[0]",
                "cannot be resolved with DNS resolution",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], addresses: [10.0.0.0/33], ports: [{number: 80, name: http, protocol: HTTP}]}"
                    .into(),
                "spec.addresses[0]",
                "invalid prefix length",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]}"
                    .into(),
                "spec.ports[1].name",
                "duplicate port name \"http\"",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], ports: [{number: 80, protocol: HTTP}]}".into(),
                "spec.ports[0].name",
                "port name is required",
            ),
            (
                "ServiceEntry",
                "{hosts: [a.com], resolution: DNSS}".into(),
                "spec.resolution",
                "unknown variant `DNSS`",
            ),
            (
                "Sidecar",
                "{egress: [{hosts: [reviews.default.svc.cluster.local]}]}".into(),
                "spec.egress[0].hosts[0]",
                "must be of the form namespace/dnsName",
            ),
            (
                "Sidecar",
                "{outboundTrafficPolicy: {mode: BLOCK}}".into(),
                "spec.outboundTrafficPolicy.mode",
                "unknown variant `BLOCK`",
            ),
            (
                "WorkloadEntry",
                "{labels: {app: vm}}".into(),
                "spec.address",
                "address is required",
            ),
            (
                "WorkloadEntry",
                "{address: 1.2.3.4, ports: {http: 0}}".into(),
                "spec.ports.http",
                "port number 0",
            ),
        ];
        for (kind, spec, field, fragment) in &cases {
            let value: serde_yaml::Value = serde_yaml::from_str(spec).expect("test YAML");
            let errors = errors_of(kind, value);
            assert!(
                errors
                    .iter()
                    .any(|(f, m)| f == field && m.contains(fragment)),
                "{kind} {spec}: expected {field}: …{fragment}…, got {errors:?}"
            );
        }
    }

    #[test]
    fn old_and_new_shapes() {
        let vs: VirtualService = serde_yaml::from_str(
            "{hosts: [r], http: [{route: [{destination: {host: r, port: {number: 9080}}}], \
             mirror: {host: m}, mirrorPercent: 25, \
             fault: {delay: {fixedDelay: 7s, percent: 40}, abort: {httpStatus: 500, percentage: {value: 0.5}}}}]}",
        )
        .expect("parses");
        let route = &vs.http[0];
        assert_eq!(route.mirror_share(), 25.0);
        assert_eq!(route.route[0].destination.port_number(), Some(9080));
        let fault = route.fault.as_ref().expect("fault");
        assert_eq!(fault.delay.as_ref().map(Delay::percentage), Some(40.0));
        assert_eq!(fault.abort.as_ref().map(Abort::percentage), Some(0.5));
        assert_eq!(Delay::default().percentage(), 100.0);
        assert_eq!(HttpRoute::default().mirror_share(), 100.0);
        assert_eq!(Destination::default().port_number(), None);

        // The digit-bearing field names must round-trip exactly.
        let dr: DestinationRule = serde_yaml::from_str(
            "{host: r, trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 1, \
             http2MaxRequests: 2, h2UpgradePolicy: DO_NOT_UPGRADE}}, \
             outlierDetection: {consecutive5xxErrors: 3}}}",
        )
        .expect("parses");
        let json = serde_json::to_string(&dr).expect("serializes");
        for name in [
            "\"http1MaxPendingRequests\":1",
            "\"http2MaxRequests\":2",
            "\"h2UpgradePolicy\":\"DO_NOT_UPGRADE\"",
            "\"consecutive5xxErrors\":3",
        ] {
            assert!(json.contains(name), "{name} missing from {json}");
        }
        let back: DestinationRule = serde_json::from_str(&json).expect("round-trips");
        assert_eq!(back, dr);

        let se: ServiceEntry = serde_yaml::from_str("{hosts: [a.com]}").expect("parses");
        assert_eq!(se.location, Location::MeshExternal);
        assert_eq!(se.resolution, Resolution::None);
        let gw: Gateway = serde_yaml::from_str(
            "{servers: [{port: {number: 15443, name: tls, protocol: TLS}, hosts: ['*'], tls: {}}]}",
        )
        .expect("parses");
        assert_eq!(
            gw.servers[0].tls.as_ref().map(|t| t.mode),
            Some(ServerTlsMode::Passthrough)
        );
        assert_eq!(
            OutboundTrafficPolicy::default().mode,
            OutboundMode::AllowAny
        );
        assert_eq!(ClientTlsSettings::default().mode, TlsMode::Disable);
    }

    #[test]
    fn warnings_do_not_block() {
        let dr: DestinationRule = serde_yaml::from_str(
            "{host: r, trafficPolicy: {outlierDetection: {consecutiveErrors: 1}}}",
        )
        .expect("parses");
        let mut cx = Ctx::new("default");
        dr.validate(&mut cx);
        let found: Vec<_> = cx
            .findings()
            .iter()
            .map(|f| (f.severity, f.field.as_str()))
            .collect();
        assert_eq!(
            found,
            [(
                Severity::Warning,
                "spec.trafficPolicy.outlierDetection.consecutiveErrors"
            )]
        );
    }

    #[test]
    fn host_helpers() {
        assert_eq!(
            expand_host("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(expand_host("reviews.prod", "default"), "reviews.prod");
        assert_eq!(
            expand_host("reviews.default.svc.cluster.local", "x"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(expand_host("*", "default"), "*");
        assert_eq!(expand_host("*.example.com", "default"), "*.example.com");

        assert!(host_matches("*", "anything.example.com"));
        assert!(host_matches("reviews", "reviews"));
        assert!(host_matches("Reviews.Example.com", "reviews.example.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(!host_matches("reviews", "ratings"));
        assert!(!host_matches("a.example.com", "*.example.com"));
    }
}
