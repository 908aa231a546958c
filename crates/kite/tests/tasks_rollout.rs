//! Graceful endpoint changes on `kite up`, with Kite sidecars and with
//! Envoy sidecars: under steady load httpbin scales up, down and restarts
//! pod by pod (`kite scale`, `kite rollout restart`) and not one request
//! fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{net::IpAddr, time::Duration};

use support::{
    Sidecar, sample,
    up::{Up, code_count},
};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + slot * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    endpoint_changes(Sidecar::Kite, net(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    endpoint_changes(Sidecar::Envoy, net(1)).await;
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

    let latencies = up.dir.join("latencies");
    let load = up
        .command()
        .args(["load", "-c", "4", "--qps", "100", "-n", "1500"])
        .arg("--latencies")
        .arg(&latencies)
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
    // Each request's latency, for pooling runs (bench/run.sh).
    let written = std::fs::read_to_string(&latencies).unwrap();
    let micros: Vec<u64> = written.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(micros.len(), 1500, "a latency per request");
    assert!(micros.iter().all(|&us| us > 0), "{written}");
}
