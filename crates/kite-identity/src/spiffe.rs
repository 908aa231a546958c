//! SPIFFE identities in Istio's form: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! The workload certificate's only URI SAN is this id, and authorization
//! policies name it without the scheme (a *principal*), so both forms live
//! here to keep them from drifting apart.

use std::{fmt, str::FromStr};

const SCHEME: &str = "spiffe://";

/// A workload identity: the service account a workload runs as, qualified by
/// namespace and trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not an Istio-style SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE id {input:?}: {reason}")]
pub struct SpiffeError {
    /// The string that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpiffeId {
    /// Builds an id from its parts without validating them; use [`FromStr`]
    /// for untrusted input.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Istio's principal form (`<td>/ns/<ns>/sa/<sa>`), as written in
    /// `AuthorizationPolicy` `source.principals`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.principal())
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SpiffeError {
            input: input.to_owned(),
            reason,
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| fail(format!("must start with {SCHEME:?}")))?;
        let (trust_domain, path) = rest
            .split_once('/')
            .ok_or_else(|| fail("missing the /ns/<namespace>/sa/<service-account> path".into()))?;
        check_trust_domain(trust_domain).map_err(|why| fail(format!("trust domain {why}")))?;

        let segments: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = segments[..] else {
            return Err(fail(format!(
                "path must be exactly ns/<namespace>/sa/<service-account>, got {} segment(s)",
                segments.len()
            )));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(fail(
                "path must be exactly ns/<namespace>/sa/<service-account>".into(),
            ));
        }
        check_namespace(namespace).map_err(|why| fail(format!("namespace {why}")))?;
        check_service_account(service_account)
            .map_err(|why| fail(format!("service account {why}")))?;
        Ok(Self::new(trust_domain, namespace, service_account))
    }
}

// The SPIFFE spec allows only lowercase letters, digits, '.', '-' and '_' in
// a trust domain, which also rules out ports, user info and upper case.
// The CA shares this check so that it never mints ids `FromStr` would refuse.
pub(crate) fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("is empty".into());
    }
    if td.len() > 255 {
        return Err(format!(
            "is {} characters long, at most 255 allowed",
            td.len()
        ));
    }
    if let Some(c) = td
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{td:?} contains {c:?}; only a-z, 0-9, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

// Kubernetes namespaces are RFC 1123 labels.
fn check_namespace(ns: &str) -> Result<(), String> {
    check_dns(ns, 63, false)
}

// Kubernetes service account names are RFC 1123 subdomains.
fn check_service_account(sa: &str) -> Result<(), String> {
    check_dns(sa, 253, true)
}

fn check_dns(name: &str, max_len: usize, dots: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > max_len {
        return Err(format!(
            "{name:?} is {} characters long, at most {max_len} allowed",
            name.len()
        ));
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        let extra = if dots { ", '-' and '.'" } else { " and '-'" };
        return Err(format!(
            "{name:?} contains {c:?}; only a-z, 0-9{extra} are allowed"
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(format!(
            "{name:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_principal() {
        let id = SpiffeId::new("cluster.local", "default", "bookinfo-reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-reviews"
        );
    }

    #[test]
    fn parse_round_trips() {
        for s in [
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "spiffe://example.org/ns/istio-system/sa/istio-ingressgateway-service-account",
            "spiffe://td_1/ns/a/sa/b.c",
        ] {
            let id: SpiffeId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/bar".parse().unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "foo", "bar"));
    }

    #[test]
    fn parse_rejects_malformed_ids() {
        let cases = [
            ("cluster.local/ns/default/sa/x", "must start with"),
            ("SPIFFE://cluster.local/ns/default/sa/x", "must start with"),
            ("https://cluster.local/ns/default/sa/x", "must start with"),
            ("spiffe://cluster.local", "missing"),
            ("spiffe:///ns/default/sa/x", "trust domain is empty"),
            ("spiffe://Cluster.local/ns/default/sa/x", "trust domain"),
            (
                "spiffe://cluster.local:8080/ns/default/sa/x",
                "trust domain",
            ),
            (
                "spiffe://user@cluster.local/ns/default/sa/x",
                "trust domain",
            ),
            ("spiffe://cluster.local/", "segment(s)"),
            ("spiffe://cluster.local/ns/default", "segment(s)"),
            ("spiffe://cluster.local/ns/default/sa/x/extra", "segment(s)"),
            ("spiffe://cluster.local/ns/default/sa/x/", "segment(s)"),
            (
                "spiffe://cluster.local/namespace/default/sa/x",
                "exactly ns/",
            ),
            (
                "spiffe://cluster.local/ns/default/serviceaccount/x",
                "exactly ns/",
            ),
            ("spiffe://cluster.local/ns//sa/x", "namespace is empty"),
            (
                "spiffe://cluster.local/ns/default/sa/",
                "service account is empty",
            ),
            ("spiffe://cluster.local/ns/De fault/sa/x", "namespace"),
            ("spiffe://cluster.local/ns/a.b/sa/x", "namespace"),
            ("spiffe://cluster.local/ns/-a/sa/x", "start and end"),
            ("spiffe://cluster.local/ns/a/sa/x-", "start and end"),
            ("spiffe://cluster.local/ns/a/sa/x?y=1", "service account"),
            ("spiffe://cluster.local/ns/a/sa/x#frag", "service account"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert_eq!(err.input, input);
            assert!(
                err.reason.contains(reason),
                "{input}: reason {:?} lacks {reason:?}",
                err.reason
            );
            assert!(err.to_string().contains(input), "{err}");
        }
    }

    #[test]
    fn length_limits() {
        let long_ns = "a".repeat(64);
        let err = format!("spiffe://cluster.local/ns/{long_ns}/sa/x")
            .parse::<SpiffeId>()
            .unwrap_err();
        assert!(err.reason.contains("at most 63"), "{err}");
        let ok_ns = "a".repeat(63);
        assert!(
            format!("spiffe://cluster.local/ns/{ok_ns}/sa/x")
                .parse::<SpiffeId>()
                .is_ok()
        );
    }
}
