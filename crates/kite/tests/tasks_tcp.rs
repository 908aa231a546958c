//! Istio's TCP traffic-shifting task (istio-api.md §3.4) on `kite up`, with
//! Kite sidecars and with Envoy sidecars: tcp-echo v1 and v2 behind the
//! ingress gateway's TCP port 31400, all to v1, then 80/20.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use support::{Sidecar, sample, up::Up};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn net(slot: u8) -> u8 {
    140 + u8::try_from(std::process::id() % 4).unwrap() * 12 + 8 + slot * 2
}

/// One connection: a timestamp line out, the echo back.
async fn echo(gw: SocketAddr, n: usize) -> Option<String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(gw).await.ok()?;
        conn.write_all(format!("{n} {:?}\n", std::time::SystemTime::now()).as_bytes())
            .await
            .ok()?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).await.ok()?;
        Some(line)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Replies from v1 (`one …`) and v2 (`two …`) over `n` connections.
async fn shares(gw: SocketAddr, n: usize) -> (usize, usize) {
    let mut seen = (0, 0);
    for i in 0..n {
        let reply = echo(gw, i).await.unwrap_or_default();
        if reply.starts_with("one ") {
            seen.0 += 1;
        } else if reply.starts_with("two ") {
            seen.1 += 1;
        } else {
            panic!("connection {i}: unexpected reply {reply:?}");
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_traffic_shifting_with_kite_sidecars() {
    let _serial = SERIAL.lock().await;
    tcp_traffic_shifting(Sidecar::Kite, net(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_traffic_shifting_with_envoy_sidecars() {
    let _serial = SERIAL.lock().await;
    tcp_traffic_shifting(Sidecar::Envoy, net(1)).await;
}

async fn tcp_traffic_shifting(sidecar: Sidecar, net: u8) {
    let up = Up::start(
        "tasks-tcp",
        sidecar,
        net,
        &[
            &sample("tcp-echo/tcp-echo-services.yaml"),
            &sample("curl/curl.yaml"),
        ],
    )
    .await;
    up.pods("default", "tcp-echo", 2).await;
    let gw = SocketAddr::new(up.gateway_ip, 31400);
    up.apply(&[&sample("tcp-echo/tcp-echo-all-v1.yaml")]).await;
    let mut first = None;
    for i in 0..50 {
        first = echo(gw, i).await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.as_deref().is_some_and(|l| l.starts_with("one 0 ")),
        "{first:?}"
    );
    assert_eq!(shares(gw, 20).await, (20, 0), "tcp-echo-all-v1");

    up.apply(&[&sample("tcp-echo/tcp-echo-20-v2.yaml")]).await;
    // Four standard deviations either side over 200 connections.
    let (one, two) = shares(gw, 200).await;
    assert!(
        (17..=63).contains(&two),
        "80/20 over 200 connections: {one} one, {two} two"
    );
}
