//! The sidecar's outbound virtual hosts: one per service port, translated
//! whole, or patched for a change of VirtualServices.

use std::{collections::HashSet, sync::Arc};

use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost};
use kite_config::{Object, networking::VirtualService};
use kite_xds::VirtualHosts;

use super::{
    Context, Ctx, connect_route, default_route, outbound_cluster, virtual_service_for, vs_routes,
};
use crate::registry::Service;

/// Virtual hosts of the sidecar's outbound HTTP proxy: one per service and
/// port, named and matched by `host:port` because the proxy sees every
/// port on one listener.
/// Each virtual host is handed to `out` as it is made, so that a table of
/// thousands is encoded without all of them in memory at once.
pub(in crate::translate) fn sidecar_outbound(cx: &Ctx<'_>, mut out: impl FnMut(VirtualHost)) {
    let mut used = HashSet::new();
    for service in cx.registry.services.values() {
        let vs = virtual_service_for(cx, &service.hostname, Context::Mesh);
        for port in &service.ports {
            let domains: Vec<String> = domains(cx, service, port.port)
                .into_iter()
                .filter(|d| used.insert(d.clone()))
                .collect();
            if domains.is_empty() {
                continue;
            }
            out(VirtualHost {
                name: format!("{}:{}", service.hostname, port.port),
                domains,
                routes: outbound_routes(cx, service, port, vs),
                ..Default::default()
            });
        }
    }
}

/// The outbound virtual hosts of `hosts` (services' host names) in
/// `before`, translated again with the rest of `before` as it was: for a
/// change of VirtualServices only, which leaves every other virtual host
/// and every domain as it was. `None` when a host is not there as a
/// virtual host of its own (a wildcard host, say): then the whole table.
pub(in crate::translate) fn sidecar_outbound_patch(
    cx: &Ctx<'_>,
    before: &VirtualHosts,
    hosts: &HashSet<String>,
) -> Option<Arc<VirtualHosts>> {
    use prost::Message as _;
    let mut updates = Vec::new();
    for host in hosts {
        // A service gone: its virtual host stays until the next whole
        // translation (a change of services is never patched).
        let Some(service) = cx.registry.services.get(host) else {
            continue;
        };
        let vs = virtual_service_for(cx, host, Context::Mesh);
        for port in &service.ports {
            let (_, encoded) = before.resolve(&format!("{host}:{}", port.port))?;
            let mut vhost = VirtualHost::decode(encoded.as_ref()).ok()?;
            vhost.routes = outbound_routes(cx, service, port, vs);
            updates.push(vhost);
        }
    }
    before.patched(&updates)
}

/// The routes of one service port: its VirtualService's, else Istio's
/// default, and the CONNECT tunnel.
fn outbound_routes(
    cx: &Ctx<'_>,
    service: &Service,
    port: &crate::registry::Port,
    vs: Option<(&Object, &VirtualService)>,
) -> Vec<Route> {
    let http = port.protocol.is_http() || port.protocol == kite_config::k8s::Protocol::Unknown;
    let mut routes = Vec::new();
    if http {
        routes = match vs {
            Some((obj, vs)) => vs_routes(cx, obj, vs, port.port, Context::Mesh),
            None => Vec::new(),
        };
        if vs.is_none() {
            routes.push(default_route(&outbound_cluster(
                port.port,
                "",
                &service.hostname,
            )));
        }
    }
    // Apps reach TCP services through the HTTP proxy with CONNECT; the
    // tunnel goes where the VirtualService's TCP routes say.
    routes.push(connect_route(cx, vs, &service.hostname, port.port));
    routes
}

/// The names clients may use for a service port in the Host header.
fn domains(cx: &Ctx<'_>, service: &Service, port: u16) -> Vec<String> {
    let mut names = vec![service.hostname.clone()];
    if matches!(service.origin, crate::registry::Origin::Kubernetes) {
        names.push(format!("{}.{}.svc", service.name, service.namespace));
        names.push(format!("{}.{}", service.name, service.namespace));
        if service.namespace == cx.proxy.namespace {
            names.push(service.name.clone());
        }
    }
    let mut domains = Vec::new();
    for name in names {
        domains.push(format!("{name}:{port}"));
        if port == 80 {
            domains.push(name);
        }
    }
    domains
}
