//! Kite's data plane: a sidecar and gateway proxy configured only over xDS
//! by the control plane. Config arrives through `state` (converted at the
//! boundary in `config`), listeners follow it (`listeners`), HTTP requests
//! are routed by `router` to per-cluster runtimes in `upstream`, TCP by
//! `tcp`; `admin` exposes readiness and what the proxy holds.
#![forbid(unsafe_code)]

mod admin;
pub mod config;
pub mod identity;
mod listeners;
mod router;
pub mod state;
mod tcp;
mod tls;
mod upstream;

use std::{future::Future, net::SocketAddr, sync::Arc};

use envoy_types::pb::envoy::config::core::v3::Node;
use tracing::info;

pub struct Config {
    pub node: Node,
    /// The control plane's xDS address, `http://host:port`.
    pub xds: String,
    /// Admin endpoint (Envoy's 15000).
    pub admin: SocketAddr,
    /// Readiness endpoint (Istio's 15021, `/healthz/ready`).
    pub ready: SocketAddr,
    /// The workload identity to obtain from the mesh CA, if any.
    pub identity: Option<identity::IdentityConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a stopping proxy waits for requests in flight (Istio's
/// `terminationDrainDuration`).
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the proxy until `shutdown` resolves, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
    let (applier, state, connected) = state::Applier::new();
    let (identity_tx, identity_rx) = identity::channel();
    let identity_task = config
        .identity
        .clone()
        .map(|cfg| tokio::spawn(identity::run(cfg, identity_tx)));
    let identity_watch = config.identity.is_some().then(|| identity_rx.clone());
    let upstreams = Arc::new(upstream::Upstreams::new(identity_watch.clone()));
    let (vhds_tx, vhds_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(router::Shared {
        state: state.clone(),
        upstreams: upstreams.clone(),
        identity: identity_watch,
        in_flight: Default::default(),
        vhds: vhds_tx,
    });
    let admin = Arc::new(admin::Admin {
        state: state.clone(),
        connected,
        applier: applier.clone(),
        upstreams,
        identity: config.identity.is_some().then_some(identity_rx),
    });
    let bind = |addr| async move {
        admin::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let admin_listener = bind(config.admin).await?;
    let ready_listener = bind(config.ready).await?;
    info!(node = %config.node.id, xds = %config.xds, admin = %config.admin, "proxy starting");
    let xds = tokio::spawn(kite_xds::client::run(
        config.xds.clone(),
        config.node.clone(),
        applier.clone(),
    ));
    let vhds = tokio::spawn(kite_xds::client::run_vhds(
        config.xds.clone(),
        config.node.clone(),
        applier,
        vhds_rx,
    ));
    let listeners = tokio::spawn(listeners::manage(state, shared.clone()));
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin.clone()));
    let ready_task = tokio::spawn(admin::serve(ready_listener, admin));
    shutdown.await;
    // Istio's drain: stop accepting, let what is in flight finish (up to
    // terminationDrainDuration), then stop.
    listeners.abort();
    let _ = listeners.await;
    let deadline = tokio::time::Instant::now() + DRAIN;
    let pending = shared.in_flight.load(std::sync::atomic::Ordering::Relaxed);
    info!(in_flight = pending, "proxy draining");
    while shared.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    info!("proxy shutting down");
    for t in [xds, vhds, admin_task, ready_task]
        .into_iter()
        .chain(identity_task)
    {
        t.abort();
    }
    Ok(())
}

/// The most an HTTP/1.1 connection reads ahead, and so the largest message
/// head it takes (431 beyond it, as Envoy's default limit of 60 KiB on
/// request headers). hyper's default, about 400 KiB, let its adaptive
/// reads grow to 128 KiB with 64 KiB bodies: right after 32 connections
/// of them, each sidecar held 9.1 MiB of heap, against 4.2 with this.
pub(crate) const H1_MAX_BUF: usize = 64 * 1024;

/// Serves a connection (hyper's, client or server) in a task of its own,
/// logging how it ended if in error. The task holds just the connection:
/// an `async move { conn.await }` would hold it twice (a captured value
/// keeps its room after moving on into the `.await`), and serving in the
/// task that accepted the connection would keep what the TLS handshake or
/// the protocol sniffing needed, several KiB, for the connection's life.
pub(crate) fn spawn_connection<F, E>(conn: F)
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    use tracing::Instrument as _;
    tokio::spawn(EndLogged { conn }.instrument(tracing::Span::current()));
}

pin_project_lite::pin_project! {
    struct EndLogged<F> {
        #[pin]
        conn: F,
    }
}

impl<F, E> Future for EndLogged<F>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if let Err(error) = std::task::ready!(self.project().conn.poll(cx)) {
            tracing::debug!(%error, "connection ended with an error");
        }
        std::task::Poll::Ready(())
    }
}
