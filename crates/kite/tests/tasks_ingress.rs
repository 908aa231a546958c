//! Istio's ingress tasks (istio-api.md §3.9) on `kite up`, with Kite
//! sidecars and with Envoy sidecars: the httpbin gateway, secure ingress
//! with a Secret's certificate (SIMPLE, then MUTUAL), and SNI passthrough
//! to a workload that terminates TLS itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use support::{Sidecar, get, sample, up::Up};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + 4 + slot * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    ingress_tasks(Sidecar::Kite, net(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    ingress_tasks(Sidecar::Envoy, net(1)).await;
}

async fn ingress_tasks(sidecar: Sidecar, net: u8) {
    let up = Up::start(
        "tasks-ingress",
        sidecar,
        net,
        &[&sample("httpbin/httpbin.yaml")],
    )
    .await;
    up.pod("httpbin").await;
    up.synced().await;
    ingress(&up).await;
    secure_ingress(&up).await;
    sni_passthrough(&up).await;
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

/// A key and certificate for `name` signed by the example.com CA, with the
/// task's openssl commands; `client` makes it X.509 v3 for client auth.
fn issue(dir: &std::path::Path, name: &str, serial: u32, client: bool) {
    let (csr, key, crt) = (
        format!("{name}.csr"),
        format!("{name}.key"),
        format!("{name}.crt"),
    );
    let subject = format!("/CN={name}/O=some organization");
    run(
        dir,
        "openssl",
        &[
            "req", "-out", &csr, "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj",
            &subject,
        ],
    );
    let serial = serial.to_string();
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
        &serial,
        "-in",
        &csr,
        "-out",
        &crt,
    ];
    if client {
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        args.extend(["-extfile", "client.ext"]);
    }
    run(dir, "openssl", &args);
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
    issue(dir, "httpbin.example.com", 1, false);
    issue(dir, "client.example.com", 2, true);
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
    issue(dir, name, 3, false);
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
