//! Istio's "Plug in CA Certificates" task (istio-api.md §3.18) on `kite up`:
//! with Istio's `cacerts` files in the CA directory, every sidecar presents
//! workload → intermediate → root, as `openssl s_client -showcerts` shows
//! and `openssl verify` accepts; for Kite and Envoy sidecars.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{path::Path, process::Command, time::Duration};

use support::{kite, spawn};

fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split(' '))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Istio's four files, as its Makefile makes them: a root, an intermediate
/// signed by it, and the chain.
fn cacerts(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n").unwrap();
    openssl(
        dir,
        "ecparam -name prime256v1 -genkey -noout -out root-key.pem",
    );
    openssl(
        dir,
        "req -x509 -new -key root-key.pem -sha256 -days 30 -subj /O=Plugged-Root/CN=Root-CA -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out root-cert.pem",
    );
    openssl(
        dir,
        "ecparam -name prime256v1 -genkey -noout -out ca-key.pem",
    );
    openssl(
        dir,
        "req -new -key ca-key.pem -subj /O=Plugged-Intermediate/CN=Intermediate-CA -out ca.csr",
    );
    openssl(
        dir,
        "x509 -req -in ca.csr -CA root-cert.pem -CAkey root-key.pem -CAcreateserial -days 20 -sha256 -extfile ca.ext -out ca-cert.pem",
    );
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    // The root's key stays with whoever runs the PKI, not in the mesh.
    for scratch in ["root-key.pem", "ca.csr", "ca.ext", "root-cert.srl"] {
        let _ = std::fs::remove_file(dir.join(scratch));
    }
}

async fn presented_chain(sidecar: &str, net: u8) {
    let dir = std::env::temp_dir().join(format!("kite-plugin-ca-{sidecar}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    cacerts(&state.join("ca"));
    let mut up = spawn(
        "kite-up",
        &dir,
        kite()
            .args(["up", "--sidecar", sidecar, "--state-dir"])
            .arg(&state)
            .args([
                "--gateway-ip",
                &format!("127.{net}.255.1"),
                "--control-ip",
                &format!("127.{net}.255.2"),
            ])
            .args(["--pod-net", &net.to_string()])
            .env("ENVOY", support::envoy_bin()),
    );
    for _ in 0..600 {
        if std::fs::read_to_string(&up.log)
            .unwrap_or_default()
            .contains("BookInfo is up")
        {
            break;
        }
        assert!(up.running(), "kite up exited early");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The details pod's inbound port, as a client would see it.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-showcerts",
            "-connect",
            &format!("127.{net}.0.2:9080"),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pems: Vec<String> = text
        .split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|rest| {
            format!(
                "-----BEGIN CERTIFICATE-----{}-----END CERTIFICATE-----\n",
                rest.split("-----END CERTIFICATE-----").next().unwrap()
            )
        })
        .collect();
    assert_eq!(
        pems.len(),
        3,
        "{sidecar}: leaf, intermediate, root expected:\n{text}"
    );
    assert!(
        text.contains("Intermediate-CA") && text.contains("Root-CA"),
        "{text}"
    );
    std::fs::write(dir.join("leaf.pem"), &pems[0]).unwrap();
    std::fs::write(dir.join("intermediate.pem"), &pems[1]).unwrap();
    let ca = state.join("ca");
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.join("root-cert.pem"))
        .arg("-untrusted")
        .arg(dir.join("intermediate.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verdict.contains("leaf.pem: OK"),
        "{sidecar}: {verdict}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&san.stdout)
            .contains("URI:spiffe://cluster.local/ns/default/sa/bookinfo-details"),
        "{}",
        String::from_utf8_lossy(&san.stdout)
    );
    assert!(
        up.interrupt(Duration::from_secs(30)).is_some(),
        "kite up did not stop"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_sidecars_present_the_plugged_chain() {
    presented_chain(
        "kite",
        132 + u8::try_from(std::process::id() % 2).unwrap() * 4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecars_present_the_plugged_chain() {
    presented_chain(
        "envoy",
        134 + u8::try_from(std::process::id() % 2).unwrap() * 4,
    )
    .await;
}
