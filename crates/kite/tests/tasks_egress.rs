//! Istio's egress tasks (istio-api.md §3.10) on `kite up`, with Kite
//! sidecars and with Envoy sidecars. The "external" service is an httpbin
//! outside the mesh on this machine, reached by name through a DNS
//! ServiceEntry: ALLOW_ANY passes unknown hosts, REGISTRY_ONLY blocks them
//! with 502 until a ServiceEntry names the host, a VirtualService puts a
//! timeout on it, and the egress gateway carries it when routed there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use support::{Sidecar, get, kite, sample, spawn, up::Up};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + 8 + slot * 2
}

const REGISTRY_ONLY: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
";

fn service_entry(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
spec:
  hosts:
  - httpbin.external
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
  endpoints:
  - address: localhost
"
    )
}

const TIMEOUT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-ext
spec:
  hosts:
    - httpbin.external
  http:
  - timeout: 1s
    route:
      - destination:
          host: httpbin.external
        weight: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    egress(Sidecar::Kite, net(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    egress(Sidecar::Envoy, net(3)).await;
}

async fn egress(sidecar: Sidecar, net: u8) {
    let up = Up::start("tasks-egress", sidecar, net, &[&sample("curl/curl.yaml")]).await;
    // The external service: httpbin on 127.0.0.1, outside the mesh, on a
    // port below Linux's ephemeral range (32768-60999), where an outgoing
    // connection's local port could already hold it.
    let port = 20000 + u16::try_from(std::process::id() % 10000).unwrap() + u16::from(net);
    let _external = spawn(
        "external-httpbin",
        &up.dir,
        kite().args([
            "bookinfo",
            "httpbin",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ]),
    );
    let curl = SocketAddr::new(up.pod("curl").await, 15001);
    let call = |host: &'static str, path: &'static str| async move {
        get(curl, &format!("http://{host}:{port}{path}"), &[])
            .await
            .unwrap()
    };
    let mut status = 0;
    for _ in 0..50 {
        status = call("localhost", "/get").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ALLOW_ANY passes an unknown host");

    let registry_only = up.file("registry-only", REGISTRY_ONLY);
    up.apply(&[&registry_only]).await;
    let blocked = call("localhost", "/get").await;
    assert_eq!(blocked.status, 502, "REGISTRY_ONLY: {}", blocked.text());
    assert_eq!(call("httpbin.external", "/get").await.status, 502);

    let se = up.file("service-entry", &service_entry(port));
    up.apply(&[&se]).await;
    let r = call("httpbin.external", "/get").await;
    assert_eq!(r.status, 200, "a ServiceEntry opens the host: {}", r.text());
    assert!(r.text().contains("httpbin.external"), "{}", r.text());

    let timeout = up.file("timeout", TIMEOUT);
    up.apply(&[&timeout]).await;
    let started = Instant::now();
    let slow = call("httpbin.external", "/delay/3").await;
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (504, "upstream request timeout")
    );
    // The timeout waited (Envoy's timers may fire a hair early).
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(call("httpbin.external", "/get").await.status, 200);
    up.delete(&[&timeout]).await;

    // Through the egress gateway: the mesh sends the host's traffic to
    // istio-egressgateway, which sends it on; its counters show the way.
    let egress = up.file("egress-gateway", &egress_gateway(port));
    up.apply(&[&egress]).await;
    let egress_ip = up.gateway_ip.to_string().replace(".255.1", ".255.3");
    let counter = format!("cluster.outbound|{port}||httpbin.external.upstream_rq_total");
    let gw_admin: std::net::IpAddr = egress_ip.parse().unwrap();
    let before = up.stat(gw_admin, &counter).await;
    for _ in 0..5 {
        let r = call("httpbin.external", "/get").await;
        assert_eq!(r.status, 200, "through the egress gateway: {}", r.text());
    }
    assert_eq!(
        up.stat(gw_admin, &counter).await - before,
        5,
        "the egress gateway carried every request ({counter})"
    );

    // Access logs (istio-api.md §3.20): off by default, as in Istio; a
    // mesh-wide Telemetry with the `envoy` provider turns them on.
    let curl_pod = up.pods("default", "curl", 1).await[0].0.clone();
    let proxy_log = || {
        std::fs::read_to_string(up.dir.join(format!("state/logs/{curl_pod}.proxy.log")))
            .unwrap_or_default()
    };
    assert_eq!(
        call("httpbin.external", "/anything/unlogged").await.status,
        200
    );
    let telemetry = up.file(
        "access-logs",
        "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
",
    );
    up.apply(&[&telemetry]).await;
    assert_eq!(
        call("httpbin.external", "/anything/logged").await.status,
        200
    );
    let mut logged = false;
    for _ in 0..30 {
        logged = proxy_log().contains("/anything/logged");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = proxy_log();
    assert!(
        logged,
        "the request is in the client sidecar's access log:\n{log}"
    );
    assert!(!log.contains("/anything/unlogged"), "nothing before: {log}");
    if sidecar == Sidecar::Kite {
        let line = log
            .lines()
            .find(|l| l.contains("/anything/logged"))
            .unwrap();
        assert!(
            line.contains(" peer=127."),
            "the line names the client: {line}"
        );
    }
}

/// The egress-gateway task's Gateway, DestinationRule and VirtualService,
/// for the external httpbin.
fn egress_gateway(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - httpbin.external
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-httpbin
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: httpbin
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-httpbin-through-egress-gateway
spec:
  hosts:
  - httpbin.external
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: {port}
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: httpbin
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: httpbin.external
        port:
          number: {port}
      weight: 100
"
    )
}
