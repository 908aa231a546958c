//! Simulated sidecars: ADS streams that behave as Envoy does, and the
//! VHDS stream of Kite's proxy.

use super::*;

// === simulated sidecars ===

/// Just the name of a Cluster, ClusterLoadAssignment or RouteConfiguration
/// (field 1 of each), without decoding the rest.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Named {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
}

/// The part of a Cluster that says where its endpoints come from.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ClusterEds {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(message, optional, tag = "3")]
    pub(crate) eds_cluster_config: Option<EdsConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EdsConfig {
    #[prost(string, tag = "2")]
    pub(crate) service_name: String,
}

/// A resource whose arrival ends a measured change: `resource` of
/// `type_url` carrying `needle`.
pub(crate) struct Expectation {
    pub(crate) id: u64,
    pub(crate) type_url: &'static str,
    pub(crate) resource: String,
    pub(crate) needle: Vec<u8>,
    pub(crate) start: Instant,
    pub(crate) acked: AtomicUsize,
    /// Nanoseconds from `start` to the latest ACK so far.
    pub(crate) last_ack_ns: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) synced: AtomicUsize,
    /// Nanoseconds from the fleet's start to the last sidecar's sync.
    pub(crate) last_sync_ns: AtomicU64,
    pub(crate) failed: AtomicUsize,
    pub(crate) expectation: RwLock<Option<Arc<Expectation>>>,
    /// EDS name lists in use, by a hash of the list.
    pub(crate) eds_names: Mutex<BTreeMap<u64, Arc<NameList>>>,
    pub(crate) responses: AtomicU64,
    pub(crate) response_bytes: AtomicU64,
    /// Sidecars whose VHDS stream has answered every host their app calls.
    pub(crate) hosts_synced: AtomicUsize,
}

#[derive(Default)]
pub(crate) struct TypeState {
    pub(crate) version: String,
    pub(crate) nonce: String,
    pub(crate) names: Arc<NameList>,
    pub(crate) acked: bool,
    /// Names requested and not answered yet.
    pub(crate) waiting: bool,
}

pub(crate) fn node(
    args: &Args,
    mesh: &Mesh,
    i: usize,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    let pod = mesh.proxy_pod(i, args.proxies);
    let boot = Bootstrap {
        kind: ProxyKind::Sidecar,
        ip: pod.ip.into(),
        pod: pod.name.clone(),
        namespace: pod.namespace.clone(),
        labels: mesh.labels(pod),
        service_account: service_name(pod.service),
        app_ip: Some(pod.ip.into()),
        xds: args
            .xds
            .parse()
            .unwrap_or_else(|_| ([127, 0, 0, 1], 15010).into()),
        admin: (pod.ip, 15000).into(),
    };
    let mut node = boot.node();
    // As `kite proxy` announces itself: Kite's own sidecar, with a mesh
    // identity (mutual TLS).
    if let Some(meta) = node.metadata.as_mut() {
        for key in ["KITE_PROXY", "KITE_IDENTITY"] {
            meta.fields.insert(
                key.to_owned(),
                envoy_types::pb::google::protobuf::Value {
                    kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                        "true".to_owned(),
                    )),
                },
            );
        }
    }
    node
}

/// Resource names to request, and their encoding as a DiscoveryRequest's
/// `resource_names`: a sidecar repeats thousands of EDS names in every ACK,
/// and encoding them anew each time would be most of the simulator's CPU,
/// which shares the machine with the control plane. The bytes sent are the
/// same as encoding the whole request would give.
#[derive(Default, PartialEq)]
pub(crate) struct NameList {
    pub(crate) names: Vec<String>,
    encoded: Bytes,
}

impl NameList {
    pub(crate) fn new(names: Vec<String>) -> Self {
        let mut encoded = Vec::new();
        for name in &names {
            prost::encoding::string::encode(3, name, &mut encoded);
        }
        Self {
            names,
            encoded: encoded.into(),
        }
    }
}

/// A DiscoveryRequest, encoded in field order as prost (and Envoy) would:
/// the fields before the names, the names, the fields after them.
pub(crate) struct EncodedRequest {
    head: Vec<u8>,
    names: Bytes,
    tail: Vec<u8>,
}

pub(crate) fn request(
    kind: &'static str,
    state: &TypeState,
    node: Option<envoy_types::pb::envoy::config::core::v3::Node>,
) -> EncodedRequest {
    let head = DiscoveryRequest {
        version_info: state.version.clone(),
        node,
        ..Default::default()
    };
    let tail = DiscoveryRequest {
        type_url: kind.to_owned(),
        response_nonce: state.nonce.clone(),
        ..Default::default()
    };
    EncodedRequest {
        head: head.encode_to_vec(),
        names: state.names.encoded.clone(),
        tail: tail.encode_to_vec(),
    }
}

/// gRPC codec for the simulator's ADS stream: requests go out as encoded,
/// responses are decoded whole.
#[derive(Clone, Copy, Default)]
pub(crate) struct AdsCodec;

impl tonic::codec::Codec for AdsCodec {
    type Encode = EncodedRequest;
    type Decode = DiscoveryResponse;
    type Encoder = AdsCodec;
    type Decoder = AdsCodec;

    fn encoder(&mut self) -> AdsCodec {
        AdsCodec
    }

    fn decoder(&mut self) -> AdsCodec {
        AdsCodec
    }
}

impl tonic::codec::Encoder for AdsCodec {
    type Item = EncodedRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: EncodedRequest,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item.head);
        dst.put_slice(&item.names);
        dst.put_slice(&item.tail);
        Ok(())
    }
}

impl tonic::codec::Decoder for AdsCodec {
    type Item = DiscoveryResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        DiscoveryResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("decoding a response: {e}")))
    }
}

pub(crate) fn eds_names(shared: &Shared, rsp: &DiscoveryResponse) -> Arc<NameList> {
    let mut names: Vec<String> = rsp
        .resources
        .iter()
        .filter_map(|any| ClusterEds::decode(any.value.as_slice()).ok())
        .filter_map(|c| {
            c.eds_cluster_config.map(|eds| {
                if eds.service_name.is_empty() {
                    c.name
                } else {
                    eds.service_name
                }
            })
        })
        .collect();
    names.sort();
    // Sidecars with the same view ask for the same thousands of names:
    // one copy for all of them keeps the simulator small.
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&names, &mut h);
    let key = std::hash::Hasher::finish(&h);
    let mut lists = shared.eds_names.lock();
    match lists.get(&key) {
        Some(found) if found.names == names => found.clone(),
        _ => {
            let names = Arc::new(NameList::new(names));
            lists.insert(key, names.clone());
            names
        }
    }
}

pub(crate) fn rds_names(rsp: &DiscoveryResponse) -> Arc<NameList> {
    let mut names: Vec<String> = rsp
        .resources
        .iter()
        .filter_map(|any| Listener::decode(any.value.as_slice()).ok())
        .flat_map(|l| l.filter_chains.into_iter())
        .flat_map(|c| c.filters.into_iter())
        .filter_map(|f| match f.config_type {
            Some(ConfigType::TypedConfig(any)) => {
                HttpConnectionManager::decode(any.value.as_slice()).ok()
            }
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    Arc::new(NameList::new(names))
}

/// One sidecar's ADS stream, for as long as the control plane keeps it.
pub(crate) async fn sidecar(
    channel: tonic::transport::Channel,
    node: envoy_types::pb::envoy::config::core::v3::Node,
    shared: Arc<Shared>,
    fleet_start: Instant,
    mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> anyhow::Result<()> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel::<EncodedRequest>();
    let mut types: BTreeMap<&'static str, TypeState> = BTreeMap::new();
    let mut first = Some(node);
    for kind in [type_url::CLUSTER, type_url::LISTENER] {
        let s = types.entry(kind).or_default();
        s.waiting = true;
        tx.send(request(kind, s, first.take()))
            .context("queueing the first request")?;
    }
    grpc.ready().await.context("connecting the ADS stream")?;
    let mut responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            ),
            AdsCodec,
        )
        .await
        .context("opening the ADS stream")?
        .into_inner();
    let mut synced = false;
    let mut met = 0u64;
    while let Some(rsp) = responses.message().await.context("receiving")? {
        shared.responses.fetch_add(1, Ordering::Relaxed);
        shared
            .response_bytes
            .fetch_add(rsp.encoded_len() as u64, Ordering::Relaxed);
        let Some(kind) = type_url::PUSH_ORDER
            .into_iter()
            .find(|t| *t == rsp.type_url)
        else {
            bail!("a response of a type never asked for: {}", rsp.type_url);
        };
        let expectation = shared.expectation.read().clone();
        let hit = expectation.as_ref().is_some_and(|e| {
            e.id > met
                && e.type_url == kind
                && rsp.resources.iter().any(|any| {
                    Named::decode(any.value.as_slice()).is_ok_and(|n| n.name == e.resource)
                        && any
                            .value
                            .windows(e.needle.len())
                            .any(|w| w == e.needle.as_slice())
                })
        });
        let follow = match kind {
            type_url::CLUSTER => Some((type_url::ENDPOINT, eds_names(&shared, &rsp))),
            type_url::LISTENER => Some((type_url::ROUTE, rds_names(&rsp))),
            _ => None,
        };
        let s = types.entry(kind).or_default();
        s.version = rsp.version_info;
        s.nonce = rsp.nonce;
        s.acked = true;
        s.waiting = false;
        tx.send(request(kind, s, None)).context("queueing an ACK")?;
        if let (true, Some(e)) = (hit, expectation) {
            met = e.id;
            let ns = u64::try_from(e.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            e.last_ack_ns.fetch_max(ns, Ordering::AcqRel);
            e.acked.fetch_add(1, Ordering::AcqRel);
        }
        if let Some((named, names)) = follow {
            let s = types.entry(named).or_default();
            if s.names.names != names.names || (!s.acked && !s.waiting) {
                s.names = names;
                s.waiting = true;
                tx.send(request(named, s, None))
                    .context("queueing a request for names")?;
            }
        }
        if !synced
            && [
                type_url::CLUSTER,
                type_url::ENDPOINT,
                type_url::LISTENER,
                type_url::ROUTE,
            ]
            .iter()
            .all(|t| types.get(t).is_some_and(|s| s.acked && !s.waiting))
        {
            synced = true;
            permit.take();
            let ns = u64::try_from(fleet_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.last_sync_ns.fetch_max(ns, Ordering::AcqRel);
            shared.synced.fetch_add(1, Ordering::AcqRel);
        }
    }
    bail!("the control plane closed the stream")
}

/// One sidecar's VHDS stream, as Kite's proxy keeps it: a delta xDS stream
/// subscribed to the hosts its app calls (`aliases`), every response ACKed.
pub(crate) async fn vhds_sidecar(
    channel: tonic::transport::Channel,
    node: envoy_types::pb::envoy::config::core::v3::Node,
    shared: Arc<Shared>,
    fleet_start: Instant,
    aliases: Vec<String>,
) -> anyhow::Result<()> {
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    };
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::unbounded_channel();
    let wanted = aliases.len();
    tx.send(DeltaDiscoveryRequest {
        node: Some(node),
        type_url: type_url::VIRTUAL_HOST.to_owned(),
        resource_names_subscribe: aliases,
        ..Default::default()
    })
    .context("queueing the VHDS subscription")?;
    let mut responses = client
        .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .context("opening the VHDS stream")?
        .into_inner();
    let mut answered = std::collections::HashSet::new();
    let mut met = 0u64;
    while let Some(rsp) = responses.message().await.context("receiving VHDS")? {
        shared.responses.fetch_add(1, Ordering::Relaxed);
        shared
            .response_bytes
            .fetch_add(rsp.encoded_len() as u64, Ordering::Relaxed);
        let expectation = shared.expectation.read().clone();
        let hit = expectation.as_ref().is_some_and(|e| {
            e.id > met
                && e.type_url == type_url::VIRTUAL_HOST
                && rsp.resources.iter().any(|r| {
                    r.name == e.resource
                        && r.resource.as_ref().is_some_and(|any| {
                            any.value
                                .windows(e.needle.len())
                                .any(|w| w == e.needle.as_slice())
                        })
                })
        });
        let before = answered.len();
        for r in &rsp.resources {
            answered.extend(r.aliases.iter().cloned());
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: type_url::VIRTUAL_HOST.to_owned(),
            response_nonce: rsp.nonce,
            ..Default::default()
        })
        .context("queueing a VHDS ACK")?;
        if let (true, Some(e)) = (hit, expectation) {
            met = e.id;
            let ns = u64::try_from(e.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            e.last_ack_ns.fetch_max(ns, Ordering::AcqRel);
            e.acked.fetch_add(1, Ordering::AcqRel);
        }
        if before < wanted && answered.len() >= wanted {
            let ns = u64::try_from(fleet_start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            shared.last_sync_ns.fetch_max(ns, Ordering::AcqRel);
            shared.hosts_synced.fetch_add(1, Ordering::AcqRel);
        }
    }
    bail!("the control plane closed the VHDS stream")
}
