use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

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
    }
}

/// Resources of one type, by name.
#[derive(Debug)]
pub struct TypeResources {
    pub resources: BTreeMap<String, Any>,
    /// Tells parts apart, so that a stream can know which one it has.
    id: u64,
    digest: OnceLock<u64>,
    /// The names added or changed since the part `since`, which this one
    /// replaces.
    changed: Option<Changed>,
}

#[derive(Debug)]
struct Changed {
    since: u64,
    names: Vec<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Default for TypeResources {
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

impl Clone for TypeResources {
    fn clone(&self) -> Self {
        Self::new(self.resources.clone())
    }
}

impl PartialEq for TypeResources {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

// === impl TypeResources ===

impl TypeResources {
    pub fn new(resources: BTreeMap<String, Any>) -> Self {
        Self {
            resources,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            digest: OnceLock::new(),
            changed: None,
        }
    }

    /// Adds `msg` under `name`.
    pub fn insert<M: Message + Name>(&mut self, name: impl Into<String>, msg: &M) {
        self.insert_any(name.into(), any(msg));
    }

    pub fn insert_any(&mut self, name: String, any: Any) {
        self.resources.insert(name, any);
        self.digest = OnceLock::new();
        self.changed = None;
    }

    /// Seals this part for sharing as the successor of `previous`: the
    /// previous part itself when nothing changed (so streams see the very
    /// part they have), else this one, knowing which of its resources are
    /// new or different, so streams holding `previous` need only those.
    pub fn succeed(self, previous: Option<&Arc<TypeResources>>) -> Arc<TypeResources> {
        let Some(previous) = previous else {
            return Arc::new(self);
        };
        if **previous == self {
            return previous.clone();
        }
        let names = self
            .resources
            .iter()
            .filter(|(name, any)| previous.resources.get(*name) != Some(*any))
            .map(|(name, _)| name.clone())
            .collect();
        Arc::new(Self {
            changed: Some(Changed {
                since: previous.id,
                names,
            }),
            ..self
        })
    }

    /// A hash of every resource, computed once.
    fn digest(&self) -> u64 {
        *self.digest.get_or_init(|| {
            let mut h = DefaultHasher::new();
            for (name, any) in &self.resources {
                name.hash(&mut h);
                any.type_url.hash(&mut h);
                any.value.hash(&mut h);
            }
            h.finish()
        })
    }

    /// The names to send a stream that holds `held` (an earlier part in
    /// the same place) so that it has all of this one: `None` when it
    /// needs them all, as far as this part can tell.
    fn changed_since(&self, held: &Arc<TypeResources>) -> Option<&[String]> {
        match &self.changed {
            _ if held.id == self.id => Some(&[]),
            Some(c) if c.since == held.id => Some(&c.names),
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

/// What a stream holds of one type: the parts it was last brought up to
/// date with. Opaque to streams; only [`Snapshot`] reads it.
#[derive(Clone, Debug, Default)]
pub struct Held {
    parts: Vec<Arc<TypeResources>>,
}

/// Resources to send for one type, and what the stream then holds.
pub struct Selection {
    pub resources: Vec<Any>,
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

    /// Parts in precedence order, lowest first.
    fn parts(&self, type_url: &str) -> impl Iterator<Item = &Arc<TypeResources>> + '_ {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(|p| p.shared.iter().chain([&p.own]))
    }

    /// One resource, from the part that wins.
    fn lookup(&self, type_url: &str, name: &str) -> Option<&Any> {
        let parts = self.types.get(type_url)?;
        parts
            .shared
            .iter()
            .chain([&parts.own])
            .rev()
            .find_map(|p| p.resources.get(name))
    }

    /// Every resource of a type, by name (later parts over earlier ones).
    pub fn resources(&self, type_url: &str) -> BTreeMap<&str, &Any> {
        let mut all = BTreeMap::new();
        for part in self.parts(type_url) {
            for (name, any) in &part.resources {
                all.insert(name.as_str(), any);
            }
        }
        all
    }

    /// The resources of one type a proxy asked for: all of them for
    /// wildcard types or an empty name list, else those named.
    pub fn select(&self, type_url: &str, names: &[String]) -> Vec<(String, Any)> {
        let all = self.resources(type_url);
        if names.is_empty() || crate::type_url::is_wildcard(type_url) {
            return all
                .into_iter()
                .map(|(n, a)| (n.to_owned(), a.clone()))
                .collect();
        }
        names
            .iter()
            .filter_map(|n| all.get(n.as_str()).map(|a| (n.clone(), (*a).clone())))
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
        let held_now = Held {
            parts: self.parts(type_url).cloned().collect(),
        };
        let wanted = |name: &str| wildcard || names.contains(name);
        // Per part, the names that changed: `None` for all of the part's.
        let own = held_now.parts.len().saturating_sub(1);
        let delta: Option<Vec<Option<&[String]>>> = held
            .filter(|h| !wildcard && h.parts.len() == held_now.parts.len())
            .map(|h| {
                held_now
                    .parts
                    .iter()
                    .zip(&h.parts)
                    .enumerate()
                    .map(|(i, (new, old))| {
                        // The proxy's own part is rebuilt whole each time,
                        // and small: compared, not tracked.
                        if i == own && new == old {
                            Some(&[][..])
                        } else {
                            new.changed_since(old)
                        }
                    })
                    .collect()
            });
        let resources = match delta {
            None if wildcard => self.resources(type_url).into_values().cloned().collect(),
            None => names
                .as_slice()
                .iter()
                .filter_map(|n| self.lookup(type_url, n).cloned())
                .collect(),
            Some(per_part) => {
                let mut send: BTreeMap<&str, &Any> = BTreeMap::new();
                for (part, changed) in held_now.parts.iter().zip(per_part) {
                    let changed: Box<dyn Iterator<Item = &String>> = match changed {
                        Some(names) => Box::new(names.iter()),
                        None => Box::new(part.resources.keys()),
                    };
                    for name in changed.filter(|n| wanted(n)) {
                        // What the proxy ends up with is the winning part's.
                        if let Some(any) = self.lookup(type_url, name) {
                            send.insert(name, any);
                        }
                    }
                }
                send.into_values().cloned().collect()
            }
        };
        Selection {
            resources,
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
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

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
        s.resources
            .iter()
            .filter_map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).ok())
            .map(|c| c.cluster_name)
            .collect()
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
