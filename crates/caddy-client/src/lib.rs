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
//!   50 ms..500 ms backoff, until the request timeout or the handle's
//!   deadline), and answers carrying a retry-after (the server did nothing;
//!   the same request may succeed later), which are sent again to the same
//!   endpoint after that wait when it fits in that time; every other typed
//!   server error, and a retry-after that does not fit, is returned at once.
//!   A new connection gets a short head start (400 ms with several
//!   endpoints) before the next endpoint is tried, so a dead node costs
//!   that, not the request timeout. A connection the server closed (idle,
//!   credential deadline) is replaced on the next request; one it refused
//!   (too many from this address) is a `RESOURCE_EXHAUSTED` error when no
//!   attempt may have reached a server.
//! - Every error says what became of its request ([`ClientError::outcome`]):
//!   a write that went out and got no definitive answer (timeout, lost
//!   connection, `UNAVAILABLE`, an answer that cannot be understood) is
//!   [`ClientError::OutcomeUnknown`]; a typed refusal, a failure before
//!   anything was sent, and every read are [`Outcome::NotApplied`]. A
//!   refusal with a retry-after is not applied, unless an earlier attempt
//!   of the same write went out without a definitive answer: then it is
//!   `OutcomeUnknown` too, and the write gives up its lane like any write
//!   in doubt.
//! - Nothing fed by the network, disk or user input can panic: malformed
//!   frames become [`ClientError::Protocol`].

mod client;
mod config;
mod docs;
mod duration;
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
pub use duration::human_duration;
pub use error::{ClientError, ErrorCode, Outcome};
pub use files::{DownloadOptions, Downloaded, FolderPage, UploadOptions};
pub use loadgen::LoadReport;
pub use watch::WatchStream;
