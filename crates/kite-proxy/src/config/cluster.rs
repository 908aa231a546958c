//! Clusters (with their TLS) and load assignments.

use super::*;

impl TryFrom<&Any> for Cluster {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let c: PbCluster = decode(any, "cluster")?;
        let name = format!("cluster {}", c.name);
        let origination = c
            .transport_socket
            .as_ref()
            .map(|t| origination(t, &name))
            .transpose()?
            .map(Arc::new);
        let discovery = match c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => {
                Discovery::Eds(
                    c.eds_cluster_config
                        .as_ref()
                        .map(|e| e.service_name.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| c.name.clone()),
                )
            }
            Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Static as i32 => {
                Discovery::Static(
                    c.load_assignment
                        .as_ref()
                        .map(|la| endpoints(la, &name))
                        .transpose()?
                        .unwrap_or_default(),
                )
            }
            Some(ClusterDiscoveryType::Type(t))
                if t == DiscoveryType::StrictDns as i32
                    || t == DiscoveryType::LogicalDns as i32 =>
            {
                Discovery::Dns(
                    c.load_assignment
                        .as_ref()
                        .map(|la| dns_targets(la, &name))
                        .transpose()?
                        .unwrap_or_default(),
                )
            }
            Some(ClusterDiscoveryType::ClusterType(ref t))
                if t.name == "envoy.clusters.dynamic_forward_proxy" =>
            {
                Discovery::DynamicForward
            }
            _ => {
                return Err(bad(
                    &name,
                    "only EDS, STATIC, STRICT_DNS, LOGICAL_DNS and dynamic forward proxy clusters are supported",
                ));
            }
        };
        let lb = match LbPolicy::try_from(c.lb_policy) {
            Ok(LbPolicy::LeastRequest) => Lb::LeastRequest,
            Ok(LbPolicy::RoundRobin) => Lb::RoundRobin,
            Ok(LbPolicy::Random) => Lb::Random,
            Ok(LbPolicy::RingHash | LbPolicy::Maglev) => Lb::Hash,
            Ok(LbPolicy::ClusterProvided) if discovery == Discovery::DynamicForward => Lb::Random,
            _ => return Err(bad(&name, "unsupported load-balancing policy")),
        };
        let t = c
            .circuit_breakers
            .as_ref()
            .and_then(|cb| cb.thresholds.first());
        // Envoy's defaults where the control plane sets nothing.
        let limit = |v: Option<u32>, default: u32| v.unwrap_or(default);
        let limits = Limits {
            max_connections: limit(
                t.and_then(|t| t.max_connections.as_ref().map(|v| v.value)),
                1024,
            ),
            max_pending: limit(
                t.and_then(|t| t.max_pending_requests.as_ref().map(|v| v.value)),
                1024,
            ),
            max_requests: limit(
                t.and_then(|t| t.max_requests.as_ref().map(|v| v.value)),
                1024,
            ),
            max_retries: limit(t.and_then(|t| t.max_retries.as_ref().map(|v| v.value)), 3),
            retry_budget: t.and_then(|t| t.retry_budget.as_ref()).map(|b| {
                (
                    b.budget_percent.as_ref().map_or(20.0, |p| p.value),
                    b.min_retry_concurrency.as_ref().map_or(3, |n| n.value),
                )
            }),
        };
        let outlier = c.outlier_detection.as_ref().map(|o| {
            let enforced =
                |v: Option<u32>, enforcing: Option<u32>| v.filter(|_| enforcing.unwrap_or(100) > 0);
            Outlier {
                consecutive_5xx: enforced(
                    o.consecutive_5xx.as_ref().map(|v| v.value).or(Some(5)),
                    o.enforcing_consecutive_5xx.as_ref().map(|v| v.value),
                ),
                consecutive_gateway: enforced(
                    o.consecutive_gateway_failure.as_ref().map(|v| v.value),
                    o.enforcing_consecutive_gateway_failure
                        .as_ref()
                        .map(|v| v.value)
                        .or(Some(0)),
                ),
                interval: o
                    .interval
                    .as_ref()
                    .map_or(Duration::from_secs(10), duration),
                base_ejection: o
                    .base_ejection_time
                    .as_ref()
                    .map_or(Duration::from_secs(30), duration),
                max_ejection_percent: o.max_ejection_percent.as_ref().map_or(10, |v| v.value),
            }
        });
        let mut protocol = UpstreamProtocol::Http1;
        let mut idle_timeout = None;
        let mut max_requests_per_connection = None;
        for (key, any) in &c.typed_extension_protocol_options {
            use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
                HttpProtocolOptions,
                http_protocol_options::{
                    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
                },
            };
            if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
                return Err(bad(
                    &name,
                    format!("protocol options {key} are not supported"),
                ));
            }
            let opts: HttpProtocolOptions = decode(any, &name)?;
            if !opts.http_filters.is_empty() {
                return Err(bad(&name, "upstream HTTP filters are not supported"));
            }
            if let Some(common) = &opts.common_http_protocol_options {
                idle_timeout = common.idle_timeout.as_ref().map(duration);
                max_requests_per_connection = common
                    .max_requests_per_connection
                    .as_ref()
                    .and_then(|n| std::num::NonZeroU32::new(n.value));
            }
            protocol = match opts.upstream_protocol_options {
                Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                    Some(ProtocolConfig::HttpProtocolOptions(_)) | None => UpstreamProtocol::Http1,
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(bad(&name, "HTTP/3 upstreams are not supported"));
                    }
                },
                Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                    UpstreamProtocol::Downstream
                }
                Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                    return Err(bad(
                        &name,
                        "ALPN-negotiated upstream protocol (auto_config) is not supported yet",
                    ));
                }
                None => UpstreamProtocol::Http1,
            };
        }
        let mut mtls = None;
        for m in &c.transport_socket_matches {
            let wants_istio = m.r#match.as_ref().is_some_and(|s| {
                s.fields.get("tlsMode").is_some_and(|v| {
                    matches!(&v.kind, Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) if s == "istio")
                })
            });
            let socket = m.transport_socket.as_ref();
            if wants_istio {
                mtls = Some(upstream_mtls(socket, &name)?);
            } else if socket.is_some_and(|t| t.name != "envoy.transport_sockets.raw_buffer") {
                return Err(bad(
                    &name,
                    format!("transport socket match {} is not supported", m.name),
                ));
            }
        }
        Ok(Cluster {
            mtls,
            origination,
            protocol,
            idle_timeout,
            max_requests_per_connection,
            name: c.name,
            discovery,
            lb,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map_or(Duration::from_secs(5), duration),
            limits,
            outlier,
            panic_threshold: c
                .common_lb_config
                .as_ref()
                .and_then(|l| l.healthy_panic_threshold.as_ref())
                .map_or(50.0, |p| p.value),
            locality_weighted: c.common_lb_config.as_ref().is_some_and(|l| {
                matches!(
                    l.locality_config_specifier,
                    Some(envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
                )
            }),
        })
    }
}

/// A PEM document from a file or inline, as TLS contexts name them.
pub(super) fn read_pem(
    field: &str,
    source: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>,
    name: &str,
) -> Result<String, Unsupported> {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::Filename(path)) => {
            std::fs::read_to_string(path).map_err(|e| bad(name, format!("{field} {path}: {e}")))
        }
        Some(Specifier::InlineString(s)) => Ok(s.clone()),
        Some(Specifier::InlineBytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| bad(name, format!("{field} is not PEM text")))
        }
        _ => Err(bad(name, format!("{field} must be a file or inline PEM"))),
    }
}

/// TLS origination with files named in the cluster's transport socket.
fn origination(
    socket: &envoy_types::pb::envoy::config::core::v3::TransportSocket,
    name: &str,
) -> Result<Origination, Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::{DataSource, transport_socket},
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    };
    if socket.name != "envoy.transport_sockets.tls" {
        return Err(bad(
            name,
            format!("transport socket {} is not supported", socket.name),
        ));
    }
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = socket.config_type.as_ref() else {
        return Err(bad(name, "TLS transport socket without typed config"));
    };
    let ctx: UpstreamTlsContext = decode(cfg, name)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let read = |field: &str, source: Option<&DataSource>| read_pem(field, source, name);
    let (ca, sans) = match &common.validation_context_type {
        None => (None, Vec::new()),
        Some(ValidationContextType::ValidationContext(v)) => {
            let ca = read("trusted_ca", v.trusted_ca.as_ref())?;
            let sans = v
                .match_typed_subject_alt_names
                .iter()
                .map(
                    |m| match m.matcher.as_ref().and_then(|x| x.match_pattern.as_ref()) {
                        Some(MatchPattern::Exact(s)) => Ok(s.clone()),
                        _ => Err(bad(
                            name,
                            "only exact subject alt name matches are supported",
                        )),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?;
            (Some(ca), sans)
        }
        Some(_) => {
            return Err(bad(
                name,
                "TLS origination needs its CA inline or from a file (not SDS)",
            ));
        }
    };
    let client = match common.tls_certificates.as_slice() {
        [] => None,
        [c] => Some((
            read("certificate_chain", c.certificate_chain.as_ref())?,
            read("private_key", c.private_key.as_ref())?,
        )),
        _ => return Err(bad(name, "more than one client certificate")),
    };
    let config = kite_identity::tls::origination_config(
        ca.as_deref(),
        sans.clone(),
        client.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
    )
    .map_err(|e| bad(name, format!("TLS origination: {e}")))?;
    Ok(Origination {
        source: {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&ctx.sni, &ca, &sans, &client).hash(&mut h);
            h.finish()
        },
        sni: ctx.sni,
        config: Arc::new(config),
    })
}

/// The mesh mTLS a cluster asks for: Kite's own certificate (SDS
/// `default`), the mesh root (`ROOTCA`), and the identities to accept.
fn upstream_mtls(
    socket: Option<&envoy_types::pb::envoy::config::core::v3::TransportSocket>,
    name: &str,
) -> Result<UpstreamMtls, Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::transport_socket,
        extensions::transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context::ValidationContextType,
        },
    };
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) =
        socket.and_then(|s| s.config_type.as_ref())
    else {
        return Err(bad(name, "mTLS transport socket without typed config"));
    };
    let ctx: UpstreamTlsContext = decode(cfg, name)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    if !common.tls_certificates.is_empty() {
        return Err(bad(
            name,
            "upstream TLS with inline certificates is not supported (mesh mTLS only)",
        ));
    }
    let allowed = match common.validation_context_type {
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .default_validation_context
            .map(|v| {
                v.match_typed_subject_alt_names
                    .iter()
                    .filter_map(|m| {
                        match m.matcher.as_ref().and_then(|x| x.match_pattern.as_ref()) {
                            Some(MatchPattern::Exact(s)) => s.parse().ok(),
                            _ => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => return Err(bad(name, "mTLS needs the mesh root by SDS (ROOTCA)")),
    };
    Ok(UpstreamMtls {
        allowed,
        sni: ctx.sni,
    })
}

/// The names of a DNS cluster's load assignment.
fn dns_targets(la: &ClusterLoadAssignment, resource: &str) -> Result<Vec<DnsTarget>, Unsupported> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let mut out = Vec::new();
    for e in la.endpoints.iter().flat_map(|g| &g.lb_endpoints) {
        let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
            return Err(bad(resource, "named endpoints are not supported"));
        };
        let Some(address::Address::SocketAddress(sa)) =
            ep.address.as_ref().and_then(|a| a.address.as_ref())
        else {
            return Err(bad(resource, "only socket addresses are supported"));
        };
        let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
            return Err(bad(resource, "named ports are not supported"));
        };
        out.push(DnsTarget {
            host: sa.address.clone(),
            port: u16::try_from(port).map_err(|_| bad(resource, "port out of range"))?,
            weight: e
                .load_balancing_weight
                .as_ref()
                .map_or(1, |w| w.value.max(1)),
            tls: false,
        });
    }
    Ok(out)
}

/// Endpoints of a load assignment, as delivered by EDS or inline.
pub fn endpoints(la: &ClusterLoadAssignment, resource: &str) -> Result<Vec<Endpoint>, Unsupported> {
    let mut out = Vec::new();
    for group in &la.endpoints {
        let locality = group
            .locality
            .as_ref()
            .filter(|l| !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()))
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .unwrap_or_default();
        for e in &group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return Err(bad(resource, "named endpoints are not supported"));
            };
            let tls = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .and_then(|s| s.fields.get("tlsMode"))
                .is_some_and(|v| {
                    matches!(&v.kind, Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) if s == "istio")
                });
            out.push(Endpoint {
                tls,
                addr: socket_addr(ep.address.as_ref(), resource)?,
                weight: e
                    .load_balancing_weight
                    .as_ref()
                    .map_or(1, |w| w.value.max(1)),
                locality: locality.clone(),
                priority: group.priority,
                locality_weight: group.load_balancing_weight.as_ref().map_or(1, |w| w.value),
            });
        }
    }
    Ok(out)
}

/// One cluster's endpoints, from EDS.
#[derive(Clone, Debug)]
pub struct LoadAssignment {
    pub cluster: String,
    pub endpoints: Vec<Endpoint>,
}

impl TryFrom<&Any> for LoadAssignment {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let la: ClusterLoadAssignment = decode(any, "load assignment")?;
        let name = format!("load assignment {}", la.cluster_name);
        Ok(LoadAssignment {
            endpoints: endpoints(&la, &name)?,
            cluster: la.cluster_name,
        })
    }
}
