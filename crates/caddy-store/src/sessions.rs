//! Exactly-once client sessions (Raft dissertation §6.3): for each client
//! lane, the last sequence applied and its reply, so a retried write gets the
//! first answer instead of being applied twice.
//!
//! A lane is `(scope, client_id)`, the scope being who asks for which tenant
//! ([`caddy_core::Command::session_scope`]). Client ids and sequences are not
//! secrets (they reach request ids and audit entries), so binding lanes to
//! the credential is what keeps one caller from reading another's remembered
//! replies or spoiling its lane with a huge sequence.
//!
//! Tables (all in the state machine's database):
//! - `client_sessions`: `scope ‖ client_id (BE)` → sealed [`Session`];
//! - `client_session_age`: `(stamp, lane)` → `()`, for the 24 h expiry sweep;
//! - `client_session_scope_age`: `(scope ‖ stamp (BE) ‖ client_id (BE))` →
//!   `()`, the lanes of a scope oldest first, for eviction;
//! - `client_session_counts`: `scope` → lanes the scope holds.
//!
//! Invariants:
//! - The three indexes describe exactly the lanes of `client_sessions`
//!   (snapshots carry only `client_sessions`; install rebuilds the rest).
//! - A scope holds at most [`MAX_LANES_PER_SCOPE`] lanes; a new one evicts
//!   the scope's least recently used. A remembered reply carries at most
//!   [`MAX_REMEMBERED_VALUE_BYTES`] of a previous value: storage per
//!   credential is bounded, however many client ids it invents.
//! - Sequences move forward by small steps: a first sequence above
//!   [`MAX_FIRST_SEQUENCE`] or a step above [`MAX_SEQUENCE_STEP`] is
//!   refused, unapplied (no real client numbers its writes that way).
//! - Everything is decided from the entries and the tables (stamped time),
//!   so every replica keeps the same sessions.

use std::io;

use caddy_core::{CaddyError, ClientSeq, KeyValue, Reply, ReplyBody, limits};
use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::io_err;
use crate::state_machine::{open_record, seal};

pub(crate) const CLIENT_SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("client_sessions");
const CLIENT_SESSION_AGE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("client_session_age");
const CLIENT_SESSION_SCOPE_AGE: TableDefinition<&[u8], ()> = TableDefinition::new("client_session_scope_age");
const CLIENT_SESSION_COUNTS: TableDefinition<&[u8], u64> = TableDefinition::new("client_session_counts");
/// The sessions of builds before lanes were scoped: dropped at open (they
/// only spare retries of the last day a second apply).
const LEGACY_SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const LEGACY_SESSION_AGE: TableDefinition<(u64, u64), ()> = TableDefinition::new("session_age");

/// Lanes one scope (credential and tenant) may hold.
pub const MAX_LANES_PER_SCOPE: u64 = 4096;
/// Longest previous value a remembered put reply keeps; a longer one is
/// left out of the remembered reply (which then says so).
pub const MAX_REMEMBERED_VALUE_BYTES: usize = 1024;
/// Largest sequence a lane may start with.
pub const MAX_FIRST_SEQUENCE: u64 = 1 << 32;
/// Largest step between two sequences of a lane.
pub const MAX_SEQUENCE_STEP: u64 = 1 << 20;

const LANE_KEY: usize = 40;

/// What a lane remembers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    sequence: u64,
    stamp_ms: u64,
    reply: Reply,
}

fn lane_key(scope: &[u8; 32], client_id: u64) -> [u8; LANE_KEY] {
    let mut key = [0u8; LANE_KEY];
    key[..32].copy_from_slice(scope);
    key[32..].copy_from_slice(&client_id.to_be_bytes());
    key
}

fn scope_age_key(lane: &[u8], stamp_ms: u64) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(&lane[..32]);
    key[32..40].copy_from_slice(&stamp_ms.to_be_bytes());
    key[40..].copy_from_slice(&lane[32..]);
    key
}

/// The session tables of one write transaction.
pub(crate) struct SessionTables<'t> {
    sessions: Table<'t, &'static [u8], &'static [u8]>,
    age: Table<'t, (u64, &'static [u8]), ()>,
    scope_age: Table<'t, &'static [u8], ()>,
    counts: Table<'t, &'static [u8], u64>,
}

/// What the lane says about a request.
pub(crate) enum Lookup {
    /// Applied before: this is its reply.
    Applied(Reply),
    /// Not to be applied (an older sequence, or a jump no client makes).
    Refused(Reply),
    /// New: apply it.
    New,
}

impl<'t> SessionTables<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> io::Result<Self> {
        Ok(Self {
            sessions: txn.open_table(CLIENT_SESSIONS).map_err(io_err)?,
            age: txn.open_table(CLIENT_SESSION_AGE).map_err(io_err)?,
            scope_age: txn.open_table(CLIENT_SESSION_SCOPE_AGE).map_err(io_err)?,
            counts: txn.open_table(CLIENT_SESSION_COUNTS).map_err(io_err)?,
        })
    }

    /// Drops every session table (before an install) and the legacy ones.
    pub(crate) fn delete_all(txn: &WriteTransaction) -> io::Result<()> {
        txn.delete_table(CLIENT_SESSIONS).map_err(io_err)?;
        txn.delete_table(CLIENT_SESSION_AGE).map_err(io_err)?;
        txn.delete_table(CLIENT_SESSION_SCOPE_AGE).map_err(io_err)?;
        txn.delete_table(CLIENT_SESSION_COUNTS).map_err(io_err)?;
        Self::delete_legacy(txn)
    }

    /// Drops the tables of builds before scoped lanes.
    pub(crate) fn delete_legacy(txn: &WriteTransaction) -> io::Result<()> {
        txn.delete_table(LEGACY_SESSIONS).map_err(io_err)?;
        txn.delete_table(LEGACY_SESSION_AGE).map_err(io_err)?;
        Ok(())
    }

    pub(crate) fn lookup(&self, scope: &[u8; 32], origin: ClientSeq) -> io::Result<Lookup> {
        let key = lane_key(scope, origin.client_id);
        let Some(raw) = self.sessions.get(key.as_slice()).map_err(io_err)? else {
            if origin.sequence > MAX_FIRST_SEQUENCE {
                return Ok(Lookup::Refused(Reply(Err(CaddyError::precondition(format!(
                    "request {} of client {:x} starts a new client at a sequence above {MAX_FIRST_SEQUENCE}; \
                     a client numbers its writes from 1",
                    origin.sequence, origin.client_id
                ))))));
            }
            return Ok(Lookup::New);
        };
        let session: Session = open_record("session", raw.value())?;
        Ok(judge(&session, origin))
    }

    /// Remembers `reply` as the answer to `origin` at `stamp_ms`.
    pub(crate) fn store(
        &mut self,
        scope: &[u8; 32],
        origin: ClientSeq,
        stamp_ms: u64,
        reply: &Reply,
    ) -> io::Result<()> {
        let key = lane_key(scope, origin.client_id);
        let old = match self.sessions.get(key.as_slice()).map_err(io_err)? {
            Some(raw) => Some(open_record::<Session>("session", raw.value())?.stamp_ms),
            None => None,
        };
        match old {
            Some(old_stamp) => {
                self.age.remove((old_stamp, key.as_slice())).map_err(io_err)?;
                self.scope_age.remove(scope_age_key(&key, old_stamp).as_slice()).map_err(io_err)?;
            }
            None => {
                let held = self.counts.get(scope.as_slice()).map_err(io_err)?.map_or(0, |v| v.value());
                if held >= MAX_LANES_PER_SCOPE {
                    self.evict_oldest(scope)?;
                }
                self.add_count(scope, 1)?;
            }
        }
        let session = Session { sequence: origin.sequence, stamp_ms, reply: remembered(reply) };
        self.sessions.insert(key.as_slice(), seal(&session)?.as_slice()).map_err(io_err)?;
        self.age.insert((stamp_ms, key.as_slice()), ()).map_err(io_err)?;
        self.scope_age.insert(scope_age_key(&key, stamp_ms).as_slice(), ()).map_err(io_err)?;
        Ok(())
    }

    /// Puts back a lane read from a snapshot, indexes included.
    pub(crate) fn restore(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() != LANE_KEY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a session key of the wrong length"));
        }
        let session: Session = open_record("session", value)?;
        self.sessions.insert(key, value).map_err(io_err)?;
        self.age.insert((session.stamp_ms, key), ()).map_err(io_err)?;
        self.scope_age.insert(scope_age_key(key, session.stamp_ms).as_slice(), ()).map_err(io_err)?;
        let mut scope = [0u8; 32];
        scope.copy_from_slice(&key[..32]);
        self.add_count(&scope, 1)
    }

    /// Forgets up to a bounded number of lanes unused for a day.
    pub(crate) fn sweep(&mut self, now_ms: u64) -> io::Result<()> {
        let cutoff = now_ms.saturating_sub(limits::SESSION_TTL_MS);
        let mut expired = Vec::new();
        for item in self.age.range((0u64, [0u8; 0].as_slice())..(cutoff, [0u8; 0].as_slice())).map_err(io_err)? {
            let (k, _) = item.map_err(io_err)?;
            let (stamp, lane) = k.value();
            expired.push((stamp, lane.to_vec()));
            if expired.len() >= limits::SESSION_SWEEP_PER_APPLY {
                break;
            }
        }
        for (stamp, lane) in expired {
            self.forget(&lane, stamp)?;
        }
        Ok(())
    }

    fn evict_oldest(&mut self, scope: &[u8; 32]) -> io::Result<()> {
        let oldest = {
            let mut range = self.scope_age.range(scope.as_slice()..).map_err(io_err)?;
            match range.next() {
                Some(item) => {
                    let (k, _) = item.map_err(io_err)?;
                    let k = k.value();
                    (k.len() == 48 && k[..32] == scope[..]).then(|| k.to_vec())
                }
                None => None,
            }
        };
        let Some(index_key) = oldest else { return Ok(()) };
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&index_key[32..40]);
        let mut lane = [0u8; LANE_KEY];
        lane[..32].copy_from_slice(scope);
        lane[32..].copy_from_slice(&index_key[40..]);
        metrics::counter!("caddy_client_sessions_evicted_total").increment(1);
        self.forget(&lane, u64::from_be_bytes(stamp))
    }

    fn forget(&mut self, lane: &[u8], stamp_ms: u64) -> io::Result<()> {
        self.age.remove((stamp_ms, lane)).map_err(io_err)?;
        self.scope_age.remove(scope_age_key(lane, stamp_ms).as_slice()).map_err(io_err)?;
        if self.sessions.remove(lane).map_err(io_err)?.is_some() {
            let mut scope = [0u8; 32];
            scope.copy_from_slice(&lane[..32]);
            self.add_count(&scope, -1)?;
        }
        Ok(())
    }

    fn add_count(&mut self, scope: &[u8; 32], delta: i64) -> io::Result<()> {
        let held = self.counts.get(scope.as_slice()).map_err(io_err)?.map_or(0, |v| v.value());
        let held = held.saturating_add_signed(delta);
        if held == 0 {
            self.counts.remove(scope.as_slice()).map_err(io_err)?;
        } else {
            self.counts.insert(scope.as_slice(), held).map_err(io_err)?;
        }
        Ok(())
    }
}

fn judge(session: &Session, origin: ClientSeq) -> Lookup {
    if origin.sequence == session.sequence {
        return Lookup::Applied(session.reply.clone());
    }
    if origin.sequence < session.sequence {
        return Lookup::Refused(Reply(Err(CaddyError::precondition(format!(
            "request {} of client {:x} is older than its last applied request {}; it was not applied again",
            origin.sequence, origin.client_id, session.sequence
        )))));
    }
    if origin.sequence - session.sequence > MAX_SEQUENCE_STEP {
        return Lookup::Refused(Reply(Err(CaddyError::precondition(format!(
            "request {} of client {:x} jumps more than {MAX_SEQUENCE_STEP} past its last applied request {}; \
             it was not applied",
            origin.sequence, origin.client_id, session.sequence
        )))));
    }
    Lookup::New
}

/// The reply as a lane keeps it: a put's previous value only when short.
fn remembered(reply: &Reply) -> Reply {
    match &reply.0 {
        Ok(ReplyBody::Put { revision, previous: Some(previous) })
            if previous.value.len() > MAX_REMEMBERED_VALUE_BYTES =>
        {
            let previous = KeyValue { value: Vec::new(), ..previous.clone() };
            Reply(Ok(ReplyBody::PutPreviousOmitted { revision: *revision, previous }))
        }
        _ => reply.clone(),
    }
}

/// The reply remembered for `origin` in a read transaction (a retried
/// upload asks before judging its request anew).
pub(crate) fn applied_reply(
    sessions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    scope: &[u8; 32],
    origin: ClientSeq,
) -> io::Result<Option<Reply>> {
    let key = lane_key(scope, origin.client_id);
    let Some(raw) = sessions.get(key.as_slice()).map_err(io_err)? else { return Ok(None) };
    let session: Session = open_record("session", raw.value())?;
    Ok((session.sequence == origin.sequence).then_some(session.reply))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn seq(client_id: u64, sequence: u64) -> ClientSeq {
        ClientSeq { client_id, sequence }
    }

    #[test]
    fn sequences_must_start_low_and_move_by_small_steps() {
        let s = Session { sequence: 10, stamp_ms: 0, reply: Reply::default() };
        assert!(matches!(judge(&s, seq(1, 10)), Lookup::Applied(_)));
        assert!(matches!(judge(&s, seq(1, 9)), Lookup::Refused(_)));
        assert!(matches!(judge(&s, seq(1, 11)), Lookup::New));
        assert!(matches!(judge(&s, seq(1, 10 + MAX_SEQUENCE_STEP)), Lookup::New));
        assert!(matches!(judge(&s, seq(1, 11 + MAX_SEQUENCE_STEP)), Lookup::Refused(_)));
        assert!(matches!(judge(&s, seq(1, u64::MAX)), Lookup::Refused(_)));
    }

    #[test]
    fn a_long_previous_value_is_left_out_of_the_remembered_reply() {
        let kv =
            |n: usize| KeyValue { key: "k".into(), value: vec![7; n], create_revision: 1, mod_revision: 2, version: 2 };
        let short = Reply(Ok(ReplyBody::Put { revision: 3, previous: Some(kv(MAX_REMEMBERED_VALUE_BYTES)) }));
        assert_eq!(remembered(&short), short);
        let long = Reply(Ok(ReplyBody::Put { revision: 3, previous: Some(kv(MAX_REMEMBERED_VALUE_BYTES + 1)) }));
        match remembered(&long).0 {
            Ok(ReplyBody::PutPreviousOmitted { revision: 3, previous }) => {
                assert!(previous.value.is_empty());
                assert_eq!((previous.mod_revision, previous.version), (2, 2));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod scenarios;
