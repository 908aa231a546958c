//! Istio's resilience tasks with httpbin (istio-api.md §3.6, §3.7) on
//! `kite up`, once with Kite sidecars and once with Envoy sidecars on
//! Kite's control plane: HTTP/2 between the sidecars (`h2UpgradePolicy`),
//! circuit breaking with the fortio client, retries, outlier detection and
//! mirroring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use support::{
    Sidecar, get, sample,
    up::{Up, app_ip_of, code_count},
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + 4 + slot * 2
}

const HTTPBIN_CLUSTER: &str = "cluster.outbound|8000||httpbin.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpbin_tasks_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    httpbin_tasks(Sidecar::Kite, net(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpbin_tasks_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    httpbin_tasks(Sidecar::Envoy, net(1)).await;
}

async fn httpbin_tasks(sidecar: Sidecar, net: u8) {
    let up = Up::start(
        "tasks-httpbin",
        sidecar,
        net,
        &[
            &sample("httpbin/httpbin.yaml"),
            &sample("httpbin/sample-client/fortio-deploy.yaml"),
        ],
    )
    .await;
    up.synced().await;
    let fortio = up.pod("fortio").await;
    // First: the tasks below add pods to httpbin's Service (fortio's echo
    // among them, which answers /headers with an empty body).
    large_headers(fortio).await;
    h2_upgrade(&up, fortio).await;
    max_requests_per_connection(&up, fortio).await;
    circuit_breaking(&up, fortio).await;
    retries(&up, fortio).await;
    outlier_detection(&up, fortio).await;
}

/// Request headers within Envoy's default limit (60 KiB) reach the app
/// through both sidecars; beyond it the caller's sidecar answers 431.
async fn large_headers(fortio: IpAddr) {
    let sidecar = SocketAddr::new(fortio, 15001);
    let url = "http://httpbin:8000/headers";
    let within = "x".repeat(50 * 1024);
    let rsp = get(sidecar, url, &[("x-large", &within)]).await.unwrap();
    assert_eq!(rsp.status, 200, "{} bytes of headers", within.len());
    let text = rsp.text();
    assert!(
        text.contains(&within),
        "httpbin saw the header whole: {} bytes back, {:?} ... {:?}",
        text.len(),
        &text[..text.len().min(300)],
        &text[text.len().saturating_sub(300)..]
    );
    let beyond = "x".repeat(100 * 1024);
    let rsp = get(sidecar, url, &[("x-large", &beyond)]).await.unwrap();
    assert_eq!(rsp.status, 431, "{} bytes of headers", beyond.len());
    // The sidecar still serves.
    let rsp = get(sidecar, url, &[]).await.unwrap();
    assert_eq!(rsp.status, 200);
}

/// A DestinationRule for httpbin with these `connectionPool.http` settings.
fn http_pool_dr(settings: &[&str]) -> String {
    let settings: String = settings.iter().map(|s| format!("        {s}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      http:
{settings}"
    )
}

/// `h2UpgradePolicy: UPGRADE`: the sidecars speak HTTP/2 to each other, so
/// concurrent callers share one connection where HTTP/1.1 takes one each;
/// httpbin itself, which speaks HTTP/1.1 only, answers every request.
async fn h2_upgrade(up: &Up, fortio: IpAddr) {
    let url = "http://httpbin:8000/get";
    let cx = format!("{HTTPBIN_CLUSTER}.upstream_cx_total");
    let h2 = format!("{HTTPBIN_CLUSTER}.upstream_cx_http2_total");
    let load = || up.fortio_load(fortio, &["-c", "8", "--qps", "0", "-n", "400", url]);
    let (cx_before, h2_before) = (up.stat(fortio, &cx).await, up.stat(fortio, &h2).await);
    let http11 = load();
    assert_eq!(code_count(&http11, 200), 400, "{http11}");
    let (cx_http11, h2_http11) = (up.stat(fortio, &cx).await, up.stat(fortio, &h2).await);
    assert!(cx_http11 - cx_before > 1, "{cx}: {cx_before} → {cx_http11}");
    assert_eq!(h2_http11, h2_before, "{h2} without the policy");

    let dr = up.file("h2-upgrade", &http_pool_dr(&["h2UpgradePolicy: UPGRADE"]));
    up.apply(&[&dr]).await;
    let upgraded = load();
    assert_eq!(code_count(&upgraded, 200), 400, "{upgraded}");
    assert_eq!(up.stat(fortio, &cx).await - cx_http11, 1, "{cx}");
    assert_eq!(up.stat(fortio, &h2).await - h2_http11, 1, "{h2}");
    up.delete(&[&dr]).await;
}

/// `maxRequestsPerConnection` above 1: a connection between the sidecars
/// carries that many requests and no more, over HTTP/1.1 and HTTP/2.
async fn max_requests_per_connection(up: &Up, fortio: IpAddr) {
    let url = "http://httpbin:8000/get";
    let cx = format!("{HTTPBIN_CLUSTER}.upstream_cx_total");
    let max = "maxRequestsPerConnection: 5";
    for (name, settings) in [
        ("max-requests", vec![max]),
        ("max-requests-h2", vec![max, "h2UpgradePolicy: UPGRADE"]),
    ] {
        let dr = up.file(name, &http_pool_dr(&settings));
        up.apply(&[&dr]).await;
        let before = up.stat(fortio, &cx).await;
        let load = up.fortio_load(fortio, &["-c", "1", "--qps", "0", "-n", "20", url]);
        assert_eq!(code_count(&load, 200), 20, "{name}: {load}");
        let opened = up.stat(fortio, &cx).await - before;
        assert_eq!(opened, 4, "{name}: {cx} for 20 requests, 5 per connection");
        up.delete(&[&dr]).await;
    }
}

const CIRCUIT_BREAKER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
";

/// §3.6: one connection at a time passes; three concurrent callers
/// overflow the pool: 503s, counted as `upstream_rq_pending_overflow`.
async fn circuit_breaking(up: &Up, fortio: IpAddr) {
    let dr = up.file("circuit-breaker", CIRCUIT_BREAKER);
    up.apply(&[&dr]).await;
    let url = "http://httpbin:8000/get";
    let cx = format!("{HTTPBIN_CLUSTER}.upstream_cx_total");
    let opened = up.stat(fortio, &cx).await;
    let one = up.fortio_load(fortio, &["-c", "1", "--qps", "0", "-n", "20", url]);
    assert_eq!(code_count(&one, 200), 20, "{one}");
    // maxRequestsPerConnection: 1: a connection of its own for each request.
    assert_eq!(up.stat(fortio, &cx).await - opened, 20, "{cx}");
    let overflow = format!("{HTTPBIN_CLUSTER}.upstream_rq_pending_overflow");
    let before = up.stat(fortio, &overflow).await;
    let three = up.fortio_load(fortio, &["-c", "3", "--qps", "0", "-n", "60", url]);
    let rejected = code_count(&three, 503);
    assert!(
        rejected > 0 && code_count(&three, 200) > 0 && rejected + code_count(&three, 200) == 60,
        "{three}"
    );
    let after = up.stat(fortio, &overflow).await;
    assert!(
        after - before >= rejected as u64,
        "{overflow}: {before} → {after}, {rejected} rejected"
    );
    up.delete(&[&dr]).await;
}

fn retry_vs(retries: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        host: httpbin
{retries}"
    )
}

/// Retries: Istio's default policy leaves the app's 503 alone; `attempts`
/// with `retryOn` retries the conditions named and no others.
async fn retries(up: &Up, fortio: IpAddr) {
    let httpbin = up.pods("default", "httpbin", 1).await[0].0.clone();
    let proxy = SocketAddr::new(fortio, 15001);
    // The requests the app saw for one call.
    let tries = |path: &'static str, want: u16| {
        let httpbin = httpbin.clone();
        async move {
            let before = up.logged(&httpbin, path);
            let r = get(proxy, &format!("http://httpbin:8000{path}"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, want, "{path}: {}", r.text());
            // The app logs after it answers; give the last line a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            up.logged(&httpbin, path) - before
        }
    };
    assert_eq!(tries("/status/503", 503).await, 1, "no retry by default");

    let vs = up.file(
        "retries-5xx",
        &retry_vs("    retries:\n      attempts: 3\n      retryOn: 5xx\n"),
    );
    up.apply(&[&vs]).await;
    assert_eq!(tries("/status/503", 503).await, 4, "5xx: 1 + 3 retries");
    assert_eq!(tries("/status/404", 404).await, 1, "5xx leaves 4xx alone");

    let vs = up.file(
        "retries-codes",
        &retry_vs("    retries:\n      attempts: 2\n      retryOn: gateway-error,409\n"),
    );
    up.apply(&[&vs]).await;
    assert_eq!(tries("/status/502", 502).await, 3, "gateway-error");
    assert_eq!(
        tries("/status/409", 409).await,
        3,
        "a retriable status code"
    );
    assert_eq!(
        tries("/status/500", 500).await,
        1,
        "500 is no gateway error"
    );

    let vs = up.file(
        "retries-per-try",
        &retry_vs(
            "    timeout: 10s\n    retries:\n      attempts: 2\n      perTryTimeout: 0.3s\n      retryOn: 5xx\n",
        ),
    );
    up.apply(&[&vs]).await;
    // The app never finishes (nor logs) a request its caller gave up on;
    // the client sidecar's counters tell.
    let counter = |name: &str| format!("{HTTPBIN_CLUSTER}.{name}");
    let (timeouts, retried) = (
        up.stat(fortio, &counter("upstream_rq_per_try_timeout"))
            .await,
        up.stat(fortio, &counter("upstream_rq_retry")).await,
    );
    let r = get(proxy, "http://httpbin:8000/delay/1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        (
            up.stat(fortio, &counter("upstream_rq_per_try_timeout"))
                .await
                - timeouts,
            up.stat(fortio, &counter("upstream_rq_retry")).await - retried,
        ),
        (3, 2),
        "each of three tries times out after 0.3 s; two are retries"
    );
    up.delete(&[&vs]).await;
}

/// A second pod behind httpbin's Service that fails: fortio's echo server,
/// which answers `?status=503` with 503 where httpbin ignores the query.
const FAILING_HTTPBIN: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-b
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
      version: v1
  template:
    metadata:
      labels:
        app: httpbin
        version: v1
    spec:
      serviceAccountName: httpbin
      containers:
      - image: docker.io/fortio/fortio:latest_release
        name: httpbin
        ports:
        - containerPort: 8080
";

const OUTLIER: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
";

/// Of two httpbin pods one fails every request: a retry goes to the other
/// host, and outlier detection ejects the failing one after one error.
async fn outlier_detection(up: &Up, fortio: IpAddr) {
    let b = up.file("httpbin-b", FAILING_HTTPBIN);
    up.apply(&[&b]).await;
    up.pods("default", "httpbin", 2).await;
    let proxy = SocketAddr::new(fortio, 15001);
    let codes = || async {
        let mut codes = Vec::new();
        for _ in 0..20 {
            let r = get(proxy, "http://httpbin:8000/get?status=503", &[])
                .await
                .unwrap();
            codes.push(r.status);
        }
        codes
    };
    let first = codes().await;
    assert!(
        first.contains(&503) && first.contains(&200),
        "both pods answer: {first:?}"
    );

    // Retries go to another host (Istio's previous-hosts predicate).
    let vs = up.file(
        "retry-elsewhere",
        &retry_vs("    retries:\n      attempts: 2\n      retryOn: 5xx\n"),
    );
    up.apply(&[&vs]).await;
    assert_eq!(
        codes().await,
        [200; 20],
        "every failure retried on the other pod"
    );
    up.delete(&[&vs]).await;

    let dr = up.file("outlier", OUTLIER);
    up.apply(&[&dr]).await;
    let seen = codes().await;
    let failed = seen.iter().filter(|c| **c != 200).count();
    assert!(failed <= 1, "one failure ejects the host: {seen:?}");
    assert_eq!(&seen[seen.len() - 10..], &[200; 10], "{seen:?}");
    let ejections = up
        .stat(
            fortio,
            &format!("{HTTPBIN_CLUSTER}.outlier_detection.ejections_active"),
        )
        .await;
    assert_eq!(ejections, 1);
    up.delete(&[&dr, &b]).await;
}

/// The mirroring task's workloads, as its docs deploy them.
const MIRROR_WORKLOADS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
      version: v1
  template:
    metadata:
      labels:
        app: httpbin
        version: v1
    spec:
      containers:
      - image: docker.io/kennethreitz/httpbin
        imagePullPolicy: IfNotPresent
        name: httpbin
        command: [\"gunicorn\", \"--access-logfile\", \"-\", \"-b\", \"0.0.0.0:80\", \"httpbin:app\"]
        ports:
        - containerPort: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-v2
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
      version: v2
  template:
    metadata:
      labels:
        app: httpbin
        version: v2
    spec:
      containers:
      - image: docker.io/kennethreitz/httpbin
        imagePullPolicy: IfNotPresent
        name: httpbin
        command: [\"gunicorn\", \"--access-logfile\", \"-\", \"-b\", \"0.0.0.0:80\", \"httpbin:app\"]
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin
";

const MIRROR_ROUTING: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
    - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
";

fn mirror_vs(percent: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
    - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: {percent}.0
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    mirroring(Sidecar::Kite, net(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    mirroring(Sidecar::Envoy, net(3)).await;
}

/// §3.7: a fire-and-forget copy to v2 with the `-shadow` Host, at the
/// percentage asked; the caller's answer is v1's, whatever becomes of v2.
async fn mirroring(sidecar: Sidecar, net: u8) {
    let dir = std::env::temp_dir().join(format!("kite-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let workloads = dir.join(format!("{sidecar:?}-workloads.yaml"));
    std::fs::write(&workloads, MIRROR_WORKLOADS).unwrap();
    let up = Up::start(
        "tasks-mirroring",
        sidecar,
        net,
        &[workloads.to_str().unwrap(), &sample("curl/curl.yaml")],
    )
    .await;
    let routing = up.file("mirror-routing", MIRROR_ROUTING);
    up.apply(&[&routing]).await;
    let curl = SocketAddr::new(up.pod("curl").await, 15001);
    let pods = up.pods("default", "httpbin", 2).await;
    let pod = |version: &str| {
        pods.iter()
            .find(|(n, _)| n.starts_with(&format!("httpbin-{version}-")))
            .unwrap()
            .clone()
    };
    let (v1, v2) = (pod("v1"), pod("v2"));
    let headers = |up: &Up, pod: &str| up.logged(pod, "/headers");
    let call = || async {
        let r = get(curl, "http://httpbin:8000/headers", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };

    call().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((headers(&up, &v1.0), headers(&up, &v2.0)), (1, 0));

    let mirror = up.file("mirror-100", &mirror_vs(100));
    up.apply(&[&mirror]).await;
    let r = call().await;
    assert!(
        r.text().contains("\"httpbin:8000\""),
        "v1's answer: {}",
        r.text()
    );
    let mut shadowed = false;
    for _ in 0..30 {
        shadowed = up
            .app_log(&v2.0)
            .lines()
            .any(|l| l.contains("path=\"/headers\"") && l.contains("host=\"httpbin-shadow:8000\""));
        if shadowed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shadowed,
        "v2 sees the copy with the -shadow host:\n{}",
        up.app_log(&v2.0)
    );
    assert_eq!(headers(&up, &v1.0), 2);

    let half = up.file("mirror-50", &mirror_vs(50));
    up.apply(&[&half]).await;
    let before = headers(&up, &v2.0);
    for _ in 0..60 {
        call().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copies = headers(&up, &v2.0) - before;
    assert!((15..=45).contains(&copies), "50 % of 60 mirrored: {copies}");

    // With v2's app gone, callers still get v1's answers.
    up.apply(&[&mirror]).await;
    let killed = std::process::Command::new("pkill")
        .args(["-f", "--", &format!("--listen {}:80", app_ip_of(v2.1))])
        .status()
        .unwrap();
    assert!(killed.success());
    for _ in 0..10 {
        call().await;
    }
    let _ = std::fs::remove_file(&workloads);
}
