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
        Kind::VirtualService
        | Kind::DestinationRule
        | Kind::Gateway
        | Kind::ServiceEntry
        | Kind::Sidecar
        | Kind::WorkloadEntry
        | Kind::WorkloadGroup
        | Kind::PeerAuthentication
        | Kind::RequestAuthentication
        | Kind::AuthorizationPolicy
        | Kind::Telemetry => &[],
    }
}

/// Adds a warning for each field of `body` that Kite does not honour yet,
/// once per field pattern.
pub(crate) fn check(kind: Kind, body: &Value, cx: &mut Ctx<'_>) {
    let patterns = honoured(kind);
    if patterns.contains(&"*") {
        return;
    }
    let mut unhonoured: Vec<(String, String)> = Vec::new();
    walk(body, "", "", patterns, &mut unhonoured);
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
    let scalar = !matches!(value, Value::Object(_) | Value::Array(_));
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
