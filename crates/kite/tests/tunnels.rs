//! What apps send through their sidecar besides requests to mesh services:
//! TCP through an HTTP CONNECT tunnel, WebSocket upgrades, and requests to
//! hosts outside the registry (passed through under ALLOW_ANY, refused with
//! 502 under a REGISTRY_ONLY Sidecar); the same with Envoy and Kite's proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use support::{Mesh, Sidecar, get};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Echoes every byte back; with `upgrade`, first answers an HTTP upgrade
/// request with 101 as a WebSocket server would.
async fn echo_server(addr: SocketAddr, upgrade: bool) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if upgrade {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                        .await;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// A server outside the mesh: answers every request `200 external`.
async fn external_server(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nexternal")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

/// An HTTP/2-only (h2c) server, as gRPC servers are: answers with the
/// protocol version and authority it saw, and to `…/Unavailable` with gRPC status 14
/// (trailers-only), counting those calls.
async fn h2c_server(addr: SocketAddr) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let unavailable = Arc::new(AtomicUsize::new(0));
    let calls = unavailable.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let calls = calls.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let calls = calls.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let status = if path.ends_with("/Unavailable") {
                                calls.fetch_add(1, Ordering::SeqCst);
                                "14"
                            } else {
                                "0"
                            };
                            let authority = req
                                .uri()
                                .authority()
                                .map(ToString::to_string)
                                .unwrap_or_default();
                            let body = format!("{:?} {authority} {path}", req.version());
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", status)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
            });
        }
    });
    unavailable
}

/// One request over HTTP/2 with prior knowledge, as a gRPC client sends it.
async fn h2c_request(proxy: SocketAddr, uri: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\0",
        )))
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads an HTTP response head from `s`.
async fn head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_ne!(
            s.read(&mut byte).await.unwrap(),
            0,
            "closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn echo_round_trip(s: &mut TcpStream, message: &[u8]) {
    s.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
}

async fn scenario(sidecar: Sidecar) {
    let mut mesh = Mesh::start(&format!("{sidecar:?}-tunnels").to_lowercase(), sidecar).await;
    let echo_ip = mesh.spare_ip();
    let ws_ip = mesh.spare_ip();
    let grpc_ip = mesh.spare_ip();
    echo_server(SocketAddr::new(echo_ip, 9000), false).await;
    echo_server(SocketAddr::new(ws_ip, 8000), true).await;
    let unavailable = h2c_server(SocketAddr::new(grpc_ip, 8090)).await;
    let config = mesh.dir.join("services.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: tcp, port: 9000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ws}}
spec:
  selector: {{app: ws}}
  ports: [{{name: http, port: 8000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: grpc}}
spec:
  selector: {{app: grpc}}
  ports: [{{name: grpc, port: 8090}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: grpc-1}}
spec: {{address: {grpc_ip}, labels: {{app: grpc}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-1}}
spec: {{address: {echo_ip}, labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ws-1}}
spec: {{address: {ws_ip}, labels: {{app: ws}}}}
"
        ),
    )
    .unwrap();
    mesh.apply(&[config.to_str().unwrap()]);
    let client = mesh.add_client("client").await;
    mesh.synced(1).await;
    let proxy = SocketAddr::new(client, 15001);

    let mut tunnel = TcpStream::connect(proxy).await.unwrap();
    tunnel
        .write_all(b"CONNECT echo:9000 HTTP/1.1\r\nHost: echo:9000\r\n\r\n")
        .await
        .unwrap();
    let answer = head(&mut tunnel).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    echo_round_trip(&mut tunnel, b"hello over CONNECT\n").await;
    echo_round_trip(&mut tunnel, b"and again\n").await;

    let mut ws = TcpStream::connect(proxy).await.unwrap();
    ws.write_all(
        b"GET http://ws:8000/chat HTTP/1.1\r\nHost: ws:8000\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = head(&mut ws).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("upgrade: websocket"),
        "{answer}"
    );
    echo_round_trip(&mut ws, b"\x81\x05hello").await;

    // gRPC: HTTP/2 from the app, and HTTP/2 to a port named grpc.
    let (status, body) = h2c_request(proxy, "http://grpc:8090/kite.Echo/Ping").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "HTTP/2.0 grpc:8090 /kite.Echo/Ping"),
        "HTTP/2 to the server, with the authority the app used"
    );

    // gRPC retry conditions: Istio's default policy retries `unavailable`
    // twice; `5xx` does not cover a gRPC status; `unavailable` named with
    // three attempts makes four calls.
    let calls = |expected: usize, why: &'static str| {
        let unavailable = unavailable.clone();
        async move {
            let before = unavailable.load(Ordering::SeqCst);
            let (status, _) = h2c_request(proxy, "http://grpc:8090/kite.Echo/Unavailable").await;
            assert_eq!(status, 200);
            assert_eq!(
                unavailable.load(Ordering::SeqCst) - before,
                expected,
                "{why}"
            );
        }
    };
    calls(3, "the default policy").await;
    let retries = mesh.dir.join("grpc-retries.yaml");
    for (retry_on, attempts, expected) in [("5xx", 2, 1), ("unavailable", 3, 4)] {
        std::fs::write(
            &retries,
            format!(
                "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: [grpc]
  http:
  - route: [{{destination: {{host: grpc}}}}]
    retries: {{attempts: {attempts}, retryOn: {retry_on}}}
"
            ),
        )
        .unwrap();
        mesh.apply(&[retries.to_str().unwrap()]);
        mesh.synced(1).await;
        calls(expected, retry_on).await;
    }
    mesh.delete(&[retries.to_str().unwrap()]);
    mesh.synced(1).await;

    let outside = SocketAddr::new(mesh.spare_ip(), 8099);
    external_server(outside).await;
    let url = format!("http://{outside}/anything");
    let r = get(proxy, &url, &[]).await.unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "external"),
        "ALLOW_ANY passes unknown hosts"
    );
    let lockdown = mesh.dir.join("registry-only.yaml");
    std::fs::write(
        &lockdown,
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
",
    )
    .unwrap();
    mesh.apply(&[lockdown.to_str().unwrap()]);
    mesh.synced(1).await;
    let r = get(proxy, &url, &[]).await.unwrap();
    assert_eq!(
        r.status,
        502,
        "REGISTRY_ONLY refuses unknown hosts: {}",
        r.text()
    );
    assert!(r.text().contains("REGISTRY_ONLY"), "{}", r.text());
    mesh.delete(&[lockdown.to_str().unwrap()]);
    mesh.synced(1).await;
    assert_eq!(get(proxy, &url, &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_through_envoy() {
    scenario(Sidecar::Envoy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_through_kite_proxy() {
    scenario(Sidecar::Kite).await;
}
