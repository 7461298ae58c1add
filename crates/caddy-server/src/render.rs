//! Render jobs on this node: the client calls (submit, get, list, cancel,
//! wait, image download) and, where a graphics adapter exists, a pool of
//! workers that claim jobs through Raft, render them with `caddy-render`,
//! store the PNG in the blob store and record the result.
//!
//! Invariants:
//! - A node without an adapter (or with `render.enabled = false`) runs no
//!   workers, says so once in its log and in `cluster status`, and leaves
//!   jobs queued for a capable node.
//! - A worker proposes a claim only when its local state shows a job to
//!   claim, so idle clusters write nothing.
//! - A worker renews its lease every third of it; a renewal the cluster
//!   refuses (cancelled, or taken over after a lost lease) makes the worker
//!   drop the job without reporting. The attempt number fences late results.
//! - An image's chunks are held by a majority of nodes (or the shared object
//!   store) before the result naming them is proposed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use caddy_core::docs::{DocAnswer, DocCall, DocId};
use caddy_core::files::{CHUNK_BYTES, ChunkRef};
use caddy_core::identity::api::Op;
use caddy_core::identity::{Action, Caller, Permission, Resource, ResourceKind, TenantId, authorize};
use caddy_core::render::{
    JobId, JobView, MAX_JOB_PROBLEMS, RenderAnswer, RenderCall, RenderClaim, RenderImage, RenderOp, RenderOutcome,
    RenderView, bounded_error,
};
use caddy_core::{CaddyError, ClientSeq, Command, ErrorCode, ReplyBody};
use caddy_raft::RaftNode;
use caddy_wire::pb::{self, response::Body as Resp};
use caddy_wire::write_frame;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use crate::accounts::now_ms;
use crate::blobs::Blobs;
use crate::config::RenderConfig;
use crate::service::{Asker, Service};

/// Longest a client's wait call may last.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// A wait call's default length.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How often the leader forgets old finished jobs.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Payload bytes per image frame.
const IMAGE_FRAME: usize = 1024 * 1024;

/// What `cluster status` says about this node's render workers.
#[derive(Default)]
pub struct RenderStatus {
    line: Mutex<String>,
}

impl RenderStatus {
    fn set(&self, line: String) {
        *self.line.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = line;
    }

    /// The status line (`on: ...` or `off: ...`).
    pub fn line(&self) -> String {
        let line = self.line.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if line.is_empty() { "off: starting".into() } else { line }
    }
}

/// Starts the leader's job sweep and, if an adapter is found, the workers.
pub fn start(
    config: RenderConfig,
    node: RaftNode,
    blobs: Arc<Blobs>,
    status: Arc<RenderStatus>,
    shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(sweep_loop(node.clone(), config.job_retention_secs, shutdown.clone()));
    if !config.enabled {
        status.set("off: disabled in configuration (render.enabled = false)".into());
        tracing::info!("render workers off: disabled in configuration (render.enabled = false)");
        return;
    }
    tokio::spawn(async move {
        let renderer = match tokio::task::spawn_blocking(caddy_render::Renderer::new).await {
            Ok(Ok(r)) => Arc::new(r),
            Ok(Err(e)) => {
                let reason = match e {
                    caddy_render::RenderError::NoAdapter => {
                        "no graphics adapter (no GPU driver and no software Vulkan such as Mesa's lavapipe, \
                         package mesa-vulkan-drivers); jobs wait for a node that has one"
                            .to_string()
                    }
                    other => format!("the graphics adapter could not be used: {other}"),
                };
                tracing::warn!("render workers off: {reason}");
                status.set(format!("off: {reason}"));
                metrics::gauge!("caddy_render_workers").set(0.0);
                return;
            }
            Err(e) => {
                status.set(format!("off: adapter probe failed: {e}"));
                return;
            }
        };
        let info = renderer.adapter_info();
        let line = format!(
            "on: {} ({}, {}), {} worker{}",
            info.name,
            info.device_type,
            info.backend,
            config.workers,
            if config.workers == 1 { "" } else { "s" }
        );
        tracing::info!(adapter = %info.name, device_type = %info.device_type, backend = %info.backend,
            msaa = info.sample_count, workers = config.workers, "render workers on");
        status.set(line);
        metrics::gauge!("caddy_render_workers").set(f64::from(config.workers));
        metrics::gauge!("caddy_render_adapter_info", "name" => info.name.clone(), "device_type" => info.device_type.clone(),
            "backend" => info.backend.clone())
        .set(1.0);
        let adapter = format!("{} ({})", info.name, info.device_type);
        let worker = Arc::new(Worker { config, node, blobs, renderer, adapter });
        for _ in 0..worker.config.workers {
            tokio::spawn(worker.clone().run(shutdown.clone()));
        }
    });
}

/// On the leader: forgets finished jobs past their retention; everywhere:
/// the queue gauges.
async fn sweep_loop(node: RaftNode, retention_secs: u64, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = crate::run::stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        if let Ok((queued, running)) = node.state_machine().render_counts(100_000) {
            metrics::gauge!("caddy_render_jobs", "state" => "queued").set(queued as f64);
            metrics::gauge!("caddy_render_jobs", "state" => "running").set(running as f64);
        }
        if node.leader().is_some_and(|(id, _)| id == node.id()) {
            let cmd = Command::RenderSweep { retention_ms: retention_secs.saturating_mul(1000) };
            if let Err(e) = node.propose(None, cmd).await {
                tracing::debug!(error = %e, "render job sweep not recorded");
            }
        }
    }
}

struct Worker {
    config: RenderConfig,
    node: RaftNode,
    blobs: Arc<Blobs>,
    renderer: Arc<caddy_render::Renderer>,
    adapter: String,
}

impl Worker {
    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::run::stopped(&mut shutdown) => return,
                _ = tick.tick() => {}
            }
            while !*shutdown.borrow() {
                if !self.node.state_machine().render_pending(now_ms()).unwrap_or(false) {
                    break;
                }
                let cmd = Command::RenderClaim {
                    node: self.node.id(),
                    lease_ms: self.config.lease_ms,
                    max_attempts: self.config.max_attempts,
                };
                match self.node.propose(None, cmd).await {
                    Ok(ReplyBody::RenderClaimed { claim: Some(claim) }) => self.job(claim).await,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "render claim not recorded");
                        break;
                    }
                }
            }
        }
    }

    /// Runs one claimed attempt to its end (or until its lease is lost).
    async fn job(&self, claim: RenderClaim) {
        let started = Instant::now();
        metrics::gauge!("caddy_render_running").increment(1.0);
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn(renew_loop(self.node.clone(), claim.clone(), self.config.lease_ms, lost.clone()));
        let tenant = TenantId::new(&claim.tenant);
        let outcome = match &tenant {
            Ok(t) => self.attempt(t, &claim, &lost).await,
            Err(e) => RenderOutcome::Failed(format!("bad tenant in the job: {e}")),
        };
        renewal.abort();
        metrics::gauge!("caddy_render_running").decrement(1.0);
        if lost.load(Ordering::SeqCst) {
            tracing::info!(job = %claim.job, attempt = claim.attempt, "render job dropped: cancelled or taken over");
            metrics::counter!("caddy_render_jobs_total", "outcome" => "dropped").increment(1);
            return;
        }
        let kind = match &outcome {
            RenderOutcome::Done(_) => "done",
            RenderOutcome::Failed(_) => "failed",
            RenderOutcome::Retry(_) => "retry",
        };
        if let RenderOutcome::Done(image) = &outcome {
            metrics::histogram!("caddy_render_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("caddy_render_triangles").record(image.triangles as f64);
        }
        let Ok(tenant) = tenant else { return };
        let cmd = Command::RenderFinish {
            tenant,
            job: claim.job,
            attempt: claim.attempt,
            node: self.node.id(),
            outcome,
            max_attempts: self.config.max_attempts,
        };
        match self.node.propose(None, cmd).await {
            Ok(_) => {
                tracing::info!(job = %claim.job, attempt = claim.attempt, outcome = kind,
                    ms = started.elapsed().as_millis() as u64, "render job finished");
                metrics::counter!("caddy_render_jobs_total", "outcome" => kind).increment(1);
            }
            // The lease ran out meanwhile; another attempt owns the job.
            Err(e) => tracing::warn!(job = %claim.job, error = %e, "render result not recorded"),
        }
    }

    async fn attempt(&self, tenant: &TenantId, claim: &RenderClaim, lost: &AtomicBool) -> RenderOutcome {
        let sm = self.node.state_machine();
        if let Err(e) = self.node.read_barrier().await {
            return RenderOutcome::Retry(format!("cannot read the document: {e}"));
        }
        let call = DocCall::Fetch { doc: claim.spec.doc.to_string(), since: None, at: Some(claim.version.to_string()) };
        let bytes = match sm.doc_read(tenant, &call) {
            Ok((DocAnswer::Fetched(f), bytes)) if f.snapshot => bytes,
            Ok(_) => return RenderOutcome::Failed("the document's bytes came back in an unexpected form".into()),
            Err(e) => {
                return RenderOutcome::Failed(format!(
                    "{} at change {} cannot be resolved: {}",
                    claim.spec.doc, claim.version, e.message
                ));
            }
        };
        // Read-only replica: the peer id is never used to write.
        let doc = match caddy_doc::Document::from_snapshot(&bytes, 1, caddy_doc::Limits::default()) {
            Ok(d) => d,
            Err(e) => return RenderOutcome::Failed(format!("the document cannot be loaded: {e}")),
        };
        let resolved = doc.resolve();
        drop(doc);
        let request = caddy_render::RenderRequest {
            view: match &claim.spec.view {
                RenderView::Fit { margin, rotation_deg } => {
                    caddy_render::View::Fit { margin_frac: *margin, rotation_deg: *rotation_deg }
                }
                RenderView::Window { min, max, rotation_deg } => {
                    caddy_render::View::Window { min: *min, max: *max, rotation_deg: *rotation_deg }
                }
            },
            width: claim.spec.width,
            height: claim.spec.height,
            background: claim.spec.background,
            layers: claim.spec.layers.clone(),
        };
        let renderer = self.renderer.clone();
        let started = Instant::now();
        let rendered = tokio::task::spawn_blocking(move || renderer.render(&resolved, &request)).await;
        let output = match rendered {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.is_invalid_request() => return RenderOutcome::Failed(e.to_string()),
            Ok(Err(e)) if e.is_retryable() => return RenderOutcome::Retry(e.to_string()),
            Ok(Err(e)) => return RenderOutcome::Failed(e.to_string()),
            Err(e) => return RenderOutcome::Retry(format!("render task: {e}")),
        };
        let min = Duration::from_millis(self.config.min_render_ms);
        while started.elapsed() < min && !lost.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50).min(min.saturating_sub(started.elapsed()))).await;
        }
        let render_ms = started.elapsed().as_millis() as u64;
        if lost.load(Ordering::SeqCst) {
            return RenderOutcome::Retry("lease lost".into());
        }
        let mut chunks = Vec::new();
        for piece in output.png.chunks(CHUNK_BYTES as usize) {
            let hash = *blake3::hash(piece).as_bytes();
            let data = Bytes::copy_from_slice(piece);
            let stored = async {
                self.blobs.store_local(tenant, hash, data.clone()).await?;
                self.blobs.replicate(tenant, hash, data).await
            };
            if let Err(e) = stored.await {
                return RenderOutcome::Retry(format!("storing the image: {e}"));
            }
            chunks.push(ChunkRef { hash, len: piece.len() as u32 });
        }
        let problem_count = output.problems.len() as u64;
        let problems = output.problems.iter().take(MAX_JOB_PROBLEMS).map(|p| bounded_error(p)).collect();
        RenderOutcome::Done(RenderImage {
            size: output.png.len() as u64,
            chunks,
            width: output.width,
            height: output.height,
            triangles: output.triangles,
            render_ms,
            problems,
            problem_count,
            adapter: self.adapter.clone(),
        })
    }
}

/// Renews the lease every third of it until aborted; sets `lost` when the
/// cluster refuses (the job was cancelled or another attempt owns it).
async fn renew_loop(node: RaftNode, claim: RenderClaim, lease_ms: u64, lost: Arc<AtomicBool>) {
    let Ok(tenant) = TenantId::new(&claim.tenant) else { return };
    loop {
        tokio::time::sleep(Duration::from_millis(lease_ms / 3)).await;
        let cmd = Command::RenderRenew {
            tenant: tenant.clone(),
            job: claim.job,
            attempt: claim.attempt,
            node: node.id(),
            lease_ms,
        };
        match node.propose(None, cmd).await {
            Ok(_) => {}
            Err(e) if matches!(e.code, ErrorCode::FailedPrecondition | ErrorCode::NotFound) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::debug!(job = %claim.job, error = %e, "lease renewal not recorded; retrying"),
        }
    }
}

fn frame(answer: &RenderAnswer, payload: &[u8], more: bool, leader: &str) -> Result<pb::Response, CaddyError> {
    let answer = serde_json::to_vec(answer).map_err(|e| CaddyError::internal(format!("encoding an answer: {e}")))?;
    Ok(pb::Response {
        leader_client_addr: leader.to_owned(),
        body: Some(Resp::Render(pb::RenderResponse { answer, payload: payload.to_vec(), more })),
    })
}

async fn send<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    answer: &RenderAnswer,
    payload: &[u8],
    more: bool,
    leader: &str,
) -> Result<(), CaddyError> {
    write_frame(out, &frame(answer, payload, more, leader)?)
        .await
        .map_err(|_| CaddyError::unavailable("the client went away"))
}

impl Service {
    /// Handles one render request.
    pub(crate) async fn render<W: AsyncWrite + Unpin + Send>(
        &self,
        req: pb::RenderRequest,
        origin: Option<ClientSeq>,
        asker: &Asker,
        out: &mut W,
    ) -> Result<(), CaddyError> {
        let call: RenderCall = serde_json::from_slice(&req.call)
            .map_err(|e| CaddyError::invalid(format!("undecodable render call: {e}")))?;
        if matches!(asker.caller, Caller::Anonymous) {
            return Err(CaddyError::new(ErrorCode::Unauthenticated, "no credential presented"));
        }
        let tenant = asker.tenant.clone().ok_or_else(|| {
            CaddyError::invalid("render jobs belong to a tenant: name one (--tenant, or the tenant of your credential)")
        })?;
        let reads = matches!(
            call,
            RenderCall::Get { .. }
                | RenderCall::List { .. }
                | RenderCall::Thumbnail { .. }
                | RenderCall::Image { .. }
                | RenderCall::Thumbnails { set: None }
        );
        // A read is authorized on the state after its barrier (see
        // `barrier_then_refresh`); the other calls are judged again in apply.
        let caller = if reads { self.barrier_then_refresh(asker).await?.caller } else { asker.caller.clone() };
        authorize(&caller, Some(&tenant), Permission::new(ResourceKind::Docs, Action::Read), &Resource::Tenant)?;
        let node = self.node();
        let sm = node.state_machine();
        let leader = self.leader_client_addr();
        let job_of = |s: &str| JobId::parse(s);
        match call {
            RenderCall::Submit { spec } => {
                spec.validate()?;
                let reply = node.propose(origin, asker.call(Op::Render(RenderOp::Submit { spec }))).await?;
                let ReplyBody::RenderSubmitted { job, deduplicated } = reply else {
                    return Err(CaddyError::internal(format!("unexpected reply to a render submit: {reply:?}")));
                };
                node.read_barrier().await?;
                let mut view = sm.render_job(&tenant, JobId(job))?;
                view.deduplicated = deduplicated;
                metrics::counter!("caddy_render_submitted_total", "deduplicated" => deduplicated.to_string())
                    .increment(1);
                send(out, &RenderAnswer::Job(view), &[], false, &leader).await
            }
            RenderCall::Get { job } => {
                send(out, &RenderAnswer::Job(sm.render_job(&tenant, job_of(&job)?)?), &[], false, &leader).await
            }
            RenderCall::List { after, limit } => {
                let after = after.as_deref().map(job_of).transpose()?;
                let (jobs, next) = sm.render_jobs(&tenant, after, limit.unwrap_or(100) as usize)?;
                send(out, &RenderAnswer::Jobs { jobs, next }, &[], false, &leader).await
            }
            RenderCall::Cancel { job } => {
                let job = job_of(&job)?;
                node.propose(origin, asker.call(Op::Render(RenderOp::Cancel { job }))).await?;
                node.read_barrier().await?;
                send(out, &RenderAnswer::Job(sm.render_job(&tenant, job)?), &[], false, &leader).await
            }
            RenderCall::Wait { job, timeout_ms } => {
                let job = job_of(&job)?;
                let wait = timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis).min(MAX_WAIT);
                let view = self.wait_for(&tenant, job, wait).await?;
                send(out, &RenderAnswer::Job(view), &[], false, &leader).await
            }
            RenderCall::Thumbnails { set } => {
                if let Some(setting) = set {
                    node.propose(origin, asker.call(Op::Render(RenderOp::Thumbnails { size: setting.size }))).await?;
                    node.read_barrier().await?;
                }
                send(out, &RenderAnswer::Thumbnails(sm.render_thumbnail_setting(&tenant)?), &[], false, &leader).await
            }
            RenderCall::Thumbnail { doc } => {
                let doc = DocId::parse(&doc)?;
                send(out, &RenderAnswer::Job(sm.render_thumbnail(&tenant, doc)?), &[], false, &leader).await
            }
            RenderCall::Image { job } => {
                let (view, image) = sm.render_image(&tenant, job_of(&job)?)?;
                let answer = RenderAnswer::Image { job: view, size: image.size };
                send(out, &answer, &[], image.size > 0, &leader).await?;
                let last = image.chunks.len().saturating_sub(1);
                for (i, chunk) in image.chunks.iter().enumerate() {
                    let data = self.blobs().read(&tenant, chunk.hash).await?;
                    let mut slices = data.chunks(IMAGE_FRAME).peekable();
                    while let Some(slice) = slices.next() {
                        let more = slices.peek().is_some() || i < last;
                        let body = pb::RenderResponse { answer: Vec::new(), payload: slice.to_vec(), more };
                        let frame = pb::Response { leader_client_addr: String::new(), body: Some(Resp::Render(body)) };
                        write_frame(out, &frame).await.map_err(|_| CaddyError::unavailable("the client went away"))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// The job once it is final, or as it is when `wait` has passed. Woken
    /// by every batch this node applies (no polling interval): the job is
    /// read again from local state, which the first barrier made current.
    async fn wait_for(&self, tenant: &TenantId, job: JobId, wait: Duration) -> Result<JobView, CaddyError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shutdown_signal();
        let sm = self.node().state_machine();
        let mut applied = sm.subscribe_applied();
        self.node().read_barrier().await?;
        loop {
            let view = sm.render_job(tenant, job)?;
            if view.state.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            tokio::select! {
                _ = crate::run::stopped(&mut shutdown) => return Ok(view),
                _ = tokio::time::sleep_until(deadline) => {}
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Ok(view);
                    }
                }
            }
        }
    }
}
