//! The proxy side of ADS: one stream to the control plane, requests for the
//! resources the handler wants, every response applied as a batch and ACKed
//! or NACKed with the handler's reason, and reconnection with backoff while
//! the handler keeps serving its last good config.

use std::{collections::BTreeMap, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::{protobuf::Any, rpc::Status as RpcStatus},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::type_url;

/// What the proxy does with resources.
pub trait Handler: Send + Sync + 'static {
    /// Applies a whole response: all of it or, with an error naming each
    /// bad resource, none of it.
    fn apply(&self, type_url: &str, resources: &[Any]) -> Result<(), String>;

    /// The names to request for a named type (routes, endpoints), derived
    /// from what is applied so far.
    fn names(&self, type_url: &str) -> Vec<String>;

    /// Connection state changes, for readiness and metrics.
    fn connected(&self, _up: bool) {}
}

#[derive(Default)]
struct TypeState {
    /// Last version applied (sent back in requests; the NACK version).
    version: String,
    nonce: String,
    names: Vec<String>,
    requested: bool,
}

/// Runs forever: connects, streams, reconnects with capped exponential
/// backoff and jitter.
pub async fn run(endpoint: String, node: Node, handler: std::sync::Arc<dyn Handler>) {
    let mut backoff = Duration::from_millis(200);
    let mut state: BTreeMap<&'static str, TypeState> = BTreeMap::new();
    loop {
        match stream(&endpoint, &node, &*handler, &mut state).await {
            Ok(()) => info!(%endpoint, "control plane closed the stream"),
            Err(error) => warn!(%endpoint, %error, "control plane stream failed"),
        }
        handler.connected(false);
        let jitter = Duration::from_millis(fastrand_ms(backoff.as_millis() as u64 / 2));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(15));
        // A fresh stream asks again for everything.
        for s in state.values_mut() {
            s.requested = false;
            s.nonce.clear();
        }
    }
}

fn fastrand_ms(max: u64) -> u64 {
    // No RNG crate for one jitter value: the clock's nanoseconds suffice.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    if max == 0 { 0 } else { nanos % max }
}

async fn stream(
    endpoint: &str,
    node: &Node,
    handler: &dyn Handler,
    state: &mut BTreeMap<&'static str, TypeState>,
) -> Result<(), String> {
    let mut client = AggregatedDiscoveryServiceClient::connect(endpoint.to_owned())
        .await
        .map_err(|e| format!("connecting: {e}"))?
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let mut first = true;
    let mut send = |tx: &mpsc::Sender<DiscoveryRequest>,
                    kind: &'static str,
                    s: &TypeState,
                    error: Option<String>| {
        let req = DiscoveryRequest {
            version_info: s.version.clone(),
            node: first.then(|| node.clone()),
            resource_names: s.names.clone(),
            type_url: kind.to_owned(),
            response_nonce: s.nonce.clone(),
            error_detail: error.map(|message| RpcStatus {
                code: 3,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        };
        first = false;
        tx.try_send(req)
            .map_err(|e| format!("queueing a request: {e}"))
    };
    for kind in [type_url::CLUSTER, type_url::LISTENER] {
        let s = state.entry(kind).or_default();
        s.requested = true;
        send(&tx, kind, s, None)?;
    }
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the stream: {e}"))?
        .into_inner();
    handler.connected(true);
    info!(%endpoint, "connected to the control plane");
    while let Some(rsp) = responses
        .message()
        .await
        .map_err(|e| format!("receiving: {e}"))?
    {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url: kind,
            nonce,
            ..
        } = rsp;
        let Some(kind) = type_url::PUSH_ORDER.into_iter().find(|t| *t == kind) else {
            warn!(type_url = %kind, "response of a type never requested; ignored");
            continue;
        };
        let s = state.entry(kind).or_default();
        s.nonce = nonce;
        match handler.apply(kind, &resources) {
            Ok(()) => {
                debug!(kind = type_url::short(kind), version = %version_info, count = resources.len(), "applied");
                s.version = version_info;
                send(&tx, kind, s, None)?;
            }
            Err(error) => {
                warn!(kind = type_url::short(kind), version = %version_info, %error, "rejected config (NACK)");
                send(&tx, kind, s, Some(error))?;
            }
        }
        // Names of routes and endpoints follow from listeners and clusters.
        for named in [type_url::ENDPOINT, type_url::ROUTE] {
            let names = handler.names(named);
            let s = state.entry(named).or_default();
            if !s.requested || s.names != names {
                s.names = names;
                s.requested = true;
                send(&tx, named, s, None)?;
            }
        }
    }
    Ok(())
}
