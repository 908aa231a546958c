//! Envoy bootstrap for a proxy driven by Kite: its node identity (Istio's
//! node id and metadata) and ADS to the control plane. `kite up --sidecar
//! envoy` and the Envoy interop tests use it.

use std::{collections::BTreeMap, net::SocketAddr};

use serde_json::{Value, json};

use crate::proxy::ProxyKind;

/// Who the Envoy is and where it finds its control plane.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub kind: ProxyKind,
    /// The workload's (pod's) address.
    pub ip: std::net::IpAddr,
    pub pod: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Where the app listens (local mode).
    pub app_ip: Option<std::net::IpAddr>,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
}

impl Bootstrap {
    pub fn node_id(&self) -> String {
        let kind = match self.kind {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        };
        format!(
            "{kind}~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.ip,
            self.pod,
            ns = self.namespace
        )
    }

    /// The bootstrap as JSON, which Envoy reads like YAML.
    pub fn to_json(&self) -> Value {
        let mut metadata = json!({
            "NAMESPACE": self.namespace,
            "LABELS": self.labels,
            "SERVICE_ACCOUNT": self.service_account,
            "INSTANCE_IPS": self.ip.to_string(),
            "NAME": self.pod,
        });
        if let Some(app) = self.app_ip {
            metadata["KITE_APP_IP"] = json!(app.to_string());
        }
        let cluster = self
            .labels
            .get("app")
            .map(|app| format!("{app}.{}", self.namespace))
            .unwrap_or_else(|| format!("{}.{}", self.pod, self.namespace));
        json!({
            "node": {"id": self.node_id(), "cluster": cluster, "metadata": metadata},
            "admin": {"address": {"socket_address": {"address": self.admin.ip().to_string(), "port_value": self.admin.port()}}},
            "dynamic_resources": {
                "ads_config": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                    "set_node_on_first_message_only": true,
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": [{
                "name": "xds-grpc",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                    "address": self.xds.ip().to_string(), "port_value": self.xds.port()
                }}}}]}]},
            }]},
        })
    }
}
