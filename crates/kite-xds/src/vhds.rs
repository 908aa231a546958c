//! The virtual host discovery service (VHDS): a route table whose virtual
//! hosts a proxy fetches one by one, as requests name their hosts, over a
//! delta xDS stream. At 10,000 services a sidecar's outbound route table
//! is megabytes, every proxy of a namespace gets all of it, and a change
//! to one VirtualService sends all of it again to every proxy; with VHDS a
//! proxy holds the hosts its app calls, and a change sends one virtual
//! host to the proxies that hold it.
//!
//! Resources are named `<route configuration>/<host entry>` as Envoy's
//! VHDS names them: a proxy subscribes to the host its request named (an
//! alias), and the answer carries the virtual host under its own name with
//! the aliases it answers; a host no virtual host serves is answered with
//! the alias as the name and no resource.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::SystemTime,
};

use bytes::Bytes;
use envoy_types::pb::{
    envoy::{
        config::route::v3::VirtualHost,
        service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource},
    },
    google::protobuf::Any,
};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt as _};
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{
    Snapshot,
    ads::{Connections, Nack},
    type_url::VIRTUAL_HOST,
};

/// One route table's virtual hosts, encoded in one buffer, found by any of
/// their domains. Domains with wildcards stay in the route table itself:
/// only exact hosts are looked up here.
#[derive(Debug)]
pub struct VirtualHosts {
    route_config: String,
    /// The virtual hosts as laid out, shared with the tables patched from
    /// this one: a patch copies neither it nor, while both are alive, its
    /// memory.
    base: Bytes,
    /// Virtual hosts patched in since `base` was laid out, at offsets that
    /// go on from `base`'s end.
    extra: Bytes,
    /// (hash of a domain, where its virtual host is), by hash: 16 bytes a
    /// domain, where a map of strings would be several times that for
    /// each of the route views a control plane holds.
    domains: Vec<(u64, u32, u32)>,
    /// Bytes that replaced virtual hosts left behind.
    waste: usize,
    /// Tells tables apart, so that a stream knows it has answered from
    /// this very one.
    id: u64,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Builds [`VirtualHosts`] one virtual host at a time.
#[derive(Debug)]
pub struct VirtualHostsBuilder {
    route_config: String,
    buf: Vec<u8>,
    domains: Vec<(u64, u32, u32)>,
    /// A table of another route view whose buffer this one shares: a
    /// virtual host encoded exactly as there is not stored again.
    like: Option<Arc<VirtualHosts>>,
    /// Bytes of `like`'s buffer this table refers to.
    shared: usize,
    scratch: Vec<u8>,
}

/// The fields of a `VirtualHost` a lookup reads.
#[derive(Clone, PartialEq, prost::Message)]
struct Head {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, repeated, tag = "2")]
    domains: Vec<String>,
}

fn hash_of(s: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

// === impl VirtualHostsBuilder ===

impl VirtualHostsBuilder {
    pub fn new(route_config: &str) -> Self {
        Self {
            route_config: route_config.to_owned(),
            buf: Vec::new(),
            domains: Vec::new(),
            like: None,
            shared: 0,
            scratch: Vec::new(),
        }
    }

    /// A builder whose table keeps only the virtual hosts `like` (a table
    /// laid out whole, of another route view) does not have byte for byte.
    /// Route views differ in few virtual hosts (those of their namespace,
    /// which short names reach): at 10,000 services and 20 namespaces,
    /// each view's table alone was 5.6 MB, nearly all of it the same.
    pub fn sharing(route_config: &str, like: Arc<VirtualHosts>) -> Self {
        let mut builder = Self::new(route_config);
        if like.extra.is_empty() && like.route_config == route_config {
            builder.like = Some(like);
        }
        builder
    }

    pub fn push(&mut self, vhost: &VirtualHost) {
        let Some(like) = &self.like else {
            let start = self.buf.len();
            vhost.encode_raw(&mut self.buf);
            self.add(vhost, start, 0);
            return;
        };
        self.scratch.clear();
        vhost.encode_raw(&mut self.scratch);
        let same = vhost.domains.first().and_then(|first| {
            let h = hash_of(first.as_str());
            let from = like.domains.partition_point(|e| e.0 < h);
            like.domains[from..]
                .iter()
                .take_while(|e| e.0 == h)
                .find(|e| like.base[e.1 as usize..e.2 as usize] == self.scratch[..])
                .map(|e| (e.1, e.2))
        });
        if let Some((from, to)) = same {
            self.shared += (to - from) as usize;
            self.domains.extend(
                vhost
                    .domains
                    .iter()
                    .map(|d| (hash_of(d.as_str()), from, to)),
            );
            return;
        }
        let start = self.buf.len();
        let offset = like.base.len();
        self.buf.extend_from_slice(&self.scratch);
        self.add(vhost, start, offset);
    }

    /// Indexes the virtual host just encoded at `start..` of `buf`, whose
    /// offsets go on from `offset`.
    fn add(&mut self, vhost: &VirtualHost, start: usize, offset: usize) {
        let (Ok(from), Ok(to)) = (
            u32::try_from(offset + start),
            u32::try_from(offset + self.buf.len()),
        ) else {
            tracing::error!(vhost = %vhost.name, "route table past 4 GiB; virtual host left out");
            self.buf.truncate(start);
            return;
        };
        for d in &vhost.domains {
            self.domains.push((hash_of(d.as_str()), from, to));
        }
    }

    pub fn finish(mut self) -> Arc<VirtualHosts> {
        self.domains.sort_unstable();
        self.buf.shrink_to_fit();
        self.domains.shrink_to_fit();
        let (base, extra, waste) = match self.like {
            Some(like) => (
                like.base.clone(),
                Bytes::from(self.buf),
                like.base.len() - self.shared,
            ),
            None => (Bytes::from(self.buf), Bytes::new(), 0),
        };
        let mut table = VirtualHosts {
            route_config: self.route_config,
            base,
            extra,
            domains: self.domains,
            waste,
            id: next_id(),
        };
        // Sharing little, a table would keep the other's buffer alive for
        // nothing once that one goes: it gets a buffer of its own.
        if table.waste > (table.base.len() + table.extra.len()) / 2 {
            table = table.laid_out();
        }
        Arc::new(table)
    }
}

// === impl VirtualHosts ===

impl VirtualHosts {
    pub fn route_config(&self) -> &str {
        &self.route_config
    }

    /// The virtual host that serves `host` (a domain as the proxy matched
    /// it: lowercase, with the port if the request had one): its resource
    /// name and encoding.
    pub fn resolve(&self, host: &str) -> Option<(String, Bytes)> {
        let (name, start, end) = self.locate(host)?;
        Some((format!("{}/{name}", self.route_config), self.at(start, end)))
    }

    /// The encoding at `start..end` of `base` and then `extra`.
    fn at(&self, start: u32, end: u32) -> Bytes {
        let (start, end) = (start as usize, end as usize);
        match start.checked_sub(self.base.len()) {
            Some(from) => self.extra.slice(from..end - self.base.len()),
            None => self.base.slice(start..end),
        }
    }

    /// Whether this table keeps its virtual hosts in `other`'s buffer
    /// (see [`VirtualHostsBuilder::sharing`]).
    pub fn shares_buffer_with(&self, other: &VirtualHosts) -> bool {
        !self.base.is_empty() && self.base.as_ptr() == other.base.as_ptr()
    }

    /// Bytes of its buffers this table does not serve: virtual hosts a
    /// [`VirtualHosts::patched`] table replaced (until it is laid out
    /// again), and those of the other view whose buffer it shares.
    pub fn wasted(&self) -> usize {
        self.waste
    }

    /// The name of the virtual host serving `host`, and where it is.
    fn locate(&self, host: &str) -> Option<(String, u32, u32)> {
        let h = hash_of(host);
        let from = self.domains.partition_point(|e| e.0 < h);
        self.domains[from..]
            .iter()
            .take_while(|e| e.0 == h)
            .find_map(|&(_, start, end)| {
                let head = Head::decode(self.at(start, end)).ok()?;
                head.domains
                    .iter()
                    .any(|d| d == host)
                    .then_some((head.name, start, end))
            })
    }

    /// A successor in which each of `updates` replaces the virtual host of
    /// the same name, found by the update's first domain; `None` if one is
    /// not there. Only the updates are encoded: at 10,000 services, a
    /// VirtualService change then costs a copy of the table, not its
    /// translation.
    pub fn patched(&self, updates: &[VirtualHost]) -> Option<Arc<VirtualHosts>> {
        let mut extra = Vec::with_capacity(self.extra.len() + updates.len() * 1024);
        extra.extend_from_slice(&self.extra);
        let offset = self.base.len();
        let mut gone = std::collections::HashSet::new();
        let mut waste = self.waste;
        let mut added = Vec::new();
        for vh in updates {
            let (name, start, end) = self.locate(vh.domains.first()?)?;
            if name != vh.name {
                return None;
            }
            if gone.insert((start, end)) {
                waste += (end - start) as usize;
            }
            let at = offset + extra.len();
            vh.encode_raw(&mut extra);
            let end = offset + extra.len();
            let (from, to) = (u32::try_from(at).ok()?, u32::try_from(end).ok()?);
            added.extend(vh.domains.iter().map(|d| (hash_of(d.as_str()), from, to)));
        }
        // Sized ahead: collecting a filter would grow it to twice its size,
        // for each of the route views at once.
        let mut domains = Vec::with_capacity(self.domains.len() + added.len());
        domains.extend(
            self.domains
                .iter()
                .filter(|e| !gone.contains(&(e.1, e.2)))
                .copied(),
        );
        domains.extend(added);
        domains.sort_unstable();
        let mut table = VirtualHosts {
            route_config: self.route_config.clone(),
            base: self.base.clone(),
            extra: Bytes::from(extra),
            domains,
            waste,
            id: next_id(),
        };
        if table.waste > (table.base.len() + table.extra.len()) / 2 {
            table = table.laid_out();
        }
        Some(Arc::new(table))
    }

    /// This table with a buffer of its own holding only what it serves.
    fn laid_out(self) -> VirtualHosts {
        let (buf, mut domains) = compact(|s, e| self.at(s, e), self.domains.clone());
        domains.sort_unstable();
        VirtualHosts {
            base: Bytes::from(buf),
            extra: Bytes::new(),
            domains,
            waste: 0,
            ..self
        }
    }

    /// Every virtual host, decoded: for dumps and tests.
    pub fn decode_all(&self) -> Vec<VirtualHost> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &(_, start, end) in &self.domains {
            if seen.insert(start)
                && let Ok(vh) = VirtualHost::decode(self.at(start, end))
            {
                out.push(vh);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The encodings `domains` refers to (through `at`), laid out anew.
fn compact(
    at: impl Fn(u32, u32) -> Bytes,
    domains: Vec<(u64, u32, u32)>,
) -> (Vec<u8>, Vec<(u64, u32, u32)>) {
    let mut live: Vec<(u32, u32)> = domains.iter().map(|e| (e.1, e.2)).collect();
    live.sort_unstable();
    live.dedup();
    let mut out = Vec::with_capacity(live.iter().map(|(s, e)| (e - s) as usize).sum());
    let mut moved = std::collections::HashMap::with_capacity(live.len());
    for (start, end) in live {
        let to = out.len() as u32;
        out.extend_from_slice(&at(start, end));
        moved.insert(start, to);
    }
    let domains = domains
        .into_iter()
        .map(|(h, start, end)| {
            let at = moved[&start];
            (h, at, at + (end - start))
        })
        .collect();
    (out, domains)
}

/// What a stream last told its proxy about one alias.
#[derive(Clone, Debug, PartialEq)]
enum Told {
    /// Served by this resource, at this version.
    Host {
        name: String,
        version: u64,
    },
    NotFound,
}

/// One delta xDS stream serving VHDS.
pub(crate) struct DeltaStream {
    node_id: String,
    connections: Arc<Connections>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Subscribed aliases; `None` until answered.
    aliases: BTreeMap<String, Option<Told>>,
    /// The tables every alias was last answered from: a snapshot with the
    /// very same ones (a pod added, say) changes no answer.
    answered_from: Vec<u64>,
    nonce: u64,
    sent_nonce: String,
}

/// Why a request closes the stream.
fn refuse(req: &DeltaDiscoveryRequest) -> Option<Status> {
    (req.type_url != VIRTUAL_HOST).then(|| {
        Status::unimplemented(format!(
            "Kite serves delta xDS for virtual hosts (VHDS, {VIRTUAL_HOST}) only, not {}; \
             configure ADS with api_type: GRPC",
            req.type_url
        ))
    })
}

impl DeltaStream {
    pub(crate) fn new(
        node_id: String,
        connections: Arc<Connections>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        Self {
            node_id,
            connections,
            tx,
            snapshots,
            aliases: BTreeMap::new(),
            answered_from: Vec::new(),
            nonce: 0,
            sent_nonce: String::new(),
        }
    }

    pub(crate) async fn run<I>(mut self, first: DeltaDiscoveryRequest, mut inbound: I)
    where
        I: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin,
    {
        info!("VHDS stream opened");
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take() {
                if let Some(status) = refuse(&req) {
                    let _ = self.tx.send(Err(status)).await;
                    break;
                }
                if self.on_request(req).await.is_err() {
                    break;
                }
            }
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => next = Some(req),
                    None => break,
                    Some(Err(status)) => {
                        debug!(%status, "VHDS stream error");
                        break;
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let tables = tables(&self.snapshots.borrow());
                    if tables == self.answered_from && self.aliases.values().all(Option::is_some) {
                        continue;
                    }
                    let all: Vec<String> = self.aliases.keys().cloned().collect();
                    if self.answer(all).await.is_err() {
                        break;
                    }
                    self.answered_from = tables;
                }
            }
        }
        info!("VHDS stream closed");
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Closed> {
        if !req.response_nonce.is_empty() && req.response_nonce == self.sent_nonce {
            match &req.error_detail {
                Some(error) => {
                    warn!(kind = "VHDS", message = %error.message, "proxy rejected virtual hosts (NACK)");
                    let nack = Nack {
                        version: self.sent_nonce.clone(),
                        message: error.message.clone(),
                        at: SystemTime::now(),
                    };
                    self.connections
                        .update_node(&self.node_id, VIRTUAL_HOST, |s| {
                            s.nacks += 1;
                            s.last_nack = Some(nack);
                        });
                    // What the proxy holds is no longer known: the next
                    // change answers every alias again.
                    for told in self.aliases.values_mut() {
                        *told = None;
                    }
                }
                None => {
                    let nonce = req.response_nonce.clone();
                    self.connections
                        .update_node(&self.node_id, VIRTUAL_HOST, |s| {
                            s.acks += 1;
                            s.acked_version = nonce;
                        });
                }
            }
        }
        for alias in &req.resource_names_unsubscribe {
            self.aliases.remove(alias);
        }
        let mut new = Vec::new();
        for alias in req.resource_names_subscribe {
            if !self.aliases.contains_key(&alias) {
                self.aliases.insert(alias.clone(), None);
                new.push(alias);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        self.answer(new).await
    }

    /// Answers `aliases` from the current snapshot, sending only what the
    /// proxy was not told already.
    async fn answer(&mut self, aliases: Vec<String>) -> Result<(), Closed> {
        // Not marked seen: a change not acted on yet still wakes the stream.
        let snapshot = self.snapshots.borrow().clone();
        let mut found: BTreeMap<String, Resource> = BTreeMap::new();
        let mut not_found = Vec::new();
        let mut dropped = BTreeSet::new();
        for alias in aliases {
            let Some(before) = self.aliases.get(&alias) else {
                continue;
            };
            let resolved = resolve(&snapshot, &alias);
            let now = match &resolved {
                Some((name, encoded)) => Told::Host {
                    name: name.clone(),
                    version: hash_of(encoded.as_ref()),
                },
                None => Told::NotFound,
            };
            if before.as_ref() == Some(&now) {
                continue;
            }
            if let Some(Told::Host { name, .. }) = before {
                dropped.insert(name.clone());
            }
            match (resolved, &now) {
                (Some((name, encoded)), Told::Host { version, .. }) => {
                    let entry = found.entry(name.clone()).or_insert_with(|| Resource {
                        name,
                        version: format!("{version:016x}"),
                        resource: Some(Any {
                            type_url: VIRTUAL_HOST.to_owned(),
                            value: encoded.to_vec(),
                        }),
                        ..Default::default()
                    });
                    entry.aliases.push(alias.clone());
                }
                _ => not_found.push(Resource {
                    name: alias.clone(),
                    aliases: vec![alias.clone()],
                    ..Default::default()
                }),
            }
            self.aliases.insert(alias, Some(now));
        }
        // A resource no alias leads to any more is gone from the proxy.
        let removed: Vec<String> = dropped
            .into_iter()
            .filter(|name| {
                !found.contains_key(name)
                    && !self
                        .aliases
                        .values()
                        .any(|t| matches!(t, Some(Told::Host { name: n, .. }) if n == name))
            })
            .collect();
        if found.is_empty() && not_found.is_empty() && removed.is_empty() {
            return Ok(());
        }
        self.nonce += 1;
        self.sent_nonce = self.nonce.to_string();
        let count = found.len() + not_found.len();
        debug!(count, removed = removed.len(), nonce = %self.sent_nonce, "VHDS push");
        let response = DeltaDiscoveryResponse {
            system_version_info: snapshot.generation.to_string(),
            resources: found.into_values().chain(not_found).collect(),
            type_url: VIRTUAL_HOST.to_owned(),
            removed_resources: removed,
            nonce: self.sent_nonce.clone(),
            ..Default::default()
        };
        let nonce = self.sent_nonce.clone();
        self.connections
            .update_node(&self.node_id, VIRTUAL_HOST, |s| {
                s.pushes += 1;
                s.sent_version = nonce.clone();
                s.sent_nonce = nonce;
            });
        self.tx.send(Ok(response)).await.map_err(|_| Closed)
    }
}

/// Which VHDS tables a snapshot has.
fn tables(snapshot: &Snapshot) -> Vec<u64> {
    snapshot.vhosts.values().map(|v| v.id).collect()
}

/// `<route configuration>/<host>` against the snapshot's VHDS tables.
fn resolve(snapshot: &Snapshot, alias: &str) -> Option<(String, Bytes)> {
    let (route_config, host) = alias.rsplit_once('/')?;
    snapshot.vhosts.get(route_config)?.resolve(host)
}

pub(crate) struct Closed;

#[cfg(test)]
mod tests;
