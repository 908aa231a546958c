//! AuthorizationPolicy: rules over sources, operations and `when` conditions.

use serde::{Deserialize, Serialize};

use super::{non_empty_values, parse_ip_or_cidr, validate_targeting};
use crate::common::{Ctx, PolicyTargetReference, Validate, WorkloadSelector};

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
pub(super) enum KeyKind {
    Ip,
    Port,
    ServiceAccount,
    Other,
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
pub(super) fn condition_key(key: &str) -> Result<KeyKind, String> {
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
