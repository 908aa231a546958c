//! Listeners: the sidecar's outbound HTTP proxy and its inbound listeners,
//! and a gateway's listeners per Gateway server port.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::{
    config::cluster::v3::cluster::{CustomClusterType, DnsLookupFamily, LbPolicy},
    extensions::{
        clusters::dynamic_forward_proxy::v3::{ClusterConfig, cluster_config},
        common::dynamic_forward_proxy::v3::DnsCacheConfig,
        filters::http::dynamic_forward_proxy::v3::{FilterConfig, filter_config},
    },
};
use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::{
                Cluster,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::{DataSource, data_source},
            listener::v3::{
                Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
                filter::ConfigType, listener_filter,
            },
            route::v3::{
                DirectResponseAction, Route, RouteAction, RouteConfiguration, RouteMatch, Vhds,
                VirtualHost, route::Action, route_action::ClusterSpecifier,
                route_match::PathSpecifier,
            },
        },
        extensions::filters::{
            http::{cors::v3::Cors, fault::v3::HttpFault, router::v3::Router},
            network::{
                http_connection_manager::v3::{
                    HttpConnectionManager, HttpFilter, Rds,
                    http_connection_manager::{
                        CodecType, ForwardClientCertDetails, RouteSpecifier,
                        SetCurrentClientCertDetails, UpgradeConfig,
                    },
                    http_filter,
                },
                tcp_proxy::v3::{TcpProxy, tcp_proxy},
            },
        },
    },
    google::protobuf::BoolValue,
};
use kite_config::{networking::OutboundMode, security::MtlsMode};
use kite_xds::{Snapshot, TypeResources, VirtualHosts, VirtualHostsBuilder, type_url};

use kite_config::k8s::Protocol;

use super::{Ctx, ads, any, clusters, duration, inbound_cluster, routes, socket_address};
use crate::registry::{Endpoint, TargetPort};

/// The local-mode outbound listener: apps send absolute-form requests here
/// through `HTTP_PROXY`.
pub(crate) const OUTBOUND_PORT: u16 = 15001;
const OUTBOUND_ROUTE: &str = "http_proxy";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// The route table of the sidecar's outbound HTTP proxy: every service,
/// then what to do with hosts the registry does not know. For Kite's proxy
/// (`vhds` given), the table holds only the virtual hosts with wildcard
/// domains and the unknown-host one, and the proxy fetches the others by
/// host name through VHDS as requests name them.
pub(super) fn sidecar_outbound_routes(
    cx: &Ctx<'_>,
    routes_out: &mut TypeResources,
    vhds: Option<&mut VirtualHostsBuilder>,
) {
    let unknown = unknown_host(allows_any(cx));
    if let Some(vhds) = vhds {
        let mut inline = Vec::new();
        routes::sidecar_outbound(cx, |vhost| {
            if vhost.domains.iter().any(|d| d.contains('*')) {
                inline.push(vhost);
            } else {
                vhds.push(&vhost);
            }
        });
        inline.push(unknown);
        routes_out.insert(
            OUTBOUND_ROUTE.to_owned(),
            &RouteConfiguration {
                name: OUTBOUND_ROUTE.to_owned(),
                virtual_hosts: inline,
                validate_clusters: Some(BoolValue { value: false }),
                vhds: Some(Vhds {
                    config_source: Some(super::ads()),
                }),
                ..Default::default()
            },
        );
        return;
    }
    // Encoded field by field, each virtual host as soon as it is made: at
    // 10,000 services the table is 5 MiB encoded, and its virtual hosts as
    // structs were several times that, for every namespace's table being
    // translated at once. The fields are those of a `RouteConfiguration`
    // with `name`, `virtual_hosts` and `validate_clusters` set, in field
    // order, as prost would write them.
    use prost::encoding::{message, string};
    let mut value = Vec::new();
    string::encode(1, &OUTBOUND_ROUTE.to_owned(), &mut value);
    routes::sidecar_outbound(cx, |vhost| message::encode(2, &vhost, &mut value));
    message::encode(2, &unknown, &mut value);
    message::encode(7, &BoolValue { value: false }, &mut value);
    routes_out.insert_any(
        OUTBOUND_ROUTE.to_owned(),
        &envoy_types::pb::google::protobuf::Any {
            type_url: <RouteConfiguration as prost::Name>::type_url(),
            value,
        },
    );
}

/// The VHDS table that goes with [`sidecar_outbound_routes`].
/// A builder of the outbound VHDS table, sharing `like`'s buffer if given.
pub(super) fn outbound_vhds(like: Option<Arc<VirtualHosts>>) -> VirtualHostsBuilder {
    match like {
        Some(like) => VirtualHostsBuilder::sharing(OUTBOUND_ROUTE, like),
        None => VirtualHostsBuilder::new(OUTBOUND_ROUTE),
    }
}

pub(super) fn allows_any(cx: &Ctx<'_>) -> bool {
    outbound_policy(cx) != OutboundMode::RegistryOnly
}

/// The sidecar's own listeners and clusters; its outbound route table is
/// [`sidecar_outbound_routes`], shared with sidecars of the same view.
pub(super) fn sidecar(cx: &Ctx<'_>, snapshot: &mut Snapshot) {
    snapshot.insert(type_url::CLUSTER, PASSTHROUGH, &passthrough_cluster());
    snapshot.insert(
        type_url::LISTENER,
        "virtualOutbound",
        &listener(
            "virtualOutbound",
            cx.proxy.ip,
            OUTBOUND_PORT,
            hcm_with("outbound_0.0.0.0_15001", OUTBOUND_ROUTE, false, true),
        ),
    );
    inbound(cx, snapshot);
}

/// One listener per port the workload serves, on the workload's address,
/// forwarding to the app on its own address and the same port.
fn is_h2(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    )
}

fn inbound(cx: &Ctx<'_>, snapshot: &mut Snapshot) {
    // Per target port: whether it carries HTTP, and the protocol towards
    // the app (HTTP/2 when every service port on it is http2 or gRPC).
    let mut ports: BTreeMap<u16, (bool, Protocol)> = BTreeMap::new();
    let workload = cx
        .registry
        .workload(&cx.proxy.namespace, &cx.proxy.workload);
    for service in cx
        .registry
        .services_selecting(&cx.proxy.namespace, &cx.labels)
    {
        for port in &service.ports {
            let target = match &port.target {
                TargetPort::Number(n) => *n,
                TargetPort::Name(name) => workload
                    .and_then(|w| w.ports.get(name).copied())
                    .unwrap_or(port.port),
            };
            let http = port.protocol.is_http() || port.protocol == Protocol::Unknown;
            let entry = ports.entry(target).or_insert((http, port.protocol));
            entry.0 &= http;
            if entry.1 != port.protocol {
                entry.1 = if is_h2(entry.1) && is_h2(port.protocol) {
                    Protocol::Http2
                } else {
                    Protocol::Http
                };
            }
        }
    }
    for (port, (http, protocol)) in ports {
        let cluster_name = inbound_cluster(port);
        let mut cluster = Cluster {
            name: cluster_name.clone(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            connect_timeout: Some(duration(std::time::Duration::from_secs(10))),
            load_assignment: Some(clusters::assignment(
                &cluster_name,
                &[Endpoint {
                    address: cx.proxy.app_ip.to_string(),
                    port,
                    locality: String::new(),
                    weight: 1,
                    labels: Default::default(),
                    service_account: String::new(),
                }],
            )),
            ..Default::default()
        };
        if http {
            // As Istio's inbound clusters: an h2c-only app (a gRPC server)
            // gets HTTP/2, and gRPC trailers survive the last hop.
            clusters::upstream_protocol(&mut cluster, protocol, None);
        }
        snapshot.insert(type_url::CLUSTER, cluster_name.clone(), &cluster);
        let name = format!("{}_{port}", cx.proxy.ip);
        let filter = if http {
            snapshot.insert(
                type_url::ROUTE,
                cluster_name.clone(),
                &RouteConfiguration {
                    name: cluster_name.clone(),
                    virtual_hosts: vec![VirtualHost {
                        name: format!("inbound|http|{port}"),
                        domains: vec!["*".to_owned()],
                        routes: vec![Route {
                            name: "default".to_owned(),
                            r#match: Some(RouteMatch {
                                path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
                                ..Default::default()
                            }),
                            action: Some(Action::Route(RouteAction {
                                cluster_specifier: Some(ClusterSpecifier::Cluster(
                                    cluster_name.clone(),
                                )),
                                timeout: Some(duration(std::time::Duration::ZERO)),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    validate_clusters: Some(BoolValue { value: false }),
                    ..Default::default()
                },
            );
            hcm(&format!("inbound_{port}"), &cluster_name, false)
        } else {
            tcp(&format!("inbound_{port}"), &cluster_name)
        };
        let mode = if cx.proxy.identity {
            super::mtls::peer_mode(cx, port)
        } else {
            MtlsMode::Disable
        };
        let mut l = listener(&name, cx.proxy.ip, port, filter.clone());
        if mode != MtlsMode::Disable {
            let secure = FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: "tls".to_owned(),
                    ..Default::default()
                }),
                filters: vec![if http { with_xfcc(filter) } else { filter }],
                transport_socket: Some(super::mtls::downstream_socket()),
                ..Default::default()
            };
            if mode == MtlsMode::Strict {
                // Plaintext is refused: the only chain requires TLS.
                l.filter_chains = vec![secure];
            } else {
                // PERMISSIVE: TLS and plaintext on one port, told apart per
                // connection by the first bytes.
                l.filter_chains[0].filter_chain_match = Some(FilterChainMatch {
                    transport_protocol: "raw_buffer".to_owned(),
                    ..Default::default()
                });
                l.filter_chains.insert(0, secure);
            }
            l.listener_filters = tls_inspector();
        }
        snapshot.insert(type_url::LISTENER, name.clone(), &l);
    }
}

pub(super) fn gateway(cx: &Ctx<'_>, snapshot: &mut Snapshot) {
    // Servers of every selected Gateway, grouped by port: one listener and
    // one route table per port.
    let mut by_port: BTreeMap<u16, Vec<(String, String, Vec<String>)>> = BTreeMap::new();
    let mut tcp_ports: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
    let mut https_ports: BTreeMap<u16, Vec<(String, String, &kite_config::networking::Server)>> =
        BTreeMap::new();
    let mut sni_ports: BTreeMap<u16, Vec<(String, String, &kite_config::networking::Server)>> =
        BTreeMap::new();
    for (obj, gw) in cx.gateways() {
        for server in &gw.servers {
            let Some(port) = server.port.as_ref() else {
                continue;
            };
            let Ok(number) = u16::try_from(port.target_port.unwrap_or(port.number)) else {
                continue;
            };
            let protocol = port.protocol.to_ascii_uppercase();
            if matches!(protocol.as_str(), "TCP" | "MONGO" | "MYSQL" | "REDIS") {
                tcp_ports
                    .entry(number)
                    .or_default()
                    .push((obj.meta.name.clone(), obj.meta.namespace.clone()));
                continue;
            }
            let passthrough = server
                .tls
                .as_ref()
                .is_some_and(|t| t.mode == kite_config::networking::ServerTlsMode::Passthrough);
            if matches!(protocol.as_str(), "HTTPS" | "TLS") && passthrough {
                sni_ports.entry(number).or_default().push((
                    obj.meta.name.clone(),
                    obj.meta.namespace.clone(),
                    server,
                ));
                continue;
            }
            if protocol == "HTTPS" {
                https_ports.entry(number).or_default().push((
                    obj.meta.name.clone(),
                    obj.meta.namespace.clone(),
                    server,
                ));
                continue;
            }
            if !matches!(protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB") {
                continue;
            }
            by_port.entry(number).or_default().push((
                obj.meta.name.clone(),
                obj.meta.namespace.clone(),
                server.hosts.clone(),
            ));
        }
    }
    for (port, servers) in by_port {
        let route_name = format!("http.{port}");
        let mut used = HashSet::new();
        let vhosts: Vec<VirtualHost> = servers
            .iter()
            .flat_map(|(name, ns, hosts)| {
                routes::gateway_vhosts(cx, name, ns, hosts, port, &mut used)
            })
            .collect();
        snapshot.insert(
            type_url::ROUTE,
            route_name.clone(),
            &RouteConfiguration {
                name: route_name.clone(),
                virtual_hosts: vhosts,
                validate_clusters: Some(BoolValue { value: false }),
                ..Default::default()
            },
        );
        let name = format!("0.0.0.0_{port}");
        snapshot.insert(
            type_url::LISTENER,
            name.clone(),
            &listener(
                &name,
                cx.proxy.ip,
                port,
                hcm(&format!("outbound_{port}"), &route_name, true),
            ),
        );
    }
    // An HTTPS server terminates TLS, then routes as an HTTP one: one filter
    // chain per server, matched on SNI.
    for (port, servers) in https_ports {
        let mut chains = Vec::new();
        for (name, ns, server) in servers {
            let Some(tls) = &server.tls else {
                continue;
            };
            let socket = match super::ingress_tls::server_socket(cx, tls) {
                Ok(socket) => socket,
                Err(why) => {
                    tracing::warn!(gateway = %format!("{ns}/{name}"), port, %why, "HTTPS server left out");
                    continue;
                }
            };
            let route_name = format!(
                "https.{port}.{}.{name}.{ns}",
                server
                    .port
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default()
            );
            let mut used = HashSet::new();
            let vhosts = routes::gateway_vhosts(cx, &name, &ns, &server.hosts, port, &mut used);
            snapshot.insert(
                type_url::ROUTE,
                route_name.clone(),
                &RouteConfiguration {
                    name: route_name.clone(),
                    virtual_hosts: vhosts,
                    validate_clusters: Some(BoolValue { value: false }),
                    ..Default::default()
                },
            );
            let server_names = server
                .hosts
                .iter()
                .map(|h| h.rsplit('/').next().unwrap_or(h).to_owned())
                .filter(|h| h != "*")
                .collect();
            chains.push(FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names,
                    ..Default::default()
                }),
                filters: vec![hcm(&format!("outbound_{port}"), &route_name, true)],
                transport_socket: Some(socket),
                ..Default::default()
            });
        }
        if chains.is_empty() {
            continue;
        }
        let name = format!("0.0.0.0_{port}");
        snapshot.insert(
            type_url::LISTENER,
            name.clone(),
            &sni_listener(&name, cx.proxy.ip, port, chains),
        );
    }
    // A passthrough server routes each TLS connection, unopened, on its SNI
    // as the VirtualServices' `tls` routes say: one filter chain per route.
    for (port, servers) in sni_ports {
        let chains: Vec<FilterChain> = servers
            .iter()
            .flat_map(|(name, ns, server)| {
                routes::gateway_sni_routes(cx, name, ns, &server.hosts, port)
            })
            .map(|(server_names, targets)| FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    server_names,
                    ..Default::default()
                }),
                filters: vec![tcp_weighted(&format!("outbound_{port}"), &targets)],
                ..Default::default()
            })
            .collect();
        if chains.is_empty() {
            continue;
        }
        let name = format!("0.0.0.0_{port}");
        snapshot.insert(
            type_url::LISTENER,
            name.clone(),
            &sni_listener(&name, cx.proxy.ip, port, chains),
        );
    }
    // A TCP server forwards each connection as the first VirtualService
    // bound to it with a TCP route for the port says; without one there is
    // nothing to forward to and, as in Istio, no listener.
    for (port, servers) in tcp_ports {
        let targets = servers
            .iter()
            .map(|(name, ns)| routes::gateway_tcp_targets(cx, name, ns, port))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        if targets.is_empty() {
            continue;
        }
        let name = format!("0.0.0.0_{port}");
        snapshot.insert(
            type_url::LISTENER,
            name.clone(),
            &listener(
                &name,
                cx.proxy.ip,
                port,
                tcp_weighted(&format!("outbound_{port}"), &targets),
            ),
        );
    }
}

/// Istio's cluster for traffic to hosts outside the registry. In local
/// mode apps name the host in the request, so it is a dynamic forward proxy
/// that resolves the request's authority.
const PASSTHROUGH: &str = "PassthroughCluster";
const DNS_CACHE: &str = "dynamic_forward_proxy_cache_config";

fn dns_cache() -> DnsCacheConfig {
    DnsCacheConfig {
        name: DNS_CACHE.to_owned(),
        dns_lookup_family: DnsLookupFamily::V4Preferred as i32,
        ..Default::default()
    }
}

fn passthrough_cluster() -> Cluster {
    Cluster {
        name: PASSTHROUGH.to_owned(),
        connect_timeout: Some(duration(std::time::Duration::from_secs(10))),
        lb_policy: LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
            name: "envoy.clusters.dynamic_forward_proxy".to_owned(),
            typed_config: Some(any(&ClusterConfig {
                cluster_implementation_specifier: Some(
                    cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(dns_cache()),
                ),
                ..Default::default()
            })),
        })),
        ..Default::default()
    }
}

/// The outbound traffic policy of the Sidecar resource that applies to
/// this proxy: one selecting its workload, else its namespace's default,
/// else the root namespace's; ALLOW_ANY when there is none.
fn outbound_policy(cx: &Ctx<'_>) -> OutboundMode {
    let sidecars: Vec<(&kite_config::Object, &kite_config::networking::Sidecar)> = cx
        .objects(|s| match s {
            kite_config::Spec::Sidecar(sc) => Some(&**sc),
            _ => None,
        })
        .collect();
    let ns = cx.proxy.namespace.as_str();
    let pick = sidecars
        .iter()
        .find(|(o, sc)| {
            o.meta.namespace == ns
                && sc.workload_selector.as_ref().is_some_and(|w| {
                    !w.labels.is_empty() && crate::registry::contains(&cx.labels, &w.labels)
                })
        })
        .or_else(|| {
            sidecars
                .iter()
                .find(|(o, sc)| o.meta.namespace == ns && sc.workload_selector.is_none())
        })
        .or_else(|| {
            sidecars.iter().find(|(o, sc)| {
                o.meta.namespace == kite_config::analyze::ROOT_NAMESPACE
                    && sc.workload_selector.is_none()
            })
        });
    pick.and_then(|(_, sc)| sc.outbound_traffic_policy.as_ref())
        .map_or(OutboundMode::AllowAny, |p| p.mode)
}

/// Requests for hosts the registry does not know: passed through under
/// ALLOW_ANY, refused with 502 under REGISTRY_ONLY.
fn unknown_host(allow_any: bool) -> VirtualHost {
    let action = if allow_any {
        Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(PASSTHROUGH.to_owned())),
            timeout: Some(duration(std::time::Duration::ZERO)),
            ..Default::default()
        })
    } else {
        Action::DirectResponse(DirectResponseAction {
            status: 502,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(
                    "kite: the outbound traffic policy is REGISTRY_ONLY and no service in the mesh registry has this host\n".to_owned(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    VirtualHost {
        name: if allow_any { "allow_any" } else { "block_all" }.to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            name: if allow_any { "allow_any" } else { "block_all" }.to_owned(),
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Envoy's TLS inspector, which reads SNI and tells TLS from plaintext for
/// the filter chain match.
fn tls_inspector() -> Vec<ListenerFilter> {
    vec![ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }]
}

/// The HCM of an mTLS chain tells the app who called, as Istio does.
fn with_xfcc(mut filter: Filter) -> Filter {
    if let Some(ConfigType::TypedConfig(cfg)) = &filter.config_type
        && let Ok(mut manager) =
            <HttpConnectionManager as prost::Message>::decode(cfg.value.as_slice())
    {
        manager.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
        manager.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        });
        filter.config_type = Some(ConfigType::TypedConfig(any(&manager)));
    }
    filter
}

/// A listener whose filter chains are told apart by the ClientHello's SNI.
fn sni_listener(name: &str, ip: std::net::IpAddr, port: u16, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(ip, port)),
        filter_chains: chains,
        listener_filters: tls_inspector(),
        ..Default::default()
    }
}

fn listener(name: &str, ip: std::net::IpAddr, port: u16, filter: Filter) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket_address(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn hcm(stat_prefix: &str, route: &str, edge: bool) -> Filter {
    hcm_with(stat_prefix, route, edge, false)
}

/// `connect`: the listener is the local-mode HTTP proxy, which also takes
/// CONNECT tunnels for TCP services.
fn hcm_with(stat_prefix: &str, route: &str, edge: bool, connect: bool) -> Filter {
    let filter = |name: &str, config: envoy_types::pb::google::protobuf::Any| HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let manager = HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route.to_owned(),
        })),
        http_filters: [
            filter(routes::FAULT_FILTER, any(&HttpFault::default())),
            filter(routes::CORS_FILTER, any(&Cors {})),
        ]
        .into_iter()
        // Resolves the authority for routes to the passthrough cluster.
        .chain(connect.then(|| {
            filter(
                "envoy.filters.http.dynamic_forward_proxy",
                any(&FilterConfig {
                    implementation_specifier: Some(
                        filter_config::ImplementationSpecifier::DnsCacheConfig(dns_cache()),
                    ),
                    ..Default::default()
                }),
            )
        }))
        .chain(std::iter::once(filter(
            "envoy.filters.http.router",
            any(&Router::default()),
        )))
        .collect(),
        // A gateway is the edge: the client's address is the remote one.
        use_remote_address: Some(BoolValue { value: edge }),
        // Istio allows WebSocket upgrades on every HTTP listener.
        upgrade_configs: std::iter::once("websocket")
            .chain(connect.then_some("CONNECT"))
            .map(|t| UpgradeConfig {
                upgrade_type: t.to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Filter {
        name: HCM.to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(&manager))),
    }
}

/// A TCP proxy to one cluster, or spread over several by weight.
fn tcp_weighted(stat_prefix: &str, targets: &[(String, u32)]) -> Filter {
    let cluster_specifier = match targets {
        [(cluster, _)] => tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()),
        _ => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: targets
                .iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name: name.clone(),
                        weight: *weight,
                        ..Default::default()
                    },
                )
                .collect(),
        }),
    };
    Filter {
        name: TCP_PROXY.to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(&TcpProxy {
            stat_prefix: stat_prefix.to_owned(),
            cluster_specifier: Some(cluster_specifier),
            ..Default::default()
        }))),
    }
}

fn tcp(stat_prefix: &str, cluster: &str) -> Filter {
    Filter {
        name: TCP_PROXY.to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(&TcpProxy {
            stat_prefix: stat_prefix.to_owned(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
            ..Default::default()
        }))),
    }
}
