//! TLS between the CLI, the server and the agents, with no OpenSSL: the server is its own
//! certificate authority (rcgen), and rustls speaks TLS on both ends.
//!
//! - The server keeps its CA in its state folder (`ca.pem`, and `ca-key.pem` readable by its
//!   owner alone), and signs at each start a serving certificate for the names it is reached by.
//! - Agents pin the CA by the SHA-256 of its certificate (DER), carried in the join token in
//!   k3s' shape `K10<hash>::<secret>`; a server whose chain does not lead to that CA is refused
//!   before any secret is sent.
//! - Each node holds a client certificate signed by the CA for a key it made itself; the server
//!   pins the node's current (and previous) certificate by hash, so removing a node revokes it.
//! - The CLI trusts a CA file, else the system's roots.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The CA certificate's file in the server's state folder.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key, beside it (0600).
const CA_KEY_FILE: &str = "ca-key.pem";
/// The join token's prefix, as k3s writes it: a version, then the CA's hash.
const TOKEN_PREFIX: &str = "K10";
/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a serving certificate is valid; a new one is signed at every start.
const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// How long a node's client certificate is valid; agents renew it when a third is left.
pub const NODE_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
/// Signatures of berth's own keys.
static KEY_ALGORITHM: &SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading or writing {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no {what} in PEM form; {hint}")]
    Pem { path: PathBuf, what: &'static str, hint: &'static str },
    #[error("reaching {server} over TLS failed")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("making a certificate failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the join token is not `K10<sha256 of the CA>::<secret>` nor a plain secret: {0}")]
    Token(String),
}

/// The crypto berth uses on every end: ring, which builds with the C compiler alone (aws-lc
/// needs cmake). Its lack of post-quantum key exchange is why rustls marks it deprecated.
/// X25519 goes first: this provider's default, P-384, made each handshake (resumed ones
/// included) cost some 2 ms of CPU, which tunnels pay per connection.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    // The cheaper AEAD first; both ends here speak all three.
    provider.cipher_suites.sort_by_key(|suite| suite.suite() != cipher_suite::TLS13_AES_128_GCM_SHA256.suite());
    Arc::new(provider)
}

/// The SHA-256 of a certificate's DER bytes, in hex: what `openssl x509 -noout -fingerprint
/// -sha256` prints, without the colons.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The certificates of a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_owned(), source })?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            hint: "give a file with `-----BEGIN CERTIFICATE-----` blocks",
        });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_owned(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
        hint: "give a PKCS#8, PKCS#1 or SEC1 key in PEM form",
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    crate::private::write_private(path, text.as_bytes())
        .map_err(|source| TlsError::Io { path: path.to_owned(), source })
}

fn time_in(from_now: Duration) -> time::OffsetDateTime {
    let seconds = std::time::SystemTime::now()
        .checked_add(from_now)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Certificates start an hour back, so a node whose clock is a little behind accepts them.
fn valid_for(params: &mut CertificateParams, lifetime: Duration) {
    let now = std::time::SystemTime::now();
    let back = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    let back = back.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(back).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    params.not_after = time_in(lifetime);
    let mut serial = [0u8; 16];
    rand::fill(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
}

/// The CA's subject and usages: the same at every start, so that the key on disk signs as the
/// certificate on disk says.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "berth CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// The server's certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
    pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("fingerprint", &self.fingerprint()).finish()
    }
}

/// A node's public key (P-256, uncompressed), as its agent sends it to be certified.
struct NodeKey(Vec<u8>);

impl PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        KEY_ALGORITHM
    }
}

/// A node's certificate as the server hands it out.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    pub pem: String,
    pub fingerprint: String,
    /// When it stops being valid, in Unix seconds.
    pub expires: i64,
}

impl Authority {
    /// The CA kept in `dir`, made there on first use.
    pub fn load_or_create(dir: &Path) -> Result<Authority, TlsError> {
        let certificate_path = dir.join(CA_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            crate::private::private_file(&key_path)
                .map_err(|source| TlsError::Io { path: key_path.clone(), source })?;
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(|source| TlsError::Io { path: key_path.clone(), source })?;
            let key = KeyPair::from_pem(&key_pem).map_err(|_| TlsError::Pem {
                path: key_path.clone(),
                what: "CA key",
                hint: "remove ca.pem and ca-key.pem to make a new CA (agents must then join again)",
            })?;
            let certificate = read_certificates(&certificate_path)?.remove(0);
            let pem = std::fs::read_to_string(&certificate_path)
                .map_err(|source| TlsError::Io { path: certificate_path.clone(), source })?;
            return Ok(Authority { issuer: Issuer::new(ca_params(), key), certificate, pem });
        }
        crate::private::private_dir(dir).map_err(|source| TlsError::Io { path: dir.to_owned(), source })?;
        let key = KeyPair::generate_for(KEY_ALGORITHM)?;
        let mut params = ca_params();
        valid_for(&mut params, CA_LIFETIME);
        let made = params.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&certificate_path, &made.pem())?;
        tracing::info!(ca = %certificate_path.display(), "Made the cluster's certificate authority.");
        Ok(Authority { issuer: Issuer::new(ca_params(), key), certificate: made.der().clone(), pem: made.pem() })
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.certificate)
    }

    /// A serving certificate for `names` (DNS names and IP addresses), and its key; the chain
    /// ends with the CA, so that an agent can find the CA it pins.
    pub fn serving(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let key = KeyPair::generate_for(KEY_ALGORITHM)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, "berth server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        valid_for(&mut params, SERVING_LIFETIME);
        let certificate = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.into())))?;
        Ok((vec![certificate.der().clone(), self.certificate.clone()], key))
    }

    /// A certificate for `node`'s public key (P-256, uncompressed point): a client certificate
    /// toward the server, and, for the node's `address`, a server certificate toward other
    /// nodes' tunnels.
    pub fn certify_node(
        &self,
        node: &str,
        address: Option<std::net::IpAddr>,
        public_key: &[u8],
        lifetime: Duration,
    ) -> Result<NodeCertificate, TlsError> {
        let mut params = CertificateParams::new(address.map(|a| a.to_string()).into_iter().collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, node);
        params.distinguished_name.push(DnType::OrganizationName, "berth nodes");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        valid_for(&mut params, lifetime);
        let expires = params.not_after.unix_timestamp();
        let certificate = params.signed_by(&NodeKey(public_key.to_vec()), &self.issuer)?;
        Ok(NodeCertificate { pem: certificate.pem(), fingerprint: fingerprint(certificate.der()), expires })
    }

    /// Roots holding only this CA.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        let _ = roots.add(self.certificate.clone());
        Arc::new(roots)
    }
}

/// The server's TLS: a certificate chain and key, and client certificates (optional, verified
/// against the CA) from nodes.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Arc<RootCertStore>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(client_roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An operator's own certificate chain and key (`--tls-cert`, `--tls-key`).
pub fn operator_certificate(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    Ok((read_certificates(cert)?, read_key(key)?))
}

/// A join token: the secret, and the CA hash it pins when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: Option<String>,
    pub secret: String,
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<JoinToken, TlsError> {
        let text = text.trim();
        let Some(rest) = text.strip_prefix(TOKEN_PREFIX) else {
            if text.is_empty() || text.contains("::") {
                return Err(TlsError::Token("it is empty or has `::` without the `K10` prefix".into()));
            }
            return Ok(JoinToken { ca_hash: None, secret: text.to_owned() });
        };
        let Some((hash, secret)) = rest.split_once("::") else {
            return Err(TlsError::Token("`K10` is not followed by `<hash>::<secret>`".into()));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlsError::Token("the CA hash after `K10` is not 64 hex digits".into()));
        }
        if secret.is_empty() {
            return Err(TlsError::Token("the secret after `::` is empty".into()));
        }
        Ok(JoinToken { ca_hash: Some(hash.to_ascii_lowercase()), secret: secret.to_owned() })
    }

    /// The token in k3s' shape when it pins a CA, else the bare secret.
    pub fn render(&self) -> String {
        match &self.ca_hash {
            Some(hash) => format!("{TOKEN_PREFIX}{hash}::{}", self.secret),
            None => self.secret.clone(),
        }
    }
}

/// How a [`Pinned`] verifier judges a server's chain.
#[derive(Debug)]
enum Check {
    /// Trusts a chain that holds the CA of this hash (or is that certificate itself), verified
    /// as a normal chain from it: name, dates and signatures.
    Pin(String),
    /// Accepts any chain and keeps it: for `berth login`, which shows the CA's fingerprint to
    /// the user before it trusts it. Nothing is sent over such a connection.
    Record(Arc<std::sync::Mutex<Vec<CertificateDer<'static>>>>),
}

/// A server verifier that does not trust a root store: it pins a CA, or records what it saw.
#[derive(Debug)]
struct Pinned {
    check: Check,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = match &self.check {
            Check::Pin(hash) => hash,
            Check::Record(chain) => {
                let seen = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
                *chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
                return Ok(ServerCertVerified::assertion());
            }
        };
        if fingerprint(end_entity) == *hash {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(anchor) = intermediates.iter().find(|c| fingerprint(c) == *hash) else {
            return Err(rustls::Error::General(format!(
                "the server's certificate does not chain to the CA the join token pins (sha256 {hash}); \
                 is this the right server, and the token its own?"
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| fingerprint(c) != *hash).cloned().collect();
        verifier.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// How a client decides to trust a server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The CA of this hash (an agent's pin from its join token).
    Pinned(String),
    /// These CA certificates only.
    Roots(Vec<CertificateDer<'static>>),
    /// The system's roots.
    System,
}

/// A node's own key and certificate, swapped in place when the agent renews it: connections
/// made afterwards present the new one.
#[derive(Debug, Default)]
pub struct NodeIdentity {
    current: std::sync::RwLock<Option<Arc<rustls::sign::CertifiedKey>>>,
}

impl NodeIdentity {
    /// Makes a key pair for a node: its private key in PEM, and the public key to certify.
    pub fn new_key() -> Result<(String, Vec<u8>), TlsError> {
        let key = KeyPair::generate_for(KEY_ALGORITHM)?;
        Ok((key.serialize_pem(), key.public_key_raw().to_vec()))
    }

    /// Presents `certificate_pem` (then the CA) with `key_pem` from now on.
    pub fn set(&self, certificate_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certificate_pem.as_bytes()).filter_map(Result::ok).collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| TlsError::Rustls(rustls::Error::General("the node's key is not PEM".into())))?;
        let signing = provider().key_provider.load_private_key(key)?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(certified));
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }
}

impl rustls::server::ResolvesServerCert for NodeIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The TLS of the tunnels between nodes: each side presents its node certificate, and trusts
/// only certificates of the cluster's CA (`ca`, PEM). Which nodes are let in is the proxy's
/// call, by fingerprint.
pub fn tunnel_configs(
    ca: &str,
    identity: Arc<NodeIdentity>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()).filter_map(Result::ok) {
        roots.add(certificate)?;
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity.clone());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    Ok((Arc::new(server), Arc::new(client)))
}

impl rustls::client::ResolvesClientCert for NodeIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn has_certs(&self) -> bool {
        self.is_set()
    }
}

/// A client's TLS: whom it trusts, and the node identity it presents when it has one.
pub fn client_config(trust: &Trust, identity: Option<Arc<NodeIdentity>>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Pinned(hash) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { check: Check::Pin(hash.clone()), provider })),
        Trust::Roots(certificates) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates {
                roots.add(certificate.clone())?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::System => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            builder.with_root_certificates(roots)
        }
    };
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTP client with berth's TLS.
pub fn http_client(trust: &Trust, identity: Option<Arc<NodeIdentity>>) -> Result<reqwest::ClientBuilder, TlsError> {
    Ok(reqwest::Client::builder().use_preconfigured_tls(client_config(trust, identity)?))
}

/// The names a server listening on `listen` is reached by: its address (for an unspecified one,
/// loopback, every address of this host and its host name), and `extra`.
pub fn server_names(listen: std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let ip = listen.ip();
    if ip.is_unspecified() {
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]);
        names.extend(host_addresses().into_iter().map(|a| a.to_string()));
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(host.trim().to_lowercase());
        }
    } else {
        names.push(ip.to_string());
        if ip.is_loopback() {
            names.push("localhost".to_owned());
        }
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// The addresses of this host's interfaces.
fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases; each entry's
    // address is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut entry = list;
        while !entry.is_null() {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// The certificate chain the server at `host:port` shows, leaf first; the handshake is all
/// that is done.
pub async fn fetch_chain(host: &str, port: u16) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let provider = provider();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = Arc::new(Pinned { check: Check::Record(seen.clone()), provider: provider.clone() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let io = |source: std::io::Error| TlsError::Connect { server: format!("{host}:{port}"), source };
    let socket = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
        .map_err(io)?;
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, socket))
        .await
        .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
        .map_err(io)?;
    let chain = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(chain)
}

/// Says which certificate a connection's peer presented: its fingerprint.
pub fn peer_fingerprint(connection: &rustls::ServerConnection) -> Option<String> {
    connection.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_parse_in_k3s_shape_or_as_a_bare_secret() {
        let hash = "ab".repeat(32);
        let token = JoinToken::parse(&format!("K10{hash}::s3cret")).unwrap();
        assert_eq!(token, JoinToken { ca_hash: Some(hash.clone()), secret: "s3cret".into() });
        assert_eq!(token.render(), format!("K10{hash}::s3cret"));
        assert_eq!(JoinToken::parse(" plain \n").unwrap(), JoinToken { ca_hash: None, secret: "plain".into() });
        for bad in ["K10abc::s", &format!("K10{hash}::"), &format!("K10{hash}"), "a::b", ""] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_reloads_from_its_folder_and_signs_as_the_same_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A certificate signed after the reload verifies under the CA made before it.
        let (chain, _) = again.serving(&["127.0.0.1".into()]).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(first.roots(), provider()).build().unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let stranger = Authority::load_or_create(other.path()).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(stranger.roots(), provider()).build().unwrap();
        assert!(verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn the_serving_certificate_names_the_listen_address_and_each_tls_san() {
        let names = server_names("127.0.0.1:7420".parse().unwrap(), &["berth.example".into(), "10.1.2.3".into()]);
        assert_eq!(names, ["127.0.0.1", "localhost", "berth.example", "10.1.2.3"]);
        let everywhere = server_names("0.0.0.0:7420".parse().unwrap(), &[]);
        for name in ["localhost", "127.0.0.1", "::1"] {
            assert!(everywhere.contains(&name.to_owned()), "{everywhere:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let (chain, _) = ca.serving(&names).unwrap();
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(ca.roots(), provider()).build().unwrap();
        for name in ["berth.example", "10.1.2.3", "localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now()).unwrap();
        }
        let other = ServerName::try_from("elsewhere.example").unwrap();
        assert!(verifier.verify_server_cert(&chain[0], &[], &other, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn the_pin_accepts_only_a_chain_through_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let (chain, _) = ca.serving(&["127.0.0.1".into()]).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let pinned = Pinned { check: Check::Pin(ca.fingerprint()), provider: provider() };
        pinned.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).unwrap();
        let wrong_name = ServerName::try_from("10.9.9.9").unwrap();
        assert!(pinned.verify_server_cert(&chain[0], &chain[1..], &wrong_name, &[], UnixTime::now()).is_err());
        let elsewhere = Pinned { check: Check::Pin("00".repeat(32)), provider: provider() };
        let error = elsewhere.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).unwrap_err();
        assert!(error.to_string().contains("does not chain to the CA the join token pins"), "{error}");
    }

    #[test]
    fn a_node_certificate_is_signed_for_the_nodes_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let (key_pem, public) = NodeIdentity::new_key().unwrap();
        let issued = ca.certify_node("n1", Some([127, 0, 0, 2].into()), &public, NODE_LIFETIME).unwrap();
        let identity = NodeIdentity::default();
        identity.set(&issued.pem, &key_pem).unwrap();
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        assert_eq!(fingerprint(&der), issued.fingerprint);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(ca.roots(), provider()).build().unwrap();
        verifier.verify_client_cert(&der, &[], UnixTime::now()).unwrap();
    }
}

#[cfg(test)]
mod tunnel_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Tunnels pay a handshake per connection: it must resume after the first, and exchange keys
    /// with X25519 (this provider's default group, P-384, cost some 2 ms of CPU a handshake).
    #[tokio::test]
    async fn tunnel_handshakes_resume_and_use_x25519() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::load_or_create(dir.path()).unwrap();
        let node = |ip: [u8; 4]| {
            let (key, public) = NodeIdentity::new_key().unwrap();
            let issued = ca.certify_node("n", Some(ip.into()), &public, NODE_LIFETIME).unwrap();
            let identity = Arc::new(NodeIdentity::default());
            identity.set(&issued.pem, &key).unwrap();
            tunnel_configs(ca.pem(), identity).unwrap()
        };
        let (server, _) = node([127, 0, 0, 1]);
        let (_, client) = node([127, 0, 0, 2]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(socket).await else { return };
                    let _ = stream.write_all(&[0]).await;
                    let _ = stream.read(&mut [0u8; 1]).await;
                });
            }
        });
        let connector = tokio_rustls::TlsConnector::from(client);
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
            let mut stream = connector.connect(name, socket).await.unwrap();
            // The answer comes after the server's session tickets: reading it keeps them.
            stream.read_exact(&mut [0u8; 1]).await.unwrap();
            let connection = stream.get_ref().1;
            assert_eq!(connection.negotiated_key_exchange_group().map(|g| g.name()), Some(rustls::NamedGroup::X25519));
            kinds.push(connection.handshake_kind());
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(kinds, [Some(Full), Some(Resumed), Some(Resumed)]);
    }
}
