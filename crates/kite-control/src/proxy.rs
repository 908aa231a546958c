//! Who a connected proxy is, from its xDS node: Istio's node id format
//! `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local` plus node
//! metadata.

use std::net::IpAddr;

use envoy_types::pb::{envoy::config::core::v3::Node, google::protobuf::value::Kind as PbKind};
use kite_config::Labels;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Sidecar,
    /// A gateway (Istio calls its node type `router`).
    Router,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Proxy {
    pub id: String,
    pub kind: ProxyKind,
    /// The workload's address (the pod IP): the proxy listens here.
    pub ip: IpAddr,
    pub workload: String,
    pub namespace: String,
    pub labels: Labels,
    pub service_account: String,
    /// Where the app itself listens. On Kubernetes and in transparent mode
    /// that is the pod's localhost; in local mode each workload has a
    /// loopback address of its own for its app (`KITE_APP_IP`).
    pub app_ip: IpAddr,
    /// The proxy holds a mesh certificate of its own (`KITE_IDENTITY`), so
    /// it speaks mutual TLS to other sidecars and accepts it. For Envoy the
    /// control plane provides the certificate over SDS.
    pub identity: bool,
    /// Kite's own proxy (`KITE_PROXY`), which gets its certificate from the
    /// CA itself; any other proxy is treated as Envoy.
    pub kite: bool,
    /// The credential an Envoy presents (`KITE_TOKEN`) for its certificate
    /// over SDS.
    pub token: Option<String>,
}

// === impl Proxy ===

impl Proxy {
    pub fn from_node(node: &Node) -> Result<Self, String> {
        let parts: Vec<&str> = node.id.split('~').collect();
        let [kind, ip, pod, _domain] = parts.as_slice() else {
            return Err(format!(
                "node id {:?} is not <sidecar|router>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local",
                node.id
            ));
        };
        let kind = match *kind {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => return Err(format!("node type {other:?} is neither sidecar nor router")),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("node id {:?}: {ip:?} is not an IP address", node.id))?;
        let (workload, namespace) = pod
            .split_once('.')
            .ok_or_else(|| format!("node id {:?}: {pod:?} is not <pod>.<namespace>", node.id))?;
        let meta = |key: &str| -> Option<&PbKind> {
            node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()
        };
        let text = |key: &str| match meta(key) {
            Some(PbKind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let labels: Labels = match meta("LABELS") {
            Some(PbKind::StructValue(s)) => s
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(PbKind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
            _ => Labels::new(),
        };
        let app_ip = match text("KITE_APP_IP") {
            Some(s) => s
                .parse()
                .map_err(|_| format!("node metadata KITE_APP_IP {s:?} is not an IP address"))?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let identity = match meta("KITE_IDENTITY") {
            Some(PbKind::StringValue(s)) => s == "true",
            Some(PbKind::BoolValue(b)) => *b,
            _ => false,
        };
        let kite = matches!(meta("KITE_PROXY"), Some(PbKind::StringValue(s)) if s == "true");
        Ok(Self {
            token: text("KITE_TOKEN"),
            identity,
            kite,
            id: node.id.clone(),
            kind,
            ip,
            workload: workload.to_owned(),
            namespace: text("NAMESPACE").unwrap_or_else(|| namespace.to_owned()),
            labels,
            service_account: text("SERVICE_ACCOUNT").unwrap_or_else(|| "default".to_owned()),
            app_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn string(s: &str) -> Value {
        Value {
            kind: Some(PbKind::StringValue(s.to_owned())),
        }
    }

    #[test]
    fn parses_istio_node() {
        let node = Node {
            id: "sidecar~127.10.0.4~reviews-v2-abc.default~default.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [
                    (
                        "LABELS".to_owned(),
                        Value {
                            kind: Some(PbKind::StructValue(Struct {
                                fields: [("app".to_owned(), string("reviews"))].into(),
                            })),
                        },
                    ),
                    ("SERVICE_ACCOUNT".to_owned(), string("bookinfo-reviews")),
                    ("KITE_APP_IP".to_owned(), string("127.20.0.4")),
                ]
                .into(),
            }),
            ..Default::default()
        };
        let p = Proxy::from_node(&node).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.ip.to_string(), "127.10.0.4");
        assert_eq!(
            (p.workload.as_str(), p.namespace.as_str()),
            ("reviews-v2-abc", "default")
        );
        assert_eq!(p.labels.get("app").map(String::as_str), Some("reviews"));
        assert_eq!(p.service_account, "bookinfo-reviews");
        assert_eq!(p.app_ip.to_string(), "127.20.0.4");
    }

    #[test]
    fn rejects_bad_ids() {
        for id in [
            "",
            "sidecar~1.2.3.4~x",
            "proxy~1.2.3.4~a.b~c",
            "sidecar~nope~a.b~c",
            "sidecar~1.2.3.4~nodot~c",
        ] {
            let node = Node {
                id: id.into(),
                ..Default::default()
            };
            assert!(Proxy::from_node(&node).is_err(), "{id}");
        }
    }
}
