//! Istio's resilience tasks with httpbin (istio-api.md §3.6, §3.7, §3.9)
//! on `kite up`, once with Kite sidecars and once with Envoy sidecars on
//! Kite's control plane: circuit breaking with the fortio client, retries,
//! outlier detection, mirroring, and the httpbin ingress gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use support::{Sidecar, get, sample, up::Up};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + 4 + slot * 2
}

const HTTPBIN_CLUSTER: &str = "cluster.outbound|8000||httpbin.default.svc.cluster.local";

/// `kite load` (fortio load) run in the fortio pod: through its sidecar.
fn fortio_load(up: &Up, fortio: IpAddr, args: &[&str]) -> String {
    let out = up
        .command()
        .arg("load")
        .args(args)
        .env("HTTP_PROXY", format!("http://{fortio}:15001"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kite load {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The count of `Code <code> : <n>` in fortio's report.
fn code_count(report: &str, code: u16) -> usize {
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("Code {code} : "))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Requests an app logged for `path`.
fn logged(up: &Up, pod: &str, path: &str) -> usize {
    up.app_log(pod)
        .lines()
        .filter(|l| l.contains(&format!("path=\"{path}\"")))
        .count()
}

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
    ingress(&up).await;
    secure_ingress(&up).await;
    sni_passthrough(&up).await;
    circuit_breaking(&up, fortio).await;
    retries(&up, fortio).await;
    outlier_detection(&up, fortio).await;
}

/// §3.9: `httpbin-gateway.yaml` exposes httpbin on the gateway's port 80.
async fn ingress(up: &Up) {
    up.apply(&[&sample("httpbin/httpbin-gateway.yaml")]).await;
    let gw = SocketAddr::new(up.gateway_ip, 80);
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(r) = get(gw, "/status/418", &[("host", "httpbin.example.com")]).await {
            status = r.status;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 418, "the teapot through the gateway");
    let r = get(gw, "/headers", &[("host", "httpbin.example.com")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("httpbin.example.com"), "{}", r.text());
    up.delete(&[&sample("httpbin/httpbin-gateway.yaml")]).await;
}

/// Runs a command in `dir`; panics unless it succeeds.
fn run(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base64(path: &std::path::Path) -> String {
    run(
        path.parent().unwrap(),
        "openssl",
        &["base64", "-A", "-in", path.to_str().unwrap()],
    )
}

/// `curl` as the secure-ingress task runs it against the gateway's 443;
/// the HTTP status, or curl's exit code when there is no HTTP answer.
fn curl_https(up: &Up, path: &str, client_cert: bool) -> Result<u16, i32> {
    let mut cmd = std::process::Command::new("curl");
    cmd.current_dir(&up.dir)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-HHost:httpbin.example.com", "--resolve"])
        .arg(format!("httpbin.example.com:443:{}", up.gateway_ip))
        .args(["--cacert", "example.com.crt"]);
    if client_cert {
        cmd.args([
            "--cert",
            "client.example.com.crt",
            "--key",
            "client.example.com.key",
        ]);
    }
    let out = cmd
        .arg(format!("https://httpbin.example.com:443{path}"))
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).parse().unwrap()),
        code => Err(code.unwrap_or(-1)),
    }
}

fn secure_gateway(mode: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: {mode}
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - \"httpbin.example.com\"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"
    )
}

/// §3.9 secure ingress: the gateway terminates TLS with the certificate of
/// a Secret (SIMPLE), then also requires a client certificate (MUTUAL).
async fn secure_ingress(up: &Up) {
    let dir = &up.dir;
    // The task's own openssl commands; the client certificate is X.509 v3
    // (what rustls accepts; the task's v1 certificate works with Envoy only).
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-sha256",
            "-nodes",
            "-days",
            "365",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/O=example Inc./CN=example.com",
            "-keyout",
            "example.com.key",
            "-out",
            "example.com.crt",
        ],
    );
    for (name, v3) in [("httpbin.example.com", false), ("client.example.com", true)] {
        run(
            dir,
            "openssl",
            &[
                "req",
                "-out",
                &format!("{name}.csr"),
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={name}/O=some organization"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            "example.com.crt",
            "-CAkey",
            "example.com.key",
            "-set_serial",
            "1",
        ];
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        args.extend(["-in", &csr, "-out", &crt]);
        if v3 {
            std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
            args.extend(["-extfile", "client.ext"]);
        }
        run(dir, "openssl", &args);
    }
    let secret = |with_ca: bool| {
        let mut data = format!(
            "  tls.crt: {}\n  tls.key: {}\n",
            base64(&dir.join("httpbin.example.com.crt")),
            base64(&dir.join("httpbin.example.com.key"))
        );
        if with_ca {
            data.push_str(&format!(
                "  ca.crt: {}\n",
                base64(&dir.join("example.com.crt"))
            ));
        }
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: httpbin-credential\n  namespace: istio-system\ntype: {}\ndata:\n{data}",
            if with_ca {
                "Opaque"
            } else {
                "kubernetes.io/tls"
            }
        )
    };
    let credential = up.file("httpbin-credential", &secret(false));
    let gateway = up.file("secure-gateway", &secure_gateway("SIMPLE"));
    up.apply(&[&credential, &gateway]).await;
    let mut simple = Err(0);
    for _ in 0..50 {
        simple = curl_https(up, "/status/418", false);
        if simple.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(simple, Ok(418), "SIMPLE: the teapot over HTTPS");
    assert_eq!(
        curl_https(up, "/headers", false),
        Ok(404),
        "only /status and /delay"
    );

    let credential = up.file("httpbin-credential", &secret(true));
    let gateway = up.file("secure-gateway", &secure_gateway("MUTUAL"));
    up.apply(&[&credential, &gateway]).await;
    let mut without = Ok(0);
    for _ in 0..50 {
        without = curl_https(up, "/status/418", false);
        if without.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        without.is_err(),
        "MUTUAL refuses a client without a certificate: {without:?}"
    );
    assert_eq!(
        curl_https(up, "/status/418", true),
        Ok(418),
        "MUTUAL with one"
    );
    up.delete(&[&gateway]).await;
}

/// The passthrough task's nginx: a TLS server of its own behind a sidecar,
/// here `openssl s_server` with the certificate for nginx.example.com.
fn nginx(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  labels:
    run: my-nginx
spec:
  ports:
  - port: 443
    protocol: TCP
    name: https
  selector:
    run: my-nginx
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
spec:
  selector:
    matchLabels:
      run: my-nginx
  replicas: 1
  template:
    metadata:
      labels:
        run: my-nginx
      annotations:
        kite.io/command: openssl s_server -quiet -accept $HOST:$PORT -cert {d}/nginx.example.com.crt -key {d}/nginx.example.com.key -www
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 443
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: nginx
spec:
  hosts:
  - nginx.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx
        port:
          number: 443
"
    )
}

/// §3.9 SNI passthrough: the gateway forwards TLS unopened, by its SNI, to
/// a workload that terminates it with its own certificate.
async fn sni_passthrough(up: &Up) {
    let dir = &up.dir;
    let name = "nginx.example.com";
    run(
        dir,
        "openssl",
        &[
            "req",
            "-out",
            &format!("{name}.csr"),
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}/O=some organization"),
        ],
    );
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "365",
            "-CA",
            "example.com.crt",
            "-CAkey",
            "example.com.key",
            "-set_serial",
            "2",
            "-in",
            &format!("{name}.csr"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    let manifests = up.file("nginx", &nginx(dir));
    up.apply(&[&manifests]).await;
    let curl = |sni: &str| {
        std::process::Command::new("curl")
            .current_dir(dir)
            .args(["-s", "--max-time", "5", "--resolve"])
            .arg(format!("{sni}:443:{}", up.gateway_ip))
            .args(["--cacert", "example.com.crt"])
            .arg(format!("https://{sni}/"))
            .output()
            .unwrap()
    };
    let mut page = String::new();
    for _ in 0..100 {
        let out = curl(name);
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page.contains("s_server"),
        "nginx's own TLS page through the gateway: {page}"
    );
    let other = curl("other.example.com");
    assert!(!other.status.success(), "no route for another SNI");
    up.delete(&[&manifests]).await;
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
    let one = fortio_load(up, fortio, &["-c", "1", "--qps", "0", "-n", "20", url]);
    assert_eq!(code_count(&one, 200), 20, "{one}");
    // maxRequestsPerConnection: 1: a connection of its own for each request.
    assert_eq!(up.stat(fortio, &cx).await - opened, 20, "{cx}");
    let overflow = format!("{HTTPBIN_CLUSTER}.upstream_rq_pending_overflow");
    let before = up.stat(fortio, &overflow).await;
    let three = fortio_load(up, fortio, &["-c", "3", "--qps", "0", "-n", "60", url]);
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
            let before = logged(up, &httpbin, path);
            let r = get(proxy, &format!("http://httpbin:8000{path}"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, want, "{path}: {}", r.text());
            // The app logs after it answers; give the last line a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            logged(up, &httpbin, path) - before
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

/// A second httpbin Deployment behind the same Service.
const HTTPBIN_B: &str = "apiVersion: apps/v1
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
      - image: docker.io/mccutchen/go-httpbin:v2.15.0
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

/// Outlier detection: of two httpbin pods, one whose app is gone answers
/// 503 through its sidecar; after one such error it is ejected and every
/// request goes to the other.
async fn outlier_detection(up: &Up, fortio: IpAddr) {
    let b = up.file("httpbin-b", HTTPBIN_B);
    up.apply(&[&b]).await;
    let pods = up.pods("default", "httpbin", 2).await;
    let dr = up.file("outlier", OUTLIER);
    up.apply(&[&dr]).await;
    // Stop the second pod's app; its sidecar stays.
    let victim = pods
        .iter()
        .find(|(n, _)| n.starts_with("httpbin-b-"))
        .unwrap();
    let app_ip = app_ip_of(victim.1);
    let killed = std::process::Command::new("pkill")
        .args(["-f", "--", &format!("--listen {app_ip}:8080")])
        .status()
        .unwrap();
    assert!(killed.success(), "no app at {app_ip}:8080");
    let proxy = SocketAddr::new(fortio, 15001);
    let mut codes = Vec::new();
    for _ in 0..20 {
        let r = get(proxy, "http://httpbin:8000/get", &[]).await.unwrap();
        codes.push(r.status);
    }
    let failed = codes.iter().filter(|c| **c != 200).count();
    assert!(failed <= 1, "one failure ejects the host: {codes:?}");
    assert_eq!(&codes[codes.len() - 10..], &[200; 10], "{codes:?}");
    let ejections = up
        .stat(
            fortio,
            &format!("{HTTPBIN_CLUSTER}.outlier_detection.ejections_active"),
        )
        .await;
    assert_eq!(ejections, 1);
    up.delete(&[&dr, &b]).await;
}

/// A pod's app address: the same host in the next /16 (`kite up`'s layout).
fn app_ip_of(pod: IpAddr) -> IpAddr {
    let IpAddr::V4(v4) = pod else {
        panic!("IPv4 pods only")
    };
    let [a, b, c, d] = v4.octets();
    IpAddr::from([a, b + 1, c, d])
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
    let headers = |up: &Up, pod: &str| logged(up, pod, "/headers");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    endpoint_changes(Sidecar::Kite, net(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    endpoint_changes(Sidecar::Envoy, net(5)).await;
}

/// Waits until exactly `count` pods of httpbin run.
async fn httpbin_pods(up: &Up, count: usize) -> Vec<(String, IpAddr)> {
    for _ in 0..300 {
        let pods = up.pods("default", "httpbin", 0).await;
        let stopped = std::fs::read_to_string(&up.proc.log).unwrap_or_default();
        let live: Vec<_> = pods
            .into_iter()
            .filter(|(n, _)| !stopped.contains(&format!("stopped pod default/{n}")))
            .collect();
        if live.len() == count {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("httpbin never ran {count} pods");
}

/// Graceful endpoint changes: under steady load through the fortio pod's
/// sidecar, httpbin scales up, down and is restarted pod by pod, and not
/// one request fails.
async fn endpoint_changes(sidecar: Sidecar, net: u8) {
    let up = Up::start(
        "endpoint-changes",
        sidecar,
        net,
        &[
            &sample("httpbin/httpbin.yaml"),
            &sample("httpbin/sample-client/fortio-deploy.yaml"),
        ],
    )
    .await;
    let fortio = up.pod("fortio").await;
    up.kite(&["scale", "deployment/httpbin", "--replicas", "3"]);
    httpbin_pods(&up, 3).await;
    up.synced().await;

    let load = up
        .command()
        .args(["load", "-c", "4", "--qps", "100", "-n", "1500"])
        .arg("http://httpbin:8000/get")
        .env("HTTP_PROXY", format!("http://{fortio}:15001"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    up.kite(&["scale", "deployment/httpbin", "--replicas", "1"]);
    let before = httpbin_pods(&up, 1).await;
    up.kite(&["rollout", "restart", "deployment/httpbin"]);
    let mut replaced = false;
    for _ in 0..100 {
        let now = httpbin_pods(&up, 1).await;
        if now[0].0 != before[0].0 {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(replaced, "the rollout replaced the pod");
    up.kite(&["scale", "deployment/httpbin", "--replicas", "2"]);
    httpbin_pods(&up, 2).await;

    let out = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        code_count(&report, 200),
        1500,
        "every request through scaling and a restart succeeds:\n{report}"
    );
}
