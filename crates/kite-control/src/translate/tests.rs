use envoy_types::pb::envoy::config::{
    cluster::v3::{Cluster, cluster::LbPolicy},
    listener::v3::Listener,
    route::v3::{RouteConfiguration, VirtualHost, route::Action, route_action::ClusterSpecifier},
};
use kite_config::Labels;
use kite_xds::type_url;

use super::snapshot;
use crate::{
    proxy::{Proxy, ProxyKind},
    registry::Registry,
    store::Store,
};

const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  selector: {app: productpage}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2-a}
spec: {address: 127.9.0.2, labels: {app: reviews, version: v2}, serviceAccount: bookinfo-reviews, locality: us-east/a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1-a}
spec: {address: 127.9.0.1, labels: {app: productpage, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    tls: {mode: SIMPLE, sni: reviews.example, caCertificates: /etc/ca.pem}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"#;

pub(crate) fn proxy() -> Proxy {
    Proxy {
        id: "sidecar~127.9.0.1~productpage-v1-a.default~default.svc.cluster.local".into(),
        kind: ProxyKind::Sidecar,
        ip: "127.9.0.1".parse().unwrap(),
        workload: "productpage-v1-a".into(),
        namespace: "default".into(),
        labels: Labels::new(),
        service_account: "default".into(),
        app_ip: "127.9.1.1".parse().unwrap(),
        identity: false,
        kite: true,
        token: None,
    }
}

fn built() -> kite_xds::Snapshot {
    built_with("")
}

fn built_with(extra: &str) -> kite_xds::Snapshot {
    built_for(extra, &proxy())
}

fn built_for(extra: &str, proxy: &Proxy) -> kite_xds::Snapshot {
    let store = Store::default();
    store.apply_yaml(&format!("{CONFIG}{extra}"));
    let config = store.current();
    snapshot(&config, &Registry::build(&config), proxy, "cluster.local")
}

/// The same sidecar as Envoy, which takes its route table whole.
fn envoy_proxy() -> Proxy {
    Proxy {
        kite: false,
        ..proxy()
    }
}

/// The outbound virtual host serving `host`, as Kite's proxy gets it by
/// VHDS, and as Envoy finds it in its route table; they must be the same.
fn outbound_vhost(host: &str) -> VirtualHost {
    use prost::Message as _;
    let (name, encoded) = built().vhosts["http_proxy"].resolve(host).unwrap();
    let by_vhds = VirtualHost::decode(encoded.as_ref()).unwrap();
    assert_eq!(name, format!("http_proxy/{}", by_vhds.name));
    let (_, rc): (String, RouteConfiguration) = built_for("", &envoy_proxy())
        .decode(type_url::ROUTE)
        .into_iter()
        .find(|(n, _)| n == "http_proxy")
        .unwrap();
    let inline = rc
        .virtual_hosts
        .into_iter()
        .find(|v| v.domains.iter().any(|d| d == host))
        .unwrap();
    assert_eq!(inline, by_vhds);
    by_vhds
}

#[test]
fn clusters_follow_istio_naming_and_policy() {
    let snap = built();
    let clusters: std::collections::BTreeMap<String, Cluster> =
        snap.decode(type_url::CLUSTER).into_iter().collect();
    let names: Vec<&str> = clusters.keys().map(String::as_str).collect();
    assert!(
        names.contains(&"outbound|9080||reviews.default.svc.cluster.local"),
        "{names:?}"
    );
    assert!(names.contains(&"outbound|9080|v1|reviews.default.svc.cluster.local"));
    assert!(
        names.contains(&"inbound|9080||"),
        "productpage serves 9080: {names:?}"
    );
    let v1 = &clusters["outbound|9080|v1|reviews.default.svc.cluster.local"];
    let v2 = &clusters["outbound|9080|v2|reviews.default.svc.cluster.local"];
    assert_eq!(v1.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(
        v2.lb_policy,
        LbPolicy::Random as i32,
        "subset policy overrides"
    );
    assert!(v1.transport_socket.is_some(), "SIMPLE TLS originates TLS");
    let product = &clusters["outbound|9080||productpage.default.svc.cluster.local"];
    assert!(product.transport_socket.is_none());
    // Endpoints per subset come from workload labels, with locality.
    let eps: std::collections::BTreeMap<
        String,
        envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment,
    > = snap.decode(type_url::ENDPOINT).into_iter().collect();
    let v2_eps = &eps["outbound|9080|v2|reviews.default.svc.cluster.local"];
    assert_eq!(v2_eps.endpoints.len(), 1);
    assert_eq!(
        v2_eps.endpoints[0].locality.as_ref().unwrap().region,
        "us-east"
    );
    assert!(
        eps["outbound|9080|v1|reviews.default.svc.cluster.local"]
            .endpoints
            .is_empty()
    );
}

#[test]
fn inbound_clusters_speak_http2_to_grpc_apps() {
    let snap = built_with(
        r#"---
apiVersion: v1
kind: Service
metadata: {name: productpage-grpc}
spec:
  selector: {app: productpage}
  ports: [{name: grpc, port: 7070}]
"#,
    );
    let clusters: std::collections::BTreeMap<String, Cluster> =
        snap.decode(type_url::CLUSTER).into_iter().collect();
    let options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let grpc = &clusters["inbound|7070||"];
    let decoded = <envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions as prost::Message>::decode(
        grpc.typed_extension_protocol_options[options].value.as_slice(),
    )
    .unwrap();
    assert!(
        format!("{decoded:?}").contains("Http2ProtocolOptions"),
        "{decoded:?}"
    );
    assert!(
        !clusters["inbound|9080||"]
            .typed_extension_protocol_options
            .contains_key(options),
        "an http port stays HTTP/1.1"
    );
}

#[test]
fn routes_follow_the_virtual_service() {
    let snap = built();
    let (_, rc): (String, RouteConfiguration) = snap
        .decode(type_url::ROUTE)
        .into_iter()
        .find(|(n, _)| n == "http_proxy")
        .unwrap();
    // Kite's proxy: only the unknown-host virtual host inline, the
    // services' by VHDS.
    let inline: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(inline, ["allow_any"]);
    assert!(rc.vhds.is_some());
    let vhost = outbound_vhost("reviews:9080");
    assert_eq!(vhost.name, "reviews.default.svc.cluster.local:9080");
    assert_eq!(vhost.routes.len(), 3, "two rules and the CONNECT tunnel");
    assert_eq!(vhost.routes[2].name, "connect");
    let header = &vhost.routes[0].r#match.as_ref().unwrap().headers[0];
    assert_eq!(header.name, "end-user");
    let Some(Action::Route(first)) = &vhost.routes[0].action else {
        panic!()
    };
    assert_eq!(
        first.cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into()
        ))
    );
    let Some(Action::Route(second)) = &vhost.routes[1].action else {
        panic!()
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &second.cluster_specifier else {
        panic!()
    };
    let weights: Vec<u32> = w
        .clusters
        .iter()
        .map(|c| c.weight.as_ref().unwrap().value)
        .collect();
    assert_eq!(weights, [90, 10]);
    // Istio's defaults: no timeout, two retries on connection-level failures.
    assert_eq!(second.timeout.as_ref().unwrap().seconds, 0);
    let retry = second.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries.as_ref().unwrap().value, 2);
    assert!(retry.retry_on.contains("connect-failure"));
    // Services without a VirtualService get the default route.
    let pp = outbound_vhost("productpage.default.svc.cluster.local:9080");
    assert_eq!(pp.routes[0].name, "default");
    let listeners: Vec<(String, Listener)> = snap.decode(type_url::LISTENER);
    let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["127.9.0.1_9080", "virtualOutbound"]);
}

/// The outbound route table is encoded field by field as its virtual
/// hosts are made; it must read back, and re-encode to the same bytes, as
/// prost would have written the whole message.
#[test]
fn the_outbound_route_table_encodes_as_prost_does() {
    use prost::Message as _;
    let snap = built_for("", &envoy_proxy());
    let routes = snap.resources(type_url::ROUTE);
    let encoded = &routes["http_proxy"].value;
    let table = RouteConfiguration::decode(encoded.as_slice()).unwrap();
    assert_eq!(&table.encode_to_vec(), encoded);
    let names: Vec<&str> = table
        .virtual_hosts
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        names.contains(&"reviews.default.svc.cluster.local:9080")
            && names.last() == Some(&"allow_any"),
        "{names:?}"
    );
    assert_eq!(table.validate_clusters.map(|v| v.value), Some(false));
}
