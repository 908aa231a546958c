//! ServiceEntry, and the WorkloadEntry and WorkloadGroup that give it (or a
//! Kubernetes Service) non-Kubernetes endpoints.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use super::{
    SERVICE_PROTOCOLS, WorkloadLabels, check_cidr, check_export_to, check_host, check_protocol,
    is_zero, wildcard_domain,
};
use crate::common::{Ctx, Labels, Validate};

/// Adds hosts (usually external ones) to the mesh's service registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// VIPs or CIDRs, for TCP services without a Host header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub resolution: Resolution,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default)]
    pub number: u32,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// No mTLS, and metrics treat it as outside the mesh.
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the original destination address.
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

/// A non-Kubernetes workload (VM), or an inline ServiceEntry endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, DNS name or `unix://` path; may be empty only behind a network
    /// gateway (`network` set).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name → workload port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Shared with the registry's view of the workload, which at scale
    /// would otherwise hold a second copy of every workload's labels.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub labels: Arc<Labels>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

/// A template for auto-registered WorkloadEntries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupMeta>,
    #[serde(default)]
    pub template: WorkloadEntry,
    /// httpGet / tcpSocket / exec / grpc readiness probe, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupMeta {
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
}

// === impl ServiceEntry ===

impl Validate for ServiceEntry {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if self.hosts.is_empty() {
            cx.error("spec.hosts", "at least one host is required");
        }
        let dns = matches!(self.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        for (i, host) in self.hosts.iter().enumerate() {
            let field = format!("spec.hosts[{i}]");
            if host == "*" {
                cx.error(field, "host \"*\" is not allowed in a ServiceEntry");
            } else if dns && self.endpoints.is_empty() && host.starts_with('*') {
                cx.error(
                    field,
                    format!(
                        "wildcard host {host:?} cannot be resolved with DNS resolution: \
                         use NONE, DYNAMIC_DNS or list endpoints"
                    ),
                );
            } else {
                check_host(cx, &field, host);
            }
        }
        for (i, address) in self.addresses.iter().enumerate() {
            check_cidr(cx, &format!("spec.addresses[{i}]"), address);
        }
        let port_names = self.validate_ports(cx);
        match self.resolution {
            Resolution::Static if self.endpoints.is_empty() && self.workload_selector.is_none() => {
                cx.error(
                    "spec.endpoints",
                    "STATIC resolution needs endpoints or a workloadSelector",
                );
            }
            Resolution::None if !self.endpoints.is_empty() => cx.error(
                "spec.endpoints",
                "NONE resolution forwards to the original destination: endpoints are not allowed",
            ),
            _ => {}
        }
        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            cx.error(
                "spec.workloadSelector",
                "set only one of endpoints and workloadSelector",
            );
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let field = format!("spec.endpoints[{i}]");
            endpoint.validate_parts(cx, &field, true);
            let address = &endpoint.address;
            if self.resolution == Resolution::Static
                && !address.is_empty()
                && !address.starts_with("unix://")
                && address.parse::<IpAddr>().is_err()
            {
                cx.error(
                    format!("{field}.address"),
                    format!("STATIC resolution needs an IP address, not {address:?}"),
                );
            }
            for name in endpoint.ports.keys() {
                if !port_names.contains(name.as_str()) {
                    cx.error(
                        format!("{field}.ports.{name}"),
                        format!("port {name:?} is not one of the ServiceEntry's port names"),
                    );
                }
            }
        }
        if let Some(selector) = &self.workload_selector {
            cx.labels("spec.workloadSelector.labels", &selector.labels);
        }
        check_export_to(cx, "spec.exportTo", &self.export_to);
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                cx.error(
                    format!("spec.subjectAltNames[{i}]"),
                    "subject alt name must not be empty",
                );
            }
        }
    }
}

impl ServiceEntry {
    /// Checks `ports` and returns their names.
    fn validate_ports(&self, cx: &mut Ctx<'_>) -> BTreeSet<&str> {
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            cx.port(format!("{field}.number"), port.number);
            if port.number != 0 && !numbers.insert(port.number) {
                cx.error(
                    format!("{field}.number"),
                    format!("duplicate port number {}", port.number),
                );
            }
            check_protocol(
                cx,
                &format!("{field}.protocol"),
                &port.protocol,
                SERVICE_PROTOCOLS,
            );
            if port.name.is_empty() {
                cx.error(format!("{field}.name"), "port name is required");
            } else if !names.insert(port.name.as_str()) {
                cx.error(
                    format!("{field}.name"),
                    format!("duplicate port name {:?}", port.name),
                );
            }
            if let Some(target) = port.target_port {
                cx.port(format!("{field}.targetPort"), target);
            }
        }
        names
    }
}

// === impl WorkloadEntry, WorkloadGroup ===

impl Validate for WorkloadEntry {
    fn validate(&self, cx: &mut Ctx<'_>) {
        self.validate_parts(cx, "spec", true);
    }
}

impl WorkloadEntry {
    /// `with_address` is false for a WorkloadGroup template, whose address is
    /// filled in when a VM registers.
    fn validate_parts(&self, cx: &mut Ctx<'_>, field: &str, with_address: bool) {
        let address = &self.address;
        if with_address {
            if address.is_empty() {
                if self.network.is_empty() {
                    cx.error(
                        format!("{field}.address"),
                        "address is required (it may be empty only when network is set)",
                    );
                }
            } else if !address_ok(address) {
                cx.error(
                    format!("{field}.address"),
                    format!("address {address:?} is not an IP address, DNS name or unix:// path"),
                );
            }
        }
        for (name, &port) in &self.ports {
            cx.port(format!("{field}.ports.{name}"), port);
        }
        cx.labels(&format!("{field}.labels"), &self.labels);
    }
}

fn address_ok(address: &str) -> bool {
    if let Some(path) = address.strip_prefix("unix://") {
        return !path.is_empty();
    }
    address.parse::<IpAddr>().is_ok()
        || (!address.contains('*') && wildcard_domain(address).is_ok())
}

impl Validate for WorkloadGroup {
    fn validate(&self, cx: &mut Ctx<'_>) {
        if let Some(meta) = &self.metadata {
            cx.labels("spec.metadata.labels", &meta.labels);
        }
        if !self.template.address.is_empty() {
            cx.error(
                "spec.template.address",
                "a WorkloadGroup template has no address: it is filled in when a workload registers",
            );
        }
        self.template.validate_parts(cx, "spec.template", false);
    }
}

fn is_empty(labels: &Arc<Labels>) -> bool {
    labels.is_empty()
}
