//! The CADDY client SDK: connects to a cluster's client QUIC listeners,
//! speaks the protocol of `proto/caddy/v1/client.proto` (one bidirectional
//! stream per request, length-delimited protobuf frames from `caddy-wire`)
//! and hides endpoint failover behind an async API.
//!
//! This crate owns: the client configuration file format
//! ([`ClientConfig`]), the connection cache and retry policy ([`Client`]),
//! exactly-once write lanes, resumable watches ([`WatchStream`]), streamed
//! backups, a small closed-loop load generator ([`loadgen`]), and CAD
//! documents: calls, live document streams ([`DocWatch`]) and local
//! replicas that edit offline and sync ([`DocHandle`]).
//!
//! Invariants:
//! - Every write (put, delete, membership and admin mutations) is sent with a
//!   `(client_id, sequence)` pair taken from a *lane*; a lane carries at most
//!   one write at a time, every retry of one logical write reuses exactly the
//!   same pair, and a lane's sequence only grows. A lane whose last write has
//!   an unknown outcome (transport failure, timeout, cancellation) is thrown
//!   away, never reused. Reads carry `client_id = 0, sequence = 0`.
//! - Only transport failures, timeouts, refused connections and the
//!   server's `UNAVAILABLE` are retried (on the next endpoint, with a
//!   50 ms..500 ms backoff, until the request timeout), and answers carrying
//!   a retry-after (the server did nothing; the same request may succeed
//!   later), which are sent again to the same endpoint after that wait when
//!   it fits in the request timeout; every other typed server error, and a
//!   retry-after that does not fit, is returned at once. A write refused
//!   with a retry-after gives up its lane (an earlier attempt of it may have
//!   been applied). A connection the server closed (idle, credential
//!   deadline) is replaced on the next request.
//! - Nothing fed by the network, disk or user input can panic: malformed
//!   frames become [`ClientError::Protocol`].

mod client;
mod config;
mod docs;
mod error;
mod files;
mod lanes;
pub mod loadgen;
mod render;
mod watch;

#[cfg(test)]
mod tests;

pub use caddy_core::docs as doc_api;
pub use caddy_core::files as file_api;
pub use caddy_core::identity::api as identity;
pub use caddy_core::render as render_api;
pub use caddy_doc;
pub use caddy_wire::pb;
pub use client::{AuditFilter, Client};
pub use config::{ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_FRAME_BYTES, DEFAULT_REQUEST_TIMEOUT};
pub use docs::{DocChange, DocHandle, DocWatch, MAX_DOC_PAYLOAD, SyncReport};
pub use error::{ClientError, ErrorCode};
pub use files::{DownloadOptions, Downloaded, FolderPage, UploadOptions};
pub use loadgen::LoadReport;
pub use watch::WatchStream;
