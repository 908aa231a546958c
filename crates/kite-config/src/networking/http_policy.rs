//! What a VirtualService's HTTP route does besides routing: header edits,
//! retries, fault injection, rewrites, redirects, direct responses and CORS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{min_duration, percent_0_100};
use crate::common::{Ctx, Duration, Percent, StringMatch, percent_or_number};

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

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*",
];

// === impl HttpRoute policies ===

impl Headers {
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if let Some(re) = &self.uri_regex_rewrite {
            if !self.uri.is_empty() {
                cx.error(field, "set only one of uri and uriRegexRewrite");
            }
            cx.regex(format!("{field}.uriRegexRewrite.match"), &re.r#match);
        }
    }
}

impl HttpRetry {
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
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
