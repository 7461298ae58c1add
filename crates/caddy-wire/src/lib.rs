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

pub use frame::{FrameError, read_frame, write_frame};
