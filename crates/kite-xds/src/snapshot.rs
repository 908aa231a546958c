use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// Everything one proxy should have: resources by type URL and name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    types: BTreeMap<&'static str, TypeResources>,
    /// Counts the snapshots published to one proxy, so that "has the
    /// proxy been sent the latest?" can be answered; not part of equality.
    pub generation: u64,
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeResources {
    pub resources: BTreeMap<String, Any>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Adds `msg` under `name`; `type_url` must be one of [`crate::type_url`].
    pub fn insert<M: Message + Name>(
        &mut self,
        type_url: &'static str,
        name: impl Into<String>,
        msg: &M,
    ) {
        let any = Any {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        };
        self.types
            .entry(type_url)
            .or_default()
            .resources
            .insert(name.into(), any);
    }

    pub fn get(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }

    /// The resources of one type a proxy asked for: all of them for
    /// wildcard types or an empty name list, else those named.
    pub fn select(&self, type_url: &str, names: &[String]) -> Vec<(String, Any)> {
        let Some(all) = self.types.get(type_url) else {
            return Vec::new();
        };
        if names.is_empty() || crate::type_url::is_wildcard(type_url) {
            return all
                .resources
                .iter()
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect();
        }
        names
            .iter()
            .filter_map(|n| all.resources.get(n).map(|a| (n.clone(), a.clone())))
            .collect()
    }

    /// Decodes every resource of a type, for debug dumps and tests.
    pub fn decode<M: Message + Default>(&self, type_url: &str) -> Vec<(String, M)> {
        self.types
            .get(type_url)
            .into_iter()
            .flat_map(|t| t.resources.iter())
            .filter_map(|(n, any)| M::decode(any.value.as_slice()).ok().map(|m| (n.clone(), m)))
            .collect()
    }

    pub fn type_urls(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.keys().copied()
    }
}

/// A version that changes exactly when the selected resources change, so an
/// unchanged push is never sent and versions are comparable across restarts.
pub(crate) fn version_of(resources: &[(String, Any)]) -> String {
    let mut h = DefaultHasher::new();
    for (name, any) in resources {
        name.hash(&mut h);
        any.type_url.hash(&mut h);
        any.value.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}
