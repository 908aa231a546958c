//! Which fields Kite acts on. A field that loads and validates but that no
//! part of Kite honours yet is reported as a warning, never ignored in
//! silence. The tables grow as translation and the data plane learn more.

use serde_json::Value;

use crate::{
    common::Ctx,
    diag::{Severity, codes},
    object::Kind,
};

/// Field patterns relative to the object body: `.` between keys, `[]` for
/// any list element, `{}` for any key of a map, and a trailing `.*` for
/// everything below a field.
pub fn honoured(kind: Kind) -> &'static [&'static str] {
    match kind {
        // Kubernetes kinds carry much that a mesh rightly ignores (resources,
        // volumes, probes); the registry reads what it needs from them.
        Kind::Namespace
        | Kind::Service
        | Kind::ServiceAccount
        | Kind::Deployment
        | Kind::Pod
        | Kind::Secret => &["*"],
        Kind::VirtualService => VIRTUAL_SERVICE,
        Kind::DestinationRule => &DESTINATION_RULE,
        Kind::Gateway => GATEWAY,
        Kind::ServiceEntry => SERVICE_ENTRY,
        Kind::WorkloadEntry => WORKLOAD_ENTRY,
        Kind::Sidecar => SIDECAR,
        Kind::PeerAuthentication => PEER_AUTHENTICATION,
        Kind::Telemetry => TELEMETRY,
        Kind::WorkloadGroup | Kind::RequestAuthentication | Kind::AuthorizationPolicy => &[],
    }
}

/// What the control plane translates for sidecars and gateways (HTTP).
const VIRTUAL_SERVICE: &[&str] = &[
    "spec.hosts",
    "spec.gateways",
    "spec.http[].name",
    "spec.http[].match[].name",
    "spec.http[].match[].uri.*",
    "spec.http[].match[].scheme.*",
    "spec.http[].match[].method.*",
    "spec.http[].match[].authority.*",
    "spec.http[].match[].headers.{}.*",
    "spec.http[].match[].withoutHeaders.{}.*",
    "spec.http[].match[].queryParams.{}.*",
    "spec.http[].match[].ignoreUriCase",
    "spec.http[].match[].port",
    "spec.http[].match[].sourceLabels.*",
    "spec.http[].match[].sourceNamespace",
    "spec.http[].match[].gateways",
    "spec.http[].route[].destination.*",
    "spec.http[].route[].weight",
    "spec.http[].route[].headers.*",
    "spec.http[].redirect.uri",
    "spec.http[].redirect.authority",
    "spec.http[].redirect.port",
    "spec.http[].redirect.scheme",
    "spec.http[].redirect.redirectCode",
    "spec.http[].directResponse.*",
    "spec.http[].rewrite.*",
    "spec.http[].timeout",
    "spec.http[].retries.attempts",
    "spec.http[].retries.perTryTimeout",
    "spec.http[].retries.retryOn",
    "spec.http[].fault.delay.fixedDelay",
    "spec.http[].fault.delay.percentage.*",
    "spec.http[].fault.delay.percent",
    "spec.http[].fault.abort.httpStatus",
    "spec.http[].fault.abort.grpcStatus",
    "spec.http[].fault.abort.percentage.*",
    "spec.http[].fault.abort.percent",
    "spec.http[].mirror.*",
    "spec.http[].mirrorPercentage.*",
    "spec.http[].mirrorPercent",
    "spec.http[].mirrors[].*",
    "spec.http[].corsPolicy.allowOrigins[].*",
    "spec.http[].corsPolicy.allowOrigin",
    "spec.http[].corsPolicy.allowMethods",
    "spec.http[].corsPolicy.allowHeaders",
    "spec.http[].corsPolicy.exposeHeaders",
    "spec.http[].corsPolicy.maxAge",
    "spec.http[].corsPolicy.allowCredentials",
    "spec.http[].headers.*",
    "spec.tcp[].match[].port",
    "spec.tcp[].match[].gateways",
    "spec.tcp[].match[].sourceLabels.*",
    "spec.tcp[].match[].sourceNamespace",
    "spec.tcp[].route[].destination.*",
    "spec.tcp[].route[].weight",
    "spec.tls[].match[].sniHosts",
    "spec.tls[].match[].port",
    "spec.tls[].match[].gateways",
    "spec.tls[].route[].destination.*",
    "spec.tls[].route[].weight",
];

const TRAFFIC_POLICY: &[&str] = &[
    "loadBalancer.simple",
    "loadBalancer.consistentHash.httpHeaderName",
    "loadBalancer.consistentHash.httpCookie.*",
    "loadBalancer.consistentHash.useSourceIp",
    "loadBalancer.consistentHash.httpQueryParameterName",
    "loadBalancer.consistentHash.maglev.*",
    "loadBalancer.localityLbSetting.enabled",
    "loadBalancer.localityLbSetting.failover[].*",
    "loadBalancer.localityLbSetting.distribute[].*",
    "connectionPool.tcp.maxConnections",
    "connectionPool.tcp.connectTimeout",
    "connectionPool.http.http1MaxPendingRequests",
    "connectionPool.http.http2MaxRequests",
    "connectionPool.http.maxRetries",
    "connectionPool.http.maxRequestsPerConnection",
    "connectionPool.http.idleTimeout",
    "retryBudget.*",
    "outlierDetection.consecutive5xxErrors",
    "outlierDetection.consecutiveErrors",
    "outlierDetection.consecutiveGatewayErrors",
    "outlierDetection.interval",
    "outlierDetection.baseEjectionTime",
    "outlierDetection.maxEjectionPercent",
    "outlierDetection.minHealthPercent",
    "tls.mode",
    "tls.clientCertificate",
    "tls.privateKey",
    "tls.caCertificates",
    "tls.sni",
    "tls.subjectAltNames",
    "tls.insecureSkipVerify",
];

/// Values of honoured fields that Kite does not act on yet: (kind, pattern
/// suffix, value, what is missing).
const UNHONOURED_VALUES: &[(Kind, &str, &str, &str)] = &[
    (
        Kind::DestinationRule,
        "loadBalancer.simple",
        "PASSTHROUGH",
        "PASSTHROUGH load balancing is not honoured yet; LEAST_REQUEST is used",
    ),
    (
        Kind::Gateway,
        "tls.mode",
        "AUTO_PASSTHROUGH",
        "AUTO_PASSTHROUGH is not honoured yet; the server is left out",
    ),
    (
        Kind::Gateway,
        "tls.mode",
        "ISTIO_MUTUAL",
        "ISTIO_MUTUAL gateway servers are not honoured yet; the server is left out",
    ),
    (
        Kind::Gateway,
        "tls.mode",
        "OPTIONAL_MUTUAL",
        "OPTIONAL_MUTUAL is not honoured yet; the server is left out",
    ),
];

/// The traffic policy fields under the top level, each port and each subset.
static DESTINATION_RULE: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let prefixes = [
        "spec.trafficPolicy.",
        "spec.trafficPolicy.portLevelSettings[].",
        "spec.subsets[].trafficPolicy.",
        "spec.subsets[].trafficPolicy.portLevelSettings[].",
    ];
    let mut out = vec![
        "spec.host",
        "spec.subsets[].name",
        "spec.subsets[].labels.*",
        "spec.trafficPolicy.portLevelSettings[].port.*",
        "spec.subsets[].trafficPolicy.portLevelSettings[].port.*",
    ];
    for prefix in prefixes {
        for field in TRAFFIC_POLICY.iter() {
            // Built once per process; the patterns live as long as it does.
            out.push(Box::leak(format!("{prefix}{field}").into_boxed_str()));
        }
    }
    out
});

/// Enforced by Kite sidecars, which hold mesh certificates.
const PEER_AUTHENTICATION: &[&str] = &[
    "spec.mtls.mode",
    "spec.selector.matchLabels.*",
    "spec.portLevelMtls.{}.mode",
];

/// Access logging with Istio's `envoy` provider, by scope.
const TELEMETRY: &[&str] = &[
    "spec.selector.matchLabels.*",
    "spec.accessLogging[].providers[].name",
    "spec.accessLogging[].disabled",
];

const SIDECAR: &[&str] = &[
    "spec.outboundTrafficPolicy.mode",
    "spec.workloadSelector.labels.*",
];

const GATEWAY: &[&str] = &[
    "spec.selector.*",
    "spec.servers[].port.*",
    "spec.servers[].hosts",
    "spec.servers[].name",
    "spec.servers[].tls.mode",
    "spec.servers[].tls.credentialName",
    "spec.servers[].tls.serverCertificate",
    "spec.servers[].tls.privateKey",
    "spec.servers[].tls.caCertificates",
];

const SERVICE_ENTRY: &[&str] = &[
    "spec.hosts",
    "spec.ports[].*",
    "spec.location",
    "spec.resolution",
    "spec.endpoints[].address",
    "spec.endpoints[].ports.*",
    "spec.endpoints[].labels.*",
    "spec.endpoints[].locality",
    "spec.endpoints[].weight",
    "spec.endpoints[].serviceAccount",
    "spec.workloadSelector.labels.*",
];

const WORKLOAD_ENTRY: &[&str] = &[
    "spec.address",
    "spec.ports.*",
    "spec.labels.*",
    "spec.serviceAccount",
    "spec.locality",
    "spec.weight",
];

/// Adds a warning for each field of `body` that Kite does not honour yet,
/// once per field pattern.
pub(crate) fn check(kind: Kind, body: &Value, cx: &mut Ctx<'_>) {
    let patterns = honoured(kind);
    if patterns.contains(&"*") {
        return;
    }
    let mut unhonoured: Vec<(String, String)> = Vec::new();
    walk(body, "", "", patterns, &mut unhonoured);
    let mut values = Vec::new();
    scalars(body, "", &mut values);
    for (field, value) in values {
        let normalized = normalize(&field);
        for (k, suffix, bad, why) in UNHONOURED_VALUES {
            if *k == kind && normalized.ends_with(suffix) && value == *bad {
                cx.push(
                    Severity::Warning,
                    codes::NOT_HONOURED,
                    field.clone(),
                    (*why).to_owned(),
                );
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (pattern, field) in unhonoured {
        if seen.insert(pattern) {
            cx.push(
                Severity::Warning,
                codes::NOT_HONOURED,
                field,
                format!("{kind} field is accepted but not honoured by Kite yet"),
            );
        }
    }
}

/// Every scalar string in `value` with its concrete path.
fn scalars(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                scalars(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                scalars(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => out.push((path.to_owned(), s.clone())),
        _ => {}
    }
}

/// `a[3].b` → `a[].b`.
fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            c => out.push(c),
        }
    }
    out
}

fn walk(
    value: &Value,
    concrete: &str,
    pattern: &str,
    patterns: &[&str],
    out: &mut Vec<(String, String)>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let join = |base: &str, seg: &str| {
                    if base.is_empty() {
                        seg.to_owned()
                    } else {
                        format!("{base}.{seg}")
                    }
                };
                let any_key = join(pattern, "{}");
                let child_pattern = if is_prefix_of_any(&any_key, patterns) {
                    any_key
                } else {
                    join(pattern, key)
                };
                visit(child, &join(concrete, key), &child_pattern, patterns, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit(
                    item,
                    &format!("{concrete}[{i}]"),
                    &format!("{pattern}[]"),
                    patterns,
                    out,
                );
            }
        }
        _ => {}
    }
}

fn visit(
    value: &Value,
    concrete: &str,
    pattern: &str,
    patterns: &[&str],
    out: &mut Vec<(String, String)>,
) {
    if patterns
        .iter()
        .any(|p| p.strip_suffix(".*").is_some_and(|base| base == pattern))
    {
        return;
    }
    let exact = patterns.contains(&pattern);
    let is_scalar = |v: &Value| !matches!(v, Value::Object(_) | Value::Array(_));
    let scalar = match value {
        Value::Array(items) => items.iter().all(is_scalar),
        other => is_scalar(other),
    };
    if exact && scalar {
        return;
    }
    if exact || is_prefix_of_any(pattern, patterns) {
        walk(value, concrete, pattern, patterns, out);
        // An empty list or map honoured only through its children is fine.
        return;
    }
    out.push((pattern.to_owned(), concrete.to_owned()));
}

fn is_prefix_of_any(pattern: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| {
        p.strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhonoured(body: Value, patterns: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        walk(&body, "", "", patterns, &mut out);
        out.into_iter().map(|(_, field)| field).collect()
    }

    #[test]
    fn patterns() {
        let body = serde_json::json!({"spec": {
            "hosts": ["reviews"],
            "http": [{"match": [{"headers": {"end-user": {"exact": "jason"}}}],
                      "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                      "mirror": {"host": "x"}}],
            "exportTo": ["."]
        }});
        let honoured = [
            "spec.hosts",
            "spec.http[].match[].headers.{}.exact",
            "spec.http[].route[].destination.*",
        ];
        assert_eq!(
            unhonoured(body, &honoured),
            ["spec.exportTo", "spec.http[0].mirror"]
        );
    }
}
