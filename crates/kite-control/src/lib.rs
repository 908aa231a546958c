//! Kite's control plane (Istio's Pilot and Galley): a config store fed by
//! the HTTP API, a service registry derived from it, per-proxy translation
//! into Envoy xDS, and the ADS server that pushes it.
#![forbid(unsafe_code)]

mod api;
pub mod bootstrap;
pub mod citadel;
mod grpc;
pub mod proxy;
pub mod registry;
mod sds;
pub mod store;
pub mod translate;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use envoy_types::pb::envoy::config::core::v3::Node;
use kite_xds::{
    Snapshot,
    ads::{AdsServer, Connections, SnapshotSource},
};
use parking_lot::Mutex;
use tokio::{net::TcpListener, sync::watch};
use tracing::{debug, info};

pub use crate::{proxy::Proxy, registry::Registry, store::Store};

/// Coalesces bursts of changes (a multi-document apply, a scale-up) into one
/// push.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Config {
    /// Plaintext xDS (gRPC), Istio's 15010.
    pub xds_addr: SocketAddr,
    /// HTTP API and debug endpoints, Istio's 15014.
    pub api_addr: SocketAddr,
    /// The certificate authority; without it the mesh runs without
    /// workload identities (plaintext).
    pub ca: Option<citadel::CaConfig>,
}

/// Shared state of a running control plane.
pub struct Control {
    pub store: Store,
    pub citadel: Mutex<Option<Arc<citadel::Citadel>>>,
    proxies: Mutex<HashMap<String, ProxyEntry>>,
    connections: Mutex<Option<Arc<Connections>>>,
    /// The store revision the proxies' snapshots were last computed from.
    translated: std::sync::atomic::AtomicU64,
    /// Translation state of the latest config, shared by every proxy.
    translation: Mutex<Option<Translation>>,
}

/// What translating one config revision yields beyond the proxies' own
/// resources: the registry and the outbound parts per view, kept for
/// proxies that connect later and as the base of the next revision's parts.
struct Translation {
    config: Arc<store::ConfigSnapshot>,
    registry: Arc<Registry>,
    views: translate::Views,
    /// The previous revision's views, which this one's succeed.
    base: Option<translate::Views>,
}

struct ProxyEntry {
    proxy: Arc<Proxy>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// The certificate issued on an Envoy's behalf, served over SDS until
    /// it is half way through its life.
    issued: Mutex<Option<sds::Issued>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("xDS server: {0}")]
    Xds(String),
    #[error("certificate authority: {0}")]
    Ca(String),
}

// === impl Translation ===

impl Translation {
    /// The translation of `config`: `current` if it is of that revision,
    /// else a new one whose parts succeed `current`'s.
    fn of(config: Arc<store::ConfigSnapshot>, current: Option<Translation>) -> Self {
        match current {
            Some(t) if t.config.revision == config.revision => t,
            None => Self {
                registry: Arc::new(Registry::build(&config)),
                config,
                views: translate::Views::default(),
                base: None,
            },
            Some(previous) => {
                let changed = changed_objects(&previous.config, &config);
                // Workloads only: the registry is patched, not rebuilt, and
                // translation redoes just the services selecting them.
                let workloads: Option<Vec<_>> = changed
                    .iter()
                    .filter(|(o, n)| !o.or(*n).is_some_and(|x| bookkeeping(&x.spec)))
                    .map(|pair| {
                        pair.0
                            .or(pair.1)
                            .is_some_and(|x| matches!(x.spec, kite_config::Spec::WorkloadEntry(_)))
                            .then_some(*pair)
                    })
                    .collect();
                if workloads.is_none()
                    && let Some(hosts) = virtual_service_hosts(&changed)
                {
                    // VirtualServices only: the registry is as it was, and
                    // translation redoes just the virtual hosts they name.
                    return Self {
                        registry: previous.registry,
                        config,
                        views: translate::Views::reusing(Some(translate::Reuse {
                            hosts,
                            ..Default::default()
                        })),
                        base: Some(previous.views),
                    };
                }
                let registry = workloads
                    .as_ref()
                    .and_then(|w| previous.registry.with_workloads(w))
                    .unwrap_or_else(|| Registry::build(&config));
                let reuse = workloads.map(|w| workload_changes(&w, &registry));
                Self {
                    registry: Arc::new(registry),
                    config,
                    views: translate::Views::reusing(reuse),
                    base: Some(previous.views),
                }
            }
        }
    }

    fn snapshot(&mut self, proxy: &Proxy, trust_domain: &str) -> Snapshot {
        translate::snapshot_in(
            &self.config,
            &self.registry,
            proxy,
            trust_domain,
            &mut self.views,
            self.base.as_ref(),
        )
    }
}

/// Objects that differ between `before` and `after`: each as it was (if
/// it was) and as it is (if it still is).
fn changed_objects<'a>(
    before: &'a store::ConfigSnapshot,
    after: &'a store::ConfigSnapshot,
) -> Vec<(
    Option<&'a kite_config::Object>,
    Option<&'a kite_config::Object>,
)> {
    use std::cmp::Ordering;
    let mut changed = Vec::new();
    let (mut old, mut new) = (
        before.objects.iter().peekable(),
        after.objects.iter().peekable(),
    );
    // Both maps are in key order and share the objects that did not
    // change, so a merge finds the changed ones by pointer.
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some((ko, o)), Some((kn, n))) => match ko.cmp(kn) {
                Ordering::Equal => {
                    if !Arc::ptr_eq(o, n) {
                        changed.push((Some(&***o), Some(&***n)));
                    }
                    old.next();
                    new.next();
                }
                Ordering::Less => changed.extend(old.next().map(|(_, o)| (Some(&**o), None))),
                Ordering::Greater => changed.extend(new.next().map(|(_, n)| (None, Some(&**n)))),
            },
            (Some(_), None) => changed.extend(old.next().map(|(_, o)| (Some(&**o), None))),
            (None, Some(_)) => changed.extend(new.next().map(|(_, n)| (None, Some(&**n)))),
        }
    }
    changed
}

/// Kubernetes bookkeeping that neither the registry nor translation reads.
fn bookkeeping(spec: &kite_config::Spec) -> bool {
    use kite_config::Spec;
    matches!(
        spec,
        Spec::Deployment(_) | Spec::Pod(_) | Spec::ServiceAccount | Spec::Namespace
    )
}

/// The services whose virtual hosts these changes change, if they are
/// changes of VirtualServices only, each naming its hosts exactly.
fn virtual_service_hosts(
    changed: &[(Option<&kite_config::Object>, Option<&kite_config::Object>)],
) -> Option<std::collections::HashSet<String>> {
    let mut hosts = std::collections::HashSet::new();
    for object in changed.iter().flat_map(|(o, n)| o.iter().chain(n)) {
        match &object.spec {
            kite_config::Spec::VirtualService(vs) => {
                for host in &vs.hosts {
                    let host = kite_config::networking::expand_host(host, &object.meta.namespace);
                    if host.contains('*') {
                        return None;
                    }
                    hosts.insert(host);
                }
            }
            spec if bookkeeping(spec) => {}
            _ => return None,
        }
    }
    Some(hosts)
}

/// The services whose endpoints changing these WorkloadEntries changes.
fn workload_changes(
    changed: &[(Option<&kite_config::Object>, Option<&kite_config::Object>)],
    registry: &Registry,
) -> translate::Reuse {
    let mut reuse = translate::Reuse::default();
    for object in changed.iter().flat_map(|(o, n)| o.iter().chain(n)) {
        if let kite_config::Spec::WorkloadEntry(we) = &object.spec {
            let ns = &object.meta.namespace;
            reuse.services.extend(
                registry
                    .services
                    .values()
                    .filter(|s| {
                        &s.namespace == ns
                            && s.selector
                                .as_ref()
                                .is_some_and(|sel| registry::contains(&we.labels, sel))
                    })
                    .map(|s| s.hostname.clone()),
            );
        }
    }
    reuse
}

// === impl Control ===

impl Default for Control {
    fn default() -> Self {
        Self {
            store: Store::default(),
            citadel: Mutex::default(),
            proxies: Mutex::default(),
            connections: Mutex::default(),
            translated: std::sync::atomic::AtomicU64::new(0),
            translation: Mutex::default(),
        }
    }
}

impl Control {
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.lock().clone().unwrap_or_default()
    }

    /// The proxy as translation sees it: an Envoy has a mesh identity (by
    /// SDS) when it holds a credential the CA issued.
    fn effective(&self, proxy: &Proxy) -> Proxy {
        let mut p = proxy.clone();
        if !p.kite {
            p.identity = match (self.citadel.lock().as_ref(), p.token.as_deref()) {
                (Some(c), Some(t)) => c.identity_for(t).is_some(),
                _ => false,
            };
        }
        p
    }

    fn snapshot_for(&self, proxy: &Proxy, issued: &Mutex<Option<sds::Issued>>) -> Snapshot {
        let config = self.store.current();
        let trust_domain = self.trust_domain();
        let effective = self.effective(proxy);
        let mut translation = self.translation.lock();
        let current = Translation::of(config, translation.take());
        let t = translation.insert(current);
        let mut snapshot = t.snapshot(&effective, &trust_domain);
        self.add_secrets(&effective, issued, &mut snapshot);
        snapshot.seal();
        snapshot
    }

    fn add_secrets(
        &self,
        proxy: &Proxy,
        issued: &Mutex<Option<sds::Issued>>,
        snapshot: &mut Snapshot,
    ) {
        if proxy.kite || !proxy.identity {
            return;
        }
        let Some(citadel) = self.citadel.lock().clone() else {
            return;
        };
        sds::add(&citadel, proxy, issued, snapshot);
    }

    /// Recomputes every connected proxy's snapshot; streams push what
    /// changed. Proxies whose streams are all gone are forgotten.
    fn recompute(&self) {
        let started = std::time::Instant::now();
        let config = self.store.current();
        let trust_domain = self.trust_domain();
        let mut proxies = self.proxies.lock();
        proxies.retain(|_, entry| entry.tx.receiver_count() > 0);
        // Parts of the previous revision are the base of this one's, so
        // that unchanged parts stay the very same and changed ones know
        // what changed.
        let mut t = Translation::of(config.clone(), self.translation.lock().take());
        let mut published = 0;
        for entry in proxies.values() {
            let effective = self.effective(&entry.proxy);
            let mut snapshot = t.snapshot(&effective, &trust_domain);
            self.add_secrets(&effective, &entry.issued, &mut snapshot);
            snapshot.seal();
            entry.tx.send_if_modified(|current| {
                if **current == snapshot {
                    false
                } else {
                    snapshot.generation = current.generation + 1;
                    *current = Arc::new(std::mem::take(&mut snapshot));
                    published += 1;
                    true
                }
            });
        }
        let view_count = t.views.len();
        // The base has served its purpose; parts it alone held can go.
        t.base = None;
        *self.translation.lock() = Some(t);
        self.translated
            .store(config.revision, std::sync::atomic::Ordering::Release);
        debug!(
            revision = config.revision,
            proxies = proxies.len(),
            published,
            views = view_count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recomputed"
        );
    }

    fn trust_domain(&self) -> String {
        self.citadel.lock().as_ref().map_or_else(
            || "cluster.local".to_owned(),
            |c| c.ca.trust_domain().to_owned(),
        )
    }

    /// The store revision translation has caught up with.
    pub fn translated_revision(&self) -> u64 {
        self.translated.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The snapshot generation last published to a proxy.
    pub fn published_generation(&self, node_id: &str) -> Option<u64> {
        self.proxies
            .lock()
            .get(node_id)
            .map(|e| e.tx.borrow().generation)
    }

    /// A connected proxy's resources, by node id or workload name.
    fn dump(&self, which: &str) -> Option<serde_json::Value> {
        let proxies = self.proxies.lock();
        let entry = proxies
            .values()
            .find(|e| e.proxy.id == which || e.proxy.workload == which)?;
        let snapshot = entry.tx.borrow().clone();
        Some(translate::dump(&entry.proxy, &snapshot))
    }
}

impl SnapshotSource for Control {
    fn watch(&self, node: &Node) -> Result<watch::Receiver<Arc<Snapshot>>, String> {
        let proxy = Proxy::from_node(node)?;
        let mut proxies = self.proxies.lock();
        if let Some(entry) = proxies.get(&proxy.id) {
            return Ok(entry.tx.subscribe());
        }
        let issued = Mutex::new(None);
        let snapshot = Arc::new(self.snapshot_for(&proxy, &issued));
        let (tx, rx) = watch::channel(snapshot);
        info!(proxy = %proxy.id, kind = ?proxy.kind, "new proxy");
        proxies.insert(
            proxy.id.clone(),
            ProxyEntry {
                proxy: Arc::new(proxy),
                tx,
                issued,
            },
        );
        Ok(rx)
    }
}

/// Serves xDS and the API until `shutdown` resolves.
pub async fn run(
    config: Config,
    control: Arc<Control>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let xds_listener = bind(config.xds_addr).await?;
    let api_listener = bind(config.api_addr).await?;
    let ca_task = match &config.ca {
        Some(ca) => {
            let citadel =
                Arc::new(citadel::Citadel::new(ca).map_err(|e| Error::Ca(e.to_string()))?);
            *control.citadel.lock() = Some(citadel.clone());
            let listener = bind(ca.addr).await?;
            info!(ca = %ca.addr, trust_domain = %ca.trust_domain, dir = %ca.dir.display(), "certificate authority listening");
            Some(tokio::spawn(citadel::serve(listener, citadel)))
        }
        None => None,
    };
    let ads = Arc::new(AdsServer::new(control.clone()));
    *control.connections.lock() = Some(ads.connections());
    info!(xds = %config.xds_addr, api = %config.api_addr, "control plane listening");

    let mut changes = control.store.subscribe();
    let translator = {
        let control = control.clone();
        async move {
            while changes.changed().await.is_ok() {
                tokio::time::sleep(DEBOUNCE).await;
                changes.borrow_and_update();
                control.recompute();
            }
        }
    };
    tokio::select! {
        () = serve_grpc(xds_listener, ads) => {}
        () = api::serve(api_listener, control.clone()) => {}
        () = translator => {}
        () = shutdown => info!("control plane shutting down"),
    }
    if let Some(t) = ca_task {
        t.abort();
    }
    Ok(())
}

/// Serves xDS over HTTP/2: ADS streams framed by [`grpc`], anything else
/// by tonic.
async fn serve_grpc(listener: TcpListener, ads: Arc<AdsServer<Control>>) {
    let tonic_svc = ads.service();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                debug!(%error, "xDS accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (ads, tonic_svc) = (ads.clone(), tonic_svc.clone());
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let ads = ads.clone();
            let mut tonic_svc = tonic_svc.clone();
            async move {
                if req.uri().path() == grpc::STREAM_PATH {
                    Ok::<_, std::convert::Infallible>(grpc::stream(ads, req).await)
                } else if req.uri().path() == grpc::DELTA_PATH {
                    Ok(grpc::delta(ads, req).await)
                } else {
                    use tower_service::Service as _;
                    tonic_svc.call(req).await
                }
            }
        });
        tokio::spawn(async move {
            let builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await
            {
                debug!(%error, %peer, "xDS connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests;
