//! Cross-object analysis, as `istioctl analyze` does it: references that
//! lead nowhere, configurations that conflict, naming Istio relies on.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    diag::{Diagnostic, Severity, codes},
    k8s::{self, Protocol},
    networking::{Destination, VirtualService, expand_host, host_matches},
    object::{Object, Spec},
};

/// The namespace whose policies apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Kite always runs an ingress gateway; Gateways select it by Istio's
/// labels, so it counts as a workload here.
const BUILTIN_GATEWAY_LABELS: [[(&str, &str); 2]; 2] = [
    [("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
    [("istio", "ingress"), ("app", "istio-ingress")],
];

/// Findings about how `objects` fit together. Per-object validation has
/// already run when they were loaded. By reference: the control plane
/// analyzes its whole store, tens of thousands of objects at scale, on
/// every change, and copying them was most of its memory then.
pub fn analyze(objects: &[&Object]) -> Vec<Diagnostic> {
    let world = World::new(objects);
    let mut out = Vec::new();
    for &object in objects {
        let mut report = |severity, code, field: String, message: String| {
            out.push(Diagnostic {
                severity,
                code,
                source: object.source.clone(),
                object: Some(object.object_ref()),
                field,
                message,
            });
        };
        match &object.spec {
            Spec::VirtualService(vs) => world.virtual_service(object, vs, &mut report),
            Spec::DestinationRule(dr) => {
                let host = expand_host(&dr.host, &object.meta.namespace);
                for (i, subset) in dr.subsets.iter().enumerate() {
                    if let Some(selector) = world.selector(&host)
                        && world.has_workloads_for(&host)
                        && !world.workloads_in(&host).any(|labels| {
                            contains(labels, selector) && contains(labels, &subset.labels)
                        })
                    {
                        report(
                            Severity::Warning,
                            codes::DR_SUBSET_NOT_SELECT_PODS,
                            format!("spec.subsets[{i}]"),
                            format!(
                                "subset {:?} selects no workload of {host} (labels {:?})",
                                subset.name, subset.labels
                            ),
                        );
                    }
                }
            }
            Spec::Gateway(gw)
                if !gw.selector.is_empty() && !world.any_workload_has(&gw.selector) =>
            {
                report(
                    Severity::Error,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    "spec.selector".into(),
                    format!(
                        "Referenced selector not found: {}",
                        gw.selector
                            .iter()
                            .map(|(k, v)| format!("\"{k}={v}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            Spec::Service(svc) => {
                for (i, port) in svc.ports.iter().enumerate() {
                    if k8s::port_protocol(port) == Protocol::Unknown {
                        report(
                            Severity::Info,
                            codes::PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
                            format!("spec.ports[{i}].name"),
                            format!(
                                "Port name {:?} (port: {}) doesn't follow the naming convention of Istio port (<protocol>[-suffix]); the protocol will be detected",
                                port.name, port.port
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    world.conflicts(&mut out);
    out
}

/// What the objects describe, indexed for lookups.
struct World<'a> {
    objects: &'a [&'a Object],
    /// Host → (namespace, selector) of services.
    services: BTreeMap<String, (&'a str, Option<&'a crate::Labels>, Vec<u32>)>,
    /// (namespace, labels) of every workload: Deployment templates, Pods,
    /// WorkloadEntries.
    workloads: Vec<(&'a str, &'a crate::Labels)>,
    /// (host, subset) pairs DestinationRules define; host fully expanded.
    subsets: BTreeSet<(String, String)>,
    /// `namespace/name` of Gateways.
    gateways: BTreeSet<String>,
}

impl<'a> World<'a> {
    fn new(objects: &'a [&'a Object]) -> Self {
        let mut w = World {
            objects,
            services: BTreeMap::new(),
            workloads: Vec::new(),
            subsets: BTreeSet::new(),
            gateways: BTreeSet::new(),
        };
        for &o in objects {
            let ns = o.meta.namespace.as_str();
            match &o.spec {
                Spec::Service(s) => {
                    w.services.insert(
                        format!("{}.{ns}.svc.cluster.local", o.meta.name),
                        (
                            ns,
                            (!s.selector.is_empty()).then_some(&s.selector),
                            s.ports.iter().map(|p| p.port).collect(),
                        ),
                    );
                }
                Spec::ServiceEntry(se) => {
                    for host in &se.hosts {
                        w.services.insert(
                            host.clone(),
                            (
                                ns,
                                se.workload_selector.as_ref().map(|s| &s.labels),
                                se.ports.iter().map(|p| p.number).collect(),
                            ),
                        );
                    }
                }
                Spec::Deployment(d) => w.workloads.push((ns, &d.template.metadata.labels)),
                Spec::Pod(_) => w.workloads.push((ns, &o.meta.labels)),
                Spec::WorkloadEntry(we) => w.workloads.push((ns, &we.labels)),
                Spec::DestinationRule(dr) => {
                    let host = expand_host(&dr.host, ns);
                    for s in &dr.subsets {
                        w.subsets.insert((host.clone(), s.name.clone()));
                    }
                }
                Spec::Gateway(_) => {
                    w.gateways.insert(format!("{ns}/{}", o.meta.name));
                }
                _ => {}
            }
        }
        w
    }

    fn known_host(&self, host: &str) -> bool {
        self.services.contains_key(host)
            || self
                .services
                .keys()
                .any(|h| h.contains('*') && host_matches(h, host))
    }

    fn selector(&self, host: &str) -> Option<&'a crate::Labels> {
        self.services.get(host).and_then(|(_, sel, _)| *sel)
    }

    fn ports(&self, host: &str) -> &[u32] {
        self.services
            .get(host)
            .map(|(_, _, p)| p.as_slice())
            .unwrap_or_default()
    }

    fn workloads_in(&self, host: &str) -> impl Iterator<Item = &'a crate::Labels> + '_ {
        let ns = self.services.get(host).map(|(ns, _, _)| *ns);
        self.workloads
            .iter()
            .filter(move |(wns, _)| Some(*wns) == ns)
            .map(|(_, labels)| *labels)
    }

    /// Whether any workload of the service's namespace is described at all;
    /// without one, subsets cannot be checked.
    fn has_workloads_for(&self, host: &str) -> bool {
        let selector = self.selector(host);
        self.workloads_in(host)
            .any(|labels| selector.is_some_and(|s| contains(labels, s)))
    }

    fn any_workload_has(&self, selector: &crate::Labels) -> bool {
        let builtin = BUILTIN_GATEWAY_LABELS.iter().any(|labels| {
            selector
                .iter()
                .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        });
        builtin
            || self
                .workloads
                .iter()
                .any(|(_, labels)| contains(labels, selector))
    }

    fn virtual_service(
        &self,
        object: &Object,
        vs: &VirtualService,
        report: &mut impl FnMut(Severity, &'static str, String, String),
    ) {
        let ns = object.meta.namespace.as_str();
        for (i, gw) in vs.gateways.iter().enumerate() {
            if gw == "mesh" {
                continue;
            }
            let key = if gw.contains('/') {
                gw.clone()
            } else {
                format!("{ns}/{gw}")
            };
            if !self.gateways.contains(&key) {
                report(
                    Severity::Error,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    format!("spec.gateways[{i}]"),
                    format!("Referenced gateway not found: {gw:?}"),
                );
            }
        }
        let mut check = |field: String, d: &Destination| {
            let host = expand_host(&d.host, ns);
            if !self.known_host(&host) {
                report(
                    Severity::Error,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    format!("{field}.host"),
                    format!("Referenced host not found: {:?}", d.host),
                );
                return;
            }
            if !d.subset.is_empty() && !self.subsets.contains(&(host.clone(), d.subset.clone())) {
                report(
                    Severity::Error,
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    format!("{field}.subset"),
                    format!(
                        "Referenced host+subset in destinationrule not found: \"{}+{}\"",
                        d.host, d.subset
                    ),
                );
            }
            if d.port.is_none() && self.ports(&host).len() > 1 {
                report(
                    Severity::Error,
                    codes::VS_DESTINATION_PORT_SELECTOR_REQUIRED,
                    field.clone(),
                    format!(
                        "This VirtualService routes to a service with more than one port, but does not specify which to use: {:?}",
                        d.host
                    ),
                );
            }
        };
        for (i, route) in vs.http.iter().enumerate() {
            for (j, dest) in route.route.iter().enumerate() {
                check(
                    format!("spec.http[{i}].route[{j}].destination"),
                    &dest.destination,
                );
            }
            if let Some(mirror) = &route.mirror {
                check(format!("spec.http[{i}].mirror"), mirror);
            }
            for (j, m) in route.mirrors.iter().enumerate() {
                check(
                    format!("spec.http[{i}].mirrors[{j}].destination"),
                    &m.destination,
                );
            }
        }
        for (i, route) in vs.tcp.iter().enumerate() {
            for (j, dest) in route.route.iter().enumerate() {
                check(
                    format!("spec.tcp[{i}].route[{j}].destination"),
                    &dest.destination,
                );
            }
        }
        for (i, route) in vs.tls.iter().enumerate() {
            for (j, dest) in route.route.iter().enumerate() {
                check(
                    format!("spec.tls[{i}].route[{j}].destination"),
                    &dest.destination,
                );
            }
        }
        // A VirtualService bound to gateways must name hosts they admit.
        let bound: Vec<&Object> = vs
            .gateways
            .iter()
            .filter(|g| *g != "mesh")
            .filter_map(|g| {
                let (gns, gname) = g.split_once('/').unwrap_or((ns, g));
                self.objects.iter().copied().find(|o| {
                    matches!(o.spec, Spec::Gateway(_))
                        && o.meta.namespace == gns
                        && o.meta.name == gname
                })
            })
            .collect();
        for (i, host) in vs.hosts.iter().enumerate() {
            let admitted = bound.is_empty()
                || bound.iter().any(|o| match &o.spec {
                    Spec::Gateway(gw) => gw.servers.iter().any(|s| {
                        s.hosts.iter().any(|sh| {
                            let sh = sh.rsplit('/').next().unwrap_or(sh);
                            host_matches(sh, host) || host_matches(host, sh)
                        })
                    }),
                    _ => false,
                });
            if !admitted {
                report(
                    Severity::Warning,
                    codes::VS_HOST_NOT_FOUND_IN_GATEWAY,
                    format!("spec.hosts[{i}]"),
                    format!(
                        "one or more host [{host}] defined in VirtualService {ns}/{} not found in Gateway",
                        object.meta.name
                    ),
                );
            }
        }
    }

    /// Pairs of objects that cannot both take effect.
    fn conflicts(&self, out: &mut Vec<Diagnostic>) {
        let mut mesh_hosts: BTreeMap<String, Vec<&Object>> = BTreeMap::new();
        let mut dr_hosts: BTreeMap<(String, String), Vec<&Object>> = BTreeMap::new();
        let mut ns_wide: BTreeMap<(&str, &str), Vec<&Object>> = BTreeMap::new();
        for &o in self.objects {
            let ns = o.meta.namespace.as_str();
            match &o.spec {
                Spec::VirtualService(vs)
                    if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") =>
                {
                    for host in &vs.hosts {
                        mesh_hosts.entry(expand_host(host, ns)).or_default().push(o);
                    }
                }
                Spec::DestinationRule(dr) if dr.workload_selector.is_none() => {
                    dr_hosts
                        .entry((ns.to_owned(), expand_host(&dr.host, ns)))
                        .or_default()
                        .push(o);
                }
                Spec::PeerAuthentication(pa) if pa.selector.is_none() => {
                    ns_wide
                        .entry(("PeerAuthentication", ns))
                        .or_default()
                        .push(o);
                }
                Spec::Sidecar(sc) if sc.workload_selector.is_none() => {
                    ns_wide.entry(("Sidecar", ns)).or_default().push(o);
                }
                _ => {}
            }
        }
        let names = |objs: &[&Object]| {
            objs.iter()
                .map(|o| format!("{}/{}", o.meta.namespace, o.meta.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // The same object given twice is a duplicate (reported at load), not
        // a conflict.
        let distinct = |objs: &Vec<&Object>| {
            objs.iter()
                .map(|o| (&o.meta.namespace, &o.meta.name))
                .collect::<BTreeSet<_>>()
                .len()
                > 1
        };
        for (host, objs) in mesh_hosts.iter().filter(|(_, v)| distinct(v)) {
            for o in objs {
                out.push(diag(
                    o,
                    Severity::Error,
                    codes::CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                    "spec.hosts",
                    format!(
                        "The VirtualServices {} associated with mesh gateway define the same host {host} which can lead to undefined behavior; merge them into one",
                        names(objs)
                    ),
                ));
            }
        }
        for ((_, host), objs) in dr_hosts.iter().filter(|(_, v)| distinct(v)) {
            for o in objs {
                out.push(diag(
                    o,
                    Severity::Warning,
                    codes::CONFLICTING_POLICIES,
                    "spec.host",
                    format!("DestinationRules {} in one namespace all apply to {host}; only the oldest takes effect", names(objs)),
                ));
            }
        }
        for ((kind, ns), objs) in ns_wide.iter().filter(|(_, v)| distinct(v)) {
            let (severity, code) = if *kind == "Sidecar" {
                (Severity::Error, codes::MULTIPLE_SIDECARS_WITHOUT_SELECTOR)
            } else {
                (Severity::Warning, codes::CONFLICTING_POLICIES)
            };
            for o in objs {
                out.push(diag(
                    o,
                    severity,
                    code,
                    "",
                    format!("{kind}s {} all apply to every workload of namespace {ns}; only the oldest takes effect", names(objs)),
                ));
            }
        }
    }
}

fn diag(
    o: &Object,
    severity: Severity,
    code: &'static str,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity,
        code,
        source: o.source.clone(),
        object: Some(o.object_ref()),
        field: field.to_owned(),
        message,
    }
}

fn contains(labels: &crate::Labels, selector: &crate::Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
