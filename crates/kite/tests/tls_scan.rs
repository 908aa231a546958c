//! A TLS scanner (sslyze) against a sidecar's inbound port, for both
//! sidecar kinds: nothing below TLS 1.2, only forward-secret AEAD suites,
//! and a client certificate required.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::Value;
use support::{Proc, kite, spawn};

fn sslyze() -> PathBuf {
    std::env::var_os("SSLYZE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/sslyze")
        })
}

async fn scan(sidecar: &str, net: u8) {
    let dir = std::env::temp_dir().join(format!("kite-tls-scan-{sidecar}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut up: Proc = spawn(
        "kite-up",
        &dir,
        kite()
            .args(["up", "--sidecar", sidecar, "--state-dir"])
            .arg(dir.join("state"))
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
    // The details pod: the first Deployment of bookinfo.yaml.
    let target = format!("127.{net}.0.2:9080");
    let report = dir.join("sslyze.json");
    let out = Command::new(sslyze())
        .arg(format!("--json_out={}", report.display()))
        .arg(&target)
        .output()
        .expect("sslyze (scripts/install-test-tools.sh installs it)");
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "sslyze wrote no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
    let server = &json["server_scan_results"][0];
    assert_eq!(server["connectivity_status"], "COMPLETED", "{server:#}");
    assert_eq!(
        server["connectivity_result"]["client_auth_requirement"], "REQUIRED",
        "the sidecar must require a client certificate"
    );
    let accepted = |suite: &str| -> Vec<String> {
        server["scan_result"][suite]["result"]["accepted_cipher_suites"]
            .as_array()
            .unwrap_or_else(|| panic!("{suite} not scanned: {:#}", server["scan_result"][suite]))
            .iter()
            .map(|c| c["cipher_suite"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for old in [
        "ssl_2_0_cipher_suites",
        "ssl_3_0_cipher_suites",
        "tls_1_0_cipher_suites",
        "tls_1_1_cipher_suites",
    ] {
        assert!(
            accepted(old).is_empty(),
            "{sidecar}: {old} accepted {:?}",
            accepted(old)
        );
    }
    let tls12 = accepted("tls_1_2_cipher_suites");
    assert!(!tls12.is_empty(), "TLS 1.2 must still work");
    for suite in &tls12 {
        let forward_secret = suite.starts_with("TLS_ECDHE_");
        let aead = suite.contains("_GCM_") || suite.contains("CHACHA20_POLY1305");
        assert!(
            forward_secret && aead,
            "{sidecar}: weak TLS 1.2 suite {suite} (all: {tls12:?})"
        );
    }
    assert!(
        !accepted("tls_1_3_cipher_suites").is_empty(),
        "TLS 1.3 preferred"
    );
    assert_eq!(
        server["connectivity_result"]["highest_tls_version_supported"],
        "TLS_1_3"
    );
    assert!(
        up.interrupt(Duration::from_secs(30)).is_some(),
        "kite up did not stop"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kite_sidecar_tls_is_strong() {
    scan(
        "kite",
        50 + u8::try_from(std::process::id() % 20).unwrap() * 4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sidecar_tls_is_strong() {
    scan(
        "envoy",
        52 + u8::try_from(std::process::id() % 20).unwrap() * 4,
    )
    .await;
}
