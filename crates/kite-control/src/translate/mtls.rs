//! Istio's mutual TLS between sidecars, in Envoy's terms: certificates by
//! SDS name (`default`, `ROOTCA`), auto mTLS through transport socket
//! matches on endpoint metadata, secure naming through subject alternative
//! name matchers, and PeerAuthentication deciding what inbound accepts.

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::cluster::TransportSocketMatch,
            core::v3::{Metadata, TransportSocket, transport_socket},
        },
        extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
            SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
            common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
            subject_alt_name_matcher::SanType,
            tls_parameters::TlsProtocol,
        },
        r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
    },
    google::protobuf::{BoolValue, Struct, Value, value::Kind},
};
use kite_config::{
    Spec,
    security::{MtlsMode, PeerAuthentication},
};

use super::{Ctx, ads, any};
use crate::registry::contains;

pub(crate) const SDS_CERT: &str = "default";
pub(crate) const SDS_ROOT: &str = "ROOTCA";
/// Endpoint metadata Envoy matches transport sockets on.
const SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The label Istio's injector puts on pods that have a sidecar.
pub(crate) const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ads()),
    }
}

fn common(alpn: &[&str], sans: &[String]) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            // Istio's list for TLS 1.2: forward secrecy and AEAD only.
            cipher_suites: [
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ]
            .map(str::to_owned)
            .to_vec(),
            ..Default::default()
        }),
        tls_certificate_sds_secret_configs: vec![sds(SDS_CERT)],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans
                        .iter()
                        .map(|san| SubjectAltNameMatcher {
                            san_type: SanType::Uri as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(MatchPattern::Exact(san.clone())),
                                ignore_case: false,
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(SDS_ROOT)),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// Auto mTLS: endpoints labelled as having a sidecar get mutual TLS with
/// the mesh certificate, checked against the service's identities; others
/// stay plaintext.
pub(crate) fn upstream_matches(
    sans: &[String],
    sni: &str,
    alpn: &[&str],
) -> Vec<TransportSocketMatch> {
    let tls = UpstreamTlsContext {
        sni: sni.to_owned(),
        common_tls_context: Some(common(alpn, sans)),
        ..Default::default()
    };
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_owned(),
            r#match: Some(Struct {
                fields: [("tlsMode".to_owned(), string("istio"))].into(),
            }),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".to_owned(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
            }),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_owned(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".to_owned(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(any(
                    &envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer {},
                ))),
            }),
        },
    ]
}

pub(crate) fn downstream_socket() -> TransportSocket {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common(&["h2", "http/1.1"], &[])),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

pub(crate) fn endpoint_metadata() -> Metadata {
    Metadata {
        filter_metadata: [(
            SOCKET_MATCH.to_owned(),
            Struct {
                fields: [("tlsMode".to_owned(), string("istio"))].into(),
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// The PeerAuthentication mode for this workload's `port`: a policy
/// selecting the workload (its port-level setting first), else the
/// namespace's, else the mesh's (root namespace); UNSET inherits; the
/// default is PERMISSIVE.
pub(crate) fn peer_mode(cx: &Ctx<'_>, port: u16) -> MtlsMode {
    workload_peer_mode(cx, &cx.proxy.namespace, &cx.labels, port)
}

/// The same for any workload: clients use it to leave out of auto mTLS the
/// endpoints whose own policy is DISABLE, as Istio does.
pub(crate) fn workload_peer_mode(
    cx: &Ctx<'_>,
    namespace: &str,
    labels: &kite_config::Labels,
    port: u16,
) -> MtlsMode {
    let policies: Vec<(&kite_config::Object, &PeerAuthentication)> = cx
        .objects(|s| match s {
            Spec::PeerAuthentication(pa) => Some(pa),
            _ => None,
        })
        .collect();
    let ns = namespace;
    let workload = policies.iter().find(|(o, pa)| {
        o.meta.namespace == ns
            && pa
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && contains(labels, &s.match_labels))
    });
    let namespace = policies
        .iter()
        .find(|(o, pa)| o.meta.namespace == ns && pa.selector.is_none());
    let mesh = policies.iter().find(|(o, pa)| {
        o.meta.namespace == kite_config::analyze::ROOT_NAMESPACE && pa.selector.is_none()
    });
    let mut candidates = Vec::new();
    if let Some((_, pa)) = workload {
        candidates.extend(pa.port_level_mtls.get(&u32::from(port)).map(|m| m.mode));
        candidates.extend(pa.mtls.as_ref().map(|m| m.mode));
    }
    for (_, pa) in namespace.into_iter().chain(mesh) {
        candidates.extend(pa.mtls.as_ref().map(|m| m.mode));
    }
    candidates
        .into_iter()
        .find(|m| *m != MtlsMode::Unset)
        .unwrap_or(MtlsMode::Permissive)
}
