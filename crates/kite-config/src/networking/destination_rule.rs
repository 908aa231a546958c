//! DestinationRule: subsets and the traffic policies (load balancing,
//! connection pools, outlier detection, client TLS) applied after routing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    WorkloadLabels, check_export_to, check_host, dns_label, is_false, min_duration, percent_0_100,
};
use crate::common::{Ctx, Duration, Labels, Percent, PortSelector, Validate, percent_or_number};

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

fn non_negative(cx: &mut Ctx<'_>, field: &str, value: Option<i32>) {
    if let Some(n) = value
        && n < 0
    {
        cx.error(field, format!("{n} must not be negative"));
    }
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
