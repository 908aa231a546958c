//! HTTP/1.1 upstream connections, pooled per endpoint.
//!
//! A connection goes back to the pool as soon as its response head
//! arrives, and is handed out again once hyper reports it ready (the
//! response fully read, the connection kept alive). That spares a task per
//! request to wait for the body's end, which hyper-util's pool spawns.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{MeshConnector, SendError};

type Sender = http1::SendRequest<Full<Bytes>>;
type Idle = Mutex<HashMap<(SocketAddr, bool), VecDeque<Pooled>>>;

pub(crate) struct H1Pool {
    connector: MeshConnector,
    /// Envoy's `idle_timeout` for upstream connections.
    idle_timeout: Duration,
    idle: Arc<Idle>,
}

struct Pooled {
    sender: Sender,
    returned: Instant,
    /// Requests the connection has carried.
    served: u32,
}

impl H1Pool {
    pub(crate) fn new(connector: MeshConnector, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle_timeout,
            idle: Arc::default(),
        }
    }

    /// Sends `req` (absolute URI naming the endpoint) to `addr` on a pooled
    /// connection or a new one. A connection that has carried
    /// `max_requests` closes after its last exchange (Envoy's
    /// `max_requests_per_connection`; 1: a connection per request).
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        secure: bool,
        mut req: Box<http::Request<Full<Bytes>>>,
        max_requests: Option<NonZeroU32>,
    ) -> Result<http::Response<hyper::body::Incoming>, SendError> {
        origin_form(&mut req);
        let key = (addr, secure);
        loop {
            let (mut sender, served, fresh) = match self.checkout(key) {
                Some((sender, served)) => (sender, served, false),
                // Boxed: the connect future (TLS handshake included) is
                // several hundred bytes, and unboxed every request's future
                // carried its room, pooled connection or not.
                None => (Box::pin(self.connect(addr, secure)).await?, 0, true),
            };
            let served = served + 1;
            let last = max_requests.is_some_and(|n| served >= n.get());
            if last {
                req.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            // Out of its box first, which is freed here rather than held,
            // empty, until the response comes (a box moved out of in place
            // is freed only when it goes out of scope).
            match sender.try_send_request(unbox(req)).await {
                Ok(rsp) => {
                    if !last && rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                        self.checkin(key, sender, served);
                    }
                    return Ok(rsp);
                }
                // A pooled connection the server closed before it took the
                // request: the request was not sent, so another connection
                // may carry it.
                Err(mut e) if !fresh && e.error().is_canceled() => match e.take_message() {
                    Some(r) => req = Box::new(r),
                    None => return Err(SendError::Exchange(e.into_error().into())),
                },
                Err(e) => return Err(SendError::Exchange(e.into_error().into())),
            }
        }
    }

    /// A connection ready for a request, dropping closed and expired ones.
    /// Connections still reading their last response stay pooled.
    fn checkout(&self, key: (SocketAddr, bool)) -> Option<(Sender, u32)> {
        let mut idle = self.idle.lock();
        let conns = idle.get_mut(&key)?;
        let now = Instant::now();
        for _ in 0..conns.len() {
            let pooled = conns.pop_front()?;
            if pooled.sender.is_closed() {
                continue;
            }
            if pooled.sender.is_ready() {
                if now.duration_since(pooled.returned) < self.idle_timeout {
                    return Some((pooled.sender, pooled.served));
                }
                continue;
            }
            conns.push_back(pooled);
        }
        None
    }

    fn checkin(&self, key: (SocketAddr, bool), sender: Sender, served: u32) {
        let mut idle = self.idle.lock();
        if idle.is_empty() {
            spawn_reaper(Arc::downgrade(&self.idle), self.idle_timeout);
        }
        idle.entry(key).or_default().push_back(Pooled {
            sender,
            returned: Instant::now(),
            served,
        });
    }

    async fn connect(&self, addr: SocketAddr, secure: bool) -> Result<Sender, SendError> {
        let io = self
            .connector
            .open(addr, secure)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http1::Builder::new()
            .max_buf_size(crate::H1_MAX_BUF)
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        crate::spawn_connection(conn.with_upgrades());
        Ok(sender)
    }
}

/// Closes connections idle past the timeout, so that a cluster no longer
/// sent to does not hold its connections open. Ends with the pool, or once
/// the pool is empty (the next check-in starts another).
fn spawn_reaper(idle: Weak<Idle>, timeout: Duration) {
    super::spawn_sweeper(idle, timeout, move |idle, now| {
        idle.retain(|_, conns| {
            conns.retain(|p| {
                let expired = p.sender.is_ready() && now.duration_since(p.returned) >= timeout;
                !(p.sender.is_closed() || expired)
            });
            !conns.is_empty()
        });
        !idle.is_empty()
    });
}

/// Takes a box by value so that it is freed on return: the point.
#[allow(clippy::boxed_local)]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// HTTP/1.1 sends the path alone; the endpoint is the connection's.
fn origin_form(req: &mut http::Request<Full<Bytes>>) {
    if req.method() == http::Method::CONNECT {
        return;
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(path);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    /// An HTTP/1.1 server on loopback counting the connections it accepts;
    /// `close` answers with `Connection: close`.
    async fn server(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req: http::Request<_>| async move {
                    let mut rsp =
                        http::Response::new(Full::new(Bytes::from(req.uri().to_string())));
                    if close {
                        rsp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(rsp)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (addr, accepted)
    }

    fn pool() -> H1Pool {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        let connector = MeshConnector {
            http,
            mtls: None,
            origination: None,
            alpn: b"",
            opened: Arc::default(),
            codec_opened: None,
            connect_timeout: Duration::from_secs(10),
            mtls_config: Arc::default(),
        };
        H1Pool::new(connector, Duration::from_secs(60))
    }

    async fn get(pool: &H1Pool, addr: SocketAddr, max_requests: Option<u32>) -> String {
        let req = http::Request::builder()
            .uri(format!("http://{addr}/path?q=1"))
            .header(http::header::HOST, "app.example")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let max_requests = max_requests.and_then(NonZeroU32::new);
        let rsp = pool
            .send(addr, false, Box::new(req), max_requests)
            .await
            .unwrap();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection_in_origin_form() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        for _ in 0..3 {
            assert_eq!(get(&pool, addr, None).await, "/path?q=1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_of_their_own() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        let (a, b) = tokio::join!(get(&pool, addr, None), get(&pool, addr, None));
        assert_eq!((a.as_str(), b.as_str()), ("/path?q=1", "/path?q=1"));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        get(&pool, addr, None).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the third reuses one");
    }

    #[tokio::test]
    async fn a_connection_carries_at_most_max_requests() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        for _ in 0..7 {
            assert_eq!(get(&pool, addr, Some(3)).await, "/path?q=1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "3 + 3 + 1 requests");
    }

    #[tokio::test]
    async fn one_request_per_connection_or_after_close_each_request_connects_anew() {
        let (addr, accepted) = server(false).await;
        let pool = pool();
        get(&pool, addr, Some(1)).await;
        get(&pool, addr, Some(1)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        let (addr, accepted) = server(true).await;
        for _ in 0..3 {
            assert_eq!(get(&pool, addr, None).await, "/path?q=1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
