//! Listeners: ports, filter chains, inbound TLS.

use super::*;

impl TryFrom<&Any> for Listener {
    type Error = Unsupported;

    fn try_from(any: &Any) -> Result<Self, Unsupported> {
        let l: PbListener = decode(any, "listener")?;
        let name = format!("listener {}", l.name);
        let addr = socket_addr(l.address.as_ref(), &name)?;
        for lf in &l.listener_filters {
            if lf.name != "envoy.filters.listener.tls_inspector" {
                return Err(bad(
                    &name,
                    format!("listener filter {} is not supported", lf.name),
                ));
            }
        }
        // A gateway's SNI passthrough: plaintext chains matched on server
        // names, each forwarding to its clusters.
        let sni_chain = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
            c.transport_socket.is_none()
                && c.filter_chain_match
                    .as_ref()
                    .is_some_and(|m| !m.server_names.is_empty())
        };
        if !l.filter_chains.is_empty() && l.filter_chains.iter().all(sni_chain) {
            let mut by_sni = Vec::new();
            let mut prefix = String::new();
            for c in &l.filter_chains {
                let [f] = c.filters.as_slice() else {
                    return Err(bad(&name, "exactly one network filter is supported"));
                };
                let Some(filter::ConfigType::TypedConfig(cfg)) = &f.config_type else {
                    return Err(bad(&name, format!("filter {} has no typed config", f.name)));
                };
                if !cfg.type_url.ends_with(".TcpProxy") {
                    return Err(bad(&name, "SNI chains must forward with tcp_proxy"));
                }
                let (stat_prefix, clusters) = tcp_proxy(cfg, &name)?;
                prefix = stat_prefix;
                by_sni.push(SniRoute {
                    names: c
                        .filter_chain_match
                        .as_ref()
                        .map(|m| m.server_names.clone())
                        .unwrap_or_default(),
                    clusters,
                });
            }
            return Ok(Listener {
                name: l.name,
                addr,
                kind: ListenerKind::Tcp {
                    stat_prefix: prefix,
                    clusters: Vec::new(),
                    by_sni,
                },
                tls: InboundTls::Off,
            });
        }
        // Istio's inbound layouts: one plaintext chain; one mTLS chain
        // (STRICT); or an mTLS chain and a plaintext chain told apart by
        // the transport protocol (PERMISSIVE).
        let transport = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
            c.filter_chain_match
                .as_ref()
                .map(|m| m.transport_protocol.clone())
                .unwrap_or_default()
        };
        let (plain, secure) = match l.filter_chains.as_slice() {
            [only] if only.transport_socket.is_none() => (Some(only), None),
            [only] => (None, Some(only)),
            [a, b] if transport(a) == "tls" && transport(b) == "raw_buffer" => (Some(b), Some(a)),
            [a, b] if transport(b) == "tls" && transport(a) == "raw_buffer" => (Some(a), Some(b)),
            _ => {
                return Err(bad(
                    &name,
                    "unsupported filter chain layout (one plaintext chain, one TLS chain, or both matched on transport protocol)",
                ));
            }
        };
        let termination = match secure {
            Some(secure) => downstream_tls(secure.transport_socket.as_ref(), &name)?,
            None => None,
        };
        let tls = match (plain, secure, termination) {
            (None, Some(_), Some(t)) => InboundTls::Terminate(t),
            (Some(_), Some(_), Some(_)) => {
                return Err(bad(&name, "a gateway's TLS chain with a plaintext one"));
            }
            (Some(_), Some(_), None) => InboundTls::Permissive,
            (None, Some(_), None) => InboundTls::Strict,
            _ => InboundTls::Off,
        };
        let mut xfcc = false;
        if let Some(secure) = secure
            && let Some(f) = secure.filters.first()
            && let Some(filter::ConfigType::TypedConfig(cfg)) = &f.config_type
            && cfg.type_url.ends_with("HttpConnectionManager")
        {
            let hcm: HttpConnectionManager = decode(cfg, &name)?;
            xfcc = hcm.set_current_client_cert_details.is_some();
        }
        let Some(chain) = plain.or(secure) else {
            return Err(bad(&name, "no filter chain"));
        };
        let [f] = chain.filters.as_slice() else {
            return Err(bad(&name, "exactly one network filter is supported"));
        };
        let Some(filter::ConfigType::TypedConfig(cfg)) = &f.config_type else {
            return Err(bad(&name, format!("filter {} has no typed config", f.name)));
        };
        let kind = match cfg.type_url.as_str() {
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" =>
            {
                let hcm: HttpConnectionManager = decode(cfg, &name)?;
                let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
                    return Err(bad(&name, "only RDS route tables are supported"));
                };
                for hf in &hcm.http_filters {
                    match hf.name.as_str() {
                        "envoy.filters.http.router"
                        | "envoy.filters.http.fault"
                        | "envoy.filters.http.cors"
                        | "envoy.filters.http.dynamic_forward_proxy" => {}
                        other => {
                            return Err(bad(
                                &name,
                                format!("HTTP filter {other} is not supported"),
                            ));
                        }
                    }
                    if let Some(http_filter::ConfigType::TypedConfig(c)) = &hf.config_type
                        && hf.name == "envoy.filters.http.fault"
                        && c.value != HttpFault::default().encode_to_vec()
                    {
                        return Err(bad(
                            &name,
                            "listener-wide fault settings are not supported (per-route only)",
                        ));
                    }
                }
                let mut websocket = false;
                let mut connect = false;
                for u in &hcm.upgrade_configs {
                    match u.upgrade_type.to_ascii_lowercase().as_str() {
                        "websocket" => websocket = u.enabled.as_ref().is_none_or(|b| b.value),
                        "connect" => connect = u.enabled.as_ref().is_none_or(|b| b.value),
                        other => {
                            return Err(bad(
                                &name,
                                format!("upgrade type {other:?} is not supported"),
                            ));
                        }
                    }
                    if !u.filters.is_empty() {
                        return Err(bad(&name, "per-upgrade filter chains are not supported"));
                    }
                }
                for log in &hcm.access_log {
                    if log.name != "envoy.access_loggers.file" {
                        return Err(bad(
                            &name,
                            format!("access logger {} is not supported", log.name),
                        ));
                    }
                }
                ListenerKind::Http(Arc::new(HttpManager {
                    access_log: !hcm.access_log.is_empty(),
                    stat_prefix: hcm.stat_prefix,
                    route_config: rds.route_config_name.clone(),
                    use_remote_address: hcm.use_remote_address.is_some_and(|b| b.value),
                    websocket,
                    connect,
                    xfcc: false,
                }))
            }
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" => {
                let (stat_prefix, clusters) = tcp_proxy(cfg, &name)?;
                ListenerKind::Tcp {
                    stat_prefix,
                    clusters,
                    by_sni: Vec::new(),
                }
            }
            other => {
                return Err(bad(
                    &name,
                    format!("network filter {other} is not supported"),
                ));
            }
        };
        let kind = match kind {
            ListenerKind::Http(mut h) => {
                Arc::make_mut(&mut h).xfcc = xfcc;
                ListenerKind::Http(h)
            }
            other => other,
        };
        Ok(Listener {
            name: l.name,
            addr,
            kind,
            tls,
        })
    }
}

/// A tcp_proxy's stat prefix and weighted clusters.
fn tcp_proxy(cfg: &Any, name: &str) -> Result<(String, Vec<(String, u32)>), Unsupported> {
    let tcp: TcpProxy = decode(cfg, name)?;
    let clusters = match tcp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)) => vec![(cluster, 1)],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
            w.clusters.into_iter().map(|c| (c.name, c.weight)).collect()
        }
        None => return Err(bad(name, "tcp_proxy without a cluster")),
    };
    if clusters.is_empty() {
        return Err(bad(name, "tcp_proxy with no weighted clusters"));
    }
    Ok((tcp.stat_prefix, clusters))
}

/// The inbound TLS the control plane asks for: the mesh certificate by its
/// SDS names (`default`, `ROOTCA`), which Kite's proxy holds itself, with a
/// client certificate required (`None`); or, for a gateway's HTTPS server,
/// a certificate of its own from inline PEM or files (`Some`).
fn downstream_tls(
    socket: Option<&envoy_types::pb::envoy::config::core::v3::TransportSocket>,
    name: &str,
) -> Result<Option<Arc<Termination>>, Unsupported> {
    use envoy_types::pb::envoy::{
        config::core::v3::transport_socket,
        extensions::transport_sockets::tls::v3::{
            DownstreamTlsContext, common_tls_context::ValidationContextType,
        },
    };
    let Some(socket) = socket else {
        return Err(bad(name, "a TLS chain without a transport socket"));
    };
    let Some(transport_socket::ConfigType::TypedConfig(cfg)) = &socket.config_type else {
        return Err(bad(name, "transport socket without typed config"));
    };
    let ctx: DownstreamTlsContext = decode(cfg, name)?;
    let client_cert = ctx
        .require_client_certificate
        .as_ref()
        .is_some_and(|b| b.value);
    let common = ctx.common_tls_context.unwrap_or_default();
    if let [own] = common.tls_certificates.as_slice() {
        let chain =
            super::cluster::read_pem("certificate_chain", own.certificate_chain.as_ref(), name)?;
        let key = super::cluster::read_pem("private_key", own.private_key.as_ref(), name)?;
        let ca = match (&common.validation_context_type, client_cert) {
            (Some(ValidationContextType::ValidationContext(v)), true) => Some(
                super::cluster::read_pem("trusted_ca", v.trusted_ca.as_ref(), name)?,
            ),
            (_, true) => {
                return Err(bad(
                    name,
                    "client certificates required without a trusted CA",
                ));
            }
            (_, false) => None,
        };
        let alpn: Vec<Vec<u8>> = common
            .alpn_protocols
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let config = kite_identity::tls::termination_config(&chain, &key, ca.as_deref(), &alpn)
            .map_err(|e| bad(name, format!("server TLS: {e}")))?;
        use std::hash::{Hash, Hasher};
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        (&chain, &key, &ca, &alpn).hash(&mut digest);
        return Ok(Some(Arc::new(Termination {
            config: Arc::new(config),
            source: digest.finish(),
        })));
    }
    if !client_cert {
        return Err(bad(
            name,
            "inbound TLS without client certificates needs a certificate of its own",
        ));
    }
    if !common.tls_certificates.is_empty()
        || common
            .tls_certificate_sds_secret_configs
            .iter()
            .any(|s| s.name != "default")
    {
        return Err(bad(
            name,
            "only the workload's own certificate (SDS name \"default\") or one certificate of the listener's own is supported",
        ));
    }
    Ok(None)
}
