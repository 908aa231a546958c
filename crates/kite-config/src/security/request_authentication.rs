//! RequestAuthentication: the JWT issuers a workload accepts.

use std::{collections::BTreeSet, time::Duration as StdDuration};

use serde::{Deserialize, Serialize};

use super::{non_empty_values, validate_targeting};
use crate::common::{Ctx, Duration, PolicyTargetReference, Validate, WorkloadSelector};

/// Which JWTs a workload verifies. A request without a token passes (with no
/// request principal); one with an invalid token is rejected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Must equal the token's `iss`; the request principal is `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The CRD still accepts the old snake-case spelling.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// An inline JSON Web Key Set, instead of `jwksUri`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    /// Where to look for the token; with none of the three set, the default
    /// is `Authorization: Bearer <token>` and the `access_token` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    /// Off by default: the token is stripped before the request reaches the
    /// application.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forward_original_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// How long to wait for the JWKS fetch (Istio's default is 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    #[serde(default)]
    pub name: String,
    /// Stripped before decoding, e.g. `"Bearer "`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// === impl RequestAuthentication ===

impl Validate for RequestAuthentication {
    fn validate(&self, cx: &mut Ctx<'_>) {
        validate_targeting(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        for (i, rule) in self.jwt_rules.iter().enumerate() {
            rule.validate_at(cx, &format!("spec.jwtRules[{i}]"));
        }
    }
}

impl JwtRule {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.issuer.is_empty() {
            if self.jwks_uri.is_empty() {
                cx.error(format!("{field}.issuer"), "issuer must be set");
            } else {
                // Istio accepts this: the provider then verifies tokens of any
                // issuer signed by the fetched keys.
                cx.warn(
                    format!("{field}.issuer"),
                    "no issuer: tokens from any issuer signed by these keys are accepted",
                );
            }
        }
        if !self.jwks.is_empty() && !self.jwks_uri.is_empty() {
            cx.error(format!("{field}.jwks"), "set only one of jwks and jwksUri");
        }
        if !self.jwks_uri.is_empty()
            && let Err(why) = check_http_url(&self.jwks_uri)
        {
            cx.error(
                format!("{field}.jwksUri"),
                format!("invalid jwksUri {:?}: {why}", self.jwks_uri),
            );
        }
        if !self.jwks.is_empty()
            && let Err(why) = check_jwks(&self.jwks)
        {
            cx.error(format!("{field}.jwks"), format!("jwks parse error: {why}"));
        }
        non_empty_values(cx, &format!("{field}.audiences"), &self.audiences);
        for (i, location) in self.from_headers.iter().enumerate() {
            if location.name.is_empty() {
                cx.error(
                    format!("{field}.fromHeaders[{i}].name"),
                    "location header name must be non-empty",
                );
            }
        }
        non_empty_values(cx, &format!("{field}.fromParams"), &self.from_params);
        non_empty_values(cx, &format!("{field}.fromCookies"), &self.from_cookies);
        if !self.output_payload_to_header.is_empty()
            && let Err(why) = check_output_header(&self.output_payload_to_header)
        {
            cx.error(format!("{field}.outputPayloadToHeader"), why);
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let at = format!("{field}.outputClaimToHeaders[{i}]");
            if c.claim.is_empty() {
                cx.error(format!("{at}.claim"), "claim must be non-empty");
            }
            if c.header.is_empty() {
                cx.error(format!("{at}.header"), "header must be non-empty");
            } else if let Err(why) = check_output_header(&c.header) {
                cx.error(format!("{at}.header"), why);
            } else if !seen.insert(c.header.to_ascii_lowercase()) {
                cx.warn(
                    format!("{at}.header"),
                    format!("header {:?} is written by an earlier entry too", c.header),
                );
            }
        }
        if self.space_delimited_claims.len() > 64 {
            cx.error(
                format!("{field}.spaceDelimitedClaims"),
                "at most 64 claims may be listed",
            );
        }
        non_empty_values(
            cx,
            &format!("{field}.spaceDelimitedClaims"),
            &self.space_delimited_claims,
        );
        if let Some(timeout) = self.timeout
            && timeout.as_std() < StdDuration::from_millis(1)
        {
            cx.error(
                format!("{field}.timeout"),
                "must be a valid duration of at least 1ms",
            );
        }
    }
}

/// Headers a proxy owns: overwriting them from a JWT would break framing or
/// routing, or spoof the proxy's own signals.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authority",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

fn check_output_header(name: &str) -> Result<(), String> {
    // Istio's webhook is stricter than HTTP here: letters, digits and '-'.
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "header name {name:?} is not valid: use letters, digits and '-'"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-envoy-") {
        return Err(format!(
            "header {name:?} is reserved for the proxy and cannot be set from a JWT"
        ));
    }
    Ok(())
}

/// Istio requires a URL with the http or https scheme and a host.
fn check_http_url(uri: &str) -> Result<(), String> {
    if uri.chars().any(char::is_whitespace) {
        return Err("contains whitespace".into());
    }
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or("must start with http:// or https://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "URI scheme {scheme:?} is not supported: use http or https"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, tail) = v6.split_once(']').ok_or("unterminated IPv6 address")?;
            (host, tail.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port {port:?} is not a number in 0–65535"));
    }
    Ok(())
}

/// A JWKS (`{"keys": [...]}`) or a single JWK, as Istio's parser accepts.
fn check_jwks(jwks: &str) -> Result<(), String> {
    let doc: serde_json::Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let has_kty =
        |key: &serde_json::Value| key.get("kty").is_some_and(serde_json::Value::is_string);
    match doc.get("keys") {
        Some(serde_json::Value::Array(keys)) => match keys.iter().position(|k| !has_kty(k)) {
            Some(i) => Err(format!("keys[{i}] has no \"kty\"")),
            None => Ok(()),
        },
        Some(_) => Err("\"keys\" must be an array".into()),
        None if has_kty(&doc) => Ok(()),
        None => Err("expected a JSON Web Key Set with a \"keys\" array".into()),
    }
}
