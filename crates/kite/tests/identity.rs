//! Workload identity end to end: `kite control`'s CA (Citadel) mints tokens
//! and signs CSRs, `kite proxy` obtains a certificate for its own service
//! account only, reports it on `/certs` and is not ready without one; an
//! operator's plug-in CA (Istio's `cacerts` files) signs through its
//! intermediate. Certificates are checked with the `openssl` CLI, not with
//! Kite's own parsing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde_json::Value;
use support::{Mesh, Proc, Sidecar, get, kite, send, spawn};

/// `Mesh::start` derives its addresses from the process id, so two meshes
/// alive at once in this test binary would collide: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REVIEWS_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";

/// What a proxy needs to obtain its certificate.
struct Creds {
    ca: SocketAddr,
    token: PathBuf,
    root: PathBuf,
}

fn ca_of(mesh: &Mesh) -> SocketAddr {
    SocketAddr::new(mesh.api.ip(), 15012)
}

/// `POST /apis/tokens`: a token for `namespace`/`sa`; returns the reply
/// (`token`, `identity`, `root`).
async fn mint(api: SocketAddr, namespace: &str, sa: &str) -> Value {
    let body = serde_json::json!({"namespace": namespace, "serviceAccount": sa}).to_string();
    let r = send(
        api,
        "POST",
        "/apis/tokens",
        &[("content-type", "application/json")],
        Bytes::from(body),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status,
        200,
        "minting a token for {namespace}/{sa}: {}",
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// `kite proxy` for pod `pod` in namespace default, with a workload identity.
fn start_proxy(
    dir: &Path,
    pod: &str,
    ip: IpAddr,
    service_account: &str,
    xds: SocketAddr,
    creds: &Creds,
) -> Proc {
    let mut cmd = kite();
    cmd.args(["proxy", "--ip", &ip.to_string(), "--pod", pod])
        .args([
            "--namespace",
            "default",
            "--labels",
            "app=reviews,version=v1",
        ])
        .args(["--service-account", service_account])
        .args(["--xds", &xds.to_string(), "--ca", &creds.ca.to_string()])
        .arg("--token-file")
        .arg(&creds.token)
        .arg("--ca-root")
        .arg(&creds.root)
        .args(["--trust-domain", "cluster.local"])
        .env("KITE_LOG", "info");
    spawn(&format!("{pod}-kite-proxy"), dir, &mut cmd)
}

/// The proxy's `/certs`, once its admin port answers.
async fn certs(ip: IpAddr) -> Option<Value> {
    let r = get(SocketAddr::new(ip, 15000), "/certs", &[]).await.ok()?;
    assert_eq!(r.status, 200, "/certs of {ip}: {}", r.text());
    Some(serde_json::from_slice(&r.body).unwrap())
}

/// `(status, body)` of the proxy's `/healthz/ready`.
async fn ready(ip: IpAddr) -> (u16, String) {
    let r = get(SocketAddr::new(ip, 15021), "/healthz/ready", &[])
        .await
        .unwrap();
    (r.status, r.text())
}

/// Waits (10 s at most) until the proxy at `ip` holds a certificate, and
/// returns it.
async fn wait_certificate(ip: IpAddr) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        if let Some(v) = certs(ip).await {
            if let Some(cert) = v["certificates"].get(0) {
                return cert.clone();
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy at {ip} has no certificate after 10 s; /certs: {last}");
}

/// Waits (`secs` at most) until the proxy at `ip` is pending for a reason
/// that `matches`, and returns the reason; panics if it gets a certificate.
async fn wait_pending(ip: IpAddr, secs: u64, matches: impl Fn(&str) -> bool) -> String {
    let mut last = Value::Null;
    for _ in 0..secs * 10 {
        if let Some(v) = certs(ip).await {
            assert_eq!(
                v["certificates"].as_array().map(Vec::len),
                Some(0),
                "the proxy at {ip} must not get a certificate: {v}"
            );
            if let Some(why) = v["pending"].as_str()
                && matches(why)
            {
                return why.to_owned();
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy at {ip} did not report the expected reason within {secs} s; /certs: {last}");
}

/// Waits (10 s at most) for `/healthz/ready` to answer 200.
async fn wait_ready(ip: IpAddr) {
    let mut last = (0, String::new());
    for _ in 0..100 {
        if let Ok(r) = get(SocketAddr::new(ip, 15021), "/healthz/ready", &[]).await {
            if r.status == 200 {
                return;
            }
            last = (r.status, r.text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the proxy at {ip} is not ready after 10 s: {} {}",
        last.0, last.1
    );
}

/// Runs `openssl <args>` in `dir`; panics with its output unless it succeeds.
fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn chain_of(cert: &Value) -> Vec<String> {
    cert["chain"]
        .as_array()
        .unwrap_or_else(|| panic!("no chain in {cert}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_gets_its_own_identity() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("identity-own", Sidecar::Kite).await;
    let minted = mint(mesh.api, "default", "bookinfo-reviews").await;
    assert_eq!(minted["identity"], REVIEWS_ID, "{minted}");
    let creds = Creds {
        ca: ca_of(&mesh),
        token: write(
            &mesh.dir,
            "reviews.token",
            minted["token"].as_str().unwrap(),
        ),
        root: write(&mesh.dir, "root.pem", minted["root"].as_str().unwrap()),
    };
    let ip = mesh.spare_ip();
    let proxy = start_proxy(
        &mesh.dir,
        "reviews-v1-x",
        ip,
        "bookinfo-reviews",
        mesh.xds,
        &creds,
    );
    mesh.procs.push(proxy);

    let cert = wait_certificate(ip).await;
    assert_eq!(cert["identity"], REVIEWS_ID, "{cert}");
    let expires = cert["expires"].as_u64().unwrap();
    let ahead = expires.saturating_sub(unix_now());
    assert!(
        (23 * 3600..=25 * 3600).contains(&ahead),
        "the certificate should last about 24 h, expires in {ahead} s: {cert}"
    );

    let chain = chain_of(&cert);
    write(&mesh.dir, "leaf.pem", &chain[0]);
    let verified = openssl(&mesh.dir, &["verify", "-CAfile", "root.pem", "leaf.pem"]);
    assert!(verified.contains("OK"), "openssl verify: {verified}");
    let text = openssl(&mesh.dir, &["x509", "-noout", "-text", "-in", "leaf.pem"]);
    assert!(
        text.contains(&format!("URI:{REVIEWS_ID}")),
        "the leaf's SAN should be the SPIFFE id:\n{text}"
    );

    wait_ready(ip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identity_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("identity-refused", Sidecar::Kite).await;
    let ratings = mint(mesh.api, "default", "bookinfo-ratings").await;
    let root = write(&mesh.dir, "root.pem", ratings["root"].as_str().unwrap());

    // A ratings token presented by a proxy claiming to be reviews.
    let stolen = Creds {
        ca: ca_of(&mesh),
        token: write(
            &mesh.dir,
            "ratings.token",
            ratings["token"].as_str().unwrap(),
        ),
        root: root.clone(),
    };
    let thief = mesh.spare_ip();
    let proxy = start_proxy(
        &mesh.dir,
        "reviews-v1-thief",
        thief,
        "bookinfo-reviews",
        mesh.xds,
        &stolen,
    );
    mesh.procs.push(proxy);

    // A token the CA never issued.
    let garbage = Creds {
        ca: ca_of(&mesh),
        token: write(&mesh.dir, "garbage.token", "not-a-token-the-ca-issued"),
        root,
    };
    let forger = mesh.spare_ip();
    let proxy = start_proxy(
        &mesh.dir,
        "reviews-v1-forger",
        forger,
        "bookinfo-reviews",
        mesh.xds,
        &garbage,
    );
    mesh.procs.push(proxy);

    let why = wait_pending(thief, 5, |why| {
        let why = why.to_lowercase();
        why.contains("permission") || why.contains("identity")
    })
    .await;
    let (status, body) = ready(thief).await;
    assert_eq!(
        status, 503,
        "a proxy refused its identity must not be ready: {body}"
    );
    assert!(
        body.contains(why.trim()),
        "/healthz/ready should give the refusal {why:?} as the reason: {body}"
    );

    let why = wait_pending(forger, 5, |why| {
        let why = why.to_lowercase();
        why.contains("token") || why.contains("unauthenticated")
    })
    .await;
    let (status, body) = ready(forger).await;
    assert_eq!(
        status, 503,
        "a proxy with a forged token must not be ready ({why}): {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ca_means_not_ready() {
    let _serial = SERIAL.lock().await;
    let mut mesh = Mesh::start("identity-no-ca", Sidecar::Kite).await;
    let minted = mint(mesh.api, "default", "bookinfo-reviews").await;
    let nowhere = SocketAddr::new(mesh.spare_ip(), 15012);
    let creds = Creds {
        ca: nowhere,
        token: write(
            &mesh.dir,
            "reviews.token",
            minted["token"].as_str().unwrap(),
        ),
        root: write(&mesh.dir, "root.pem", minted["root"].as_str().unwrap()),
    };
    let ip = mesh.spare_ip();
    let proxy = start_proxy(
        &mesh.dir,
        "reviews-v1-x",
        ip,
        "bookinfo-reviews",
        mesh.xds,
        &creds,
    );
    mesh.procs.push(proxy);

    // Once a request to the missing CA has failed, the reason names it.
    let why = wait_pending(ip, 10, |why| why.contains(&nowhere.to_string())).await;
    let (status, body) = ready(ip).await;
    assert_eq!(
        status, 503,
        "a proxy without a certificate must not be ready ({why}): {body}"
    );
    assert!(
        body.contains("CA") || body.contains("certificate"),
        "/healthz/ready should say the certificate is missing: {body}"
    );
}

/// Istio's `cacerts` files made by an operator with openssl: a root, and an
/// intermediate signed by it that the mesh CA signs with.
fn plug_in_cacerts(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    // Each line is one openssl command (no argument holds a space).
    let ossl = |line: &str| openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
    ossl("ecparam -name prime256v1 -genkey -noout -out root-key.pem");
    ossl(
        "req -x509 -new -key root-key.pem -sha256 -days 3650 \
         -subj /O=Kite-Test/CN=Kite-Test-Root-CA \
         -addext basicConstraints=critical,CA:TRUE \
         -addext keyUsage=critical,keyCertSign,cRLSign \
         -out root-cert.pem",
    );
    ossl("ecparam -name prime256v1 -genkey -noout -out ca-key.pem");
    ossl("req -new -key ca-key.pem -subj /O=Kite-Test/CN=Kite-Test-Intermediate-CA -out ca.csr");
    write(
        dir,
        "ca.ext",
        "basicConstraints=critical,CA:TRUE\n\
         keyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid:always\n",
    );
    ossl(
        "x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem -set_serial 2 \
         -days 730 -sha256 -extfile ca.ext -out ca-cert.pem",
    );
    let intermediate = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap();
    let root = std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    write(dir, "cert-chain.pem", &format!("{intermediate}{root}"));
    // Only the files of Istio's cacerts secret stay.
    for scratch in ["root-key.pem", "ca.csr", "ca.ext"] {
        std::fs::remove_file(dir.join(scratch)).unwrap();
    }
}

fn subject(dir: &Path, pem_file: &str) -> String {
    openssl(dir, &["x509", "-noout", "-subject", "-in", pem_file])
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plug_in_ca_chain() {
    let _serial = SERIAL.lock().await;
    // The mesh only lends this test addresses and a directory.
    let mut mesh = Mesh::start("identity-plug-in", Sidecar::Kite).await;
    let cacerts = mesh.dir.join("cacerts");
    plug_in_cacerts(&cacerts);

    let cp = mesh.spare_ip();
    let (xds, api, ca) = (
        SocketAddr::new(cp, 15010),
        SocketAddr::new(cp, 15014),
        SocketAddr::new(cp, 15012),
    );
    let control = spawn(
        "plug-in-control",
        &mesh.dir,
        kite()
            .args([
                "control",
                "--xds",
                &xds.to_string(),
                "--api",
                &api.to_string(),
            ])
            .args(["--ca", &ca.to_string(), "--ca-dir"])
            .arg(&cacerts)
            .env("KITE_LOG", "info"),
    );
    mesh.procs.push(control);
    mesh.wait_http(api, "/ready").await;

    // The CA publishes the operator's root, not one of its own.
    let r = get(api, "/ca/root", &[]).await.unwrap();
    assert_eq!(r.status, 200, "/ca/root: {}", r.text());
    write(&mesh.dir, "published-root.pem", &r.text());
    assert_eq!(
        subject(&mesh.dir, "published-root.pem"),
        subject(&cacerts, "root-cert.pem"),
        "GET /ca/root should return the plug-in root"
    );

    let minted = mint(api, "default", "bookinfo-reviews").await;
    let creds = Creds {
        ca,
        token: write(
            &mesh.dir,
            "reviews.token",
            minted["token"].as_str().unwrap(),
        ),
        root: mesh.dir.join("published-root.pem"),
    };
    let ip = mesh.spare_ip();
    let proxy = start_proxy(
        &mesh.dir,
        "reviews-v1-x",
        ip,
        "bookinfo-reviews",
        xds,
        &creds,
    );
    mesh.procs.push(proxy);

    let cert = wait_certificate(ip).await;
    assert_eq!(cert["identity"], REVIEWS_ID, "{cert}");
    let chain = chain_of(&cert);
    assert_eq!(
        chain.len(),
        3,
        "the chain should be leaf, intermediate, root: {cert}"
    );
    for (i, pem) in chain.iter().enumerate() {
        write(&mesh.dir, &format!("chain-{i}.pem"), pem);
    }
    let leaf = mesh.dir.join("chain-0.pem");
    let verified = openssl(
        &cacerts,
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "ca-cert.pem",
            leaf.to_str().unwrap(),
        ],
    );
    assert!(verified.contains("OK"), "openssl verify: {verified}");
    assert_eq!(
        subject(&mesh.dir, "chain-1.pem"),
        subject(&cacerts, "ca-cert.pem"),
        "the second certificate should be the plug-in intermediate"
    );
    assert_eq!(
        subject(&mesh.dir, "chain-2.pem"),
        subject(&cacerts, "root-cert.pem"),
        "the last certificate should be the plug-in root"
    );

    wait_ready(ip).await;
}
