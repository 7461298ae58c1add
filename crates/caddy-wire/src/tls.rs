//! Cluster TLS material: a CA generated at bootstrap, node certificates it
//! signs, and the rustls configurations for the QUIC client protocol, the
//! admin endpoint and the peer protocol.
//!
//! Every node certificate names [`crate::CLUSTER_SERVER_NAME`] (plus
//! `localhost`, loopback and the node's advertised hosts), is valid for both
//! server and client authentication (the same identity serves peer mutual
//! TLS, the client listener and the admin endpoint), and carries the node's
//! identity as a URI SAN `caddy-node:<id>?generation=<n>` ([`NodeCertName`]).
//! The peer service authorizes a caller by that id (it must be a current
//! member) and generation (at least the newest one the cluster activated
//! for the id, so rotating or re-enrolling a node retires its older
//! certificates), and a peer client checks a server's certificate the same
//! way. Only TLS 1.3 is offered.
//!
//! Invariants:
//! - A node's private key never leaves it: joining and rotating nodes send a
//!   CSR ([`new_node_key`]), and the signer takes only the public key and
//!   the DNS/IP names from it ([`sign_node_csr`]); the node name is the
//!   signer's, never the requester's.
//! - Node certificates last [`NODE_CERT_DAYS`] days, the CA ten years.
//! - [`LiveIdentity`] is the one place a running node's certificate lives;
//!   every listener and peer client resolves it per handshake, so a rotated
//!   certificate takes effect without restarting anything.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;

/// Scheme of the URI SAN that names a node in its certificate.
const NODE_URI_PREFIX: &str = "caddy-node:";
/// Separates the node id from the certificate generation in that URI.
const GENERATION_PARAM: &str = "?generation=";
/// Lifetime of a node certificate; `caddyctl cluster rotate-certs` renews them.
pub const NODE_CERT_DAYS: u64 = 365;
/// Most extra DNS names or IP addresses a node certificate carries.
pub const MAX_EXTRA_NAMES: usize = 16;
/// Largest CSR accepted for signing.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why TLS material could not be produced or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation or signing failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM document held no usable certificate or key.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls rejected the configuration.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Reading or writing key material failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A certificate names no node (issued by an older CADDY, or not a node
    /// certificate), or names one in a malformed way.
    #[error("not a node certificate: {0}")]
    NodeName(String),
    /// A certificate signing request is malformed or its signature is wrong.
    #[error("certificate signing request: {0}")]
    Csr(String),
}

/// Who a node certificate speaks for: the node id and the generation of the
/// certificate (each enrollment or rotation of the id issues a higher one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeCertName {
    /// The node id.
    pub id: u64,
    /// Certificate generation for this id.
    pub generation: u64,
}

impl NodeCertName {
    /// The URI SAN carrying this name.
    pub fn uri(&self) -> String {
        format!("{NODE_URI_PREFIX}{}{GENERATION_PARAM}{}", self.id, self.generation)
    }

    /// Parses [`NodeCertName::uri`]'s form; `None` for anything else.
    pub fn parse_uri(uri: &str) -> Option<Self> {
        let (id, generation) = uri.strip_prefix(NODE_URI_PREFIX)?.split_once(GENERATION_PARAM)?;
        Some(Self { id: parse_decimal(id)?, generation: parse_decimal(generation)? })
    }
}

impl std::fmt::Display for NodeCertName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (certificate generation {})", self.id, self.generation)
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The cluster certificate authority: its certificate and private key, PEM.
#[derive(Clone)]
pub struct CaMaterial {
    /// CA certificate (public; given to clients).
    pub cert_pem: String,
    /// CA private key (secret; kept only where a node signs certificates,
    /// mode 0600).
    pub key_pem: String,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A node's certificate (signed by the cluster CA) and private key, PEM.
#[derive(Clone)]
pub struct NodeIdentity {
    /// Leaf certificate.
    pub cert_pem: String,
    /// Leaf private key.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "CADDY cluster CA");
    dn.push(DnType::OrganizationName, "CADDY");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// Generates a new cluster CA (ECDSA P-256, valid for ten years).
pub fn generate_ca() -> Result<CaMaterial, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn node_params(name: NodeCertName, extra_names: &[String]) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("caddy-node-{}", name.id));
    params.distinguished_name = dn;
    let mut sans = vec![
        SanType::DnsName(crate::CLUSTER_SERVER_NAME.try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
        SanType::URI(name.uri().try_into()?),
    ];
    for extra in extra_names.iter().take(MAX_EXTRA_NAMES) {
        let san = match extra.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(extra.clone().try_into()?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now();
    // An hour back: a peer whose clock is slightly behind still accepts it.
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(NODE_CERT_DAYS * 86_400)).into();
    Ok(params)
}

fn issuer(ca: &CaMaterial) -> Result<Issuer<'static, KeyPair>, TlsError> {
    Ok(Issuer::new(ca_params(), KeyPair::from_pem(&ca.key_pem)?))
}

/// Issues a node certificate for a new key, both made here and signed by
/// `ca` (the bootstrap node's own, an upgrade of an older certificate, tests).
/// `extra_names` are additional DNS names or IP addresses the node is reached at.
pub fn issue_node_cert(ca: &CaMaterial, name: NodeCertName, extra_names: &[String]) -> Result<NodeIdentity, TlsError> {
    let key = KeyPair::generate()?;
    let cert = node_params(name, extra_names)?.signed_by(&key, &issuer(ca)?)?;
    Ok(NodeIdentity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A new node key and the CSR asking the cluster to certify it.
#[derive(Clone)]
pub struct NodeKeyRequest {
    /// The new private key (stays on the node).
    pub key_pem: String,
    /// CSR for its public key, listing the node's extra names.
    pub csr_pem: String,
}

impl std::fmt::Debug for NodeKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKeyRequest").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Generates a node key and a CSR for it carrying `extra_names` (DNS names
/// or IP addresses; the signer adds the cluster names and the node name).
pub fn new_node_key(extra_names: &[String]) -> Result<NodeKeyRequest, TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "caddy-node");
    params.distinguished_name = dn;
    for extra in extra_names.iter().take(MAX_EXTRA_NAMES) {
        params.subject_alt_names.push(match extra.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(extra.clone().try_into()?),
        });
    }
    let csr = params.serialize_request(&key)?;
    Ok(NodeKeyRequest { key_pem: key.serialize_pem(), csr_pem: csr.pem()? })
}

fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, TlsError> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(TlsError::Csr(format!("{} bytes exceed the limit of {MAX_CSR_BYTES}", csr_pem.len())));
    }
    // Checks the CSR's signature: the requester holds the key it names.
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| TlsError::Csr(e.to_string()))
}

/// blake3 of the public key a CSR asks to certify (after checking the CSR's
/// signature). The cluster records it when it decides to issue a
/// certificate, and a signer signs only the key recorded.
pub fn csr_key_hash(csr_pem: &str) -> Result<[u8; 32], TlsError> {
    use rcgen::PublicKeyData;
    Ok(*blake3::hash(parse_csr(csr_pem)?.public_key.der_bytes()).as_bytes())
}

/// Certifies the key of `csr_pem` as `name`, signed by `ca`. Of what the
/// CSR asks, only the key and its DNS/IP names are used.
pub fn sign_node_csr(ca: &CaMaterial, csr_pem: &str, name: NodeCertName) -> Result<String, TlsError> {
    let csr = parse_csr(csr_pem)?;
    let extra: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            SanType::DnsName(n) => Some(n.as_str().to_string()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    let cert = node_params(name, &extra)?.signed_by(&csr.public_key, &issuer(ca)?)?;
    Ok(cert.pem())
}

/// The node a DER certificate names.
pub fn node_cert_name(der: &[u8]) -> Result<NodeCertName, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::NodeName(format!("unparseable certificate: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::NodeName(format!("bad subject alternative names: {e}")))?
        .ok_or_else(|| TlsError::NodeName("no subject alternative names".into()))?;
    let mut found = None;
    for general in &sans.value.general_names {
        if let GeneralName::URI(uri) = general
            && uri.starts_with(NODE_URI_PREFIX)
        {
            let name = NodeCertName::parse_uri(uri)
                .ok_or_else(|| TlsError::NodeName(format!("malformed node name {uri:?}")))?;
            if found.replace(name).is_some() {
                return Err(TlsError::NodeName("more than one node name".into()));
            }
        }
    }
    found.ok_or_else(|| TlsError::NodeName("it carries no caddy-node name".into()))
}

/// The node the first certificate of a PEM chain names.
pub fn node_cert_name_pem(pem: &str) -> Result<NodeCertName, TlsError> {
    let certs = parse_certs(pem)?;
    node_cert_name(certs[0].as_ref())
}

/// When a DER certificate expires, in milliseconds since the Unix epoch.
pub fn cert_not_after_ms(der: &[u8]) -> Result<u64, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Pem(format!("unparseable certificate: {e}")))?;
    Ok(u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0).saturating_mul(1000))
}

/// A short, stable fingerprint of the CA certificate (hex of blake3 over its DER),
/// used to pin the CA in join tokens.
pub fn ca_fingerprint(ca_cert_pem: &str) -> Result<String, TlsError> {
    let certs = parse_certs(ca_cert_pem)?;
    let first = certs.first().ok_or_else(|| TlsError::Pem("no certificate".into()))?;
    Ok(hex::encode(&blake3::hash(first.as_ref()).as_bytes()[..16]))
}

/// Parses every certificate in a PEM document.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate found".into()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM document.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem(e.to_string()))?
        .ok_or_else(|| TlsError::Pem("no private key found".into()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Root store holding only the cluster CA.
pub fn root_store(ca_cert_pem: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in parse_certs(ca_cert_pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Server configuration for a TLS 1.3 listener presenting `identity`, with the
/// given ALPN protocols and no client authentication (clients authenticate
/// with a bearer credential inside the protocol).
pub fn server_config(identity: &NodeIdentity, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(parse_certs(&identity.cert_pem)?, parse_key(&identity.key_pem)?)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Client configuration trusting only the cluster CA, TLS 1.3, with the given ALPN.
pub fn client_config(ca_cert_pem: &str, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca_cert_pem)?)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

struct Loaded {
    identity: NodeIdentity,
    certified: Arc<CertifiedKey>,
    name: NodeCertName,
    not_after_ms: u64,
}

fn load_identity(identity: NodeIdentity) -> Result<Loaded, TlsError> {
    let chain = parse_certs(&identity.cert_pem)?;
    let name = node_cert_name(chain[0].as_ref())?;
    let not_after_ms = cert_not_after_ms(chain[0].as_ref())?;
    // Refuses a key that does not belong to the certificate.
    let certified = CertifiedKey::from_der(chain, parse_key(&identity.key_pem)?, &provider())?;
    Ok(Loaded { identity, certified: Arc::new(certified), name, not_after_ms })
}

/// A node's current certificate and key, shared by its listeners and peer
/// clients, which resolve it on every handshake: [`LiveIdentity::replace`]
/// takes effect for every new connection at once.
pub struct LiveIdentity {
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIdentity").field("name", &self.name()).finish_non_exhaustive()
    }
}

impl LiveIdentity {
    /// Starts with `identity`, which must be a node certificate and its key.
    pub fn new(identity: NodeIdentity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self { current: RwLock::new(Arc::new(load_identity(identity)?)) }))
    }

    /// Switches to `identity` (checked like in [`LiveIdentity::new`]).
    pub fn replace(&self, identity: NodeIdentity) -> Result<(), TlsError> {
        let loaded = Arc::new(load_identity(identity)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current certificate chain and key, PEM.
    pub fn identity(&self) -> NodeIdentity {
        self.loaded().identity.clone()
    }

    /// Who the current certificate names.
    pub fn name(&self) -> NodeCertName {
        self.loaded().name
    }

    /// When the current certificate expires (ms since the Unix epoch).
    pub fn not_after_ms(&self) -> u64 {
        self.loaded().not_after_ms
    }
}

impl rustls::server::ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for LiveIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.loaded().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server configuration for a TLS 1.3 listener presenting the node's live
/// identity, with the given ALPN protocols and no client authentication.
pub fn server_config_live(identity: Arc<LiveIdentity>, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(identity);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The peer listener's configuration: the node's live identity, HTTP/2, and
/// client certificates verified against the cluster CA when presented (a
/// joining node has none yet; the peer service decides per call who may
/// call it).
pub fn peer_server_config(identity: Arc<LiveIdentity>, ca_cert_pem: &str) -> Result<rustls::ServerConfig, TlsError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca_cert_pem)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Pem(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    // A resumed session keeps the client certificate of the first handshake:
    // a rotated or revoked one would live on in it. Peer connections are
    // long-lived, so full handshakes cost little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// Decides whether a peer server's certificate, already verified against
/// the cluster CA, may be talked to.
pub type ServerCheck = Arc<dyn Fn(&NodeCertName) -> Result<(), String> + Send + Sync>;

struct PeerServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check: ServerCheck,
}

impl std::fmt::Debug for PeerServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let name = node_cert_name(end_entity.as_ref()).map_err(|e| rustls::Error::General(e.to_string()))?;
        (self.check)(&name).map_err(rustls::Error::General)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A peer client's configuration: HTTP/2 over TLS 1.3, the server's
/// certificate verified against the cluster CA and then by `check` (on
/// the node it names), presenting `identity` when given.
pub fn peer_client_config(
    ca_cert_pem: &str,
    identity: Option<Arc<LiveIdentity>>,
    check: ServerCheck,
) -> Result<rustls::ClientConfig, TlsError> {
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(ca_cert_pem)?), provider())
            .build()
            .map_err(|e| TlsError::Pem(format!("server verifier: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier { inner, check }));
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection verifies the server anew (see peer_server_config).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Writes a file readable only by its owner (0600), fsyncing it.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Connects to a TLS server at `addr` and returns the certificate chain it
/// presents, without trusting it. Used once by a joining node to learn the
/// cluster CA, which it then checks against the fingerprint pinned in its
/// join token before sending anything secret.
pub async fn fetch_presented_chain(addr: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use std::sync::Mutex;

    #[derive(Debug)]
    struct Capture {
        chain: Mutex<Vec<CertificateDer<'static>>>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    }
    impl rustls::client::danger::ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider.signature_verification_algorithms.supported_schemes()
        }
    }

    let capture = Arc::new(Capture { chain: Mutex::new(Vec::new()), provider: provider() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| TlsError::Io(std::io::ErrorKind::TimedOut.into()))??;
    let name = rustls::pki_types::ServerName::try_from(crate::CLUSTER_SERVER_NAME)
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connector.connect(name, tcp)).await;
    let chain = capture.chain.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if chain.is_empty() {
        return Err(TlsError::Pem(format!("{addr} presented no certificate")));
    }
    Ok(chain)
}

/// Finds, in a presented chain, the certificate whose fingerprint is
/// `fingerprint`, and returns it as PEM.
pub fn pick_pinned_ca(chain: &[CertificateDer<'static>], fingerprint: &str) -> Option<String> {
    chain
        .iter()
        .find(|c| hex::encode(&blake3::hash(c.as_ref()).as_bytes()[..16]) == fingerprint)
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.as_ref().to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_node_certs_that_rustls_accepts() {
        let ca = generate_ca().unwrap();
        let node =
            issue_node_cert(&ca, NodeCertName { id: 3, generation: 1 }, &["10.1.2.3".into(), "node3.example".into()])
                .unwrap();
        server_config(&node, &[crate::ALPN]).unwrap();
        client_config(&ca.cert_pem, &[crate::ALPN]).unwrap();
        let fp = ca_fingerprint(&ca.cert_pem).unwrap();
        assert_eq!(fp.len(), 32);
        assert_ne!(fp, ca_fingerprint(&generate_ca().unwrap().cert_pem).unwrap());
        assert!(parse_key("not a key").is_err());
        assert!(parse_certs("").is_err());
        let der = parse_certs(&ca.cert_pem).unwrap();
        let pem = pick_pinned_ca(&der, &fp).unwrap();
        assert_eq!(parse_certs(&pem).unwrap(), der);
        assert!(pick_pinned_ca(&der, "00").is_none());
    }

    fn name(id: u64, generation: u64) -> NodeCertName {
        NodeCertName { id, generation }
    }

    #[test]
    fn node_certificates_carry_their_node_name() {
        let ca = generate_ca().unwrap();
        let node = issue_node_cert(&ca, name(7, 3), &[]).unwrap();
        assert_eq!(node_cert_name_pem(&node.cert_pem).unwrap(), name(7, 3));
        let expiry = cert_not_after_ms(parse_certs(&node.cert_pem).unwrap()[0].as_ref()).unwrap();
        let year_ms = NODE_CERT_DAYS * 86_400_000;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(expiry > now + year_ms - 86_400_000 && expiry <= now + year_ms + 60_000, "{expiry}");
        // The CA itself names no node; neither does an older node certificate.
        assert!(matches!(node_cert_name_pem(&ca.cert_pem), Err(TlsError::NodeName(_))));
        let mut old = CertificateParams::new(vec![crate::CLUSTER_SERVER_NAME.to_string()]).unwrap();
        old.subject_alt_names.push(SanType::URI("https://example.test/x".try_into().unwrap()));
        let key = KeyPair::generate().unwrap();
        let old = old.signed_by(&key, &issuer(&ca).unwrap()).unwrap();
        assert!(matches!(node_cert_name(old.der()), Err(TlsError::NodeName(_))));
        assert!(node_cert_name(b"garbage").is_err());
    }

    #[test]
    fn node_names_parse_strictly() {
        assert_eq!(NodeCertName::parse_uri(&name(12, 4).uri()), Some(name(12, 4)));
        assert_eq!(NodeCertName::parse_uri("caddy-node:18446744073709551615?generation=0"), Some(name(u64::MAX, 0)));
        for bad in [
            "caddy-node:1",
            "caddy-node:?generation=1",
            "caddy-node:1?generation=",
            "caddy-node:+1?generation=1",
            "caddy-node:1?generation=1&x=2",
            "caddy-node:18446744073709551616?generation=1",
            "caddy-node: 1?generation=1",
            "other:1?generation=1",
        ] {
            assert_eq!(NodeCertName::parse_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certificate_with_two_node_names_names_none() {
        let ca = generate_ca().unwrap();
        let mut params = node_params(name(1, 1), &[]).unwrap();
        params.subject_alt_names.push(SanType::URI(name(2, 1).uri().try_into().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer(&ca).unwrap()).unwrap();
        assert!(matches!(node_cert_name(cert.der()), Err(TlsError::NodeName(m)) if m.contains("more than one")));
    }

    #[test]
    fn a_csr_is_signed_for_the_signers_name_and_its_own_key() {
        let ca = generate_ca().unwrap();
        let request = new_node_key(&["10.0.0.9".into(), "n9.example".into()]).unwrap();
        let hash = csr_key_hash(&request.csr_pem).unwrap();
        assert_eq!(hash, csr_key_hash(&request.csr_pem).unwrap());
        assert_ne!(hash, csr_key_hash(&new_node_key(&[]).unwrap().csr_pem).unwrap());
        let cert = sign_node_csr(&ca, &request.csr_pem, name(9, 2)).unwrap();
        let chain = format!("{cert}{}", ca.cert_pem);
        let live = LiveIdentity::new(NodeIdentity { cert_pem: chain, key_pem: request.key_pem.clone() }).unwrap();
        assert_eq!(live.name(), name(9, 2));
        let der = parse_certs(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der[0].as_ref()).unwrap();
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap().value.general_names);
        assert!(sans.contains("n9.example") && sans.contains(crate::CLUSTER_SERVER_NAME), "{sans}");
        // Someone else's key does not go with that certificate.
        let other = new_node_key(&[]).unwrap();
        assert!(live.replace(NodeIdentity { cert_pem: cert.clone(), key_pem: other.key_pem }).is_err());
        assert_eq!(live.name(), name(9, 2));
    }

    #[test]
    fn a_csr_cannot_choose_its_node_name_and_a_forged_one_is_refused() {
        let ca = generate_ca().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names.push(SanType::URI(name(1, 99).uri().try_into().unwrap()));
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = sign_node_csr(&ca, &csr, name(5, 2)).unwrap();
        assert_eq!(node_cert_name_pem(&cert).unwrap(), name(5, 2));
        // A CSR whose signature does not match its content.
        let good = new_node_key(&[]).unwrap().csr_pem;
        let der = pem::parse(&good).unwrap().into_contents();
        let mut tampered = der.clone();
        let at = tampered.len() - 5;
        tampered[at] ^= 0x40;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", tampered));
        assert!(matches!(csr_key_hash(&tampered), Err(TlsError::Csr(_))));
        assert!(sign_node_csr(&ca, "not a csr", name(5, 2)).is_err());
        assert!(matches!(csr_key_hash(&"x".repeat(MAX_CSR_BYTES + 1)), Err(TlsError::Csr(_))));
    }
}
