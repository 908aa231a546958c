//! HTTP/2 upstream connections, one per endpoint.

use std::{
    collections::HashMap,
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::{MeshConnector, SendError};

/// One multiplexed HTTP/2 connection per endpoint. A request keeps the
/// authority the app used (`:authority`) while its connection goes to the
/// endpoint chosen, which a pool keyed by the request's URI cannot do.
pub(crate) struct H2Pool {
    connector: MeshConnector,
    /// Envoy's `idle_timeout` for upstream connections: how long one with
    /// no request in flight stays open.
    idle_timeout: Duration,
    conns: Arc<Conns>,
}

/// Each endpoint's connection behind a lock of its own: requests to an
/// endpoint whose connect is pending wait for that connection (and share
/// it) while requests to the cluster's other endpoints go on.
type Conns = parking_lot::Mutex<ConnMap>;

#[derive(Default)]
struct ConnMap {
    slots: HashMap<(SocketAddr, bool), Arc<Slot>>,
    /// Whether a reaper is running: at most one per pool.
    reaping: bool,
}

type Slot = tokio::sync::Mutex<Option<Pooled>>;

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

struct Pooled {
    sender: H2Sender,
    activity: Arc<Activity>,
    /// Requests the connection has been given.
    started: u32,
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: parking_lot::Mutex<Instant>,
}

/// A request in flight; it ends, as far as the idle timeout goes, when
/// its response head arrives (or it fails). A response still streaming
/// when its connection is reaped is not cut: hyper closes the connection
/// once its streams end.
struct InFlight(Arc<Activity>);

impl H2Pool {
    pub(crate) fn new(connector: MeshConnector, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle_timeout,
            conns: Arc::default(),
        }
    }

    /// Sends `req` (absolute URI with the app's authority) to `addr`. A
    /// connection that has been given `max_requests` takes no more; it
    /// closes once those end (Envoy's `max_requests_per_connection`).
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        secure: bool,
        req: Box<http::Request<Full<Bytes>>>,
        max_requests: Option<NonZeroU32>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        let (mut sender, _in_flight) = self.sender(addr, secure, max_requests).await?;
        sender
            .send_request(*req)
            .await
            .map_err(|e| SendError::Exchange(e.into()))
    }

    async fn sender(
        &self,
        addr: SocketAddr,
        secure: bool,
        max_requests: Option<NonZeroU32>,
    ) -> Result<(H2Sender, InFlight), SendError> {
        let slot = self.slot(addr, secure);
        let mut pooled = slot.lock().await;
        if let Some(p) = pooled.as_mut()
            && !p.sender.is_closed()
            && max_requests.is_none_or(|n| p.started < n.get())
        {
            p.started += 1;
            return Ok((p.sender.clone(), InFlight::start(&p.activity)));
        }
        // Boxed: the handshake's state is large, and inline it would
        // enlarge every request's future, which hyper moves on each HTTP/2
        // stream it spawns.
        let sender = Box::pin(self.connect(addr, secure)).await?;
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: parking_lot::Mutex::new(Instant::now()),
        });
        let in_flight = InFlight::start(&activity);
        *pooled = Some(Pooled {
            sender: sender.clone(),
            activity,
            started: 1,
        });
        Ok((sender, in_flight))
    }

    fn slot(&self, addr: SocketAddr, secure: bool) -> Arc<Slot> {
        let mut conns = self.conns.lock();
        if let Some(slot) = conns.slots.get(&(addr, secure)) {
            return slot.clone();
        }
        // Endpoints come and go: a new one sweeps out those whose
        // connection closed or never opened, unless a request holds them.
        conns.slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot
                    .try_lock()
                    .is_ok_and(|s| s.as_ref().is_some_and(|p| !p.sender.is_closed()))
        });
        if !conns.reaping {
            conns.reaping = true;
            spawn_reaper(Arc::downgrade(&self.conns), self.idle_timeout);
        }
        conns.slots.entry((addr, secure)).or_default().clone()
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
        crate::spawn_connection(conn);
        Ok(sender)
    }
}

/// Drops connections idle past the timeout (hyper then closes them), and
/// those that closed. Ends with the pool, or once the pool is empty (the
/// next connection starts another).
fn spawn_reaper(conns: Weak<Conns>, timeout: Duration) {
    super::spawn_sweeper(conns, timeout, move |conns, now| {
        conns.slots.retain(|_, slot| {
            // Held by a request on its way to the connection.
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            let Ok(pooled) = slot.try_lock() else {
                return true;
            };
            pooled
                .as_ref()
                .is_some_and(|p| !p.sender.is_closed() && !p.activity.idle_for(now, timeout))
        });
        conns.reaping = !conns.slots.is_empty();
        conns.reaping
    });
}

impl Activity {
    fn idle_for(&self, now: Instant, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && now.duration_since(*self.last.lock()) >= timeout
    }
}

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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

    fn request(addr: SocketAddr) -> Box<http::Request<Full<Bytes>>> {
        Box::new(
            http::Request::builder()
                .uri(format!("http://{addr}/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
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
    fn pool(connect_timeout: Duration, idle_timeout: Duration) -> H2Pool {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        H2Pool::new(
            MeshConnector {
                http,
                mtls: None,
                origination: Some((Arc::new(tls), "silent.example".to_owned())),
                alpn: b"h2",
                opened: Arc::default(),
                codec_opened: None,
                connect_timeout,
                mtls_config: Arc::default(),
            },
            idle_timeout,
        )
    }

    #[tokio::test]
    async fn a_pending_connect_holds_up_only_its_own_endpoint() {
        let silent = silent_server().await;
        let live = h2c_server().await;
        let pool = Arc::new(pool(Duration::from_secs(60), Duration::from_secs(60)));
        let pending = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.send(silent, true, request(silent), None)
                    .await
                    .map(drop)
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Without a bound the failure would be a test that never ends.
        let rsp = tokio::time::timeout(
            Duration::from_secs(10),
            pool.send(live, false, request(live), None),
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
        let pool = pool(Duration::from_millis(200), Duration::from_secs(60));
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            pool.send(silent, true, request(silent), None),
        )
        .await
        .expect("the handshake outlived the connect timeout");
        assert!(matches!(sent, Err(SendError::Connect(_))), "{sent:?}");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_timeout_is_closed() {
        let live = h2c_server().await;
        let pool = pool(Duration::from_secs(60), Duration::from_millis(200));
        let opened = || pool.connector.opened.load(Ordering::Relaxed);
        for _ in 0..3 {
            let rsp = pool.send(live, false, request(live), None).await.unwrap();
            assert_eq!(rsp.status(), http::StatusCode::OK);
        }
        assert_eq!(opened(), 1, "requests in a row share the connection");
        let in_flight = pool.sender(live, false, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        pool.send(live, false, request(live), None).await.unwrap();
        assert_eq!(
            opened(),
            1,
            "a connection with a request in flight was reaped"
        );
        drop(in_flight);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let rsp = pool.send(live, false, request(live), None).await.unwrap();
        assert_eq!(rsp.status(), http::StatusCode::OK);
        assert_eq!(opened(), 2, "the idle connection was kept past the timeout");
    }

    #[tokio::test]
    async fn a_connection_is_given_at_most_max_requests() {
        let live = h2c_server().await;
        let pool = pool(Duration::from_secs(60), Duration::from_secs(60));
        let max = NonZeroU32::new(2);
        for _ in 0..5 {
            let rsp = pool.send(live, false, request(live), max).await.unwrap();
            assert_eq!(rsp.status(), http::StatusCode::OK);
        }
        let opened = pool.connector.opened.load(Ordering::Relaxed);
        assert_eq!(opened, 3, "2 + 2 + 1 requests");
    }
}
