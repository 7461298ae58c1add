//! A local S3-compatible server for tests and benchmarks: `moto_server`
//! (from PyPI, `pip3 install 'moto[server]'`) started as a child process on
//! a free loopback port, killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ObjectConfig;

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
}

/// Why a moto server could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// `moto_server` is not installed or could not be spawned.
    #[error("cannot start moto_server ({0}); install it with `pip3 install 'moto[server]'`")]
    Spawn(std::io::Error),
    /// It exited or did not answer in time.
    #[error("moto_server is not serving: {0}")]
    NotServing(String),
    /// An HTTP exchange with it failed.
    #[error("moto_server request failed: {0}")]
    Http(#[from] std::io::Error),
}

impl Moto {
    /// Starts a server and waits (up to 60 s) until it answers.
    pub fn start() -> Result<Moto, MotoError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(MotoError::Spawn)?;
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if moto.http("GET", "/").is_ok_and(|code| code < 500) {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(MotoError::NotServing(format!("exited early with {status}")));
            }
            if Instant::now() >= deadline {
                return Err(MotoError::NotServing(format!("no answer on port {port} within 60 s")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its endpoint URL (plain HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends one unsigned HTTP/1.1 request (moto accepts them); returns the
    /// status code.
    pub fn http(&self, method: &str, path: &str) -> Result<u16, MotoError> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let port = self.port;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| MotoError::NotServing(format!("bad HTTP response: {text:.200}")))
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), MotoError> {
        match self.http("PUT", &format!("/{bucket}"))? {
            200 => Ok(()),
            code => Err(MotoError::NotServing(format!("creating bucket {bucket}: HTTP {code}"))),
        }
    }

    /// An object-store configuration for `url` (`s3://bucket/prefix`) on
    /// this server, with moto's test credentials.
    pub fn config(&self, url: impl Into<String>) -> ObjectConfig {
        ObjectConfig {
            url: url.into(),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
