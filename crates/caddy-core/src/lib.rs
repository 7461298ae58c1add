//! The vocabulary of CADDY: ids, the replicated [`Command`]s and their
//! [`Reply`]s, key-value records and watch events, the typed error model and
//! the checksummed record codec shared by storage and the peer wire.
//!
//! **Architecture invariant:** this crate is pure. It does no I/O, never reads
//! the clock or a random source, and iterates no unordered collection into its
//! output. Everything a replica needs to apply a command deterministically is
//! inside the command itself (the proposer's stamped time, generated ids).

pub mod codec;
pub mod command;
pub mod docs;
pub mod error;
pub mod files;
pub mod identity;
pub mod kv;
pub mod render;

pub use codec::CodecError;
pub use command::{ClientSeq, Command, Proposal, Reply, ReplyBody};
pub use error::{CaddyError, ErrorCode};
pub use kv::{EventKind, KeyValue, KvEvent};

/// Identifies a node of the cluster; never reused for another machine.
pub type NodeId = u64;

/// Hard bounds enforced in the state machine itself, identical on every
/// replica. Servers apply stricter, configurable limits before proposing.
pub mod limits {
    /// Longest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 4096;
    /// Largest value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
    /// Default number of watch events kept for resuming watchers (a node
    /// setting); older ones are compacted.
    pub const EVENT_HISTORY: u64 = 100_000;
    /// A client session (exactly-once memory) idle longer than this, judged
    /// by stamped time, is forgotten.
    pub const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;
    /// Upper bound on expired sessions swept per applied command, so a sweep
    /// never makes one apply slow.
    pub const SESSION_SWEEP_PER_APPLY: usize = 16;
}

/// Hash under which a bearer credential is stored; the credential itself is
/// never proposed or persisted. Credentials are 256-bit random tokens, so a
/// fast cryptographic hash is the right tool (argon2 is for passwords).
pub fn credential_hash(credential: &str) -> [u8; 32] {
    *blake3::hash(credential.as_bytes()).as_bytes()
}

/// Compares a presented credential with a stored hash in constant time.
pub fn credential_matches(credential: &str, stored: &[u8; 32]) -> bool {
    blake3::hash(credential.as_bytes()) == blake3::Hash::from_bytes(*stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_only_their_hash() {
        let stored = credential_hash("caddy_admin_abc");
        assert!(credential_matches("caddy_admin_abc", &stored));
        assert!(!credential_matches("caddy_admin_abd", &stored));
        assert!(!credential_matches("", &stored));
    }
}
