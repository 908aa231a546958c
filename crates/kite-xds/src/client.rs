//! The proxy side of ADS: one stream to the control plane, requests for the
//! resources the handler wants, every response applied as a batch and ACKed
//! or NACKed with the handler's reason, and reconnection with backoff while
//! the handler keeps serving its last good config.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
            Resource, aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
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
        tokio::time::sleep(next_delay(&mut backoff)).await;
        // A fresh stream asks again for everything.
        for s in state.values_mut() {
            s.requested = false;
            s.nonce.clear();
        }
    }
}

async fn connect(
    endpoint: &str,
) -> Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>, String> {
    Ok(
        AggregatedDiscoveryServiceClient::connect(endpoint.to_owned())
            .await
            .map_err(|e| format!("connecting: {e}"))?
            .max_decoding_message_size(64 << 20),
    )
}

/// A NACK's `error_detail` (INVALID_ARGUMENT, as Envoy sends).
fn rejection(message: String) -> RpcStatus {
    RpcStatus {
        code: 3,
        message,
        details: Vec::new(),
    }
}

/// The wait before reconnecting: `backoff` with jitter; `backoff` doubles,
/// up to 15 s.
fn next_delay(backoff: &mut Duration) -> Duration {
    let jitter = Duration::from_millis(fastrand_ms(backoff.as_millis() as u64 / 2));
    let delay = *backoff + jitter;
    *backoff = (*backoff * 2).min(Duration::from_secs(15));
    delay
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
    let mut client = connect(endpoint).await?;
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
            error_detail: error.map(rejection),
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

/// What the proxy does with virtual hosts from VHDS.
pub trait VhdsHandler: Send + Sync + 'static {
    /// Applies a response whole, or none of it with the reason: virtual
    /// hosts (a resource with the aliases it answers), aliases no virtual
    /// host serves (no resource), and resources removed.
    fn apply_vhosts(&self, resources: &[Resource], removed: &[String]) -> Result<(), String>;

    /// Every alias answered so far: a new stream subscribes to them again.
    fn aliases(&self) -> Vec<String>;

    /// Aliases to forget (unsubscribe), so that hosts no virtual host
    /// serves, which any request can name, stay bounded.
    fn evict(&self) -> Vec<String>;
}

/// Runs the VHDS stream forever: connects once the first alias is asked
/// for on `asks`, subscribes to each alias asked for, applies and ACKs or
/// NACKs every response, and reconnects with backoff.
pub async fn run_vhds(
    endpoint: String,
    node: Node,
    handler: std::sync::Arc<dyn VhdsHandler>,
    mut asks: mpsc::UnboundedReceiver<String>,
) {
    let mut subscribed = BTreeSet::new();
    match asks.recv().await {
        Some(alias) => subscribed.insert(alias),
        None => return,
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match vhds_stream(&endpoint, &node, &*handler, &mut asks, &mut subscribed).await {
            Ok(()) => return,
            Err(error) => warn!(%endpoint, %error, "VHDS stream failed"),
        }
        let sleep = tokio::time::sleep(next_delay(&mut backoff));
        tokio::pin!(sleep);
        // Asks while disconnected are kept once each, for the next stream.
        loop {
            tokio::select! {
                () = &mut sleep => break,
                ask = asks.recv() => match ask {
                    Some(alias) => {
                        subscribed.insert(alias);
                    }
                    None => return,
                },
            }
        }
    }
}

/// Ends with `Ok` only when nothing can ask for aliases any more.
async fn vhds_stream(
    endpoint: &str,
    node: &Node,
    handler: &dyn VhdsHandler,
    asks: &mut mpsc::UnboundedReceiver<String>,
    subscribed_across: &mut BTreeSet<String>,
) -> Result<(), String> {
    let mut client = connect(endpoint).await?;
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let request =
        |subscribe: Vec<String>, unsubscribe: Vec<String>, nonce: String, error: Option<String>| {
            DeltaDiscoveryRequest {
                type_url: type_url::VIRTUAL_HOST.to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                response_nonce: nonce,
                error_detail: error.map(rejection),
                ..Default::default()
            }
        };
    // Every alias asked for, answered or not, persists across streams.
    let subscribed = subscribed_across;
    subscribed.extend(handler.aliases());
    let mut first = request(
        subscribed.iter().cloned().collect(),
        Vec::new(),
        String::new(),
        None,
    );
    first.node = Some(node.clone());
    tx.try_send(first)
        .map_err(|e| format!("queueing a request: {e}"))?;
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("opening the stream: {e}"))?
        .into_inner();
    debug!(%endpoint, "VHDS stream open");
    loop {
        tokio::select! {
            ask = asks.recv() => {
                let Some(alias) = ask else { return Ok(()) };
                let mut new: Vec<String> = Vec::new();
                for alias in std::iter::once(alias).chain(std::iter::from_fn(|| asks.try_recv().ok())) {
                    if subscribed.insert(alias.clone()) {
                        new.push(alias);
                    }
                }
                if !new.is_empty() {
                    tx.send(request(new, Vec::new(), String::new(), None))
                        .await
                        .map_err(|e| format!("queueing a request: {e}"))?;
                }
            }
            rsp = responses.message() => {
                let Some(rsp) = rsp.map_err(|e| format!("receiving: {e}"))? else {
                    return Err("the control plane closed the stream".into());
                };
                let DeltaDiscoveryResponse { resources, removed_resources, nonce, .. } = rsp;
                let error = handler.apply_vhosts(&resources, &removed_resources).err();
                match &error {
                    None => debug!(count = resources.len(), removed = removed_resources.len(), "virtual hosts applied"),
                    Some(error) => warn!(%error, "rejected virtual hosts (NACK)"),
                }
                let evicted = handler.evict();
                for alias in &evicted {
                    subscribed.remove(alias);
                }
                tx.send(request(Vec::new(), evicted, nonce, error))
                    .await
                    .map_err(|e| format!("queueing a request: {e}"))?;
            }
        }
    }
}
