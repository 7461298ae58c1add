//! A 3-node cluster whose chunks live in an S3-compatible object store (a
//! real moto server on loopback) instead of the nodes' disks: uploads land in
//! the bucket, every node serves them, and the leader alone collects purged
//! content after the grace period.

mod support;

use std::time::{Duration, Instant};

use caddy_blob::moto::Moto;
use caddy_blob::{BlobStore, ChunkKey, ObjectBackend};
use caddy_client::{DownloadOptions, UploadOptions};
use support::{Dev, client_as, pseudo_random, setup};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_an_s3_backend_stores_serves_and_collects_chunks_in_the_bucket() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("this test needs moto_server: {e}"));
    moto.create_bucket("caddy-e2e").expect("bucket");
    let endpoint = moto.endpoint();
    let env = [
        ("CADDY_FILES_BACKEND", "object"),
        ("CADDY_FILES_OBJECT_URL", "s3://caddy-e2e/cluster-a"),
        ("CADDY_FILES_OBJECT_ENDPOINT", endpoint.as_str()),
        ("CADDY_FILES_OBJECT_REGION", "us-east-1"),
        ("CADDY_FILES_OBJECT_ACCESS_KEY_ID", "testing"),
        ("CADDY_FILES_OBJECT_SECRET_ACCESS_KEY", "testing"),
        ("CADDY_FILES_OBJECT_ALLOW_HTTP", "true"),
        ("CADDY_FILES_GC_GRACE_SECS", "4"),
        ("CADDY_FILES_UPLOAD_TIMEOUT_SECS", "2"),
        ("CADDY_FILES_GC_INTERVAL_MS", "300"),
    ];
    let dev = Dev::start(3, &env);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let client = client_as(&dev, Some(1), &tokens[0], "acme").await;
    let content = pseudo_random(2 * MIB + 77, 9);
    let options = UploadOptions { name: "bridge.bin".into(), ..Default::default() };
    let info =
        client.file_upload(&mut std::io::Cursor::new(content.clone()), &options, |_, _| {}).await.expect("upload");

    // The chunks are objects in the bucket, not files on any node's disk.
    let bucket = BlobStore::Object(ObjectBackend::from_config(&moto.config("s3://caddy-e2e/cluster-a")).expect("s3"));
    let keys: Vec<ChunkKey> = content.chunks(MIB).map(|c| ChunkKey::for_data("acme", c).expect("key")).collect();
    for key in &keys {
        assert!(bucket.has(key).await.expect("has"), "{key:?} is not in the bucket");
    }
    for node in 1..=3 {
        let local = dev.dir.join(format!("node{node}/blobs/chunks/acme"));
        let held = std::fs::read_dir(&local).map(|d| d.count()).unwrap_or(0);
        assert_eq!(held, 0, "node {node} keeps chunks on its disk with the object backend");
    }

    // Every node serves the file from the shared store.
    for node in 1..=3 {
        let reader = client_as(&dev, Some(node), &tokens[0], "acme").await;
        let mut got = Vec::new();
        reader
            .file_download(Some(&info.id), None, &DownloadOptions::default(), &mut got, |_, _| {})
            .await
            .unwrap_or_else(|e| panic!("download through node {node}: {e}"));
        assert!(got == content, "node {node} served different bytes");
    }

    // Purged content leaves the bucket once its grace period has passed.
    client.file_trash(&info.id).await.expect("trash");
    client.file_purge(&info.id).await.expect("purge");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = 0;
        for key in &keys {
            left += usize::from(bucket.has(key).await.expect("has"));
        }
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "purged chunks are still in the bucket after 30 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(client.storage_usage().await.expect("usage").file_bytes, 0);
}
