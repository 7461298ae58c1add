//! `files`: upload and download throughput of CADDY files on a running
//! cluster, against the practical limit on the same machine: the same bytes
//! copied over one plain TLS 1.3 stream on loopback TCP, in this process.
//!
//! Every round generates a new file of incompressible, deterministic bytes
//! (xorshift from a new seed), so the cluster holds none of its chunks and
//! the upload is not shortened by deduplication. The file is fsynced before
//! the timed part. Then, in turn:
//! - CADDY upload: `Client::file_upload_path` (hashes every 1 MiB chunk,
//!   sends the chunks, the server hash-checks them and stores each fsynced on
//!   a majority of the members before the commit is acknowledged);
//! - TCP+TLS upload: the client reads the file and sends it; the server
//!   writes one copy and fsyncs it before acknowledging with one byte;
//! - CADDY download: `Client::file_download_path` (written and fsynced);
//! - TCP+TLS download: the server reads its copy and sends it; the client
//!   writes it and fsyncs.
//!
//! Every copy is checked against the source's blake3 outside the timed
//! part. Figures are medians over the rounds, in MB/s (10^6 bytes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use caddy_client::identity::IdentityCall;
use caddy_client::{Client, ClientConfig, DownloadOptions, ErrorCode, UploadOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// I/O buffer of the baseline and of data generation: CADDY's chunk size.
const BUF: usize = 1 << 20;
/// Size of the unmeasured warm-up transfer on each side.
const WARMUP_BYTES: u64 = 1 << 20;

/// Arguments of `caddy-bench files`.
#[derive(Debug, clap::Args)]
pub struct FilesArgs {
    /// The `client.toml` written by `caddyd dev` (its operator credential).
    #[arg(long, value_name = "FILE", required_unless_present = "baseline_only")]
    pub caddy_config: Option<PathBuf>,
    /// Tenant the files go to; created with the operator credential if absent.
    #[arg(long, default_value = "bench-files")]
    pub tenant: String,
    /// File sizes in bytes, comma-separated; kB, MB, GB (powers of 10) and KiB, MiB, GiB are accepted.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "1MB,100MB")]
    pub sizes: Vec<u64>,
    /// Rounds per size, in the order of --sizes (a single value applies to every size).
    #[arg(long, value_delimiter = ',', default_value = "5,2")]
    pub rounds: Vec<usize>,
    /// Scratch directory on a real disk (not tmpfs): generated files, downloads, the baseline's copies.
    #[arg(long, value_name = "DIR", default_value = "/tmp")]
    pub tmp: PathBuf,
    /// Base of the per-round seeds (default: from the clock, so that a rerun
    /// on the same cluster uploads new content too).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Measure only the TCP+TLS baseline (no cluster needed).
    #[arg(long, hide = true)]
    pub baseline_only: bool,
}

/// `1000000`, `1MB`, `100MB`, `64KiB`... to bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?}: expected a size such as 1000000, 1MB or 100MB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (kB, MB, GB, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale).filter(|&b| b > 0).ok_or_else(|| format!("{s:?}: must be positive and fit in 64 bits"))
}

/// Timed transfers of one system, in seconds, by size.
#[derive(Default)]
struct Samples {
    upload: BTreeMap<u64, Vec<f64>>,
    download: BTreeMap<u64, Vec<f64>>,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn mb_s(size: u64, secs: f64) -> f64 {
    size as f64 / 1e6 / secs
}

impl Samples {
    /// Median MB/s per size (`{"1000000": 123.4, ...}`).
    fn mb_s(which: &BTreeMap<u64, Vec<f64>>) -> Map<String, Value> {
        which
            .iter()
            .filter_map(|(size, secs)| median(secs).map(|m| (size.to_string(), json!(round3(mb_s(*size, m))))))
            .collect()
    }

    /// Every round's seconds per size.
    fn raw(which: &BTreeMap<u64, Vec<f64>>) -> Map<String, Value> {
        which
            .iter()
            .map(|(size, secs)| {
                (size.to_string(), json!(secs.iter().map(|s| (s * 1e6).round() / 1e6).collect::<Vec<_>>()))
            })
            .collect()
    }

    fn json(&self) -> Value {
        json!({
            "upload_mb_s": Self::mb_s(&self.upload),
            "download_mb_s": Self::mb_s(&self.download),
            "upload_secs": Self::raw(&self.upload),
            "download_secs": Self::raw(&self.download),
        })
    }

    fn median_mb_s(which: &BTreeMap<u64, Vec<f64>>, size: u64) -> Option<f64> {
        which.get(&size).and_then(|s| median(s)).map(|m| mb_s(size, m))
    }
}

pub async fn run(args: FilesArgs) -> anyhow::Result<()> {
    if args.sizes.is_empty() {
        bail!("--sizes is empty");
    }
    let rounds: Vec<usize> = match args.rounds.as_slice() {
        [one] => vec![*one; args.sizes.len()],
        many if many.len() == args.sizes.len() => many.to_vec(),
        many => bail!("--rounds has {} values for {} sizes (give one, or one per size)", many.len(), args.sizes.len()),
    };
    if rounds.contains(&0) {
        bail!("--rounds must be positive");
    }
    refuse_tmpfs(&args.tmp)?;
    let dir = args.tmp.join(format!("caddy-bench-files.{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&args, &rounds, &dir).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("files: could not remove {}: {e}", dir.display());
    }
    result
}

/// Refuses a scratch directory on tmpfs or ramfs, where fsync is free.
fn refuse_tmpfs(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    #[allow(unsafe_code)]
    // SAFETY: `c` is a valid NUL-terminated path and `st` a plain C struct
    // that statfs fills in.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st), st)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("--tmp {}", dir.display()));
    }
    // RAMFS_MAGIC (linux/magic.h); libc does not export it.
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // f_type's width depends on the architecture.
    #[allow(clippy::unnecessary_cast)]
    let (magic, tmpfs) = (st.f_type as i64, libc::TMPFS_MAGIC as i64);
    if magic == tmpfs || magic == RAMFS_MAGIC {
        bail!("--tmp {} is on tmpfs or ramfs: fsync would be free; use a directory on a real disk", dir.display());
    }
    Ok(())
}

async fn measure(args: &FilesArgs, rounds: &[usize], dir: &Path) -> anyhow::Result<()> {
    let base_seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut next_seed = {
        let mut n = 0u64;
        move || {
            n += 1;
            crate::mix(base_seed.wrapping_add(n))
        }
    };

    let caddy = if args.baseline_only { None } else { Some(caddy_connect(args).await?) };
    let mut tls = TcpTls::start(dir.to_path_buf()).await?;
    eprintln!("files: TCP+TLS baseline on {} ({})", tls.addr, tls.suite);

    // Unmeasured: connections, the tenant, the server's first chunk files.
    {
        let src = dir.join("warmup.bin");
        let seed = next_seed();
        let want = generate(&src, WARMUP_BYTES, seed).await?;
        if let Some(c) = &caddy {
            c.round(&src, WARMUP_BYTES, want, dir, &format!("bench-warmup-{seed:016x}.bin")).await?;
        }
        tls.round(&src, WARMUP_BYTES, want, dir).await?;
        tokio::fs::remove_file(&src).await?;
    }

    let (mut caddy_s, mut tls_s) = (Samples::default(), Samples::default());
    let mut skipped_bytes = 0u64;
    for (&size, &n) in args.sizes.iter().zip(rounds) {
        for round in 0..n {
            let src = dir.join(format!("src-{size}-{round}.bin"));
            let seed = next_seed();
            let want = generate(&src, size, seed).await?;
            let mut line = format!("files {size} B round {}/{n}:", round + 1);
            if let Some(c) = &caddy {
                let r = c.round(&src, size, want, dir, &format!("bench-{size}-{seed:016x}.bin")).await?;
                skipped_bytes += r.skipped;
                caddy_s.upload.entry(size).or_default().push(r.upload);
                caddy_s.download.entry(size).or_default().push(r.download);
                line += &format!(" caddy up {:.1} down {:.1} MB/s;", mb_s(size, r.upload), mb_s(size, r.download));
            }
            let (up, down) = tls.round(&src, size, want, dir).await?;
            tls_s.upload.entry(size).or_default().push(up);
            tls_s.download.entry(size).or_default().push(down);
            line += &format!(" tcp+tls up {:.1} down {:.1} MB/s", mb_s(size, up), mb_s(size, down));
            eprintln!("{line}");
            tokio::fs::remove_file(&src).await?;
        }
    }
    if let Some(c) = caddy {
        c.client.close().await;
    }
    let suite = tls.suite.clone();
    tls.stop().await;

    let ratio = |which: fn(&Samples) -> &BTreeMap<u64, Vec<f64>>| -> Map<String, Value> {
        args.sizes
            .iter()
            .filter_map(|&size| {
                let c = Samples::median_mb_s(which(&caddy_s), size)?;
                let t = Samples::median_mb_s(which(&tls_s), size)?;
                (t > 0.0).then(|| (size.to_string(), json!(round3(c / t))))
            })
            .collect()
    };
    let (ratio_up, ratio_down) = (ratio(|s| &s.upload), ratio(|s| &s.download));
    for &size in &args.sizes {
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        eprintln!(
            "files {size} B (median): caddy up {} down {} MB/s; tcp+tls up {} down {} MB/s",
            fmt(Samples::median_mb_s(&caddy_s.upload, size)),
            fmt(Samples::median_mb_s(&caddy_s.download, size)),
            fmt(Samples::median_mb_s(&tls_s.upload, size)),
            fmt(Samples::median_mb_s(&tls_s.download, size)),
        );
    }
    if skipped_bytes > 0 {
        eprintln!("files: WARNING: the cluster already held {skipped_bytes} bytes of the uploads (deduplicated)");
    }
    let line = json!({
        "bench": "files",
        "sizes": args.sizes,
        "rounds": args.sizes.iter().zip(rounds).map(|(s, r)| (s.to_string(), json!(r))).collect::<Map<_, _>>(),
        "caddy": if args.baseline_only { Value::Null } else { caddy_s.json() },
        "tcp_tls": tls_s.json(),
        "ratio": if args.baseline_only { Value::Null } else { json!({"upload": ratio_up, "download": ratio_down}) },
        "caddy_dedup_skipped_bytes": if args.baseline_only { Value::Null } else { json!(skipped_bytes) },
        "tenant": if args.baseline_only { Value::Null } else { json!(args.tenant) },
        "seed": base_seed,
        "tcp_tls_suite": suite,
        "notes": "MB = 10^6 bytes; medians over rounds; ratio = caddy / tcp_tls. Every round uploads new content \
                  (xorshift from a new seed), so no chunk is deduplicated; the source file is fsynced before the \
                  timed part, every copy is checked with blake3 after it. caddy: SDK file_upload_path / \
                  file_download_path over QUIC + TLS 1.3 to a 3-node cluster; each 1 MiB chunk is hashed by the \
                  client and the server and stored fsynced on a majority of the 3 nodes before the commit (a Raft \
                  write) is acknowledged; reads re-hash; the download is written and fsynced. tcp_tls: one TLS 1.3 \
                  stream over loopback TCP in the same process, 1 MiB buffers; upload = the client reads the file \
                  and sends it, the server writes one copy and fsyncs before a 1-byte ack; download = the server \
                  reads its copy and sends it, the client writes and fsyncs.",
    });
    println!("{line}");
    Ok(())
}

// ----- data -----

/// Writes `size` bytes of xorshift64* output from `seed` (incompressible,
/// deterministic) to `path` and fsyncs it; returns their blake3.
async fn generate(path: &Path, size: u64, seed: u64) -> anyhow::Result<blake3::Hash> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<blake3::Hash> {
        use std::io::Write as _;
        let mut state = seed | 1;
        let mut file = std::fs::File::create(&path)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; BUF];
        let mut left = size;
        while left > 0 {
            let n = left.min(BUF as u64) as usize;
            for word in buf[..n].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                word.copy_from_slice(&v[..word.len()]);
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
        Ok(hasher.finalize())
    })
    .await?
    .context("generating a source file")
}

/// Size and blake3 of a file.
async fn hash_file(path: &Path) -> anyhow::Result<(u64, blake3::Hash)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, blake3::Hash)> {
        let file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file)?;
        Ok((size, hasher.finalize()))
    })
    .await?
    .context("hashing a copy")
}

async fn verify(path: &Path, size: u64, want: blake3::Hash, what: &str) -> anyhow::Result<()> {
    let (got_size, got) = hash_file(path).await?;
    if got_size != size || got != want {
        bail!("{what}: the copy differs from the source ({got_size} of {size} bytes, blake3 {got} vs {want})");
    }
    Ok(())
}

// ----- CADDY -----

struct Caddy {
    client: Client,
}

/// One round's timed seconds, and the bytes the cluster said it already held.
struct CaddyRound {
    upload: f64,
    download: f64,
    skipped: u64,
}

/// Connects as the operator, creates the tenant if absent, and returns a
/// client acting in it.
async fn caddy_connect(args: &FilesArgs) -> anyhow::Result<Caddy> {
    let path = args.caddy_config.as_ref().context("--caddy-config is required (or --baseline-only)")?;
    let mut config = ClientConfig::from_file(path).with_context(|| format!("reading {}", path.display()))?;
    config.tenant = None;
    let operator = Client::connect(config.clone()).await?;
    let call = IdentityCall::TenantCreate {
        id: args.tenant.clone(),
        name: "files bench".into(),
        plan: String::new(),
        quotas: None,
    };
    match operator.identity(&call).await {
        Ok(_) => eprintln!("files: created tenant {}", args.tenant),
        Err(e) if e.code() == ErrorCode::AlreadyExists => eprintln!("files: using tenant {}", args.tenant),
        Err(e) => return Err(e).with_context(|| format!("creating the tenant {}", args.tenant)),
    }
    operator.close().await;
    config.tenant = Some(args.tenant.clone());
    Ok(Caddy { client: Client::connect(config).await? })
}

impl Caddy {
    /// Uploads `src`, downloads it again (both timed), checks the copy and
    /// deletes the file from the cluster.
    async fn round(
        &self,
        src: &Path,
        size: u64,
        want: blake3::Hash,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<CaddyRound> {
        let options = UploadOptions { name: name.to_string(), ..Default::default() };
        // The first progress report counts the chunks the cluster already held.
        let mut held: Option<u64> = None;
        let started = Instant::now();
        let info = self
            .client
            .file_upload_path(src, &options, |sent, _| {
                held.get_or_insert(sent);
            })
            .await
            .context("CADDY upload")?;
        let upload = started.elapsed().as_secs_f64();
        if info.size != size {
            bail!("CADDY upload: the server recorded {} bytes, not {size}", info.size);
        }

        let out = dir.join("caddy-download.bin");
        let started = Instant::now();
        let got = self
            .client
            .file_download_path(Some(&info.id), None, &DownloadOptions::default(), &out, |_, _| {})
            .await
            .context("CADDY download")?;
        let download = started.elapsed().as_secs_f64();
        if got.bytes != size {
            bail!("CADDY download: {} bytes, not {size}", got.bytes);
        }
        verify(&out, size, want, "CADDY download").await?;
        tokio::fs::remove_file(&out).await?;

        // Keep the tenant's storage flat across rounds and reruns.
        if let Err(e) = self.client.file_trash(&info.id).await {
            eprintln!("files: could not trash {}: {e}", info.id);
        } else if let Err(e) = self.client.file_purge(&info.id).await {
            eprintln!("files: could not purge {}: {e}", info.id);
        }
        Ok(CaddyRound { upload, download, skipped: held.unwrap_or(0) })
    }
}

// ----- TCP + TLS baseline -----

/// A TLS 1.3 server on 127.0.0.1 (self-signed certificate) and one client
/// connection to it, kept for the whole run as the CADDY client keeps its
/// QUIC connection.
///
/// Protocol: `U` + u64 length + bytes -> the server writes them to
/// `tcp-server.bin`, fsyncs, answers one byte. `D` -> the server answers a
/// u64 length + the bytes of `tcp-server.bin`.
struct TcpTls {
    addr: SocketAddr,
    conn: tokio_rustls::client::TlsStream<TcpStream>,
    server: tokio::task::JoinHandle<()>,
    suite: String,
    dir: PathBuf,
}

fn server_copy(dir: &Path) -> PathBuf {
    dir.join("tcp-server.bin")
}

impl TcpTls {
    async fn start(dir: PathBuf) -> anyhow::Result<TcpTls> {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let cert: CertificateDer<'static> = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let server_dir = dir.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, dir) = (acceptor.clone(), server_dir.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let result = match acceptor.accept(tcp).await {
                        Ok(tls) => serve(tls, &dir).await,
                        Err(e) => Err(e.into()),
                    };
                    if let Err(e) = result {
                        eprintln!("files: TCP+TLS server: {e:#}");
                    }
                });
            }
        });

        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let conn = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
        let suite =
            conn.get_ref().1.negotiated_cipher_suite().map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
        Ok(TcpTls { addr, conn, server, suite, dir })
    }

    /// Uploads `src` to the server and downloads it back (both timed), and
    /// checks both copies.
    async fn round(&mut self, src: &Path, size: u64, want: blake3::Hash, dir: &Path) -> anyhow::Result<(f64, f64)> {
        let mut buf = vec![0u8; BUF];

        let started = Instant::now();
        let mut file = tokio::fs::File::open(src).await?;
        let len = file.metadata().await?.len();
        self.conn.write_all(b"U").await?;
        self.conn.write_all(&len.to_le_bytes()).await?;
        copy_exact(&mut file, &mut self.conn, len, &mut buf).await.context("TCP+TLS upload")?;
        self.conn.flush().await?;
        let mut ack = [0u8; 1];
        self.conn.read_exact(&mut ack).await.context("TCP+TLS upload: acknowledgement")?;
        let upload = started.elapsed().as_secs_f64();
        drop(file);

        let out = dir.join("tcp-download.bin");
        let started = Instant::now();
        self.conn.write_all(b"D").await?;
        self.conn.flush().await?;
        let mut header = [0u8; 8];
        self.conn.read_exact(&mut header).await?;
        let len = u64::from_le_bytes(header);
        let mut file = tokio::fs::File::create(&out).await?;
        copy_exact(&mut self.conn, &mut file, len, &mut buf).await.context("TCP+TLS download")?;
        file.flush().await?;
        file.sync_all().await?;
        let download = started.elapsed().as_secs_f64();
        drop(file);

        verify(&server_copy(&self.dir), size, want, "TCP+TLS upload").await?;
        verify(&out, size, want, "TCP+TLS download").await?;
        tokio::fs::remove_file(&out).await?;
        Ok((upload, download))
    }

    async fn stop(mut self) {
        let _ = self.conn.shutdown().await;
        self.server.abort();
    }
}

/// The server side of one baseline connection.
async fn serve(mut tls: tokio_rustls::server::TlsStream<TcpStream>, dir: &Path) -> anyhow::Result<()> {
    let mut buf = vec![0u8; BUF];
    let path = server_copy(dir);
    loop {
        let mut op = [0u8; 1];
        match tls.read_exact(&mut op).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match op[0] {
            b'U' => {
                let mut header = [0u8; 8];
                tls.read_exact(&mut header).await?;
                let len = u64::from_le_bytes(header);
                let mut file = tokio::fs::File::create(&path).await?;
                copy_exact(&mut tls, &mut file, len, &mut buf).await?;
                file.flush().await?;
                file.sync_all().await?;
                tls.write_all(&[1]).await?;
                tls.flush().await?;
            }
            b'D' => {
                let mut file = tokio::fs::File::open(&path).await?;
                let len = file.metadata().await?.len();
                tls.write_all(&len.to_le_bytes()).await?;
                copy_exact(&mut file, &mut tls, len, &mut buf).await?;
                tls.flush().await?;
            }
            other => bail!("unknown request {other:#04x}"),
        }
    }
}

/// Copies exactly `len` bytes, one full buffer at a time.
async fn copy_exact<R, W>(from: &mut R, to: &mut W, len: u64, buf: &mut [u8]) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        from.read_exact(&mut buf[..n]).await?;
        to.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}
