//! Render jobs in the state machine (in the `files` table, so a finished
//! image's chunks are counted with the tenant's other chunks and the blob
//! repair and collection passes see them).
//!
//! Keys:
//! - `t/{t}/job/{id}`: the job record;
//! - `t/{t}/jobd/{dedup hex}`: the live job for an identical request;
//! - `t/{t}/jobn`: how many of the tenant's jobs are queued or running;
//! - `t/{t}/jobq/{created ms}/{id}`: the tenant's queue, oldest first;
//! - `Q/{created ms}/{t}/{id}`: every queued job, oldest first, across
//!   tenants (for "is anything claimable" and the queue-length metric);
//! - `R/{t}`: tenants with a queued job; `Rc`: the tenant the last claim
//!   served. Claims go round-robin over `R/` from `Rc`, each taking that
//!   tenant's oldest job, so one tenant's backlog delays another tenant's
//!   job by at most one claim per tenant with queued work;
//! - `W/{lease end ms}/{t}/{id}`: running jobs by lease end;
//! - `F/{finished ms}/{t}/{id}`: finished jobs by finish time (retention);
//! - `t/{t}/jobtcfg`: the tenant's automatic thumbnail setting;
//! - `t/{t}/jobt/{doc}`: the document's thumbnail jobs: the one waiting in
//!   the queue (a newer change retargets it instead of queueing another)
//!   and the newest done one, which is kept out of `F/` (so retention does
//!   not take a document's only thumbnail) until a newer one replaces it.
//!
//! Invariants (all judged with the entry's stamped time):
//! - A job is in the queues (its tenant's and the global one, both or
//!   neither) or the lease index while it is queued or running, never both,
//!   and in the finished index once final; `R/{t}` exists exactly when the
//!   tenant's queue is not empty.
//! - Renewals and results name the attempt they belong to; one for an
//!   attempt that is not the job's current running attempt is refused.
//! - A finished image's chunks are referenced (and its bytes counted against
//!   the storage quota) from the apply that completes the job until the one
//!   that forgets it; an image that does not fit the quota fails the job.
//! - Queued and running jobs per tenant are bounded by
//!   [`MAX_ACTIVE_JOBS_PER_TENANT`]; claims expire at most
//!   [`EXPIRE_BUDGET`] leases and sweeps forget at most [`SWEEP_BUDGET`]
//!   jobs per entry.

use std::io;

use caddy_core::docs::DocId;
use caddy_core::identity::{Action, Actor, Caller, Permission, Resource, ResourceKind, TenantId, authorize};
use caddy_core::render::{
    JobId, JobState, JobView, RenderClaim, RenderImage, RenderImageView, RenderOp, RenderOutcome, RenderSpec,
    ThumbnailSetting, bounded_error,
};
use caddy_core::{CaddyError, ErrorCode, ReplyBody};
use serde::{Deserialize, Serialize};

use crate::files::{FTable, Tbl, chunks_add, chunks_release, del, get, put, scan};
use crate::io_err;
use crate::state_machine::{Tables, open_record};

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// Queued plus running jobs one tenant may have.
pub const MAX_ACTIVE_JOBS_PER_TENANT: u64 = 1000;
/// Expired leases handled per claim.
pub const EXPIRE_BUDGET: usize = 64;
/// Finished jobs forgotten per sweep.
pub const SWEEP_BUDGET: usize = 1000;
/// Jobs per listing page at most.
pub const MAX_PAGE: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRec {
    id: JobId,
    version: u64,
    spec: RenderSpec,
    state: JobState,
    attempts: u32,
    node: Option<u64>,
    lease_until_ms: u64,
    error: Option<String>,
    created_ms: u64,
    created_by: String,
    creator: Option<u64>,
    finished_ms: Option<u64>,
    image: Option<RenderImage>,
    dedup: [u8; 32],
    thumbnail: bool,
}

/// A document's automatic thumbnail jobs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ThumbRec {
    /// Queued (not yet claimed) for the newest change.
    queued: Option<JobId>,
    /// The newest done thumbnail.
    latest: Option<JobId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRef {
    tenant: TenantId,
    job: JobId,
}

fn k_job(t: &TenantId, j: JobId) -> String {
    format!("t/{t}/job/{}", j.key_part())
}
fn p_jobs(t: &TenantId) -> String {
    format!("t/{t}/job/")
}
fn k_dedup(t: &TenantId, key: &[u8; 32]) -> String {
    format!("t/{t}/jobd/{}", hex::encode(key))
}
fn k_thumb_setting(t: &TenantId) -> String {
    format!("t/{t}/jobtcfg")
}
fn k_thumb(t: &TenantId, d: DocId) -> String {
    format!("t/{t}/jobt/{}", d.key_part())
}
fn k_active(t: &TenantId) -> String {
    format!("t/{t}/jobn")
}
fn g_queue(ms: u64, t: &TenantId, j: JobId) -> String {
    format!("Q/{ms:016x}/{t}/{}", j.key_part())
}
fn k_tenant_queue(t: &TenantId, ms: u64, j: JobId) -> String {
    format!("t/{t}/jobq/{ms:016x}/{}", j.key_part())
}
fn p_tenant_queue(t: &impl std::fmt::Display) -> String {
    format!("t/{t}/jobq/")
}
fn g_ring(t: &TenantId) -> String {
    format!("R/{t}")
}
/// The ring entry (`R/{t}`) of the tenant the last claim served (absent
/// before the first claim).
const G_RING_CURSOR: &str = "Rc";
fn g_lease(ms: u64, t: &TenantId, j: JobId) -> String {
    format!("W/{ms:016x}/{t}/{}", j.key_part())
}
fn g_finished(ms: u64, t: &TenantId, j: JobId) -> String {
    format!("F/{ms:016x}/{t}/{}", j.key_part())
}

type Step = io::Result<Result<ReplyBody, CaddyError>>;

fn user_of(caller: &Caller) -> Option<u64> {
    match caller {
        Caller::User(u) => Some(u.user.0),
        _ => None,
    }
}

fn view(rec: &JobRec) -> JobView {
    JobView {
        id: rec.id.to_string(),
        doc: rec.spec.doc.to_string(),
        version: rec.version,
        spec: rec.spec.clone(),
        state: rec.state,
        attempts: rec.attempts,
        node: rec.node,
        error: rec.error.clone(),
        created_ms: rec.created_ms,
        created_by: rec.created_by.clone(),
        finished_ms: rec.finished_ms,
        image: rec.image.as_ref().map(RenderImageView::from),
        thumbnail: rec.thumbnail,
        deduplicated: false,
    }
}

fn job_not_found(j: JobId) -> CaddyError {
    CaddyError::new(ErrorCode::NotFound, format!("render job {j} not found"))
}

fn active_add(files: &mut FTable<'_>, t: &TenantId, delta: i64) -> io::Result<()> {
    let n: u64 = get(&*files, &k_active(t))?.unwrap_or(0);
    let n = if delta < 0 { n.saturating_sub(delta.unsigned_abs()) } else { n.saturating_add(delta as u64) };
    if n == 0 { del(files, &k_active(t)) } else { put(files, &k_active(t), &n) }
}

/// Puts a job in its tenant's queue and the global one.
fn enqueue(files: &mut FTable<'_>, t: &TenantId, rec: &JobRec) -> io::Result<()> {
    let r = JobRef { tenant: t.clone(), job: rec.id };
    put(files, &g_queue(rec.created_ms, t, rec.id), &r)?;
    put(files, &k_tenant_queue(t, rec.created_ms, rec.id), &r)?;
    put(files, &g_ring(t), &())
}

/// Takes a job out of both queues; the tenant leaves the ring when its
/// queue is empty.
fn dequeue(files: &mut FTable<'_>, t: &TenantId, rec: &JobRec) -> io::Result<()> {
    del(files, &g_queue(rec.created_ms, t, rec.id))?;
    del(files, &k_tenant_queue(t, rec.created_ms, rec.id))?;
    if first_under(&*files, &p_tenant_queue(t))?.is_none() {
        del(files, &g_ring(t))?;
    }
    Ok(())
}

/// The first key under `prefix`, if any.
fn first_under(files: &impl Tbl, prefix: &str) -> io::Result<Option<String>> {
    let end = format!("{}\u{10ffff}", prefix);
    match files.range(prefix..end.as_str()).map_err(io_err)?.next() {
        Some(item) => Ok(Some(item.map_err(io_err)?.0.value().to_owned())),
        None => Ok(None),
    }
}

/// The ring entry (`R/{t}`) of the tenant whose turn it is: the first after
/// the one the last claim served, wrapping around.
fn next_in_ring(files: &impl Tbl) -> io::Result<Option<String>> {
    if let Some(last) = get::<String>(files, G_RING_CURSOR)? {
        let after = format!("{last}\u{0}");
        if let Some(item) = files.range(after.as_str().."R0").map_err(io_err)?.next() {
            return Ok(Some(item.map_err(io_err)?.0.value().to_owned()));
        }
    }
    first_under(files, "R/")
}

/// Moves a queued or running job to a final state (indexes, counters).
fn finish(files: &mut FTable<'_>, t: &TenantId, rec: &mut JobRec, state: JobState, stamp: u64) -> io::Result<()> {
    match rec.state {
        JobState::Queued => dequeue(files, t, rec)?,
        JobState::Running => del(files, &g_lease(rec.lease_until_ms, t, rec.id))?,
        _ => return Ok(()),
    }
    active_add(files, t, -1)?;
    rec.state = state;
    rec.finished_ms = Some(stamp);
    if state != JobState::Done && get::<JobId>(&*files, &k_dedup(t, &rec.dedup))? == Some(rec.id) {
        // A failed or cancelled job is not an answer to the next identical request.
        del(files, &k_dedup(t, &rec.dedup))?;
    }
    let kept_as_latest = rec.thumbnail && state == JobState::Done && thumbnail_finished(files, t, rec)?;
    if !kept_as_latest {
        put(files, &g_finished(stamp, t, rec.id), &JobRef { tenant: t.clone(), job: rec.id })?;
    }
    put(files, &k_job(t, rec.id), rec)
}

/// Puts a running job back in the queue, at its original place.
fn requeue(files: &mut FTable<'_>, t: &TenantId, rec: &mut JobRec) -> io::Result<()> {
    del(files, &g_lease(rec.lease_until_ms, t, rec.id))?;
    rec.state = JobState::Queued;
    rec.node = None;
    rec.lease_until_ms = 0;
    enqueue(files, t, rec)?;
    put(files, &k_job(t, rec.id), rec)
}

/// A thumbnail job is done: it becomes the document's newest thumbnail
/// (returns true: kept out of retention) unless a newer change's is already
/// done, and the one it replaces starts its retention period, from when it
/// finished. (A failed or cancelled one needs nothing here: the next change
/// sees it is no longer queued and queues a new one.)
fn thumbnail_finished(files: &mut FTable<'_>, t: &TenantId, rec: &JobRec) -> io::Result<bool> {
    let key = k_thumb(t, rec.spec.doc);
    let Some(mut thumb) = get::<ThumbRec>(&*files, &key)? else {
        // The document was purged while its thumbnail rendered.
        return Ok(false);
    };
    if thumb.queued == Some(rec.id) {
        thumb.queued = None;
    }
    let replaced = thumb.latest.filter(|old| *old != rec.id);
    let newer_kept = match replaced {
        Some(old) => get::<JobRec>(&*files, &k_job(t, old))?.is_some_and(|o| o.version > rec.version),
        None => false,
    };
    if newer_kept {
        // An older change's thumbnail finishing late does not replace a newer one.
        put(files, &key, &thumb)?;
        return Ok(false);
    }
    if let Some(old) = replaced
        && let Some(old_rec) = get::<JobRec>(&*files, &k_job(t, old))?
        && let Some(ms) = old_rec.finished_ms
    {
        put(files, &g_finished(ms, t, old), &JobRef { tenant: t.clone(), job: old })?;
    }
    thumb.latest = Some(rec.id);
    put(files, &key, &thumb)?;
    Ok(true)
}

/// After a committed change to `doc` (now at change `version`): with
/// thumbnails on, the document's queued thumbnail job is moved to this
/// change, or a new one is queued. A tenant at its active-job bound gets no
/// new thumbnail job (the next change tries again).
pub(crate) fn thumbnail_on_commit(
    tables: &mut Tables<'_>,
    t: &TenantId,
    doc: DocId,
    version: u64,
    stamp: u64,
    allocate: impl FnOnce() -> u64,
) -> io::Result<()> {
    let files = &mut tables.files;
    let Some(setting) = get::<ThumbnailSetting>(&*files, &k_thumb_setting(t))? else {
        return Ok(());
    };
    let Some(spec) = setting.spec(doc, version) else {
        return Ok(());
    };
    let key = k_thumb(t, doc);
    let mut thumb: ThumbRec = get(&*files, &key)?.unwrap_or_default();
    // Thumbnail jobs stay out of the dedup index: a queued one is retargeted
    // to newer changes, which must never change a job a client was given.
    let dedup = spec.dedup_key(version);
    if let Some(queued) = thumb.queued
        && let Some(mut rec) = get::<JobRec>(&*files, &k_job(t, queued))?
        && rec.state == JobState::Queued
    {
        rec.version = version;
        rec.spec = spec;
        rec.dedup = dedup;
        return put(files, &k_job(t, rec.id), &rec);
    }
    let active: u64 = get(&*files, &k_active(t))?.unwrap_or(0);
    if active >= MAX_ACTIVE_JOBS_PER_TENANT {
        return Ok(());
    }
    let rec = JobRec {
        id: JobId(allocate()),
        version,
        spec,
        state: JobState::Queued,
        attempts: 0,
        node: None,
        lease_until_ms: 0,
        error: None,
        created_ms: stamp,
        created_by: Actor::System.to_string(),
        creator: None,
        finished_ms: None,
        image: None,
        dedup,
        thumbnail: true,
    };
    put(files, &k_job(t, rec.id), &rec)?;
    enqueue(files, t, &rec)?;
    active_add(files, t, 1)?;
    thumb.queued = Some(rec.id);
    put(files, &key, &thumb)
}

/// A purged document's thumbnails: the newest starts its retention period
/// (a queued one fails when its worker finds the document gone).
pub(crate) fn forget_thumbnails(files: &mut FTable<'_>, t: &TenantId, doc: DocId) -> io::Result<()> {
    let key = k_thumb(t, doc);
    let Some(thumb) = get::<ThumbRec>(&*files, &key)? else {
        return Ok(());
    };
    if let Some(latest) = thumb.latest
        && let Some(rec) = get::<JobRec>(&*files, &k_job(t, latest))?
        && let Some(ms) = rec.finished_ms
    {
        put(files, &g_finished(ms, t, latest), &JobRef { tenant: t.clone(), job: latest })?;
    }
    del(files, &key)
}

/// The tenant's thumbnail setting (off when never set).
pub(crate) fn read_thumbnail_setting(files: &impl Tbl, t: &TenantId) -> io::Result<ThumbnailSetting> {
    Ok(get(files, &k_thumb_setting(t))?.unwrap_or(ThumbnailSetting { size: None }))
}

/// The newest done thumbnail of `doc`.
pub(crate) fn read_thumbnail(files: &impl Tbl, t: &TenantId, doc: DocId) -> io::Result<Result<JobView, CaddyError>> {
    let thumb: Option<ThumbRec> = get(files, &k_thumb(t, doc))?;
    if let Some(latest) = thumb.as_ref().and_then(|th| th.latest)
        && let Some(rec) = get::<JobRec>(files, &k_job(t, latest))?
    {
        return Ok(Ok(view(&rec)));
    }
    let why = match thumb.and_then(|th| th.queued) {
        Some(queued) => format!("{doc} has no thumbnail yet ({queued} is queued for it)"),
        None => format!("{doc} has no thumbnail (thumbnails are made for changes committed while they are on)"),
    };
    Ok(Err(CaddyError::new(ErrorCode::NotFound, why)))
}

/// What a client's render op needs from the identity layer.
pub(crate) struct RenderCtx<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) caller: &'a Caller,
    pub(crate) stamp: u64,
}

/// Applies a client's render op (authorized for `docs:read` already).
pub(crate) fn apply(
    tables: &mut Tables<'_>,
    ctx: RenderCtx<'_>,
    op: &RenderOp,
    allocate: impl FnOnce() -> u64,
) -> Step {
    let t = ctx.tenant;
    match op {
        RenderOp::Submit { spec } => {
            if let Err(e) = spec.validate() {
                return Ok(Err(e));
            }
            let latest = match crate::docs::live_seq(tables, t, spec.doc)? {
                Ok(seq) => seq,
                Err(e) => return Ok(Err(e)),
            };
            let version = spec.version.unwrap_or(latest);
            if version > latest {
                return Ok(Err(CaddyError::invalid(format!(
                    "{} has no change {version} (its latest is {latest})",
                    spec.doc
                ))));
            }
            let dedup = spec.dedup_key(version);
            let files = &mut tables.files;
            if let Some(existing) = get::<JobId>(&*files, &k_dedup(t, &dedup))? {
                return Ok(Ok(ReplyBody::RenderSubmitted { job: existing.0, deduplicated: true }));
            }
            let active: u64 = get(&*files, &k_active(t))?.unwrap_or(0);
            if active >= MAX_ACTIVE_JOBS_PER_TENANT {
                return Ok(Err(CaddyError::exhausted(format!(
                    "tenant {t} already has {active} render jobs queued or running (the bound is \
                     {MAX_ACTIVE_JOBS_PER_TENANT}); wait for some to finish"
                ))));
            }
            let id = JobId(allocate());
            let mut stored = spec.clone();
            stored.version = Some(version);
            let rec = JobRec {
                id,
                version,
                spec: stored,
                state: JobState::Queued,
                attempts: 0,
                node: None,
                lease_until_ms: 0,
                error: None,
                created_ms: ctx.stamp,
                created_by: ctx.caller.actor().unwrap_or(Actor::System).to_string(),
                creator: user_of(ctx.caller),
                finished_ms: None,
                image: None,
                dedup,
                thumbnail: false,
            };
            put(files, &k_job(t, id), &rec)?;
            put(files, &k_dedup(t, &dedup), &id)?;
            enqueue(files, t, &rec)?;
            active_add(files, t, 1)?;
            Ok(Ok(ReplyBody::RenderSubmitted { job: id.0, deduplicated: false }))
        }
        RenderOp::Cancel { job } => {
            let files = &mut tables.files;
            let Some(mut rec) = get::<JobRec>(&*files, &k_job(t, *job))? else {
                return Ok(Err(job_not_found(*job)));
            };
            let own = rec.creator.is_some() && rec.creator == user_of(ctx.caller);
            let admin =
                authorize(ctx.caller, Some(t), Permission::new(ResourceKind::Docs, Action::Admin), &Resource::Tenant)
                    .is_ok();
            if !own && !admin {
                return Ok(Err(CaddyError::new(
                    ErrorCode::PermissionDenied,
                    format!("only the submitter of {job} or someone with docs:admin may cancel it"),
                )));
            }
            if rec.state.is_final() {
                return Ok(Err(CaddyError::precondition(format!("{job} is already {}", state_name(rec.state)))));
            }
            finish(files, t, &mut rec, JobState::Cancelled, ctx.stamp)?;
            Ok(Ok(ReplyBody::Done))
        }
        RenderOp::Thumbnails { size } => {
            let admin = Permission::new(ResourceKind::Docs, Action::Admin);
            if let Err(e) = authorize(ctx.caller, Some(t), admin, &Resource::Tenant) {
                return Ok(Err(e));
            }
            let setting = ThumbnailSetting { size: *size };
            match setting.spec(DocId(0), 0) {
                Some(spec) => {
                    if let Err(e) = spec.validate() {
                        return Ok(Err(e));
                    }
                    put(&mut tables.files, &k_thumb_setting(t), &setting)?;
                }
                None => del(&mut tables.files, &k_thumb_setting(t))?,
            }
            Ok(Ok(ReplyBody::Done))
        }
    }
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Index entries from `prefix` whose time is at most `until`, at most `limit`.
fn due(files: &impl Tbl, prefix: &str, until: u64, limit: usize) -> io::Result<Vec<(String, u64, JobRef)>> {
    let end = format!("{}0", &prefix[..prefix.len() - 1]);
    let mut out = Vec::new();
    for item in files.range(prefix..end.as_str()).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let ms = k.value().get(2..18).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
        if ms > until || out.len() >= limit {
            break;
        }
        out.push((k.value().to_owned(), ms, open_record(k.value(), v.value())?));
    }
    Ok(out)
}

/// A worker's claim: expired leases first go back to the queue (or fail
/// after `max_attempts`), then the oldest queued job is leased to `node`.
pub(crate) fn claim(tables: &mut Tables<'_>, stamp: u64, node: u64, lease_ms: u64, max_attempts: u32) -> Step {
    let files = &mut tables.files;
    for (key, _, r) in due(&*files, "W/", stamp, EXPIRE_BUDGET)? {
        let Some(mut rec) = get::<JobRec>(&*files, &k_job(&r.tenant, r.job))? else {
            del(files, &key)?;
            continue;
        };
        let lost = format!(
            "attempt {} on node {} lost its lease (the worker stopped or could not reach the cluster)",
            rec.attempts,
            rec.node.unwrap_or(0)
        );
        if rec.attempts >= max_attempts {
            rec.error = Some(format!("{lost}; no attempts left ({max_attempts})"));
            finish(files, &r.tenant, &mut rec, JobState::Failed, stamp)?;
        } else {
            rec.error = Some(lost);
            requeue(files, &r.tenant, &mut rec)?;
        }
    }
    let Some(turn) = next_in_ring(&*files)? else {
        return Ok(Ok(ReplyBody::RenderClaimed { claim: None }));
    };
    put(files, G_RING_CURSOR, &turn)?;
    let tenant = turn.strip_prefix("R/").unwrap_or_default();
    let Some(key) = first_under(&*files, &p_tenant_queue(&tenant))? else {
        // A ring entry without a queue is repaired rather than trusted.
        del(files, &turn)?;
        return Ok(Ok(ReplyBody::RenderClaimed { claim: None }));
    };
    let r: JobRef = get(&*files, &key)?.ok_or_else(|| io_err(format!("{key} vanished during the claim")))?;
    let Some(mut rec) = get::<JobRec>(&*files, &k_job(&r.tenant, r.job))? else {
        del(files, &key)?;
        return Ok(Ok(ReplyBody::RenderClaimed { claim: None }));
    };
    dequeue(files, &r.tenant, &rec)?;
    rec.state = JobState::Running;
    rec.attempts = rec.attempts.saturating_add(1);
    rec.node = Some(node);
    rec.lease_until_ms = stamp.saturating_add(lease_ms);
    put(files, &g_lease(rec.lease_until_ms, &r.tenant, rec.id), &r)?;
    put(files, &k_job(&r.tenant, rec.id), &rec)?;
    let claim = RenderClaim {
        tenant: r.tenant.to_string(),
        job: rec.id,
        attempt: rec.attempts,
        version: rec.version,
        spec: rec.spec,
    };
    Ok(Ok(ReplyBody::RenderClaimed { claim: Some(claim) }))
}

/// The running job `job` if `attempt` on `node` still holds it.
fn held(
    files: &FTable<'_>,
    t: &TenantId,
    job: JobId,
    attempt: u32,
    node: u64,
) -> io::Result<Result<JobRec, CaddyError>> {
    let Some(rec) = get::<JobRec>(files, &k_job(t, job))? else {
        return Ok(Err(job_not_found(job)));
    };
    if rec.state != JobState::Running || rec.attempts != attempt || rec.node != Some(node) {
        return Ok(Err(CaddyError::precondition(format!(
            "attempt {attempt} on node {node} no longer holds {job} (it is {}, attempt {})",
            state_name(rec.state),
            rec.attempts
        ))));
    }
    Ok(Ok(rec))
}

/// Extends the lease of a running attempt.
pub(crate) fn renew(
    tables: &mut Tables<'_>,
    stamp: u64,
    t: &TenantId,
    job: JobId,
    attempt: u32,
    node: u64,
    lease_ms: u64,
) -> Step {
    let files = &mut tables.files;
    let mut rec = match held(files, t, job, attempt, node)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    del(files, &g_lease(rec.lease_until_ms, t, job))?;
    rec.lease_until_ms = rec.lease_until_ms.max(stamp.saturating_add(lease_ms));
    put(files, &g_lease(rec.lease_until_ms, t, job), &JobRef { tenant: t.clone(), job })?;
    put(files, &k_job(t, job), &rec)?;
    Ok(Ok(ReplyBody::Done))
}

/// Records how a running attempt ended.
#[allow(clippy::too_many_arguments)]
pub(crate) fn complete(
    tables: &mut Tables<'_>,
    stamp: u64,
    t: &TenantId,
    job: JobId,
    attempt: u32,
    node: u64,
    outcome: &RenderOutcome,
    max_attempts: u32,
) -> Step {
    let mut rec = match held(&tables.files, t, job, attempt, node)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    match outcome {
        RenderOutcome::Done(image) => {
            if let Err(e) = caddy_core::files::check_chunk_layout(image.size, &image.chunks) {
                rec.error = Some(format!("the worker's image was malformed: {e}"));
                finish(&mut tables.files, t, &mut rec, JobState::Failed, stamp)?;
                return Ok(Ok(ReplyBody::Done));
            }
            if let Err(e) = crate::identity::charge_storage(&mut tables.ident, t, image.size)? {
                rec.error = Some(bounded_error(&format!("the image could not be kept: {e}")));
                finish(&mut tables.files, t, &mut rec, JobState::Failed, stamp)?;
                return Ok(Ok(ReplyBody::Done));
            }
            chunks_add(&mut tables.files, t, &image.chunks)?;
            rec.error = None;
            rec.image = Some(image.clone());
            finish(&mut tables.files, t, &mut rec, JobState::Done, stamp)?;
        }
        RenderOutcome::Failed(message) => {
            rec.error = Some(bounded_error(message));
            finish(&mut tables.files, t, &mut rec, JobState::Failed, stamp)?;
        }
        RenderOutcome::Retry(message) => {
            if rec.attempts >= max_attempts {
                rec.error = Some(bounded_error(&format!("{message}; no attempts left ({max_attempts})")));
                finish(&mut tables.files, t, &mut rec, JobState::Failed, stamp)?;
            } else {
                rec.error = Some(bounded_error(message));
                requeue(&mut tables.files, t, &mut rec)?;
            }
        }
    }
    Ok(Ok(ReplyBody::Done))
}

/// Forgets one job: its record, indexes, and its image's references.
fn forget(tables: &mut Tables<'_>, t: &TenantId, rec: &JobRec) -> io::Result<u64> {
    let files = &mut tables.files;
    if let Some(ms) = rec.finished_ms {
        del(files, &g_finished(ms, t, rec.id))?;
    }
    if get::<JobId>(&*files, &k_dedup(t, &rec.dedup))? == Some(rec.id) {
        del(files, &k_dedup(t, &rec.dedup))?;
    }
    del(files, &k_job(t, rec.id))?;
    match &rec.image {
        Some(image) => {
            chunks_release(files, t, &image.chunks)?;
            Ok(image.size)
        }
        None => Ok(0),
    }
}

/// Forgets finished jobs older than `retention_ms`.
pub(crate) fn sweep(tables: &mut Tables<'_>, stamp: u64, retention_ms: u64) -> Step {
    let cutoff = stamp.saturating_sub(retention_ms);
    for (key, _, r) in due(&tables.files, "F/", cutoff, SWEEP_BUDGET)? {
        match get::<JobRec>(&tables.files, &k_job(&r.tenant, r.job))? {
            Some(rec) => {
                let bytes = forget(tables, &r.tenant, &rec)?;
                if bytes > 0 {
                    crate::identity::release_storage(&mut tables.ident, &r.tenant, bytes)?;
                }
            }
            None => del(&mut tables.files, &key)?,
        }
    }
    Ok(Ok(ReplyBody::Done))
}

/// Removes every job of a deleted tenant and its global index entries.
pub(crate) fn delete_tenant_jobs(tables: &mut Tables<'_>, t: &TenantId) -> io::Result<()> {
    let files = &mut tables.files;
    let mut global = Vec::new();
    for (_, rec) in scan::<JobRec>(&*files, &p_jobs(t), None, usize::MAX)?.0 {
        match rec.state {
            JobState::Queued => global.push(g_queue(rec.created_ms, t, rec.id)),
            JobState::Running => global.push(g_lease(rec.lease_until_ms, t, rec.id)),
            _ => {}
        }
        if let Some(ms) = rec.finished_ms {
            global.push(g_finished(ms, t, rec.id));
        }
    }
    global.push(g_ring(t));
    for key in global {
        del(files, &key)?;
    }
    Ok(())
}

/// One job of `t`.
pub(crate) fn read_job(files: &impl Tbl, t: &TenantId, job: JobId) -> io::Result<Result<JobView, CaddyError>> {
    Ok(match get::<JobRec>(files, &k_job(t, job))? {
        Some(rec) => Ok(view(&rec)),
        None => Err(job_not_found(job)),
    })
}

/// A finished job's image (chunks to stream) with its view.
pub(crate) fn read_image(
    files: &impl Tbl,
    t: &TenantId,
    job: JobId,
) -> io::Result<Result<(JobView, RenderImage), CaddyError>> {
    Ok(match get::<JobRec>(files, &k_job(t, job))? {
        Some(rec) => match rec.image.clone() {
            Some(image) if rec.state == JobState::Done => Ok((view(&rec), image)),
            _ => Err(CaddyError::precondition(format!(
                "{job} has no image: it is {}{}",
                state_name(rec.state),
                rec.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ))),
        },
        None => Err(job_not_found(job)),
    })
}

/// The tenant's jobs, newest first, after the job `after` (exclusive).
pub(crate) fn list_jobs(
    files: &impl Tbl,
    t: &TenantId,
    after: Option<JobId>,
    limit: usize,
) -> io::Result<(Vec<JobView>, Option<String>)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let prefix = p_jobs(t);
    let end = match after {
        Some(j) => k_job(t, j),
        None => format!("{prefix}\u{10ffff}"),
    };
    let mut out = Vec::new();
    let mut more = false;
    for item in files.range(prefix.as_str()..end.as_str()).map_err(io_err)?.rev() {
        let (k, v) = item.map_err(io_err)?;
        if out.len() == limit {
            more = true;
            break;
        }
        let rec: JobRec = open_record(k.value(), v.value())?;
        out.push(view(&rec));
    }
    let next = if more { out.last().map(|j| j.id.clone()) } else { None };
    Ok((out, next))
}

/// Whether a worker could claim something at `now`: a queued job, or a
/// running one whose lease has run out.
pub(crate) fn pending(files: &impl Tbl, now: u64) -> io::Result<bool> {
    Ok(!due(files, "Q/", u64::MAX, 1)?.is_empty() || !due(files, "W/", now, 1)?.is_empty())
}

/// Queued and running jobs across tenants, each counted up to `cap`.
pub(crate) fn counts(files: &impl Tbl, cap: usize) -> io::Result<(usize, usize)> {
    Ok((due(files, "Q/", u64::MAX, cap)?.len(), due(files, "W/", u64::MAX, cap)?.len()))
}
