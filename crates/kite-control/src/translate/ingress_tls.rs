//! TLS a gateway terminates for its HTTPS servers (Gateway `tls.mode`
//! SIMPLE or MUTUAL): the certificate from a Kubernetes Secret named by
//! `credentialName` in the gateway's namespace, as Istio reads it, or from
//! the files `serverCertificate` / `privateKey` / `caCertificates` name.

use envoy_types::pb::{
    envoy::{
        config::core::v3::{DataSource, TransportSocket, data_source, transport_socket},
        extensions::transport_sockets::tls::v3::{
            CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, TlsCertificate,
            common_tls_context::ValidationContextType,
        },
    },
    google::protobuf::BoolValue,
};
use kite_config::{
    Spec,
    k8s::Secret,
    networking::{ServerTlsMode, ServerTlsSettings},
};

use super::{Ctx, any};

/// The downstream TLS for one server, or why there is none (the server is
/// then left out, as Istio leaves out a server whose credential is missing).
pub(super) fn server_socket(
    cx: &Ctx<'_>,
    tls: &ServerTlsSettings,
) -> Result<TransportSocket, String> {
    let mutual = match tls.mode {
        ServerTlsMode::Simple => false,
        ServerTlsMode::Mutual => true,
        other => return Err(format!("TLS mode {other:?} is not terminated here")),
    };
    let (cert, key, ca) = if !tls.credential_name.is_empty() {
        let secret = secret(cx, &tls.credential_name).ok_or_else(|| {
            format!(
                "no Secret {}/{} for credentialName",
                cx.proxy.namespace, tls.credential_name
            )
        })?;
        let field = |keys: &[&str]| keys.iter().find_map(|k| secret.decoded(k));
        let cert = field(&["tls.crt", "cert"]).ok_or("the Secret has no tls.crt or cert")?;
        let key = field(&["tls.key", "key"]).ok_or("the Secret has no tls.key or key")?;
        // The CA for client certificates: in the Secret itself, or in
        // `<name>-cacert`, as Istio looks for it.
        let ca = field(&["ca.crt", "cacert"]).or_else(|| {
            secret_named(cx, &format!("{}-cacert", tls.credential_name))
                .and_then(|s| s.decoded("ca.crt").or_else(|| s.decoded("cacert")))
        });
        (inline(cert), inline(key), ca.map(inline))
    } else if !tls.server_certificate.is_empty() && !tls.private_key.is_empty() {
        (
            file(&tls.server_certificate),
            file(&tls.private_key),
            (!tls.ca_certificates.is_empty()).then(|| file(&tls.ca_certificates)),
        )
    } else {
        return Err("neither credentialName nor serverCertificate and privateKey".to_owned());
    };
    if mutual && ca.is_none() {
        return Err("MUTUAL needs a CA for client certificates (ca.crt)".to_owned());
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(cert),
                private_key: Some(key),
                ..Default::default()
            }],
            validation_context_type: ca.filter(|_| mutual).map(|ca| {
                ValidationContextType::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(ca),
                    ..Default::default()
                })
            }),
            alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: mutual }),
        ..Default::default()
    };
    Ok(TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
    })
}

fn secret<'a>(cx: &'a Ctx<'_>, name: &str) -> Option<&'a Secret> {
    // `kubernetes://name` is how Istio's SDS names the same Secret.
    secret_named(cx, name.strip_prefix("kubernetes://").unwrap_or(name))
}

fn secret_named<'a>(cx: &'a Ctx<'_>, name: &str) -> Option<&'a Secret> {
    cx.objects(|s| match s {
        Spec::Secret(secret) => Some(secret),
        _ => None,
    })
    .find(|(o, _)| o.meta.name == name && o.meta.namespace == cx.proxy.namespace)
    .map(|(_, s)| s)
}

fn inline(bytes: Vec<u8>) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    }
}

fn file(path: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_owned())),
        ..Default::default()
    }
}
