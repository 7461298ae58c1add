//! One behaviour suite run against every backend: the local store, the
//! in-memory object store, and a real S3-compatible server (moto).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use caddy_blob::moto::Moto;
use caddy_blob::{
    BlobError, BlobStore, ChunkHash, ChunkKey, LocalStore, MAX_CHUNK_BYTES, ObjectBackend, ObjectConfig, StoreUsage,
};

fn key(tenant: &str, data: &[u8]) -> ChunkKey {
    ChunkKey::for_data(tenant, data).unwrap()
}

fn chunk(n: u32) -> Bytes {
    Bytes::from(format!("chunk number {n} ").repeat(1 + n as usize % 7))
}

/// The behaviour every backend must show. Expects an empty store.
async fn conformance(store: &BlobStore) {
    assert!(store.list(None, 10).await.unwrap().is_empty());
    assert_eq!(store.usage().await.unwrap(), StoreUsage::default());

    // Round trip, idempotent put.
    let data = Bytes::from_static(b"hello chunk");
    let k = key("acme", &data);
    assert!(store.put(&k, data.clone()).await.unwrap().created);
    assert_eq!(store.get(&k).await.unwrap(), Some(data.clone()));
    assert!(!store.put(&k, data.clone()).await.unwrap().created);
    assert_eq!(store.get(&k).await.unwrap(), Some(data.clone()));

    // A chunk of exactly the limit is accepted.
    let big = Bytes::from(vec![0xabu8; MAX_CHUNK_BYTES]);
    let big_key = key("acme", &big);
    assert!(store.put(&big_key, big.clone()).await.unwrap().created);
    assert_eq!(store.get(&big_key).await.unwrap().unwrap().len(), MAX_CHUNK_BYTES);
    assert!(store.delete(&big_key).await.unwrap());

    // Hash mismatch refused, nothing stored.
    let wrong = key("acme", b"other content");
    match store.put(&wrong, Bytes::from_static(b"not it")).await {
        Err(BlobError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, wrong.hash);
            assert_eq!(actual, ChunkHash::of(b"not it"));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(!store.has(&wrong).await.unwrap());
    assert_eq!(store.get(&wrong).await.unwrap(), None);
    let not_it = key("acme", b"not it");
    assert!(!store.has(&not_it).await.unwrap());

    // Oversize refused (length is checked before the hash: the key here is
    // even wrong, and the error is still TooLarge).
    let huge = Bytes::from(vec![1u8; MAX_CHUNK_BYTES + 1]);
    match store.put(&wrong, huge.clone()).await {
        Err(BlobError::TooLarge { size, max }) => {
            assert_eq!(size, MAX_CHUNK_BYTES + 1);
            assert_eq!(max, MAX_CHUNK_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let huge_key = key("acme", &huge);
    assert!(matches!(store.put(&huge_key, huge).await, Err(BlobError::TooLarge { .. })));
    assert!(!store.has(&huge_key).await.unwrap());

    // Missing chunk.
    let missing = key("acme", b"never stored");
    assert_eq!(store.get(&missing).await.unwrap(), None);
    assert!(!store.has(&missing).await.unwrap());
    assert!(!store.delete(&missing).await.unwrap());

    // has / has_many.
    assert!(store.has(&k).await.unwrap());
    assert_eq!(store.has_many("acme", &[k.hash, missing.hash, k.hash]).await.unwrap(), vec![true, false, true]);
    assert!(store.has_many("acme", &[]).await.unwrap().is_empty());
    assert_eq!(store.has_many("other", &[k.hash]).await.unwrap(), vec![false]);

    // Delete.
    assert!(store.delete(&k).await.unwrap());
    assert!(!store.has(&k).await.unwrap());
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(!store.delete(&k).await.unwrap());
    assert!(store.put(&k, data.clone()).await.unwrap().created);

    // Tenant isolation: same content under two tenants is two chunks.
    let k_other = key("globex", &data);
    assert_eq!(k_other.hash, k.hash);
    assert!(!store.has(&k_other).await.unwrap());
    assert!(store.put(&k_other, data.clone()).await.unwrap().created);
    assert!(store.delete(&k).await.unwrap());
    assert_eq!(store.get(&k_other).await.unwrap(), Some(data.clone()));
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(store.delete(&k_other).await.unwrap());
    assert!(store.list(None, 10).await.unwrap().is_empty());

    // Listing across tenants, including names where path order differs
    // from plain string order ("a-b" < "a" because '-' < '/').
    let tenants = ["a", "a-b", "ab", "b9"];
    let mut expected: Vec<(ChunkKey, u64)> = Vec::new();
    let mut n = 0;
    for (i, tenant) in tenants.iter().enumerate() {
        for _ in 0..(3 + i) {
            let d = chunk(n);
            n += 1;
            let k = key(tenant, &d);
            store.put(&k, d.clone()).await.unwrap();
            expected.push((k, d.len() as u64));
        }
    }
    // The same bytes in two tenants.
    let shared = chunk(0);
    let k = key("b9", &shared);
    store.put(&k, shared.clone()).await.unwrap();
    expected.push((k, shared.len() as u64));
    expected.sort();
    let expected_keys: Vec<ChunkKey> = expected.iter().map(|(k, _)| k.clone()).collect();

    let all = store.list(None, 1000).await.unwrap();
    let listed: Vec<ChunkKey> = all.iter().map(|e| e.key.clone()).collect();
    assert_eq!(listed, expected_keys);
    for (entry, (_, size)) in all.iter().zip(&expected) {
        assert_eq!(entry.size, *size);
        assert!(entry.modified_ms > 1_600_000_000_000, "{entry:?}");
    }
    assert_eq!(
        store.usage().await.unwrap(),
        StoreUsage { chunks: expected.len() as u64, bytes: expected.iter().map(|(_, s)| s).sum() }
    );
    for limit in [1, 2, 3, 5, expected.len(), expected.len() + 1] {
        let mut paged = Vec::new();
        let mut after: Option<ChunkKey> = None;
        loop {
            let page = store.list(after.as_ref(), limit).await.unwrap();
            assert!(page.len() <= limit);
            paged.extend(page.iter().map(|e| e.key.clone()));
            if page.len() < limit {
                break;
            }
            after = page.last().map(|e| e.key.clone());
        }
        assert_eq!(paged, expected_keys, "limit {limit}");
    }
    assert!(store.list(None, 0).await.unwrap().is_empty());
    // `after` need not exist: a key between two stored ones.
    let probe = ChunkKey::new("a-b", ChunkHash([0xff; 32])).unwrap();
    let from_probe: Vec<ChunkKey> = store.list(Some(&probe), 1000).await.unwrap().into_iter().map(|e| e.key).collect();
    let tail: Vec<ChunkKey> = expected_keys.iter().filter(|k| **k > probe).cloned().collect();
    assert_eq!(from_probe, tail);
    assert_eq!(from_probe[0].tenant, "a");

    // Invalid tenant names are refused by every operation.
    let hash = ChunkHash::of(b"x");
    for bad in ["../x", "A", "", &"a".repeat(65), "a/b", "..", "a\\b", "a b"] {
        let bad_key = ChunkKey { tenant: bad.to_string(), hash };
        let x = Bytes::from_static(b"x");
        assert!(matches!(store.put(&bad_key, x).await, Err(BlobError::InvalidKey(_))), "put {bad:?}");
        assert!(matches!(store.get(&bad_key).await, Err(BlobError::InvalidKey(_))));
        assert!(matches!(store.has(&bad_key).await, Err(BlobError::InvalidKey(_))));
        assert!(matches!(store.has_many(bad, &[hash]).await, Err(BlobError::InvalidKey(_))));
        assert!(matches!(store.delete(&bad_key).await, Err(BlobError::InvalidKey(_))));
        assert!(matches!(store.list(Some(&bad_key), 10).await, Err(BlobError::InvalidKey(_))));
        assert!(ChunkKey::new(bad, hash).is_err());
    }
    // Nothing above reached the store.
    assert_eq!(store.list(None, 1000).await.unwrap().len(), expected.len());

    // Clean up through the public API.
    for k in &expected_keys {
        assert!(store.delete(k).await.unwrap());
    }
    assert!(store.list(None, 10).await.unwrap().is_empty());
    assert_eq!(store.corrupt_detected(), 0);
}

#[tokio::test]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::Local(LocalStore::open(dir.path()).unwrap());
    assert_eq!(store.kind(), "local");
    assert!(!store.is_shared());
    conformance(&store).await;
    // Nothing escaped the store's directory, nothing was left in tmp/.
    let mut top: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    top.sort();
    assert_eq!(top, ["chunks", "quarantine", "tmp"]);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    // Reopening sees the same (now empty) store and still works.
    let store = BlobStore::Local(LocalStore::open(dir.path()).unwrap());
    let d = Bytes::from_static(b"after reopen");
    let k = key("acme", &d);
    store.put(&k, d.clone()).await.unwrap();
    drop(store);
    let store = BlobStore::Local(LocalStore::open(dir.path()).unwrap());
    assert_eq!(store.get(&k).await.unwrap(), Some(d));
}

#[tokio::test]
async fn memory_object_store_conforms() {
    for url in ["memory://", "memory://some/prefix"] {
        let backend = ObjectBackend::from_config(&ObjectConfig { url: url.into(), ..Default::default() }).unwrap();
        let store = BlobStore::Object(backend);
        assert_eq!(store.kind(), "memory");
        assert!(store.is_shared());
        conformance(&store).await;
    }
}

fn start_moto() -> Moto {
    Moto::start().unwrap_or_else(|e| panic!("the S3 conformance test needs moto_server: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_object_store_conforms() {
    let moto = start_moto();
    let bucket = "caddy-chunks";
    moto.create_bucket(bucket).unwrap();

    for url in [format!("s3://{bucket}"), format!("s3://{bucket}/cluster-1/")] {
        let store = BlobStore::Object(ObjectBackend::from_config(&moto.config(url)).unwrap());
        assert_eq!(store.kind(), "s3");
        assert!(store.is_shared());
        conformance(&store).await;
    }

    // A missing bucket is a clear backend error, not a panic or a None.
    let store = BlobStore::Object(ObjectBackend::from_config(&moto.config("s3://no-such-bucket")).unwrap());
    let d = Bytes::from_static(b"x");
    match store.put(&key("t", &d), d).await {
        Err(BlobError::Backend(msg)) => assert!(msg.contains("no-such-bucket"), "{msg}"),
        other => panic!("expected Backend error, got {other:?}"),
    }
}
