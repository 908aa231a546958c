//! The proxy's applied configuration, replaced whole on every accepted
//! xDS batch and published on a watch channel; requests read the current
//! `Arc<State>` and never wait on the control plane.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

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
    /// VHDS answers, by route configuration and host: the virtual host
    /// that serves the host, or `None` when none does.
    pub hosts: BTreeMap<String, HashMap<String, Option<Arc<VirtualHost>>>>,
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
        self.hosts.get(rc)?.get(host).map(Option::as_ref)
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
                    Ok(vh) => found.push((r, Some(Arc::new(vh)))),
                    Err(e) => errors.push(e.to_string()),
                },
                None => found.push((r, None)),
            }
        }
        let _serial = self.serial.lock();
        let mut next = (*self.current()).clone();
        if !errors.is_empty() {
            let error = errors.join("; ");
            let mut rejections = self.rejections.lock();
            rejections.push(error.clone());
            let excess = rejections.len().saturating_sub(20);
            rejections.drain(..excess);
            // Hosts asked for and rejected route as hosts no virtual host
            // serves, rather than leave their requests waiting.
            let mut asked = false;
            for r in resources {
                for alias in &r.aliases {
                    if let Some((rc, host)) = alias.rsplit_once('/')
                        && next.vhds_host(rc, host).is_none()
                    {
                        next.hosts
                            .entry(rc.to_owned())
                            .or_default()
                            .insert(host.to_owned(), None);
                        asked = true;
                    }
                }
            }
            if asked {
                self.publish(next);
            }
            return Err(error);
        }
        for name in removed {
            if let Some(gone) = next.vhosts.remove(name) {
                for hosts in next.hosts.values_mut() {
                    hosts.retain(|_, vh| !vh.as_ref().is_some_and(|vh| Arc::ptr_eq(vh, &gone)));
                }
            }
        }
        for (r, vh) in found {
            if let Some(vh) = &vh
                && let Some(old) = next.vhosts.insert(r.name.clone(), vh.clone())
            {
                // Every host it served follows it.
                for to in next.hosts.values_mut().flat_map(|h| h.values_mut()) {
                    if to.as_ref().is_some_and(|t| Arc::ptr_eq(t, &old)) {
                        *to = Some(vh.clone());
                    }
                }
            }
            for alias in &r.aliases {
                if let Some((rc, host)) = alias.rsplit_once('/') {
                    next.hosts
                        .entry(rc.to_owned())
                        .or_default()
                        .insert(host.to_owned(), vh.clone());
                }
            }
        }
        *next.versions.entry(type_url::VIRTUAL_HOST).or_default() += 1;
        self.publish(next);
        Ok(())
    }

    fn aliases(&self) -> Vec<String> {
        let current = self.current();
        current
            .hosts
            .iter()
            .flat_map(|(rc, hosts)| hosts.keys().map(move |h| format!("{rc}/{h}")))
            .collect()
    }

    fn evict(&self) -> Vec<String> {
        let _serial = self.serial.lock();
        let current = self.current();
        let unserved: Vec<(String, String)> = current
            .hosts
            .iter()
            .flat_map(|(rc, hosts)| {
                hosts
                    .iter()
                    .filter(|(_, to)| to.is_none())
                    .map(move |(h, _)| (rc.clone(), h.clone()))
            })
            .collect();
        if unserved.len() <= MAX_UNSERVED {
            return Vec::new();
        }
        let mut next = (*current).clone();
        for (rc, host) in &unserved {
            if let Some(hosts) = next.hosts.get_mut(rc) {
                hosts.remove(host);
            }
        }
        self.publish(next);
        unserved
            .into_iter()
            .map(|(rc, host)| format!("{rc}/{host}"))
            .collect()
    }
}

impl Applier {
    fn publish(&self, next: State) {
        let next = Arc::new(next);
        *self.current.lock() = next.clone();
        self.tx.send_replace(next);
    }

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

#[cfg(test)]
mod tests {
    use envoy_types::pb::{
        envoy::{
            config::route::v3::VirtualHost as PbVirtualHost, service::discovery::v3::Resource,
        },
        google::protobuf::Any,
    };
    use kite_xds::client::VhdsHandler as _;
    use prost::Message as _;

    use super::*;

    fn found(name: &str, aliases: &[&str], domains: &[&str]) -> Resource {
        let vh = PbVirtualHost {
            name: name.rsplit('/').next().unwrap().to_owned(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            ..Default::default()
        };
        Resource {
            name: name.to_owned(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            resource: Some(Any {
                type_url: type_url::VIRTUAL_HOST.to_owned(),
                value: vh.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    fn domains(state: &State, host: &str) -> Option<Option<Vec<String>>> {
        state
            .vhds_host("rc", host)
            .map(|vh| vh.map(|vh| vh.domains.clone()))
    }

    #[test]
    fn virtual_hosts_follow_vhds_answers() {
        let (applier, _, _) = Applier::new();
        let nope = Resource {
            name: "rc/nope".into(),
            aliases: vec!["rc/nope".into()],
            ..Default::default()
        };
        applier
            .apply_vhosts(
                &[found("rc/a:80", &["rc/a", "rc/a:80"], &["a", "a:80"]), nope],
                &[],
            )
            .unwrap();
        let state = applier.current();
        assert_eq!(
            domains(&state, "a"),
            Some(Some(vec!["a".into(), "a:80".into()]))
        );
        assert_eq!(domains(&state, "a:80"), domains(&state, "a"));
        assert_eq!(
            domains(&state, "nope"),
            Some(None),
            "answered: none serves it"
        );
        assert_eq!(domains(&state, "b"), None, "not asked");

        // An update reaches every host the virtual host serves.
        applier
            .apply_vhosts(&[found("rc/a:80", &[], &["a", "a:80", "a.ns"])], &[])
            .unwrap();
        let state = applier.current();
        assert_eq!(domains(&state, "a:80").unwrap().unwrap().len(), 3);
        assert_eq!(domains(&state, "a").unwrap().unwrap().len(), 3);

        // A bad virtual host is rejected, and its hosts do not wait on.
        let mut bad = found("rc/b:80", &["rc/b"], &["b"]);
        bad.resource.as_mut().unwrap().value = vec![0xff];
        assert!(applier.apply_vhosts(&[bad], &[]).is_err());
        assert_eq!(domains(&applier.current(), "b"), Some(None));

        // Removed: the hosts it served are unanswered again (Kite's control
        // plane also answers them as served by none in the same response).
        applier.apply_vhosts(&[], &["rc/a:80".into()]).unwrap();
        let state = applier.current();
        assert_eq!(domains(&state, "a"), None);
        assert!(state.vhosts.is_empty());
        let mut asked = applier.aliases();
        asked.sort();
        assert_eq!(asked, ["rc/b", "rc/nope"]);
    }
}
