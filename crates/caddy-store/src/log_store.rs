//! The Raft log on redb.
//!
//! Invariants:
//! - Keys of the `log` table are contiguous indexes in
//!   `(last_purged, last_log]`; every value is a sealed [`Entry`].
//! - The vote is durable before `save_vote` returns.
//! - An append is acknowledged (its `IOFlushed` completed) only after a
//!   durable redb commit that follows it.
//! - Replication reads ([`RaftLogReader::limited_get_log_entries`]) return
//!   at most [`REPLICATION_BATCH_BYTES`] of stored entries (but always at
//!   least one), so an AppendEntries built from them stays far below the
//!   peer message limit however far behind a follower is.

use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc;

use caddy_core::codec;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogIdOptionExt, OptionalSend};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::backend::Disk;
use crate::types::{Entry, LogId, TypeConfig, Vote};
use crate::{RECORD_VERSION, StoreError, corrupt, io_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// Stored bytes of log entries one replication read returns at most (one
/// entry is always returned, whatever its size; entries are bounded by the
/// client frame limit, itself capped well below the peer message limit).
pub const REPLICATION_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// How appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// A dedicated thread fsyncs, coalescing every append queued meanwhile
    /// into one fsync (group commit). Production.
    Background,
    /// `append` fsyncs before returning. Deterministic tests under paused time.
    Inline,
}

/// Handle to the Raft log; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    flusher: Option<mpsc::Sender<IOFlushed<TypeConfig>>>,
}

impl LogStore {
    /// Opens or creates the log database on `disk`.
    pub fn open(disk: &Disk, mode: FlushMode) -> Result<Self, StoreError> {
        // The log is written once and read back mostly while it is recent.
        let db = Arc::new(disk.open_db("raft-log", 8 << 20)?);
        let txn = db.begin_write().map_err(|e| StoreError::Storage(e.to_string()))?;
        {
            txn.open_table(LOG).map_err(|e| StoreError::Storage(e.to_string()))?;
            txn.open_table(META).map_err(|e| StoreError::Storage(e.to_string()))?;
        }
        txn.commit().map_err(|e| StoreError::Storage(e.to_string()))?;
        let flusher = match mode {
            FlushMode::Inline => None,
            FlushMode::Background => {
                let (tx, rx) = mpsc::channel();
                let db = db.clone();
                std::thread::Builder::new().name("raft-log-fsync".into()).spawn(move || flush_loop(&db, &rx))?;
                Some(tx)
            }
        };
        Ok(Self { db, flusher })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            None => Ok(None),
            Some(v) => {
                let (_, value) = codec::open(RECORD_VERSION, v.value()).map_err(|e| corrupt(key, e))?;
                Ok(Some(value))
            }
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T, durability: Durability) -> io::Result<()> {
        let bytes = codec::seal(RECORD_VERSION, value).map_err(io_err)?;
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(durability).map_err(io_err)?;
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    /// Index of the last entry and of the last purged one (for metrics).
    pub fn bounds(&self) -> io::Result<(u64, u64)> {
        let purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            table.last().map_err(io_err)?.map(|(k, _)| k.value())
        };
        let purged_index = purged.index().unwrap_or(0);
        Ok((last.unwrap_or(purged_index), purged_index))
    }
}

fn durable_commit(db: &Database) -> io::Result<()> {
    let mut txn = db.begin_write().map_err(io_err)?;
    txn.set_durability(Durability::Immediate).map_err(io_err)?;
    txn.commit().map_err(io_err)
}

fn flush_loop(db: &Database, rx: &mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let started = std::time::Instant::now();
        let result = durable_commit(db);
        metrics::histogram!("caddy_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("caddy_log_fsync_batch").record(batch.len() as f64);
        for callback in batch {
            callback.io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

fn decode_entry(index: u64, bytes: &[u8]) -> io::Result<Entry> {
    let (_, entry): (u8, Entry) =
        codec::open(RECORD_VERSION, bytes).map_err(|e| corrupt(&format!("log entry {index}"), e))?;
    if entry.log_id.index != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry stored at {index} claims index {}", entry.log_id.index),
        ));
    }
    Ok(entry)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        for item in table.range(bounds).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            out.push(decode_entry(k.value(), v.value())?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.read_meta(KEY_VOTE)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        read_limited(&self.db, start, end, REPLICATION_BATCH_BYTES)
    }
}

/// Entries `[start, end)` in order, stopping before the one that would take
/// the stored bytes read past `budget` (the first entry is always read).
fn read_limited(db: &Database, start: u64, end: u64, budget: usize) -> io::Result<Vec<Entry>> {
    let txn = db.begin_read().map_err(io_err)?;
    let table = txn.open_table(LOG).map_err(io_err)?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in table.range(start..end).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let size = v.value().len();
        if !out.is_empty() && bytes.saturating_add(size) > budget {
            break;
        }
        bytes = bytes.saturating_add(size);
        out.push(decode_entry(k.value(), v.value())?);
    }
    Ok(out)
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            match table.last().map_err(io_err)? {
                Some((k, v)) => Some(decode_entry(k.value(), v.value())?.log_id),
                None => None,
            }
        };
        let last_log_id = last.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.write_meta(KEY_VOTE, vote, Durability::Immediate)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // A hint only (openraft re-learns the commit index from the leader),
        // so it rides on the next fsync.
        self.write_meta(KEY_COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::None).map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            for entry in entries {
                let bytes = codec::seal(RECORD_VERSION, &entry).map_err(io_err)?;
                table.insert(entry.log_id.index, bytes.as_slice()).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)?;
        match &self.flusher {
            Some(tx) => {
                if let Err(mpsc::SendError(callback)) = tx.send(callback) {
                    callback.io_completed(Err(io::Error::other("log flusher stopped")));
                }
            }
            None => callback.io_completed(durable_commit(&self.db)),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.next_index();
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::None).map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table.retain_in(from.., |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let bytes = codec::seal(RECORD_VERSION, &log_id).map_err(io_err)?;
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::None).map_err(io_err)?;
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            meta.insert(KEY_PURGED, bytes.as_slice()).map_err(io_err)?;
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table.retain_in(..=log_id.index, |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}
