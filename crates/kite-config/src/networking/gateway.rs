//! Gateway: the servers (ports, hosts, TLS) of an ingress or egress gateway.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{check_namespaced_host, check_protocol, is_false};
use crate::common::{Ctx, Labels, Validate};

/// Listeners of the gateway pods matched by `selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
    /// Searched across all namespaces by default.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<GatewayPort>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// `host`, `*`, `*.suffix`, optionally prefixed by `ns/` or `./`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayPort {
    /// Translated to the gateway Service's targetPort when one matches.
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// TLS that a gateway (or a sidecar's inbound listener) terminates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Answer plain HTTP with a 301 to HTTPS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub https_redirect: bool,
    #[serde(default)]
    pub mode: ServerTlsMode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_certificates: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_crl: String,
    /// A Secret in the gateway's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_certificates: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// `TLS_AUTO`, `TLSV1_0` … `TLSV1_3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Route on SNI without terminating.
    #[default]
    Passthrough,
    Simple,
    Mutual,
    AutoPassthrough,
    IstioMutual,
    OptionalMutual,
}

const GATEWAY_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
];

const TLS_VERSIONS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];

// === impl Gateway ===

impl Validate for Gateway {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.servers.is_empty() {
            cx.error("spec.servers", "at least one server is required");
        }
        cx.labels("spec.selector", &self.selector);
        let mut port_names = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            server.validate_at(cx, &field);
            if let Some(port) = &server.port
                && !port.name.is_empty()
                && !port_names.insert(port.name.as_str())
            {
                cx.error(
                    format!("{field}.port.name"),
                    format!("duplicate server port name {:?}", port.name),
                );
            }
        }
    }
}

impl Server {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let protocol = match &self.port {
            None => {
                cx.error(format!("{field}.port"), "port is required");
                String::new()
            }
            Some(port) => {
                cx.port(format!("{field}.port.number"), port.number);
                check_protocol(
                    cx,
                    &format!("{field}.port.protocol"),
                    &port.protocol,
                    GATEWAY_PROTOCOLS,
                );
                if let Some(target) = port.target_port {
                    cx.port(format!("{field}.port.targetPort"), target);
                }
                port.protocol.to_ascii_uppercase()
            }
        };
        if self.hosts.is_empty() {
            cx.error(format!("{field}.hosts"), "at least one host is required");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            check_namespaced_host(cx, &format!("{field}.hosts[{i}]"), host, false);
        }
        let terminates = matches!(protocol.as_str(), "HTTPS" | "TLS");
        match &self.tls {
            None if terminates => cx.error(
                format!("{field}.tls"),
                format!("protocol {protocol} needs tls settings (mode and credentials)"),
            ),
            None => {}
            Some(tls) if terminates => tls.validate_at(cx, &format!("{field}.tls")),
            // A plain-text server may carry tls only to redirect to HTTPS.
            Some(tls)
                if !protocol.is_empty()
                    && (!tls.https_redirect || tls.mode != ServerTlsMode::Passthrough) =>
            {
                cx.error(
                    format!("{field}.tls"),
                    format!(
                        "protocol {protocol} is plain text: its tls may only set httpsRedirect \
                         (use HTTPS or TLS to terminate TLS)"
                    ),
                );
            }
            Some(_) => {}
        }
    }
}

fn server_tls_mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

impl ServerTlsSettings {
    pub(super) fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        let mode = server_tls_mode_name(self.mode);
        let has_credential = !self.credential_name.is_empty()
            || !self.credential_names.is_empty()
            || !self.tls_certificates.is_empty();
        let has_files = !self.server_certificate.is_empty() && !self.private_key.is_empty();
        match self.mode {
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                if !has_credential && !has_files {
                    cx.error(
                        field,
                        format!(
                            "{mode} TLS needs credentialName(s) or serverCertificate and privateKey"
                        ),
                    );
                }
                if self.mode != ServerTlsMode::Simple
                    && !has_credential
                    && has_files
                    && self.ca_certificates.is_empty()
                {
                    cx.error(
                        format!("{field}.caCertificates"),
                        format!("{mode} TLS needs caCertificates to verify client certificates"),
                    );
                }
            }
            ServerTlsMode::IstioMutual => {
                if has_credential || has_files || !self.ca_certificates.is_empty() {
                    cx.error(
                        field,
                        "ISTIO_MUTUAL uses Istio's own certificates: do not set credentialName, \
                         serverCertificate, privateKey or caCertificates",
                    );
                }
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        }
        if !self.credential_name.is_empty() && !self.credential_names.is_empty() {
            cx.error(
                format!("{field}.credentialNames"),
                "set only one of credentialName and credentialNames",
            );
        }
        let version = |cx: &mut Ctx<'_>, name: &str, v: &Option<String>| {
            let v = v.as_deref()?;
            let rank = TLS_VERSIONS.iter().position(|t| *t == v);
            if rank.is_none() {
                cx.error(
                    format!("{field}.{name}"),
                    format!(
                        "unknown TLS version {v:?}: expected one of {}",
                        TLS_VERSIONS.join(", ")
                    ),
                );
            }
            // TLS_AUTO leaves the choice to Envoy and orders with nothing.
            rank.filter(|&r| r > 0)
        };
        let min = version(cx, "minProtocolVersion", &self.min_protocol_version);
        let max = version(cx, "maxProtocolVersion", &self.max_protocol_version);
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            cx.error(
                format!("{field}.minProtocolVersion"),
                "minProtocolVersion is above maxProtocolVersion",
            );
        }
    }
}
