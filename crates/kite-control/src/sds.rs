//! Certificates for Envoy sidecars, served over SDS as Istio's agent would
//! provide them: `default` (the workload's key and chain) and `ROOTCA` (the
//! mesh root). The identity is the one the node's credential (`KITE_TOKEN`,
//! handed to that proxy alone) entitles it to, never what the node claims.

use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::{
    config::core::v3::{DataSource, data_source},
    extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, Secret, TlsCertificate, secret,
    },
};
use kite_identity::SpiffeId;
use kite_xds::{Snapshot, type_url};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::{citadel::Citadel, proxy::Proxy};

/// Lifetime of certificates issued for Envoy sidecars (Istio's default).
const TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct Issued {
    identity: SpiffeId,
    chain: Vec<String>,
    key: String,
    renew_at: SystemTime,
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_owned())),
        ..Default::default()
    })
}

pub(crate) fn add(
    citadel: &Citadel,
    proxy: &Proxy,
    issued: &Mutex<Option<Issued>>,
    snapshot: &mut Snapshot,
) {
    let Some(identity) = proxy.token.as_deref().and_then(|t| citadel.identity_for(t)) else {
        return;
    };
    let mut issued = issued.lock();
    let fresh = issued
        .as_ref()
        .is_some_and(|i| i.identity == identity && SystemTime::now() < i.renew_at);
    if !fresh {
        match citadel.ca.issue(Some(&identity), &[], TTL) {
            Ok((chain, key)) => {
                info!(proxy = %proxy.id, %identity, "issued a certificate for SDS");
                *issued = Some(Issued {
                    identity: identity.clone(),
                    chain,
                    key,
                    renew_at: SystemTime::now() + TTL / 2,
                });
            }
            Err(error) => {
                warn!(proxy = %proxy.id, %identity, %error, "cannot issue a certificate for SDS");
                return;
            }
        }
    }
    let Some(cert) = issued.as_ref() else { return };
    snapshot.insert(
        type_url::SECRET,
        crate::translate::SDS_CERT,
        &Secret {
            name: crate::translate::SDS_CERT.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(&cert.chain.concat()),
                private_key: inline(&cert.key),
                ..Default::default()
            })),
        },
    );
    snapshot.insert(
        type_url::SECRET,
        crate::translate::SDS_ROOT,
        &Secret {
            name: crate::translate::SDS_ROOT.to_owned(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: inline(&citadel.ca.root_pem()),
                    ..Default::default()
                },
            )),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use kite_identity::tls::{certs_from_pem, spiffe_ids};

    use super::*;
    use crate::{citadel::CaConfig, proxy::ProxyKind};

    fn citadel(dir: &std::path::Path) -> Citadel {
        Citadel::new(&CaConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: dir.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            workload_ttl: Duration::from_secs(3600),
        })
        .unwrap()
    }

    /// A proxy that claims `bookinfo-productpage`'s service account.
    fn proxy(token: Option<&str>) -> Proxy {
        Proxy {
            id: "sidecar~127.10.0.9~productpage-v1.default~default.svc.cluster.local".into(),
            kind: ProxyKind::Sidecar,
            ip: IpAddr::from([127, 10, 0, 9]),
            workload: "productpage-v1".into(),
            namespace: "default".into(),
            labels: Default::default(),
            service_account: "bookinfo-productpage".into(),
            app_ip: IpAddr::from([127, 0, 0, 1]),
            identity: false,
            kite: false,
            token: token.map(str::to_owned),
        }
    }

    fn served_identities(citadel: &Citadel, proxy: &Proxy) -> Option<Vec<String>> {
        let mut snapshot = Snapshot::default();
        add(citadel, proxy, &Mutex::default(), &mut snapshot);
        let secrets = snapshot.decode::<Secret>(type_url::SECRET);
        if secrets.is_empty() {
            return None;
        }
        let cert = secrets
            .iter()
            .find_map(|(_, s)| match &s.r#type {
                Some(secret::Type::TlsCertificate(c)) => c.certificate_chain.clone(),
                _ => None,
            })
            .expect("a workload certificate among the secrets");
        let Some(data_source::Specifier::InlineString(pem)) = cert.specifier else {
            panic!("certificate not inline");
        };
        let leaf = certs_from_pem(&pem).unwrap().remove(0);
        Some(spiffe_ids(&leaf).iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_token_not_the_node_decides_the_identity() {
        let dir = std::env::temp_dir().join(format!("kite-sds-{}", std::process::id()));
        let citadel = citadel(&dir);
        let (token, _) = citadel.mint_token("default", "bookinfo-reviews");

        assert_eq!(
            served_identities(&citadel, &proxy(Some(&token))),
            Some(vec![
                "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".to_owned()
            ]),
            "the certificate names the token's service account, not the node's claim"
        );
        assert_eq!(served_identities(&citadel, &proxy(None)), None);
        assert_eq!(
            served_identities(&citadel, &proxy(Some("not-a-minted-token"))),
            None
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
