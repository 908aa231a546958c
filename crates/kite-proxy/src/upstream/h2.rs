//! HTTP/2 upstream connections, one per endpoint.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;

use super::{MeshConnector, SendError};

/// One multiplexed HTTP/2 connection per endpoint. A request keeps the
/// authority the app used (`:authority`) while its connection goes to the
/// endpoint chosen, which a pool keyed by the request's URI cannot do.
pub(crate) struct H2Pool {
    connector: MeshConnector,
    /// Each endpoint's connection behind a lock of its own: requests to an
    /// endpoint whose connect is pending wait for that connection (and
    /// share it) while requests to the cluster's other endpoints go on.
    conns: parking_lot::Mutex<HashMap<(SocketAddr, bool), Arc<Slot>>>,
}

type Slot = tokio::sync::Mutex<Option<H2Sender>>;

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

impl H2Pool {
    pub(crate) fn new(connector: MeshConnector) -> Self {
        Self {
            connector,
            conns: parking_lot::Mutex::default(),
        }
    }

    /// Sends `req` (absolute URI with the app's authority) to `addr`.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        secure: bool,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let mut sender = self.sender(addr, secure).await?;
        sender
            .send_request(req)
            .await
            .map_err(|e| SendError::Exchange(e.into()))
    }

    async fn sender(&self, addr: SocketAddr, secure: bool) -> Result<H2Sender, SendError> {
        let slot = self.slot(addr, secure);
        let mut sender = slot.lock().await;
        if let Some(s) = sender.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        // Boxed: the handshake's state is large, and inline it would
        // enlarge every request's future, which hyper moves on each HTTP/2
        // stream it spawns.
        let connected = Box::pin(self.connect(addr, secure)).await?;
        *sender = Some(connected.clone());
        Ok(connected)
    }

    fn slot(&self, addr: SocketAddr, secure: bool) -> Arc<Slot> {
        let mut conns = self.conns.lock();
        if let Some(slot) = conns.get(&(addr, secure)) {
            return slot.clone();
        }
        // Endpoints come and go: a new one sweeps out those whose
        // connection closed or never opened, unless a request holds them.
        conns.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .is_ok_and(|s| s.as_ref().is_some_and(|s| !s.is_closed()))
        });
        conns.entry((addr, secure)).or_default().clone()
    }

    async fn connect(&self, addr: SocketAddr, secure: bool) -> Result<H2Sender, SendError> {
        let io = self
            .connector
            .open(addr, secure)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use hyper_util::rt::TokioIo;

    use super::*;

    /// An HTTP/2 (h2c) server that answers every request with 200.
    async fn h2c_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        addr
    }

    fn request(addr: SocketAddr) -> http::Request<Full<Bytes>> {
        http::Request::builder()
            .uri(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// Accepts connections and never answers: a TLS handshake with it
    /// stays pending.
    async fn silent_server() -> SocketAddr {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(silent.accept().await.unwrap().0);
            }
        });
        addr
    }

    /// A pool that speaks h2c to plaintext endpoints and TLS to secure ones.
    fn pool(connect_timeout: Duration) -> H2Pool {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        H2Pool::new(MeshConnector {
            http,
            mtls: None,
            origination: Some((Arc::new(tls), "silent.example".to_owned())),
            alpn: b"h2",
            opened: Arc::default(),
            codec_opened: None,
            connect_timeout,
            mtls_config: Arc::default(),
        })
    }

    #[tokio::test]
    async fn a_pending_connect_holds_up_only_its_own_endpoint() {
        let silent = silent_server().await;
        let live = h2c_server().await;
        let pool = Arc::new(pool(Duration::from_secs(60)));
        let pending = tokio::spawn({
            let pool = pool.clone();
            async move { pool.send(silent, true, request(silent)).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Without a bound the failure would be a test that never ends.
        let rsp = tokio::time::timeout(
            Duration::from_secs(10),
            pool.send(live, false, request(live)),
        )
        .await
        .expect("held up by the other endpoint's pending connect")
        .unwrap();
        assert_eq!(rsp.status(), http::StatusCode::OK);
        assert!(
            !pending.is_finished(),
            "the silent endpoint's handshake is still pending"
        );
        pending.abort();
    }

    #[tokio::test]
    async fn the_connect_timeout_covers_the_tls_handshake() {
        let silent = silent_server().await;
        let pool = pool(Duration::from_millis(200));
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            pool.send(silent, true, request(silent)),
        )
        .await
        .expect("the handshake outlived the connect timeout");
        assert!(matches!(sent, Err(SendError::Connect(_))), "{sent:?}");
    }
}
