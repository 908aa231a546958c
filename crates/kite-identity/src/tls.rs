//! rustls configuration for mutual TLS between workloads: TLS 1.3
//! preferred, 1.2 the floor, the provider's strong suites only; both sides
//! present SPIFFE certificates chained to the mesh root, and the client
//! accepts a server only if its identity is one the control plane lists for
//! the service (secure naming).

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, Error, RootCertStore, SignatureScheme,
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{ParsedCertificate, WebPkiClientVerifier},
};

use crate::SpiffeId;

/// The application protocols sidecars offer each other, as Istio does.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// A workload's key and certificate chain, ready for rustls.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub roots: Arc<RootCertStore>,
}

/// ring's algorithms with TLS 1.3's AES-128-GCM-SHA256 preferred, as
/// BoringSSL (Envoy) orders them: the handshake's HKDF then runs on SHA-256,
/// which CPUs accelerate, where SHA-384 ran in software and took a tenth of
/// a sidecar's CPU per new mTLS connection. Built once.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider
                .cipher_suites
                .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            Arc::new(provider)
        })
        .clone()
}

pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))
}

pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or_else(|| TlsError::Pem("no private key found".into()))
}

pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

impl Credentials {
    pub fn from_pem(chain_pem: &[String], key_pem: &str, root_pem: &str) -> Result<Self, TlsError> {
        let mut chain = Vec::new();
        for pem in chain_pem {
            chain.extend(certs_from_pem(pem)?);
        }
        Ok(Self {
            chain,
            key: Arc::new(key_from_pem(key_pem)?),
            roots: Arc::new(roots_from_pem(root_pem)?),
        })
    }

    /// The server side: a client certificate from the mesh is required.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        resume_from_tickets(&mut config)?;
        Ok(config)
    }

    /// The client side: presents this workload's certificate and accepts
    /// only a server whose SPIFFE identity is in `allowed` (any mesh
    /// identity when empty).
    pub fn client_config(
        &self,
        allowed: Vec<SpiffeId>,
        alpn: &[&[u8]],
    ) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = Arc::new(Verifier {
            roots: Some(self.roots.clone()),
            naming: Naming::Spiffe(allowed),
            provider: provider(),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The URI SANs of a DER certificate that parse as SPIFFE ids.
pub fn spiffe_ids(cert: &CertificateDer<'_>) -> Vec<SpiffeId> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => uri.parse().ok(),
            _ => None,
        })
        .collect()
}

/// What the server's certificate must name once its chain checks out.
#[derive(Debug)]
enum Naming {
    /// Secure naming: one of these SPIFFE identities (any when empty).
    Spiffe(Vec<SpiffeId>),
    /// TLS origination: one of these names (DNS or SPIFFE), or the server
    /// name when there are none.
    Names(Vec<String>),
}

/// Chains to `roots` (no check at all without roots, as Envoy does for TLS
/// origination without a CA), then applies the naming rule.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    naming: Naming,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match &self.naming {
            Naming::Spiffe(allowed) => secure_naming(end_entity, allowed)?,
            Naming::Names(names) => origination_naming(end_entity, &parsed, server_name, names)?,
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS a gateway terminates (Gateway SIMPLE or MUTUAL): its own
/// certificate, and with `client_ca_pem` a client certificate that chains
/// to it is required.
pub fn termination_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    alpn: &[Vec<u8>],
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from_pem(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    // Served as given, without rustls' own parse of the leaf, which refuses
    // X.509 v1 certificates (what `openssl x509 -req` makes by default,
    // and what Istio's tasks use).
    let key = provider()
        .key_provider
        .load_private_key(key_from_pem(key_pem)?)?;
    let certified = Arc::new(rustls::sign::CertifiedKey::new(
        certs_from_pem(chain_pem)?,
        key,
    ));
    let mut config = builder.with_cert_resolver(Arc::new(FixedCert(certified)));
    config.alpn_protocols = alpn.to_vec();
    resume_from_tickets(&mut config)?;
    Ok(config)
}

/// Sessions resume from tickets the server encrypts and the client keeps,
/// as Envoy's do, rather than from a cache on the server: rustls' default
/// keeps the last 256 sessions, about 300 KiB per sidecar once it has
/// served a few hundred connections, and no more sessions than that
/// however many clients it has. The keys rotate every 6 hours, and anew
/// with each config (a new certificate).
fn resume_from_tickets(config: &mut rustls::ServerConfig) -> Result<(), TlsError> {
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(())
}

/// One certificate for every client.
#[derive(Debug)]
struct FixedCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// TLS origination to a server outside the mesh (DestinationRule SIMPLE or
/// MUTUAL), with Envoy's semantics: without a CA the server is not
/// verified; with one the chain must reach it and the certificate must name
/// one of `subject_alt_names`, or the SNI when there are none.
pub fn origination_config(
    ca_pem: Option<&str>,
    subject_alt_names: Vec<String>,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let verifier = Arc::new(Verifier {
        roots: ca_pem.map(roots_from_pem).transpose()?.map(Arc::new),
        naming: Naming::Names(subject_alt_names),
        provider: provider(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match client {
        Some((chain, key)) => {
            builder.with_client_auth_cert(certs_from_pem(chain)?, key_from_pem(key)?)?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The server's SPIFFE identity must be one the service lists.
fn secure_naming(end_entity: &CertificateDer<'_>, allowed: &[SpiffeId]) -> Result<(), Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    let presented = spiffe_ids(end_entity);
    if presented.iter().any(|id| allowed.contains(id)) {
        return Ok(());
    }
    let presented: Vec<String> = presented.iter().map(ToString::to_string).collect();
    let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    Err(Error::General(format!(
        "secure naming: the server presented {} but the service's identities are {}",
        if presented.is_empty() {
            "no SPIFFE identity".to_owned()
        } else {
            presented.join(", ")
        },
        allowed.join(", ")
    )))
}

/// The certificate must name one of `names`, or the server name when there
/// are none (an address is no name to check: Envoy checks none then).
fn origination_naming(
    end_entity: &CertificateDer<'_>,
    parsed: &ParsedCertificate<'_>,
    server_name: &ServerName<'_>,
    names: &[String],
) -> Result<(), Error> {
    if names.is_empty() {
        if matches!(server_name, ServerName::IpAddress(_)) {
            return Ok(());
        }
        return rustls::client::verify_server_name(parsed, server_name);
    }
    let spiffe = spiffe_ids(end_entity);
    let named = names.iter().any(|san| {
        if san.starts_with("spiffe://") {
            spiffe.iter().any(|id| id.to_string() == *san)
        } else {
            ServerName::try_from(san.as_str())
                .is_ok_and(|n| rustls::client::verify_server_name(parsed, &n).is_ok())
        }
    });
    if named {
        Ok(())
    } else {
        Err(Error::General(format!(
            "the server's certificate names none of {}",
            names.join(", ")
        )))
    }
}
