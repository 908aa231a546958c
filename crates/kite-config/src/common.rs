//! Field types shared by several kinds, and the validation context.

use std::{collections::BTreeMap, fmt, time::Duration as StdDuration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::diag::{Severity, codes};

pub type Labels = BTreeMap<String, String>;

/// Checks that serde cannot express: ranges, one-of, cross-field rules.
/// Field paths given to the context are relative to the object, starting
/// with `spec`.
pub trait Validate {
    fn validate(&self, cx: &mut Ctx<'_>);
}

/// What a validator knows about the object being checked, and where it
/// puts its findings.
pub struct Ctx<'a> {
    /// The object's namespace, for short host names.
    pub namespace: &'a str,
    pub(crate) findings: Vec<Finding>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

/// An Istio duration: Go's `time.ParseDuration` syntax (`7s`, `0.5s`, `1m30s`,
/// `100ms`, `180.000s`), which covers protobuf's `<seconds>s` form too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

/// A percentage: `{value: 0–100}`, or the old plain integer `percent`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// `exact`, `prefix` or `regex` (RE2, full match); exactly one is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    #[serde(default)]
    pub number: u32,
}

/// `selector: {matchLabels: …}` of the security and telemetry kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

/// `targetRef(s)` to a Gateway API or core object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    pub fn new(namespace: &'a str) -> Self {
        Self {
            namespace,
            findings: Vec::new(),
        }
    }

    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(
            Severity::Error,
            codes::SCHEMA_VALIDATION_ERROR,
            field,
            message,
        );
    }

    pub fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(
            Severity::Warning,
            codes::SCHEMA_VALIDATION_ERROR,
            field,
            message,
        );
    }

    pub fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            code,
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Validates a regex as RE2 would accept it (the `regex` crate's syntax
    /// is RE2's, minus nothing Istio users write).
    pub fn regex(&mut self, field: impl Into<String>, pattern: &str) {
        if let Err(e) = regex::Regex::new(pattern) {
            self.error(field, format!("invalid regex {pattern:?}: {e}"));
        }
    }

    /// A percentage must lie in 0–100.
    pub fn percent(&mut self, field: impl Into<String>, p: &Percent) {
        if !(0.0..=100.0).contains(&p.value) || p.value.is_nan() {
            self.error(field, format!("percentage {} is outside 0–100", p.value));
        }
    }

    /// A port number must lie in 1–65535.
    pub fn port(&mut self, field: impl Into<String>, port: u32) {
        if port == 0 || port > 65535 {
            self.error(field, format!("port number {port} is outside 1–65535"));
        }
    }

    /// A label map as Kubernetes accepts it.
    pub fn labels(&mut self, field: &str, labels: &Labels) {
        for (key, value) in labels {
            if let Err(reason) = label_key(key) {
                self.error(
                    format!("{field}.{key}"),
                    format!("invalid label key: {reason}"),
                );
            }
            if let Err(reason) = label_value(value) {
                self.error(
                    format!("{field}.{key}"),
                    format!("invalid label value {value:?}: {reason}"),
                );
            }
        }
    }
}

fn label_key(key: &str) -> Result<(), &'static str> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("prefix must be a DNS subdomain of at most 253 characters");
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("name part is empty");
    }
    label_value(name)
}

fn label_value(value: &str) -> Result<(), &'static str> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if value.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !value.chars().all(ok_char) {
        return Err("only alphanumerics, '-', '_' and '.' are allowed");
    }
    if value.starts_with(|c: char| !c.is_ascii_alphanumeric())
        || value.ends_with(|c: char| !c.is_ascii_alphanumeric())
    {
        return Err("must start and end with an alphanumeric character");
    }
    Ok(())
}

// === impl StringMatch ===

impl StringMatch {
    pub fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let set = [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            cx.error(field, "set only one of exact, prefix and regex");
        }
        if let Some(re) = &self.regex {
            cx.regex(format!("{field}.regex"), re);
        }
    }
}

// === impl Duration ===

impl Duration {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("invalid duration {s:?}: {why} (examples: 7s, 0.5s, 1m30s, 100ms)");
        let mut rest = s.trim();
        if rest == "0" {
            return Ok(Self(StdDuration::ZERO));
        }
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        if rest.starts_with('-') {
            return Err(bad("negative"));
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| bad("missing unit"))?;
            let (num, tail) = rest.split_at(num_len);
            let value: f64 = num.parse().map_err(|_| bad("not a number"))?;
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale = match unit {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad("unknown unit")),
            };
            total += value * scale;
            rest = tail;
        }
        StdDuration::try_from_secs_f64(total)
            .map(Self)
            .map_err(|_| bad("out of range"))
    }

    pub fn as_std(self) -> StdDuration {
        self.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else {
            write!(f, "{}s", d.as_secs_f64())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

/// Accepts `{value: 12.5}` and also a bare number, because older docs wrote
/// percentages that way in places.
pub fn percent_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Percent>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Object(Percent),
        Number(f64),
    }
    Ok(Option::<Either>::deserialize(d)?.map(|e| match e {
        Either::Object(p) => p,
        Either::Number(value) => Percent { value },
    }))
}

/// Kubernetes `IntOrString`, as in a Service's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| Duration::parse(s).map(|d| d.0);
        assert_eq!(d("7s"), Ok(StdDuration::from_secs(7)));
        assert_eq!(d("0.5s"), Ok(StdDuration::from_millis(500)));
        assert_eq!(d("1m30s"), Ok(StdDuration::from_secs(90)));
        assert_eq!(d("100ms"), Ok(StdDuration::from_millis(100)));
        assert_eq!(d("180.000s"), Ok(StdDuration::from_secs(180)));
        assert_eq!(d("3m"), Ok(StdDuration::from_secs(180)));
        assert_eq!(d("1h"), Ok(StdDuration::from_secs(3600)));
        assert_eq!(d("0"), Ok(StdDuration::ZERO));
        for bad in ["", "7", "s", "-1s", "1x", "1.2.3s"] {
            assert!(d(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn label_rules() {
        let mut cx = Ctx::new("default");
        let labels: Labels = [
            ("app", "reviews"),
            ("app.kubernetes.io/name", "x"),
            ("bad key", "v"),
            ("version", "-v1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        cx.labels("spec.selector", &labels);
        let fields: Vec<_> = cx.findings().iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["spec.selector.bad key", "spec.selector.version"]);
    }
}
