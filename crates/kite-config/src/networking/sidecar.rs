//! Sidecar: which ports a sidecar listens on and which hosts it can reach.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    ConnectionPoolSettings, Destination, SERVICE_PROTOCOLS, ServerTlsSettings, WorkloadLabels,
    check_namespaced_host, check_protocol,
};
use crate::common::{Ctx, Validate};

/// Narrows what a sidecar listens for and knows about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// None means the namespace default (one per namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// `DEFAULT`, `IPTABLES` or `NONE`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capture_mode: String,
    /// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT` or `unix://path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capture_mode: String,
    /// `namespace/dnsName`; the namespace may be `*`, `.` or `~`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default)]
    pub mode: OutboundMode,
    /// Only with ALLOW_ANY: where unknown traffic goes instead of passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    RegistryOnly,
    #[default]
    AllowAny,
}

fn check_capture_mode(cx: &mut Ctx<'_>, field: &str, mode: &str) {
    if !matches!(mode, "" | "DEFAULT" | "IPTABLES" | "NONE") {
        cx.error(
            field,
            format!("unknown captureMode {mode:?}: expected DEFAULT, IPTABLES or NONE"),
        );
    }
}

// === impl Sidecar ===

impl Validate for Sidecar {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if let Some(selector) = &self.workload_selector {
            cx.labels("spec.workloadSelector.labels", &selector.labels);
        }
        if self.ingress.is_empty()
            && self.egress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            cx.warn("spec", "empty Sidecar: it changes nothing");
        }
        let mut ingress_ports = BTreeSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            match &listener.port {
                None => cx.error(format!("{field}.port"), "port is required"),
                Some(port) => {
                    port.validate_at(cx, &format!("{field}.port"));
                    if !ingress_ports.insert(port.number) {
                        cx.error(
                            format!("{field}.port.number"),
                            format!("duplicate ingress port {}", port.number),
                        );
                    }
                }
            }
            check_capture_mode(cx, &format!("{field}.captureMode"), &listener.capture_mode);
            if !listener.default_endpoint.is_empty()
                && !default_endpoint_ok(&listener.default_endpoint)
            {
                cx.error(
                    format!("{field}.defaultEndpoint"),
                    format!(
                        "defaultEndpoint {:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, \
                         [::]:PORT or unix://path",
                        listener.default_endpoint
                    ),
                );
            }
            if let Some(tls) = &listener.tls {
                tls.validate_at(cx, &format!("{field}.tls"));
            }
            if let Some(pool) = &listener.connection_pool {
                pool.validate_at(cx, &format!("{field}.connectionPool"));
            }
        }
        let mut catch_all = 0;
        for (i, listener) in self.egress.iter().enumerate() {
            let field = format!("spec.egress[{i}]");
            match &listener.port {
                None => {
                    catch_all += 1;
                    if catch_all > 1 {
                        cx.error(
                            format!("{field}.port"),
                            "only one egress listener may omit the port",
                        );
                    }
                }
                Some(port) => port.validate_at(cx, &format!("{field}.port")),
            }
            check_capture_mode(cx, &format!("{field}.captureMode"), &listener.capture_mode);
            if listener.hosts.is_empty() {
                cx.error(format!("{field}.hosts"), "at least one host is required");
            }
            for (j, host) in listener.hosts.iter().enumerate() {
                check_namespaced_host(cx, &format!("{field}.hosts[{j}]"), host, true);
            }
        }
        if let Some(policy) = &self.outbound_traffic_policy
            && let Some(proxy) = &policy.egress_proxy
        {
            let field = "spec.outboundTrafficPolicy.egressProxy";
            if policy.mode == OutboundMode::RegistryOnly {
                cx.error(field, "egressProxy only applies with mode ALLOW_ANY");
            }
            proxy.validate_at(cx, field);
        }
        if let Some(pool) = &self.inbound_connection_pool {
            pool.validate_at(cx, "spec.inboundConnectionPool");
        }
    }
}

impl SidecarPort {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        cx.port(format!("{field}.number"), self.number);
        check_protocol(
            cx,
            &format!("{field}.protocol"),
            &self.protocol,
            SERVICE_PROTOCOLS,
        );
        if let Some(target) = self.target_port {
            cx.port(format!("{field}.targetPort"), target);
        }
    }
}

fn default_endpoint_ok(endpoint: &str) -> bool {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return !path.is_empty();
    }
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return false;
    };
    matches!(host, "127.0.0.1" | "0.0.0.0" | "[::1]" | "[::]")
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}
