//! Files on a real 3-node cluster: a 50 MB upload through `caddyctl` read
//! back from every node in bounded memory, nodes killed during uploads,
//! repair after a restart, a chunk corrupted on disk, concurrent uploads
//! against a quota, and bad requests that change nothing.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caddy_client::file_api::{Access, FileAnswer};
use caddy_client::identity::{IdentityCall, QuotasPatch};
use caddy_client::{Client, ClientConfig, ClientError, DownloadOptions, ErrorCode, UploadOptions};
use support::{Dev, bin, client_as, pseudo_random, setup};

const MIB: usize = 1024 * 1024;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path).expect("open")).expect("read");
    h.finalize()
}

/// Peak resident memory of a process so far, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

/// Runs a command to completion; returns its output and its own peak RSS (KiB).
// The child is reaped by `wait4`, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut std::process::Command) -> (std::process::ExitStatus, String, String, u64) {
    use std::io::Read;
    let mut child =
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("stderr");
    let mut status = 0;
    #[allow(unsafe_code)]
    let (rc, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let rc = libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
        (rc, usage)
    };
    assert!(rc > 0, "wait4 failed");
    let exit = std::os::unix::process::ExitStatusExt::from_raw(status);
    (exit, out, err, usage.ru_maxrss as u64)
}

async fn operator(dev: &Dev) -> Client {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = None;
    Client::connect(config).await.expect("connect")
}

fn chunk_path(dev: &Dev, node: u64, tenant: &str, hash: &str) -> PathBuf {
    dev.dir.join(format!("node{node}/blobs/chunks/{tenant}/{}/{hash}", &hash[..2]))
}

fn chunk_hashes(bytes: &[u8]) -> Vec<String> {
    bytes.chunks(MIB).map(|c| blake3::hash(c).to_hex().to_string()).collect()
}

async fn download_all(client: &Client, file: &str) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    client.file_download(Some(file), None, &DownloadOptions::default(), &mut out, |_, _| {}).await?;
    Ok(out)
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_cli_upload_streams_in_bounded_memory_and_reads_back_from_every_node() {
    let dev = Dev::start(3, &[]);
    dev.ctl_ok(&["tenant", "create", "acme", "--name", "Acme"]);
    let tmp = tempfile::tempdir().expect("tmp");
    let size = 50 * 1000 * 1000;
    let source = write_file(tmp.path(), "site-survey.bin", &pseudo_random(size, 7));
    let before: Vec<u64> = (1..=3).map(|n| peak_rss_kib(dev.pid(n))).collect();
    // What caddyctl needs for any call, to compare the upload with.
    let mut idle = std::process::Command::new(bin("caddyctl"));
    idle.arg("--config").arg(dev.client_toml()).args(["--tenant", "acme", "--json", "file", "ls"]);
    let (status, _, err, client_idle_kib) = run_measured(&mut idle);
    assert!(status.success(), "{err}");

    let mut cmd = std::process::Command::new(bin("caddyctl"));
    cmd.arg("--config").arg(dev.client_toml()).args(["--tenant", "acme", "--json", "file", "upload"]).arg(&source);
    let (status, out, err, client_peak_kib) = run_measured(&mut cmd);
    assert!(status.success(), "upload failed: {err}\n{out}");
    let info: serde_json::Value = serde_json::from_str(&out).expect("upload json");
    let id = info["id"].as_str().expect("id").to_owned();
    assert_eq!(info["size"].as_u64(), Some(size as u64), "{info}");

    // Memory: neither side holds the file. The bounds are generous (a
    // whole-file buffer anywhere would exceed them by far).
    let after: Vec<u64> = (1..=3).map(|n| peak_rss_kib(dev.pid(n))).collect();
    assert!(
        client_peak_kib.saturating_sub(client_idle_kib) < 32 * 1024,
        "caddyctl peaked at {client_peak_kib} KiB for a 50 MB upload ({client_idle_kib} KiB for a listing)"
    );
    for (n, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(a.saturating_sub(*b) < 40 * 1024, "node {} grew from {b} to {a} KiB during the upload", n + 1);
    }

    // Every node serves identical bytes (from its own chunks or a peer's).
    let want = hash_file(&source);
    let acme = |node: u64| {
        let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
        config.endpoints = vec![dev.client_addr(node)];
        config.tenant = Some("acme".into());
        config
    };
    for node in 1..=3 {
        let client = Client::connect(acme(node)).await.expect("connect");
        let target = tmp.path().join(format!("copy-{node}.bin"));
        let got = client
            .file_download_path(Some(&id), None, &DownloadOptions::default(), &target, |_, _| {})
            .await
            .expect("download");
        assert_eq!(got.bytes, size as u64);
        assert_eq!(hash_file(&target), want, "node {node} served different bytes");
        std::fs::remove_file(&target).expect("rm");
    }

    // A range from the middle, across a chunk boundary.
    let client = Client::connect(acme(2)).await.expect("connect");
    let mut part = Vec::new();
    let range = DownloadOptions { version: None, offset: 3 * MIB as u64 - 10, length: Some(20) };
    client.file_download(Some(&id), None, &range, &mut part, |_, _| {}).await.expect("range");
    let all = std::fs::read(&source).expect("read");
    assert_eq!(part, all[3 * MIB - 10..3 * MIB + 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_killed_nodes_and_a_restarted_node_repairs_its_chunks() {
    let mut dev = Dev::start(3, &[("CADDY_FILES_REPAIR_INTERVAL_MS", "500")]);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let leader = dev.leader();
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let tmp = tempfile::tempdir().expect("tmp");

    // A follower dies in the middle of an upload through the leader: a
    // majority is still there, so the upload completes.
    let first = pseudo_random(12 * MIB + 123, 1);
    let client = client_as(&dev, Some(leader), &tokens[0], "acme").await;
    let path = write_file(tmp.path(), "first.bin", &first);
    let killed = std::sync::atomic::AtomicBool::new(false);
    let info = client
        .file_upload_path(&path, &UploadOptions::default(), |sent, _| {
            if sent >= 4 * MIB as u64 && !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                dev.kill9(follower);
            }
        })
        .await
        .expect("upload with one follower down");
    assert!(killed.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(download_all(&client, &info.id).await.expect("download"), first);

    // The node the client talks to dies mid-upload: the upload fails over
    // to another node and resumes there; chunks that node already received
    // are not sent again.
    dev.restart(follower);
    let second = pseudo_random(10 * MIB, 2);
    let path = write_file(tmp.path(), "second.bin", &second);
    let victim = (1..=3).find(|n| *n != leader && *n != follower).expect("third node");
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.credential = tokens[0].clone();
    config.tenant = Some("acme".into());
    config.request_timeout = Duration::from_secs(30);
    // The victim first, so the upload starts there.
    config.endpoints.sort_by_key(|a| *a != dev.client_addr(victim));
    let roaming = Client::connect(config).await.expect("connect");
    let mut reports: Vec<(u64, u64)> = Vec::new();
    let killed = std::sync::atomic::AtomicBool::new(false);
    let second_chunks = chunk_hashes(&second);
    // The victim stores and replicates chunks while it reads the next ones,
    // so what the client has sent runs ahead of what the survivors hold:
    // the kill waits until one of the first chunks is on both survivors.
    let on_survivors = || {
        second_chunks[..5].iter().any(|h| [leader, follower].iter().all(|n| chunk_path(&dev, *n, "acme", h).exists()))
    };
    let info2 = roaming
        .file_upload_path(&path, &UploadOptions::default(), |sent, total| {
            reports.push((sent, total));
            if sent >= 5 * MIB as u64 && !killed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                wait_for("a chunk of the upload on both survivors", Duration::from_secs(20), on_survivors);
                dev.kill9(victim);
            }
        })
        .await
        .expect("upload resumed on another node");
    assert!(killed.load(std::sync::atomic::Ordering::SeqCst));
    // After the failover the progress restarted above zero: the chunks that
    // reached the surviving nodes counted as already sent.
    let restarts: Vec<u64> = reports.windows(2).filter(|w| w[1].0 < w[0].0).map(|w| w[1].0).collect();
    assert!(restarts.iter().any(|s| *s > 0), "resume sent everything again: {reports:?}");
    assert_eq!(download_all(&client, &info2.id).await.expect("download"), second);

    // No metadata points at a missing chunk: every file reads back whole
    // through each live node.
    let files = client.file_list(None, None, 100).await.expect("list").files;
    assert_eq!(files.len(), 2, "{files:?}");
    for node in [leader, follower] {
        let c = client_as(&dev, Some(node), &tokens[0], "acme").await;
        for f in &files {
            let bytes = download_all(&c, &f.id).await.expect("download");
            assert_eq!(bytes.len() as u64, f.size);
        }
    }

    // The node that was down through the second upload catches up its
    // chunks on its own after a restart.
    dev.restart(victim);
    for (content, name) in [(&first, "first"), (&second, "second")] {
        for hash in chunk_hashes(content) {
            for node in 1..=3 {
                let path = chunk_path(&dev, node, "acme", &hash);
                wait_for(&format!("node {node} to hold {name} chunk {hash}"), Duration::from_secs(30), || {
                    std::fs::read(&path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == hash)
                });
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_is_detected_on_read_and_repaired_from_a_peer() {
    let dev = Dev::start(3, &[]);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let client = client_as(&dev, None, &tokens[0], "acme").await;
    let content = pseudo_random(3 * MIB + 5, 3);
    let info = client
        .file_upload(&mut std::io::Cursor::new(content.clone()), &named("plan.bin"), |_, _| {})
        .await
        .expect("upload");
    let hash = chunk_hashes(&content)[1].clone();
    let on_disk = chunk_path(&dev, 2, "acme", &hash);
    wait_for("node 2 to hold the chunk", Duration::from_secs(20), || on_disk.exists());
    let mut bytes = std::fs::read(&on_disk).expect("chunk");
    bytes[1000] ^= 0x55;
    std::fs::write(&on_disk, &bytes).expect("corrupt it");

    let node2 = client_as(&dev, Some(2), &tokens[0], "acme").await;
    assert_eq!(download_all(&node2, &info.id).await.expect("download"), content);
    let repaired = std::fs::read(&on_disk).expect("chunk after the read");
    assert_eq!(blake3::hash(&repaired).to_hex().as_str(), hash, "the corrupt copy was not replaced");

    let ca = std::fs::read_to_string(dev.dir.join("node1/tls/ca.pem")).expect("ca");
    let (code, metrics) = support::https_get(&dev.admin_addr(2), &ca, "/metrics").await;
    assert_eq!(code, 200);
    let corrupt = metrics
        .lines()
        .find_map(|l| l.strip_prefix("caddy_blob_corrupt_chunks_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(corrupt, Some(1.0), "metrics:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_content_is_collected_from_every_node_after_the_grace_period_and_shared_chunks_stay() {
    let env = [
        ("CADDY_FILES_GC_GRACE_SECS", "4"),
        ("CADDY_FILES_UPLOAD_TIMEOUT_SECS", "2"),
        ("CADDY_FILES_GC_INTERVAL_MS", "300"),
    ];
    let dev = Dev::start(3, &env);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let client = client_as(&dev, None, &tokens[0], "acme").await;
    // `gone` shares its first chunk with `kept`; its second chunk is its own.
    let kept = pseudo_random(2 * MIB, 40);
    let mut gone = kept[..MIB].to_vec();
    gone.extend(pseudo_random(MIB / 2, 41));
    let upload = |bytes: Vec<u8>, name: &'static str| {
        let client = &client;
        async move { client.file_upload(&mut std::io::Cursor::new(bytes), &named(name), |_, _| {}).await }
    };
    upload(kept.clone(), "kept.bin").await.expect("upload kept");
    let gone_info = upload(gone.clone(), "gone.bin").await.expect("upload gone");
    let (kept_chunks, gone_chunks) = (chunk_hashes(&kept), chunk_hashes(&gone));
    let own_chunk = gone_chunks[1].clone();
    let on_every_node = |hash: &str| (1..=3).all(|n| chunk_path(&dev, n, "acme", hash).exists());
    let on_no_node = |hash: &str| (1..=3).all(|n| !chunk_path(&dev, n, "acme", hash).exists());
    wait_for("every node to hold every chunk", Duration::from_secs(20), || {
        kept_chunks.iter().chain(&gone_chunks).all(|h| on_every_node(h))
    });

    // In the trash the content is still referenced: nothing is collected.
    client.file_trash(&gone_info.id).await.expect("trash");
    std::thread::sleep(Duration::from_secs(5));
    assert!(on_every_node(&own_chunk), "a trashed file's chunk was collected");
    client.file_purge(&gone_info.id).await.expect("purge");

    // A chunk no file references, written just now (as an upload that has
    // not committed yet leaves it): kept for the grace period.
    let orphan = pseudo_random(1000, 42);
    let orphan_hash = blake3::hash(&orphan).to_hex().to_string();
    let orphan_path = chunk_path(&dev, 1, "acme", &orphan_hash);
    std::fs::create_dir_all(orphan_path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&orphan_path, &orphan).expect("write orphan");

    wait_for("the purged file's own chunk to leave every node", Duration::from_secs(30), || on_no_node(&own_chunk));
    assert!(orphan_path.exists(), "a chunk younger than the grace period was collected");
    assert!(kept_chunks.iter().all(|h| on_every_node(h)), "a chunk another file references was collected");
    assert_eq!(download_all(&client, &upload_id(&client, "kept.bin").await).await.expect("download"), kept);
    wait_for("the orphan to be collected after its grace period", Duration::from_secs(30), || !orphan_path.exists());
    let usage = client.storage_usage().await.expect("usage");
    assert_eq!(usage.file_bytes, kept.len() as u64, "{usage:?}");
}

async fn upload_id(client: &Client, name: &str) -> String {
    let files = client.file_list(None, None, 100).await.expect("list").files;
    files.into_iter().find(|f| f.name == name).map(|f| f.id).expect("the file is listed")
}

fn named(name: &str) -> UploadOptions {
    UploadOptions { name: name.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_never_overshoot_the_storage_quota() {
    let dev = Dev::start(3, &[]);
    let tokens = setup(&dev, &[("ann@acme.test", "editor")]).await;
    let quota = 10 * MIB as u64;
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = Some("acme".into());
    let op = Client::connect(config).await.expect("connect");
    let patch = QuotasPatch { max_storage_bytes: Some(quota), ..Default::default() };
    op.identity(&IdentityCall::TenantUpdate { name: None, plan: None, quotas: patch }).await.expect("quota");

    let mut uploads = Vec::new();
    for i in 0..6u64 {
        let client = client_as(&dev, Some(i % 3 + 1), &tokens[0], "acme").await;
        uploads.push(tokio::spawn(async move {
            let content = pseudo_random(3 * MIB, 100 + i);
            let options = named(&format!("part-{i}.bin"));
            client.file_upload(&mut std::io::Cursor::new(content), &options, |_, _| {}).await
        }));
    }
    let mut committed = 0u64;
    for u in uploads {
        match u.await.expect("task") {
            Ok(info) => committed += info.size,
            Err(e) => assert_eq!(e.code(), ErrorCode::ResourceExhausted, "{e}"),
        }
    }
    assert!(committed <= quota, "committed {committed} bytes under a quota of {quota}");
    assert_eq!(committed, 9 * MIB as u64, "three 3 MiB uploads fit in 10 MiB");
    let client = client_as(&dev, None, &tokens[0], "acme").await;
    let usage = client.storage_usage().await.expect("usage");
    assert!(usage.used_bytes <= quota, "{usage:?}");
    assert_eq!(usage.file_bytes, committed, "{usage:?}");
    let files = client.file_list(None, None, 100).await.expect("list").files;
    assert_eq!(files.iter().map(|f| f.size).sum::<u64>(), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let dev = Dev::start(3, &[]);
    let tokens = setup(&dev, &[("ann@acme.test", "editor"), ("bob@acme.test", "editor")]).await;
    let ann = client_as(&dev, None, &tokens[0], "acme").await;
    let bob = client_as(&dev, None, &tokens[1], "acme").await;
    let top = ann.file_mkdir("projects", None).await.expect("mkdir");
    let inner = ann.file_mkdir("bridge", Some(&top.id)).await.expect("mkdir");
    let info = ann
        .file_upload(&mut std::io::Cursor::new(b"girder spec".to_vec()), &named("spec.txt"), |_, _| {})
        .await
        .expect("upload");
    let listing = || async { ann.file_list(None, None, 100).await.expect("list") };
    let before = listing().await;

    for bad in ["a/b", "..", ".", "nul\0here", &"x".repeat(256), ""] {
        assert_eq!(code(ann.file_mkdir(bad, None).await), Some(ErrorCode::InvalidArgument), "{bad:?}");
        let upload = ann.file_upload(&mut std::io::Cursor::new(b"x".to_vec()), &named(bad), |_, _| {}).await;
        assert_eq!(code(upload), Some(ErrorCode::InvalidArgument), "{bad:?}");
        assert_eq!(code(ann.file_rename(&info.id, bad).await), Some(ErrorCode::InvalidArgument), "{bad:?}");
    }
    assert_eq!(code(ann.file_move(&top.id, &top.id).await), Some(ErrorCode::InvalidArgument));
    assert_eq!(code(ann.file_move(&top.id, &inner.id).await), Some(ErrorCode::InvalidArgument));
    // Bob may not see Ann's file until she shares it.
    assert_eq!(code(download_all(&bob, &info.id).await), Some(ErrorCode::NotFound));
    let bob_id = match ann
        .identity(&IdentityCall::UserList { search: "bob@".into(), start_after: String::new(), limit: 10 })
        .await
        .expect("users")
    {
        caddy_client::identity::IdentityAnswer::Users { users, .. } => users[0].id.clone(),
        other => panic!("{other:?}"),
    };
    ann.file_share(&info.id, &bob_id, Access::Read, None).await.expect("share");
    assert_eq!(download_all(&bob, &info.id).await.expect("shared"), b"girder spec");
    // He can see it now, but a read share does not let him rename it.
    assert_eq!(code(bob.file_rename(&info.id, "mine.txt").await), Some(ErrorCode::PermissionDenied));

    // Another tenant's user sees nothing of acme's files.
    let op = operator(&dev).await;
    let call =
        IdentityCall::TenantCreate { id: "globex".into(), name: "Globex".into(), plan: String::new(), quotas: None };
    op.identity(&call).await.expect("tenant");
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = Some("globex".into());
    let globex = Client::connect(config).await.expect("connect");
    assert_eq!(code(download_all(&globex, &info.id).await), Some(ErrorCode::NotFound));

    // A link that expired no longer works; an unknown one never did.
    let expires = support_now_ms() + 1500;
    let (_, token) = ann.file_link(&info.id, Some(expires)).await.expect("link");
    let anonymous = {
        let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
        config.credential = String::new();
        config.tenant = None;
        Client::connect(config).await.expect("connect")
    };
    let mut out = Vec::new();
    anonymous
        .file_download(None, Some(&token), &DownloadOptions::default(), &mut out, |_, _| {})
        .await
        .expect("link download");
    assert_eq!(out, b"girder spec");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (all, mut sink) = (DownloadOptions::default(), Vec::new());
    let expired = anonymous.file_download(None, Some(&token), &all, &mut sink, |_, _| {}).await;
    assert_eq!(code(expired), Some(ErrorCode::FailedPrecondition));
    let unknown = format!("cl_{}", "0".repeat(48));
    let missing = anonymous.file_download(None, Some(&unknown), &all, &mut sink, |_, _| {}).await;
    assert_eq!(code(missing), Some(ErrorCode::NotFound));
    assert!(sink.is_empty());

    let after = listing().await;
    assert_eq!(before.folders.len(), after.folders.len());
    assert_eq!(
        before.files.iter().map(|f| (&f.id, &f.name)).collect::<Vec<_>>(),
        after.files.iter().map(|f| (&f.id, &f.name)).collect::<Vec<_>>()
    );
    match ann.file_info(&top.id).await.expect("info") {
        FileAnswer::Folder(f) => assert_eq!(f.parent, None),
        other => panic!("{other:?}"),
    }
}

fn code<T>(r: Result<T, ClientError>) -> Option<ErrorCode> {
    r.err().map(|e| e.code())
}

fn support_now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
