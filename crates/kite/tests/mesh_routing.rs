//! Kite's control plane driving BookInfo's sidecars and ingress gateway, once
//! with real Envoys (the conformance oracle) and once with Kite's own proxy:
//! every push ACKed, and Istio's sample routing files taking effect as the
//! Istio docs describe, applied and deleted live. Both must agree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use support::{
    Mesh, Sidecar,
    bookinfo::{login, page, version_of, versions},
    get, sample, send,
};

const PROXIES: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_follows_kite_config() {
    scenario(Sidecar::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_proxy_follows_kite_config() {
    scenario(Sidecar::Kite).await;
}

async fn scenario(sidecar: Sidecar) {
    let mut mesh = Mesh::start(&format!("{sidecar:?}-xds").to_lowercase(), sidecar).await;
    mesh.apply(&[&sample("bookinfo/platform/kube/bookinfo.yaml")]);
    for (app, version, sa) in [
        ("details", "v1", "bookinfo-details"),
        ("ratings", "v1", "bookinfo-ratings"),
        ("reviews", "v1", "bookinfo-reviews"),
        ("reviews", "v2", "bookinfo-reviews"),
        ("reviews", "v3", "bookinfo-reviews"),
        ("productpage", "v1", "bookinfo-productpage"),
    ] {
        mesh.add_pod(app, version, sa).await;
    }
    let gw_ip = mesh.add_gateway();
    mesh.apply(&[
        &sample("bookinfo/networking/bookinfo-gateway.yaml"),
        &sample("bookinfo/networking/destination-rule-all.yaml"),
    ]);
    let gw = SocketAddr::new(gw_ip, 8080);
    mesh.wait_tcp(gw).await;
    mesh.synced(PROXIES).await;

    // Baseline: the page through the gateway, every reviews version in turn.
    let text = page(gw, None).await;
    assert!(
        text.contains("Book Details") && text.contains("Book Reviews"),
        "{text}"
    );
    let seen = versions(gw, None, 30).await;
    assert!(
        seen.iter().all(|n| *n > 0),
        "all of v1, v2, v3 expected: {seen:?}"
    );
    // The gateway VirtualService exposes only BookInfo's paths.
    assert_eq!(get(gw, "/health", &[]).await.unwrap().status, 404);

    // The debug API and `kite proxy-status` list every connected Envoy with
    // the versions it ACKed.
    let status = mesh.kite_out(&["proxy-status"]);
    let rows: Vec<Vec<&str>> = status
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "CDS", "EDS", "LDS", "RDS", "VHDS"]);
    let synced = |cell: usize| {
        rows[1..]
            .iter()
            .filter(|r| r.get(cell) == Some(&"SYNCED"))
            .count()
    };
    for cell in [1, 3, 5, 7] {
        assert_eq!(synced(cell), PROXIES, "{status}");
    }
    // Kite's sidecars that routed requests hold virtual hosts from VHDS;
    // Envoy takes whole route tables, and gateways their own.
    let vhds = synced(9);
    match sidecar {
        Sidecar::Kite => assert!(vhds > 0, "{status}"),
        Sidecar::Envoy => assert_eq!(vhds, 0, "{status}"),
    }
    assert!(
        status.contains("router~") && status.contains("sidecar~"),
        "{status}"
    );

    // An invalid object is refused, by `kite apply` and by the API itself,
    // and what is being served stays as it was.
    let broken = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/typo-field.yaml");
    let refused = mesh.kite_fails(&["apply", "-f", broken]);
    assert!(
        refused.contains("spec.subsets[0].lables: unknown field `lables`"),
        "{refused}"
    );
    let before = mesh.revision().await;
    let r = send(
        mesh.api,
        "POST",
        "/apis/apply?file=typo-field.yaml",
        &[],
        Bytes::from(std::fs::read_to_string(broken).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("unknown field `lables`"), "{}", r.text());
    assert_eq!(mesh.revision().await, before);
    let listed = mesh.kite_out(&["get", "destinationrules"]);
    assert!(
        listed.contains("DestinationRule") && listed.contains("reviews"),
        "{listed}"
    );
    assert!(page(gw, None).await.contains("Book Reviews"));

    // virtual-service-all-v1: everyone gets v1.
    mesh.apply(&[&sample("bookinfo/networking/virtual-service-all-v1.yaml")]);
    mesh.synced(PROXIES).await;
    assert_eq!(versions(gw, None, 20).await, [20, 0, 0]);

    // virtual-service-reviews-test-v2: jason gets v2, others v1.
    mesh.apply(&[&sample(
        "bookinfo/networking/virtual-service-reviews-test-v2.yaml",
    )]);
    mesh.synced(PROXIES).await;
    let jason = login(gw, "jason").await;
    let text = page(gw, Some(&jason)).await;
    assert!(
        text.contains("jason") && text.contains("Sign out"),
        "{text}"
    );
    assert_eq!(versions(gw, Some(&jason), 10).await, [0, 10, 0]);
    assert_eq!(versions(gw, None, 10).await, [10, 0, 0]);
    let bob = login(gw, "bob").await;
    assert_eq!(versions(gw, Some(&bob), 5).await, [5, 0, 0]);

    // virtual-service-ratings-test-abort: jason's ratings calls fail with 500.
    mesh.apply(&[&sample(
        "bookinfo/networking/virtual-service-ratings-test-abort.yaml",
    )]);
    mesh.synced(PROXIES).await;
    let text = page(gw, Some(&jason)).await;
    assert_eq!(
        version_of(&text),
        "v1",
        "reviews v2 renders no stars when ratings fail"
    );
    assert!(
        text.contains("Ratings service is currently unavailable"),
        "{text}"
    );
    assert!(
        !page(gw, None)
            .await
            .contains("Ratings service is currently unavailable")
    );
    mesh.delete(&[&sample(
        "bookinfo/networking/virtual-service-ratings-test-abort.yaml",
    )]);

    // virtual-service-reviews-50-v3: about half red, the rest v1.
    mesh.apply(&[&sample(
        "bookinfo/networking/virtual-service-reviews-50-v3.yaml",
    )]);
    mesh.synced(PROXIES).await;
    let seen = versions(gw, None, 60).await;
    assert_eq!(seen[1], 0, "{seen:?}");
    assert!(
        (15..=45).contains(&seen[2]),
        "≈50 % v3 expected (binomial, n=60): {seen:?}"
    );

    // A rewrite and a timeout of our own, through productpage's sidecar as
    // the app would send them.
    let pp = mesh.pods.iter().find(|p| p.app == "productpage").unwrap();
    let proxy = SocketAddr::new(pp.pod_ip, 15001);
    let extra = mesh.dir.join("rewrite-timeout.yaml");
    std::fs::write(
        &extra,
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts: [ratings]
  http:
  - match:
    - uri:
        prefix: /v2/ratings
    rewrite:
      uri: /ratings
    route:
    - destination: {host: ratings, subset: v1}
  - route:
    - destination: {host: ratings, subset: v1}
    fault:
      delay:
        fixedDelay: 2s
        percentage: {value: 100}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
    timeout: 0.5s
",
    )
    .unwrap();
    mesh.apply(&[extra.to_str().unwrap()]);
    mesh.synced(PROXIES).await;
    let r = get(proxy, "http://ratings:9080/v2/ratings/0", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#
    );
    let r = get(proxy, "http://reviews:9080/reviews/0", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    let text = page(gw, None).await;
    assert!(text.contains("Error fetching product reviews"), "{text}");

    // Deleting the routing reverts to Istio's defaults: all versions again.
    mesh.delete(&[extra.to_str().unwrap()]);
    mesh.delete(&[
        &sample("bookinfo/networking/virtual-service-reviews-50-v3.yaml"),
        &sample("bookinfo/networking/virtual-service-all-v1.yaml"),
    ]);
    mesh.synced(PROXIES).await;
    let seen = versions(gw, None, 30).await;
    assert!(
        seen.iter().all(|n| *n > 0),
        "all versions after delete: {seen:?}"
    );
    mesh.synced(PROXIES).await;
}
