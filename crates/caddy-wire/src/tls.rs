//! Cluster TLS material: a CA generated at bootstrap, node certificates it
//! signs, and the rustls configurations for the QUIC client protocol.
//!
//! Every node certificate names [`crate::CLUSTER_SERVER_NAME`] (plus
//! `localhost` and loopback), and is valid for both server and client
//! authentication, so the same identity serves peer mutual TLS and the
//! client listener. Only TLS 1.3 is offered.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
}

/// The cluster certificate authority: its certificate and private key, PEM.
#[derive(Clone)]
pub struct CaMaterial {
    /// CA certificate (public; given to clients).
    pub cert_pem: String,
    /// CA private key (secret; kept on voters' disks, mode 0600).
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

/// Issues a node certificate signed by `ca`. `extra_names` are additional DNS
/// names or IP addresses the node is reached at.
pub fn issue_node_cert(ca: &CaMaterial, node_id: u64, extra_names: &[String]) -> Result<NodeIdentity, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("caddy-node-{node_id}"));
    params.distinguished_name = dn;
    let mut sans = vec![
        SanType::DnsName(crate::CLUSTER_SERVER_NAME.try_into()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])),
    ];
    for name in extra_names {
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => sans.push(SanType::IpAddress(ip)),
            Err(_) => sans.push(SanType::DnsName(name.clone().try_into()?)),
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(5 * 365 * 86_400)).into();
    let cert = params.signed_by(&key, &issuer)?;
    Ok(NodeIdentity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
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
        let node = issue_node_cert(&ca, 3, &["10.1.2.3".into(), "node3.example".into()]).unwrap();
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
}
