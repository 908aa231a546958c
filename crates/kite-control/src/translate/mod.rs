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

use std::{collections::HashMap, sync::Arc, time::Duration as StdDuration};

use envoy_types::pb::{
    envoy::config::core::v3::{
        Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
        config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
    },
    google::protobuf::{Any, Duration},
};
use kite_config::{Labels, Object, Spec, networking::Gateway};
use kite_xds::{Snapshot, TypeResources, type_url};
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
    pub labels: Arc<Labels>,
    /// Of the mesh's SPIFFE identities.
    pub trust_domain: &'a str,
}

/// Outbound resources shared by the proxies that see the mesh alike. At
/// scale the outbound clusters, their endpoints and the outbound route
/// table are nearly all of a proxy's config, and they depend on little of
/// the proxy: translated once per view instead of once per proxy, and held
/// once in memory.
#[derive(Default)]
pub struct Views {
    clusters: HashMap<ClusterView, ClusterParts>,
    routes: HashMap<RouteView, RouteParts>,
    /// The first VHDS table translated whole, whose buffer the others
    /// share where their virtual hosts encode alike.
    vhds_like: Option<Arc<kite_xds::VirtualHosts>>,
    /// What of the previous revision's parts still holds.
    reuse: Option<Reuse>,
}

/// A change of workloads only (a pod added, removed or relabelled) leaves
/// route tables as they were and changes the clusters and endpoints of the
/// services selecting those workloads only; a change of VirtualServices
/// only leaves clusters and endpoints as they were and changes the virtual
/// hosts of the hosts they name only. A part of the previous revision is
/// carried over with just those services translated again.
#[derive(Debug, Default)]
pub struct Reuse {
    /// Host names of the services whose workloads changed.
    pub services: std::collections::HashSet<String>,
    /// Host names of the services whose VirtualService changed.
    pub hosts: std::collections::HashSet<String>,
}

/// A route view's outbound table, and for Kite's proxies the virtual hosts
/// it serves by VHDS.
#[derive(Clone)]
struct RouteParts {
    routes: Arc<TypeResources>,
    vhosts: Option<Arc<kite_xds::VirtualHosts>>,
}

#[derive(Clone)]
struct ClusterParts {
    clusters: Arc<TypeResources>,
    endpoints: Arc<TypeResources>,
}

/// Everything of the proxy that outbound clusters and endpoints depend on.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClusterView {
    /// Auto mTLS.
    identity: bool,
    /// The ALPN offered upstream.
    kite: bool,
    /// Locality load balancing.
    locality: String,
    /// DestinationRules are looked up in the proxy's namespace first; where
    /// it has none, the namespace makes no difference.
    dr_namespace: Option<String>,
}

/// Everything of the proxy that its outbound route table depends on.
#[derive(Clone, PartialEq, Eq, Hash)]
struct RouteView {
    /// Short host names, `sourceNamespace` and DestinationRule lookups.
    namespace: String,
    /// Whether each VirtualService `sourceLabels` selector in the store,
    /// in store order, selects the proxy.
    source_labels: Vec<bool>,
    allow_any: bool,
    /// Kite's proxy, which takes its virtual hosts by VHDS.
    vhds: bool,
}

impl Views {
    /// Views for a revision that differs from the one `previous` (passed
    /// to [`snapshot_in`]) was made for as `reuse` says.
    pub fn reusing(reuse: Option<Reuse>) -> Self {
        Self {
            reuse,
            ..Self::default()
        }
    }

    /// Number of distinct views translated.
    pub fn len(&self) -> usize {
        self.clusters.len() + self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds the complete resource set for one proxy.
pub fn snapshot(
    config: &ConfigSnapshot,
    registry: &Registry,
    proxy: &Proxy,
    trust_domain: &str,
) -> Snapshot {
    snapshot_in(
        config,
        registry,
        proxy,
        trust_domain,
        &mut Views::default(),
        None,
    )
}

/// Builds the complete resource set for one proxy, taking the outbound
/// parts from `views` (translating those missing into it). A part that
/// `previous` (the views of an earlier config) holds for the same view is
/// reused when unchanged, and otherwise recorded as its successor, so that
/// streams can push only the resources that changed.
pub fn snapshot_in(
    config: &ConfigSnapshot,
    registry: &Registry,
    proxy: &Proxy,
    trust_domain: &str,
    views: &mut Views,
    previous: Option<&Views>,
) -> Snapshot {
    let labels = registry
        .workload(&proxy.namespace, &proxy.workload)
        .map(|w| w.labels.clone())
        .unwrap_or_else(|| Arc::new(proxy.labels.clone()));
    let cx = Ctx {
        config,
        registry,
        proxy,
        labels,
        trust_domain,
    };
    let mut snapshot = Snapshot::default();
    let key = cluster_view(&cx);
    let parts = match views.clusters.get(&key) {
        Some(parts) => parts.clone(),
        None => {
            let before = previous.and_then(|p| p.clusters.get(&key));
            let parts = match (before, &views.reuse) {
                // No workload changed: the parts are as they were.
                (Some(before), Some(reuse)) if reuse.services.is_empty() => before.clone(),
                _ => cluster_parts(&cx, before, views.reuse.as_ref()),
            };
            views.clusters.insert(key, parts.clone());
            parts
        }
    };
    snapshot.share(type_url::CLUSTER, parts.clusters);
    snapshot.share(type_url::ENDPOINT, parts.endpoints);
    match proxy.kind {
        ProxyKind::Sidecar => {
            let key = route_view(&cx);
            let before = previous.and_then(|p| p.routes.get(&key));
            let parts = match views.routes.get(&key) {
                Some(parts) => parts.clone(),
                None => {
                    let carried = match (&views.reuse, before) {
                        (Some(reuse), Some(before)) if reuse.hosts.is_empty() => {
                            Some(before.clone())
                        }
                        (Some(reuse), Some(before)) => before
                            .vhosts
                            .as_ref()
                            .and_then(|v| routes::sidecar_outbound_patch(&cx, v, &reuse.hosts))
                            .map(|vhosts| RouteParts {
                                routes: before.routes.clone(),
                                vhosts: Some(vhosts),
                            }),
                        _ => None,
                    };
                    let parts = carried.unwrap_or_else(|| {
                        let mut routes = TypeResources::default();
                        let mut vhds = key
                            .vhds
                            .then(|| listeners::outbound_vhds(views.vhds_like.clone()));
                        listeners::sidecar_outbound_routes(&cx, &mut routes, vhds.as_mut());
                        let vhosts = vhds.map(kite_xds::VirtualHostsBuilder::finish);
                        if views.vhds_like.is_none() {
                            views.vhds_like.clone_from(&vhosts);
                        }
                        RouteParts {
                            routes: routes.succeed(before.map(|b| &b.routes)),
                            vhosts,
                        }
                    });
                    views.routes.insert(key, parts.clone());
                    parts
                }
            };
            snapshot.share(type_url::ROUTE, parts.routes);
            if let Some(vhosts) = parts.vhosts {
                snapshot
                    .vhosts
                    .insert(vhosts.route_config().to_owned(), vhosts);
            }
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

/// Translates a cluster view's parts, again only for the services `reuse`
/// names if `before` has the rest.
fn cluster_parts(
    cx: &Ctx<'_>,
    before: Option<&ClusterParts>,
    reuse: Option<&Reuse>,
) -> ClusterParts {
    let (mut clusters, mut endpoints) = (TypeResources::default(), TypeResources::default());
    match (before, reuse) {
        (Some(before), Some(reuse)) => {
            // Resource names end in `|<host>`.
            let kept = |name: &str| {
                !reuse
                    .services
                    .contains(name.rsplit('|').next().unwrap_or(name))
            };
            for (part, into) in [
                (&before.clusters, &mut clusters),
                (&before.endpoints, &mut endpoints),
            ] {
                for (name, encoded) in part.iter_encoded().filter(|(n, _)| kept(n)) {
                    into.insert_encoded(name.to_owned(), encoded);
                }
            }
            clusters::outbound(cx, &mut clusters, &mut endpoints, Some(&reuse.services));
        }
        _ => clusters::outbound(cx, &mut clusters, &mut endpoints, None),
    }
    ClusterParts {
        clusters: clusters.succeed(before.map(|b| &b.clusters)),
        endpoints: endpoints.succeed(before.map(|b| &b.endpoints)),
    }
}

fn cluster_view(cx: &Ctx<'_>) -> ClusterView {
    let ns = cx.proxy.namespace.as_str();
    let has_dr = cx
        .objects(|s| match s {
            Spec::DestinationRule(dr) => Some(dr),
            _ => None,
        })
        .any(|(o, _)| o.meta.namespace == ns);
    ClusterView {
        identity: cx.proxy.identity,
        kite: cx.proxy.kite,
        locality: crate::registry::locality_of(&cx.labels),
        dr_namespace: has_dr.then(|| ns.to_owned()),
    }
}

fn route_view(cx: &Ctx<'_>) -> RouteView {
    let mut source_labels = Vec::new();
    for (_, vs) in cx.objects(|s| match s {
        Spec::VirtualService(vs) => Some(vs),
        _ => None,
    }) {
        let selectors = vs
            .http
            .iter()
            .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels))
            .chain(
                vs.tcp
                    .iter()
                    .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels)),
            )
            .chain(
                vs.tls
                    .iter()
                    .flat_map(|r| r.r#match.iter().map(|m| &m.source_labels)),
            );
        source_labels.extend(
            selectors
                .filter(|sel| !sel.is_empty())
                .map(|sel| contains(&cx.labels, sel)),
        );
    }
    RouteView {
        namespace: cx.proxy.namespace.clone(),
        source_labels,
        allow_any: listeners::allows_any(cx),
        vhds: cx.proxy.kite,
    }
}

/// A readable dump of what a proxy was sent (protobuf debug text per
/// resource; Envoy's own `/config_dump` gives the JSON form).
pub fn dump(proxy: &Proxy, snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for url in type_url::PUSH_ORDER {
        let resources = snapshot.resources(url);
        if resources.is_empty() {
            continue;
        }
        let decoded: serde_json::Map<String, Value> = resources
            .into_iter()
            .map(|(name, any)| (name.to_owned(), Value::String(debug_text(url, &any))))
            .collect();
        types.insert(type_url::short(url).to_owned(), Value::Object(decoded));
    }
    let vhds: serde_json::Map<String, Value> = snapshot
        .vhosts
        .values()
        .flat_map(|v| {
            v.decode_all().into_iter().map(|vh| {
                (
                    format!("{}/{}", v.route_config(), vh.name),
                    Value::String(format!("{vh:?}")),
                )
            })
        })
        .collect();
    if !vhds.is_empty() {
        types.insert(
            type_url::short(type_url::VIRTUAL_HOST).to_owned(),
            Value::Object(vhds),
        );
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
    /// Mesh configuration objects of one kind visible to this proxy (not
    /// Services or workloads: the registry has those). Every namespace is
    /// visible until Sidecar scoping and exportTo are honoured.
    pub(crate) fn objects<'b, T: 'b>(
        &'b self,
        pick: impl Fn(&'b Spec) -> Option<&'b T> + 'b,
    ) -> impl Iterator<Item = (&'b Object, &'b T)> + 'b {
        self.config
            .mesh_config()
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
pub(crate) mod tests;
