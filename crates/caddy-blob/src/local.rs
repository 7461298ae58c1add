//! The chunk store on local disk.
//!
//! Layout under the store's directory:
//! - `chunks/<tenant>/<hh>/<hex>`: one file per chunk, named by the lowercase
//!   hex blake3 of its bytes, `hh` being the first two hex characters;
//! - `tmp/`: chunks being written (emptied on open);
//! - `quarantine/<tenant>/<hex>.<ms>.<n>`: corrupt copies set aside.
//!
//! A put writes `tmp/<name>`, fsyncs it, creates missing directories (each
//! fsynced into its parent), renames the file into place and fsyncs its
//! directory. A file at its final path is therefore always complete.

use std::cmp::Ordering as CmpOrdering;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    BlobError, ChunkEntry, ChunkHash, ChunkKey, CorruptCounter, MAX_CHUNK_BYTES, PutOutcome, StoreUsage, blocking,
    tenant_path_cmp, validate_tenant, verify_for_put,
};

/// Chunks stored as files under one directory (see the module docs for the
/// layout). Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    chunks: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    corrupt: CorruptCounter,
    seq: AtomicU64,
    #[cfg(test)]
    crash_before_rename: std::sync::atomic::AtomicBool,
}

impl LocalStore {
    /// Opens (creating if needed) a store in `dir`, and deletes anything left
    /// in `dir/tmp/` by an interrupted put.
    ///
    /// Does blocking file I/O; call it at startup or from a blocking task.
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let chunks = dir.join("chunks");
        let tmp = dir.join("tmp");
        let quarantine = dir.join("quarantine");
        for sub in ["chunks", "tmp", "quarantine"] {
            ensure_subdir(dir, sub)?;
        }
        let mut removed = 0usize;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&tmp)?;
            tracing::info!(dir = %dir.display(), removed, "removed unfinished chunk writes");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                chunks,
                tmp,
                quarantine,
                corrupt: CorruptCounter::default(),
                seq: AtomicU64::new(0),
                #[cfg(test)]
                crash_before_rename: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// See [`BlobStore::put`](crate::BlobStore::put).
    ///
    /// An existing copy is read back and verified before it is trusted; a
    /// corrupt one is quarantined and replaced.
    pub async fn put(&self, key: &ChunkKey, data: Bytes) -> Result<PutOutcome, BlobError> {
        verify_for_put(key, &data).await?;
        let this = self.clone();
        let key = key.clone();
        blocking(move || this.put_blocking(&key, &data)).await
    }

    /// See [`BlobStore::get`](crate::BlobStore::get).
    pub async fn get(&self, key: &ChunkKey) -> Result<Option<Bytes>, BlobError> {
        key.validate()?;
        let this = self.clone();
        let key = key.clone();
        blocking(move || this.get_blocking(&key)).await
    }

    /// See [`BlobStore::has`](crate::BlobStore::has).
    pub async fn has(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        key.validate()?;
        let path = self.chunk_path(key);
        blocking(move || is_file(&path)).await
    }

    /// See [`BlobStore::touch`](crate::BlobStore::touch).
    pub async fn touch(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        key.validate()?;
        let path = self.chunk_path(key);
        blocking(move || match fs::File::options().write(true).open(&path) {
            Ok(f) => {
                f.set_modified(std::time::SystemTime::now())?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// See [`BlobStore::has_many`](crate::BlobStore::has_many).
    pub async fn has_many(&self, tenant: &str, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlobError> {
        validate_tenant(tenant)?;
        let paths: Vec<PathBuf> = hashes.iter().map(|hash| self.path_for(tenant, hash)).collect();
        blocking(move || paths.iter().map(|p| is_file(p)).collect()).await
    }

    /// See [`BlobStore::delete`](crate::BlobStore::delete).
    pub async fn delete(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        key.validate()?;
        let path = self.chunk_path(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// See [`BlobStore::list`](crate::BlobStore::list).
    pub async fn list(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<ChunkEntry>, BlobError> {
        if let Some(after) = after {
            after.validate()?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let this = self.clone();
        let after = after.cloned();
        blocking(move || {
            let mut out = Vec::with_capacity(limit.min(1024));
            this.walk(after.as_ref(), |entry| {
                out.push(entry);
                out.len() < limit
            })?;
            Ok(out)
        })
        .await
    }

    /// See [`BlobStore::usage`](crate::BlobStore::usage).
    pub async fn usage(&self) -> Result<StoreUsage, BlobError> {
        let this = self.clone();
        blocking(move || {
            let mut usage = StoreUsage::default();
            this.walk(None, |entry| {
                usage.chunks += 1;
                usage.bytes += entry.size;
                true
            })?;
            Ok(usage)
        })
        .await
    }

    /// Number of corrupt chunks found (and quarantined) since open.
    pub fn corrupt_detected(&self) -> u64 {
        self.inner.corrupt.get()
    }

    fn chunk_path(&self, key: &ChunkKey) -> PathBuf {
        self.path_for(&key.tenant, &key.hash)
    }

    /// Path of a chunk; `tenant` must have been validated.
    fn path_for(&self, tenant: &str, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.inner.chunks.join(tenant).join(&hex[..2]).join(hex)
    }

    fn put_blocking(&self, key: &ChunkKey, data: &Bytes) -> Result<PutOutcome, BlobError> {
        let path = self.chunk_path(key);
        if path.symlink_metadata().is_ok() {
            match self.get_blocking(key) {
                Ok(Some(_)) => return Ok(PutOutcome { created: false }),
                // Missing again (deleted meanwhile) or set aside as corrupt:
                // write a good copy.
                Ok(None) | Err(BlobError::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.inner.tmp.join(format!("{}.{}.{seq}", key.hash.to_hex(), std::process::id()));
        let result = self.write_and_publish(key, data, &tmp_path, &path);
        if result.is_err() {
            #[cfg(test)]
            if self.inner.crash_before_rename.load(Ordering::Relaxed) {
                // A simulated crash leaves its temporary file behind.
                return result;
            }
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }

    fn write_and_publish(
        &self,
        key: &ChunkKey,
        data: &[u8],
        tmp_path: &Path,
        path: &Path,
    ) -> Result<PutOutcome, BlobError> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(tmp_path)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);

        let tenant_dir = ensure_subdir(&self.inner.chunks, &key.tenant)?;
        let hex = key.hash.to_hex();
        let hh_dir = ensure_subdir(&tenant_dir, &hex[..2])?;

        #[cfg(test)]
        if self.inner.crash_before_rename.load(Ordering::Relaxed) {
            return Err(io::Error::other("simulated crash before rename").into());
        }

        fs::rename(tmp_path, path)?;
        sync_dir(&hh_dir)?;
        Ok(PutOutcome { created: true })
    }

    fn get_blocking(&self, key: &ChunkKey) -> Result<Option<Bytes>, BlobError> {
        let path = self.chunk_path(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() > MAX_CHUNK_BYTES as u64 {
            drop(file);
            return Err(self.set_aside(key, &path));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        // Never read more than a chunk can hold, even if the file grows.
        file.take(MAX_CHUNK_BYTES as u64 + 1).read_to_end(&mut buf)?;
        if buf.len() > MAX_CHUNK_BYTES || ChunkHash::of(&buf) != key.hash {
            return Err(self.set_aside(key, &path));
        }
        Ok(Some(Bytes::from(buf)))
    }

    /// Moves a corrupt chunk into `quarantine/`, counts it, and returns the
    /// error to report. A failure to move it is logged: the copy stays where
    /// it is, is still never served, and the next put replaces it.
    fn set_aside(&self, key: &ChunkKey, path: &Path) -> BlobError {
        self.inner.corrupt.bump();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let moved = ensure_subdir(&self.inner.quarantine, &key.tenant).and_then(|dir| {
            let dest = dir.join(format!("{}.{}.{seq}", key.hash.to_hex(), now_ms()));
            fs::rename(path, &dest)?;
            sync_dir(&dir)?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(dest)
        });
        match moved {
            Ok(dest) => tracing::error!(
                chunk = %key,
                quarantined = %dest.display(),
                "corrupt chunk detected and set aside"
            ),
            Err(e) => tracing::error!(
                chunk = %key,
                error = %e,
                "corrupt chunk detected; moving it to quarantine failed"
            ),
        }
        BlobError::Corrupt { key: key.clone() }
    }

    /// Visits chunks in key order strictly after `after`, until `visit`
    /// returns false. Reads one directory at a time, sorted.
    fn walk(&self, after: Option<&ChunkKey>, mut visit: impl FnMut(ChunkEntry) -> bool) -> Result<(), BlobError> {
        let after_hex = after.map(|a| a.hash.to_hex());
        let mut tenants: Vec<String> =
            sorted_names(&self.inner.chunks)?.into_iter().filter(|t| validate_tenant(t).is_ok()).collect();
        tenants.sort_by(|a, b| tenant_path_cmp(a, b));
        for tenant in tenants {
            // Position relative to `after`: skip earlier tenants, and within
            // its tenant skip hashes up to and including it.
            let bound = match (after, &after_hex) {
                (Some(a), Some(hex)) => match tenant_path_cmp(&tenant, &a.tenant) {
                    CmpOrdering::Less => continue,
                    CmpOrdering::Equal => Some(hex.as_str()),
                    CmpOrdering::Greater => None,
                },
                _ => None,
            };
            let tenant_dir = self.inner.chunks.join(&tenant);
            for hh in sorted_names(&tenant_dir)? {
                if hh.len() != 2 || !is_lower_hex(&hh) {
                    continue;
                }
                if bound.is_some_and(|b| hh.as_str() < &b[..2]) {
                    continue;
                }
                let hh_dir = tenant_dir.join(&hh);
                for name in sorted_names(&hh_dir)? {
                    if name.len() != 64 || !is_lower_hex(&name) || !name.starts_with(&hh) {
                        continue;
                    }
                    if bound.is_some_and(|b| name.as_str() <= b) {
                        continue;
                    }
                    let Ok(hash) = ChunkHash::parse(&name) else {
                        continue;
                    };
                    let meta = match fs::symlink_metadata(hh_dir.join(&name)) {
                        Ok(m) if m.is_file() => m,
                        Ok(_) => continue,
                        // Deleted while we were listing.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let entry = ChunkEntry {
                        key: ChunkKey { tenant: tenant.clone(), hash },
                        size: meta.len(),
                        modified_ms: meta.modified().map(system_time_ms).unwrap_or(0),
                    };
                    if !visit(entry) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_file(path: &Path) -> Result<bool, BlobError> {
    match fs::metadata(path) {
        Ok(m) => Ok(m.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Names of a directory's entries (UTF-8 ones only), sorted; empty if the
/// directory is gone.
fn sorted_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Creates `parent/name` if missing, fsyncing `parent` so that the new entry
/// survives a crash. `name` must be a validated single path component.
fn ensure_subdir(parent: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = parent.join(name);
    match fs::create_dir(&dir) {
        Ok(()) => sync_dir(parent)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    Ok(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn system_time_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn now_ms() -> u64 {
    system_time_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::BlobStore;

    fn key(tenant: &str, data: &[u8]) -> ChunkKey {
        ChunkKey::for_data(tenant, data).unwrap()
    }

    #[tokio::test]
    async fn corrupt_chunk_is_quarantined_then_restored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::Local(LocalStore::open(dir.path()).unwrap());
        let data = Bytes::from(vec![7u8; 10_000]);
        let k = key("acme", &data);
        assert!(store.put(&k, data.clone()).await.unwrap().created);

        let path = dir.path().join("chunks/acme").join(&k.hash.to_hex()[..2]).join(k.hash.to_hex());
        let mut bytes = fs::read(&path).unwrap();
        bytes[1234] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        match store.get(&k).await {
            Err(BlobError::Corrupt { key }) => assert_eq!(key, k),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(store.corrupt_detected(), 1);
        assert!(!path.exists(), "corrupt file must leave the chunk path");
        let quarantined =
            fs::read_dir(dir.path().join("quarantine/acme")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(quarantined.len(), 1);
        assert_eq!(fs::read(quarantined[0].path()).unwrap(), bytes);
        // Now absent: never served, not listed.
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert!(!store.has(&k).await.unwrap());
        assert!(store.list(None, 10).await.unwrap().is_empty());

        assert!(store.put(&k, data.clone()).await.unwrap().created);
        assert_eq!(store.get(&k).await.unwrap(), Some(data));
        assert_eq!(store.corrupt_detected(), 1);
    }

    #[tokio::test]
    async fn put_over_corrupt_copy_rewrites_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"some chunk bytes");
        let k = key("t", &data);
        store.put(&k, data.clone()).await.unwrap();
        let path = store.chunk_path(&k);
        fs::write(&path, b"some chunk bytez").unwrap();
        // The copy is checked, not trusted: the put rewrites it.
        assert!(store.put(&k, data.clone()).await.unwrap().created);
        assert_eq!(store.corrupt_detected(), 1);
        assert_eq!(store.get(&k).await.unwrap(), Some(data));
    }

    #[tokio::test]
    async fn oversized_file_on_disk_is_corrupt_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let k = key("t", b"x");
        store.put(&k, Bytes::from_static(b"x")).await.unwrap();
        let path = store.chunk_path(&k);
        File::options().write(true).open(&path).unwrap().set_len(MAX_CHUNK_BYTES as u64 + 1).unwrap();
        assert!(matches!(store.get(&k).await, Err(BlobError::Corrupt { .. })));
        assert_eq!(store.corrupt_detected(), 1);
    }

    #[tokio::test]
    async fn tmp_leftovers_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(LocalStore::open(dir.path()).unwrap());
        let tmp = dir.path().join("tmp");
        fs::write(tmp.join("abc.1.0"), b"partial").unwrap();
        fs::create_dir(tmp.join("junkdir")).unwrap();
        fs::write(tmp.join("junkdir/x"), b"x").unwrap();
        let _store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn crash_before_rename_leaves_no_chunk_at_final_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = Bytes::from(vec![3u8; MAX_CHUNK_BYTES]);
        let k = key("t", &data);
        let final_path = store.chunk_path(&k);

        store.inner.crash_before_rename.store(true, Ordering::Relaxed);
        assert!(store.put(&k, data.clone()).await.is_err());
        // The bytes were fully written and synced, but only in tmp/.
        assert!(!final_path.exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("tmp")).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(leftovers.len(), 1);
        assert_eq!(fs::metadata(leftovers[0].path()).unwrap().len(), data.len() as u64);
        drop(store);

        // "Restart": the leftover goes, the chunk is simply absent.
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert!(store.put(&k, data.clone()).await.unwrap().created);
        assert_eq!(store.get(&k).await.unwrap(), Some(data));
    }

    #[tokio::test]
    async fn readers_never_see_a_partial_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut keys = Vec::new();
        for i in 0..8u8 {
            let data = Bytes::from(vec![i; 1024 * 1024 + usize::from(i)]);
            keys.push((key("t", &data), data));
        }
        let paths: Vec<(PathBuf, u64)> = keys.iter().map(|(k, d)| (store.chunk_path(k), d.len() as u64)).collect();
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                loop {
                    // One more full pass after the puts finished.
                    let stopping = stop.load(Ordering::Relaxed);
                    for (p, len) in &paths {
                        if let Ok(m) = fs::metadata(p) {
                            assert_eq!(m.len(), *len, "partial file at final path");
                            seen += 1;
                        }
                    }
                    if stopping {
                        break seen;
                    }
                }
            })
        };
        for (k, d) in &keys {
            store.put(k, d.clone()).await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(watcher.join().unwrap() >= keys.len() as u64);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn stray_files_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let k = key("t", b"real");
        store.put(&k, Bytes::from_static(b"real")).await.unwrap();
        let chunks = dir.path().join("chunks");
        fs::write(chunks.join("t").join("README"), b"x").unwrap();
        fs::create_dir_all(chunks.join("BAD")).unwrap();
        fs::create_dir_all(chunks.join("t/zz")).unwrap();
        let hh = chunks.join("t").join(&k.hash.to_hex()[..2]);
        fs::write(hh.join("notes.txt"), b"x").unwrap();
        fs::write(hh.join(k.hash.to_hex().to_uppercase()), b"x").unwrap();
        let listed = store.list(None, 100).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, k);
        assert_eq!(listed[0].size, 4);
        assert!(listed[0].modified_ms > 0);
        assert_eq!(store.usage().await.unwrap(), StoreUsage { chunks: 1, bytes: 4 });
    }
}
