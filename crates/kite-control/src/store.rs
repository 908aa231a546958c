//! The config store: every applied object with its resource version, one
//! revision counter for the whole store, and a watch channel that tells the
//! translators when anything changed.

use std::{collections::BTreeMap, sync::Arc};

use kite_config::{Diagnostic, Object, Severity, Spec, analyze};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

/// `(kind, namespace, name)`.
pub type Key = (String, String, String);

/// The store's objects by key. Keys are shared between revisions: each
/// apply copies the map, and copying tens of thousands of keys' strings
/// was most of the time a pod's registration took.
pub type Objects = BTreeMap<Arc<Key>, Arc<Object>>;

/// An immutable view of the store at one revision.
#[derive(Debug, Default)]
pub struct ConfigSnapshot {
    pub revision: u64,
    pub objects: Objects,
    /// The objects that configure the mesh rather than describe workloads,
    /// found once: translation looks them up per service and per endpoint,
    /// and at scale Services and workloads are nearly all of the store.
    mesh_config: std::sync::OnceLock<Vec<Arc<Object>>>,
}

pub struct Store {
    state: Mutex<Arc<ConfigSnapshot>>,
    tx: watch::Sender<Arc<ConfigSnapshot>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured` or `unchanged`, as kubectl says.
    pub action: &'static str,
    pub resource_version: String,
}

/// Why a change was refused; the store is untouched.
#[derive(Debug)]
pub struct Rejected {
    pub diagnostics: Vec<Diagnostic>,
}

// === impl ConfigSnapshot ===

impl ConfigSnapshot {
    pub fn new(revision: u64, objects: Objects) -> Self {
        Self {
            revision,
            objects,
            mesh_config: std::sync::OnceLock::new(),
        }
    }

    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values().map(|o| &**o)
    }

    /// Every object but Services, workloads (WorkloadEntries, Pods,
    /// Deployments) and other Kubernetes bookkeeping, in store order.
    pub fn mesh_config(&self) -> impl Iterator<Item = &Object> {
        self.mesh_config
            .get_or_init(|| {
                self.objects
                    .values()
                    .filter(|o| {
                        !matches!(
                            o.spec,
                            Spec::Service(_)
                                | Spec::WorkloadEntry(_)
                                | Spec::Deployment(_)
                                | Spec::Pod(_)
                                | Spec::ServiceAccount
                                | Spec::Namespace
                        )
                    })
                    .cloned()
                    .collect()
            })
            .iter()
            .map(|o| &**o)
    }
}

// === impl Store ===

impl Default for Store {
    fn default() -> Self {
        let initial = Arc::new(ConfigSnapshot::default());
        let (tx, _) = watch::channel(initial.clone());
        Self {
            state: Mutex::new(initial),
            tx,
        }
    }
}

impl Store {
    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.state.lock().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.tx.subscribe()
    }

    /// Applies `objects` all or nothing. Objects arrive validated (load
    /// keeps invalid ones out); cross-object findings on the resulting
    /// config are returned as warnings, never a reason to refuse, since the
    /// order objects arrive in is the user's business.
    pub fn apply(&self, objects: Vec<Object>) -> (Vec<Applied>, Vec<Diagnostic>) {
        let mut state = self.state.lock();
        let mut next = state.objects.clone();
        let revision = state.revision + 1;
        let mut applied = Vec::new();
        for mut object in objects {
            let key = object.key();
            let action = match next.get(&key) {
                Some(old) if same_content(old, &object) => {
                    applied.push(applied_entry(&key, "unchanged", &old.meta.resource_version));
                    continue;
                }
                Some(_) => "configured",
                None => "created",
            };
            object.meta.resource_version = revision.to_string();
            applied.push(applied_entry(&key, action, &object.meta.resource_version));
            next.insert(Arc::new(key), Arc::new(object));
        }
        let changed = applied.iter().any(|a| a.action != "unchanged");
        if changed {
            self.commit(&mut state, revision, next);
        }
        // Analysis looks at the whole store, which takes a while at scale:
        // after the commit, so that translation need not wait for it, and
        // outside the lock, on the config just committed (or, unchanged,
        // the current one).
        let analyzed = state.clone();
        drop(state);
        // Findings are kept for the objects applied only, and the analyzer
        // reports none on workloads (they are what other objects are
        // checked against): a pod registering or leaving, the most frequent
        // change by far, is spared an analysis of the whole store.
        let workloads_only = applied.iter().all(|a| a.kind == "WorkloadEntry");
        let warnings = if workloads_only {
            Vec::new()
        } else {
            findings_for(&analyzed.objects, &applied)
        };
        (applied, warnings)
    }

    /// Deletes the named objects; returns those that existed.
    pub fn delete(&self, keys: &[Key]) -> Vec<Key> {
        let mut state = self.state.lock();
        let mut next = state.objects.clone();
        let deleted: Vec<Key> = keys
            .iter()
            .filter(|k| next.remove(*k).is_some())
            .cloned()
            .collect();
        if !deleted.is_empty() {
            let revision = state.revision + 1;
            self.commit(&mut state, revision, next);
        }
        deleted
    }

    fn commit(&self, state: &mut Arc<ConfigSnapshot>, revision: u64, objects: Objects) {
        let snapshot = Arc::new(ConfigSnapshot::new(revision, objects));
        *state = snapshot.clone();
        self.tx.send_replace(snapshot);
        tracing::info!(revision, "config changed");
    }
}

fn applied_entry(key: &Key, action: &'static str, version: &str) -> Applied {
    Applied {
        kind: key.0.clone(),
        namespace: key.1.clone(),
        name: key.2.clone(),
        action,
        resource_version: version.to_owned(),
    }
}

fn same_content(a: &Object, b: &Object) -> bool {
    a.api_version == b.api_version
        && a.spec == b.spec
        && a.meta.labels == b.meta.labels
        && a.meta.annotations == b.meta.annotations
}

/// Analysis of the whole would-be config, keeping what concerns the objects
/// just applied, downgraded to warnings.
fn findings_for(objects: &Objects, applied: &[Applied]) -> Vec<Diagnostic> {
    let all: Vec<&Object> = objects.values().map(|o| &**o).collect();
    analyze::analyze(&all)
        .into_iter()
        .filter(|d| {
            d.object.as_ref().is_some_and(|o| {
                applied
                    .iter()
                    .any(|a| a.kind == o.kind && a.namespace == o.namespace && a.name == o.name)
            })
        })
        .map(|mut d| {
            if d.severity == Severity::Error {
                d.severity = Severity::Warning;
            }
            d
        })
        .collect()
}

impl Rejected {
    pub fn new(diagnostics: Vec<Diagnostic>) -> Self {
        Self { diagnostics }
    }
}

#[cfg(test)]
impl Store {
    /// Applies YAML that must load without errors.
    pub(crate) fn apply_yaml(&self, yaml: &str) {
        let loaded = kite_config::load_str("test.yaml", yaml);
        assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
        self.apply(loaded.objects);
    }
}
