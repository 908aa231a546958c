//! The service registry: services from Kubernetes Services and
//! ServiceEntries, workload instances from WorkloadEntries (in local mode
//! `kite up` registers each replica as one) and ServiceEntry endpoints.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
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
    pub services: BTreeMap<String, Service>,
    pub workloads: Vec<Workload>,
    index: Index,
}

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
    pub labels: Labels,
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
    pub labels: Labels,
    pub service_account: String,
}

// === impl Registry ===

impl Registry {
    pub fn build(config: &ConfigSnapshot) -> Self {
        let mut registry = Registry::default();
        for object in config.objects() {
            match &object.spec {
                Spec::Service(spec) => registry.add_k8s_service(object, spec),
                Spec::ServiceEntry(spec) => registry.add_service_entry(object, spec),
                Spec::WorkloadEntry(we) => {
                    registry
                        .workloads
                        .push(workload(&object.meta.name, &object.meta.namespace, we))
                }
                _ => {}
            }
        }
        registry.index();
        registry
    }

    fn index(&mut self) {
        let mut index = Index::default();
        for (i, w) in self.workloads.iter().enumerate() {
            for (k, v) in &w.labels {
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
        for s in self.services.values() {
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
        self.index = index;
    }

    /// Workloads in `namespace` that carry every label of `selector`, in
    /// store order.
    fn selected<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a Labels,
    ) -> impl Iterator<Item = &'a Workload> + 'a {
        // The rarest label narrows the candidates most.
        let candidates = match selector
            .iter()
            .map(|(k, v)| self.index.by_label.get(&label_key(namespace, k, v)))
            .min_by_key(|c| c.map_or(0, Vec::len))
        {
            Some(found) => found.map_or(&[][..], Vec::as_slice),
            None => self
                .index
                .by_namespace
                .get(namespace)
                .map_or(&[][..], Vec::as_slice),
        };
        candidates
            .iter()
            .map(|i| &self.workloads[*i])
            .filter(move |w| w.namespace == namespace && contains(&w.labels, selector))
    }

    fn add_k8s_service(&mut self, object: &Object, spec: &k8s::ServiceSpec) {
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
        self.services.insert(
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

    fn add_service_entry(&mut self, object: &Object, se: &networking::ServiceEntry) {
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
            self.services.insert(
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
                self.index
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
        self.index
            .by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|i| &self.workloads[*i])
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
