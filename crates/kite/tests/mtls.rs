//! Mutual TLS between Kite sidecars, end to end: BookInfo under a mesh-wide
//! STRICT PeerAuthentication (checked from outside with the `openssl` CLI),
//! PeerAuthentication's mesh, namespace, workload and port scopes, secure
//! naming refusing a workload that holds someone else's certificate,
//! certificate rotation under load, and traffic carrying on while the CA is
//! down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{Mesh, MeshOptions, Proc, Sidecar, get, kite, sample, spawn};
use tokio::io::AsyncWriteExt as _;

/// `Mesh::start*` derives its addresses from the process id, so two meshes
/// alive at once in this test binary would collide: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DETAILS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-details";
const DETAILS_CLUSTER: &str = "outbound|9080||details.default.svc.cluster.local";

/// A `kite up` pod network of this test's own: 127.<net>.0.0/16 for pods,
/// the next /16 for apps; `slot` tells the tests of this binary apart.
fn pod_net(slot: u8) -> u8 {
    200 + u8::try_from(std::process::id() % 4).unwrap() * 6 + slot * 2
}

/// `kite up` with Kite sidecars, running until dropped (then stopped with
/// SIGINT, as a user's Ctrl-C, so that nothing it started is left behind).
struct Up {
    proc: Proc,
    dir: PathBuf,
    gateway: SocketAddr,
    api: String,
    /// (pod name, pod IP) from the table `kite up` prints.
    pods: Vec<(String, IpAddr)>,
}

impl Up {
    async fn start(test: &str, net: u8, cert_ttl: Option<u64>) -> Up {
        let dir = std::env::temp_dir().join(format!("kite-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let gateway_ip = Ipv4Addr::new(127, net, 255, 1);
        let control_ip = Ipv4Addr::new(127, net, 255, 2);
        let mut cmd = kite();
        cmd.args(["up", "--sidecar", "kite", "--state-dir"])
            .arg(dir.join("state"))
            .args(["--gateway-ip", &gateway_ip.to_string()])
            .args(["--control-ip", &control_ip.to_string()])
            .args(["--pod-net", &net.to_string()]);
        if let Some(ttl) = cert_ttl {
            cmd.args(["--workload-cert-ttl", &ttl.to_string()]);
        }
        let mut proc = spawn("kite-up", &dir, &mut cmd);
        let mut out = String::new();
        for _ in 0..600 {
            out = std::fs::read_to_string(&proc.log).unwrap_or_default();
            if out.contains("BookInfo is up") {
                break;
            }
            assert!(proc.running(), "kite up exited early:\n{out}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            out.contains("BookInfo is up"),
            "kite up did not come up in 60 s"
        );
        let pods = out
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                match cells[..] {
                    [name, "default", ip, ..] => Some((name.to_owned(), ip.parse().ok()?)),
                    _ => None,
                }
            })
            .collect();
        Up {
            proc,
            dir,
            gateway: SocketAddr::new(IpAddr::V4(gateway_ip), 8080),
            api: format!("http://{control_ip}:15014"),
            pods,
        }
    }

    /// The (name, IP) of the first pod whose name starts with `prefix`.
    fn pod(&self, prefix: &str) -> (String, IpAddr) {
        self.pods
            .iter()
            .find(|(name, _)| name.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix} pod in {:?}", self.pods))
    }

    /// Runs `kite <args>` against this mesh; panics unless it succeeds.
    fn kite(&self, args: &[&str]) -> String {
        let out = kite()
            .args(args)
            .env("KITE_CONTROL_PLANE", &self.api)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kite {args:?} failed:\n{text}");
        text
    }

    /// Writes `yaml` to `<dir>/<name>.yaml` and returns the path.
    fn file(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The proxies' logs, where mTLS failures show.
            support::up::print_log_tails(&self.dir.join("state/logs"), ".proxy.log", 15);
        }
        let _ = self.proc.interrupt(Duration::from_secs(30));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A PeerAuthentication as Istio's docs write them.
fn peer_authentication(
    name: &str,
    namespace: &str,
    app: Option<&str>,
    mode: &str,
    port_level: &str,
) -> String {
    let selector = app
        .map(|a| format!("  selector:\n    matchLabels:\n      app: {a}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{selector}  mtls:\n    mode: {mode}\n{port_level}"
    )
}

/// What a plaintext `GET /health` to a pod's inbound port meets.
#[derive(Debug, PartialEq)]
enum Plaintext {
    /// An HTTP answer with this status.
    Answered(u16),
    /// Connected, then no HTTP answer: the connection was closed or spoke
    /// TLS (an alert). What a STRICT inbound does.
    Refused,
    /// Nothing accepted the connection (no listener bound at that moment).
    NotListening,
}

async fn plaintext(addr: SocketAddr) -> Plaintext {
    match tokio::time::timeout(Duration::from_secs(3), get(addr, "/health", &[])).await {
        Ok(Ok(r)) => Plaintext::Answered(r.status),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Plaintext::NotListening,
        _ => Plaintext::Refused,
    }
}

/// Whether plaintext to `addr` gets a 200.
async fn plaintext_ok(addr: SocketAddr) -> bool {
    plaintext(addr).await == Plaintext::Answered(200)
}

/// Polls (`secs` at most) until plaintext to `addr` is answered 200
/// (`accepted`) or refused by a listener that wants TLS.
async fn wait_plaintext(addr: SocketAddr, accepted: bool, secs: u64, why: &str) {
    let want = if accepted {
        Plaintext::Answered(200)
    } else {
        Plaintext::Refused
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = plaintext(addr).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: plaintext to {addr} should get {want:?} within {secs} s, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plaintext to `addr` stays refused: sampled for a second, never answered,
/// and refused by a TLS listener at the end.
async fn stays_refused(addr: SocketAddr, why: &str) {
    let mut got = Plaintext::NotListening;
    for _ in 0..10 {
        got = plaintext(addr).await;
        assert!(
            !matches!(got, Plaintext::Answered(_)),
            "{why}: plaintext to {addr} should stay refused, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got, Plaintext::Refused, "{why}: {addr}");
}

/// Runs `openssl <args>` with `stdin` as its input (20 s at most); returns
/// whether it succeeded and its stdout and stderr.
async fn openssl(args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = tokio::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("openssl {args:?} did not finish in 20 s"))
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `openssl s_client -connect <addr> <extra>` with no client certificate;
/// returns what it printed. Its exit status says little: the server refuses
/// the missing client certificate with an alert once the handshake is done,
/// and whether openssl reads that alert before it exits is a race.
async fn s_client(addr: SocketAddr, extra: &[&str]) -> String {
    let target = addr.to_string();
    let mut args = vec!["s_client", "-connect", &target];
    args.extend_from_slice(extra);
    openssl(&args, b"").await.1
}

/// The subjectAltName of the (first) certificate in `pem_text`.
async fn subject_alt_name(pem_text: &str) -> String {
    let (ok, san) = openssl(
        &["x509", "-noout", "-ext", "subjectAltName"],
        pem_text.as_bytes(),
    )
    .await;
    assert!(ok, "openssl x509 failed:\n{san}\non:\n{pem_text}");
    san
}

/// The certificate a Kite proxy holds now (`/certs`).
async fn certificate(ip: IpAddr) -> Value {
    let r = get(SocketAddr::new(ip, 15000), "/certs", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "/certs of {ip}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["certificates"]
        .get(0)
        .cloned()
        .unwrap_or_else(|| panic!("the proxy at {ip} holds no certificate: {v}"))
}

/// One product page through the gateway: 200, with details, reviews and
/// ratings all answering. Returns the reviews version shown, or what was
/// wrong with the page.
async fn try_page(gw: SocketAddr) -> Result<String, String> {
    let r = get(gw, "/productpage", &[])
        .await
        .map_err(|e| format!("GET /productpage: {e}"))?;
    let text = r.text();
    if r.status != 200 {
        return Err(format!("status {}:\n{text}", r.status));
    }
    for want in ["Book Details", "Book Reviews"] {
        if !text.contains(want) {
            return Err(format!("no {want:?} on the page:\n{text}"));
        }
    }
    for unwanted in ["Error fetching", "currently unavailable"] {
        if text.contains(unwanted) {
            return Err(format!("{unwanted:?} on the page:\n{text}"));
        }
    }
    let pod = text
        .split("Reviews served by: ")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .ok_or_else(|| format!("no reviews pod on the page:\n{text}"))?;
    Ok(pod.split('-').nth(1).unwrap_or_default().to_owned())
}

/// `try_page`, panicking on a bad page.
async fn page(gw: SocketAddr) -> String {
    try_page(gw).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The value of `cluster.<cluster>.<stat>` in a proxy's `/stats`.
async fn stat(ip: IpAddr, cluster: &str, stat: &str) -> u64 {
    let r = get(SocketAddr::new(ip, 15000), "/stats", &[])
        .await
        .unwrap();
    let key = format!("cluster.{cluster}.{stat}: ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in /stats of {ip}:\n{}", r.text()))
        .trim()
        .parse()
        .unwrap()
}

fn log_of(mesh: &Mesh, proc_name: &str) -> String {
    let p = mesh
        .procs
        .iter()
        .find(|p| p.name == proc_name)
        .unwrap_or_else(|| panic!("no process {proc_name}"));
    std::fs::read_to_string(&p.log).unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_under_mesh_wide_strict() {
    let up = Up::start("mtls-strict", pod_net(0), None).await;
    let (details, details_ip) = up.pod("details-v1-");
    let details_addr = SocketAddr::new(details_ip, 9080);
    assert!(
        plaintext_ok(details_addr).await,
        "PERMISSIVE by default: plaintext should be accepted before any policy"
    );

    let strict = up.file(
        "mesh-strict",
        &peer_authentication("default", "istio-system", None, "STRICT", ""),
    );
    up.kite(&[
        "apply",
        "-f",
        &sample("bookinfo/networking/destination-rule-all-mtls.yaml"),
        "-f",
        &strict,
    ]);
    // Every inbound listener has taken the policy before pages are counted.
    for (name, ip) in &up.pods {
        let why = format!("mesh-wide STRICT on {name}");
        wait_plaintext(SocketAddr::new(*ip, 9080), false, 10, &why).await;
    }

    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(page(up.gateway).await);
    }
    assert_eq!(
        seen.len(),
        3,
        "every reviews version expected under STRICT: {seen:?}"
    );

    // No pod takes plaintext.
    for (name, ip) in &up.pods {
        assert_eq!(
            plaintext(SocketAddr::new(*ip, 9080)).await,
            Plaintext::Refused,
            "{name} ({ip}:9080) under mesh-wide STRICT"
        );
    }

    // What a TLS client sees: TLS 1.3, h2, the details identity, and a
    // request for a client certificate.
    let hello = s_client(details_addr, &["-alpn", "h2"]).await;
    assert!(
        hello.contains("New, TLSv1.3, Cipher is TLS_"),
        "no TLS 1.3 handshake with {details_addr}:\n{hello}"
    );
    assert!(hello.contains("ALPN protocol: h2"), "ALPN not h2:\n{hello}");
    assert!(
        hello.contains("Acceptable client certificate CA names"),
        "the server should ask for a client certificate:\n{hello}"
    );
    let san = subject_alt_name(&hello).await;
    assert!(
        san.contains(&format!("URI:{DETAILS_ID}")),
        "the details pod should present its SPIFFE id:\n{san}"
    );

    // TLS 1.2 is the floor: 1.2 handshakes, 1.1 does not. SECLEVEL=0 lets
    // openssl 3 offer 1.1 at all, so the refusal is the server's.
    let tls12 = s_client(details_addr, &["-tls1_2"]).await;
    assert!(
        tls12.contains("New, TLSv1.2, Cipher is ECDHE-"),
        "a TLS 1.2 handshake should negotiate a cipher:\n{tls12}"
    );
    let tls11 = s_client(details_addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]).await;
    assert!(
        tls11.contains("Cipher is (NONE)") && !tls11.contains("BEGIN CERTIFICATE"),
        "a TLS 1.1 handshake should fail before any certificate:\n{tls11}"
    );
    assert!(
        tls11.contains("alert") && !tls11.contains("no protocols available"),
        "the server, not openssl, should refuse TLS 1.1:\n{tls11}"
    );

    let secret = up.kite(&["proxy-config", "secret", &details]);
    assert!(
        secret.starts_with("IDENTITY") && secret.contains(DETAILS_ID),
        "kite proxy-config secret {details}:\n{secret}"
    );

    // Without the policy, PERMISSIVE again: plaintext and mTLS both work.
    up.kite(&["delete", "-f", &strict]);
    for (name, ip) in &up.pods {
        let why = format!("STRICT deleted, {name}");
        wait_plaintext(SocketAddr::new(*ip, 9080), true, 10, &why).await;
    }
    for _ in 0..5 {
        page(up.gateway).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_authentication_scopes() {
    let up = Up::start("mtls-scopes", pod_net(1), None).await;
    let details = SocketAddr::new(up.pod("details-v1-").1, 9080);
    let ratings = SocketAddr::new(up.pod("ratings-v1-").1, 9080);
    assert!(plaintext_ok(details).await && plaintext_ok(ratings).await);

    // Namespace-wide STRICT.
    let namespace = up.file(
        "namespace-strict",
        &peer_authentication("default", "default", None, "STRICT", ""),
    );
    up.kite(&["apply", "-f", &namespace]);
    wait_plaintext(details, false, 5, "namespace default STRICT").await;
    wait_plaintext(ratings, false, 5, "namespace default STRICT").await;

    // A workload policy overrides it for details only.
    let details_permissive = up.file(
        "details-permissive",
        &peer_authentication("details", "default", Some("details"), "PERMISSIVE", ""),
    );
    up.kite(&["apply", "-f", &details_permissive]);
    wait_plaintext(details, true, 5, "details PERMISSIVE over namespace STRICT").await;
    stays_refused(
        ratings,
        "ratings is not selected by the details policy and must stay STRICT",
    )
    .await;

    // Port level beats the workload's own mode.
    let ratings_port = up.file(
        "ratings-port-disable",
        &peer_authentication(
            "ratings",
            "default",
            Some("ratings"),
            "STRICT",
            "  portLevelMtls:\n    9080:\n      mode: DISABLE\n",
        ),
    );
    up.kite(&["apply", "-f", &ratings_port]);
    wait_plaintext(ratings, true, 5, "ratings port 9080 DISABLE").await;
    assert!(plaintext_ok(details).await, "details is still PERMISSIVE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_naming_refuses_an_impostor() {
    let _serial = SERIAL.lock().await;
    let options = MeshOptions {
        identity: true,
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start_with("mtls-naming", Sidecar::Kite, options).await;
    mesh.apply(&[&sample("bookinfo/platform/kube/bookinfo.yaml")]);
    mesh.add_pod("details", "v1", "bookinfo-details").await;
    let genuine = mesh.pods[0].name.clone();
    let client = mesh.add_client("client").await;
    let client_proxy = format!("{}-kite-proxy", mesh.pods[1].name);
    mesh.synced(2).await;
    let proxy = SocketAddr::new(client, 15001);
    let url = "http://details:9080/details/0";

    // The genuine details pod: its certificate names bookinfo-details.
    assert_eq!(
        certificate(mesh.pods[0].pod_ip).await["identity"],
        DETAILS_ID
    );
    let r = get(proxy, url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "the genuine details pod: {}", r.text());
    assert_eq!(
        stat(client, DETAILS_CLUSTER, "ssl.fail_verify_san").await,
        0
    );

    // In its place, a pod registered as bookinfo-details whose sidecar holds
    // a certificate for `impostor`.
    mesh.remove_pod(&genuine);
    mesh.add_pod_running_as("details", "v1", "bookinfo-details", "impostor")
        .await;
    mesh.synced(2).await;
    let impostor = mesh.pods.iter().find(|p| p.app == "details").unwrap();
    assert_eq!(
        certificate(impostor.pod_ip).await["identity"],
        "spiffe://cluster.local/ns/default/sa/impostor"
    );
    // It serves details (plaintext is still accepted, PERMISSIVE) …
    let direct = SocketAddr::new(impostor.pod_ip, 9080);
    assert!(plaintext_ok(direct).await, "the impostor serves plaintext");

    // … but the client refuses it by name.
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(proxy, url, &[]).await.unwrap();
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 503, "the impostor must be refused: {}", r.text());
    let refused = stat(client, DETAILS_CLUSTER, "ssl.fail_verify_san").await;
    assert!(
        refused >= 1,
        "ssl.fail_verify_san should count the refusal, is {refused}"
    );
    let log = log_of(&mesh, &client_proxy);
    assert!(
        log.contains("secure naming"),
        "the client proxy should log the secure naming refusal:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_nothing() {
    let up = Up::start("mtls-rotation", pod_net(2), Some(6)).await;
    let (_, details_ip) = up.pod("details-v1-");
    let mut valid_from = BTreeSet::new();
    valid_from.insert(
        certificate(details_ip).await["valid_from"]
            .as_u64()
            .unwrap(),
    );

    let start = Instant::now();
    let mut pages = 0;
    while pages < 1500 && start.elapsed() < Duration::from_secs(10) {
        page(up.gateway).await;
        pages += 1;
        valid_from.insert(
            certificate(details_ip).await["valid_from"]
                .as_u64()
                .unwrap(),
        );
    }
    eprintln!("{pages} pages, details certificates valid from {valid_from:?}");
    assert!(
        valid_from.len() >= 2,
        "the details certificate (TTL 6 s) should have been renewed within 10 s: {valid_from:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_continues_while_the_ca_is_down() {
    let _serial = SERIAL.lock().await;
    let options = MeshOptions {
        identity: true,
        workload_cert_ttl: Some(20),
    };
    let mut mesh = Mesh::start_with("mtls-ca-down", Sidecar::Kite, options).await;
    let strict = write(
        &mesh.dir,
        "mesh-strict.yaml",
        &peer_authentication("default", "istio-system", None, "STRICT", ""),
    );
    mesh.apply(&[&sample("bookinfo/platform/kube/bookinfo.yaml"), &strict]);
    mesh.add_pod("details", "v1", "bookinfo-details").await;
    let server = mesh.pods[0].pod_ip;
    let client = mesh.add_client("client").await;
    let client_proxy = format!("{}-kite-proxy", mesh.pods[1].name);
    mesh.synced(2).await;
    let proxy = SocketAddr::new(client, 15001);
    let url = "http://details:9080/details/0";

    // The server takes TLS only and presents its certificate, so a request
    // that gets through went over mutual TLS.
    wait_plaintext(SocketAddr::new(server, 9080), false, 5, "mesh-wide STRICT").await;
    let hello = s_client(SocketAddr::new(server, 9080), &[]).await;
    assert!(
        hello.contains("New, TLSv1.3, Cipher is TLS_"),
        "no TLS handshake with the server:\n{hello}"
    );
    let san = subject_alt_name(&hello).await;
    assert!(san.contains(&format!("URI:{DETAILS_ID}")), "{san}");
    let r = get(proxy, url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "client → server over mTLS: {}", r.text());
    let cert = certificate(client).await;
    let lifetime_left = cert["expires"].as_u64().unwrap().saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    assert!(
        lifetime_left <= 21,
        "the client certificate should last 20 s, expires in {lifetime_left} s: {cert}"
    );

    mesh.stop_control_plane();
    assert!(
        tokio::time::timeout(Duration::from_secs(2), get(mesh.api, "/ready", &[]))
            .await
            .map_or(true, |r| r.is_err()),
        "the control plane should be gone"
    );

    // Past the renewal point: the proxies keep serving with what they hold.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(12) {
        let r = get(proxy, url, &[]).await.unwrap();
        assert_eq!(
            r.status,
            200,
            "{:?} after the CA went down: {}",
            down.elapsed(),
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = get(proxy, url, &[]).await.unwrap();
    assert_eq!(r.status, 200, "12 s after the CA went down: {}", r.text());
    let log = log_of(&mesh, &client_proxy);
    assert!(
        log.contains("renewal failed"),
        "the client proxy should log the failed renewal:\n{log}"
    );
    // And says so in its metrics: failures counted, the expiry in force.
    let stats = get(SocketAddr::new(client, 15000), "/stats", &[])
        .await
        .unwrap()
        .text();
    let value = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /stats:\n{stats}"))
    };
    assert!(value("server.cert_renewal_failures") > 0, "{stats}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        value("server.cert_expiry_timestamp_seconds") > now,
        "{stats}"
    );
}

/// Istio's auto mTLS looks at the server's PeerAuthentication too: an
/// endpoint whose workload (or port) policy is DISABLE gets plaintext from
/// its clients even though it has a sidecar (pilot's EndpointBuilder drops
/// the endpoint's tlsMode label, `ENABLE_AUTO_MTLS_CHECK_POLICIES`, on by
/// default). So BookInfo keeps its ratings when ratings disables mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mtls_respects_a_disabled_peer() {
    let up = Up::start("mtls-auto-disable", pod_net(3), None).await;
    let ratings = SocketAddr::new(up.pod("ratings-v1-").1, 9080);
    let disable = up.file(
        "ratings-disable",
        &peer_authentication("ratings", "default", Some("ratings"), "DISABLE", ""),
    );
    up.kite(&["apply", "-f", &disable]);
    // Ratings' inbound is plaintext only once it presents no certificate.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if !s_client(ratings, &[]).await.contains("BEGIN CERTIFICATE") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ratings still takes TLS 5 s after its DISABLE policy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(plaintext_ok(ratings).await, "DISABLE takes plaintext");

    // Within 5 s the clients follow: ten good pages in a row, stars and all.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut good = 0;
    let mut last = String::new();
    while good < 10 {
        match try_page(up.gateway).await {
            Ok(_) => good += 1,
            Err(e) => {
                good = 0;
                last = e;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pages still fail 5 s after ratings disabled mTLS; last failure: {last}"
        );
    }
}

/// A PeerAuthentication change rebuilds the workload's inbound listener.
/// Envoy swaps a listener's configuration on the socket it already has, so
/// the port never stops accepting; connections are not refused meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_keeps_the_inbound_port_open() {
    let _serial = SERIAL.lock().await;
    let options = MeshOptions {
        identity: true,
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start_with("mtls-listener-swap", Sidecar::Kite, options).await;
    mesh.apply(&[&sample("bookinfo/platform/kube/bookinfo.yaml")]);
    mesh.add_pod("details", "v1", "bookinfo-details").await;
    mesh.synced(1).await;
    let addr = SocketAddr::new(mesh.pods[0].pod_ip, 9080);

    // Connect to the inbound port every few milliseconds meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut tries, mut refused) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = tokio::net::TcpStream::connect(addr).await
                    && e.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    refused += 1;
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (tries, refused)
        }
    });
    let strict = write(
        &mesh.dir,
        "mesh-strict.yaml",
        &peer_authentication("default", "istio-system", None, "STRICT", ""),
    );
    mesh.apply(&[&strict]);
    wait_plaintext(addr, false, 5, "mesh-wide STRICT").await;
    mesh.delete(&[&strict]);
    wait_plaintext(addr, true, 5, "STRICT deleted").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, refused) = probe.await.unwrap();
    assert_eq!(
        refused, 0,
        "{refused} of {tries} connections to {addr} were refused while its policy changed"
    );
}

/// Kite's and Envoy's sidecars in one mesh under mesh-wide STRICT: Kite to
/// Kite (productpage → details), Kite to Envoy (productpage → reviews) and
/// Envoy to Kite (reviews → ratings), each hop mutual TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_and_envoy_sidecars_talk_mtls() {
    let _serial = SERIAL.lock().await;
    let options = MeshOptions {
        identity: true,
        workload_cert_ttl: None,
    };
    let mut mesh = Mesh::start_with("mtls-mixed", Sidecar::Kite, options).await;
    let strict = write(
        &mesh.dir,
        "mesh-strict.yaml",
        &peer_authentication("default", "istio-system", None, "STRICT", ""),
    );
    mesh.apply(&[
        &sample("bookinfo/platform/kube/bookinfo.yaml"),
        &sample("bookinfo/networking/destination-rule-all-mtls.yaml"),
        &strict,
    ]);
    mesh.add_pod("details", "v1", "bookinfo-details").await;
    mesh.add_pod("ratings", "v1", "bookinfo-ratings").await;
    // Envoy gets its certificate over SDS from the control plane.
    mesh.sidecar = Sidecar::Envoy;
    mesh.add_pod("reviews", "v2", "bookinfo-reviews").await;
    mesh.sidecar = Sidecar::Kite;
    mesh.add_pod("productpage", "v1", "bookinfo-productpage")
        .await;
    mesh.synced(4).await;
    for pod in &mesh.pods {
        wait_plaintext(SocketAddr::new(pod.pod_ip, 9080), false, 10, &pod.name).await;
        let hello = s_client(SocketAddr::new(pod.pod_ip, 9080), &[]).await;
        let san = subject_alt_name(&hello).await;
        assert!(
            san.contains(&format!(
                "URI:spiffe://cluster.local/ns/default/sa/{}",
                pod.service_account
            )),
            "{}: {san}",
            pod.name
        );
    }
    let pp = mesh.pods.iter().find(|p| p.app == "productpage").unwrap();
    let front = SocketAddr::new(pp.app_ip, 9080);
    let mut last = String::new();
    for _ in 0..50 {
        let r = get(front, "/productpage", &[]).await.unwrap();
        last = r.text();
        if last.contains("gap-x-1 text-black-500") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.contains("Book Details"),
        "productpage (Kite) → details (Kite):\n{last}"
    );
    assert!(
        last.contains("Reviews served by: reviews-v2"),
        "productpage (Kite) → reviews (Envoy):\n{last}"
    );
    assert_eq!(
        last.matches("id=\"glyphicon glyphicon-star\"").count(),
        9,
        "reviews (Envoy) → ratings (Kite):\n{last}"
    );
}

/// Raw TCP between sidecars (a CONNECT tunnel to a `tcp` port) is mutual
/// TLS too: the destination is STRICT, so only a tunnel the client sidecar
/// wraps in mTLS reaches the app.
async fn tcp_over_mtls_with(sidecar: Sidecar) {
    let _serial = SERIAL.lock().await;
    let options = MeshOptions {
        identity: true,
        ..MeshOptions::default()
    };
    let test = format!("mtls-tcp-{sidecar:?}").to_lowercase();
    let mut mesh = Mesh::start_with(&test, sidecar, options).await;
    let services = write(
        &mesh.dir,
        "tcp-service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: details}\nspec:\n  selector: {app: details}\n  ports: [{name: tcp, port: 9080}]\n",
    );
    let strict = write(
        &mesh.dir,
        "mesh-strict.yaml",
        &peer_authentication("default", "istio-system", None, "STRICT", ""),
    );
    mesh.apply(&[&services, &strict]);
    mesh.add_pod("details", "v1", "bookinfo-details").await;
    let server = SocketAddr::new(mesh.pods[0].pod_ip, 9080);
    let client = mesh.add_client("client").await;
    mesh.synced(2).await;
    wait_plaintext(server, false, 5, "mesh-wide STRICT").await;

    let mut tunnel = tokio::net::TcpStream::connect(SocketAddr::new(client, 15001))
        .await
        .unwrap();
    tunnel
        .write_all(b"CONNECT details:9080 HTTP/1.1\r\nHost: details:9080\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    use tokio::io::AsyncReadExt as _;
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
            .await
            .expect("CONNECT answered")
            .unwrap();
        assert!(n > 0, "tunnel closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tunnel
        .write_all(b"GET /health HTTP/1.1\r\nHost: details\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tunnel.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "the app behind a STRICT sidecar answers through the tunnel: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_over_mtls() {
    tcp_over_mtls_with(Sidecar::Kite).await;
}
