//! DestinationRule `tls.mode` SIMPLE and MUTUAL: the sidecar originates TLS
//! to a server outside the mesh (`openssl s_server`) with the CA, SNI and
//! client certificate from files, as Istio's egress TLS origination task
//! does; for Kite and Envoy sidecars.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    time::Duration,
};

use support::{Mesh, Proc, Sidecar, get, spawn};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<stem>.pem` and `<stem>.key`, signed by `ca` (or self-signed as a CA
/// when `ca` is None), naming `dns`.
fn cert(dir: &Path, stem: &str, ca: Option<&str>, dns: &str) {
    let key = format!("{stem}.key");
    let pem = format!("{stem}.pem");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ],
    );
    let subj = format!("/CN={dns}");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-sha256",
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                &pem,
            ],
        ),
        Some(ca) => {
            let csr = format!("{stem}.csr");
            let san = format!("subjectAltName=DNS:{dns}");
            openssl(
                dir,
                &[
                    "req", "-new", "-key", &key, "-subj", &subj, "-addext", &san, "-out", &csr,
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-sha256",
                    "-copy_extensions",
                    "copy",
                    "-out",
                    &pem,
                ],
            );
        }
    }
}

/// `openssl s_server -www` on `addr`, demanding a client certificate from
/// `ca` when `client_ca` is set.
async fn s_server(dir: &Path, addr: SocketAddr, client_ca: Option<&str>) -> Proc {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args([
        "s_server",
        "-accept",
        &addr.to_string(),
        "-cert",
        "server.pem",
        "-key",
        "server.key",
        "-www",
    ]);
    if let Some(ca) = client_ca {
        cmd.args(["-Verify", "1", "-CAfile", ca]);
    }
    let proc = spawn(&format!("s_server-{}", addr.port()), dir, &mut cmd);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return proc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("s_server on {addr} did not start");
}

/// The status and body of a plaintext GET the app sends through its
/// sidecar, which originates TLS.
async fn through(proxy: SocketAddr, url: &str) -> (u16, String) {
    let r = get(proxy, url, &[]).await.unwrap();
    (r.status, r.text())
}

fn destination_rule(dir: &Path, name: &str, host: &str, tls: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

async fn scenario(sidecar: Sidecar) {
    let mut mesh = Mesh::start(
        &format!("{sidecar:?}-tls-origination").to_lowercase(),
        sidecar,
    )
    .await;
    let dir = mesh.dir.clone();
    cert(&dir, "ca", None, "Example CA");
    cert(&dir, "other-ca", None, "Other CA");
    cert(&dir, "server", Some("ca"), "secure.example.test");
    cert(&dir, "client", Some("ca"), "client.example.test");
    let d = dir.display();

    let simple_ip: IpAddr = mesh.spare_ip();
    let mutual_ip: IpAddr = mesh.spare_ip();
    let _simple = s_server(&dir, SocketAddr::new(simple_ip, 8443), None).await;
    let _mutual = s_server(&dir, SocketAddr::new(mutual_ip, 8443), Some("ca.pem")).await;
    let entries = dir.join("entries.yaml");
    std::fs::write(
        &entries,
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [secure.example.test]
  location: MESH_EXTERNAL
  ports: [{{number: 8443, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {simple_ip}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: mutual}}
spec:
  hosts: [mutual.example.test]
  location: MESH_EXTERNAL
  ports: [{{number: 8443, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {mutual_ip}}}]
"
        ),
    )
    .unwrap();
    mesh.apply(&[entries.to_str().unwrap()]);
    let client = mesh.add_client("client").await;
    let proxy = SocketAddr::new(client, 15001);
    let secure = "http://secure.example.test:8443/";
    let mutual = "http://mutual.example.test:8443/";

    let simple = destination_rule(
        &dir,
        "secure",
        "secure.example.test",
        &format!("{{mode: SIMPLE, caCertificates: {d}/ca.pem, sni: secure.example.test}}"),
    );
    mesh.apply(&[&simple]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, secure).await;
    assert_eq!(status, 200, "SIMPLE with the right CA: {body}");
    assert!(
        body.contains("s_server"),
        "the answer is the TLS server's: {body}"
    );

    // A CA that did not sign the server's certificate: no connection.
    let wrong_ca = destination_rule(
        &dir,
        "secure",
        "secure.example.test",
        &format!("{{mode: SIMPLE, caCertificates: {d}/other-ca.pem, sni: secure.example.test}}"),
    );
    mesh.apply(&[&wrong_ca]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, secure).await;
    assert_eq!(
        status, 503,
        "a server the CA did not sign is refused: {body}"
    );

    // The certificate must name one of subjectAltNames.
    let wrong_name = destination_rule(
        &dir,
        "secure",
        "secure.example.test",
        &format!(
            "{{mode: SIMPLE, caCertificates: {d}/ca.pem, sni: secure.example.test, subjectAltNames: [other.example.test]}}"
        ),
    );
    mesh.apply(&[&wrong_name]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, secure).await;
    assert_eq!(status, 503, "a server with another name is refused: {body}");

    // Without subjectAltNames, the certificate must name the SNI.
    let wrong_sni = destination_rule(
        &dir,
        "secure",
        "secure.example.test",
        &format!("{{mode: SIMPLE, caCertificates: {d}/ca.pem, sni: other.example.test}}"),
    );
    mesh.apply(&[&wrong_sni]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, secure).await;
    assert_eq!(
        status, 503,
        "a certificate that does not name the SNI is refused: {body}"
    );

    // The server wants a client certificate: SIMPLE is not enough, MUTUAL
    // with the client's files is.
    let no_client_cert = destination_rule(
        &dir,
        "mutual",
        "mutual.example.test",
        &format!("{{mode: SIMPLE, caCertificates: {d}/ca.pem, sni: mutual.example.test}}"),
    );
    mesh.apply(&[&no_client_cert]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, mutual).await;
    assert_eq!(status, 503, "no client certificate, no answer: {body}");
    let with_client_cert = destination_rule(
        &dir,
        "mutual",
        "mutual.example.test",
        &format!(
            "{{mode: MUTUAL, caCertificates: {d}/ca.pem, clientCertificate: {d}/client.pem, privateKey: {d}/client.key, sni: secure.example.test}}"
        ),
    );
    mesh.apply(&[&with_client_cert]);
    mesh.synced(1).await;
    let (status, body) = through(proxy, mutual).await;
    assert_eq!(status, 200, "MUTUAL with the client's certificate: {body}");
    assert!(body.contains("s_server"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_with_envoy() {
    scenario(Sidecar::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_with_kite_proxy() {
    scenario(Sidecar::Kite).await;
}
