//! Where a node's databases live: files on disk, or (for tests) memory that
//! can simulate power loss.
//!
//! [`CrashableDisk`] keeps two images of each database: what has been
//! written and what has been synced. [`CrashableDisk::crash`] throws away
//! everything written since the last `sync_data`, exactly what a power cut
//! does to a page cache, so tests can check that acknowledged writes were
//! really fsynced.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, StorageBackend};

use crate::StoreError;

/// How long opening a database waits for another process to release it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where to keep a node's databases.
#[derive(Debug, Clone)]
pub enum Disk {
    /// Real files under a directory, fsynced by redb.
    Dir(PathBuf),
    /// Memory that can lose unsynced writes on demand (tests only).
    Crashable(CrashableDisk),
}

impl Disk {
    /// Opens (or creates) the database `name` on this disk with a page
    /// cache of at most `cache_bytes` (redb's default, 1 GiB, would let an
    /// idle node grow far past its working set).
    pub fn open_db(&self, name: &str, cache_bytes: usize) -> Result<Database, StoreError> {
        self.open_db_waiting(name, cache_bytes, LOCK_WAIT)
    }

    fn open_db_waiting(
        &self,
        name: &str,
        cache_bytes: usize,
        lock_wait: std::time::Duration,
    ) -> Result<Database, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        match self {
            Disk::Dir(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("{name}.redb"));
                // A process killed a moment ago may still hold the file's
                // lock while its last threads exit (a supervisor restarting
                // it at once races with that); a second live process holds
                // it for good, and that is reported by name.
                let deadline = std::time::Instant::now() + lock_wait;
                let mut said = false;
                loop {
                    match builder.create(&path) {
                        Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                            if !said {
                                tracing::warn!(path = %path.display(), "database is locked by another process; waiting for it");
                                said = true;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                            return Err(StoreError::Locked(path));
                        }
                        other => return Ok(other?),
                    }
                }
            }
            Disk::Crashable(disk) => {
                let backend = disk.file(name);
                Ok(builder.create_with_backend(backend)?)
            }
        }
    }

    /// Directory for snapshot files.
    pub fn snapshot_dir(&self) -> PathBuf {
        match self {
            Disk::Dir(dir) => dir.join("snapshots"),
            Disk::Crashable(disk) => disk.snapshot_dir.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Image {
    written: Vec<u8>,
    synced: Vec<u8>,
    /// Byte ranges written since the last sync, merged when they overlap or
    /// touch: a sync copies only these (copying the whole image made every
    /// fsync cost the file's size, quadratic over a test's run).
    dirty: BTreeMap<usize, usize>,
    /// Bumped by a crash: handles opened before it belong to a "dead"
    /// process, so whatever they still do (such as redb's clean shutdown on
    /// drop) never reaches the disk.
    generation: u64,
}

/// A set of in-memory database files that survive "process restarts" (the
/// [`Database`] being dropped and reopened) and lose unsynced writes on
/// [`CrashableDisk::crash`].
#[derive(Debug, Clone)]
pub struct CrashableDisk {
    files: Arc<Mutex<BTreeMap<String, Arc<Mutex<Image>>>>>,
    snapshot_dir: PathBuf,
}

impl CrashableDisk {
    /// A new empty disk; snapshot files go under `snapshot_dir` (real files,
    /// written with fsync and rename, so they are durable when they exist).
    pub fn new(snapshot_dir: &Path) -> Self {
        Self { files: Arc::default(), snapshot_dir: snapshot_dir.to_path_buf() }
    }

    fn file(&self, name: &str) -> CrashableFile {
        let mut files = lock(&self.files);
        let image = files.entry(name.to_string()).or_default().clone();
        let generation = lock(&image).generation;
        CrashableFile { image, generation }
    }

    /// Simulates power loss: every file reverts to its last synced image,
    /// and handles still open can no longer write. Call it while the
    /// databases are still open, then drop them and reopen.
    pub fn crash(&self) {
        for image in lock(&self.files).values() {
            let mut image = lock(image);
            image.written = image.synced.clone();
            image.dirty.clear();
            image.generation += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another test thread panicked mid-write; the
    // image is still bytes, so keep going rather than cascade the panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds `[start, end)` to the set of dirty ranges, merging neighbours.
fn mark_dirty(dirty: &mut BTreeMap<usize, usize>, mut start: usize, mut end: usize) {
    // The range starting at or before `start` may reach into the new one.
    if let Some((&s, &e)) = dirty.range(..=start).next_back()
        && e >= start
    {
        start = s;
        end = end.max(e);
        dirty.remove(&s);
    }
    // Ranges starting inside the new one are absorbed.
    while let Some((&s, &e)) = dirty.range(start..=end).next() {
        end = end.max(e);
        dirty.remove(&s);
    }
    dirty.insert(start, end);
}

#[derive(Debug)]
struct CrashableFile {
    image: Arc<Mutex<Image>>,
    generation: u64,
}

impl StorageBackend for CrashableFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(lock(&self.image).written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let image = lock(&self.image);
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.checked_add(out.len()).ok_or_else(|| io::Error::other("read overflow"))?;
        let src = image.written.get(start..end).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut image = lock(&self.image);
        if image.generation == self.generation {
            let old = image.written.len();
            image.written.resize(len, 0);
            // Bytes cut off and later grown back read as zeros, whatever the
            // synced image held there.
            if len < old {
                mark_dirty(&mut image.dirty, len, old);
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut image = lock(&self.image);
        if image.generation == self.generation {
            let image = &mut *image;
            image.synced.resize(image.written.len(), 0);
            for (start, end) in std::mem::take(&mut image.dirty) {
                let end = end.min(image.written.len());
                if start < end {
                    image.synced[start..end].copy_from_slice(&image.written[start..end]);
                }
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut image = lock(&self.image);
        if image.generation != self.generation {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.checked_add(data.len()).ok_or_else(|| io::Error::other("write overflow"))?;
        if image.written.len() < end {
            image.written.resize(end, 0);
        }
        image.written[start..end].copy_from_slice(data);
        mark_dirty(&mut image.dirty, start, end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn opening_waits_for_a_holder_that_lets_go_and_names_one_that_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = Disk::Dir(dir.path().to_path_buf());
        let held = disk.open_db("log", 1 << 20).expect("first open");

        let err = disk.open_db_waiting("log", 1 << 20, Duration::from_millis(300)).expect_err("still held");
        assert!(matches!(&err, StoreError::Locked(p) if p.ends_with("log.redb")), "{err}");
        assert!(err.to_string().contains("another caddyd"), "{err}");

        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        disk.open_db_waiting("log", 1 << 20, Duration::from_secs(10)).expect("opened once released");
        release.join().expect("release thread");
    }
}
