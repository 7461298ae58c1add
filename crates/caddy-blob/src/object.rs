//! The chunk store in object storage (S3 and compatible servers, or in
//! memory for tests), through the `object_store` crate.
//!
//! Keys: `<prefix>/chunks/<tenant>/<hh>/<hex>`, the same layout as the local
//! store; corrupt copies are moved to `<prefix>/quarantine/<tenant>/...`.
//! Listing relies on the backend listing keys in lexicographic order (S3
//! `ListObjectsV2` guarantees it for general-purpose buckets; S3 Express
//! directory buckets do not, and a listing found out of order is refused
//! with an error rather than returned wrong).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;

use crate::{
    BlobError, ChunkEntry, ChunkHash, ChunkKey, CorruptCounter, MAX_CHUNK_BYTES, PutOutcome, StoreUsage, blocking,
    validate_tenant, verify_for_put,
};

/// How many existence checks [`ObjectBackend::has_many`] keeps in flight.
const HEAD_CONCURRENCY: usize = 8;

/// Where and how to reach the object store (the server's `[blob.object]`
/// configuration).
///
/// `url` is `s3://bucket` or `s3://bucket/prefix` (chunks then live under
/// `prefix/chunks/`), or `memory://` (a private in-process store, for tests).
/// Credentials not given here are taken from the usual `AWS_*` environment
/// variables or the instance's role.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectConfig {
    /// `s3://bucket[/prefix]` or `memory://[prefix]`.
    pub url: String,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`;
    /// AWS itself when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent and not set in the environment.
    #[serde(default)]
    pub region: Option<String>,
    /// Access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (never printed by `Debug`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (test servers only).
    #[serde(default)]
    pub allow_http: bool,
}

impl fmt::Debug for ObjectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// Chunks in an object store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ObjectBackend {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/chunks`
    chunks: Path,
    /// `<prefix>/quarantine`
    quarantine: Path,
    kind: &'static str,
    /// The configured url, for messages.
    url: String,
    corrupt: CorruptCounter,
    seq: AtomicU64,
}

impl fmt::Debug for ObjectBackend {
    // Not derived: the S3 client's own Debug may include credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectBackend").field("kind", &self.inner.kind).field("url", &self.inner.url).finish()
    }
}

impl ObjectBackend {
    /// Builds the backend described by `config`. Makes no request: a wrong
    /// bucket or credentials show up on first use.
    ///
    /// For `s3://`, installs rustls' ring provider as the process-wide
    /// default if none is installed yet (the HTTP client is built without a
    /// provider of its own, to keep aws-lc-rs out of the build). Requests are
    /// retried by `object_store` with backoff on transient failures.
    pub fn from_config(config: &ObjectConfig) -> Result<Self, BlobError> {
        let url = config.url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(BlobError::Backend(format!(
                "object store url {url:?} must look like s3://bucket/prefix or memory://"
            )));
        };
        let (store, prefix, kind): (Arc<dyn ObjectStore>, &str, &'static str) = match scheme {
            "s3" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(BlobError::Backend(format!(
                        "object store url {url:?} names no bucket (expected s3://bucket/prefix)"
                    )));
                }
                // reqwest is built without a TLS crypto provider of its own
                // (no aws-lc-rs); it uses the process default, which we set to
                // ring unless someone already installed one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &config.region {
                    builder = builder.with_region(region);
                }
                if let Some(id) = &config.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &config.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                builder = builder.with_allow_http(config.allow_http);
                let s3 = builder
                    .build()
                    .map_err(|e| BlobError::Backend(format!("cannot configure S3 store {url:?}: {e}")))?;
                (Arc::new(s3), prefix, "s3")
            }
            "memory" => (Arc::new(InMemory::new()), rest, "memory"),
            other => {
                return Err(BlobError::Backend(format!(
                    "object store scheme {other:?} is not supported (use s3:// or memory://)"
                )));
            }
        };
        let prefix = prefix.trim_matches('/');
        let prefix = Path::parse(prefix)
            .map_err(|e| BlobError::Backend(format!("invalid prefix {prefix:?} in {url:?}: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                chunks: prefix.clone().join("chunks"),
                quarantine: prefix.join("quarantine"),
                kind,
                url: url.to_owned(),
                corrupt: CorruptCounter::default(),
                seq: AtomicU64::new(0),
            }),
        })
    }

    /// `"s3"` or `"memory"`.
    pub fn kind(&self) -> &'static str {
        self.inner.kind
    }

    /// See [`BlobStore::put`](crate::BlobStore::put).
    ///
    /// An existing object of the right size counts as present (checking its
    /// content would mean downloading it; every get verifies it anyway). The
    /// write itself is a plain put: content addressing makes a concurrent
    /// overwrite write identical bytes.
    pub async fn put(&self, key: &ChunkKey, data: Bytes) -> Result<PutOutcome, BlobError> {
        verify_for_put(key, &data).await?;
        let path = self.chunk_path(key);
        match self.inner.store.head(&path).await {
            Ok(meta) if meta.size == data.len() as u64 => {
                return Ok(PutOutcome { created: false });
            }
            Ok(meta) => {
                self.inner.corrupt.bump();
                tracing::error!(
                    chunk = %key,
                    stored = meta.size,
                    expected = data.len(),
                    "stored chunk has the wrong size; rewriting it"
                );
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.backend_error(e)),
        }
        self.inner.store.put(&path, PutPayload::from(data)).await.map_err(|e| self.backend_error(e))?;
        Ok(PutOutcome { created: true })
    }

    /// See [`BlobStore::get`](crate::BlobStore::get).
    pub async fn get(&self, key: &ChunkKey) -> Result<Option<Bytes>, BlobError> {
        key.validate()?;
        let path = self.chunk_path(key);
        let result = match self.inner.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.backend_error(e)),
        };
        if result.meta.size > MAX_CHUNK_BYTES as u64 {
            return Err(self.set_aside(key, &path).await);
        }
        let data = match result.bytes().await {
            Ok(d) => d,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.backend_error(e)),
        };
        let expected = key.hash;
        let checked = data.clone();
        let actual = blocking(move || Ok(ChunkHash::of(&checked))).await?;
        if data.len() > MAX_CHUNK_BYTES || actual != expected {
            return Err(self.set_aside(key, &path).await);
        }
        Ok(Some(data))
    }

    /// See [`BlobStore::touch`](crate::BlobStore::touch): object stores
    /// cannot change a modification time, so the chunk is rewritten.
    pub async fn touch(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        let Some(data) = self.get(key).await? else { return Ok(false) };
        let path = self.chunk_path(key);
        self.inner.store.put(&path, PutPayload::from(data)).await.map_err(|e| self.backend_error(e))?;
        Ok(true)
    }

    /// See [`BlobStore::has`](crate::BlobStore::has).
    pub async fn has(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        key.validate()?;
        self.exists(&self.chunk_path(key)).await
    }

    /// See [`BlobStore::has_many`](crate::BlobStore::has_many). Checks up to
    /// eight chunks concurrently.
    pub async fn has_many(&self, tenant: &str, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlobError> {
        validate_tenant(tenant)?;
        // Owned paths and a boxed stream keep the future `Send` for callers
        // that hold it across their own awaits.
        let mut paths = Vec::with_capacity(hashes.len());
        for h in hashes {
            paths.push(self.path_for(tenant, h));
        }
        let this = self.clone();
        let checks: futures::stream::BoxStream<'static, _> = futures::stream::iter(paths)
            .map(move |path| {
                let this = this.clone();
                async move { this.exists(&path).await }
            })
            .buffered(HEAD_CONCURRENCY)
            .boxed();
        checks.try_collect().await
    }

    /// See [`BlobStore::delete`](crate::BlobStore::delete).
    pub async fn delete(&self, key: &ChunkKey) -> Result<bool, BlobError> {
        key.validate()?;
        let path = self.chunk_path(key);
        // S3 reports success for deleting a missing key: ask first.
        if !self.exists(&path).await? {
            return Ok(false);
        }
        match self.inner.store.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend_error(e)),
        }
    }

    /// See [`BlobStore::list`](crate::BlobStore::list).
    pub async fn list(&self, after: Option<&ChunkKey>, limit: usize) -> Result<Vec<ChunkEntry>, BlobError> {
        if let Some(after) = after {
            after.validate()?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let root = &self.inner.chunks;
        let mut stream = match after {
            Some(a) => self.inner.store.list_with_offset(Some(root), &self.chunk_path(a)),
            None => self.inner.store.list(Some(root)),
        };
        let mut out: Vec<ChunkEntry> = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some(meta) = stream.next().await else {
                break;
            };
            let meta = meta.map_err(|e| self.backend_error(e))?;
            let Some(entry) = self.entry(&meta) else {
                continue;
            };
            let previous = out.last().map(|e| &e.key).or(after);
            if previous.is_some_and(|p| entry.key <= *p) {
                return Err(BlobError::Backend(format!(
                    "object store {} listed keys out of order ({} after {}); \
                     listing needs lexicographic order",
                    self.inner.url,
                    entry.key,
                    previous.map(ToString::to_string).unwrap_or_default()
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// See [`BlobStore::usage`](crate::BlobStore::usage).
    pub async fn usage(&self) -> Result<StoreUsage, BlobError> {
        let mut stream = self.inner.store.list(Some(&self.inner.chunks));
        let mut usage = StoreUsage::default();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.backend_error(e))?;
            if let Some(entry) = self.entry(&meta) {
                usage.chunks += 1;
                usage.bytes += entry.size;
            }
        }
        Ok(usage)
    }

    /// Number of corrupt chunks found (and set aside) by this backend.
    pub fn corrupt_detected(&self) -> u64 {
        self.inner.corrupt.get()
    }

    fn chunk_path(&self, key: &ChunkKey) -> Path {
        self.path_for(&key.tenant, &key.hash)
    }

    /// Path of a chunk; `tenant` must have been validated.
    fn path_for(&self, tenant: &str, hash: &ChunkHash) -> Path {
        let hex = hash.to_hex();
        self.inner.chunks.clone().join(tenant).join(&hex[..2]).join(hex.as_str())
    }

    /// Parses a listed object back into a chunk entry; `None` for anything
    /// under `chunks/` that is not a chunk.
    fn entry(&self, meta: &ObjectMeta) -> Option<ChunkEntry> {
        let mut parts = meta.location.prefix_match(&self.inner.chunks)?;
        let tenant = parts.next()?;
        let hh = parts.next()?;
        let name = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let (tenant, hh, name) = (tenant.as_ref(), hh.as_ref(), name.as_ref());
        validate_tenant(tenant).ok()?;
        let hash = ChunkHash::parse(name).ok()?;
        if hash.to_hex() != name || !name.starts_with(hh) || hh.len() != 2 {
            tracing::debug!(location = %meta.location, "ignoring non-chunk object");
            return None;
        }
        Some(ChunkEntry {
            key: ChunkKey { tenant: tenant.to_owned(), hash },
            size: meta.size,
            modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
        })
    }

    async fn exists(&self, path: &Path) -> Result<bool, BlobError> {
        match self.inner.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend_error(e)),
        }
    }

    /// Counts a corrupt chunk, moves it under `quarantine/` (best effort: it
    /// is never served either way, and the next put replaces it), and
    /// returns the error to report.
    async fn set_aside(&self, key: &ChunkKey, path: &Path) -> BlobError {
        self.inner.corrupt.bump();
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let dest = self
            .inner
            .quarantine
            .clone()
            .join(key.tenant.as_str())
            .join(format!("{}.{}", key.hash.to_hex(), seq).as_str());
        match self.inner.store.rename(path, &dest).await {
            Ok(()) => tracing::error!(
                chunk = %key,
                quarantined = %dest,
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

    fn backend_error(&self, e: object_store::Error) -> BlobError {
        BlobError::Backend(format!("{} ({}): {e}", self.inner.kind, self.inner.url))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_parsing_and_errors() {
        let cfg: ObjectConfig = serde_json::from_str(
            r#"{"url":"s3://bucket/some/prefix","endpoint":"http://127.0.0.1:1",
                "region":"eu-west-1","access_key_id":"id","secret_access_key":"shh",
                "allow_http":true}"#,
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("shh"));
        let backend = ObjectBackend::from_config(&cfg).unwrap();
        assert_eq!(backend.kind(), "s3");
        assert_eq!(backend.inner.chunks.as_ref(), "some/prefix/chunks");
        let key = ChunkKey::for_data("t", b"x").unwrap();
        let hex = key.hash.to_hex();
        assert_eq!(backend.chunk_path(&key).as_ref(), format!("some/prefix/chunks/t/{}/{hex}", &hex[..2]));

        let mem: ObjectConfig = serde_json::from_str(r#"{"url":"memory://"}"#).unwrap();
        let mem = ObjectBackend::from_config(&mem).unwrap();
        assert_eq!(mem.kind(), "memory");
        assert_eq!(mem.inner.chunks.as_ref(), "chunks");

        for bad in ["bucket", "s3://", "s3:///x", "gs://b", "memory://a/../b"] {
            let cfg = ObjectConfig { url: bad.into(), ..Default::default() };
            assert!(matches!(ObjectBackend::from_config(&cfg), Err(BlobError::Backend(_))), "{bad}");
        }
        assert!(serde_json::from_str::<ObjectConfig>(r#"{"url":"s3://b","typo":1}"#).is_err());
    }

    #[tokio::test]
    async fn corrupt_object_is_set_aside() {
        let cfg = ObjectConfig { url: "memory://".into(), ..Default::default() };
        let backend = ObjectBackend::from_config(&cfg).unwrap();
        let data = Bytes::from_static(b"object chunk");
        let key = ChunkKey::for_data("t", &data).unwrap();
        backend.put(&key, data.clone()).await.unwrap();
        let path = backend.chunk_path(&key);
        backend.inner.store.put(&path, PutPayload::from_static(b"object chunX")).await.unwrap();
        assert!(matches!(backend.get(&key).await, Err(BlobError::Corrupt { .. })));
        assert_eq!(backend.corrupt_detected(), 1);
        assert!(!backend.has(&key).await.unwrap());
        let quarantined: Vec<_> =
            backend.inner.store.list(Some(&backend.inner.quarantine)).try_collect().await.unwrap();
        assert_eq!(quarantined.len(), 1);
        assert!(backend.put(&key, data.clone()).await.unwrap().created);
        assert_eq!(backend.get(&key).await.unwrap(), Some(data));
    }
}
