//! The client wire: protobuf messages of `proto/caddy/v1/client.proto`, the
//! length-delimited framing used on QUIC streams, the TLS material (cluster
//! CA, node certificates, rustls configurations) shared by the server, the
//! peers and the SDK, and the loopback port choice of local clusters.
//!
//! Invariants:
//! - A frame is a 4-byte big-endian length followed by that many bytes of
//!   protobuf; a length above the reader's limit is rejected before any
//!   allocation of that size.
//! - This crate knows nothing of storage or consensus.

pub mod frame;
pub mod ports;
pub mod tls;

/// Generated protobuf types of the client protocol.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/caddy.v1.rs"));
}

/// ALPN protocol id of the client protocol; bumped on incompatible changes.
pub const ALPN: &[u8] = b"caddy/1";

/// The DNS name every node certificate carries and every client and peer
/// verifies, so that certificates do not depend on addresses.
pub const CLUSTER_SERVER_NAME: &str = "caddy-node";

/// Application close codes of client connections (see the header of
/// `proto/caddy/v1/client.proto`); the close reason explains them to people.
pub mod close {
    /// A normal close: the server is shutting down, or a side is done.
    pub const NORMAL: u32 = 0;
    /// No authenticated request (or login) within the credential deadline.
    pub const CREDENTIAL_DEADLINE: u32 = 1;
    /// No request in flight for longer than the idle timeout; a client
    /// simply reconnects for its next request.
    pub const IDLE: u32 = 2;
    /// Too many connections from the client's source address.
    pub const TOO_MANY_CONNECTIONS: u32 = 3;
}

pub use frame::{FrameError, read_frame, write_frame};
