//! Outbound clusters (one per service port and DestinationRule subset) with
//! their traffic policy, and the endpoints of the EDS ones.

use std::{collections::BTreeMap, sync::Arc};

use envoy_types::pb::{
    envoy::config::core::v3::{DataSource, TransportSocket, data_source, transport_socket},
    envoy::config::{
        cluster::v3::{
            CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
            circuit_breakers::{Thresholds, thresholds},
            cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
        },
        core::v3::Locality,
        endpoint::v3::{
            ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
        },
    },
    envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsCertificate,
        UpstreamTlsContext, common_tls_context::ValidationContextType,
        subject_alt_name_matcher::SanType,
    },
    envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
    google::protobuf::UInt32Value,
};
use kite_config::k8s::Protocol;
use kite_config::{
    Object, Spec,
    networking::{
        ClientTlsSettings, ConnectionPoolSettings, DestinationRule, LoadBalancerSettings,
        OutlierDetection, Resolution, SimpleLb, TlsMode, TrafficPolicy, expand_host, host_matches,
    },
};
use kite_xds::TypeResources;

use super::{Ctx, ads, duration, outbound_cluster, socket_address};
use crate::registry::{Endpoint as RegistryEndpoint, Origin, Service};

/// Istio's default connect timeout.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Istio lifts Envoy's circuit-breaker defaults (1024) out of the way unless a
/// DestinationRule sets them.
const UNLIMITED: u32 = u32::MAX;

/// The traffic policy in force for one service port and subset: the
/// DestinationRule's top level, overridden field by field by its matching
/// port-level settings, then by the subset's own policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
    pub tls: Option<ClientTlsSettings>,
    pub retry_budget: Option<kite_config::networking::RetryBudget>,
}

/// Every outbound cluster into `clusters`, the endpoints of the EDS ones
/// into `endpoints`; with `only`, those of the services named there.
pub(super) fn outbound(
    cx: &Ctx<'_>,
    clusters: &mut TypeResources,
    endpoints: &mut TypeResources,
    only: Option<&std::collections::HashSet<String>>,
) {
    for service in cx.registry.services.values() {
        if service.hostname.contains('*') || only.is_some_and(|o| !o.contains(&service.hostname)) {
            continue;
        }
        let dr = destination_rule(cx, service);
        for port in &service.ports {
            let mut subsets: Vec<(String, kite_config::Labels)> =
                vec![(String::new(), Default::default())];
            if let Some((_, dr)) = dr {
                subsets.extend(
                    dr.subsets
                        .iter()
                        .map(|s| (s.name.clone(), s.labels.clone())),
                );
            }
            for (subset, labels) in subsets {
                let name = outbound_cluster(port.port, &subset, &service.hostname);
                let policy = dr
                    .map(|(_, dr)| effective_policy(dr, port.port, &subset))
                    .unwrap_or_default();
                let selected = cx.registry.endpoints(service, port, &labels);
                let mut cluster = cluster(&name, service, &policy, &selected);
                let http = policy
                    .connection_pool
                    .as_ref()
                    .and_then(|p| p.http.as_ref());
                let protocol = outbound_protocol(port.protocol, http);
                upstream_protocol(&mut cluster, protocol, http);
                // Auto mTLS for proxies that hold a mesh identity, unless a
                // DestinationRule chose DISABLE or its own TLS.
                let own_tls = matches!(
                    policy.tls.as_ref().map(|t| t.mode),
                    Some(TlsMode::Disable | TlsMode::Simple | TlsMode::Mutual)
                );
                if cx.proxy.identity && !own_tls && cluster.transport_socket.is_none() {
                    let sans = identities(cx, service, port);
                    let sni = format!("outbound_.{}_.{}_.{}", port.port, subset, service.hostname);
                    // Kite's proxy speaks whichever HTTP version ALPN picks;
                    // Envoy speaks its cluster's, so it offers only that.
                    let alpn: &[&str] = if cx.proxy.kite {
                        &["h2", "http/1.1"]
                    } else if matches!(
                        protocol,
                        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
                    ) {
                        &["h2"]
                    } else {
                        &["http/1.1"]
                    };
                    cluster.transport_socket_matches =
                        super::mtls::upstream_matches(&sans, &sni, alpn);
                }
                if matches!(
                    cluster.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                ) {
                    // A workload whose own policy is DISABLE takes plaintext
                    // only; auto mTLS leaves it out, as Istio does.
                    let selected: Vec<RegistryEndpoint> = selected
                        .into_iter()
                        .map(|mut e| {
                            if e.labels.contains_key(super::mtls::TLS_MODE_LABEL)
                                && super::mtls::workload_peer_mode(
                                    cx,
                                    &service.namespace,
                                    &e.labels,
                                    e.port,
                                ) == kite_config::security::MtlsMode::Disable
                            {
                                Arc::make_mut(&mut e.labels).remove(super::mtls::TLS_MODE_LABEL);
                            }
                            e
                        })
                        .collect();
                    let mut cla = assignment(&name, &selected);
                    let client = crate::registry::locality_of(&cx.labels);
                    super::locality::locality_lb(&mut cla, &mut cluster, &policy, &client);
                    endpoints.insert(name.clone(), &cla);
                }
                clusters.insert(name, &cluster);
            }
        }
    }
}

/// The SPIFFE identities a service's workloads run as: what its servers
/// may present (secure naming).
fn identities(cx: &Ctx<'_>, service: &Service, port: &crate::registry::Port) -> Vec<String> {
    let mut ids: Vec<String> = cx
        .registry
        .endpoints(service, port, &Default::default())
        .iter()
        .map(|e| {
            // Workloads in the service's namespace, as the registry selects.
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                cx.trust_domain, service.namespace, e.service_account
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The DestinationRule for `service`, Istio's lookup order: the proxy's
/// namespace, the service's namespace, then the root namespace.
pub(crate) fn destination_rule<'a>(
    cx: &'a Ctx<'_>,
    service: &Service,
) -> Option<(&'a Object, &'a DestinationRule)> {
    let candidates: Vec<(&Object, &DestinationRule)> = cx
        .objects(|s| match s {
            Spec::DestinationRule(dr) => Some(&**dr),
            _ => None,
        })
        .filter(|(o, dr)| {
            host_matches(&expand_host(&dr.host, &o.meta.namespace), &service.hostname)
        })
        .collect();
    for ns in [
        cx.proxy.namespace.as_str(),
        service.namespace.as_str(),
        "istio-system",
    ] {
        if let Some(found) = candidates.iter().find(|(o, _)| o.meta.namespace == ns) {
            return Some(*found);
        }
    }
    candidates.first().copied()
}

pub(crate) fn effective_policy(dr: &DestinationRule, port: u16, subset: &str) -> Policy {
    let mut policy = Policy::default();
    let mut overlay = |tp: &TrafficPolicy| {
        if tp.load_balancer.is_some() {
            policy.load_balancer = tp.load_balancer.clone();
        }
        if tp.connection_pool.is_some() {
            policy.connection_pool = tp.connection_pool.clone();
        }
        if tp.outlier_detection.is_some() {
            policy.outlier_detection = tp.outlier_detection.clone();
        }
        if tp.tls.is_some() {
            policy.tls = tp.tls.clone();
        }
        if tp.retry_budget.is_some() {
            policy.retry_budget = tp.retry_budget.clone();
        }
        for pl in &tp.port_level_settings {
            if pl
                .port
                .as_ref()
                .is_some_and(|p| p.number == u32::from(port))
            {
                if pl.load_balancer.is_some() {
                    policy.load_balancer = pl.load_balancer.clone();
                }
                if pl.connection_pool.is_some() {
                    policy.connection_pool = pl.connection_pool.clone();
                }
                if pl.outlier_detection.is_some() {
                    policy.outlier_detection = pl.outlier_detection.clone();
                }
                if pl.tls.is_some() {
                    policy.tls = pl.tls.clone();
                }
            }
        }
    };
    if let Some(tp) = &dr.traffic_policy {
        overlay(tp);
    }
    if let Some(tp) = dr
        .subsets
        .iter()
        .find(|s| s.name == subset)
        .and_then(|s| s.traffic_policy.as_ref())
    {
        overlay(tp);
    }
    policy
}

/// The protocol an outbound cluster speaks to its endpoints: the port's,
/// unless the DestinationRule's HTTP settings say otherwise. As Istio:
/// `useClientProtocol` keeps whatever version the client used;
/// `h2UpgradePolicy: UPGRADE` makes HTTP/1.1 ports HTTP/2, so that the
/// sidecars multiplex requests over one connection; the receiving sidecar
/// speaks HTTP/1.1 to the app. Unlike Istio, a port whose protocol is
/// sniffed stays as it is: its receiving sidecar uses the client's protocol
/// towards the app, which would then get HTTP/2 it may not speak. The
/// mesh-wide default is Istio's, `DO_NOT_UPGRADE`.
pub(super) fn outbound_protocol(
    port: Protocol,
    http: Option<&kite_config::networking::HttpSettings>,
) -> Protocol {
    use kite_config::networking::H2UpgradePolicy;
    let Some(http) = http else { return port };
    if http.use_client_protocol == Some(true) && matches!(port, Protocol::Http | Protocol::Unknown)
    {
        Protocol::Unknown
    } else if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && port == Protocol::Http {
        Protocol::Http2
    } else {
        port
    }
}

/// Istio's upstream protocol: HTTP/2 for ports declared http2 or gRPC, the
/// client's own protocol where the port's protocol is sniffed, HTTP/1.1
/// otherwise.
/// `maxRequestsPerConnection` and `idleTimeout` go with it, as Envoy's
/// common HTTP protocol options.
pub(super) fn upstream_protocol(
    cluster: &mut Cluster,
    protocol: Protocol,
    http: Option<&kite_config::networking::HttpSettings>,
) {
    use envoy_types::pb::envoy::{
        config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions},
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{
                ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
                explicit_http_config::ProtocolConfig,
            },
        },
    };
    let options = match protocol {
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            })
        }
        Protocol::Unknown => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            })
        }
        _ => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
        }),
    };
    let max_requests = http
        .and_then(|h| h.max_requests_per_connection)
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok());
    let idle = http.and_then(|h| h.idle_timeout);
    let common = (max_requests.is_some() || idle.is_some()).then(|| {
        envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
            max_requests_per_connection: max_requests.map(|value| UInt32Value { value }),
            idle_timeout: idle.map(|d| duration(d.as_std())),
            ..Default::default()
        }
    });
    let protocol_chosen = matches!(
        protocol,
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb | Protocol::Unknown
    );
    if !protocol_chosen && common.is_none() {
        return;
    }
    cluster.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
        super::any(&HttpProtocolOptions {
            upstream_protocol_options: Some(options),
            common_http_protocol_options: common,
            ..Default::default()
        }),
    );
}

fn cluster(
    name: &str,
    service: &Service,
    policy: &Policy,
    endpoints: &[RegistryEndpoint],
) -> Cluster {
    let mut cluster = Cluster {
        name: name.to_owned(),
        alt_stat_name: name.to_owned(),
        connect_timeout: Some(duration(
            policy
                .connection_pool
                .as_ref()
                .and_then(|p| p.tcp.as_ref())
                .and_then(|t| t.connect_timeout)
                .map_or(CONNECT_TIMEOUT, |d| d.as_std()),
        )),
        circuit_breakers: Some(circuit_breakers(
            policy.connection_pool.as_ref(),
            policy.retry_budget.as_ref(),
        )),
        ..Default::default()
    };
    let dns = match &service.origin {
        Origin::ServiceEntry {
            resolution: Resolution::Dns,
            ..
        } => Some(DiscoveryType::StrictDns),
        Origin::ServiceEntry {
            resolution: Resolution::DnsRoundRobin,
            ..
        } => Some(DiscoveryType::LogicalDns),
        _ => None,
    };
    match dns {
        Some(kind) => {
            // DNS services resolve their own host names (or their
            // endpoints' addresses) rather than listing IPs.
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(kind as i32));
            // Istio resolves IPv4 only unless the mesh is dual-stack.
            cluster.dns_lookup_family =
                envoy_types::pb::envoy::config::cluster::v3::cluster::DnsLookupFamily::V4Only
                    as i32;
            let targets: Vec<RegistryEndpoint> = if endpoints.is_empty() {
                let port = name
                    .split('|')
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(80);
                vec![RegistryEndpoint {
                    address: service.hostname.clone(),
                    port,
                    locality: String::new(),
                    weight: 1,
                    labels: Default::default(),
                    service_account: String::new(),
                }]
            } else {
                endpoints.to_vec()
            };
            cluster.load_assignment = Some(assignment(name, &targets));
        }
        None => {
            cluster.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            cluster.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name.to_owned(),
            });
        }
    }
    let simple = policy.load_balancer.as_ref().and_then(|lb| lb.simple);
    let hashed = policy
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.consistent_hash.as_ref());
    cluster.lb_policy = match (simple, hashed) {
        (_, Some(hash)) if hash.maglev.is_some() => LbPolicy::Maglev,
        (_, Some(_)) => LbPolicy::RingHash,
        (Some(SimpleLb::RoundRobin), _) => LbPolicy::RoundRobin,
        (Some(SimpleLb::Random), _) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    } as i32;
    if let Some(od) = &policy.outlier_detection {
        cluster.outlier_detection = Some(outlier(od));
    }
    cluster.transport_socket = policy.tls.as_ref().and_then(origination);
    cluster
}

/// TLS origination from a DestinationRule with certificates from files
/// (SIMPLE, MUTUAL). ISTIO_MUTUAL needs the mesh's own identities, which
/// `kite analyze` reports as not honoured yet.
fn origination(tls: &ClientTlsSettings) -> Option<TransportSocket> {
    if !matches!(tls.mode, TlsMode::Simple | TlsMode::Mutual) {
        return None;
    }
    let file = |path: &str| {
        (!path.is_empty()).then(|| DataSource {
            specifier: Some(data_source::Specifier::Filename(path.to_owned())),
            ..Default::default()
        })
    };
    let skip_verify = tls.insecure_skip_verify == Some(true);
    // As Istio does: with no subjectAltNames the certificate must name
    // the SNI.
    let names = if tls.subject_alt_names.is_empty() && !tls.sni.is_empty() {
        std::slice::from_ref(&tls.sni)
    } else {
        tls.subject_alt_names.as_slice()
    };
    let validation = (!skip_verify && !tls.ca_certificates.is_empty()).then(|| {
        ValidationContextType::ValidationContext(CertificateValidationContext {
            trusted_ca: file(&tls.ca_certificates),
            match_typed_subject_alt_names: names
                .iter()
                .map(|san| SubjectAltNameMatcher {
                    san_type: if san.starts_with("spiffe://") {
                        SanType::Uri
                    } else {
                        SanType::Dns
                    } as i32,
                    matcher: Some(StringMatcher {
                        match_pattern: Some(MatchPattern::Exact(san.clone())),
                        ignore_case: false,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    });
    let certificates = if tls.mode == TlsMode::Mutual {
        vec![TlsCertificate {
            certificate_chain: file(&tls.client_certificate),
            private_key: file(&tls.private_key),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    let context = UpstreamTlsContext {
        sni: tls.sni.clone(),
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: certificates,
            validation_context_type: validation,
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(super::any(
            &context,
        ))),
    })
}

fn circuit_breakers(
    pool: Option<&ConnectionPoolSettings>,
    budget: Option<&kite_config::networking::RetryBudget>,
) -> CircuitBreakers {
    let limit = |v: Option<i32>| {
        Some(UInt32Value {
            value: v
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(UNLIMITED),
        })
    };
    let tcp = pool.and_then(|p| p.tcp.as_ref());
    let http = pool.and_then(|p| p.http.as_ref());
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: limit(tcp.and_then(|t| t.max_connections)),
            max_pending_requests: limit(http.and_then(|h| h.http1_max_pending_requests)),
            max_requests: limit(http.and_then(|h| h.http2_max_requests)),
            max_retries: limit(http.and_then(|h| h.max_retries)),
            // Envoy's defaults (20 %, at least 3) where a budget is asked
            // for without them.
            retry_budget: budget.map(|b| thresholds::RetryBudget {
                budget_percent: Some(envoy_types::pb::envoy::r#type::v3::Percent {
                    value: b.percent.as_ref().map_or(20.0, |p| p.value),
                }),
                min_retry_concurrency: Some(UInt32Value {
                    value: b.min_retry_concurrency.unwrap_or(3),
                }),
                ..Default::default()
            }),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn outlier(od: &OutlierDetection) -> EnvoyOutlier {
    let count = |v: Option<u32>| v.map(|value| UInt32Value { value });
    let consecutive_5xx = od
        .consecutive_5xx_errors
        .or(od.consecutive_errors.and_then(|n| u32::try_from(n).ok()));
    let enforcing = |on: bool| {
        Some(UInt32Value {
            value: if on { 100 } else { 0 },
        })
    };
    EnvoyOutlier {
        consecutive_5xx: count(consecutive_5xx),
        enforcing_consecutive_5xx: enforcing(consecutive_5xx.is_some_and(|n| n > 0)),
        consecutive_gateway_failure: count(od.consecutive_gateway_errors),
        enforcing_consecutive_gateway_failure: enforcing(
            od.consecutive_gateway_errors.is_some_and(|n| n > 0),
        ),
        interval: od.interval.map(|d| duration(d.as_std())),
        base_ejection_time: od.base_ejection_time.map(|d| duration(d.as_std())),
        max_ejection_percent: od
            .max_ejection_percent
            .and_then(|n| u32::try_from(n).ok())
            .map(|value| UInt32Value { value }),
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        consecutive_local_origin_failure: count(od.consecutive_local_origin_failures),
        // Istio leaves success-rate ejection off.
        enforcing_success_rate: enforcing(false),
        ..Default::default()
    }
}

/// Endpoints grouped by locality, as Envoy balances across localities.
pub(crate) fn assignment(name: &str, endpoints: &[RegistryEndpoint]) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<&RegistryEndpoint>> = BTreeMap::new();
    for e in endpoints {
        by_locality.entry(e.locality.as_str()).or_default().push(e);
    }
    ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, eps)| {
                let mut parts = locality.splitn(3, '/');
                LocalityLbEndpoints {
                    locality: Some(Locality {
                        region: parts.next().unwrap_or_default().to_owned(),
                        zone: parts.next().unwrap_or_default().to_owned(),
                        sub_zone: parts.next().unwrap_or_default().to_owned(),
                    }),
                    load_balancing_weight: Some(UInt32Value {
                        value: eps.iter().map(|e| e.weight).sum::<u32>().max(1),
                    }),
                    lb_endpoints: eps
                        .into_iter()
                        .map(|e| LbEndpoint {
                            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                                Endpoint {
                                    address: Some(socket_address(&e.address, e.port)),
                                    ..Default::default()
                                },
                            )),
                            load_balancing_weight: Some(UInt32Value { value: e.weight }),
                            // Endpoints with a sidecar are reached over mTLS.
                            metadata: (e
                                .labels
                                .get(super::mtls::TLS_MODE_LABEL)
                                .map(String::as_str)
                                == Some("istio"))
                            .then(super::mtls::endpoint_metadata),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use kite_config::networking::{H2UpgradePolicy, HttpSettings};

    use super::*;

    #[test]
    fn upgrade_and_client_protocol_apply_to_http_ports_only() {
        let upgrade = HttpSettings {
            h2_upgrade_policy: Some(H2UpgradePolicy::Upgrade),
            ..Default::default()
        };
        let client = HttpSettings {
            use_client_protocol: Some(true),
            ..Default::default()
        };
        let keep = HttpSettings {
            h2_upgrade_policy: Some(H2UpgradePolicy::DoNotUpgrade),
            ..Default::default()
        };
        for (port, http, want) in [
            (Protocol::Http, None, Protocol::Http),
            (Protocol::Http, Some(&upgrade), Protocol::Http2),
            (Protocol::Http, Some(&keep), Protocol::Http),
            (Protocol::Unknown, Some(&upgrade), Protocol::Unknown),
            (Protocol::Tcp, Some(&upgrade), Protocol::Tcp),
            (Protocol::Grpc, Some(&upgrade), Protocol::Grpc),
            (Protocol::Http, Some(&client), Protocol::Unknown),
            (Protocol::Http2, Some(&client), Protocol::Http2),
        ] {
            assert_eq!(outbound_protocol(port, http), want, "{port:?} {http:?}");
        }
    }
}
