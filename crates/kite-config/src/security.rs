//! `security.istio.io`: PeerAuthentication, RequestAuthentication and
//! AuthorizationPolicy, as their `spec:` bodies.
//!
//! Every field of Istio's protos is modelled so that valid YAML loads; unknown
//! fields and unknown enum values are rejected at deserialization, the rest
//! of Istio's webhook and CRD rules live in the [`Validate`] impls.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::Duration as StdDuration,
};

use serde::{Deserialize, Deserializer, Serialize, de};

use crate::common::{Ctx, Duration, PolicyTargetReference, Validate, WorkloadSelector};

// === PeerAuthentication ===

/// Which mTLS a workload's inbound side accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Keyed by container (not Service) port. Keys may be written as numbers
    /// or, as JSON forces, as strings.
    #[serde(
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_level_mtls: BTreeMap<u32, Mtls>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing scope; at the top it behaves as PERMISSIVE.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

// === RequestAuthentication ===

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

// === AuthorizationPolicy ===

/// Access control for workloads. `spec: {}` allows nothing (deny all);
/// `rules: [{}]` allows everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// OR-ed; no rules never match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub action: Action,
    /// Only with `action: CUSTOM`: the meshConfig extension provider to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// Evaluated in the order CUSTOM, DENY, ALLOW; AUDIT only marks requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// Matches when one `from`, one `to` and every `when` match; an absent list
/// matches anything, so `{}` matches every request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Source,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Operation,
}

/// Who sent the request. Fields are AND-ed, values within a field OR-ed;
/// values support exact, `prefix*`, `*suffix` and `*` (present) matching.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities, `<trust domain>/ns/<ns>/sa/<sa>`; needs mTLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT identities, `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// `<sa>` (policy's namespace) or `<ns>/<sa>`; no wildcards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// The packet's source address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// The original client from X-Forwarded-For or PROXY protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// What the request does. Fields are AND-ed, values within a field OR-ed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Decimal port numbers, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Exact, `prefix*`, `*suffix`, `*`, or `{*}`/`{**}` templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// An attribute such as `request.headers[x-token]` or `source.ip`.
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

/// What a `when` key names, as far as validating its values goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Ip,
    Port,
    ServiceAccount,
    Other,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// === impl PeerAuthentication ===

impl PeerAuthentication {
    /// The top-level mode; an absent `mtls` means UNSET.
    pub fn mode(&self) -> MtlsMode {
        self.mtls.map_or(MtlsMode::Unset, |m| m.mode)
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, cx: &mut Ctx<'_>) {
        validate_targeting(cx, self.selector.as_ref(), None, &[]);
        let has_labels = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !self.port_level_mtls.is_empty() && !has_labels {
            cx.error(
                "spec.portLevelMtls",
                "mesh- and namespace-wide PeerAuthentication cannot have port-level mTLS: \
                 portLevelMtls needs a selector with matchLabels",
            );
        }
        for &port in self.port_level_mtls.keys() {
            cx.port(format!("spec.portLevelMtls.{port}"), port);
        }
    }
}

/// `portLevelMtls` keys: YAML writes them as numbers, JSON as strings.
fn port_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Mtls>, D::Error> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct PortKey(u32);

    impl<'de> Deserialize<'de> for PortKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl de::Visitor<'_> for Visitor {
                type Value = PortKey;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a port number")
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v} is outside 1–65535")))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v} is outside 1–65535")))
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                    v.parse()
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v:?} is not a number")))
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    let map = Option::<BTreeMap<PortKey, Mtls>>::deserialize(d)?.unwrap_or_default();
    Ok(map.into_iter().map(|(k, v)| (k.0, v)).collect())
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

// === impl AuthorizationPolicy ===

impl AuthorizationPolicy {
    /// The provider name of a CUSTOM policy.
    pub fn provider_name(&self) -> Option<&str> {
        self.provider
            .as_ref()
            .map(|p| p.name.as_str())
            .filter(|n| !n.is_empty())
    }
}

impl Validate for AuthorizationPolicy {
    fn validate(&self, cx: &mut Ctx<'_>) {
        validate_targeting(
            cx,
            self.selector.as_ref(),
            self.target_ref.as_ref(),
            &self.target_refs,
        );
        match self.action {
            Action::Custom => {
                if self.rules.is_empty() {
                    cx.error(
                        "spec.rules",
                        "CUSTOM action without rules is meaningless as it will never be \
                         triggered; add an empty rule `{}` to trigger it for every request",
                    );
                }
                if self.provider_name().is_none() {
                    let field = if self.provider.is_some() {
                        "spec.provider.name"
                    } else {
                        "spec.provider"
                    };
                    cx.error(
                        field,
                        "`provider.name` must not be empty: CUSTOM names a meshConfig \
                         extension provider",
                    );
                }
            }
            Action::Deny if self.rules.is_empty() => {
                cx.error(
                    "spec.rules",
                    "DENY action without rules is meaningless as it will never be \
                     triggered; add an empty rule `{}` to deny every request",
                );
            }
            _ => {}
        }
        if self.provider.is_some() && self.action != Action::Custom {
            cx.error(
                "spec.provider",
                format!(
                    "`provider` must only be set with the CUSTOM action, found {}",
                    self.action.as_str()
                ),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate_at(cx, &format!("spec.rules[{i}]"), self.action);
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

impl Rule {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str, action: Action) {
        for (i, from) in self.from.iter().enumerate() {
            from.source
                .validate_at(cx, &format!("{field}.from[{i}].source"), action);
        }
        for (i, to) in self.to.iter().enumerate() {
            to.operation
                .validate_at(cx, &format!("{field}.to[{i}].operation"));
        }
        for (i, condition) in self.when.iter().enumerate() {
            condition.validate_at(cx, &format!("{field}.when[{i}]"), action);
        }

        // Mirrors Istio's warning: on a TCP port the HTTP-only parts of a
        // DENY rule count as matching, so the rule denies all TCP traffic.
        let tcp_in_from = self.from.iter().any(|f| f.source.has_tcp_attributes());
        let tcp_in_to = self
            .to
            .iter()
            .any(|t| !t.operation.ports.is_empty() || !t.operation.not_ports.is_empty());
        let from_only_http = !self.from.is_empty() && self.to.is_empty() && !tcp_in_from;
        let to_only_http = !self.to.is_empty() && !tcp_in_to;
        if action == Action::Deny && (from_only_http || to_only_http) {
            cx.warn(
                field,
                "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP \
                 ports in its scope; specify the ports explicitly",
            );
        }
    }
}

impl Source {
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, v)| v.is_empty())
    }

    /// Everything but request principals is known on a plain TCP connection.
    fn has_tcp_attributes(&self) -> bool {
        self.lists().iter().any(|(name, v)| {
            !v.is_empty() && !matches!(*name, "requestPrincipals" | "notRequestPrincipals")
        })
    }

    fn lists(&self) -> [(&'static str, &[String]); 12] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ]
    }

    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str, action: Action) {
        if self.is_empty() {
            cx.error(
                field,
                "`from.source` must not be empty: set at least one of principals, \
                 requestPrincipals, namespaces, serviceAccounts, ipBlocks, remoteIpBlocks \
                 or their not* forms",
            );
            return;
        }
        let accounts = !self.service_accounts.is_empty() || !self.not_service_accounts.is_empty();
        let peers = !self.principals.is_empty()
            || !self.not_principals.is_empty()
            || !self.namespaces.is_empty()
            || !self.not_namespaces.is_empty();
        if accounts && peers {
            let name = if self.service_accounts.is_empty() {
                "notServiceAccounts"
            } else {
                "serviceAccounts"
            };
            cx.error(
                format!("{field}.{name}"),
                "cannot set serviceAccounts with namespaces or principals",
            );
        }
        for (name, values) in self.lists() {
            let at = format!("{field}.{name}");
            let is_ip = matches!(
                name,
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks"
            );
            if is_ip {
                ip_values(cx, &at, values);
            } else if matches!(name, "serviceAccounts" | "notServiceAccounts") {
                service_accounts(cx, &at, values);
            } else {
                non_empty_values(cx, &at, values);
            }
            // Istio cannot hand identity-based sources to an external
            // authorizer, only addresses.
            if action == Action::Custom && !is_ip && !values.is_empty() {
                cx.error(
                    at,
                    format!("{name} is not supported with the CUSTOM action"),
                );
            }
        }
    }
}

impl Operation {
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, v)| v.is_empty())
    }

    fn lists(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }

    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.is_empty() {
            cx.error(
                field,
                "`to.operation` must not be empty: set at least one of hosts, ports, methods, \
                 paths or their not* forms",
            );
            return;
        }
        for (name, values) in self.lists() {
            let at = format!("{field}.{name}");
            match name {
                "ports" | "notPorts" => port_values(cx, &at, values),
                "methods" | "notMethods" => {
                    non_empty_values(cx, &at, values);
                    for (i, m) in values.iter().enumerate() {
                        if m.bytes().any(|b| b.is_ascii_lowercase()) {
                            cx.warn(
                                format!("{at}[{i}]"),
                                format!(
                                    "HTTP methods are case-sensitive: {m:?} never matches; \
                                     write {:?}",
                                    m.to_ascii_uppercase()
                                ),
                            );
                        }
                    }
                }
                "paths" | "notPaths" => {
                    non_empty_values(cx, &at, values);
                    for (i, p) in values.iter().enumerate() {
                        if let Err(why) = check_path_template(p) {
                            cx.error(format!("{at}[{i}]"), why);
                        }
                    }
                }
                _ => non_empty_values(cx, &at, values),
            }
        }
    }
}

impl Condition {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str, action: Action) {
        if self.key.is_empty() {
            cx.error(format!("{field}.key"), "`key` must not be empty");
            return;
        }
        let kind = match condition_key(&self.key) {
            Ok(kind) => kind,
            Err(why) => {
                cx.error(format!("{field}.key"), why);
                return;
            }
        };
        if action == Action::Custom
            && (matches!(
                self.key.as_str(),
                "source.namespace" | "source.serviceAccount" | "source.principal"
            ) || self.key.starts_with("request.auth."))
        {
            cx.error(
                format!("{field}.key"),
                format!("{} is not supported with the CUSTOM action", self.key),
            );
        }
        if self.values.is_empty() && self.not_values.is_empty() {
            cx.error(
                field,
                format!(
                    "at least one of `values` or `notValues` must be set for key {}",
                    self.key
                ),
            );
        }
        for (name, values) in [("values", &self.values), ("notValues", &self.not_values)] {
            let at = format!("{field}.{name}");
            match kind {
                KeyKind::Ip => ip_values(cx, &at, values),
                KeyKind::Port => port_values(cx, &at, values),
                KeyKind::ServiceAccount => service_accounts(cx, &at, values),
                KeyKind::Other => non_empty_values(cx, &at, values),
            }
        }
    }
}

/// Checks a `when` key against the attributes Istio supports.
fn condition_key(key: &str) -> Result<KeyKind, String> {
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => return Ok(KeyKind::Ip),
        "destination.port" => return Ok(KeyKind::Port),
        "source.serviceAccount" => return Ok(KeyKind::ServiceAccount),
        "source.namespace"
        | "source.principal"
        | "source.trustDomain"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => return Ok(KeyKind::Other),
        "destination.namespace" => {
            return Err(format!(
                "attribute {key} is replaced by the policy's metadata.namespace"
            ));
        }
        "destination.name" | "destination.user" => {
            return Err(format!(
                "deprecated attribute {key}: only supported in v1alpha1"
            ));
        }
        _ => {}
    }
    let bracketed = |rest: &str, nested: bool| -> Result<KeyKind, String> {
        bracket_names(rest)
            .filter(|names| nested || names.len() == 1)
            .map(|_| KeyKind::Other)
            .ok_or_else(|| {
                let form = if nested { "[a] or [a][b]" } else { "[name]" };
                format!("bad key ({key}): should have the form {form} after the attribute")
            })
    };
    if let Some(rest) = key.strip_prefix("request.headers") {
        return bracketed(rest, false);
    }
    if let Some(rest) = key.strip_prefix("request.experimental.inline.headers") {
        return bracketed(rest, false);
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        return bracketed(rest, true);
    }
    if key.starts_with("destination.labels") {
        return Err(format!(
            "attribute {key} is replaced by the workload selector"
        ));
    }
    if let Some(rest) = key.strip_prefix("experimental.envoy.filters.") {
        // `<filter name>[<metadata key>]`, e.g. `network.mysql_proxy[db.table]`.
        return match rest.find('[') {
            Some(open) if open > 0 => bracketed(&rest[open..], false),
            _ => Err(format!("bad key ({key}): should have the form a[b]")),
        };
    }
    Err(format!(
        "unknown attribute: {key} (supported: request.headers[<name>], source.ip, remote.ip, \
         source.namespace, source.principal, source.serviceAccount, source.trustDomain, \
         request.auth.principal, request.auth.audiences, request.auth.presenter, \
         request.auth.claims[<name>], destination.ip, destination.port, connection.sni, \
         experimental.envoy.filters.*)"
    ))
}

/// Splits `[a][b]` into `["a", "b"]`; `None` unless the whole string is
/// non-empty bracketed names.
fn bracket_names(s: &str) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let name = &inner[..close];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        names.push(name);
        rest = &inner[close + 1..];
    }
    (!names.is_empty()).then_some(names)
}

fn non_empty_values(cx: &mut Ctx<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            cx.error(format!("{field}[{i}]"), "empty value not allowed");
        }
    }
}

fn ip_values(cx: &mut Ctx<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if let Err(why) = parse_ip_or_cidr(v) {
            cx.error(format!("{field}[{i}]"), why);
        }
    }
}

fn port_values(cx: &mut Ctx<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        match v.parse::<u32>() {
            Ok(port) if (1..=65535).contains(&port) => {}
            _ => cx.error(
                format!("{field}[{i}]"),
                format!("bad port ({v:?}): must be a decimal number in 1–65535"),
            ),
        }
    }
}

fn service_accounts(cx: &mut Ctx<'_>, field: &str, values: &[String]) {
    if values.len() > 16 {
        cx.error(field, "may not have more than 16 values");
    }
    let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    for (i, v) in values.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let why = if v.is_empty() {
            Some("empty value not allowed".to_owned())
        } else if v.contains('*') {
            Some("wildcards are not allowed in service accounts".to_owned())
        } else if v.len() > 320 {
            Some("value cannot exceed 320 characters".to_owned())
        } else {
            match v.split_once('/') {
                None => None,
                Some((ns, sa)) if ns.is_empty() || sa.is_empty() || sa.contains('/') => {
                    Some(format!("{expected}, found {v:?}"))
                }
                Some(_) => None,
            }
        };
        if let Some(why) = why {
            cx.error(at, why);
        }
    }
}

/// A single address or a CIDR range, IPv4 or IPv6.
pub(crate) fn parse_ip_or_cidr(value: &str) -> Result<(), String> {
    match value.split_once('/') {
        Some((addr, bits)) => {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("bad CIDR range ({value}): invalid address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match bits.parse::<u8>() {
                Ok(n) if n <= max && !bits.starts_with('+') => Ok(()),
                _ => Err(format!(
                    "bad CIDR range ({value}): prefix length must be 0–{max}"
                )),
            }
        }
        None => value
            .parse::<IpAddr>()
            .map(drop)
            .map_err(|_| format!("bad IP address ({value})")),
    }
}

/// Istio's path-template rules: `{*}` matches one segment, `{**}` the rest
/// and must come last; other braces are not allowed, and segments next to a
/// template must be plain URL path characters.
fn check_path_template(path: &str) -> Result<(), String> {
    const ONE: &str = "{*}";
    const ANY: &str = "{**}";
    let templated = path.contains(ONE) || path.contains(ANY);
    let mut seen_any = false;
    for segment in path.trim_matches('/').split('/') {
        if segment == ONE || segment == ANY {
            if seen_any {
                return Err(format!(
                    "invalid or unsupported path {path}: {{**}} must be the last operator"
                ));
            }
            seen_any = segment == ANY;
            continue;
        }
        if segment.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {path}: contains '{{' or '}}' beyond a supported \
                 path template"
            ));
        }
        let literal = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b);
        if templated && (segment.is_empty() || !segment.bytes().all(literal)) {
            return Err(format!(
                "invalid or unsupported path {path}: segment {segment:?} is not a valid literal"
            ));
        }
    }
    Ok(())
}

// === targeting, shared with Telemetry ===

/// `selector`, `targetRef` and `targetRefs`: at most one, each well-formed.
pub(crate) fn validate_targeting(
    cx: &mut Ctx<'_>,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        let field = if target_ref.is_some() {
            "spec.targetRef"
        } else {
            "spec.targetRefs"
        };
        cx.error(
            field,
            "only one of selector, targetRef and targetRefs can be set",
        );
    }
    if let Some(selector) = selector {
        if selector.match_labels.is_empty() {
            cx.warn(
                "spec.selector",
                "workload selector specified without labels: it selects every workload in the \
                 namespace",
            );
        }
        cx.labels("spec.selector.matchLabels", &selector.match_labels);
    }
    if let Some(r) = target_ref {
        validate_target_ref(cx, "spec.targetRef", r);
    }
    if target_refs.len() > 16 {
        cx.error("spec.targetRefs", "at most 16 targetRefs can be set");
    }
    for (i, r) in target_refs.iter().enumerate() {
        validate_target_ref(cx, &format!("spec.targetRefs[{i}]"), r);
    }
}

fn validate_target_ref(cx: &mut Ctx<'_>, field: &str, r: &PolicyTargetReference) {
    if r.kind.is_empty() {
        cx.error(format!("{field}.kind"), "kind is required");
    }
    if r.name.is_empty() {
        cx.error(format!("{field}.name"), "name is required");
    }
    if !r.namespace.is_empty() {
        cx.error(
            format!("{field}.namespace"),
            "cross namespace referencing is not currently supported; leave namespace empty",
        );
    }
    let group = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    let allowed = matches!(
        (group, r.kind.as_str()),
        ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
            | ("", "Service")
            | ("networking.istio.io", "ServiceEntry")
    );
    if !r.kind.is_empty() && !allowed {
        cx.error(
            field,
            format!(
                "targetRef must be to a Gateway or GatewayClass (gateway.networking.k8s.io), \
                 a Service (core) or a ServiceEntry (networking.istio.io), found {}/{}",
                if group.is_empty() { "core" } else { group },
                r.kind
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::de::DeserializeOwned;

    use super::*;
    use crate::diag::Severity;
    use crate::test_util::{errors, sample_docs, str_field, yaml_docs};

    /// Security YAML from Istio's task pages (authorization HTTP/TCP/JWT/
    /// deny/ingress/custom, authentication policy, claim-to-header) and the
    /// API reference examples.
    const DOCS_YAML: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec:
  {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      app: productpage
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bookinfo-gateway-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      gateway.networking.k8s.io/gateway-name: bookinfo-gateway
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-viewer, namespace: default}
spec:
  selector:
    matchLabels:
      app: details
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: ALLOW
  rules:
  - to:
    - operation:
        ports: ["9000", "9001"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tcp-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
        ports: ["9000"]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.8/security/tools/jwt/samples/jwks.json"
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
       requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-method-get, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-path-ip, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/ip"]
    when:
    - key: request.headers[x-token]
      values: ["admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: istio-system}
spec:
  selector:
    matchLabels:
      app: istio-ingressgateway
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["1.2.3.4", "5.6.7.0/24"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: foo}
spec:
  selector:
    matchLabels:
      istio.io/gateway-name: httpbin-gateway
  action: DENY
  rules:
  - from:
    - source:
        remoteIpBlocks: ["192.168.10.15"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-grpc
  rules:
  - to:
    - operation:
        paths: ["/headers"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/sleep"]
    - source:
        namespaces: ["test"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/info*"]
    - operation:
        methods: ["POST"]
        paths: ["/data"]
    when:
    - key: request.auth.claims[iss]
      values: ["https://accounts.google.com"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: foo}
spec:
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: grafana-allow-tempo, namespace: monitoring}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: grafana-tempo
  action: ALLOW
  rules:
    - from:
        - source:
            serviceAccounts:
              - monitoring/grafana-sa
      to:
        - operation:
            paths: ["/api/{*}/query", "/static/{**}"]
            ports: ["3200"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: ns1}
spec:
  selector:
    matchLabels:
      app: myapi
  action: AUDIT
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/user/profile/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint, namespace: default}
spec:
  targetRefs:
  - kind: Service
    group: ""
    name: reviews
  action: DENY
  rules:
  - from:
    - source:
        notPrincipals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
    when:
    - key: source.ip
      notValues: ["10.0.0.0/8", "fd00::/8"]
    - key: destination.port
      values: ["9080"]
    - key: experimental.envoy.filters.network.mysql_proxy[db.table]
      values: ["[update]"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec:
  mtls:
    mode: PERMISSIVE
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-on-ingress, namespace: istio-system}
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json"
    outputClaimToHeaders:
    - header: "x-jwt-claim-foo"
      claim: "foo"
    fromHeaders:
    - name: x-jwt-assertion
      prefix: "Bearer "
    fromParams: ["my_token"]
    fromCookies: ["session"]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    audiences: ["bookstore_android.apps.example.com"]
    spaceDelimitedClaims: ["scope", "permission"]
    timeout: 20s
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-ingress, namespace: istio-system}
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        paths: ["/headers"]
"#;

    fn warnings<T: DeserializeOwned + Validate>(spec: &str) -> Vec<String> {
        let spec: T = serde_yaml::from_str(spec).expect("spec parses");
        let mut cx = Ctx::new("default");
        spec.validate(&mut cx);
        cx.findings()
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .map(|f| f.field.clone())
            .collect()
    }

    fn check_doc(doc: &serde_yaml::Value) -> Option<Vec<(String, String)>> {
        let group = str_field(doc, "apiVersion")
            .split('/')
            .next()
            .unwrap_or_default();
        if group != "security.istio.io" {
            return None;
        }
        let spec = match doc.get("spec") {
            Some(serde_yaml::Value::Null) | None => serde_yaml::Value::Mapping(Default::default()),
            Some(spec) => spec.clone(),
        };
        Some(match str_field(doc, "kind") {
            "PeerAuthentication" => errors::<PeerAuthentication>(spec),
            "RequestAuthentication" => errors::<RequestAuthentication>(spec),
            "AuthorizationPolicy" => errors::<AuthorizationPolicy>(spec),
            other => panic!("unexpected security kind {other}"),
        })
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
            if let Some(errors) = check_doc(&doc) {
                checked += 1;
                assert!(
                    errors.is_empty(),
                    "{} {:?}: {errors:?}",
                    file.display(),
                    doc.get("metadata")
                );
            }
        }
        assert!(checked >= 20, "only {checked} security documents checked");
    }

    #[test]
    fn special_shapes() {
        let deny_all: AuthorizationPolicy = serde_yaml::from_str("{}").expect("parses");
        assert_eq!(deny_all.action, Action::Allow);
        assert!(deny_all.rules.is_empty());
        let allow_all: AuthorizationPolicy = serde_yaml::from_str("rules: [{}]").expect("parses");
        assert_eq!(allow_all.rules, vec![Rule::default()]);

        let pa: PeerAuthentication = serde_yaml::from_str(
            r#"{selector: {matchLabels: {app: a}}, portLevelMtls: {"8080": {mode: STRICT}, 9090: {mode: DISABLE}}}"#,
        )
        .expect("parses");
        assert_eq!(pa.mode(), MtlsMode::Unset);
        assert_eq!(pa.port_level_mtls[&8080].mode, MtlsMode::Strict);
        assert_eq!(pa.port_level_mtls[&9090].mode, MtlsMode::Disable);

        let ra: RequestAuthentication =
            serde_yaml::from_str("jwtRules: [{issuer: a, jwks_uri: 'https://a/k'}]")
                .expect("parses");
        assert_eq!(ra.jwt_rules[0].jwks_uri, "https://a/k");

        // A DENY rule with only HTTP attributes denies all TCP traffic; Istio
        // warns rather than rejects.
        let w = warnings::<AuthorizationPolicy>(
            "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}",
        );
        assert_eq!(w, ["spec.rules[0]"]);
        let w = warnings::<AuthorizationPolicy>("{rules: [{to: [{operation: {methods: [get]}}]}]}");
        assert_eq!(w, ["spec.rules[0].to[0].operation.methods[0]"]);
        let w = warnings::<RequestAuthentication>("jwtRules: [{jwksUri: 'https://a/k'}]");
        assert_eq!(w, ["spec.jwtRules[0].issuer"]);
    }

    #[test]
    fn broken_inputs_are_located() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // (kind, spec, field, message fragment)
            (
                "AuthorizationPolicy",
                "rules: [{form: [{source: {namespaces: [a]}}]}]",
                "spec.rules[0].form",
                "unknown field `form`",
            ),
            (
                "AuthorizationPolicy",
                "action: ALOW",
                "spec.action",
                "unknown variant `ALOW`",
            ),
            (
                "AuthorizationPolicy",
                "action: allow",
                "spec.action",
                "unknown variant",
            ),
            (
                "AuthorizationPolicy",
                "{action: CUSTOM, rules: [{}]}",
                "spec.provider",
                "`provider.name` must not be empty",
            ),
            (
                "AuthorizationPolicy",
                "{action: CUSTOM, provider: {name: ''}, rules: [{}]}",
                "spec.provider.name",
                "must not be empty",
            ),
            (
                "AuthorizationPolicy",
                "{action: CUSTOM, provider: {name: x}}",
                "spec.rules",
                "CUSTOM action without rules",
            ),
            (
                "AuthorizationPolicy",
                "{provider: {name: x}, rules: [{}]}",
                "spec.provider",
                "only be set with the CUSTOM action, found ALLOW",
            ),
            (
                "AuthorizationPolicy",
                "action: DENY",
                "spec.rules",
                "DENY action without rules",
            ),
            (
                "AuthorizationPolicy",
                "{action: CUSTOM, provider: {name: x}, rules: [{from: [{source: {principals: [a]}}]}]}",
                "spec.rules[0].from[0].source.principals",
                "not supported with the CUSTOM action",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: 'request.auth.claims[groups]'}, {key: source.pod, values: [a]}]}]",
                "spec.rules[0].when[1].key",
                "unknown attribute: source.pod",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: 'request.auth.claims[groups]'}]}]",
                "spec.rules[0].when[0]",
                "at least one of `values` or `notValues`",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: 'request.headers[]', values: [a]}]}]",
                "spec.rules[0].when[0].key",
                "bad key",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: 'request.headers[a][b]', values: [a]}]}]",
                "spec.rules[0].when[0].key",
                "bad key",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: 'destination.labels[app]', values: [a]}]}]",
                "spec.rules[0].when[0].key",
                "replaced by the workload selector",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: source.ip, values: [10.0.0.0/33]}]}]",
                "spec.rules[0].when[0].values[0]",
                "bad CIDR range",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{when: [{key: destination.port, notValues: ['80', http]}]}]",
                "spec.rules[0].when[0].notValues[1]",
                "bad port",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{source: {ipBlocks: [1.2.3.4, 1.2.3.256]}}]}]",
                "spec.rules[0].from[0].source.ipBlocks[1]",
                "bad IP address (1.2.3.256)",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{source: {remoteIpBlocks: ['fd00::/129']}}]}]",
                "spec.rules[0].from[0].source.remoteIpBlocks[0]",
                "prefix length",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{to: [{operation: {ports: ['80', '0x50']}}]}]",
                "spec.rules[0].to[0].operation.ports[1]",
                "bad port (\"0x50\")",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{to: [{operation: {notPorts: ['70000']}}]}]",
                "spec.rules[0].to[0].operation.notPorts[0]",
                "1–65535",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{to: [{operation: {paths: ['']}}]}]",
                "spec.rules[0].to[0].operation.paths[0]",
                "empty value",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{to: [{operation: {paths: ['/a/{**}/b/{*}']}}]}]",
                "spec.rules[0].to[0].operation.paths[0]",
                "must be the last operator",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{}]}]",
                "spec.rules[0].from[0].source",
                "`from.source` must not be empty",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{to: [{operation: {}}]}]",
                "spec.rules[0].to[0].operation",
                "`to.operation` must not be empty",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{source: {namespaces: ['']}}]}]",
                "spec.rules[0].from[0].source.namespaces[0]",
                "empty value",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{source: {namespaces: [a], serviceAccounts: [a/b]}}]}]",
                "spec.rules[0].from[0].source.serviceAccounts",
                "cannot set serviceAccounts with namespaces or principals",
            ),
            (
                "AuthorizationPolicy",
                "rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]",
                "spec.rules[0].from[0].source.serviceAccounts[0]",
                "expected format",
            ),
            (
                "AuthorizationPolicy",
                "{selector: {matchLabels: {app: a}}, targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}}",
                "spec.targetRef",
                "only one of selector, targetRef and targetRefs",
            ),
            (
                "AuthorizationPolicy",
                "targetRefs: [{kind: Deployment, group: apps, name: x}]",
                "spec.targetRefs[0]",
                "targetRef must be to",
            ),
            (
                "AuthorizationPolicy",
                "selector: {matchLabels: {app: 'a*'}}",
                "spec.selector.matchLabels.app",
                "invalid label value",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{jwks: '{\"keys\": []}'}]",
                "spec.jwtRules[0].issuer",
                "issuer must be set",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, jwksUri: 'https://a/k', jwks: '{\"keys\": []}'}]",
                "spec.jwtRules[0].jwks",
                "only one of jwks and jwksUri",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, jwksUri: 'ftp://a/k'}]",
                "spec.jwtRules[0].jwksUri",
                "scheme \"ftp\" is not supported",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, jwksUri: 'https:///k'}]",
                "spec.jwtRules[0].jwksUri",
                "no host",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, jwks: 'not json'}]",
                "spec.jwtRules[0].jwks",
                "jwks parse error",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, fromHeaders: [{name: x}, {prefix: 'Bearer '}]}]",
                "spec.jwtRules[0].fromHeaders[1].name",
                "non-empty",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: 'x y', claim: c}]}]",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "not valid",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, outputClaimToHeaders: [{header: Host, claim: c}]}]",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "reserved",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, timeout: 0s}]",
                "spec.jwtRules[0].timeout",
                "at least 1ms",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, timeout: soon}]",
                "spec.jwtRules[0].timeout",
                "invalid duration",
            ),
            (
                "RequestAuthentication",
                "jwtRules: [{issuer: a, jwksUri: 'https://a/k', jwks_uri: 'https://a/k'}]",
                "spec.jwtRules[0]",
                "duplicate field",
            ),
            (
                "PeerAuthentication",
                "{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}",
                "spec.portLevelMtls",
                "needs a selector",
            ),
            (
                "PeerAuthentication",
                "mtls: {mode: strict}",
                "spec.mtls.mode",
                "unknown variant `strict`",
            ),
            (
                "PeerAuthentication",
                "mtls: {mode: MUTUAL}",
                "spec.mtls.mode",
                "unknown variant",
            ),
            (
                "PeerAuthentication",
                "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: DISABLE}}}",
                "spec.portLevelMtls.0",
                "outside 1–65535",
            ),
            (
                "PeerAuthentication",
                "{selector: {matchLabels: {app: a}}, portLevelMtls: {http: {mode: DISABLE}}}",
                "spec.portLevelMtls.http",
                "not a number",
            ),
            (
                "PeerAuthentication",
                "targetRef: {kind: Service, name: a}",
                "spec.targetRef",
                "unknown field",
            ),
        ];
        for &(kind, spec, field, fragment) in cases {
            let value: serde_yaml::Value =
                serde_yaml::from_str(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            let found = match kind {
                "PeerAuthentication" => errors::<PeerAuthentication>(value),
                "RequestAuthentication" => errors::<RequestAuthentication>(value),
                _ => errors::<AuthorizationPolicy>(value),
            };
            assert!(
                found
                    .iter()
                    .any(|(f, m)| f == field && m.contains(fragment)),
                "{kind} {spec}: expected {field}: …{fragment}…, got {found:?}"
            );
        }
    }

    #[test]
    fn condition_keys() {
        for ok in [
            "request.headers[User-Agent]",
            "request.auth.claims[iss]",
            "request.auth.claims[nested][key]",
            "source.trustDomain",
            "connection.sni",
            "experimental.envoy.filters.network.mysql_proxy[db.table]",
        ] {
            assert!(condition_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "request.headers",
            "request.headers[a",
            "request.auth.claims[]",
            "request.auth.claims[a]b",
            "experimental.envoy.filters.[a]",
            "destination.namespace",
            "destination.user",
        ] {
            assert!(condition_key(bad).is_err(), "{bad}");
        }
    }
}
