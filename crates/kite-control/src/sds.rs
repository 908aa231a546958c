//! Certificates for Envoy sidecars, served over SDS as Istio's agent would
//! provide them: `default` (the workload's key and chain) and `ROOTCA` (the
//! mesh root). The identity is the registered workload's service account
//! (the WorkloadEntry for the proxy's pod), not whatever the node claims;
//! an unregistered proxy gets the one in its node metadata.

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

use crate::{Registry, citadel::Citadel, proxy::Proxy};

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
    registry: &Registry,
    issued: &Mutex<Option<Issued>>,
    snapshot: &mut Snapshot,
) {
    let sa = registry
        .workload(&proxy.namespace, &proxy.workload)
        .map_or(proxy.service_account.as_str(), |w| {
            w.service_account.as_str()
        });
    let identity = SpiffeId::new(citadel.ca.trust_domain(), &proxy.namespace, sa);
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
