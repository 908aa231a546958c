//! `telemetry.istio.io` Telemetry: tracing, metrics and access logging for
//! the selected workloads. A workload-selected object overrides the
//! namespace one, which overrides the root-namespace (mesh) one.

use std::{collections::BTreeMap, time::Duration as StdDuration};

use serde::{Deserialize, Serialize};

use crate::{
    common::{Ctx, Duration, PolicyTargetReference, Validate, WorkloadSelector},
    security::validate_targeting,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// The `Option<bool>` fields are protobuf `BoolValue`s: unset inherits from
/// the parent scope, which an explicit `false` overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// Names of meshConfig extension providers (zipkin, opentelemetry, …);
    /// empty means the mesh's default tracing provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// 0–100; unset inherits (the mesh default is 1 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// Stops reporting spans but keeps propagating trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Replaces, not merges with, the parent's tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    /// Newer API versions: stop forwarding trace headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// Tracing's `TracingSelector` and access logging's `LogSelector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModeSelector {
    #[serde(default)]
    pub mode: WorkloadMode,
}

/// Which side of the traffic the workload is on: CLIENT is outbound,
/// SERVER inbound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// A protobuf oneof: exactly one of the four is set; see
/// [`CustomTag::source`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<LiteralTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentTag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderTag>,
    /// An access-log substitution formatter such as `%REQ(:PATH)%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<FormatterTag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiteralTag {
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderTag {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormatterTag {
    #[serde(default)]
    pub value: String,
}

/// Where a custom tag's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagSource<'a> {
    Literal(&'a str),
    Environment {
        name: &'a str,
        default_value: &'a str,
    },
    Header {
        name: &'a str,
        default_value: &'a str,
    },
    Formatter(&'a str),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Empty means the mesh's default metrics provider (`prometheus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Applied in order, after the overrides inherited from wider scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// How often long-lived TCP and gRPC streams report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Absent matches every Istio metric, client and server.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Label name → change; values are CEL expressions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// `metric` and `customMetric` are a oneof; neither means ALL_METRICS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default)]
    pub mode: WorkloadMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    #[default]
    AllMetrics,
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    #[serde(default)]
    pub operation: TagOperation,
    /// A CEL expression, only with UPSERT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    #[default]
    Upsert,
    Remove,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<ModeSelector>,
    /// `envoy` is the built-in text log to stdout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Unset inherits; a parent's `true` needs an explicit `false` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogFilter {
    /// CEL, e.g. `response.code >= 400`.
    #[serde(default)]
    pub expression: String,
}

// === impl Telemetry ===

impl Validate for Telemetry {
    fn validate(&self, cx: &mut Ctx<'_>) {
        validate_targeting(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        if self.tracing.len() > 1 {
            cx.warn(
                "spec.tracing",
                "multiple tracing entries are not supported; only the first is used",
            );
        }
        for (i, tracing) in self.tracing.iter().enumerate() {
            tracing.validate_at(cx, &format!("spec.tracing[{i}]"));
        }
        for (i, metrics) in self.metrics.iter().enumerate() {
            metrics.validate_at(cx, &format!("spec.metrics[{i}]"));
        }
        for (i, logging) in self.access_logging.iter().enumerate() {
            logging.validate_at(cx, &format!("spec.accessLogging[{i}]"));
        }
    }
}

fn validate_providers(cx: &mut Ctx<'_>, field: &str, providers: &[ProviderRef]) {
    for (i, p) in providers.iter().enumerate() {
        if p.name.is_empty() {
            cx.error(
                format!("{field}.providers[{i}].name"),
                "providers.name may not be empty",
            );
        }
    }
}

impl Tracing {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.providers.len() > 1 {
            cx.warn(
                format!("{field}.providers"),
                "multiple tracing providers are not supported; only the first is used",
            );
        }
        validate_providers(cx, field, &self.providers);
        if let Some(p) = self.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            cx.error(
                format!("{field}.randomSamplingPercentage"),
                format!("randomSamplingPercentage {p} must be in range [0.0, 100.0]"),
            );
        }
        for (name, tag) in &self.custom_tags {
            let at = format!("{field}.customTags.{name}");
            if name.is_empty() {
                cx.error(&at, "tag name may not be empty");
            }
            tag.validate_at(cx, &at);
        }
    }
}

impl CustomTag {
    /// The one source that is set, or `None` if zero or several are.
    pub fn source(&self) -> Option<TagSource<'_>> {
        let sources = [
            self.literal.as_ref().map(|l| TagSource::Literal(&l.value)),
            self.environment.as_ref().map(|e| TagSource::Environment {
                name: &e.name,
                default_value: &e.default_value,
            }),
            self.header.as_ref().map(|h| TagSource::Header {
                name: &h.name,
                default_value: &h.default_value,
            }),
            self.formatter
                .as_ref()
                .map(|f| TagSource::Formatter(&f.value)),
        ];
        let mut set = sources.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let set = [
            self.literal.is_some(),
            self.environment.is_some(),
            self.header.is_some(),
            self.formatter.is_some(),
        ]
        .into_iter()
        .filter(|&s| s)
        .count();
        if set != 1 {
            cx.error(
                field,
                "a custom tag needs exactly one of literal, environment, header and formatter",
            );
        }
        match self.source() {
            Some(TagSource::Literal("")) => {
                cx.error(
                    format!("{field}.literal.value"),
                    "literal tag value may not be empty",
                );
            }
            Some(TagSource::Environment { name: "", .. }) => {
                cx.error(
                    format!("{field}.environment.name"),
                    "environment tag name may not be empty",
                );
            }
            Some(TagSource::Header { name: "", .. }) => {
                cx.error(
                    format!("{field}.header.name"),
                    "header tag name may not be empty",
                );
            }
            Some(TagSource::Formatter("")) => {
                cx.error(
                    format!("{field}.formatter.value"),
                    "formatter tag value may not be empty",
                );
            }
            _ => {}
        }
    }
}

// === impl Metrics ===

impl Metrics {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        validate_providers(cx, field, &self.providers);
        for (i, o) in self.overrides.iter().enumerate() {
            o.validate_at(cx, &format!("{field}.overrides[{i}]"));
        }
        if let Some(interval) = self.reporting_interval
            && interval.as_std() < StdDuration::from_millis(1)
        {
            cx.error(
                format!("{field}.reportingInterval"),
                "must be a valid duration of at least 1ms",
            );
        }
    }
}

impl MetricsOverrides {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(m) = &self.match_ {
            let at = format!("{field}.match");
            match (&m.metric, &m.custom_metric) {
                (Some(_), Some(_)) => {
                    cx.error(at, "set only one of metric and customMetric");
                }
                (None, Some(custom)) if custom.is_empty() => {
                    cx.error(
                        format!("{at}.customMetric"),
                        "customMetric may not be empty",
                    );
                }
                _ => {}
            }
        }
        for (name, tag) in &self.tag_overrides {
            let at = format!("{field}.tagOverrides.{name}");
            if name.is_empty() {
                cx.warn(&at, "tagOverrides name may not be empty");
            }
            let value = tag.value.as_deref().unwrap_or_default();
            match tag.operation {
                TagOperation::Upsert if value.is_empty() => {
                    cx.error(
                        format!("{at}.value"),
                        "tagOverrides.value must be set when operation is UPSERT",
                    );
                }
                TagOperation::Remove if tag.value.is_some() => {
                    cx.error(
                        format!("{at}.value"),
                        "tagOverrides.value may only be set when operation is UPSERT",
                    );
                }
                _ => {}
            }
        }
    }
}

impl MetricSelector {
    /// The standard metric selected, if this names one; a selector with
    /// neither field set means all of them.
    pub fn istio_metric(&self) -> Option<IstioMetric> {
        match (&self.metric, &self.custom_metric) {
            (Some(m), _) => Some(*m),
            (None, None) => Some(IstioMetric::AllMetrics),
            (None, Some(_)) => None,
        }
    }
}

impl IstioMetric {
    /// The Prometheus provider's metric names (histograms without their
    /// `_bucket`/`_sum`/`_count` suffixes); empty for ALL_METRICS.
    pub fn prometheus_names(self) -> &'static [&'static str] {
        match self {
            IstioMetric::AllMetrics => &[],
            IstioMetric::RequestCount => &["istio_requests_total"],
            IstioMetric::RequestDuration => &["istio_request_duration_milliseconds"],
            IstioMetric::RequestSize => &["istio_request_bytes"],
            IstioMetric::ResponseSize => &["istio_response_bytes"],
            IstioMetric::TcpOpenedConnections => &["istio_tcp_connections_opened_total"],
            IstioMetric::TcpClosedConnections => &["istio_tcp_connections_closed_total"],
            IstioMetric::TcpSentBytes => &["istio_tcp_sent_bytes_total"],
            IstioMetric::TcpReceivedBytes => &["istio_tcp_received_bytes_total"],
            IstioMetric::GrpcRequestMessages => &["istio_request_messages_total"],
            IstioMetric::GrpcResponseMessages => &["istio_response_messages_total"],
        }
    }
}

// === impl AccessLogging ===

impl AccessLogging {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        validate_providers(cx, field, &self.providers);
        if let Some(filter) = &self.filter
            && filter.expression.trim().is_empty()
        {
            cx.error(
                format!("{field}.filter.expression"),
                "filter expression may not be empty: it must be a CEL expression",
            );
        }
    }
}

#[cfg(test)]
mod tests;
