//! `kite up` as a user runs it: BookInfo with a sidecar beside every
//! workload and the ingress gateway in front, configured only by the
//! control plane; Ctrl-C (SIGTERM) leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use support::{Proc, get, kite, sample, spawn};

async fn scenario(sidecar: &str, net: u8) {
    let dir = std::env::temp_dir().join(format!("kite-up-{sidecar}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gateway_ip = Ipv4Addr::new(127, net, 255, 1);
    let control_ip = Ipv4Addr::new(127, net, 255, 2);
    let mut up: Proc = spawn(
        "kite-up",
        &dir,
        kite()
            .args(["up", "--sidecar", sidecar, "--state-dir"])
            .arg(dir.join("state"))
            .args([
                "--gateway-ip",
                &gateway_ip.to_string(),
                "--control-ip",
                &control_ip.to_string(),
            ])
            .args(["--pod-net", &net.to_string()])
            .env("ENVOY", support::envoy_bin()),
    );
    let mut ready = false;
    for _ in 0..600 {
        let out = std::fs::read_to_string(&up.log).unwrap_or_default();
        if out.contains("BookInfo is up") {
            assert!(
                out.contains(&format!("http://{gateway_ip}:8080/productpage")),
                "{out}"
            );
            ready = true;
            break;
        }
        assert!(up.running(), "kite up exited early:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "kite up did not come up in 60 s");
    let gw = SocketAddr::new(IpAddr::V4(gateway_ip), 8080);

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = get(gw, "/productpage", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        let page = r.text();
        assert!(
            page.contains("<title>Simple Bookstore App</title>") && page.contains("Book Details"),
            "{page}"
        );
        let pod = page
            .split("Reviews served by: ")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned();
        let version = pod.split('-').nth(1).unwrap().to_owned();
        let expected = match version.as_str() {
            "v1" => !page.contains("glyphicon"),
            "v2" => page.contains("gap-x-1 text-black-500"),
            _ => page.contains("gap-x-1 text-red-500"),
        };
        assert!(expected, "stars do not match {pod}");
        seen.insert(version);
    }
    assert_eq!(seen.len(), 3, "all reviews versions expected: {seen:?}");
    assert_eq!(get(gw, "/health", &[]).await.unwrap().status, 404);

    let control = format!("http://{control_ip}:15014");
    let out = kite()
        .args([
            "apply",
            "-f",
            &sample("bookinfo/networking/virtual-service-all-v1.yaml"),
        ])
        .env("KITE_CONTROL_PLANE", &control)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v1 = 0;
    for _ in 0..50 {
        let page = get(gw, "/productpage", &[]).await.unwrap().text();
        v1 = if page.contains("Reviews served by: reviews-v1-") {
            v1 + 1
        } else {
            0
        };
        if v1 == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        v1, 10,
        "virtual-service-all-v1 should send every request to v1"
    );

    // Ctrl-C: everything it started stops.
    let pod_ip = Ipv4Addr::new(127, net, 0, 2);
    let status = up
        .interrupt(Duration::from_secs(30))
        .expect("kite up did not stop");
    assert!(status.success(), "kite up exit: {status}");
    for addr in [
        gw,
        SocketAddr::new(IpAddr::V4(pod_ip), 15001),
        SocketAddr::new(IpAddr::V4(control_ip), 15010),
    ] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_with_kite_sidecars() {
    scenario(
        "kite",
        80 + u8::try_from(std::process::id() % 40).unwrap() * 4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_with_envoy_sidecars() {
    scenario(
        "envoy",
        82 + u8::try_from(std::process::id() % 40).unwrap() * 4,
    )
    .await;
}
