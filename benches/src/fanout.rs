//! `fanout`: committed updates per second and their delivery to N
//! subscribers spread over the members, for CADDY documents (writers push
//! Loro updates through `DocHandle`, subscribers hold `doc_watch` streams)
//! and, as the peer, etcd (writers put values of the same size as the mean
//! CADDY update, subscribers hold prefix watches).
//!
//! Writers are live (they merge each other's updates as they arrive), as
//! people editing together are. Latency is from the writer's acknowledgement to a subscriber's receipt
//! (0 when the event arrived first); every subscriber must receive every
//! acknowledged update before the run counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caddy_client::doc_api::DocEvent;
use caddy_client::{Client, ClientConfig, ErrorCode};
use etcd_client::{Client as EtcdClient, WatchOptions};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Mutex;

use crate::systems::{System, Target};

/// Arguments of `caddy-bench fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Subscribers (spread round-robin over the members).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Measured seconds of writing.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// etcd value size in bytes (use the mean CADDY update size).
    #[arg(long, default_value_t = 160)]
    pub value_bytes: usize,
}

/// Acknowledgement times by sequence (CADDY change number or etcd revision).
type Acks = Arc<Mutex<HashMap<u64, Instant>>>;
/// Receipt times per subscriber by sequence.
type Receipts = Arc<Mutex<Vec<HashMap<u64, Instant>>>>;

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    if args.subscribers == 0 || args.writers == 0 || args.secs <= 0.0 {
        bail!("--subscribers, --writers and --secs must be positive");
    }
    let acks: Acks = Arc::default();
    let receipts: Receipts = Arc::new(Mutex::new(vec![HashMap::new(); args.subscribers]));
    let (committed, elapsed, mean_bytes) = match args.target.system {
        System::Caddy => caddy(&args, acks.clone(), receipts.clone()).await?,
        System::Etcd => etcd(&args, acks.clone(), receipts.clone()).await?,
    };
    let acks = acks.lock().await;
    let receipts = receipts.lock().await;
    let mut hist = Histogram::<u64>::new(3)?;
    let mut delivered = 0u64;
    for per_sub in receipts.iter() {
        for (seq, acked) in acks.iter() {
            let Some(got) = per_sub.get(seq) else { bail!("a subscriber never received update {seq}") };
            delivered += 1;
            hist.record(got.saturating_duration_since(*acked).as_micros() as u64)?;
        }
    }
    let secs = elapsed.as_secs_f64();
    let line = json!({
        "bench": "fanout",
        "system": args.target.system.name(),
        "subscribers": args.subscribers,
        "writers": args.writers,
        "secs": secs,
        "committed": committed,
        "committed_per_sec": committed as f64 / secs,
        "deliveries_per_sec": delivered as f64 / secs,
        "mean_update_bytes": mean_bytes,
        "fanout_p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "fanout_p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
    });
    eprintln!(
        "{}: {committed} updates committed in {secs:.1}s ({:.0}/s), {delivered} deliveries to {} subscribers, \
         ack-to-subscriber p50 {:.2} ms p99 {:.2} ms, mean update {mean_bytes:.0} bytes",
        args.target.system.name(),
        committed as f64 / secs,
        args.subscribers,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!("{line}");
    Ok(())
}

/// The client config with its endpoints rotated so that it starts at member `i`.
fn rotated(config: &ClientConfig, i: usize) -> ClientConfig {
    let mut c = config.clone();
    let n = c.endpoints.len().max(1);
    c.endpoints.rotate_left(i % n);
    c
}

async fn caddy(args: &FanoutArgs, acks: Acks, receipts: Receipts) -> anyhow::Result<(u64, Duration, f64)> {
    let mut config = args.target.caddy_config()?;
    config.tenant = None;
    let operator = Client::connect(config.clone()).await?;
    let tenant = format!("fanout{:x}", rand_suffix());
    let call = caddy_client::identity::IdentityCall::TenantCreate {
        id: tenant.clone(),
        name: "fanout bench".into(),
        plan: String::new(),
        quotas: None,
    };
    operator.identity(&call).await.context("creating the bench tenant")?;
    config.tenant = Some(tenant);
    let client = Client::connect(config.clone()).await?;
    let info = client.doc_create("fanout", None).await?;

    // Subscribers first, each on its own connection, starting at member i.
    let mut subs = Vec::new();
    for i in 0..args.subscribers {
        let c = Client::connect(rotated(&config, i)).await?;
        let mut watch = c.doc_watch(&info.id, None).await?;
        let receipts = receipts.clone();
        // Wait for the catch-up before writing starts.
        loop {
            match watch.next().await {
                Some(Ok((DocEvent::CaughtUp { .. }, _))) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("subscriber {i}: {e}"),
                None => bail!("subscriber {i}: stream ended"),
            }
        }
        subs.push(tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                match item {
                    Ok((DocEvent::Update { seq, .. }, _)) => {
                        receipts.lock().await[i].insert(seq, Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("subscriber {i}: {e}");
                        return;
                    }
                }
            }
        }));
        drop(c);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let handle = Client::connect(rotated(&config, w)).await?.doc_open(&info.id).await?;
        // Writers are live, as collaborators are: they merge each other's
        // changes as they are committed, so updates stay causally recent.
        handle.go_live();
        let (stop, acks) = (stop.clone(), acks.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let x = (w * 1_000_000) as f64 + n as f64;
                if let Err(e) = handle.edit(|d| d.add_line("0", [x, 0.0], [x, 1.0])) {
                    return Err(anyhow::anyhow!("edit: {e}"));
                }
                match handle.push().await {
                    Ok(Some(seq)) => {
                        acks.lock().await.insert(seq, Instant::now());
                    }
                    Ok(None) => {}
                    Err(e) if e.code() == ErrorCode::Unavailable => {}
                    Err(e) => return Err(anyhow::anyhow!("push: {e}")),
                }
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    let elapsed = started.elapsed();
    let committed = acks.lock().await.len() as u64;
    wait_all(&receipts, &acks, Duration::from_secs(60)).await?;
    for s in subs {
        s.abort();
    }
    let info = client.doc_info(&info.id).await?;
    let mean = info.bytes as f64 / info.seq.max(1) as f64;
    Ok((committed, elapsed, mean))
}

async fn wait_all(receipts: &Receipts, acks: &Acks, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let acked: Vec<u64> = acks.lock().await.keys().copied().collect();
        let done = receipts.lock().await.iter().all(|r| acked.iter().all(|s| r.contains_key(s)));
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("subscribers did not receive every acknowledged update within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn etcd(args: &FanoutArgs, acks: Acks, receipts: Receipts) -> anyhow::Result<(u64, Duration, f64)> {
    let endpoints = args.target.etcd_endpoints.clone();
    if endpoints.is_empty() {
        bail!("--etcd-endpoints is required for --system etcd");
    }
    let ca = args.target.etcd_ca_pem()?;
    let options = || {
        etcd_client::ConnectOptions::new()
            .with_tls(etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca.clone())))
            .with_timeout(crate::systems::REQUEST_TIMEOUT)
            .with_connect_timeout(crate::systems::CONNECT_TIMEOUT)
    };
    let prefix = format!("fanout{:x}/", rand_suffix());
    let mut subs = Vec::new();
    for i in 0..args.subscribers {
        let mut eps = endpoints.clone();
        let n = eps.len();
        eps.rotate_left(i % n);
        let mut c = EtcdClient::connect(&eps[..1], Some(options())).await?;
        let (_watcher, mut stream) = c.watch(prefix.as_str(), Some(WatchOptions::new().with_prefix())).await?;
        let receipts = receipts.clone();
        subs.push(tokio::spawn(async move {
            let _keep = (_watcher, c);
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                let mut r = receipts.lock().await;
                for e in resp.events() {
                    if let Some(kv) = e.kv() {
                        r[i].insert(kv.mod_revision() as u64, now);
                    }
                }
            }
        }));
    }
    let value = Arc::new(vec![b'x'; args.value_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let mut eps = endpoints.clone();
        let n = eps.len();
        eps.rotate_left(w % n);
        let client = EtcdClient::connect(&eps, Some(options())).await?;
        let (stop, acks, value, prefix) = (stop.clone(), acks.clone(), value.clone(), prefix.clone());
        writers.push(tokio::spawn(async move {
            let mut kv = client.kv_client();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let resp = kv.put(format!("{prefix}{w}/{n}"), value.as_slice(), None).await?;
                if let Some(h) = resp.header() {
                    acks.lock().await.insert(h.revision() as u64, Instant::now());
                }
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await??;
    }
    let elapsed = started.elapsed();
    let committed = acks.lock().await.len() as u64;
    wait_all(&receipts, &acks, Duration::from_secs(60)).await?;
    for s in subs {
        s.abort();
    }
    Ok((committed, elapsed, args.value_bytes as f64))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
