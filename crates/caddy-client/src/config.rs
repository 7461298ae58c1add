//! Client configuration and its TOML file form.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ClientError;

/// Default bound on one request, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on establishing one QUIC connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default largest frame accepted from a server.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// How to reach and authenticate to a cluster.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of the nodes' client QUIC listeners.
    pub endpoints: Vec<String>,
    /// PEM of the cluster CA, the only root trusted.
    pub ca_cert_pem: String,
    /// Bearer credential sent with every request: the admin token, a session
    /// token (`cs_…`) or an API key (`ck_…`).
    pub credential: String,
    /// Tenant to act on (operators; tenant credentials default to their own).
    pub tenant: Option<String>,
    /// Bound on one request, retries on other endpoints included.
    pub request_timeout: Duration,
    /// Bound on establishing one connection.
    pub connect_timeout: Duration,
    /// Largest frame accepted from a server.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("credential", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

/// The on-disk form (`client.toml`).
#[derive(Deserialize)]
struct FileConfig {
    endpoints: Vec<String>,
    ca_cert: String,
    credential: String,
    tenant: Option<String>,
    request_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    max_frame_bytes: Option<usize>,
}

impl ClientConfig {
    /// A configuration with the default timeouts and frame limit.
    pub fn new(endpoints: Vec<String>, ca_cert_pem: impl Into<String>, credential: impl Into<String>) -> Self {
        Self {
            endpoints,
            ca_cert_pem: ca_cert_pem.into(),
            credential: credential.into(),
            tenant: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }

    /// Reads a `client.toml` file: `endpoints`, `ca_cert` (a path, relative
    /// ones resolved against the file's directory), `credential`, and the
    /// optional `tenant`, `request_timeout_ms`, `connect_timeout_ms`, `max_frame_bytes`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", path.display())))?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self::from_toml_str(&text, &base).map_err(|e| match e {
            ClientError::Config(msg) => ClientError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses the TOML form, resolving a relative `ca_cert` against `base_dir`
    /// and reading it.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, ClientError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ClientError::Config(e.message().to_string()))?;
        let ca_path = {
            let p = PathBuf::from(&file.ca_cert);
            if p.is_absolute() { p } else { base_dir.join(p) }
        };
        let ca_cert_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| ClientError::Config(format!("reading CA certificate {}: {e}", ca_path.display())))?;
        let mut config = Self::new(file.endpoints, ca_cert_pem, file.credential);
        config.tenant = file.tenant.filter(|t| !t.is_empty());
        if let Some(ms) = file.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = file.connect_timeout_ms {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = file.max_frame_bytes {
            config.max_frame_bytes = bytes;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks that the configuration can work: at least one well-formed
    /// `host:port` endpoint, a CA certificate and non-zero limits.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints configured".into()));
        }
        for endpoint in &self.endpoints {
            let port_ok = endpoint
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
            if !port_ok {
                return Err(ClientError::Config(format!("endpoint {endpoint:?} is not host:port")));
            }
        }
        if self.ca_cert_pem.trim().is_empty() {
            return Err(ClientError::Config("empty CA certificate".into()));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be positive".into()));
        }
        if self.max_frame_bytes < 1024 {
            return Err(ClientError::Config("max_frame_bytes must be at least 1024".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn relative_ca_resolves_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
        let path = write(
            dir.path(),
            "client.toml",
            "endpoints = [\"127.0.0.1:7101\", \"localhost:7102\"]\nca_cert = \"ca.pem\"\ncredential = \"caddy_admin_x\"\nrequest_timeout_ms = 2500\n",
        );
        let config = ClientConfig::from_file(&path).unwrap();
        assert_eq!(config.endpoints, vec!["127.0.0.1:7101", "localhost:7102"]);
        assert!(config.ca_cert_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(config.credential, "caddy_admin_x");
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert!(!format!("{config:?}").contains("caddy_admin_x"));
    }

    #[test]
    fn absolute_ca_path_is_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.pem", "PEM");
        let text =
            format!("endpoints = [\"[::1]:7101\"]\nca_cert = {:?}\ncredential = \"c\"\n", ca.display().to_string());
        let config = ClientConfig::from_toml_str(&text, Path::new("/nonexistent")).unwrap();
        assert_eq!(config.ca_cert_pem, "PEM");
    }

    #[test]
    fn bad_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", "PEM");
        let cases = [
            ("ca_cert = \"ca.pem\"\ncredential = \"c\"\n", "endpoints"),
            ("endpoints = [\"a:1\"]\ncredential = \"c\"\n", "ca_cert"),
            ("endpoints = [\"a:1\"]\nca_cert = \"ca.pem\"\n", "credential"),
            ("endpoints = []\nca_cert = \"ca.pem\"\ncredential = \"c\"\n", "no endpoints"),
            ("endpoints = [\"nohost\"]\nca_cert = \"ca.pem\"\ncredential = \"c\"\n", "host:port"),
            ("endpoints = [\"a:1\"]\nca_cert = \"missing.pem\"\ncredential = \"c\"\n", "missing.pem"),
            ("endpoints = [\"a:1\"]\nca_cert = \"ca.pem\"\ncredential = \"c\"\nrequest_timeout_ms = 0\n", "timeouts"),
            ("endpoints = \"a:1\"\nca_cert = \"ca.pem\"\ncredential = \"c\"\n", "invalid type"),
            ("this is not toml", ""),
        ];
        for (text, needle) in cases {
            let err = ClientConfig::from_toml_str(text, dir.path()).unwrap_err();
            assert!(matches!(err, ClientError::Config(_)), "{text}: {err:?}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let err = ClientConfig::from_file(dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(err, ClientError::Config(ref m) if m.contains("nope.toml")), "{err}");
    }
}
