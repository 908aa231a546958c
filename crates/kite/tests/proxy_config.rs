//! `kite proxy-config` against a live mesh: the same tables from Kite's own
//! proxy and from Envoy, found through the control plane by pod name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Mesh, Sidecar, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_of_kite_proxy() {
    scenario("pc-kite", Sidecar::Kite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_config_of_envoy() {
    scenario("pc-envoy", Sidecar::Envoy).await;
}

/// The whitespace-separated cells of each line.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

async fn scenario(name: &str, sidecar: Sidecar) {
    let mut mesh = Mesh::start(name, sidecar).await;
    mesh.apply(&[
        &sample("bookinfo/platform/kube/bookinfo.yaml"),
        &sample("bookinfo/networking/destination-rule-all.yaml"),
    ]);
    mesh.add_pod("ratings", "v1", "bookinfo-ratings").await;
    mesh.add_pod("reviews", "v2", "bookinfo-reviews").await;
    mesh.add_pod("productpage", "v1", "bookinfo-productpage")
        .await;
    mesh.synced(3).await;
    let productpage = mesh.pods[2].name.clone();
    let reviews_ip = mesh.pods[1].pod_ip.to_string();

    // clusters: Istio's names taken apart, outbound subsets and inbound.
    let clusters = mesh.kite_out(&["proxy-config", "clusters", &productpage]);
    let table = rows(&clusters);
    assert_eq!(
        table[0],
        [
            "SERVICE",
            "FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "LB"
        ],
        "{clusters}"
    );
    for subset in ["-", "v1", "v2", "v3"] {
        assert!(
            table.iter().any(|r| r[..4]
                == [
                    "reviews.default.svc.cluster.local",
                    "9080",
                    subset,
                    "outbound"
                ]
                && r[4] == "EDS"),
            "no outbound reviews subset {subset}:\n{clusters}"
        );
    }
    assert!(
        table.iter().any(|r| r[1] == "9080" && r[3] == "inbound"),
        "no inbound 9080:\n{clusters}"
    );

    // routes: the outbound route config with reviews' short host. Kite's
    // proxy fetches a virtual host (VHDS) when its app first calls the
    // host: a page view has productpage call reviews.
    let page = support::get(
        std::net::SocketAddr::new(mesh.pods[2].pod_ip, 9080),
        "/productpage",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    let routes = mesh.kite_out(&["proxy-config", "routes", &productpage]);
    assert!(routes.starts_with("NAME "), "{routes}");
    assert!(
        routes.lines().any(|l| l.starts_with("http_proxy ")
            && l.contains("reviews:9080")
            && l.contains("outbound|9080||reviews.default.svc.cluster.local")),
        "{routes}"
    );

    // listeners: the outbound proxy port and the inbound service port.
    let listeners = mesh.kite_out(&["proxy-config", "listeners", &productpage]);
    let table = rows(&listeners);
    assert_eq!(table[0], ["ADDRESS", "PORT", "TYPE", "DESTINATION"]);
    for (port, route) in [("15001", "http_proxy"), ("9080", "inbound|9080||")] {
        assert!(
            table
                .iter()
                .any(|r| r[1] == port && r[2] == "HTTP" && r[4] == route),
            "no listener on {port}:\n{listeners}"
        );
    }

    // endpoints: reviews v2's pod, healthy, in its subset's cluster.
    let endpoints = mesh.kite_out(&["proxy-config", "endpoints", &productpage]);
    let table = rows(&endpoints);
    assert_eq!(
        table[0],
        ["ENDPOINT", "STATUS", "OUTLIER", "CHECK", "CLUSTER"]
    );
    assert!(
        table.iter().any(|r| r
            == &[
                &format!("{reviews_ip}:9080") as &str,
                "HEALTHY",
                "OK",
                "outbound|9080|v2|reviews.default.svc.cluster.local"
            ]),
        "{endpoints}"
    );

    // name.namespace and -o json work too.
    let json = mesh.kite_out(&[
        "proxy-config",
        "clusters",
        &format!("{productpage}.default"),
        "-o",
        "json",
    ]);
    let clusters: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        clusters
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "outbound|9080|v3|reviews.default.svc.cluster.local"),
        "{json}"
    );

    // An unknown workload names the ones that exist.
    let err = mesh.kite_fails(&["proxy-config", "routes", "nope-v1-pod9"]);
    assert!(err.contains("nope-v1-pod9"), "{err}");
    for pod in &mesh.pods {
        assert!(err.contains(&pod.name), "{err}");
    }
}
