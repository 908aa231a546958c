//! The proxy's applied configuration, replaced whole on every accepted
//! xDS batch and published on a watch channel; requests read the current
//! `Arc<State>` and never wait on the control plane.

use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::google::protobuf::Any;
use kite_xds::type_url;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::{
    Cluster, Discovery, Endpoint, Listener, LoadAssignment, RouteConfig, Unsupported, VirtualHost,
};

#[derive(Clone, Debug, Default)]
pub struct State {
    pub listeners: BTreeMap<String, Arc<Listener>>,
    pub routes: BTreeMap<String, Arc<RouteConfig>>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// EDS endpoints by cluster service name.
    pub endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// Versions applied per type, for the admin config dump.
    pub versions: BTreeMap<&'static str, u64>,
    /// Virtual hosts from VHDS, by resource name
    /// (`<route configuration>/<virtual host>`).
    pub vhosts: BTreeMap<String, Arc<VirtualHost>>,
    /// VHDS answers by alias (`<route configuration>/<host>`): the
    /// resource that serves the host, or `None` when none does.
    pub aliases: BTreeMap<String, Option<String>>,
}

/// Hosts no virtual host serves that the proxy remembers: any request can
/// name one, so past this many they are forgotten (and asked again).
const MAX_UNSERVED: usize = 4096;

/// Applies xDS batches to [`State`].
pub struct Applier {
    current: Mutex<Arc<State>>,
    /// Held from reading the state to publishing its successor: ADS and
    /// VHDS apply from their own tasks.
    serial: Mutex<()>,
    tx: watch::Sender<Arc<State>>,
    connected: watch::Sender<bool>,
    /// Rejections, newest last, for the admin endpoint.
    pub rejections: Mutex<Vec<String>>,
}

// === impl State ===

impl State {
    pub fn cluster_endpoints(&self, cluster: &Cluster) -> Arc<Vec<Endpoint>> {
        match &cluster.discovery {
            Discovery::Static(eps) => Arc::new(eps.clone()),
            Discovery::Eds(service) => self.endpoints.get(service).cloned().unwrap_or_default(),
            Discovery::DynamicForward | Discovery::Dns(_) => Arc::default(),
        }
    }

    /// The VHDS answer for `host` in route configuration `rc`: `None`
    /// while not asked for or not answered, `Some(None)` when no virtual
    /// host serves it.
    pub fn vhds_host(&self, rc: &str, host: &str) -> Option<Option<&Arc<VirtualHost>>> {
        let answer = self.aliases.get(&format!("{rc}/{host}"))?;
        Some(answer.as_ref().and_then(|name| self.vhosts.get(name)))
    }
}

// === impl Applier ===

impl Applier {
    pub fn new() -> (
        Arc<Self>,
        watch::Receiver<Arc<State>>,
        watch::Receiver<bool>,
    ) {
        let initial = Arc::new(State::default());
        let (tx, rx) = watch::channel(initial.clone());
        let (connected, connected_rx) = watch::channel(false);
        (
            Arc::new(Self {
                current: Mutex::new(initial),
                serial: Mutex::new(()),
                tx,
                connected,
                rejections: Mutex::default(),
            }),
            rx,
            connected_rx,
        )
    }

    pub fn current(&self) -> Arc<State> {
        self.current.lock().clone()
    }

    fn convert<T>(
        resources: &[Any],
        f: impl Fn(&Any) -> Result<T, Unsupported>,
    ) -> Result<Vec<T>, String> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for r in resources {
            match f(r) {
                Ok(v) => ok.push(v),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(errors.join("; "))
        }
    }
}

impl kite_xds::client::Handler for Applier {
    fn apply(&self, kind: &str, resources: &[Any]) -> Result<(), String> {
        // A batch with any bad resource changes nothing.
        let _serial = self.serial.lock();
        let mut next = (*self.current()).clone();
        let result = match kind {
            type_url::LISTENER => Self::convert(resources, |a| Listener::try_from(a)).map(|ls| {
                next.listeners = ls
                    .into_iter()
                    .map(|l| (l.name.clone(), Arc::new(l)))
                    .collect();
            }),
            type_url::ROUTE => Self::convert(resources, |a| RouteConfig::try_from(a)).map(|rs| {
                // Route tables arrive by name; ones not in this response stay.
                for r in rs {
                    next.routes.insert(r.name.clone(), Arc::new(r));
                }
            }),
            type_url::CLUSTER => Self::convert(resources, |a| Cluster::try_from(a)).map(|cs| {
                next.clusters = cs
                    .into_iter()
                    .map(|c| (c.name.clone(), Arc::new(c)))
                    .collect();
            }),
            type_url::ENDPOINT => {
                Self::convert(resources, |a| LoadAssignment::try_from(a)).map(|las| {
                    for la in las {
                        next.endpoints.insert(la.cluster, Arc::new(la.endpoints));
                    }
                })
            }
            other => Err(format!("resource type {other} is not supported")),
        };
        if let Err(e) = &result {
            let mut rejections = self.rejections.lock();
            rejections.push(e.clone());
            let excess = rejections.len().saturating_sub(20);
            rejections.drain(..excess);
            return result;
        }
        *next
            .versions
            .entry(
                type_url::PUSH_ORDER
                    .iter()
                    .find(|t| **t == kind)
                    .copied()
                    .unwrap_or(""),
            )
            .or_default() += 1;
        // Drop what nothing refers to any more.
        let wanted_routes: Vec<String> = self.names_in(&next, type_url::ROUTE);
        next.routes.retain(|k, _| wanted_routes.contains(k));
        let wanted_eps: Vec<String> = self.names_in(&next, type_url::ENDPOINT);
        next.endpoints.retain(|k, _| wanted_eps.contains(k));
        let next = Arc::new(next);
        *self.current.lock() = next.clone();
        self.tx.send_replace(next);
        Ok(())
    }

    fn names(&self, kind: &str) -> Vec<String> {
        self.names_in(&self.current(), kind)
    }

    fn connected(&self, up: bool) {
        self.connected.send_replace(up);
    }
}

impl kite_xds::client::VhdsHandler for Applier {
    fn apply_vhosts(
        &self,
        resources: &[envoy_types::pb::envoy::service::discovery::v3::Resource],
        removed: &[String],
    ) -> Result<(), String> {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for r in resources {
            match &r.resource {
                Some(any) => match VirtualHost::from_vhds(&r.name, any) {
                    Ok(vh) => found.push((r, Some(vh))),
                    Err(e) => errors.push(e.to_string()),
                },
                None => found.push((r, None)),
            }
        }
        if !errors.is_empty() {
            let error = errors.join("; ");
            let mut rejections = self.rejections.lock();
            rejections.push(error.clone());
            let excess = rejections.len().saturating_sub(20);
            rejections.drain(..excess);
            return Err(error);
        }
        let _serial = self.serial.lock();
        let mut next = (*self.current()).clone();
        for name in removed {
            next.vhosts.remove(name);
            next.aliases
                .retain(|_, to| to.as_deref() != Some(name.as_str()));
        }
        for (r, vh) in found {
            let to = vh.map(|vh| {
                next.vhosts.insert(r.name.clone(), Arc::new(vh));
                r.name.clone()
            });
            for alias in &r.aliases {
                next.aliases.insert(alias.clone(), to.clone());
            }
        }
        *next.versions.entry(type_url::VIRTUAL_HOST).or_default() += 1;
        let next = Arc::new(next);
        *self.current.lock() = next.clone();
        self.tx.send_replace(next);
        Ok(())
    }

    fn aliases(&self) -> Vec<String> {
        self.current().aliases.keys().cloned().collect()
    }

    fn evict(&self) -> Vec<String> {
        let _serial = self.serial.lock();
        let current = self.current();
        let unserved: Vec<String> = current
            .aliases
            .iter()
            .filter(|(_, to)| to.is_none())
            .map(|(alias, _)| alias.clone())
            .collect();
        if unserved.len() <= MAX_UNSERVED {
            return Vec::new();
        }
        let mut next = (*current).clone();
        for alias in &unserved {
            next.aliases.remove(alias);
        }
        let next = Arc::new(next);
        *self.current.lock() = next.clone();
        self.tx.send_replace(next);
        unserved
    }
}

impl Applier {
    fn names_in(&self, state: &State, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = match kind {
            type_url::ROUTE => state
                .listeners
                .values()
                .filter_map(|l| match &l.kind {
                    crate::config::ListenerKind::Http(h) => Some(h.route_config.clone()),
                    crate::config::ListenerKind::Tcp { .. } => None,
                })
                .collect(),
            type_url::ENDPOINT => state
                .clusters
                .values()
                .filter_map(|c| match &c.discovery {
                    Discovery::Eds(service) => Some(service.clone()),
                    Discovery::Static(_) | Discovery::DynamicForward | Discovery::Dns(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }
}
