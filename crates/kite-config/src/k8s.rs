//! The Kubernetes kinds that describe workloads: Service, Deployment, Pod
//! and Secret, modelled loosely. Unknown fields are ignored because real
//! objects carry far more than Kite reads; what Kite does read is checked the
//! way the API server would.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::common::{Ctx, IntOrString, Labels, Validate};

// === Service ===

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// Pods with all these labels back the Service; empty selects none (the
    /// endpoints are then managed by hand).
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// `None` makes the Service headless.
    #[serde(rename = "clusterIP", skip_serializing_if = "String::is_empty")]
    pub cluster_ip: String,
    #[serde(rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    /// ClusterIP (when empty), NodePort, LoadBalancer or ExternalName.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub external_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_family_policy: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    /// Required once a Service has more than one port; Istio also reads the
    /// protocol from its prefix.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub port: u32,
    /// A container port number or name; absent means the same as `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
}

// === Deployment ===

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeploymentSpec {
    /// Absent means 1; see [`DeploymentSpec::replicas`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub match_labels: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplateSpec {
    pub metadata: TemplateMeta,
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TemplateMeta {
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Where the sidecar injector's and Istio's per-pod settings live.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

// === Pod ===

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The workload's identity: `spiffe://<td>/ns/<ns>/sa/<this>`. See
    /// [`PodSpec::service_account`].
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    /// Deprecated alias of `serviceAccountName`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    pub containers: Vec<Container>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(skip_serializing_if = "is_false")]
    pub host_network: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subdomain: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    /// What a Service's named `targetPort` refers to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub container_port: u32,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Field, resource, ConfigMap or Secret references, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<serde_json::Value>,
}

// === Secret ===

/// A Secret's body. Its fields sit at the top level of the object, not under
/// `spec`, so this is the whole object minus apiVersion, kind and metadata
/// (which it ignores if present).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Secret {
    /// `Opaque` when empty.
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// Base64-encoded values; see [`Secret::decoded`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values that take precedence over `data` on write.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

// === Protocol selection ===

/// The protocol Istio assigns a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Http,
    Http2,
    Https,
    Grpc,
    GrpcWeb,
    Tcp,
    Tls,
    Mongo,
    Mysql,
    Redis,
    Udp,
    /// Not declared: the proxy sniffs HTTP and otherwise treats it as TCP.
    Unknown,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// === impl ServiceSpec ===

impl ServiceSpec {
    /// `spec.type`, defaulted.
    pub fn service_type(&self) -> &str {
        if self.type_.is_empty() {
            "ClusterIP"
        } else {
            &self.type_
        }
    }

    pub fn is_headless(&self) -> bool {
        self.cluster_ip == "None"
    }

    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

impl Validate for ServiceSpec {
    fn validate(&self, cx: &mut Ctx<'_>) {
        cx.labels("spec.selector", &self.selector);
        let service_type = self.service_type();
        if !matches!(
            service_type,
            "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
        ) {
            cx.error(
                "spec.type",
                format!(
                    "unsupported value {service_type:?}: use ClusterIP, NodePort, LoadBalancer \
                     or ExternalName"
                ),
            );
        }
        if service_type == "ExternalName" && self.external_name.is_empty() {
            cx.error("spec.externalName", "required for type ExternalName");
        }
        if !self.cluster_ip.is_empty()
            && !self.is_headless()
            && self.cluster_ip.parse::<std::net::IpAddr>().is_err()
        {
            cx.error(
                "spec.clusterIP",
                format!(
                    "{:?} is not an IP address, \"None\" or empty",
                    self.cluster_ip
                ),
            );
        }
        if self.ports.is_empty() && !self.is_headless() && service_type != "ExternalName" {
            cx.error("spec.ports", "required: a Service needs at least one port");
        }

        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        let node_ports_allowed = matches!(service_type, "NodePort" | "LoadBalancer");
        for (i, port) in self.ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            cx.port(format!("{at}.port"), port.port);
            if port.name.is_empty() {
                if self.ports.len() > 1 {
                    cx.error(
                        format!("{at}.name"),
                        "required: every port must be named when a Service has more than one",
                    );
                }
            } else if let Err(why) = dns_label(&port.name) {
                cx.error(format!("{at}.name"), why);
            } else if !names.insert(port.name.as_str()) {
                cx.error(
                    format!("{at}.name"),
                    format!("duplicate port name {:?}", port.name),
                );
            }
            check_l4_protocol(cx, &format!("{at}.protocol"), &port.protocol);
            if !numbers.insert((port.port, port.protocol.as_str())) {
                cx.error(
                    at.clone(),
                    format!("duplicate port {}/{}", port.port, port.protocol),
                );
            }
            if let Some(target) = &port.target_port {
                check_target_port(cx, &format!("{at}.targetPort"), target);
            }
            if let Some(node_port) = port.node_port {
                cx.port(format!("{at}.nodePort"), node_port);
                if !node_ports_allowed {
                    cx.error(
                        format!("{at}.nodePort"),
                        format!("may not be used with type {service_type}"),
                    );
                }
            }
        }
    }
}

impl Default for ServicePort {
    fn default() -> Self {
        Self {
            name: String::new(),
            port: 0,
            target_port: None,
            protocol: "TCP".to_owned(),
            app_protocol: None,
            node_port: None,
        }
    }
}

impl ServicePort {
    /// The container port number traffic is sent to, when it is known
    /// without looking at the pods: `targetPort` if numeric, else `port`
    /// when `targetPort` is absent. `None` for a named `targetPort`.
    pub fn target_port_number(&self) -> Option<u32> {
        match &self.target_port {
            None => Some(self.port),
            Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
            Some(IntOrString::String(_)) => None,
        }
    }

    /// Istio's protocol for this port; see [`port_protocol`].
    pub fn protocol(&self) -> Protocol {
        port_protocol(self)
    }
}

fn check_target_port(cx: &mut Ctx<'_>, field: &str, target: &IntOrString) {
    match target {
        IntOrString::Int(n) if (1..=65535).contains(n) => {}
        IntOrString::Int(n) => {
            cx.error(field, format!("port number {n} is outside 1–65535"));
        }
        IntOrString::String(name) => {
            if let Err(why) = port_name(name) {
                cx.error(field, why);
            }
        }
    }
}

fn check_l4_protocol(cx: &mut Ctx<'_>, field: &str, protocol: &str) {
    if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
        cx.error(
            field,
            format!("unsupported protocol {protocol:?}: use TCP, UDP or SCTP"),
        );
    }
}

/// An IANA service name, as Kubernetes requires of container port names and
/// named target ports: at most 15 lower-case letters, digits and single
/// hyphens, with at least one letter.
fn port_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid port name {name:?}: at most 15 lower-case letters, digits and single '-', \
             with at least one letter"
        ))
    }
}

/// A DNS-1123 label, as Kubernetes requires of Service port and container
/// names.
fn dns_label(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid DNS label: lower-case letters, digits and '-', at most 63 \
             characters, starting and ending with a letter or digit"
        ))
    }
}

// === impl DeploymentSpec ===

impl DeploymentSpec {
    pub fn replicas(&self) -> u32 {
        self.replicas.unwrap_or(1)
    }
}

impl Validate for DeploymentSpec {
    fn validate(&self, cx: &mut Ctx<'_>) {
        cx.labels("spec.selector.matchLabels", &self.selector.match_labels);
        cx.labels(
            "spec.template.metadata.labels",
            &self.template.metadata.labels,
        );
        let mut selector_ok = true;
        for (i, req) in self.selector.match_expressions.iter().enumerate() {
            if let Err((field, why)) = req.check() {
                cx.error(format!("spec.selector.matchExpressions[{i}]{field}"), why);
                selector_ok = false;
            }
        }
        if self.selector.is_empty() {
            cx.error("spec.selector", "empty selector is invalid for deployment");
        } else if selector_ok && !self.selector.matches(&self.template.metadata.labels) {
            cx.error(
                "spec.template.metadata.labels",
                "selector does not match template labels",
            );
        }
        self.template.spec.validate_at(cx, "spec.template.spec");
    }
}

impl LabelSelector {
    /// Selects nothing in a Deployment (and everything in some other kinds),
    /// so Kubernetes rejects it there.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfies every `matchLabels` entry and every
    /// expression.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| req.matches(labels))
    }
}

impl LabelSelectorRequirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !self.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    }

    /// Err((field suffix, reason)).
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.key.is_empty() {
            return Err((".key", "key is required".into()));
        }
        match self.operator.as_str() {
            "In" | "NotIn" if self.values.is_empty() => Err((
                ".values",
                format!("must be non-empty for operator {}", self.operator),
            )),
            "Exists" | "DoesNotExist" if !self.values.is_empty() => Err((
                ".values",
                format!("must be empty for operator {}", self.operator),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => Ok(()),
            other => Err((
                ".operator",
                format!("unsupported operator {other:?}: use In, NotIn, Exists or DoesNotExist"),
            )),
        }
    }
}

// === impl PodSpec ===

impl PodSpec {
    /// `serviceAccountName`, else the deprecated `serviceAccount`, else
    /// `default`, as Kubernetes resolves it.
    pub fn service_account(&self) -> &str {
        [&self.service_account_name, &self.service_account]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("default", String::as_str)
    }

    /// The port number a named `targetPort` refers to in this pod.
    pub fn named_port(&self, name: &str) -> Option<u32> {
        self.containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name == name)
            .map(|p| p.container_port)
    }

    /// Checks the pod spec found at `field` (`spec` for a Pod,
    /// `spec.template.spec` inside a Deployment).
    pub fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.containers.is_empty() {
            cx.error(
                format!("{field}.containers"),
                "required: a pod needs at least one container",
            );
        }
        if !self.service_account_name.is_empty()
            && !self.service_account.is_empty()
            && self.service_account_name != self.service_account
        {
            cx.warn(
                format!("{field}.serviceAccount"),
                format!(
                    "deprecated serviceAccount {:?} differs from serviceAccountName {:?}, which \
                     wins",
                    self.service_account, self.service_account_name
                ),
            );
        }
        let mut names = BTreeSet::new();
        let lists = [
            ("containers", &self.containers),
            ("initContainers", &self.init_containers),
        ];
        for (list, containers) in lists {
            for (i, c) in containers.iter().enumerate() {
                let at = format!("{field}.{list}[{i}]");
                if c.name.is_empty() {
                    cx.error(
                        format!("{at}.name"),
                        "required: every container needs a name",
                    );
                } else if let Err(why) = dns_label(&c.name) {
                    cx.error(format!("{at}.name"), why);
                } else if !names.insert(c.name.as_str()) {
                    cx.error(
                        format!("{at}.name"),
                        format!("duplicate container name {:?}", c.name),
                    );
                }
                c.validate_at(cx, &at);
            }
        }
    }
}

impl Validate for PodSpec {
    fn validate(&self, cx: &mut Ctx<'_>) {
        self.validate_at(cx, "spec");
    }
}

impl Container {
    fn validate_at(&self, cx: &mut Ctx<'_>, field: &str) {
        if self.image.is_empty() {
            cx.error(
                format!("{field}.image"),
                "required: every container needs an image",
            );
        }
        let mut names = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = format!("{field}.ports[{i}]");
            cx.port(format!("{at}.containerPort"), port.container_port);
            if let Some(host_port) = port.host_port {
                cx.port(format!("{at}.hostPort"), host_port);
            }
            check_l4_protocol(cx, &format!("{at}.protocol"), &port.protocol);
            if !port.name.is_empty() {
                if let Err(why) = port_name(&port.name) {
                    cx.error(format!("{at}.name"), why);
                } else if !names.insert(port.name.as_str()) {
                    cx.error(
                        format!("{at}.name"),
                        format!("duplicate port name {:?}", port.name),
                    );
                }
            }
        }
        for (i, env) in self.env.iter().enumerate() {
            if env.name.is_empty() {
                cx.error(format!("{field}.env[{i}].name"), "required");
            }
        }
    }
}

impl Default for ContainerPort {
    fn default() -> Self {
        Self {
            name: String::new(),
            container_port: 0,
            protocol: "TCP".to_owned(),
            host_port: None,
        }
    }
}

// === impl Secret ===

impl Secret {
    /// A value's bytes: `stringData` first (the API server merges it over
    /// `data` on write), else `data` base64-decoded. `None` if the key is
    /// absent or its `data` value is not valid base64.
    pub fn decoded(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(plain) = self.string_data.get(key) {
            return Some(plain.as_bytes().to_vec());
        }
        self.data
            .get(key)
            .and_then(|encoded| decode_base64(encoded))
    }

    /// `Opaque` unless set.
    pub fn secret_type(&self) -> &str {
        if self.type_.is_empty() {
            "Opaque"
        } else {
            &self.type_
        }
    }
}

impl Validate for Secret {
    fn validate(&self, cx: &mut Ctx<'_>) {
        for (field, map) in [("data", &self.data), ("stringData", &self.string_data)] {
            for key in map.keys() {
                let valid = !key.is_empty()
                    && key.len() <= 253
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !valid {
                    cx.error(
                        format!("{field}.{key}"),
                        "invalid key: use letters, digits, '-', '_' and '.'",
                    );
                }
            }
        }
        for (key, value) in &self.data {
            if decode_base64(value).is_none() {
                cx.error(format!("data.{key}"), "value is not valid base64");
            }
        }
    }
}

/// Standard base64 as Go's decoder accepts it for `[]byte` fields: line
/// breaks are skipped; padding may be omitted.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut chars, mut padding) = (0u32, 0u32, 0usize, 0usize);
    for b in text.bytes() {
        let sextet = match b {
            b'\r' | b'\n' => continue,
            b'=' => {
                padding += 1;
                chars += 1;
                continue;
            }
            _ if padding > 0 => return None,
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        chars += 1;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    let complete = if padding > 0 {
        padding <= 2 && chars % 4 == 0
    } else {
        chars % 4 != 1
    };
    complete.then_some(out)
}

// === impl Protocol ===

impl Protocol {
    /// Parses an Istio protocol name (`http`, `HTTP2`, `grpc-web`, …),
    /// case-insensitively.
    pub fn parse(name: &str) -> Protocol {
        match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            "udp" => Protocol::Udp,
            _ => Protocol::Unknown,
        }
    }

    /// Istio's name, as in its `request_protocol`-style output.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Https => "HTTPS",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "Mongo",
            Protocol::Mysql => "MySQL",
            Protocol::Redis => "Redis",
            Protocol::Udp => "UDP",
            Protocol::Unknown => "UnsupportedProtocol",
        }
    }

    /// Proxied at L7 with HTTP routing (gRPC is HTTP/2).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Carried over TLS the proxy does not terminate.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// Proxied as an opaque TCP stream.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Mysql
                | Protocol::Redis
        )
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Istio's protocol selection for a Kubernetes Service port: a UDP port is
/// UDP; otherwise `appProtocol` if set, else the port name's prefix
/// (`<protocol>[-suffix]`, case-insensitive). An unrecognised value means
/// the proxy sniffs — except on a few well-known server ports that speak
/// first, where sniffing would stall the connection, so Istio uses TCP.
pub fn port_protocol(port: &ServicePort) -> Protocol {
    // SMTP, DNS, MySQL and MongoDB.
    const WELL_KNOWN_TCP_PORTS: [u32; 4] = [25, 53, 3306, 27017];

    if port.protocol == "UDP" {
        return Protocol::Udp;
    }
    let name = match port.app_protocol.as_deref() {
        // Kubernetes' own appProtocol values.
        Some("kubernetes.io/h2c") => return Protocol::Http2,
        Some("kubernetes.io/ws") => return Protocol::Http,
        Some("kubernetes.io/wss") => return Protocol::Https,
        Some(app) => app,
        None => &port.name,
    };
    // `grpc-web` holds a '-' itself, so it is matched before the prefix split.
    let parsed = if name
        .get(..8)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("grpc-web"))
    {
        Protocol::GrpcWeb
    } else {
        Protocol::parse(name.split('-').next().unwrap_or_default())
    };
    if parsed == Protocol::Unknown && WELL_KNOWN_TCP_PORTS.contains(&port.port) {
        Protocol::Tcp
    } else {
        parsed
    }
}

#[cfg(test)]
mod tests;
