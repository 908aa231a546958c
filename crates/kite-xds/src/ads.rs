//! The state-of-the-world aggregated discovery server. Each stream follows
//! the xDS protocol: the first request names the node; a request whose nonce
//! matches the last response ACKs (no `error_detail`) or NACKs it; a changed
//! snapshot is pushed per type, in warming order, only where it changed.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::core::v3::{ControlPlane, Node},
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::{
            AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
        },
    },
};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    Snapshot,
    request::Request,
    snapshot::{Held, Names},
    type_url,
};

/// Where a stream gets the snapshots of the proxy it serves.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Resolves `node` to its snapshot channel, or refuses it with a reason
    /// the proxy will see.
    fn watch(&self, node: &Node) -> Result<watch::Receiver<Arc<Snapshot>>, String>;
}

/// The ADS gRPC service, plus what every stream has ACKed and NACKed.
pub struct AdsServer<S> {
    source: Arc<S>,
    connections: Arc<Connections>,
    next_id: AtomicU64,
    interner: Arc<Interner>,
}

/// Per-stream state, readable by debug endpoints.
#[derive(Debug, Default)]
pub struct Connections {
    streams: Mutex<BTreeMap<u64, Connection>>,
    /// The latest stream of each node, for its VHDS stream to report on.
    by_node: Mutex<std::collections::HashMap<String, u64>>,
}

#[derive(Clone, Debug)]
pub struct Connection {
    pub id: u64,
    pub node_id: String,
    pub cluster: String,
    pub connected_at: SystemTime,
    /// The generation of the last snapshot this stream has acted on.
    pub generation: u64,
    pub types: BTreeMap<String, TypeStatus>,
}

#[derive(Clone, Debug, Default)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    /// Sorted; shared by every stream that asked for the same names.
    pub resource_names: Arc<Names>,
    pub pushes: u64,
    pub acks: u64,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug)]
pub struct Nack {
    pub version: String,
    pub message: String,
    pub at: SystemTime,
}

/// An encoded DiscoveryResponse, in pieces: the resources are slices of
/// the snapshot's parts, sent without being copied per stream.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    pub chunks: Vec<Bytes>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// What one stream last sent and was asked for, per type.
#[derive(Default)]
struct Subscription {
    names: Arc<Interned>,
    sent_version: Option<String>,
    sent_nonce: String,
    /// What the proxy has of this type, if it is known to have accepted
    /// everything sent so far; a push then sends only what changed.
    held: Option<Held>,
}

/// A list of resource names as a request gave it, and sorted. Proxies
/// repeat their names in every ACK, and proxies with the same view ask for
/// the same thousands of names: one copy serves them all.
#[derive(Debug, Default)]
struct Interned {
    raw: Vec<String>,
    /// `raw` as a request's `resource_names` fields.
    encoded: Vec<u8>,
    names: Arc<Names>,
}

/// Name lists in use, by a hash of the list as requested.
#[derive(Default)]
struct Interner {
    lists: Mutex<std::collections::HashMap<u64, std::sync::Weak<Interned>>>,
}

impl Interner {
    /// The interned list equal to the names `req` asks for.
    fn intern(&self, req: &Request) -> Arc<Interned> {
        use std::hash::{DefaultHasher, Hasher};
        let mut h = DefaultHasher::new();
        let mut count = 0usize;
        for name in req.names() {
            h.write(name);
            h.write_u8(0xff);
            count += 1;
        }
        h.write_usize(count);
        let key = h.finish();
        let mut lists = self.lists.lock();
        if let Some(found) = lists.get(&key).and_then(std::sync::Weak::upgrade)
            && found.matches(req)
        {
            return found;
        }
        let raw = req.names_owned();
        let mut encoded = Vec::new();
        for name in &raw {
            prost::encoding::string::encode(3, name, &mut encoded);
        }
        let interned = Arc::new(Interned {
            names: Arc::new(Names::new(raw.clone())),
            raw,
            encoded,
        });
        if lists.len() >= 64 {
            lists.retain(|_, w| w.strong_count() > 0);
        }
        lists.insert(key, Arc::downgrade(&interned));
        interned
    }
}

impl Interned {
    /// Whether `req` asks for exactly these names, in this order.
    fn matches(&self, req: &Request) -> bool {
        // Encoded as this list encodes: one comparison of the bytes. (An
        // encoder may differ, in varint padding say, and is then compared
        // name by name.)
        if req.encoded_names() == Some(self.encoded.as_slice()) {
            return true;
        }
        let mut asked = req.names();
        self.raw.iter().all(|n| asked.next() == Some(n.as_bytes())) && asked.next().is_none()
    }
}

// === impl Encoded ===

impl Encoded {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The response itself, for servers that encode it again (tonic's).
    pub fn decode(&self) -> Result<DiscoveryResponse, prost::DecodeError> {
        let mut whole = Vec::with_capacity(self.len());
        for c in &self.chunks {
            whole.extend_from_slice(c);
        }
        DiscoveryResponse::decode(whole.as_slice())
    }
}

// === impl AdsServer ===

impl<S: SnapshotSource> AdsServer<S> {
    pub fn new(source: Arc<S>) -> Self {
        Self {
            source,
            connections: Arc::default(),
            next_id: AtomicU64::new(1),
            interner: Arc::default(),
        }
    }

    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// Starts serving one ADS stream whose first request is `first` and
    /// later ones come from `inbound`: for servers that do their own gRPC
    /// framing (tonic keeps a buffer the size of the largest message for
    /// the life of each stream, which at scale is most of the memory).
    pub fn open<I>(
        &self,
        first: Request,
        inbound: I,
    ) -> Result<mpsc::Receiver<Result<Encoded, Status>>, Status>
    where
        I: Stream<Item = Result<Request, Status>> + Send + Unpin + 'static,
    {
        let (node, snapshots) = self.watch(first.node.as_ref())?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connections.by_node.lock().insert(node.id.clone(), id);
        self.connections.streams.lock().insert(
            id,
            Connection {
                id,
                node_id: node.id.clone(),
                cluster: node.cluster.clone(),
                connected_at: SystemTime::now(),
                generation: 0,
                types: BTreeMap::new(),
            },
        );
        let (tx, rx) = mpsc::channel(16);
        let stream = Stream_ {
            id,
            connections: self.connections.clone(),
            interner: self.interner.clone(),
            tx,
            snapshots,
            subscriptions: BTreeMap::new(),
            nonce: 0,
        };
        let span = info_span!("ads", id, node = %node.id);
        tokio::spawn(stream.run(first, inbound).instrument(span));
        Ok(rx)
    }

    /// The node a stream's first request names, and its snapshots.
    fn watch(&self, node: Option<&Node>) -> Result<(Node, watch::Receiver<Arc<Snapshot>>), Status> {
        let node = node
            .cloned()
            .ok_or_else(|| Status::invalid_argument("the first request must carry a node"))?;
        let snapshots = self.source.watch(&node).map_err(|reason| {
            Status::failed_precondition(format!("proxy {}: {reason}", node.id))
        })?;
        Ok((node, snapshots))
    }

    /// Starts serving one delta xDS stream (VHDS), as [`AdsServer::open`]
    /// does a state-of-the-world one.
    pub fn open_delta<I>(
        &self,
        first: DeltaDiscoveryRequest,
        inbound: I,
    ) -> Result<mpsc::Receiver<Result<DeltaDiscoveryResponse, Status>>, Status>
    where
        I: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        let (node, snapshots) = self.watch(first.node.as_ref())?;
        let (tx, rx) = mpsc::channel(16);
        let stream =
            crate::vhds::DeltaStream::new(node.id.clone(), self.connections.clone(), tx, snapshots);
        let span = info_span!("vhds", node = %node.id);
        tokio::spawn(stream.run(first, inbound).instrument(span));
        Ok(rx)
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        Arc::new(self).service()
    }

    /// The tonic service, sharing this server.
    pub fn service(self: &Arc<Self>) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::from_arc(self.clone())
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

#[tonic::async_trait]
impl<S: SnapshotSource> AggregatedDiscoveryService for AdsServer<S> {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before the first request"))?;
        let inbound = inbound.map(|r| r.map(Request::from));
        let rx = self.open(first.into(), inbound)?;
        let responses = ReceiverStream::new(rx).map(|r| {
            r.and_then(|encoded| {
                encoded
                    .decode()
                    .map_err(|e| Status::internal(format!("re-decoding a response: {e}")))
            })
        });
        Ok(Response::new(Box::pin(responses)))
    }

    /// VHDS only ([`crate::vhds`]); every other type is state of the world.
    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before the first request"))?;
        let rx = self.open_delta(first, inbound)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

// === impl Connections ===

impl Connections {
    pub fn list(&self) -> Vec<Connection> {
        self.streams.lock().values().cloned().collect()
    }

    fn update(&self, id: u64, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(conn) = self.streams.lock().get_mut(&id) {
            f(conn.types.entry(type_url.to_owned()).or_default());
        }
    }

    /// Updates the latest stream of `node_id`: a proxy's VHDS stream
    /// reports on the row of its state-of-the-world stream.
    pub(crate) fn update_node(
        &self,
        node_id: &str,
        type_url: &str,
        f: impl FnOnce(&mut TypeStatus),
    ) {
        let Some(id) = self.by_node.lock().get(node_id).copied() else {
            return;
        };
        self.update(id, type_url, f);
    }

    fn set_generation(&self, id: u64, generation: u64) {
        if let Some(conn) = self.streams.lock().get_mut(&id) {
            conn.generation = generation;
        }
    }

    fn remove(&self, id: u64) {
        if let Some(conn) = self.streams.lock().remove(&id) {
            let mut by_node = self.by_node.lock();
            if by_node.get(&conn.node_id) == Some(&id) {
                by_node.remove(&conn.node_id);
            }
        }
    }
}

/// One ADS stream's task.
struct Stream_ {
    id: u64,
    connections: Arc<Connections>,
    interner: Arc<Interner>,
    tx: mpsc::Sender<Result<Encoded, Status>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    subscriptions: BTreeMap<String, Subscription>,
    nonce: u64,
}

impl Stream_ {
    async fn run<I>(mut self, first: Request, mut inbound: I)
    where
        I: Stream<Item = Result<Request, Status>> + Send + Unpin,
    {
        info!("proxy connected");
        let generation = self.snapshots.borrow().generation;
        self.connections.set_generation(self.id, generation);
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take()
                && self.on_request(req).await.is_err()
            {
                break;
            }
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => next = Some(req),
                    None => break,
                    Some(Err(status)) => {
                        debug!(%status, "stream error");
                        break;
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if self.push_changed().await.is_err() {
                        break;
                    }
                }
            }
        }
        self.connections.remove(self.id);
        info!("proxy disconnected");
    }

    async fn on_request(&mut self, req: Request) -> Result<(), Closed> {
        let sub = self.subscriptions.entry(req.type_url.clone()).or_default();
        let initial = req.response_nonce.is_empty();
        if !initial && req.response_nonce != sub.sent_nonce {
            debug!(kind = type_url::short(&req.type_url), nonce = %req.response_nonce, "stale nonce; ignored");
            return Ok(());
        }
        let names_changed = !sub.names.matches(&req);
        if names_changed {
            sub.names = self.interner.intern(&req);
        }
        let Request {
            version_info,
            type_url,
            error_detail,
            ..
        } = req;
        let names = sub.names.names.clone();
        if let Some(error) = &error_detail {
            warn!(
                kind = type_url::short(&type_url),
                version = %version_info,
                message = %error.message,
                "proxy rejected config (NACK)"
            );
            let nack = Nack {
                version: sub.sent_version.clone().unwrap_or_default(),
                message: error.message.clone(),
                at: SystemTime::now(),
            };
            // What the proxy has is no longer known: the next push is whole.
            sub.held = None;
            self.connections.update(self.id, &type_url, |s| {
                s.nacks += 1;
                s.last_nack = Some(nack);
                s.resource_names = names;
            });
            // The proxy keeps its last good config; resending the same
            // content would only be rejected again.
            return Ok(());
        }
        if !initial {
            debug!(kind = type_url::short(&type_url), version = %version_info, "ACK");
            self.connections.update(self.id, &type_url, |s| {
                s.acks += 1;
                s.acked_version = version_info;
                s.resource_names = names;
            });
        }
        if initial || names_changed {
            let snapshot = self.snapshots.borrow_and_update().clone();
            self.send(&snapshot, &type_url, true, false).await?;
        }
        Ok(())
    }

    async fn push_changed(&mut self) -> Result<(), Closed> {
        let snapshot = self.snapshots.borrow_and_update().clone();
        let mut clusters_sent = false;
        for kind in type_url::PUSH_ORDER {
            if self.subscriptions.contains_key(kind) {
                // A changed cluster warms until its endpoints arrive again,
                // even if they did not change (Envoy's warming rule): all
                // of them, not just the changed ones.
                let force = clusters_sent && kind == type_url::ENDPOINT;
                let sent = self.send(&snapshot, kind, force, !force).await?;
                clusters_sent |= sent && kind == type_url::CLUSTER;
            }
        }
        self.connections
            .set_generation(self.id, snapshot.generation);
        Ok(())
    }

    /// Sends the type's resources from `snapshot`, unless `force` is false
    /// and the proxy already has exactly these; says whether it sent. With
    /// `delta`, a named type sends only what changed since what the proxy
    /// holds (all of it when that is unknown).
    async fn send(
        &mut self,
        snapshot: &Snapshot,
        kind: &str,
        force: bool,
        delta: bool,
    ) -> Result<bool, Closed> {
        let Some(sub) = self.subscriptions.get_mut(kind) else {
            return Ok(false);
        };
        let version = snapshot.version(kind, &sub.names.names);
        if !force && sub.sent_version.as_deref() == Some(version.as_str()) {
            return Ok(false);
        }
        let held = if delta { sub.held.take() } else { None };
        let selection = snapshot.selection(kind, &sub.names.names, held.as_ref());
        sub.held = Some(selection.held);
        if held.is_some() && selection.count == 0 {
            // Nothing this proxy asked for changed.
            return Ok(false);
        }
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        sub.sent_version = Some(version.clone());
        sub.sent_nonce = nonce.clone();
        let count = selection.count;
        // Encoded as prost would encode the whole response, fields in
        // order, with the resources as the snapshot holds them.
        let head = DiscoveryResponse {
            version_info: version.clone(),
            ..Default::default()
        };
        let tail = DiscoveryResponse {
            type_url: kind.to_owned(),
            nonce: nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: "kite".to_owned(),
            }),
            ..Default::default()
        };
        let mut chunks = Vec::with_capacity(selection.encoded.len() + 2);
        chunks.push(Bytes::from(head.encode_to_vec()));
        chunks.extend(selection.encoded);
        chunks.push(Bytes::from(tail.encode_to_vec()));
        let response = Encoded { chunks };
        debug!(kind = type_url::short(kind), %version, %nonce, count, partial = held.is_some(), "push");
        self.connections.update(self.id, kind, |s| {
            s.pushes += 1;
            s.sent_version = version;
            s.sent_nonce = nonce;
        });
        self.tx.send(Ok(response)).await.map_err(|_| Closed)?;
        Ok(true)
    }
}

struct Closed;
