//! Keeps the bound listeners in step with the config: binds new ones,
//! closes removed or changed ones (connections already accepted finish on
//! their own), and runs an HTTP or TCP accept loop per listener.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::{
    config::{HttpManager, InboundTls, Listener, ListenerKind},
    router::{self, Shared},
    state::State,
};

struct Running {
    config: watch::Sender<Arc<Listener>>,
    task: JoinHandle<()>,
}

/// A listener's socket closes with its entry, also when the manager stops.
impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs until the state channel closes.
pub(crate) async fn manage(mut state: watch::Receiver<Arc<State>>, shared: Arc<Shared>) {
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        let current = state.borrow_and_update().clone();
        running.retain(|name, r| {
            let Some(l) = current.listeners.get(name) else {
                info!(listener = %name, "closing listener");
                r.task.abort();
                return false;
            };
            if l.addr != r.config.borrow().addr {
                info!(listener = %name, "address changed; rebinding");
                r.task.abort();
                return false;
            }
            // Same socket, new settings (routes, TLS mode): the port never
            // closes, and the next connection uses them.
            if !same(l, &r.config.borrow()) {
                r.config.send_replace(l.clone());
            }
            true
        });
        for (name, l) in &current.listeners {
            if running.contains_key(name) {
                continue;
            }
            match bind(l.addr).await {
                Ok(listener) => {
                    info!(listener = %name, addr = %l.addr, "listening");
                    let (config, config_rx) = watch::channel(l.clone());
                    let task = tokio::spawn(accept_loop(listener, config_rx, shared.clone()));
                    running.insert(name.clone(), Running { config, task });
                }
                Err(e) => {
                    warn!(listener = %name, addr = %l.addr, error = %e, "cannot bind; will retry on the next update")
                }
            }
        }
        // Keep the upstream runtimes of removed clusters from piling up.
        shared
            .upstreams
            .retain(|c| current.clusters.contains_key(c));
        if state.changed().await.is_err() {
            break;
        }
    }
    for r in running.values() {
        r.task.abort();
    }
}

fn same(a: &Listener, b: &Listener) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    // A listener closed a moment ago may still hold the port.
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

async fn accept_loop(
    listener: TcpListener,
    config: watch::Receiver<Arc<Listener>>,
    shared: Arc<Shared>,
) {
    let mut id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        id += 1;
        let config = config.borrow().clone();
        // At debug level only: a span the logging layer records costs each
        // connection about 400 bytes (its slot in the registry, its fields
        // formatted) and CPU when it opens, and at the default level the
        // events within a connection name their peer themselves.
        let span = debug_span!("conn", listener = %config.name, id, %peer);
        tokio::spawn(connection(stream, peer, config.clone(), shared.clone()).instrument(span));
    }
}

/// One accepted connection: mutual TLS or plaintext as the listener's
/// PeerAuthentication mode says, then HTTP or TCP.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<Listener>,
    shared: Arc<Shared>,
) {
    let _tcp =
        matches!(config.kind, ListenerKind::Tcp { .. }).then(|| router::InFlight::new(&shared));
    // The TLS paths are boxed: their state (handshake, TLS stream) is
    // several KiB, and inline it would size every plaintext connection's
    // task too (7 KiB where plaintext HTTP needs 2).
    let tls = match &config.tls {
        InboundTls::Terminate(own) => {
            Box::pin(terminate(stream, peer, own, &config, shared)).await;
            return;
        }
        InboundTls::Off => false,
        InboundTls::Strict => true,
        InboundTls::Permissive => {
            // A TLS handshake starts with a handshake record (0x16).
            let mut first = [0u8; 1];
            matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16)
        }
    };
    if !tls {
        match &config.kind {
            ListenerKind::Http(hcm) => {
                let version = plaintext_version(&stream).await;
                serve_http(stream, version, peer, hcm.clone(), shared, None)
            }
            ListenerKind::Tcp { by_sni, .. } if !by_sni.is_empty() => {
                match crate::tcp::sni_route(&stream, by_sni).await {
                    Some(clusters) => {
                        crate::tcp::proxy(stream, crate::tcp::pick(clusters), shared).await
                    }
                    None => debug!("no SNI route; closing"),
                }
            }
            ListenerKind::Tcp { clusters, .. } => {
                crate::tcp::proxy(stream, crate::tcp::pick(clusters), shared).await
            }
        }
        return;
    }
    Box::pin(mutual_tls(stream, peer, &config, shared)).await;
}

/// A connection from another sidecar: the mesh's mutual TLS, then HTTP or
/// TCP, with the peer's SPIFFE identity.
async fn mutual_tls(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    config: &Listener,
    shared: Arc<Shared>,
) {
    let server = match shared.identity.as_ref().map(|w| w.borrow().clone()) {
        Some(crate::identity::Status::Ready(active)) => active.server.clone(),
        _ => {
            warn!(%peer, listener = %config.name, "mTLS connection refused: this proxy has no workload certificate yet");
            return;
        }
    };
    let mut tls = match crate::tls::accept(server, stream).await {
        Ok(tls) => tls,
        Err(e) => {
            // Plaintext under STRICT ends here too.
            debug!(error = %e, "mTLS handshake failed");
            return;
        }
    };
    let peer_id = tls
        .take_peer_certificates()
        .and_then(|certs| certs.into_iter().next())
        .and_then(|leaf| kite_identity::tls::spiffe_ids(&leaf).into_iter().next());
    match &config.kind {
        ListenerKind::Http(hcm) => {
            let version = negotiated_version(tls.alpn_protocol());
            serve_http(tls, version, peer, hcm.clone(), shared, peer_id)
        }
        ListenerKind::Tcp { clusters, .. } => {
            crate::tcp::proxy(tls, crate::tcp::pick(clusters), shared).await
        }
    }
}

/// A gateway's HTTPS (or TLS) server: its own certificate, then HTTP or
/// TCP as for plaintext.
async fn terminate(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    own: &crate::config::Termination,
    config: &Listener,
    shared: Arc<Shared>,
) {
    let tls = match crate::tls::accept(own.config.clone(), stream).await {
        Ok(tls) => tls,
        Err(e) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
    };
    match &config.kind {
        ListenerKind::Http(hcm) => {
            let version = negotiated_version(tls.alpn_protocol());
            serve_http(tls, version, peer, hcm.clone(), shared, None)
        }
        ListenerKind::Tcp { clusters, .. } => {
            crate::tcp::proxy(tls, crate::tcp::pick(clusters), shared).await
        }
    }
}

/// An HTTP connection's version, when it is known before reading from it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    Http1,
    Http2,
}

/// What ALPN agreed on; without ALPN the client's first bytes tell.
fn negotiated_version(alpn: Option<&[u8]>) -> Option<Version> {
    match alpn {
        Some(b"h2") => Some(Version::Http2),
        Some(b"http/1.1" | b"http/1.0") => Some(Version::Http1),
        _ => None,
    }
}

/// HTTP/2 with prior knowledge (h2c) starts with `PRI `, which is no
/// HTTP/1 method. Peeked, so that hyper reads the request whole into its
/// first buffer; a client that has sent fewer bytes than that yet is left
/// to hyper-util's detection.
async fn plaintext_version(stream: &tokio::net::TcpStream) -> Option<Version> {
    const PREFACE: &[u8] = b"PRI ";
    let mut first = [0u8; 4];
    let n = stream.peek(&mut first).await.ok()?;
    let seen = &first[..n];
    if seen == PREFACE {
        Some(Version::Http2)
    } else if PREFACE.starts_with(seen) {
        None
    } else {
        Some(Version::Http1)
    }
}

/// Copies an HTTP/1 request's URI and header values out of hyper's read
/// buffer, which they share. hyper reads again as soon as it has handed the
/// request over (to notice a client that goes away), and finding its buffer
/// still shared it allocates another: 8 KiB more for each connection with a
/// request in flight, for as long as the request lives. Copied here, before
/// that read, the buffer is hyper's alone again and is reused.
fn own_head<B>(req: &mut hyper::Request<B>) {
    for value in req.headers_mut().values_mut() {
        if let Ok(mut owned) = http::HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            *value = owned;
        }
    }
    let uri = req.uri();
    if uri.path_and_query().is_none() && uri.authority().is_none() {
        return;
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = uri
        .scheme()
        .and_then(|s| http::uri::Scheme::try_from(s.as_str()).ok());
    parts.authority = uri.authority().and_then(|a| {
        http::uri::Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(
            a.as_str().as_bytes(),
        ))
        .ok()
    });
    parts.path_and_query = uri.path_and_query().and_then(|p| {
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(
            p.as_str().as_bytes(),
        ))
        .ok()
    });
    if let Ok(owned) = http::Uri::from_parts(parts) {
        *req.uri_mut() = owned;
    }
}

/// Serves HTTP on one connection, in a task of its own. The version is
/// chosen up front where it is known: hyper-util's detection reads the
/// first bytes itself and hands them to hyper, whose read buffer then grows
/// to take the rest of the request.
fn serve_http<S>(
    stream: S,
    version: Option<Version>,
    peer: SocketAddr,
    hcm: Arc<HttpManager>,
    shared: Arc<Shared>,
    peer_id: Option<kite_identity::SpiffeId>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer_id = peer_id.map(Arc::new);
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if req.version() <= http::Version::HTTP_11 {
            own_head(&mut req);
        }
        let req = Box::new(req);
        let shared = shared.clone();
        let hcm = hcm.clone();
        let peer_id = peer_id.clone();
        async move {
            let _in_flight = router::InFlight::new(&shared);
            Ok::<_, std::convert::Infallible>(router::handle(shared, hcm, peer, peer_id, req).await)
        }
    });
    // HTTP/1.1 (including absolute-form proxy requests), h2 and h2c.
    let io = TokioIo::new(stream);
    match version {
        Some(Version::Http1) => crate::spawn_connection(
            hyper::server::conn::http1::Builder::new()
                .max_buf_size(crate::H1_MAX_BUF)
                .serve_connection(io, svc)
                .with_upgrades(),
        ),
        Some(Version::Http2) => crate::spawn_connection(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc),
        ),
        // hyper-util's connection borrows its builder: the task owns both.
        None => crate::spawn_connection(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().max_buf_size(crate::H1_MAX_BUF);
            builder.serve_connection_with_upgrades(io, svc).await
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// The version `plaintext_version` reads from a client that sent `first`.
    async fn version_after(first: &[u8]) -> Option<Version> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        client.write_all(first).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let version = plaintext_version(&server).await;
        // Peeked, not read: hyper still gets every byte.
        let mut again = vec![0u8; first.len()];
        let mut n = 0;
        while n < first.len() {
            server.readable().await.unwrap();
            n += server.try_read(&mut again[n..]).unwrap_or(0);
        }
        assert_eq!(again, first);
        version
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http1_from_h2c() {
        let h2c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(version_after(h2c).await, Some(Version::Http2));
        for http1 in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1\r\n",
            b"PUT / HTTP/1.1\r\n",
        ] {
            assert_eq!(version_after(http1).await, Some(Version::Http1));
        }
        // Too few bytes to tell: left to hyper-util's detection.
        assert_eq!(version_after(b"PR").await, None);
    }

    #[test]
    fn an_owned_head_leaves_hyper_its_buffer() {
        for (uri, authority) in [
            ("/path?q=1", None),
            ("http://echo:8080/path?q=1", Some("echo:8080")),
            ("echo:443", Some("echo:443")),
        ] {
            let read = bytes::Bytes::from(format!("{uri}value").into_bytes());
            let mut req = hyper::Request::builder()
                .uri(http::Uri::from_maybe_shared(read.slice(..uri.len())).unwrap())
                .header(
                    "x-custom",
                    http::HeaderValue::from_maybe_shared(read.slice(uri.len()..)).unwrap(),
                )
                .body(())
                .unwrap();
            assert!(!read.is_unique());
            own_head(&mut req);
            assert!(read.is_unique(), "{uri} still shares the buffer");
            assert_eq!(req.uri().to_string(), uri);
            assert_eq!(req.uri().authority().map(|a| a.as_str()), authority);
            assert_eq!(req.headers()["x-custom"], "value");
        }
    }

    #[test]
    fn alpn_tells_the_version() {
        assert_eq!(negotiated_version(Some(b"h2")), Some(Version::Http2));
        assert_eq!(negotiated_version(Some(b"http/1.1")), Some(Version::Http1));
        assert_eq!(negotiated_version(None), None);
    }
}
