//! Per-proxy translation of config and registry into Envoy xDS resources,
//! with Istio's resource names (`outbound|9080|v1|reviews.default.svc.cluster.local`,
//! `inbound|9080||`), so that Envoy, Kite's proxy and Istio's tooling read
//! them alike.

mod clusters;
mod ingress_tls;
mod listeners;
mod locality;
mod mtls;

pub(crate) use mtls::{SDS_CERT, SDS_ROOT};
mod routes;
mod telemetry;

use std::time::Duration as StdDuration;

use envoy_types::pb::{
    envoy::config::core::v3::{
        Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
        config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
    },
    google::protobuf::{Any, Duration},
};
use kite_config::{Labels, Object, Spec, networking::Gateway};
use kite_xds::{Snapshot, type_url};
use prost::{Message, Name};
use serde_json::{Value, json};

use crate::{
    proxy::{Proxy, ProxyKind},
    registry::{Registry, contains},
    store::ConfigSnapshot,
};

/// Everything translation reads, resolved once per proxy.
pub(crate) struct Ctx<'a> {
    pub config: &'a ConfigSnapshot,
    pub registry: &'a Registry,
    pub proxy: &'a Proxy,
    /// The proxy's labels: its registered workload's, else its node's.
    pub labels: Labels,
    /// Of the mesh's SPIFFE identities.
    pub trust_domain: &'a str,
}

/// Builds the complete resource set for one proxy.
pub fn snapshot(
    config: &ConfigSnapshot,
    registry: &Registry,
    proxy: &Proxy,
    trust_domain: &str,
) -> Snapshot {
    let labels = registry
        .workload(&proxy.namespace, &proxy.workload)
        .map(|w| w.labels.clone())
        .unwrap_or_else(|| proxy.labels.clone());
    let cx = Ctx {
        config,
        registry,
        proxy,
        labels,
        trust_domain,
    };
    let mut snapshot = Snapshot::default();
    clusters::outbound(&cx, &mut snapshot);
    match proxy.kind {
        ProxyKind::Sidecar => {
            listeners::sidecar(&cx, &mut snapshot);
        }
        ProxyKind::Router => listeners::gateway(&cx, &mut snapshot),
    }
    if telemetry::access_log(&cx) {
        for (name, mut l) in snapshot
            .decode::<envoy_types::pb::envoy::config::listener::v3::Listener>(type_url::LISTENER)
        {
            telemetry::log_access(&mut l);
            snapshot.insert(type_url::LISTENER, name, &l);
        }
    }
    snapshot
}

/// A readable dump of what a proxy was sent (protobuf debug text per
/// resource; Envoy's own `/config_dump` gives the JSON form).
pub fn dump(proxy: &Proxy, snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for url in type_url::PUSH_ORDER {
        let Some(resources) = snapshot.get(url) else {
            continue;
        };
        let decoded: serde_json::Map<String, Value> = resources
            .resources
            .iter()
            .map(|(name, any)| (name.clone(), Value::String(debug_text(url, any))))
            .collect();
        types.insert(type_url::short(url).to_owned(), Value::Object(decoded));
    }
    json!({
        "proxy": {
            "id": proxy.id,
            "kind": format!("{:?}", proxy.kind),
            "ip": proxy.ip.to_string(),
            "workload": proxy.workload,
            "namespace": proxy.namespace,
            "serviceAccount": proxy.service_account,
        },
        "resources": types,
    })
}

fn debug_text(url: &str, any: &Any) -> String {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    fn decode<M: Message + Default + std::fmt::Debug>(any: &Any) -> String {
        M::decode(any.value.as_slice())
            .map(|m| format!("{m:?}"))
            .unwrap_or_else(|e| format!("<undecodable: {e}>"))
    }
    match url {
        type_url::CLUSTER => decode::<Cluster>(any),
        type_url::ENDPOINT => decode::<ClusterLoadAssignment>(any),
        type_url::LISTENER => decode::<Listener>(any),
        type_url::ROUTE => decode::<RouteConfiguration>(any),
        _ => format!("<{} bytes>", any.value.len()),
    }
}

// === impl Ctx ===

impl Ctx<'_> {
    /// Objects of one kind visible to this proxy. Every namespace is
    /// visible until Sidecar scoping and exportTo are honoured.
    pub(crate) fn objects<'b, T: 'b>(
        &'b self,
        pick: impl Fn(&'b Spec) -> Option<&'b T> + 'b,
    ) -> impl Iterator<Item = (&'b Object, &'b T)> + 'b {
        self.config
            .objects()
            .filter_map(move |o| pick(&o.spec).map(|s| (o, s)))
    }

    /// Gateways whose selector matches this proxy.
    pub(crate) fn gateways(&self) -> Vec<(&Object, &Gateway)> {
        self.objects(|s| match s {
            Spec::Gateway(g) => Some(g),
            _ => None,
        })
        .filter(|(_, g)| !g.selector.is_empty() && contains(&self.labels, &g.selector))
        .collect()
    }
}

pub(crate) fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

pub(crate) fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn socket_address(ip: impl ToString, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// Resources come over the same ADS stream.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// Istio's cluster names.
pub(crate) fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

pub(crate) fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

#[cfg(test)]
mod tests;
