use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use rustls::{
    RootCertStore, ServerConfig,
    client::WebPkiServerVerifier,
    client::danger::ServerCertVerifier,
    pki_types::{PrivateKeyDer, ServerName, UnixTime},
    server::WebPkiClientVerifier,
};

use super::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "kite-ca-{}-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Self(std::env::temp_dir().join(unique))
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        fs::create_dir_all(&self.0).unwrap();
        let path = self.0.join(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn reviews() -> SpiffeId {
    SpiffeId::new("cluster.local", "default", "bookinfo-reviews")
}

/// Runs `openssl verify -x509_strict` and asserts that it accepts `leaf`.
fn openssl_verify(dir: &TempDir, root: &str, untrusted: &[String], leaf: &str) {
    let root = dir.write("verify-root.pem", root);
    let leaf = dir.write("verify-leaf.pem", leaf);
    let mut cmd = Command::new("/usr/bin/openssl");
    cmd.arg("verify")
        .arg("-x509_strict")
        .arg("-CAfile")
        .arg(&root);
    if !untrusted.is_empty() {
        cmd.arg("-untrusted")
            .arg(dir.write("verify-untrusted.pem", &untrusted.concat()));
    }
    let out = cmd.arg(&leaf).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl verify failed: {text}");
    assert_eq!(text.trim(), format!("{}: OK", leaf.display()));
}

fn certs_of(chain: &[String]) -> Vec<CertificateDer<'static>> {
    chain
        .iter()
        .flat_map(|pem| {
            rustls_pemfile::certs(&mut pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks with webpki, which the mesh's own TLS uses, that `chain`
/// verifies as a client certificate up to `root_pem`.
fn webpki_client_ok(root_pem: &str, chain: &[String]) {
    let mut roots = RootCertStore::empty();
    for root in certs_of(&[root_pem.to_owned()]) {
        roots.add(root).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let certs = certs_of(chain);
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .unwrap();
}

#[test]
fn ca_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Ca>();
}

#[test]
fn pem_encoder_matches_rcgen() {
    let key = new_key().unwrap();
    let cert = CertificateParams::new(vec!["a.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert_eq!(der_to_pem(cert.der()), cert.pem().replace("\r\n", "\n"));
    for len in 0..7 {
        let der: Vec<u8> = (0..len).map(|i| i * 37).collect();
        let pem = der_to_pem(&der);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body.len(), der.len().div_ceil(3) * 4, "{pem}");
    }
}

#[test]
fn creates_then_reuses_self_signed_root() {
    let dir = TempDir::new("create");
    let root_dir = dir.0.join("nested/ca");
    let ca = Ca::load_or_create(&root_dir, "cluster.local").unwrap();
    assert_eq!(ca.trust_domain(), "cluster.local");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root_dir.join(ROOT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "root key mode {mode:o}");
    }
    let on_disk = fs::read_to_string(root_dir.join(ROOT_CERT)).unwrap();
    assert_eq!(ca.root_pem(), on_disk);
    assert!(!root_dir.join("root-key.pem.tmp").exists());

    let root = cert_info(&ca.root_pem()).unwrap();
    assert_eq!(root.subject, "O=cluster.local, CN=Kite root CA");
    assert_eq!(root.issuer, root.subject);
    let ten_years = root.not_after.duration_since(root.not_before).unwrap();
    assert!(ten_years >= ROOT_VALIDITY, "{ten_years:?}");

    let again = Ca::load_or_create(&root_dir, "cluster.local").unwrap();
    assert_eq!(again.root_pem(), ca.root_pem());

    // Certificates from before the restart still verify against the root.
    let (csr_pem, _) = csr(&reviews()).unwrap();
    let chain = again.sign_csr(&csr_pem, &reviews(), DAY).unwrap();
    openssl_verify(&dir, &ca.root_pem(), &[], &chain[0]);
}

#[test]
fn signs_csr_for_its_own_identity() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let (csr_pem, key_pem) = csr(&reviews()).unwrap();
    assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

    let ttl = Duration::from_secs(3600);
    let chain = ca.sign_csr(&csr_pem, &reviews(), ttl).unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.root_pem());

    let leaf = cert_info(&chain[0]).unwrap();
    assert_eq!(
        leaf.uris,
        ["spiffe://cluster.local/ns/default/sa/bookinfo-reviews"]
    );
    assert!(leaf.dns.is_empty());
    assert_eq!(leaf.subject, "");
    assert_eq!(leaf.issuer, "O=cluster.local, CN=Kite root CA");
    assert_eq!(leaf.serial.len(), 32, "{}", leaf.serial);
    let expected = SystemTime::now() + ttl;
    let off = match leaf.not_after.duration_since(expected) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(off < Duration::from_secs(5), "not_after off by {off:?}");
    let backdated = SystemTime::now().duration_since(leaf.not_before).unwrap();
    assert!(backdated >= CLOCK_SKEW - Duration::from_secs(1));

    // The key in the CSR is the key in the certificate.
    let leaf_der = &certs_of(&chain)[0];
    let parsed = parse_cert(leaf_der).unwrap();
    let key = KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(
        parsed.public_key().subject_public_key.as_ref(),
        key.public_key_raw()
    );
    assert!(!parsed.is_ca());

    let dir = TempDir::new("verify-self-signed");
    openssl_verify(&dir, &ca.root_pem(), &[], &chain[0]);
    webpki_client_ok(&ca.root_pem(), &chain);

    // Two certificates never share a serial.
    let other = ca.sign_csr(&csr_pem, &reviews(), ttl).unwrap();
    assert_ne!(cert_info(&other[0]).unwrap().serial, leaf.serial);
}

#[test]
fn refuses_csr_for_another_identity() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let other = SpiffeId::new("cluster.local", "default", "other");
    let (csr_pem, _) = csr(&other).unwrap();
    let err = ca.sign_csr(&csr_pem, &reviews(), DAY).unwrap_err();
    match &err {
        CaError::Identity { requested, allowed } => {
            assert_eq!(requested, "spiffe://cluster.local/ns/default/sa/other");
            assert_eq!(
                allowed,
                "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            );
        }
        other => panic!("expected CaError::Identity, got {other:?}"),
    }
    assert!(err.to_string().contains("sa/other"), "{err}");
}

#[test]
fn refuses_csr_without_exactly_one_uri() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let key = new_key().unwrap();

    let mut none = CertificateParams::new(vec!["reviews.default.svc".to_owned()]).unwrap();
    none.distinguished_name = DistinguishedName::new();
    let pem = none.serialize_request(&key).unwrap().pem().unwrap();
    let err = ca.sign_csr(&pem, &reviews(), DAY).unwrap_err();
    assert!(
        matches!(err, CaError::Csr(ref m) if m.contains("found 0")),
        "{err}"
    );

    let mut two = CertificateParams::default();
    two.subject_alt_names = vec![
        uri_san(&reviews()).unwrap(),
        uri_san(&SpiffeId::new("cluster.local", "default", "other")).unwrap(),
    ];
    let pem = two.serialize_request(&key).unwrap().pem().unwrap();
    let err = ca.sign_csr(&pem, &reviews(), DAY).unwrap_err();
    assert!(
        matches!(err, CaError::Csr(ref m) if m.contains("found 2")),
        "{err}"
    );

    let err = ca.sign_csr("not a csr", &reviews(), DAY).unwrap_err();
    assert!(matches!(err, CaError::Csr(_)), "{err}");
}

#[test]
fn csr_subject_and_extra_sans_do_not_reach_the_certificate() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let key = new_key().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(uri_san(&reviews()).unwrap());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca.sign_csr(&pem, &reviews(), DAY).unwrap();
    let leaf = cert_info(&chain[0]).unwrap();
    assert_eq!(leaf.uris, [reviews().to_string()]);
    assert!(leaf.dns.is_empty());
    assert_eq!(leaf.subject, "");
    assert!(!parse_cert(&certs_of(&chain)[0]).unwrap().is_ca());
}

#[test]
fn refuses_foreign_trust_domain_and_bad_ttl() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let foreign = SpiffeId::new("example.org", "default", "bookinfo-reviews");
    let (pem, _) = csr(&foreign).unwrap();
    let err = ca.sign_csr(&pem, &foreign, DAY).unwrap_err();
    assert!(matches!(err, CaError::ForeignIdentity { .. }), "{err}");

    let (pem, _) = csr(&reviews()).unwrap();
    let err = ca.sign_csr(&pem, &reviews(), Duration::ZERO).unwrap_err();
    assert!(matches!(err, CaError::Ttl { .. }), "{err}");

    // Absurd lifetimes are clamped to the CA's own expiry.
    let chain = ca.sign_csr(&pem, &reviews(), Duration::MAX).unwrap();
    let leaf = cert_info(&chain[0]).unwrap();
    let root = cert_info(&ca.root_pem()).unwrap();
    assert_eq!(leaf.not_after, root.not_after);

    let err = Ca::ephemeral("Cluster.Local").unwrap_err();
    assert!(matches!(err, CaError::TrustDomain { .. }), "{err}");
}

/// Writes Istio's `cacerts` files for root → intermediate, returning the
/// root and intermediate PEMs.
fn write_plugin(dir: &TempDir, intermediate_key: &KeyPair) -> (String, String) {
    let root_key = new_key().unwrap();
    let mut root_params = CertificateParams::default();
    root_params.distinguished_name = DistinguishedName::new();
    root_params
        .distinguished_name
        .push(DnType::OrganizationName, "Istio");
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Root CA");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let mut int_params = CertificateParams::default();
    int_params.distinguished_name = DistinguishedName::new();
    int_params
        .distinguished_name
        .push(DnType::OrganizationName, "Istio");
    int_params
        .distinguished_name
        .push(DnType::CommonName, "Intermediate CA");
    int_params
        .distinguished_name
        .push(DnType::LocalityName, "cluster1");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int_params.use_authority_key_identifier_extension = true;
    let int_cert = int_params
        .signed_by(intermediate_key, &root_issuer)
        .unwrap();

    let (root_pem, int_pem) = (root_cert.pem(), int_cert.pem());
    dir.write(CA_CERT, &int_pem);
    dir.write(CA_KEY, &intermediate_key.serialize_pem());
    dir.write(CERT_CHAIN, &format!("{int_pem}{root_pem}"));
    dir.write(ROOT_CERT, &root_pem);
    (root_pem, int_pem)
}

fn check_plugin(dir: &TempDir, root_pem: &str, int_pem: &str) {
    let ca = Ca::load_or_create(&dir.0, "cluster.local").unwrap();
    assert_eq!(
        ca.root_pem(),
        der_to_pem(&certs_of(&[root_pem.to_owned()])[0])
    );
    assert!(!dir.0.join(ROOT_KEY).exists(), "no self-signed root made");

    let (csr_pem, _) = csr(&reviews()).unwrap();
    let chain = ca.sign_csr(&csr_pem, &reviews(), DAY).unwrap();
    assert_eq!(chain.len(), 3, "leaf → intermediate → root");
    let subjects: Vec<String> = chain
        .iter()
        .map(|pem| cert_info(pem).unwrap().subject)
        .collect();
    assert_eq!(
        subjects,
        [
            "",
            "O=Istio, CN=Intermediate CA, L=cluster1",
            "O=Istio, CN=Root CA"
        ]
    );
    let issuers: Vec<String> = chain
        .iter()
        .map(|pem| cert_info(pem).unwrap().issuer)
        .collect();
    assert_eq!(issuers[0], subjects[1]);
    assert_eq!(issuers[1], subjects[2]);
    assert_eq!(certs_of(&chain[1..2]), certs_of(&[int_pem.to_owned()]));
    assert_eq!(certs_of(&chain[2..3]), certs_of(&[root_pem.to_owned()]));

    let verify_dir = TempDir::new("verify-plugin");
    openssl_verify(&verify_dir, root_pem, &[int_pem.to_owned()], &chain[0]);
    webpki_client_ok(&ca.root_pem(), &chain);

    let (issued, _) = ca
        .issue(Some(&reviews()), &["reviews.default.svc".to_owned()], DAY)
        .unwrap();
    assert_eq!(issued[1..], chain[1..]);
    openssl_verify(&verify_dir, root_pem, &issued[1..2], &issued[0]);
}

#[test]
fn loads_plugin_ca_with_ec_intermediate() {
    let dir = TempDir::new("plugin-ec");
    let key = new_key().unwrap();
    let (root_pem, int_pem) = write_plugin(&dir, &key);
    check_plugin(&dir, &root_pem, &int_pem);
}

#[test]
fn loads_plugin_ca_with_rsa_intermediate() {
    let dir = TempDir::new("plugin-rsa");
    // ring signs with RSA keys but does not make them: openssl makes it.
    fs::create_dir_all(&dir.0).unwrap();
    let out = openssl(
        &dir.0,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
    );
    let key = KeyPair::from_pem(&String::from_utf8(out).unwrap()).unwrap();
    let (root_pem, int_pem) = write_plugin(&dir, &key);
    check_plugin(&dir, &root_pem, &int_pem);
}

#[test]
fn plugin_ca_without_cert_chain_file() {
    let dir = TempDir::new("plugin-no-chain");
    let key = new_key().unwrap();
    let (root_pem, int_pem) = write_plugin(&dir, &key);
    fs::remove_file(dir.0.join(CERT_CHAIN)).unwrap();
    check_plugin(&dir, &root_pem, &int_pem);
}

/// Runs the openssl CLI in `dir`, returning what it printed.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Builds `cacerts` with the openssl CLI the way Istio's `tools/certs`
/// Makefile does, with the intermediate key made by `keygen`.
fn openssl_plugin(dir: &TempDir, keygen: &[&str]) -> (String, String) {
    let run = |args: &[&str]| {
        openssl(&dir.0, args);
    };
    dir.write(
        "ext.cnf",
        "[v3]\nbasicConstraints=critical,CA:true,pathlen:0\n\
             keyUsage=critical,digitalSignature,keyCertSign,cRLSign\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    run(&["genrsa", "-out", "root-key.pem", "2048"]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "root-key.pem",
        "-sha256",
        "-days",
        "3650",
        "-subj",
        "/O=Istio/CN=Root CA",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        ROOT_CERT,
    ]);
    run(keygen);
    run(&[
        "req",
        "-new",
        "-key",
        CA_KEY,
        "-subj",
        "/O=Istio/CN=Intermediate CA/L=cluster1",
        "-out",
        "ca.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        ROOT_CERT,
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-days",
        "730",
        "-sha256",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "v3",
        "-out",
        CA_CERT,
    ]);
    // Only the plug-in files may remain, or the loader would see a self-signed root key.
    fs::remove_file(dir.0.join("root-key.pem")).unwrap();
    let root_pem = fs::read_to_string(dir.0.join(ROOT_CERT)).unwrap();
    let int_pem = fs::read_to_string(dir.0.join(CA_CERT)).unwrap();
    dir.write(CERT_CHAIN, &format!("{int_pem}{root_pem}"));
    (root_pem, int_pem)
}

#[test]
fn loads_openssl_made_plugin_ca_with_pkcs1_rsa_key() {
    let dir = TempDir::new("openssl-rsa");
    fs::create_dir_all(&dir.0).unwrap();
    let keygen = ["genrsa", "-traditional", "-out", CA_KEY, "2048"];
    let (root_pem, int_pem) = openssl_plugin(&dir, &keygen);
    let key = fs::read_to_string(dir.0.join(CA_KEY)).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{key}");
    check_plugin(&dir, &root_pem, &int_pem);
}

#[test]
fn loads_openssl_made_plugin_ca_with_sec1_ec_key() {
    for curve in ["prime256v1", "secp384r1"] {
        let dir = TempDir::new(&format!("openssl-ec-{curve}"));
        fs::create_dir_all(&dir.0).unwrap();
        let keygen = ["ecparam", "-name", curve, "-genkey", "-out", CA_KEY];
        let (root_pem, int_pem) = openssl_plugin(&dir, &keygen);
        let key = fs::read_to_string(dir.0.join(CA_KEY)).unwrap();
        assert!(key.starts_with("-----BEGIN EC PARAMETERS-----"), "{key}");
        check_plugin(&dir, &root_pem, &int_pem);
    }
}

#[test]
fn plugin_ca_refuses_mismatched_key() {
    let dir = TempDir::new("plugin-mismatch");
    let key = new_key().unwrap();
    write_plugin(&dir, &key);
    dir.write(CA_KEY, &new_key().unwrap().serialize_pem());
    let err = Ca::load_or_create(&dir.0, "cluster.local").unwrap_err();
    match &err {
        CaError::KeyMismatch { cert, key } => {
            assert!(cert.ends_with(CA_CERT));
            assert!(key.ends_with(CA_KEY));
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
}

#[test]
fn plugin_ca_refuses_unrelated_root() {
    let dir = TempDir::new("plugin-unrelated-root");
    let key = new_key().unwrap();
    write_plugin(&dir, &key);
    let stranger = Ca::ephemeral("cluster.local").unwrap();
    dir.write(ROOT_CERT, &stranger.root_pem());
    dir.write(
        CERT_CHAIN,
        &fs::read_to_string(dir.0.join(CA_CERT)).unwrap(),
    );
    let err = Ca::load_or_create(&dir.0, "cluster.local").unwrap_err();
    assert!(
        matches!(err, CaError::Chain { ref reason, .. } if reason.contains(ROOT_CERT)),
        "{err}"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new("bad-files");
    dir.write(ROOT_CERT, "garbage");
    let err = Ca::load_or_create(&dir.0, "cluster.local").unwrap_err();
    assert!(matches!(err, CaError::BadPem { ref path, .. } if path.ends_with(ROOT_CERT)));

    let ca = Ca::ephemeral("cluster.local").unwrap();
    dir.write(ROOT_CERT, &ca.root_pem());
    let err = Ca::load_or_create(&dir.0, "cluster.local").unwrap_err();
    assert!(
        matches!(err, CaError::Io { ref path, .. } if path.ends_with(ROOT_KEY)),
        "{err}"
    );
    assert!(err.to_string().contains(ROOT_KEY), "{err}");
}

#[test]
fn issued_key_and_chain_work_in_rustls() {
    let ca = Ca::ephemeral("cluster.local").unwrap();
    let names = ["istiod.istio-system.svc".to_owned(), "127.0.0.1".to_owned()];
    let (chain, key_pem) = ca.issue(Some(&reviews()), &names, DAY).unwrap();
    let info = cert_info(&chain[0]).unwrap();
    assert_eq!(info.uris, [reviews().to_string()]);
    assert_eq!(info.dns, ["istiod.istio-system.svc"]);

    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs_of(&chain), key)
        .unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(certs_of(&[ca.root_pem()])[0].clone()).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .unwrap();
    let certs = certs_of(&chain);
    for name in &names {
        verifier
            .verify_server_cert(
                &certs[0],
                &certs[1..],
                &ServerName::try_from(name.as_str()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap();
    }
    webpki_client_ok(&ca.root_pem(), &chain);

    let (chain, _) = ca.issue(None, &["a.example".to_owned()], DAY).unwrap();
    assert!(cert_info(&chain[0]).unwrap().uris.is_empty());
    assert!(matches!(ca.issue(None, &[], DAY), Err(CaError::NoNames)));
    assert!(matches!(
        ca.issue(None, &["bad\u{e9}".to_owned()], DAY),
        Err(CaError::Name { .. })
    ));
}
