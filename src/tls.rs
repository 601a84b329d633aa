//! Certificates: parsing PEM pairs, the SNI store built per config, the default certificate, and
//! the rustls server configuration of the https entry.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::router::{normalise_host, MAX_HOST_LEN};
use crate::state::ObjectKey;

/// Name of the certificate generated when no `--tls-cert` is given (Traefik used a random
/// `*.traefik.default` name; a fixed one is easier to recognise in a browser warning).
pub const GENERATED_CERT_NAME: &str = "portier.default.invalid";

pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What portier tells about a certificate (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// A parsed certificate chain and its private key, ready for rustls.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    /// Hash of the PEM input: equal configs keep equal digests without comparing keys.
    digest: u64,
}

impl PartialEq for LoadedCert {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.info == other.info
    }
}

/// Parses a PEM chain (leaf first) and a PKCS#1, PKCS#8 or SEC1 private key.
pub fn load_pem_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<LoadedCert, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM is invalid: {e}"))?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block in the certificate PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("private key PEM is invalid: {e}"))?;
    let info = describe(&chain[0])?;
    let signing_key =
        crypto_provider().key_provider.load_private_key(key).map_err(|e| format!("private key is not usable: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| format!("private key does not match the certificate: {e}"))?;
    let mut hasher = DefaultHasher::new();
    cert_pem.hash(&mut hasher);
    key_pem.hash(&mut hasher);
    Ok(LoadedCert { key: Arc::new(certified), info, digest: hasher.finish() })
}

fn describe(leaf: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("certificate is not valid X.509: {e}"))?;
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                dns_names.push(n.to_ascii_lowercase());
            }
        }
    }
    if dns_names.is_empty() {
        // Old certificates carry their name only in the subject CN.
        if let Some(cn) = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
            dns_names.push(cn.to_ascii_lowercase());
        }
    }
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// A self-signed certificate for when the user gives none (Traefik did the same).
pub fn generate_default_cert() -> Result<LoadedCert, String> {
    let generated = rcgen::generate_simple_self_signed(vec![GENERATED_CERT_NAME.to_string()])
        .map_err(|e| format!("cannot generate the default certificate: {e}"))?;
    load_pem_pair(generated.cert.pem().as_bytes(), generated.signing_key.serialize_pem().as_bytes())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCert {
    pub secret: ObjectKey,
    /// The names this certificate is chosen for: its own DNS names and the Ingress `tls.hosts`.
    pub names: Vec<String>,
    #[serde(flatten)]
    pub info: CertInfo,
    #[serde(skip)]
    pub loaded: LoadedCert,
}

/// SNI → certificate. Exact names beat wildcards; the first certificate added for a name wins.
#[derive(Debug, Default, PartialEq)]
pub struct CertStore {
    certs: Vec<StoredCert>,
    exact: HashMap<Box<str>, usize>,
    wildcard: HashMap<Box<str>, usize>,
}

impl CertStore {
    pub fn add(&mut self, cert: StoredCert) {
        let index = self.certs.len();
        for name in &cert.names {
            match name.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.into()).or_insert(index),
                None => self.exact.entry(name.as_str().into()).or_insert(index),
            };
        }
        self.certs.push(cert);
    }

    pub fn contains_secret(&self, secret: &ObjectKey) -> Option<usize> {
        self.certs.iter().position(|c| &c.secret == secret)
    }

    /// Adds names to a certificate already in the store (a second Ingress naming the same Secret).
    pub fn add_names(&mut self, index: usize, names: &[String]) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(suffix) => self.wildcard.entry(suffix.into()).or_insert(index),
                None => self.exact.entry(name.as_str().into()).or_insert(index),
            };
            if let Some(cert) = self.certs.get_mut(index) {
                if !cert.names.contains(name) {
                    cert.names.push(name.clone());
                }
            }
        }
    }

    pub fn certificates(&self) -> &[StoredCert] {
        &self.certs
    }

    pub fn find(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let name = normalise_host(server_name, &mut buf)?;
        let index = self.exact.get(name).or_else(|| {
            let parent = name.split_once('.')?.1;
            self.wildcard.get(parent)
        })?;
        self.certs.get(*index).map(|c| &c.loaded.key)
    }
}

/// The https entry's TLS: TLS 1.2 and 1.3, ALPN h2 and http/1.1, session resumption by tickets
/// and by id, and the cipher suite chosen per client as Go's crypto/tls (so Traefik) chooses it:
/// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 for a client that lists AES-GCM before ChaCha20,
/// on a machine with AES hardware; ChaCha20-Poly1305, AES-128-GCM, AES-256-GCM otherwise. (Where
/// ring lacks fast SHA-512, e.g. on AMD, AES-128's SHA-256 handshake is several times cheaper
/// than AES-256's SHA-384.) Both orders share certificates, ticket keys and the session cache: a
/// session resumes under either, as long as the suite it was made with is chosen again.
#[derive(Clone)]
pub struct TlsEntry {
    aes_first: Arc<rustls::ServerConfig>,
    chacha_first: Arc<rustls::ServerConfig>,
    aes_hardware: bool,
}

impl TlsEntry {
    pub fn new(resolver: Arc<dyn ResolvesServerCert>, tls13_only: bool) -> Result<Self, String> {
        let mut aes_first = server_config(resolver.clone(), tls13_only, CipherPreference::AesGcm)?;
        let mut chacha_first = server_config(resolver, tls13_only, CipherPreference::ChaCha20)?;
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
        aes_first.ticketer = ticketer.clone();
        chacha_first.ticketer = ticketer;
        chacha_first.session_storage = aes_first.session_storage.clone();
        Ok(TlsEntry {
            aes_first: Arc::new(aes_first),
            chacha_first: Arc::new(chacha_first),
            aes_hardware: has_aes_hardware(),
        })
    }

    /// The configuration for a client that offered these suites, in its order of preference.
    fn config_for(&self, offered: &[rustls::CipherSuite]) -> &Arc<rustls::ServerConfig> {
        if self.aes_hardware && client_prefers_aes_gcm(offered) {
            &self.aes_first
        } else {
            &self.chacha_first
        }
    }

    /// Reads the ClientHello, picks the configuration for it and completes the handshake.
    pub async fn accept<IO>(&self, stream: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
        let config = self.config_for(start.client_hello().cipher_suites()).clone();
        start.into_stream(config).await
    }
}

#[derive(Clone, Copy)]
enum CipherPreference {
    AesGcm,
    ChaCha20,
}

/// portier's crypto provider with its suites in the order of `preference`.
fn ordered_provider(preference: CipherPreference) -> CryptoProvider {
    let mut provider = Arc::unwrap_or_clone(crypto_provider());
    provider.cipher_suites.sort_by_key(|suite| cipher_rank(suite.suite(), preference));
    provider
}

/// Rank of a suite's bulk cipher under a preference (lower first); versions sort apart anyway,
/// since rustls only considers the suites of the version it negotiates.
fn cipher_rank(suite: rustls::CipherSuite, preference: CipherPreference) -> u8 {
    use rustls::CipherSuite as S;
    let bulk = match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    match preference {
        CipherPreference::AesGcm => bulk,
        CipherPreference::ChaCha20 => (bulk + 1) % 3,
    }
}

/// Go's rule (`aesgcmPreferred`): the first suite of the client's list that Go implements tells
/// whether the client has AES hardware; GREASE and suites unknown to Go are skipped.
fn client_prefers_aes_gcm(offered: &[rustls::CipherSuite]) -> bool {
    use rustls::CipherSuite as S;
    offered
        .iter()
        .find_map(|suite| match *suite {
            S::TLS13_AES_128_GCM_SHA256
            | S::TLS13_AES_256_GCM_SHA384
            | S::TLS_RSA_WITH_AES_128_GCM_SHA256
            | S::TLS_RSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(true),
            S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_RSA_WITH_AES_128_CBC_SHA
            | S::TLS_RSA_WITH_AES_256_CBC_SHA
            | S::TLS_RSA_WITH_AES_128_CBC_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
            | S::TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
            | S::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
            | S::TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
            | S::TLS_RSA_WITH_3DES_EDE_CBC_SHA
            | S::TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA
            | S::TLS_RSA_WITH_RC4_128_SHA
            | S::TLS_ECDHE_ECDSA_WITH_RC4_128_SHA
            | S::TLS_ECDHE_RSA_WITH_RC4_128_SHA => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// Whether this machine encrypts AES-GCM in hardware (ring uses it then).
pub fn has_aes_hardware() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    tls13_only: bool,
    preference: CipherPreference,
) -> Result<rustls::ServerConfig, String> {
    let versions: &[&'static rustls::SupportedProtocolVersion] =
        if tls13_only { &[&rustls::version::TLS13] } else { &[&rustls::version::TLS13, &rustls::version::TLS12] };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(ordered_provider(preference)))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn stored(secret: &str, names: &[&str]) -> StoredCert {
        let (c, k) = pair(names);
        let loaded = load_pem_pair(c.as_bytes(), k.as_bytes()).unwrap();
        StoredCert {
            secret: ObjectKey::new("ns", secret),
            names: loaded.info.dns_names.clone(),
            info: loaded.info.clone(),
            loaded,
        }
    }

    #[test]
    fn the_first_known_suite_of_the_client_tells_its_aes_hardware() {
        use rustls::CipherSuite as S;
        let grease = S::Unknown(0x0a0a);
        assert!(client_prefers_aes_gcm(&[grease, S::TLS13_AES_256_GCM_SHA384, S::TLS13_CHACHA20_POLY1305_SHA256]));
        assert!(!client_prefers_aes_gcm(&[grease, S::TLS13_CHACHA20_POLY1305_SHA256, S::TLS13_AES_128_GCM_SHA256]));
        assert!(!client_prefers_aes_gcm(&[S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]));
        assert!(!client_prefers_aes_gcm(&[grease]), "nothing we know: no AES preference");
        assert!(client_prefers_aes_gcm(&[S::TLS_RSA_WITH_AES_128_GCM_SHA256, S::TLS13_CHACHA20_POLY1305_SHA256]));
        assert!(
            !client_prefers_aes_gcm(&[S::TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, S::TLS13_AES_128_GCM_SHA256]),
            "a CBC suite first, as Go reads it: no AES-GCM preference"
        );
    }

    #[test]
    fn each_preference_orders_the_suites_of_every_version() {
        use rustls::CipherSuite as S;
        let order = |preference, version: u16| -> Vec<S> {
            let provider = ordered_provider(preference);
            let suites = provider.cipher_suites.iter().filter(|s| u16::from(s.version().version) == version);
            suites.map(|s| s.suite()).collect()
        };
        let (tls13, tls12) = (u16::from(rustls::ProtocolVersion::TLSv1_3), u16::from(rustls::ProtocolVersion::TLSv1_2));
        use CipherPreference::{AesGcm, ChaCha20};
        assert_eq!(
            order(AesGcm, tls13),
            [S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_256_GCM_SHA384, S::TLS13_CHACHA20_POLY1305_SHA256]
        );
        assert_eq!(
            order(ChaCha20, tls13),
            [S::TLS13_CHACHA20_POLY1305_SHA256, S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_256_GCM_SHA384]
        );
        assert_eq!(
            order(AesGcm, tls12),
            [
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        assert_eq!(
            order(ChaCha20, tls12)[..2],
            [S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256]
        );
    }

    #[test]
    fn loads_pem_pair_and_reads_names() {
        let (c, k) = pair(&["a.example.com", "*.b.example.com"]);
        let loaded = load_pem_pair(c.as_bytes(), k.as_bytes()).unwrap();
        assert_eq!(loaded.info.dns_names, vec!["a.example.com", "*.b.example.com"]);
        assert!(loaded.info.not_after > 1_700_000_000);
    }

    #[test]
    fn rejects_mismatched_or_missing_parts() {
        let (c, _) = pair(&["a.com"]);
        let (_, other_key) = pair(&["a.com"]);
        let err = load_pem_pair(c.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = load_pem_pair(b"nothing", other_key.as_bytes()).unwrap_err();
        assert!(err.contains("no CERTIFICATE"), "{err}");
        let err = load_pem_pair(c.as_bytes(), b"nothing").unwrap_err();
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn store_prefers_exact_over_wildcard_and_first_over_later() {
        let mut store = CertStore::default();
        store.add(stored("wild", &["*.a.com"]));
        store.add(stored("exact", &["x.a.com"]));
        store.add(stored("late", &["x.a.com"]));
        let want = |i: usize| Some(&store.certificates()[i].loaded.key);
        assert_eq!(store.find("x.a.com").map(Arc::as_ptr), want(1).map(Arc::as_ptr));
        assert_eq!(store.find("Y.A.COM").map(Arc::as_ptr), want(0).map(Arc::as_ptr));
        assert!(store.find("z.y.a.com").is_none());
        assert!(store.find("a.com").is_none());
    }
}
