//! The service registry: services from Kubernetes Services and
//! ServiceEntries, workload instances from WorkloadEntries (in local mode
//! `kite up` registers each replica as one) and ServiceEntry endpoints.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use kite_config::{
    Labels, Object, Spec,
    k8s::{self, Protocol},
    networking::{self, Location, Resolution, expand_host, host_matches},
};

use crate::store::ConfigSnapshot;

pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// By host name (`reviews.default.svc.cluster.local`, `www.example.com`).
    pub services: Arc<BTreeMap<String, Service>>,
    /// Workloads as of the last full build, with lookups, shared by the
    /// registries that only patch them (a pod added or removed); building
    /// them is most of building a registry of tens of thousands.
    base: Arc<Base>,
    /// Workloads changed since `base`.
    patch: Patch,
}

#[derive(Debug, Default)]
struct Base {
    workloads: Vec<Workload>,
    index: Index,
}

/// Workload changes over a base: workloads by (namespace, name) that are
/// gone or replaced, and those new or replacing them, in the order they
/// came.
#[derive(Clone, Debug, Default)]
struct Patch {
    /// Names by namespace.
    removed: HashMap<String, HashSet<String>>,
    added: Vec<Workload>,
}

/// Beyond this many patched workloads a full build is cheaper than
/// looking through the patch on every lookup.
const MAX_PATCH: usize = 256;

/// Lookups that would otherwise scan every workload or service: a mesh of
/// thousands of services does them per service, per proxy view.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Workloads (positions in `workloads`, ascending) by a hash of
    /// (namespace, label key, label value), for every label they carry;
    /// a hash collision only adds candidates, which are checked anyway.
    by_label: HashMap<u64, Vec<usize>>,
    by_namespace: HashMap<String, Vec<usize>>,
    by_name: HashMap<(String, String), usize>,
    /// Kubernetes services' host names by a hash of (namespace, key,
    /// value) of the first label of their selector: a service selecting a
    /// workload is found under one of the workload's labels. Every proxy
    /// looks up the services selecting it on every push.
    services_by_label: HashMap<u64, Vec<String>>,
}

fn label_key(namespace: &str, key: &str, value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (namespace, key, value).hash(&mut h);
    h.finish()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub hostname: String,
    pub name: String,
    pub namespace: String,
    pub ports: Vec<Port>,
    /// Workloads with these labels (in the service's namespace) back it;
    /// `None` when the service lists its endpoints itself.
    pub selector: Option<Labels>,
    pub origin: Origin,
    /// A ServiceEntry's own `endpoints`.
    pub inline_endpoints: Vec<Workload>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Kubernetes,
    ServiceEntry {
        location: Location,
        resolution: Resolution,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub name: String,
    pub port: u16,
    pub target: TargetPort,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    /// IP address, or a DNS name for DNS-resolved ServiceEntry endpoints.
    pub address: String,
    pub labels: Arc<Labels>,
    /// Port remapping by service port name.
    pub ports: BTreeMap<String, u16>,
    pub service_account: String,
    /// `region/zone/subzone`.
    pub locality: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
    pub locality: String,
    pub weight: u32,
    pub labels: Arc<Labels>,
    pub service_account: String,
}

// === impl Registry ===

impl Registry {
    pub fn build(config: &ConfigSnapshot) -> Self {
        let mut services = BTreeMap::new();
        let mut workloads = Vec::new();
        for object in config.objects() {
            match &object.spec {
                Spec::Service(spec) => add_k8s_service(&mut services, object, spec),
                Spec::ServiceEntry(spec) => add_service_entry(&mut services, object, spec),
                Spec::WorkloadEntry(we) => {
                    workloads.push(workload(&object.meta.name, &object.meta.namespace, we))
                }
                _ => {}
            }
        }
        let index = index(&services, &workloads);
        Self {
            services: Arc::new(services),
            base: Arc::new(Base { workloads, index }),
            patch: Patch::default(),
        }
    }

    /// This registry with WorkloadEntries changed: each pair is an object
    /// as it was (if it was) and as it is (if it still is). `None` when a
    /// full build would do better, or something other than workloads
    /// changed.
    pub fn with_workloads(&self, changes: &[(Option<&Object>, Option<&Object>)]) -> Option<Self> {
        let mut patch = self.patch.clone();
        for (before, after) in changes {
            for object in before.iter().chain(after) {
                if !matches!(object.spec, Spec::WorkloadEntry(_)) {
                    return None;
                }
            }
            for o in before.iter().chain(after) {
                let (ns, name) = (&o.meta.namespace, &o.meta.name);
                patch
                    .added
                    .retain(|w| &w.namespace != ns || &w.name != name);
                patch
                    .removed
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone());
            }
            if let Some(o) = after
                && let Spec::WorkloadEntry(we) = &o.spec
            {
                patch
                    .added
                    .push(workload(&o.meta.name, &o.meta.namespace, we));
            }
        }
        let size: usize = patch.removed.values().map(HashSet::len).sum();
        (size <= MAX_PATCH).then(|| Self {
            services: self.services.clone(),
            base: self.base.clone(),
            patch,
        })
    }
}

fn index(services: &BTreeMap<String, Service>, workloads: &[Workload]) -> Index {
    let mut index = Index::default();
    for (i, w) in workloads.iter().enumerate() {
        for (k, v) in w.labels.iter() {
            index
                .by_label
                .entry(label_key(&w.namespace, k, v))
                .or_default()
                .push(i);
        }
        index
            .by_namespace
            .entry(w.namespace.clone())
            .or_default()
            .push(i);
        // The first of a name wins, as a scan in store order would find.
        index
            .by_name
            .entry((w.namespace.clone(), w.name.clone()))
            .or_insert(i);
    }
    for s in services.values() {
        if !matches!(s.origin, Origin::Kubernetes) {
            continue;
        }
        if let Some((k, v)) = s.selector.as_ref().and_then(|sel| sel.iter().next()) {
            index
                .services_by_label
                .entry(label_key(&s.namespace, k, v))
                .or_default()
                .push(s.hostname.clone());
        }
    }
    index
}

impl Registry {
    /// Workloads in `namespace` that carry every label of `selector`, in
    /// store order.
    fn selected<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Labels,
    ) -> impl Iterator<Item = &'a Workload> + 'a {
        let index = &self.base.index;
        // The rarest label narrows the candidates most.
        let candidates = match selector
            .iter()
            .map(|(k, v)| index.by_label.get(&label_key(namespace, k, v)))
            .min_by_key(|c| c.map_or(0, Vec::len))
        {
            Some(found) => found.map_or(&[][..], Vec::as_slice),
            None => index
                .by_namespace
                .get(namespace)
                .map_or(&[][..], Vec::as_slice),
        };
        let removed = self.patch.removed.get(namespace);
        candidates
            .iter()
            .map(|i| &self.base.workloads[*i])
            .filter(move |w| removed.is_none_or(|r| !r.contains(&w.name)))
            .chain(&self.patch.added)
            .filter(move |w| w.namespace == namespace && contains(&w.labels, selector))
    }
}

fn add_k8s_service(
    services: &mut BTreeMap<String, Service>,
    object: &Object,
    spec: &k8s::ServiceSpec,
) {
    let hostname = format!(
        "{}.{}.{DOMAIN_SUFFIX}",
        object.meta.name, object.meta.namespace
    );
    let ports = spec
        .ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target = match &p.target_port {
                Some(kite_config::common::IntOrString::Int(n)) => {
                    TargetPort::Number(u16::try_from(*n).ok()?)
                }
                Some(kite_config::common::IntOrString::String(name)) => {
                    TargetPort::Name(name.clone())
                }
                None => TargetPort::Number(port),
            };
            Some(Port {
                name: p.name.clone(),
                port,
                target,
                protocol: k8s::port_protocol(p),
            })
        })
        .collect();
    services.insert(
        hostname.clone(),
        Service {
            hostname,
            name: object.meta.name.clone(),
            namespace: object.meta.namespace.clone(),
            ports,
            selector: (!spec.selector.is_empty()).then(|| spec.selector.clone()),
            origin: Origin::Kubernetes,
            inline_endpoints: Vec::new(),
        },
    );
}

fn add_service_entry(
    services: &mut BTreeMap<String, Service>,
    object: &Object,
    se: &networking::ServiceEntry,
) {
    let ports: Vec<Port> = se
        .ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.number).ok()?;
            let target = p
                .target_port
                .and_then(|t| u16::try_from(t).ok())
                .unwrap_or(port);
            Some(Port {
                name: p.name.clone(),
                port,
                target: TargetPort::Number(target),
                protocol: Protocol::parse(&p.protocol),
            })
        })
        .collect();
    let ns = &object.meta.namespace;
    let inline: Vec<Workload> = se
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, we)| workload(&format!("{}-{i}", object.meta.name), ns, we))
        .collect();
    for host in &se.hosts {
        services.insert(
            host.clone(),
            Service {
                hostname: host.clone(),
                name: object.meta.name.clone(),
                namespace: ns.clone(),
                ports: ports.clone(),
                selector: se.workload_selector.as_ref().map(|s| s.labels.clone()),
                origin: Origin::ServiceEntry {
                    location: se.location,
                    resolution: se.resolution,
                },
                inline_endpoints: inline.clone(),
            },
        );
    }
}

impl Registry {
    /// The service a config host names, short names expanded in `namespace`.
    pub fn service(&self, host: &str, namespace: &str) -> Option<&Service> {
        let full = expand_host(host, namespace);
        self.services.get(&full).or_else(|| {
            self.services
                .values()
                .find(|s| s.hostname.starts_with("*") && host_matches(&s.hostname, &full))
        })
    }

    /// Endpoints of `service` on `port`, restricted to workloads carrying
    /// `subset` labels.
    pub fn endpoints(&self, service: &Service, port: &Port, subset: &Labels) -> Vec<Endpoint> {
        let selected = service
            .selector
            .as_ref()
            .map(|sel| self.selected(&service.namespace, sel))
            .into_iter()
            .flatten();
        selected
            .chain(service.inline_endpoints.iter())
            .filter(|w| contains(&w.labels, subset))
            .map(|w| Endpoint {
                address: w.address.clone(),
                port: w
                    .ports
                    .get(&port.name)
                    .copied()
                    .unwrap_or(match &port.target {
                        TargetPort::Number(n) => *n,
                        // A named target port resolves against the workload's
                        // own port names; without one, the service port is all
                        // we know.
                        TargetPort::Name(name) => w.ports.get(name).copied().unwrap_or(port.port),
                    }),
                locality: w.locality.clone(),
                weight: w.weight.max(1),
                labels: w.labels.clone(),
                service_account: w.service_account.clone(),
            })
            .collect()
    }

    /// Services in `namespace` whose selector picks a workload with `labels`.
    pub fn services_selecting<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a Service> + 'a {
        let mut hosts: Vec<&str> = labels
            .iter()
            .filter_map(|(k, v)| {
                self.base
                    .index
                    .services_by_label
                    .get(&label_key(namespace, k, v))
            })
            .flatten()
            .map(String::as_str)
            .collect();
        // In host name order, as the services map has them; a hash
        // collision may list one twice.
        hosts.sort_unstable();
        hosts.dedup();
        hosts
            .into_iter()
            .filter_map(|h| self.services.get(h))
            .filter(move |s| {
                s.namespace == namespace
                    && matches!(s.origin, Origin::Kubernetes)
                    && s.selector.as_ref().is_some_and(|sel| contains(labels, sel))
            })
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        if let Some(w) = self
            .patch
            .added
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
        {
            return Some(w);
        }
        if self
            .patch
            .removed
            .get(namespace)
            .is_some_and(|r| r.contains(name))
        {
            return None;
        }
        self.base
            .index
            .by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|i| &self.base.workloads[*i])
    }
}

fn workload(name: &str, namespace: &str, we: &networking::WorkloadEntry) -> Workload {
    Workload {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        address: we.address.clone(),
        labels: we.labels.clone(),
        ports: we
            .ports
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
            .collect(),
        service_account: if we.service_account.is_empty() {
            "default".to_owned()
        } else {
            we.service_account.clone()
        },
        locality: if we.locality.is_empty() {
            locality_of(&we.labels)
        } else {
            we.locality.clone()
        },
        weight: we.weight,
    }
}

/// A workload's `region/zone/subzone` from its labels, as Istio reads a
/// pod's: the `istio-locality` label (`region.zone.subzone`), else the
/// Kubernetes topology labels; empty when none is set.
pub fn locality_of(labels: &Labels) -> String {
    if let Some(l) = labels.get("istio-locality").filter(|l| !l.is_empty()) {
        return l.splitn(3, '.').collect::<Vec<_>>().join("/");
    }
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
    let parts = [
        get("topology.kubernetes.io/region"),
        get("topology.kubernetes.io/zone"),
        get("topology.istio.io/subzone"),
    ];
    if parts.iter().all(|p| p.is_empty()) {
        return String::new();
    }
    parts.join("/").trim_end_matches('/').to_owned()
}

/// Whether `labels` has every entry of `selector`.
pub fn contains(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// === impl Service ===

impl Service {
    pub fn port(&self, number: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.port == number)
    }

    pub fn is_external(&self) -> bool {
        matches!(
            self.origin,
            Origin::ServiceEntry {
                location: Location::MeshExternal,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-a}
spec: {address: 127.9.0.1, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-b}
spec: {address: 127.9.0.2, labels: {app: reviews}}
"#;

    fn addresses(r: &Registry) -> Vec<String> {
        let svc = &r.services["reviews.default.svc.cluster.local"];
        let mut a: Vec<String> = r
            .endpoints(svc, &svc.ports[0], &Labels::new())
            .into_iter()
            .map(|e| e.address)
            .collect();
        a.sort();
        a
    }

    /// Patches `registry` with what changed from `before` to `after`, and
    /// checks it against a registry built from `after`.
    fn patched(registry: &Registry, before: &ConfigSnapshot, after: &ConfigSnapshot) -> Registry {
        let changes: Vec<_> = before
            .objects
            .keys()
            .chain(after.objects.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|k| {
                (
                    before.objects.get(k).map(|o| &**o),
                    after.objects.get(k).map(|o| &**o),
                )
            })
            .filter(|(o, n)| match (o, n) {
                (Some(o), Some(n)) => !std::ptr::eq(*o, *n),
                _ => true,
            })
            .collect();
        let patched = registry.with_workloads(&changes).unwrap();
        let built = Registry::build(after);
        assert_eq!(addresses(&patched), addresses(&built));
        for name in ["reviews-a", "reviews-b", "reviews-c"] {
            assert_eq!(
                patched.workload("default", name),
                built.workload("default", name),
                "{name}"
            );
        }
        patched
    }

    #[test]
    fn workload_changes_patch_the_registry_as_a_build_would() {
        let store = Store::default();
        store.apply_yaml(CONFIG);
        let first = store.current();
        let registry = Registry::build(&first);
        assert_eq!(addresses(&registry), ["127.9.0.1", "127.9.0.2"]);

        // One added, one relabelled out of the service.
        store.apply_yaml(
            r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-c}
spec: {address: 127.9.0.3, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-a}
spec: {address: 127.9.0.1, labels: {app: other}}
"#,
        );
        let second = store.current();
        let registry = patched(&registry, &first, &second);
        assert_eq!(addresses(&registry), ["127.9.0.2", "127.9.0.3"]);

        // One removed.
        let mut objects = second.objects.clone();
        objects.retain(|_, o| o.meta.name != "reviews-b");
        let third = ConfigSnapshot::new(second.revision + 1, objects);
        let registry = patched(&registry, &second, &third);
        assert_eq!(addresses(&registry), ["127.9.0.3"]);
    }

    #[test]
    fn other_changes_are_not_patched() {
        let store = Store::default();
        store.apply_yaml(CONFIG);
        let config = store.current();
        let registry = Registry::build(&config);
        let service = config.objects().find(|o| o.meta.name == "reviews").unwrap();
        assert!(registry.with_workloads(&[(Some(service), None)]).is_none());
    }
}
