//! `security.istio.io`: PeerAuthentication, RequestAuthentication and
//! AuthorizationPolicy, as their `spec:` bodies.
//!
//! Every field of Istio's protos is modelled so that valid YAML loads; unknown
//! fields and unknown enum values are rejected at deserialization, the rest
//! of Istio's webhook and CRD rules live in the [`Validate`] impls.
//!
//! One file per kind; the checks that several kinds (and Telemetry) share
//! live here.
//!
//! [`Validate`]: crate::common::Validate

use std::net::IpAddr;

use crate::common::{Ctx, PolicyTargetReference, WorkloadSelector};

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use self::{
    authorization_policy::{
        Action, AuthorizationPolicy, Condition, ExtensionProvider, Operation, Rule, RuleFrom,
        RuleTo, Source,
    },
    peer_authentication::{Mtls, MtlsMode, PeerAuthentication},
    request_authentication::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication},
};

fn non_empty_values(cx: &mut Ctx<'_>, field: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            cx.error(format!("{field}[{i}]"), "empty value not allowed");
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
mod tests;
