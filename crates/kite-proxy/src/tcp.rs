//! L4 proxying: accept, pick an endpoint (over mutual TLS when it has a
//! sidecar), copy bytes both ways.

use std::sync::Arc;

use tracing::debug;

use crate::router::Shared;

/// One of the weighted clusters, in proportion to its weight.
pub(crate) fn pick(clusters: &[(String, u32)]) -> String {
    let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut at = fastrand::u64(..total.max(1));
    for (name, weight) in clusters {
        if at < u64::from(*weight) {
            return name.clone();
        }
        at -= u64::from(*weight);
    }
    clusters.first().map(|(n, _)| n.clone()).unwrap_or_default()
}

pub(crate) async fn proxy<S>(mut downstream: S, cluster: String, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let state = shared.state.borrow().clone();
    let Some(c) = state.clusters.get(&cluster) else {
        debug!(%cluster, "no such cluster; closing");
        return;
    };
    let rt = shared.upstreams.get(c);
    let endpoints = rt.endpoints(&state).await;
    let Some(addr) = rt.pick(&endpoints, &[], None) else {
        debug!(%cluster, "no endpoint; closing");
        return;
    };
    let _guard = rt.start(addr);
    let mut upstream = match rt.connect_tcp(addr, rt.secure(&endpoints, addr)).await {
        Ok(s) => s,
        Err(error) => {
            debug!(%cluster, %addr, %error, "upstream connection failed");
            rt.record(
                addr,
                crate::upstream::Outcome::ConnectFailure,
                endpoints.len(),
            );
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((up, down)) => debug!(sent = up, received = down, "tcp connection closed"),
        Err(e) => debug!(error = %e, "tcp connection failed"),
    }
}
