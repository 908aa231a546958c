//! The proxy's workload identity: a private key made here (it never leaves
//! the process), a certificate from the mesh CA for it, renewed at half its
//! lifetime with jitter. Connections already open keep their session; new
//! ones use the new certificate. While the CA is unreachable the current
//! certificate stays in use and its expiry is logged.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use kite_identity::{SpiffeId, ca, proto, tls::Credentials};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The CA's address, `host:port` (gRPC over TLS).
    pub ca: String,
    /// The credential that entitles this proxy to `id`.
    pub token: String,
    /// The mesh root, PEM: the CA's server certificate chains to it.
    pub root_pem: String,
    pub id: SpiffeId,
}

/// The certificate in force.
#[derive(Debug)]
pub struct Active {
    pub id: SpiffeId,
    pub creds: Credentials,
    /// Built once per certificate: every inbound mTLS handshake uses it.
    pub server: Arc<rustls::ServerConfig>,
    pub chain_pem: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub issuer: String,
}

/// Published state: the certificate, or why there is none yet.
#[derive(Clone, Debug)]
pub enum Status {
    Pending(String),
    Ready(Arc<Active>),
}

pub type Watch = watch::Receiver<Status>;

pub fn channel() -> (watch::Sender<Status>, Watch) {
    watch::channel(Status::Pending(
        "requesting a certificate from the CA".into(),
    ))
}

/// Failed attempts to obtain or renew the certificate.
pub static RENEWAL_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Obtains and renews the certificate for as long as the proxy runs.
pub async fn run(config: IdentityConfig, tx: watch::Sender<Status>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match obtain(&config).await {
            Ok(active) => {
                let lifetime = active
                    .not_after
                    .duration_since(active.not_before)
                    .unwrap_or(Duration::from_secs(60));
                let remaining = active
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                // Renew at half the lifetime, spread by ±10 % so that proxies
                // started together do not all ask at once.
                let half = lifetime / 2;
                let jitter = half.as_secs_f64() * (fastrand::f64() * 0.2 - 0.1);
                let until_half = remaining.saturating_sub(lifetime - half).as_secs_f64();
                let wait = Duration::from_secs_f64((until_half + jitter).max(1.0));
                info!(identity = %active.id, expires_in_secs = remaining.as_secs(), renew_in_secs = wait.as_secs(), "certificate issued");
                tx.send_replace(Status::Ready(Arc::new(active)));
                backoff = Duration::from_millis(250);
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                RENEWAL_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let current = match &*tx.borrow() {
                    Status::Ready(a) => Some(a.not_after),
                    Status::Pending(_) => None,
                };
                match current {
                    Some(not_after) => {
                        let left = not_after
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        warn!(%error, expires_in_secs = left.as_secs(), "certificate renewal failed; serving with the current certificate");
                    }
                    None => {
                        warn!(%error, "no certificate yet");
                        tx.send_replace(Status::Pending(format!(
                            "no certificate from the CA at {}: {error}",
                            config.ca
                        )));
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}

async fn obtain(config: &IdentityConfig) -> Result<Active, String> {
    let (csr, key) = ca::csr(&config.id).map_err(|e| e.to_string())?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&config.root_pem))
        .domain_name("istiod.istio-system.svc");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", config.ca))
        .map_err(|e| format!("CA address {:?}: {e}", config.ca))?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let chain = proto::create_certificate(channel, &config.token, csr, Duration::ZERO)
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    let leaf = chain.first().ok_or("the CA returned no certificate")?;
    let info = ca::cert_info(leaf).map_err(|e| e.to_string())?;
    let creds = Credentials::from_pem(&chain, &key, &config.root_pem).map_err(|e| e.to_string())?;
    let server = Arc::new(
        creds
            .server_config(&[kite_identity::tls::ALPN_H2, kite_identity::tls::ALPN_HTTP11])
            .map_err(|e| e.to_string())?,
    );
    Ok(Active {
        id: config.id.clone(),
        creds,
        server,
        chain_pem: chain,
        not_before: info.not_before,
        not_after: info.not_after,
        issuer: info.issuer,
    })
}
