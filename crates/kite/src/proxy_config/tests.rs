#![allow(clippy::unwrap_used)]

use super::routes::{domains, envoy_route, kite_route};
#[test]
fn rfc3339_dates() {
    assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(super::rfc3339(1_795_847_338), "2026-11-28T06:28:58Z");
}

use super::*;

fn proxy(node: &str) -> Proxy {
    Proxy::from_node_id(node).unwrap()
}

#[test]
fn node_ids() {
    let p = proxy("sidecar~127.10.0.7~productpage-v1-xyz.default~default.svc.cluster.local");
    assert_eq!(p.ip, "127.10.0.7".parse::<IpAddr>().unwrap());
    assert_eq!(p.pod, "productpage-v1-xyz");
    assert_eq!(p.namespace, "default");
    assert!(Proxy::from_node_id("garbage").is_none());
}

#[test]
fn picking_workloads() {
    let all = vec![
        proxy("sidecar~127.0.0.2~reviews-v1-a.default~default.svc.cluster.local"),
        proxy("sidecar~127.0.0.3~reviews-v1-a.test~test.svc.cluster.local"),
        proxy(
            "router~127.0.0.4~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
        ),
    ];
    let cp = "http://cp";
    assert_eq!(
        pick(&all, "reviews-v1-a.test", None, cp)
            .unwrap()
            .ip
            .to_string(),
        "127.0.0.3"
    );
    assert_eq!(
        pick(&all, "reviews-v1-a", Some("default"), cp)
            .unwrap()
            .ip
            .to_string(),
        "127.0.0.2"
    );
    assert_eq!(
        pick(&all, "istio-ingressgateway-0", None, cp).unwrap().pod,
        "istio-ingressgateway-0"
    );
    assert_eq!(pick(&all, &all[1].node, None, cp).unwrap(), all[1]);
    let ambiguous = pick(&all, "reviews-v1-a", None, cp)
        .unwrap_err()
        .to_string();
    assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
    let unknown = pick(&all, "nope", None, cp).unwrap_err().to_string();
    assert!(unknown.contains("reviews-v1-a.default"), "{unknown}");
    assert!(
        unknown.contains("istio-ingressgateway-0.istio-system"),
        "{unknown}"
    );
    let none = pick(&[], "nope", None, cp).unwrap_err().to_string();
    assert!(none.contains("no proxy is connected"), "{none}");
}

#[test]
fn cluster_names() {
    assert_eq!(
        istio_cluster("outbound|9080|v1|reviews.default.svc.cluster.local"),
        (
            "reviews.default.svc.cluster.local".into(),
            "9080".into(),
            "v1".into(),
            "outbound".into()
        )
    );
    assert_eq!(
        istio_cluster("inbound|9080||"),
        ("-".into(), "9080".into(), "-".into(), "inbound".into())
    );
    assert_eq!(istio_cluster("xds-grpc").0, "xds-grpc");
    assert_eq!(upper_snake("LeastRequest"), "LEAST_REQUEST");
    assert_eq!(upper_snake("ROUND_ROBIN"), "ROUND_ROBIN");
}

#[test]
fn kite_routes() {
    let r = json!({"action": {"clusters": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}, "fault": null,
        "headers": ["end-userSome(Exact(\"jason\"))", "x-presentNone"], "match": "Prefix(\"/\")", "name": ""});
    assert_eq!(
        kite_route(&r),
        (
            "/* end-user=jason x-present".into(),
            "a (50%), b (50%)".into()
        )
    );
    let r = json!({"action": {"direct_response": 502}, "fault": null, "headers": [],
        "match": "Regex(Regex(\"^(?:/api/v1/products.*)$\"))", "name": "x"});
    assert_eq!(
        kite_route(&r),
        (
            "regex /api/v1/products.*".into(),
            "direct response 502".into()
        )
    );
    let r = json!({"action": {"clusters": [{"name": "a", "weight": 1}]}, "fault": "Fault {..}",
        "headers": [], "match": "Exact(\"/login\")"});
    assert_eq!(kite_route(&r), ("/login".into(), "a [fault]".into()));
}

#[test]
fn envoy_routes() {
    let r = json!({"match": {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
        "route": {"cluster": "outbound|9080|v2|reviews.default.svc.cluster.local"}});
    assert_eq!(
        envoy_route(&r),
        (
            "/* end-user=jason".into(),
            "outbound|9080|v2|reviews.default.svc.cluster.local".into()
        )
    );
    let r = json!({"match": {"path": "/x"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}});
    assert_eq!(envoy_route(&r), ("/x".into(), "a (80%), b (20%)".into()));
}

#[test]
fn domain_lists() {
    let d = json!([
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc:9080",
        "reviews.default:9080",
        "reviews:9080"
    ]);
    assert_eq!(
        domains(d.as_array().unwrap()),
        "reviews:9080, reviews.default:9080, reviews.default.svc:9080 +1 more"
    );
    assert_eq!(domains(json!(["*"]).as_array().unwrap()), "*");
}

#[test]
fn envoy_dump_sections() {
    let dump = json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
            {"name": "virtualOutbound", "active_state": {"listener": {"name": "virtualOutbound",
                "address": {"socket_address": {"address": "127.0.0.9", "port_value": 15001}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"rds": {"route_config_name": "http_proxy"}}}]}]}}},
            {"name": "tcp", "active_state": {"listener": {"name": "tcp",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 3306}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {"cluster": "outbound|3306||mysql.default.svc.cluster.local"}}]}]}}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": [{"cluster": {"name": "xds-grpc", "type": "STATIC"}}],
            "dynamic_active_clusters": [{"cluster": {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "type": "EDS", "lb_policy": "LEAST_REQUEST"}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [
            {"route_config": {"name": "http_proxy", "virtual_hosts": []}}]}
    ]});
    let d = Dump::parse(&dump).unwrap();
    assert_eq!(d.format, Format::Envoy);
    assert_eq!(
        (d.listeners.len(), d.clusters.len(), d.routes.len()),
        (2, 2, 1)
    );
    let t = listeners_table(d.format, &d.listeners);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "ADDRESS     PORT    TYPE   DESTINATION");
    assert_eq!(
        lines[1],
        "0.0.0.0     3306    TCP    Cluster: outbound|3306||mysql.default.svc.cluster.local"
    );
    assert_eq!(lines[2], "127.0.0.9   15001   HTTP   Route: http_proxy");
    let t = clusters_table(d.format, &d.clusters);
    assert!(
        t.contains(
            "reviews.default.svc.cluster.local   9080   v1       outbound    EDS      LEAST_REQUEST"
        ),
        "{t}"
    );
    assert!(t.contains("xds-grpc"), "{t}");
    assert!(Dump::parse(&json!({"x": 1})).is_err());
}

#[test]
fn kite_clusters_text() {
    let body = "inbound|9080||::127.0.0.2:9080::health_flags::healthy\n\
                inbound|9080||::127.0.0.2:9080::weight::1\n\
                outbound|9080|v2|reviews.default.svc.cluster.local::[::1]:9080::health_flags::/failed_outlier_check\n\
                outbound|9080|v2|reviews.default.svc.cluster.local::[::1]:9080::rq_total::7\n\
                outbound|9080|v2|reviews.default.svc.cluster.local::observability_name::x\n";
    let e = Endpoints::parse(body.as_bytes());
    assert_eq!(e.rows.len(), 2);
    assert_eq!(e.rows[1].address, "[::1]:9080");
    assert!(!e.rows[1].outlier_ok);
    assert_eq!(e.rows[1].status, "HEALTHY");
    assert_eq!(e.raw[1]["rq_total"], 7);
    let t = endpoints_table(&e.rows);
    assert!(
        t.contains("127.0.0.2:9080   HEALTHY   OK              inbound|9080||"),
        "{t}"
    );
}

#[test]
fn envoy_clusters_json() {
    let body = json!({"cluster_statuses": [{"name": "c", "host_statuses": [
        {"address": {"socket_address": {"address": "127.0.0.5", "port_value": 9080}},
         "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": true}}]}]});
    let e = Endpoints::parse(body.to_string().as_bytes());
    assert_eq!(
        e.rows,
        vec![EndpointRow {
            address: "127.0.0.5:9080".into(),
            status: "HEALTHY".into(),
            outlier_ok: false,
            cluster: "c".into()
        }]
    );
}
