//! The CA as a service (Istio's Citadel): signs proxies' CSRs over gRPC on
//! 15012 (TLS), each authorised by a credential bound to one identity. In
//! local mode the credential is a per-workload token that `kite up` obtains
//! here and hands only to that workload's sidecar.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use kite_identity::{
    Ca, SpiffeId,
    ca::CaError,
    proto::{Authority, CertificateServer, IstioCertificateRequest, IstioCertificateResponse},
    tls::{ALPN_H2, Credentials},
};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct CaConfig {
    /// gRPC over TLS, Istio's 15012.
    pub addr: SocketAddr,
    /// Where the root (or Istio's plug-in `cacerts` files) lives.
    pub dir: PathBuf,
    pub trust_domain: String,
    /// Lifetime of workload certificates (Istio's default: 24 h).
    pub workload_ttl: Duration,
}

pub struct Citadel {
    pub ca: Ca,
    tokens: Mutex<HashMap<String, SpiffeId>>,
    workload_ttl: Duration,
}

impl Citadel {
    pub fn new(config: &CaConfig) -> Result<Self, CaError> {
        let ca = Ca::load_or_create(&config.dir, &config.trust_domain)?;
        Ok(Self {
            ca,
            tokens: Mutex::default(),
            workload_ttl: config.workload_ttl,
        })
    }

    /// A fresh credential that entitles its holder to `namespace`/`sa`'s
    /// identity and nothing else.
    pub fn mint_token(&self, namespace: &str, service_account: &str) -> (String, SpiffeId) {
        let id = SpiffeId::new(self.ca.trust_domain(), namespace, service_account);
        let token = format!("{:032x}", fastrand::u128(..));
        self.tokens.lock().insert(token.clone(), id.clone());
        (token, id)
    }

    /// The identity a credential entitles its holder to.
    pub fn identity_for(&self, token: &str) -> Option<SpiffeId> {
        self.tokens.lock().get(token).cloned()
    }
}

impl Authority for Citadel {
    fn create_certificate(
        &self,
        token: Option<&str>,
        request: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, tonic::Status> {
        let token =
            token.ok_or_else(|| tonic::Status::unauthenticated("a bearer token is required"))?;
        let Some(identity) = self.tokens.lock().get(token).cloned() else {
            return Err(tonic::Status::unauthenticated(
                "the token is not known to this CA",
            ));
        };
        let requested = u64::try_from(request.validity_duration).unwrap_or(0);
        let ttl = if requested == 0 {
            self.workload_ttl
        } else {
            Duration::from_secs(requested).min(self.workload_ttl)
        };
        match self.ca.sign_csr(&request.csr, &identity, ttl) {
            Ok(cert_chain) => {
                info!(%identity, ttl_secs = ttl.as_secs(), "signed a workload certificate");
                Ok(IstioCertificateResponse { cert_chain })
            }
            Err(e @ CaError::Identity { .. }) => {
                warn!(%identity, error = %e, "refused a CSR for another identity");
                Err(tonic::Status::permission_denied(e.to_string()))
            }
            Err(e) => Err(tonic::Status::invalid_argument(e.to_string())),
        }
    }
}

/// Serves the CA's gRPC service over TLS until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, citadel: Arc<Citadel>) -> Result<(), String> {
    let dns = ["istiod.istio-system.svc", "istiod", "localhost"].map(str::to_owned);
    let (chain, key) = citadel
        .ca
        .issue(None, &dns, Duration::from_secs(365 * 24 * 3600))
        .map_err(|e| format!("issuing the CA server's certificate: {e}"))?;
    let creds =
        Credentials::from_pem(&chain, &key, &citadel.ca.root_pem()).map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(kite_identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let svc = CertificateServer::new(citadel);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let svc = hyper_util::service::TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    debug!(%peer, error = %e, "CA TLS handshake failed");
                    return;
                }
            };
            let builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                debug!(%peer, error = %e, "CA connection ended with an error");
            }
        });
    }
}
