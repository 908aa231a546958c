//! The mesh certificate authority (Istio's Citadel).
//!
//! It signs short-lived workload certificates whose only name is the
//! workload's SPIFFE id, from CSRs the proxies create, so private keys never
//! leave the proxy. The signing key is either an operator's plug-in CA
//! (Istio's `cacerts` files) or a self-signed root that Kite creates once and
//! keeps on disk, so that restarting the control plane does not invalidate
//! every certificate in the mesh.

use std::{
    fmt, fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::{
    certificate::X509Certificate,
    certification_request::X509CertificationRequest,
    extensions::{GeneralName, ParsedExtension},
    prelude::FromDer,
    time::ASN1Time,
};

use crate::spiffe::{SpiffeId, check_trust_domain};

// Istio's plug-in CA files (the `cacerts` secret).
const CA_CERT: &str = "ca-cert.pem";
const CA_KEY: &str = "ca-key.pem";
const ROOT_CERT: &str = "root-cert.pem";
const CERT_CHAIN: &str = "cert-chain.pem";
// The self-signed root's key, next to its `root-cert.pem`.
const ROOT_KEY: &str = "root-key.pem";

const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
// Backdating tolerates peers whose clocks run a little behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Why the CA could not load, or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    BadPem { path: PathBuf, reason: String },
    #[error("CA key {} does not belong to CA certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA certificates in {}: {reason}", dir.display())]
    Chain { dir: PathBuf, reason: String },
    #[error("invalid trust domain {trust_domain:?}: {reason}")]
    TrustDomain {
        trust_domain: String,
        reason: String,
    },
    #[error("invalid CSR: {0}")]
    Csr(String),
    #[error("CSR asks for identity {requested:?}, but the caller may only obtain {allowed:?}")]
    Identity { requested: String, allowed: String },
    #[error("identity {identity} is outside this CA's trust domain {trust_domain:?}")]
    ForeignIdentity {
        identity: String,
        trust_domain: String,
    },
    #[error("invalid subject alternative name {name:?}: {reason}")]
    Name { name: String, reason: String },
    #[error("a certificate needs a SPIFFE identity or at least one DNS name")]
    NoNames,
    #[error("certificate lifetime {requested:?}: {reason}")]
    Ttl { requested: Duration, reason: String },
    #[error("signing: {0}")]
    Sign(String),
    #[error("invalid certificate: {0}")]
    Cert(String),
}

/// The mesh CA: a signing key and certificate, the chain from that
/// certificate up to the root, and the root bundle workloads trust.
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    // PEMs appended after every leaf: the signing certificate, any
    // intermediates above it, then the root.
    chain: Vec<String>,
    root_pem: String,
    // A leaf must not outlive the chain vouching for it (Istio clamps too).
    expires: SystemTime,
}

impl fmt::Debug for Ca {
    // Hand-written so that no key material can ever reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads Istio's plug-in CA files from `dir` when `ca-cert.pem` exists there
    /// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem — the chain presented
    /// is then workload → ca-cert (intermediate) → … → root), else uses a self-signed
    /// root kept as `dir/root-cert.pem` + `dir/root-key.pem`, created on first start
    /// (key file mode 0600, directory created if missing) and reused afterwards.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        validate_trust_domain(trust_domain)?;
        if exists(&dir.join(CA_CERT))? {
            return Self::load_plugin(dir, trust_domain);
        }
        let cert_path = dir.join(ROOT_CERT);
        let key_path = dir.join(ROOT_KEY);
        if exists(&cert_path)? {
            let certs = read_certs(&cert_path)?;
            let key = read_key(&key_path)?;
            let ca = Self::assemble(trust_domain, dir, key, &key_path, &cert_path, certs, None)?;
            tracing::info!(dir = %dir.display(), trust_domain, "loaded self-signed root CA");
            return Ok(ca);
        }

        let (cert, key) = self_signed_root(trust_domain)?;
        create_private_dir(dir)?;
        // Key first: a crash in between leaves no root-cert.pem, so the next
        // start simply creates a fresh pair instead of finding a cert without
        // its key.
        write_atomically(&key_path, &key.serialize_pem(), true)?;
        write_atomically(&cert_path, &der_to_pem(&cert), false)?;
        let ca = Self::assemble(
            trust_domain,
            dir,
            key,
            &key_path,
            &cert_path,
            vec![cert],
            None,
        )?;
        tracing::info!(dir = %dir.display(), trust_domain, "created self-signed root CA");
        Ok(ca)
    }

    /// Self-signed root in memory only (tests).
    pub fn ephemeral(trust_domain: &str) -> Result<Ca, CaError> {
        validate_trust_domain(trust_domain)?;
        let (cert, key) = self_signed_root(trust_domain)?;
        let here = Path::new("<memory>");
        Self::assemble(trust_domain, here, key, here, here, vec![cert], None)
    }

    fn load_plugin(dir: &Path, trust_domain: &str) -> Result<Ca, CaError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let mut chain = read_certs(&cert_path)?;
        let key = read_key(&key_path)?;
        let roots = read_certs(&dir.join(ROOT_CERT))?;
        // cert-chain.pem normally repeats ca-cert.pem and the root; what it
        // adds are the intermediates between them.
        let chain_path = dir.join(CERT_CHAIN);
        if exists(&chain_path)? {
            for cert in read_certs(&chain_path)? {
                if !chain.contains(&cert) {
                    chain.push(cert);
                }
            }
        }
        let ca = Self::assemble(
            trust_domain,
            dir,
            key,
            &key_path,
            &cert_path,
            chain,
            Some(roots),
        )?;
        tracing::info!(
            dir = %dir.display(),
            trust_domain,
            chain_len = ca.chain.len(),
            "loaded plug-in CA"
        );
        Ok(ca)
    }

    /// Checks that `key` belongs to `chain[0]`, that each certificate is
    /// signed by the next and the last by a root, and builds the CA. `roots`
    /// of `None` means `chain` is a single self-signed root.
    fn assemble(
        trust_domain: &str,
        dir: &Path,
        key: KeyPair,
        key_path: &Path,
        cert_path: &Path,
        mut chain: Vec<CertificateDer<'static>>,
        roots: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<Ca, CaError> {
        let chain_err = |reason: String| CaError::Chain {
            dir: dir.to_path_buf(),
            reason,
        };
        if chain.is_empty() {
            return Err(bad_pem(cert_path, "no CERTIFICATE block"));
        }
        let roots = roots.unwrap_or_else(|| chain.clone());

        // Everything past the first root is the root bundle's business.
        if let Some(at) = chain.iter().position(|c| roots.contains(c)) {
            chain.truncate(at + 1);
        }
        let signing = parse_cert(&chain[0]).map_err(|e| bad_pem(cert_path, e))?;
        if !signing.is_ca() {
            return Err(bad_pem(
                cert_path,
                "not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        if signing.public_key().subject_public_key.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }

        let mut expires = asn1_to_system(signing.validity().not_after);
        for pair in chain.windows(2) {
            let child = parse_cert(&pair[0]).map_err(&chain_err)?;
            let parent = parse_cert(&pair[1]).map_err(&chain_err)?;
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|e| {
                    chain_err(format!(
                        "{:?} is not signed by the next certificate {:?}: {e}",
                        child.subject().to_string(),
                        parent.subject().to_string()
                    ))
                })?;
            expires = expires.min(asn1_to_system(parent.validity().not_after));
        }

        let last = chain.last().unwrap_or(&chain[0]).clone();
        if !roots.contains(&last) {
            let last_cert = parse_cert(&last).map_err(&chain_err)?;
            let mut issuer_root = None;
            for root in &roots {
                let parsed = parse_cert(root).map_err(&chain_err)?;
                if last_cert
                    .verify_signature(Some(parsed.public_key()))
                    .is_ok()
                {
                    expires = expires.min(asn1_to_system(parsed.validity().not_after));
                    issuer_root = Some(root.clone());
                    break;
                }
            }
            let Some(root) = issuer_root else {
                return Err(chain_err(format!(
                    "{:?} is not signed by any certificate in {ROOT_CERT}",
                    last_cert.subject().to_string()
                )));
            };
            chain.push(root);
        }

        if expires <= SystemTime::now() {
            return Err(chain_err(format!(
                "the CA chain expired at {}",
                fmt_time(expires)
            )));
        }

        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| bad_pem(cert_path, format!("unusable as an issuer: {e}")))?;
        Ok(Ca {
            trust_domain: trust_domain.to_owned(),
            issuer,
            chain: chain.iter().map(|c| der_to_pem(c)).collect(),
            root_pem: roots.iter().map(|c| der_to_pem(c)).collect(),
            expires,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// PEM of the root certificate(s) workloads must trust.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// Signs a PEM CSR. The CSR must carry exactly one URI SAN and it must equal `identity`
    /// (a proxy cannot obtain another service account's identity); other SANs/subjects are
    /// ignored (the issued certificate carries only the SPIFFE URI SAN, as Istio's do).
    /// Returns the chain as PEM strings: [leaf, intermediates…, root].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        self.check_identity(identity)?;
        let der = rustls_pemfile::csr(&mut csr_pem.as_bytes())
            .map_err(|e| CaError::Csr(format!("unreadable PEM: {e}")))?
            .ok_or_else(|| CaError::Csr("no CERTIFICATE REQUEST block in the PEM".into()))?;
        let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CaError::Csr(e.to_string()))?;
        // Proves the requester holds the private key it wants certified.
        csr.verify_signature()
            .map_err(|e| CaError::Csr(format!("signature does not verify: {e}")))?;

        let uris: Vec<&str> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(&san.general_names),
                _ => None,
            })
            .flatten()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        let [requested] = uris[..] else {
            return Err(CaError::Csr(format!(
                "must carry exactly one URI SAN, found {}: {uris:?}",
                uris.len()
            )));
        };
        let allowed = identity.to_string();
        if requested != allowed {
            return Err(CaError::Identity {
                requested: requested.to_owned(),
                allowed,
            });
        }

        let public_key =
            rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::Csr(format!("unsupported public key: {e}")))?;
        self.sign_leaf(&public_key, vec![uri_san(identity)?], ttl)
    }

    /// Issues a fresh key and certificate (for servers the control plane runs itself, and for
    /// Envoy sidecars served over SDS): URI SAN `identity` if given, DNS SANs `dns`.
    /// Returns (chain PEM strings [leaf, …, root], private key PEM).
    ///
    /// Entries of `dns` that parse as IP addresses become IP SANs, so that
    /// servers reached by address (loopback in local mode) verify too.
    pub fn issue(
        &self,
        identity: Option<&SpiffeId>,
        dns: &[String],
        ttl: Duration,
    ) -> Result<(Vec<String>, String), CaError> {
        let mut sans = Vec::with_capacity(dns.len() + 1);
        if let Some(identity) = identity {
            self.check_identity(identity)?;
            sans.push(uri_san(identity)?);
        }
        for name in dns {
            sans.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(ia5(name)?),
            });
        }
        if sans.is_empty() {
            return Err(CaError::NoNames);
        }
        let key = new_key()?;
        let chain = self.sign_leaf(&key, sans, ttl)?;
        Ok((chain, key.serialize_pem()))
    }

    fn check_identity(&self, identity: &SpiffeId) -> Result<(), CaError> {
        if identity.trust_domain != self.trust_domain {
            return Err(CaError::ForeignIdentity {
                identity: identity.to_string(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        Ok(())
    }

    fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        sans: Vec<SanType>,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        if ttl.is_zero() {
            return Err(CaError::Ttl {
                requested: ttl,
                reason: "must be positive".into(),
            });
        }
        let now = SystemTime::now();
        let requested_end = now.checked_add(ttl).unwrap_or(self.expires);
        let not_after = requested_end.min(self.expires);
        if not_after <= now {
            return Err(CaError::Ttl {
                requested: ttl,
                reason: format!("the CA chain expired at {}", fmt_time(self.expires)),
            });
        }
        if not_after < requested_end {
            // Loud on purpose: shrinking lifetimes mean the CA needs renewing.
            tracing::warn!(
                ?ttl,
                ca_expires = %fmt_time(self.expires),
                "certificate lifetime cut short by the CA chain's expiry"
            );
        }

        let mut params = CertificateParams::default();
        params.not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        // Like Istio's: an empty subject, so the SAN alone names the workload.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // Lets verifiers pick the right issuer while roots rotate.
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;

        let mut chain = Vec::with_capacity(self.chain.len() + 1);
        chain.push(der_to_pem(leaf.der()));
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }
}

/// What a certificate says about itself, for proxies deciding when to rotate
/// and for `kite proxy-config secret`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub issuer: String,
    pub subject: String,
    /// Lowercase hex, without separators.
    pub serial: String,
}

/// Parses a PEM certificate (the first one, when given a chain).
pub fn cert_info(pem: &str) -> Result<CertInfo, CaError> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| CaError::Cert("no CERTIFICATE block in the PEM".into()))?
        .map_err(|e| CaError::Cert(format!("unreadable PEM: {e}")))?;
    let cert = parse_cert(&der).map_err(CaError::Cert)?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::Cert(format!("subjectAltName: {e}")))?;
    for name in san.iter().flat_map(|san| &san.value.general_names) {
        match name {
            GeneralName::URI(uri) => uris.push((*uri).to_owned()),
            GeneralName::DNSName(name) => dns.push((*name).to_owned()),
            _ => {}
        }
    }
    Ok(CertInfo {
        uris,
        dns,
        not_before: asn1_to_system(cert.validity().not_before),
        not_after: asn1_to_system(cert.validity().not_after),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        serial: cert.serial.to_str_radix(16),
    })
}

/// A fresh ECDSA P-256 key and a PEM CSR asking for `identity` (what a proxy sends the CA;
/// the key never leaves the caller). Returns (csr_pem, key_pem).
pub fn csr(identity: &SpiffeId) -> Result<(String, String), CaError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(identity)?];
    let request = params
        .serialize_request(&key)
        .map_err(|e| CaError::Sign(format!("building the CSR: {e}")))?;
    let pem = request
        .pem()
        .map_err(|e| CaError::Sign(format!("encoding the CSR: {e}")))?;
    Ok((pem, key.serialize_pem()))
}

fn validate_trust_domain(trust_domain: &str) -> Result<(), CaError> {
    check_trust_domain(trust_domain).map_err(|reason| CaError::TrustDomain {
        trust_domain: trust_domain.to_owned(),
        reason,
    })
}

fn new_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Sign(format!("generating a key: {e}")))
}

fn self_signed_root(trust_domain: &str) -> Result<(CertificateDer<'static>, KeyPair), CaError> {
    let key = new_key()?;
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now).into();
    params.not_after = now.checked_add(ROOT_VALIDITY).unwrap_or(now).into();
    params.serial_number = Some(random_serial()?);
    let mut name = DistinguishedName::new();
    // Istio's self-signed root carries the trust domain as its organization.
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, "Kite root CA");
    params.distinguished_name = name;
    // One level of intermediates lets an operator later mint per-cluster
    // plug-in CAs from this root (Istio's multicluster recipe), no deeper.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Sign(format!("self-signing the root: {e}")))?;
    Ok((cert.der().clone(), key))
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Sign("the system random source failed".into()))?;
    // Positive and with a non-zero top byte, so the DER integer keeps a
    // fixed length of 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn uri_san(identity: &SpiffeId) -> Result<SanType, CaError> {
    Ok(SanType::URI(ia5(&identity.to_string())?))
}

fn ia5(name: &str) -> Result<rcgen::string::Ia5String, CaError> {
    if name.is_empty() {
        return Err(CaError::Name {
            name: String::new(),
            reason: "is empty".into(),
        });
    }
    rcgen::string::Ia5String::try_from(name).map_err(|e| CaError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_cert<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| format!("unparsable certificate: {e}"))
}

fn asn1_to_system(time: ASN1Time) -> SystemTime {
    let secs = time.timestamp();
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

fn fmt_time(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => format!("unix time {}", since.as_secs()),
        Err(_) => "before 1970".into(),
    }
}

fn bad_pem(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::BadPem {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(io_err(path))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let text = fs::read(path).map_err(io_err(path))?;
    let certs = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad_pem(path, "no CERTIFICATE block"));
    }
    for cert in &certs {
        parse_cert(cert).map_err(|e| bad_pem(path, e))?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let text = fs::read(path).map_err(io_err(path))?;
    // rustls-pemfile skips other blocks, e.g. the "EC PARAMETERS" block that
    // `openssl ecparam -genkey` writes before the key.
    let key = rustls_pemfile::private_key(&mut text.as_slice())
        .map_err(|e| bad_pem(path, format!("unreadable PEM: {e}")))?
        .ok_or_else(|| bad_pem(path, "no PKCS#8, PKCS#1 or SEC1 private key block"))?;
    let unsupported = |e: rcgen::Error| bad_pem(path, format!("unsupported private key: {e}"));
    match &key {
        PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(&key).map_err(unsupported),
        // ring reads PKCS#8 only. `openssl genrsa` (PKCS#1) and `openssl
        // ecparam -genkey` (SEC1), as Istio's cacerts instructions run them,
        // write the same key without that wrapping.
        PrivateKeyDer::Pkcs1(rsa) => {
            KeyPair::try_from(&pkcs8(RSA_ENCRYPTION, rsa.secret_pkcs1_der())).map_err(unsupported)
        }
        PrivateKeyDer::Sec1(ec) => {
            // The curve goes unread: ring refuses a key whose size or
            // named curve differs from the identifier's, so P-256 is
            // tried, then P-384.
            let p256 = KeyPair::try_from(&pkcs8(EC_P256, ec.secret_sec1_der()));
            p256.or_else(|_| KeyPair::try_from(&pkcs8(EC_P384, ec.secret_sec1_der())))
                .map_err(unsupported)
        }
        _ => Err(bad_pem(path, "unsupported private key format")),
    }
}

/// The DER algorithm identifiers' contents: rsaEncryption with NULL
/// parameters; id-ecPublicKey with the named curve P-256 or P-384.
const RSA_ENCRYPTION: &[u8] = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01\x05\x00";
const EC_P256: &[u8] =
    b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07";
const EC_P384: &[u8] = b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x05\x2b\x81\x04\x00\x22";

/// A PKCS#8 (RFC 5208) PrivateKeyInfo around a PKCS#1 or SEC1 key.
fn pkcs8(algorithm: &[u8], key: &[u8]) -> PrivateKeyDer<'static> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len().to_be_bytes();
        let significant = &len[len.iter().position(|&b| b != 0).unwrap_or(len.len() - 1)..];
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.push(0x80 | significant.len() as u8);
            out.extend_from_slice(significant);
        }
        out.extend_from_slice(body);
        out
    }
    let version = der(0x02, &[0]);
    let info = [version, der(0x30, algorithm), der(0x04, key)].concat();
    PrivateKeyDer::Pkcs8(der(0x30, &info).into())
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    // The directory holds the root key; keep others from even listing it.
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io_err(dir))
}

/// Writes via a temporary file and a rename, so a crash never leaves a
/// truncated certificate or key behind.
fn write_atomically(path: &Path, contents: &str, private: bool) -> Result<(), CaError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    // A leftover from a crash may have looser permissions, and the mode
    // below applies only to files this call creates.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        // Set at creation, so the key is never readable by others, not even briefly.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    io::Write::write_all(&mut file, contents.as_bytes()).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

// Hand-rolled because no PEM encoder is a direct dependency; rcgen's output
// uses the same layout (64-column lines, LF).
fn der_to_pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(der.len() * 4 / 3 + der.len() / 48 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let mut column = 0;
    for chunk in der.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |acc, (i, byte)| {
            acc | u32::from(*byte) << (16 - 8 * i)
        });
        for i in 0..4 {
            let c = if i <= chunk.len() {
                char::from(ALPHABET[((bits >> (18 - 6 * i)) & 0x3f) as usize])
            } else {
                '='
            };
            out.push(c);
            column += 1;
            if column == 64 {
                out.push('\n');
                column = 0;
            }
        }
    }
    if column != 0 {
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests;
