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

    /// The node Kite's own proxy announces: the same id and metadata as the
    /// Envoy bootstrap carries.
    pub fn node(&self) -> envoy_types::pb::envoy::config::core::v3::Node {
        use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
        fn to_pb(v: &Value) -> PbValue {
            let kind = match v {
                Value::String(s) => Kind::StringValue(s.clone()),
                Value::Bool(b) => Kind::BoolValue(*b),
                Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
                Value::Object(m) => Kind::StructValue(Struct {
                    fields: m.iter().map(|(k, v)| (k.clone(), to_pb(v))).collect(),
                }),
                Value::Array(a) => Kind::ListValue(envoy_types::pb::google::protobuf::ListValue {
                    values: a.iter().map(to_pb).collect(),
                }),
                Value::Null => Kind::NullValue(0),
            };
            PbValue { kind: Some(kind) }
        }
        let json = self.to_json();
        let metadata = match to_pb(&json["node"]["metadata"]).kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        };
        envoy_types::pb::envoy::config::core::v3::Node {
            id: self.node_id(),
            cluster: json["node"]["cluster"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            metadata,
            ..Default::default()
        }
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
