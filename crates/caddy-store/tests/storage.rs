//! Storage tests: openraft's conformance suite, power-loss durability,
//! snapshot round trips and corruption detection.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{Seek, SeekFrom, Write};

use caddy_core::{ClientSeq, Command, Proposal};
use caddy_store::backend::{CrashableDisk, Disk};
use caddy_store::{Entry, FlushMode, LogStore, StateMachineStore, TypeConfig, verify_snapshot_file};
use openraft::entry::RaftEntry;
use openraft::errors::ErrorSource;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, StorageError};

struct DirBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for DirBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
        let disk = Disk::Dir(dir.path().to_path_buf());
        let log = LogStore::open(&disk, FlushMode::Background)
            .map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
        let sm = StateMachineStore::open(&disk).map_err(|e| StorageError::read(ErrorSource::from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(DirBuilder).await
}

fn log_id(term: u64, index: u64) -> caddy_store::LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn put_entry(term: u64, index: u64, key: &str, value: &str, client: Option<(u64, u64)>) -> Entry {
    Entry::new(
        log_id(term, index),
        EntryPayload::Normal(Proposal {
            origin: client.map(|(client_id, sequence)| ClientSeq { client_id, sequence }),
            stamp_ms: 1_000 + index,
            command: Command::KvPut { key: key.into(), value: value.as_bytes().to_vec(), if_revision: None },
        }),
    )
}

async fn append_durably(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
}

#[tokio::test]
async fn acknowledged_appends_and_votes_survive_power_loss() {
    let snaps = tempfile::tempdir().unwrap();
    let crashable = CrashableDisk::new(snaps.path());
    let disk = Disk::Crashable(crashable.clone());
    {
        let mut log = LogStore::open(&disk, FlushMode::Background).unwrap();
        let vote = openraft::Vote::new(3, 1);
        log.save_vote(&vote).await.unwrap();
        append_durably(&mut log, (1..=5).map(|i| put_entry(3, i, "k", "v", None)).collect()).await;
        // Visible but never acknowledged: append returns, the callback is dropped unfired.
        log.append(vec![put_entry(3, 6, "k", "lost", None)], IOFlushed::noop()).await.ok();
        // The flusher may or may not have synced entry 6 by now; what matters
        // is that 1..=5 and the vote are there after the power cut.
        crashable.crash();
    }
    let mut log = LogStore::open(&disk, FlushMode::Inline).unwrap();
    let entries = log.try_get_log_entries(1..=5).await.unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(log.read_vote().await.unwrap(), Some(openraft::Vote::new(3, 1)));
}

#[tokio::test]
async fn unsynced_writes_are_lost_on_crash_so_the_test_backend_is_honest() {
    let snaps = tempfile::tempdir().unwrap();
    let crashable = CrashableDisk::new(snaps.path());
    let disk = Disk::Crashable(crashable.clone());
    {
        let mut sm = StateMachineStore::open(&disk).unwrap();
        // State-machine commits are not fsynced by design.
        apply(&mut sm, vec![put_entry(1, 1, "a", "1", None)]).await;
        assert_eq!(sm.revision(), 1);
        crashable.crash();
    }
    let sm = StateMachineStore::open(&disk).unwrap();
    assert_eq!(sm.revision(), 0, "an unsynced state-machine commit must not survive a crash");
    assert!(sm.applied().is_none());
}

#[tokio::test]
async fn exactly_once_replays_the_remembered_reply() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::Dir(dir.path().to_path_buf());
    let mut sm = StateMachineStore::open(&disk).unwrap();
    apply(&mut sm, vec![put_entry(1, 1, "k", "first", Some((9, 1)))]).await;
    // The same request retried (e.g. after a leader change) lands in the log again.
    apply(&mut sm, vec![put_entry(1, 2, "k", "first", Some((9, 1)))]).await;
    assert_eq!(sm.revision(), 1, "a retried request must not apply twice");
    apply(&mut sm, vec![put_entry(1, 3, "k", "second", Some((9, 2)))]).await;
    assert_eq!(sm.revision(), 2);
    // An older sequence after a newer one is refused, not applied.
    apply(&mut sm, vec![put_entry(1, 4, "k", "stale", Some((9, 1)))]).await;
    assert_eq!(sm.get("k").unwrap().unwrap().value, b"second");
    assert_eq!(sm.applied().unwrap().index, 4);
}

#[tokio::test]
async fn snapshot_round_trip_and_corruption_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::Dir(dir.path().join("a"));
    let mut sm = StateMachineStore::open(&disk).unwrap();
    let entries: Vec<Entry> = (1..=200).map(|i| put_entry(2, i, &format!("key/{i:04}"), "value", None)).collect();
    apply(&mut sm, entries).await;
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.as_ref().unwrap().index, 200);

    // Install into a fresh replica.
    let other_disk = Disk::Dir(dir.path().join("b"));
    let mut other = StateMachineStore::open(&other_disk).unwrap();
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    other.install_snapshot(&current.meta, current.snapshot).await.unwrap();
    assert_eq!(other.revision(), 200);
    assert_eq!(other.get("key/0042").unwrap().unwrap().mod_revision, 42);
    let (list, more) = other.list("key/", "key/0198", 10).unwrap();
    assert_eq!(list.len(), 2);
    assert!(!more);
    assert_eq!(other.applied().unwrap().index, 200);

    // Flip one byte in the middle of a copy: detected, state untouched.
    let info = sm.snapshot_info().unwrap();
    let bad_path = dir.path().join("bad.snap");
    std::fs::copy(&info.path, &bad_path).unwrap();
    {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&bad_path).unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(&[0xAB]).unwrap();
    }
    let mut bad = std::fs::File::open(&bad_path).unwrap();
    let err = verify_snapshot_file(&mut bad).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    let third_disk = Disk::Dir(dir.path().join("c"));
    let mut third = StateMachineStore::open(&third_disk).unwrap();
    let err = third.install_snapshot(&current_meta(&sm), bad).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert_eq!(third.revision(), 0, "a corrupted snapshot must not be applied");

    // Truncated file.
    std::fs::copy(&info.path, &bad_path).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad_path).unwrap();
    f.set_len(100).unwrap();
    let err = verify_snapshot_file(&mut std::fs::File::open(&bad_path).unwrap()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

fn current_meta(sm: &StateMachineStore) -> caddy_store::SnapshotMeta {
    sm.snapshot_info().unwrap().meta
}

#[tokio::test]
async fn a_corrupted_log_record_is_reported_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::Dir(dir.path().to_path_buf());
    {
        let mut log = LogStore::open(&disk, FlushMode::Inline).unwrap();
        append_durably(&mut log, (1..=3).map(|i| put_entry(1, i, "key", "a-distinctive-value", None)).collect()).await;
    }
    // Flip bytes of the stored value inside the database file.
    let path = dir.path().join("raft-log.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = b"a-distinctive-value";
    let mut flipped = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        if &bytes[i..i + needle.len()] == needle {
            bytes[i] ^= 0x20;
            flipped += 1;
        }
        i += 1;
    }
    assert!(flipped > 0);
    std::fs::write(&path, &bytes).unwrap();
    let mut log = LogStore::open(&disk, FlushMode::Inline).unwrap();
    let err = log.try_get_log_entries(1..=3).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn compare_and_set_and_deletes_keep_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    let mut events = sm.subscribe_events();
    let cas = |index, rev| {
        Entry::new(
            log_id(1, index),
            EntryPayload::Normal(Proposal {
                origin: None,
                stamp_ms: 5,
                command: Command::KvPut { key: "c".into(), value: b"x".to_vec(), if_revision: Some(rev) },
            }),
        )
    };
    apply(&mut sm, vec![cas(1, 0)]).await; // create only if absent: ok
    apply(&mut sm, vec![cas(2, 0)]).await; // absent no more: refused
    assert_eq!(sm.revision(), 1);
    apply(&mut sm, vec![cas(3, 1)]).await; // matches current revision: ok
    assert_eq!(sm.get("c").unwrap().unwrap().version, 2);
    let del = Entry::new(
        log_id(1, 4),
        EntryPayload::Normal(Proposal {
            origin: None,
            stamp_ms: 5,
            command: Command::KvDelete { key: "c".into(), if_revision: None },
        }),
    );
    apply(&mut sm, vec![del]).await;
    assert_eq!(sm.revision(), 3);
    assert!(sm.get("c").unwrap().is_none());
    let history = sm.events_from(1, "", 100).unwrap();
    assert_eq!(history.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![1, 2, 3]);
    let mut live = Vec::new();
    while let Ok(caddy_store::WatchMessage::Event(e)) = events.try_recv() {
        live.push(e.revision);
    }
    assert_eq!(live, vec![1, 2, 3]);
}

#[tokio::test]
async fn watch_history_is_compacted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    sm.set_event_history(5);
    apply(&mut sm, (1..=12).map(|i| put_entry(1, i, &format!("w{i}"), "v", None)).collect()).await;
    assert_eq!(sm.compacted_revision(), 7);
    let err = sm.events_from(3, "", 10).unwrap_err();
    assert_eq!(err.code, caddy_core::ErrorCode::FailedPrecondition);
    assert!(err.message.contains("compacted"), "{}", err.message);
    let kept: Vec<u64> = sm.events_from(8, "", 10).unwrap().iter().map(|e| e.revision).collect();
    assert_eq!(kept, vec![8, 9, 10, 11, 12]);
}

/// Random damage to a valid snapshot file (truncation, bit flips, garbage)
/// is always reported as an error, never a panic or a silent success.
#[tokio::test]
async fn damaged_snapshot_files_are_always_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(&Disk::Dir(dir.path().join("src"))).unwrap();
    apply(&mut sm, (1..=40).map(|i| put_entry(1, i, &format!("k{i}"), "some value", Some((i, 1)))).collect()).await;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    drop(snapshot);
    let good = std::fs::read(sm.snapshot_info().unwrap().path).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let path = dir.path().join("damaged.snap");
    for round in 0..300 {
        let mut bytes = good.clone();
        match round % 3 {
            0 => bytes.truncate((next() as usize) % bytes.len()),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            _ => bytes = (0..(next() % 4096)).map(|_| next() as u8).collect(),
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        assert!(verify_snapshot_file(&mut file).is_err(), "round {round}: damaged snapshot accepted");
    }
}
