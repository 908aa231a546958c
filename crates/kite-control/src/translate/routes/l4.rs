//! Routes for TCP and TLS: where a CONNECT tunnel from an app goes, and
//! where a gateway's TCP and SNI-passthrough servers forward connections,
//! from the VirtualServices' `tcp` and `tls` routes.

use envoy_types::pb::{
    envoy::config::route::v3::{
        Route, RouteAction, RouteMatch, WeightedCluster, route::Action,
        route_action::ClusterSpecifier, route_match::PathSpecifier,
        weighted_cluster::ClusterWeight,
    },
    google::protobuf::UInt32Value,
};
use kite_config::{
    Object,
    networking::{RouteDestination, VirtualService, host_matches},
};

use super::{Context, Ctx, Scope, bound_to, cluster_for, outbound_cluster, virtual_services};
use crate::translate::duration;

pub(super) fn connect_route(
    cx: &Ctx<'_>,
    vs: Option<(&Object, &VirtualService)>,
    hostname: &str,
    port: u16,
) -> Route {
    let targets = vs
        .map(|(obj, vs)| tcp_targets(cx, obj, vs, port, Context::Mesh))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| vec![(outbound_cluster(port, "", hostname), 100)]);
    let cluster_specifier = match targets.as_slice() {
        [(c, _)] => ClusterSpecifier::Cluster(c.clone()),
        _ => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: targets
                .iter()
                .map(|(name, w)| ClusterWeight {
                    name: name.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    Route {
        name: "connect".to_owned(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::ConnectMatcher(
                envoy_types::pb::envoy::config::route::v3::route_match::ConnectMatcher {},
            )),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            timeout: Some(duration(std::time::Duration::ZERO)),
            upgrade_configs: vec![
                envoy_types::pb::envoy::config::route::v3::route_action::UpgradeConfig {
                    upgrade_type: "CONNECT".to_owned(),
                    connect_config: Some(Default::default()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Where the first of a VirtualService's TCP routes that matches `port`
/// (the listener's or gateway's port) sends connections: clusters with
/// their weights; empty when no route matches.
pub(in crate::translate) fn tcp_targets(
    cx: &Ctx<'_>,
    obj: &Object,
    vs: &VirtualService,
    port: u16,
    context: Context<'_>,
) -> Vec<(String, u32)> {
    let ns = obj.meta.namespace.as_str();
    let Some(rule) = vs.tcp.iter().find(|r| {
        r.r#match.is_empty()
            || r.r#match.iter().any(|m| {
                Scope {
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                    gateways: &m.gateways,
                }
                .applies(cx, port, ns, context)
            })
    }) else {
        return Vec::new();
    };
    weighted(cx, ns, &rule.route, port)
}

/// A TCP or TLS route's destinations as clusters with their weights: a
/// lone destination takes everything; weight 0 sends nothing.
fn weighted(cx: &Ctx<'_>, ns: &str, route: &[RouteDestination], port: u16) -> Vec<(String, u32)> {
    route
        .iter()
        .map(|d| {
            let weight = if route.len() == 1 {
                100
            } else {
                u32::try_from(d.weight).unwrap_or(0)
            };
            (cluster_for(cx, ns, &d.destination, port), weight)
        })
        .filter(|(_, w)| *w > 0)
        .collect()
}

/// Clusters with their weights.
pub(in crate::translate) type Targets = Vec<(String, u32)>;

/// SNI routes of the VirtualServices bound to the gateway `ns/name` for
/// its passthrough server on `port`: (SNI hosts, weighted clusters), in
/// order; the server's own hosts bound what a route may claim.
pub(in crate::translate) fn gateway_sni_routes(
    cx: &Ctx<'_>,
    gateway: &str,
    gateway_ns: &str,
    server_hosts: &[String],
    port: u16,
) -> Vec<(Vec<String>, Targets)> {
    let key = format!("{gateway_ns}/{gateway}");
    let mut out = Vec::new();
    for (obj, vs) in virtual_services(cx) {
        if !bound_to(vs, &obj.meta.namespace, gateway, gateway_ns) {
            continue;
        }
        let ns = obj.meta.namespace.as_str();
        for rule in &vs.tls {
            for m in &rule.r#match {
                let scope = Scope {
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                    gateways: &m.gateways,
                };
                if !scope.applies(cx, port, ns, Context::Gateway(&key)) {
                    continue;
                }
                let hosts: Vec<String> = m
                    .sni_hosts
                    .iter()
                    .filter(|h| {
                        server_hosts.iter().any(|sh| {
                            let sh = sh.rsplit('/').next().unwrap_or(sh);
                            host_matches(sh, h) || host_matches(h, sh)
                        })
                    })
                    .cloned()
                    .collect();
                let targets = weighted(cx, ns, &rule.route, port);
                if !hosts.is_empty() && !targets.is_empty() {
                    out.push((hosts, targets));
                }
            }
        }
    }
    out
}

/// TCP targets of the VirtualServices bound to the gateway `ns/name` for
/// connections on its server port `port`.
pub(in crate::translate) fn gateway_tcp_targets(
    cx: &Ctx<'_>,
    gateway: &str,
    gateway_ns: &str,
    port: u16,
) -> Vec<(String, u32)> {
    let key = format!("{gateway_ns}/{gateway}");
    virtual_services(cx)
        .filter(|(obj, vs)| bound_to(vs, &obj.meta.namespace, gateway, gateway_ns))
        .map(|(obj, vs)| tcp_targets(cx, obj, vs, port, Context::Gateway(&key)))
        .find(|t| !t.is_empty())
        .unwrap_or_default()
}
