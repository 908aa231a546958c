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
use tracing::{Instrument, debug, info, info_span, warn};

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
        let span = info_span!("conn", listener = %config.name, id, %peer);
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
    let tls = match &config.tls {
        InboundTls::Terminate(own) => {
            terminate(stream, peer, own, &config, shared).await;
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
                serve_http(stream, peer, Arc::new(hcm.clone()), shared, None).await
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
    let server = match shared.identity.as_ref().map(|w| w.borrow().clone()) {
        Some(crate::identity::Status::Ready(active)) => active.server.clone(),
        _ => {
            warn!("mTLS connection refused: this proxy has no workload certificate yet");
            return;
        }
    };
    let tls = match tokio_rustls::TlsAcceptor::from(server).accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            // Plaintext under STRICT ends here too.
            debug!(error = %e, "mTLS handshake failed");
            return;
        }
    };
    let peer_id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| kite_identity::tls::spiffe_ids(leaf).into_iter().next());
    match &config.kind {
        ListenerKind::Http(hcm) => {
            serve_http(tls, peer, Arc::new(hcm.clone()), shared, peer_id).await
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
    let tls = match tokio_rustls::TlsAcceptor::from(own.config.clone())
        .accept(stream)
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            debug!(error = %e, "TLS handshake failed");
            return;
        }
    };
    match &config.kind {
        ListenerKind::Http(hcm) => serve_http(tls, peer, Arc::new(hcm.clone()), shared, None).await,
        ListenerKind::Tcp { clusters, .. } => {
            crate::tcp::proxy(tls, crate::tcp::pick(clusters), shared).await
        }
    }
}

async fn serve_http<S>(
    stream: S,
    peer: SocketAddr,
    hcm: Arc<HttpManager>,
    shared: Arc<Shared>,
    peer_id: Option<kite_identity::SpiffeId>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer_id = peer_id.map(Arc::new);
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let hcm = hcm.clone();
        let peer_id = peer_id.clone();
        async move {
            let _in_flight = router::InFlight::new(&shared);
            Ok::<_, std::convert::Infallible>(router::handle(shared, hcm, peer, peer_id, req).await)
        }
    });
    // HTTP/1.1 (including absolute-form proxy requests) and h2c.
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
        .await
    {
        debug!(error = %e, "connection ended with an error");
    }
}
