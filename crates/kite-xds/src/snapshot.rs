use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    ops::Range,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Everything one proxy should have: resources by type URL and name.
///
/// A type's resources come in parts: parts shared with other proxies (the
/// mesh's outbound clusters, endpoints and routes are the same for every
/// proxy with the same view, and at scale they are nearly all of it) and
/// the proxy's own part, which [`Snapshot::insert`] fills. Sharing keeps
/// memory flat in the number of proxies, and lets a stream push only what
/// changed in a part it already has.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    types: BTreeMap<&'static str, Parts>,
    /// Route tables whose virtual hosts are served by VHDS, by route
    /// configuration name; shared like the parts, and compared by identity.
    pub vhosts: BTreeMap<String, Arc<crate::VirtualHosts>>,
    /// Counts the snapshots published to one proxy, so that "has the
    /// proxy been sent the latest?" can be answered; not part of equality.
    pub generation: u64,
}

#[derive(Clone, Debug, Default)]
struct Parts {
    shared: Vec<Arc<TypeResources>>,
    own: Arc<TypeResources>,
}

impl PartialEq for Parts {
    /// Shared parts compare by identity: a part that did not change stays
    /// the very same part ([`TypeResources::succeed`]), and comparing
    /// thousands of resources per proxy on every push would cost more than
    /// the push. At worst an equal part built apart counts as a change, and
    /// streams, seeing the same version, send nothing.
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.own, &other.own) || self.own == other.own)
            && self.shared.len() == other.shared.len()
            && self
                .shared
                .iter()
                .zip(&other.shared)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
            && self.vhosts.len() == other.vhosts.len()
            && self
                .vhosts
                .iter()
                .zip(&other.vhosts)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }
}

/// Resources of one type, by name, each held as a DiscoveryResponse
/// carries it (its `resources` field: tag, length, encoded `Any`), all in
/// one buffer. A response is then the buffer's slices: a part shared by a
/// thousand proxies is sent to each without being copied or encoded again,
/// and responses queued for slow proxies hold no copies of it.
#[derive(Debug)]
pub struct TypeResources {
    entries: BTreeMap<String, Range<usize>>,
    buf: Buf,
    /// Bytes of `buf` no entry refers to any more (replaced resources).
    waste: usize,
    /// Tells parts apart, so that a stream can know which one it has.
    id: u64,
    digest: OnceLock<u64>,
    /// The names added or changed since the part `since`, which this one
    /// replaces.
    changed: Option<Changed>,
}

#[derive(Debug)]
enum Buf {
    /// Being filled.
    Open(Vec<u8>),
    /// Shared ([`TypeResources::succeed`]): slices of it go out as is.
    Sealed(Bytes),
}

#[derive(Debug)]
struct Changed {
    since: u64,
    names: Vec<String>,
}

/// `DiscoveryResponse.resources`.
const RESOURCES: u32 = 2;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for TypeResources {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            buf: Buf::Open(Vec::new()),
            waste: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            digest: OnceLock::new(),
            changed: None,
        }
    }
}

impl Clone for TypeResources {
    fn clone(&self) -> Self {
        let mut copy = Self::default();
        for (name, encoded) in self.iter_encoded() {
            copy.insert_encoded(name.to_owned(), encoded);
        }
        copy
    }
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .iter_encoded()
                .zip(other.iter_encoded())
                .all(|(a, b)| a == b)
    }
}

// === impl Buf ===

impl Buf {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Open(v) => v,
            Self::Sealed(b) => b,
        }
    }

    fn open(&mut self) -> &mut Vec<u8> {
        if let Self::Sealed(b) = self {
            *self = Self::Open(b.to_vec());
        }
        match self {
            Self::Open(v) => v,
            Self::Sealed(_) => unreachable!("opened above"),
        }
    }
}

// === impl TypeResources ===

impl TypeResources {
    /// Adds `msg` under `name`.
    pub fn insert<M: Message + Name>(&mut self, name: impl Into<String>, msg: &M) {
        self.insert_any(name.into(), &any(msg));
    }

    pub fn insert_any(&mut self, name: String, any: &Any) {
        let buf = self.buf.open();
        // Room for exactly this resource: a part that is one large resource
        // (a route table) then takes no more than it needs.
        buf.reserve(prost::encoding::message::encoded_len(RESOURCES, any));
        let start = buf.len();
        prost::encoding::message::encode(RESOURCES, any, buf);
        let end = buf.len();
        self.put(name, start..end);
    }

    /// Adds a resource as [`TypeResources::iter_encoded`] gives it (from
    /// another part), without decoding it.
    pub fn insert_encoded(&mut self, name: String, encoded: &[u8]) {
        let buf = self.buf.open();
        let start = buf.len();
        buf.extend_from_slice(encoded);
        let end = buf.len();
        self.put(name, start..end);
    }

    fn put(&mut self, name: String, range: Range<usize>) {
        if let Some(old) = self.entries.insert(name, range) {
            self.waste += old.len();
        }
        self.digest = OnceLock::new();
        self.changed = None;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every resource, by name, in its encoded form.
    pub fn iter_encoded(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let buf = self.buf.as_slice();
        self.entries
            .iter()
            .map(move |(n, r)| (n.as_str(), &buf[r.clone()]))
    }

    fn encoded(&self, name: &str) -> Option<&[u8]> {
        let range = self.entries.get(name)?;
        Some(&self.buf.as_slice()[range.clone()])
    }

    /// Every resource, by name, decoded.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Any)> + '_ {
        self.iter_encoded()
            .filter_map(|(n, e)| decode_entry(e).map(|a| (n, a)))
    }

    /// Seals this part for sharing as the successor of `previous`: the
    /// previous part itself when nothing changed (so streams see the very
    /// part they have), else this one, knowing which of its resources are
    /// new or different, so streams holding `previous` need only those.
    pub fn succeed(mut self, previous: Option<&Arc<TypeResources>>) -> Arc<TypeResources> {
        if let Some(previous) = previous {
            if **previous == self {
                return previous.clone();
            }
            let names = self
                .iter_encoded()
                .filter(|(name, e)| previous.encoded(name) != Some(*e))
                .map(|(name, _)| name.to_owned())
                .collect();
            self.changed = Some(Changed {
                since: previous.id,
                names,
            });
        }
        self.seal();
        Arc::new(self)
    }

    /// Lays the resources out in name order, without the bytes of
    /// replaced ones, and freezes the buffer for sharing: a stream asking
    /// for all or most of a part then gets one slice of it, not one per
    /// resource.
    fn seal(&mut self) {
        let Buf::Open(old) = &mut self.buf else {
            return;
        };
        let mut end = 0;
        let in_order = self.entries.values().all(|r| {
            let next = r.start == end;
            end = r.end;
            next
        });
        if in_order && end == old.len() {
            // Already laid out (one resource, or added in name order):
            // sealed without a copy.
            let mut buf = std::mem::take(old);
            buf.shrink_to_fit();
            self.buf = Buf::Sealed(Bytes::from(buf));
            self.waste = 0;
            return;
        }
        let mut buf = Vec::with_capacity(old.len() - self.waste);
        for range in self.entries.values_mut() {
            let start = buf.len();
            buf.extend_from_slice(&old[range.clone()]);
            *range = start..buf.len();
        }
        self.buf = Buf::Sealed(Bytes::from(buf));
        self.waste = 0;
    }

    /// A hash of every resource, computed once.
    fn digest(&self) -> u64 {
        *self.digest.get_or_init(|| {
            let mut h = DefaultHasher::new();
            for (name, encoded) in self.iter_encoded() {
                name.hash(&mut h);
                encoded.hash(&mut h);
            }
            h.finish()
        })
    }

    /// The names to send a stream that holds `held` (an earlier part in
    /// the same place) so that it has all of this one: `None` when it
    /// needs them all, as far as this part can tell.
    fn changed_since(&self, held: u64) -> Option<&[String]> {
        match &self.changed {
            _ if held == self.id => Some(&[]),
            Some(c) if c.since == held => Some(&c.names),
            _ => None,
        }
    }
}

fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// The `Any` in an encoded `resources` entry.
fn decode_entry(mut entry: &[u8]) -> Option<Any> {
    let key = prost::encoding::decode_varint(&mut entry).ok()?;
    if key != u64::from(RESOURCES << 3 | 2) {
        return None;
    }
    let len = usize::try_from(prost::encoding::decode_varint(&mut entry).ok()?).ok()?;
    Any::decode(entry.get(..len)?).ok()
}

/// What a stream holds of one type: the parts it was last brought up to
/// date with. Opaque to streams; only [`Snapshot`] reads it.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// The shared parts by id only: holding them would keep a replaced
    /// part (a route table of megabytes, at scale) alive until the slowest
    /// stream had been sent its successor.
    shared: Vec<u64>,
    /// The proxy's own part, which is small and compared by content.
    own: Option<Arc<TypeResources>>,
}

/// Resources to send for one type, and what the stream then holds.
pub struct Selection {
    /// The resources as a DiscoveryResponse's `resources` fields, ready to
    /// go between the fields before and after them: slices of shared parts
    /// where they can be, so nothing large is copied per stream.
    pub encoded: Vec<Bytes>,
    /// How many resources.
    pub count: usize,
    pub held: Held,
}

/// The names a stream asked for, sorted, with a digest computed once, so
/// that versions need not hash thousands of names on every push.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    sorted: Vec<String>,
    digest: u64,
}

impl Names {
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort_unstable();
        names.dedup();
        let mut h = DefaultHasher::new();
        names.hash(&mut h);
        Self {
            digest: h.finish(),
            sorted: names,
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.sorted
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    fn contains(&self, name: &str) -> bool {
        self.sorted
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// Hashes the names as given by a request, so that equal lists can be
    /// found again without sorting (see `Interner` in the ADS server).
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// Collects resources to send as slices of their parts, one slice per run
/// of resources adjacent in a part.
struct Slices<'a> {
    parts: &'a [Arc<TypeResources>],
    out: Vec<Bytes>,
    /// Part and range of the run being extended.
    run: Option<(usize, Range<usize>)>,
    count: usize,
}

impl<'a> Slices<'a> {
    fn new(parts: &'a [Arc<TypeResources>]) -> Self {
        Self {
            parts,
            out: Vec::new(),
            run: None,
            count: 0,
        }
    }

    fn push(&mut self, part: usize, name: &str) {
        let Some(range) = self.parts[part].entries.get(name).cloned() else {
            return;
        };
        self.count += 1;
        match &mut self.run {
            Some((p, run)) if *p == part && run.end == range.start => run.end = range.end,
            _ => {
                self.flush();
                self.run = Some((part, range));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((part, range)) = self.run.take() {
            self.out.push(match &self.parts[part].buf {
                Buf::Sealed(b) => b.slice(range),
                Buf::Open(v) => Bytes::copy_from_slice(&v[range]),
            });
        }
    }

    fn finish(mut self) -> (Vec<Bytes>, usize) {
        self.flush();
        (self.out, self.count)
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Adds `msg` under `name` to this proxy's own resources; `type_url`
    /// must be one of [`crate::type_url`].
    pub fn insert<M: Message + Name>(
        &mut self,
        type_url: &'static str,
        name: impl Into<String>,
        msg: &M,
    ) {
        let parts = self.types.entry(type_url).or_default();
        Arc::make_mut(&mut parts.own).insert(name, msg);
    }

    /// Adds a part shared with other proxies. A name in the proxy's own
    /// resources, or in a later part, takes precedence.
    pub fn share(&mut self, type_url: &'static str, part: Arc<TypeResources>) {
        self.types.entry(type_url).or_default().shared.push(part);
    }

    /// Seals the proxy's own parts as shared ones are sealed: laid out
    /// compactly, and then sent as slices rather than copied.
    pub fn seal(&mut self) {
        for parts in self.types.values_mut() {
            Arc::make_mut(&mut parts.own).seal();
        }
    }

    /// Parts in precedence order, lowest first.
    fn parts(&self, type_url: &str) -> impl Iterator<Item = &Arc<TypeResources>> + '_ {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(|p| p.shared.iter().chain([&p.own]))
    }

    /// Every resource of a type, by name (later parts over earlier ones),
    /// decoded: for dumps and tests.
    pub fn resources(&self, type_url: &str) -> BTreeMap<&str, Any> {
        let mut all = BTreeMap::new();
        for part in self.parts(type_url) {
            for (name, any) in part.iter() {
                all.insert(name, any);
            }
        }
        all
    }

    /// The resources of one type a proxy asked for: all of them for
    /// wildcard types or an empty name list, else those named.
    pub fn select(&self, type_url: &str, names: &[String]) -> Vec<(String, Any)> {
        let mut all = self.resources(type_url);
        if names.is_empty() || crate::type_url::is_wildcard(type_url) {
            return all.into_iter().map(|(n, a)| (n.to_owned(), a)).collect();
        }
        names
            .iter()
            .filter_map(|n| all.remove(n.as_str()).map(|a| (n.clone(), a)))
            .collect()
    }

    /// The version of what a stream that asked for `names` has once sent
    /// [`Snapshot::selection`]: it changes whenever any part of the type
    /// changes (for named types, also when the names do), and is cheap,
    /// since parts remember their digests.
    pub fn version(&self, type_url: &str, names: &Names) -> String {
        let mut h = DefaultHasher::new();
        for p in self.parts(type_url) {
            p.digest().hash(&mut h);
        }
        if !Self::wildcard(type_url, names) {
            names.digest.hash(&mut h);
        }
        format!("{:016x}", h.finish())
    }

    fn wildcard(type_url: &str, names: &Names) -> bool {
        names.is_empty() || crate::type_url::is_wildcard(type_url)
    }

    /// What to send a stream of `type_url` that asked for `names` and
    /// holds `held`: everything it asked for when `held` is `None` or the
    /// type is a wildcard one (LDS and CDS responses are always complete),
    /// else only the resources that changed since, which SotW allows for
    /// named types: a proxy keeps named resources a response leaves out.
    pub fn selection(&self, type_url: &str, names: &Names, held: Option<&Held>) -> Selection {
        let wildcard = Self::wildcard(type_url, names);
        let parts: Vec<Arc<TypeResources>> = self.parts(type_url).cloned().collect();
        let own = parts.len().saturating_sub(1);
        let held_now = Held {
            shared: parts.iter().take(own).map(|p| p.id).collect(),
            own: parts.last().cloned(),
        };
        let parts = parts.as_slice();
        let wanted = |name: &str| wildcard || names.contains(name);
        // The part whose resource of that name the proxy ends up with.
        let winner = |name: &str| parts.iter().rposition(|p| p.contains(name));
        // Per part, the names that changed: `None` for all of the part's.
        let delta: Option<Vec<Option<&[String]>>> = held
            .filter(|h| !wildcard && h.shared.len() + usize::from(h.own.is_some()) == parts.len())
            .map(|h| {
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, new)| match (h.shared.get(i), &h.own) {
                        (Some(&old), _) => new.changed_since(old),
                        // The proxy's own part is rebuilt whole each time,
                        // and small: compared, not tracked.
                        (None, Some(old)) if new == old => Some(&[][..]),
                        (None, _) => None,
                    })
                    .collect()
            });
        let mut slices = Slices::new(parts);
        match delta {
            None => {
                // Part by part, in the part's order, so that runs of a
                // shared part go out as one slice.
                for (i, part) in parts.iter().enumerate() {
                    let later = &parts[i + 1..];
                    for name in part.entries.keys() {
                        if wanted(name) && !later.iter().any(|p| p.contains(name)) {
                            slices.push(i, name);
                        }
                    }
                }
            }
            Some(per_part) => {
                let mut send: BTreeMap<&str, usize> = BTreeMap::new();
                for (part, changed) in parts.iter().zip(per_part) {
                    let changed: Box<dyn Iterator<Item = &str>> = match changed {
                        Some(names) => Box::new(names.iter().map(String::as_str)),
                        None => Box::new(part.entries.keys().map(String::as_str)),
                    };
                    for name in changed.filter(|n| wanted(n)) {
                        if let Some(w) = winner(name) {
                            send.insert(name, w);
                        }
                    }
                }
                for (name, part) in send {
                    slices.push(part, name);
                }
            }
        }
        let (encoded, count) = slices.finish();
        Selection {
            encoded,
            count,
            held: held_now,
        }
    }

    /// Decodes every resource of a type, for debug dumps and tests.
    pub fn decode<M: Message + Default>(&self, type_url: &str) -> Vec<(String, M)> {
        self.resources(type_url)
            .into_iter()
            .filter_map(|(n, any)| {
                M::decode(any.value.as_slice())
                    .ok()
                    .map(|m| (n.to_owned(), m))
            })
            .collect()
    }

    pub fn type_urls(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::{
        config::endpoint::v3::ClusterLoadAssignment, service::discovery::v3::DiscoveryResponse,
    };

    use super::*;
    use crate::type_url::{CLUSTER, ENDPOINT};

    fn cla(name: &str, marker: &str) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: format!("{name}{marker}"),
            ..Default::default()
        }
    }

    fn part(entries: &[(&str, &str)]) -> TypeResources {
        let mut p = TypeResources::default();
        for (name, marker) in entries {
            p.insert(*name, &cla(name, marker));
        }
        p
    }

    fn names(list: &[&str]) -> Names {
        Names::new(list.iter().map(|s| (*s).to_owned()).collect())
    }

    fn sent(s: &Selection) -> Vec<String> {
        let body: Vec<u8> = s.encoded.iter().flat_map(|b| b.iter().copied()).collect();
        let rsp = DiscoveryResponse::decode(body.as_slice()).unwrap();
        assert_eq!(rsp.resources.len(), s.count);
        let mut names: Vec<String> = rsp
            .resources
            .iter()
            .filter_map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).ok())
            .map(|c| c.cluster_name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_unchanged_part_stays_the_same_part() {
        let first = part(&[("a", ""), ("b", "")]).succeed(None);
        let again = part(&[("a", ""), ("b", "")]).succeed(Some(&first));
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn named_types_send_only_what_changed_since_what_the_stream_holds() {
        let first = part(&[("a", ""), ("b", ""), ("c", "")]).succeed(None);
        let mut s1 = Snapshot::default();
        s1.share(ENDPOINT, first.clone());
        let want = names(&["a", "b"]);
        let full = s1.selection(ENDPOINT, &want, None);
        assert_eq!(sent(&full), ["a", "b"]);

        // `b` and `c` change; the stream asked for `a` and `b` only.
        let second = part(&[("a", ""), ("b", "2"), ("c", "2")]).succeed(Some(&first));
        let mut s2 = Snapshot::default();
        s2.share(ENDPOINT, second.clone());
        assert_ne!(s1.version(ENDPOINT, &want), s2.version(ENDPOINT, &want));
        let delta = s2.selection(ENDPOINT, &want, Some(&full.held));
        assert_eq!(sent(&delta), ["b2"]);

        // A stream that missed a revision gets all it asked for.
        let third = part(&[("a", "3"), ("b", "2"), ("c", "2")]).succeed(Some(&second));
        let mut s3 = Snapshot::default();
        s3.share(ENDPOINT, third);
        assert_eq!(
            sent(&s3.selection(ENDPOINT, &want, Some(&full.held))),
            ["a3", "b2"]
        );
    }

    #[test]
    fn what_a_stream_holds_does_not_keep_a_replaced_part_alive() {
        let first = part(&[("a", ""), ("b", "")]).succeed(None);
        let mut s1 = Snapshot::default();
        s1.share(ENDPOINT, first.clone());
        let want = names(&["a", "b"]);
        let held = s1.selection(ENDPOINT, &want, None).held;
        let second = part(&[("a", "2"), ("b", "")]).succeed(Some(&first));
        let replaced = Arc::downgrade(&first);
        drop((s1, first));
        assert!(
            replaced.upgrade().is_none(),
            "a stream's hold kept the replaced part alive"
        );
        // What it holds still tells what changed since.
        let mut s2 = Snapshot::default();
        s2.share(ENDPOINT, second);
        assert_eq!(sent(&s2.selection(ENDPOINT, &want, Some(&held))), ["a2"]);
    }

    #[test]
    fn wildcard_types_always_send_everything() {
        let first = part(&[("a", ""), ("b", "")]).succeed(None);
        let mut s1 = Snapshot::default();
        s1.share(CLUSTER, first.clone());
        s1.insert(CLUSTER, "own", &cla("own", ""));
        let all = Names::default();
        let held = s1.selection(CLUSTER, &all, None).held;
        let second = part(&[("a", "2"), ("b", "")]).succeed(Some(&first));
        let mut s2 = Snapshot::default();
        s2.share(CLUSTER, second);
        s2.insert(CLUSTER, "own", &cla("own", ""));
        assert_eq!(
            sent(&s2.selection(CLUSTER, &all, Some(&held))),
            ["a2", "b", "own"]
        );
    }

    #[test]
    fn own_resources_take_precedence_over_shared_ones() {
        let mut s = Snapshot::default();
        s.share(ENDPOINT, part(&[("a", "shared")]).succeed(None));
        s.insert(ENDPOINT, "a", &cla("a", "own"));
        assert_eq!(sent(&s.selection(ENDPOINT, &names(&["a"]), None)), ["aown"]);
    }
}
