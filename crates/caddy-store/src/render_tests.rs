//! Render jobs in the state machine: submission and deduplication, bad
//! specs, claims with leases that run out (judged by stamped time), stale
//! workers fenced by attempt numbers, bounded attempts, retries, cancel,
//! the storage quota for images, retention, and tenant deletion.

use caddy_core::docs::{DocBounds, DocCall, DocId};
use caddy_core::files::{CHUNK_BYTES, ChunkRef, FileAnswer, FileCall, StorageUsage};
use caddy_core::identity::api::Op;
use caddy_core::identity::{Caller, Quotas};
use caddy_core::render::{
    JobId, JobState, JobView, RenderClaim, RenderImage, RenderOp, RenderOutcome, RenderSpec, RenderView,
};
use caddy_core::{CaddyError, Command, ErrorCode, ReplyBody};
use caddy_doc::{Document, Limits};

use crate::identity::tests::{ADMIN, H, t};

const LEASE: u64 = 10_000;
const ATTEMPTS: u32 = 2;

struct Fx {
    h: H,
    alice: String,
    bob: String,
    outsider: String,
    doc: DocId,
}

fn setup(quotas: Quotas) -> Fx {
    let mut h = H::new();
    h.tenant("acme", quotas);
    let a = h.user("acme", "alice@acme.test", &["editor"]);
    let b = h.user("acme", "bob@acme.test", &["viewer"]);
    h.op(
        Some("acme"),
        Op::RoleUpsert {
            name: caddy_core::identity::RoleName::new("filesonly").unwrap(),
            description: String::new(),
            permissions: ["files:read".parse().unwrap()].into_iter().collect(),
            inherits: Default::default(),
        },
    );
    let o = h.user("acme", "outsider@acme.test", &["filesonly"]);
    let (alice, bob, outsider) =
        (h.login("acme", a, 1 << 40), h.login("acme", b, 1 << 40), h.login("acme", o, 1 << 40));
    let doc = match h.call(&alice, Some("acme"), Op::DocCreate { name: "plan".into(), units: None }).unwrap() {
        ReplyBody::Created { id } => DocId(id),
        other => panic!("{other:?}"),
    };
    Fx { h, alice, bob, outsider, doc }
}

fn spec(doc: DocId) -> RenderSpec {
    RenderSpec {
        doc,
        version: None,
        view: RenderView::default(),
        width: 320,
        height: 200,
        background: [255, 255, 255, 255],
        layers: None,
    }
}

fn image(size: u64, seed: u8) -> RenderImage {
    let chunks = (0..size.div_ceil(u64::from(CHUNK_BYTES)))
        .map(|i| ChunkRef {
            hash: *blake3::hash(&[seed, i as u8]).as_bytes(),
            len: (size - i * u64::from(CHUNK_BYTES)).min(u64::from(CHUNK_BYTES)) as u32,
        })
        .collect();
    RenderImage {
        size,
        chunks,
        width: 320,
        height: 200,
        triangles: 12,
        render_ms: 3,
        problems: vec![],
        problem_count: 0,
        adapter: "test".into(),
    }
}

impl Fx {
    fn submit(&mut self, who: &str, spec: RenderSpec) -> Result<(JobId, bool), CaddyError> {
        let cred = self.cred(who);
        match self.h.call(&cred, Some("acme"), Op::Render(RenderOp::Submit { spec }))? {
            ReplyBody::RenderSubmitted { job, deduplicated } => Ok((JobId(job), deduplicated)),
            other => panic!("{other:?}"),
        }
    }

    fn cred(&self, who: &str) -> String {
        match who {
            "alice" => self.alice.clone(),
            "bob" => self.bob.clone(),
            "outsider" => self.outsider.clone(),
            _ => ADMIN.to_owned(),
        }
    }

    fn cancel(&mut self, who: &str, job: JobId) -> Result<ReplyBody, CaddyError> {
        let cred = self.cred(who);
        self.h.call(&cred, Some("acme"), Op::Render(RenderOp::Cancel { job }))
    }

    fn claim(&mut self, node: u64) -> Option<RenderClaim> {
        match self.h.command(Command::RenderClaim { node, lease_ms: LEASE, max_attempts: ATTEMPTS }).unwrap() {
            ReplyBody::RenderClaimed { claim } => claim,
            other => panic!("{other:?}"),
        }
    }

    fn finish(&mut self, c: &RenderClaim, node: u64, outcome: RenderOutcome) -> Result<ReplyBody, CaddyError> {
        self.h.command(Command::RenderFinish {
            tenant: t("acme"),
            job: c.job,
            attempt: c.attempt,
            node,
            outcome,
            max_attempts: ATTEMPTS,
        })
    }

    fn renew(&mut self, c: &RenderClaim, node: u64) -> Result<ReplyBody, CaddyError> {
        self.h.command(Command::RenderRenew {
            tenant: t("acme"),
            job: c.job,
            attempt: c.attempt,
            node,
            lease_ms: LEASE,
        })
    }

    fn job(&self, job: JobId) -> JobView {
        self.h.sm.render_job(&t("acme"), job).unwrap()
    }

    fn usage(&self) -> StorageUsage {
        let caller: Caller = self.h.sm.authenticate(ADMIN, self.h.now).unwrap().1;
        match self.h.sm.file_read(&t("acme"), &caller, &FileCall::Usage, self.h.now).unwrap() {
            FileAnswer::Usage(u) => u,
            other => panic!("{other:?}"),
        }
    }

    fn bump_doc(&mut self, name: &str) {
        let cred = self.alice.clone();
        self.h.call(&cred, Some("acme"), Op::DocRename { doc: self.doc, name: name.into() }).unwrap();
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, CaddyError>) -> ErrorCode {
    r.unwrap_err().code
}

#[test]
fn submissions_resolve_latest_deduplicate_and_refuse_bad_specs() {
    let mut fx = setup(Quotas::default());
    fx.bump_doc("plan b");
    let (job, dup) = fx.submit("bob", spec(fx.doc)).unwrap();
    assert!(!dup);
    let v = fx.job(job);
    assert_eq!((v.state, v.attempts, v.created_by.contains("user-")), (JobState::Queued, 0, true), "{v:?}");
    let latest = v.version;
    assert!(latest >= 1, "{v:?}");
    // The same request, by number or as "latest", and with layers in
    // another order, is the same job.
    assert_eq!(fx.submit("alice", RenderSpec { version: Some(latest), ..spec(fx.doc) }).unwrap(), (job, true));
    assert_eq!(fx.submit("alice", spec(fx.doc)).unwrap(), (job, true));
    let doc = fx.doc;
    let layered = |a: &str, b: &str| RenderSpec { layers: Some(vec![a.into(), b.into()]), ..spec(doc) };
    let (l1, _) = fx.submit("alice", layered("walls", "doors")).unwrap();
    assert_eq!(fx.submit("alice", layered("doors", "walls")).unwrap(), (l1, true));
    // A different size or version is another job.
    let (other, dup) = fx.submit("alice", RenderSpec { width: 321, ..spec(fx.doc) }).unwrap();
    assert!(!dup && other != job);
    let (older, dup) = fx.submit("alice", RenderSpec { version: Some(latest - 1), ..spec(fx.doc) }).unwrap();
    assert!(!dup && older != job);

    // Bad requests: typed errors, nothing recorded.
    let before = fx.h.sm.render_jobs(&t("acme"), None, 100).unwrap().0.len();
    let future = RenderSpec { version: Some(latest + 1), ..spec(fx.doc) };
    assert_eq!(code(fx.submit("alice", future)), ErrorCode::InvalidArgument);
    assert_eq!(code(fx.submit("alice", RenderSpec { width: 0, ..spec(fx.doc) })), ErrorCode::InvalidArgument);
    assert_eq!(code(fx.submit("alice", RenderSpec { height: 100_000, ..spec(fx.doc) })), ErrorCode::InvalidArgument);
    assert_eq!(code(fx.submit("alice", spec(DocId(9999)))), ErrorCode::NotFound);
    assert_eq!(code(fx.submit("outsider", spec(fx.doc))), ErrorCode::PermissionDenied);
    assert_eq!(fx.h.sm.render_jobs(&t("acme"), None, 100).unwrap().0.len(), before);
    // A trashed document cannot be rendered.
    let alice = fx.alice.clone();
    fx.h.call(&alice, Some("acme"), Op::DocSetDeleted { doc: fx.doc, deleted: true }).unwrap();
    assert_eq!(code(fx.submit("alice", RenderSpec { width: 99, ..spec(fx.doc) })), ErrorCode::FailedPrecondition);

    // Listing: newest first, paged.
    let (page, next) = fx.h.sm.render_jobs(&t("acme"), None, 2).unwrap();
    assert_eq!(page.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![older.to_string(), other.to_string()]);
    let (rest, end) = fx.h.sm.render_jobs(&t("acme"), next.map(|n| JobId::parse(&n).unwrap()), 10).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(end, None);
}

#[test]
fn a_lost_lease_moves_the_job_to_another_worker_and_fences_the_old_one() {
    let mut fx = setup(Quotas::default());
    // The document itself counts too.
    let base = fx.usage().used_bytes;
    let (job, _) = fx.submit("bob", spec(fx.doc)).unwrap();
    let first = fx.claim(1).expect("a queued job");
    assert_eq!((first.job, first.attempt, first.tenant.as_str()), (job, 1, "acme"));
    assert_eq!(fx.job(job).state, JobState::Running);
    assert!(fx.claim(2).is_none(), "a leased job is not handed out twice");
    // Renewing keeps it; a renewal by another node does not count.
    fx.h.now += LEASE - 100;
    fx.renew(&first, 1).unwrap();
    assert_eq!(code(fx.renew(&first, 2)), ErrorCode::FailedPrecondition);
    fx.h.now += LEASE - 100;
    assert!(fx.claim(2).is_none(), "the renewed lease still holds");

    // Node 1 goes quiet: after the lease, node 2 gets attempt 2.
    fx.h.now += LEASE + 1;
    let second = fx.claim(2).expect("the job again");
    assert_eq!((second.job, second.attempt), (job, 2));
    assert!(fx.job(job).error.unwrap().contains("lost its lease"));
    // The old worker's late result and renewal are refused.
    assert_eq!(code(fx.finish(&first, 1, RenderOutcome::Done(image(1000, 1)))), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.renew(&first, 1)), ErrorCode::FailedPrecondition);
    assert_eq!(fx.usage().used_bytes, base);

    fx.finish(&second, 2, RenderOutcome::Done(image(1000, 2))).unwrap();
    let done = fx.job(job);
    assert_eq!((done.state, done.node, done.error.clone()), (JobState::Done, Some(2), None), "{done:?}");
    assert_eq!(done.image.as_ref().map(|i| i.size), Some(1000));
    assert_eq!(fx.usage().used_bytes, base + 1000);
    let hashes: Vec<[u8; 32]> = image(1000, 2).chunks.iter().map(|c| c.hash).collect();
    assert_eq!(fx.h.sm.chunks_referenced(&t("acme"), &hashes).unwrap(), vec![true]);
    let (view, img) = fx.h.sm.render_image(&t("acme"), job).unwrap();
    assert_eq!((view.state, img.size), (JobState::Done, 1000));
    // Done: finishing again is refused, and an identical request gets it.
    assert_eq!(code(fx.finish(&second, 2, RenderOutcome::Failed("late".into()))), ErrorCode::FailedPrecondition);
    assert_eq!(fx.submit("alice", spec(fx.doc)).unwrap(), (job, true));
}

#[test]
fn attempts_are_bounded_and_failures_are_kept() {
    let mut fx = setup(Quotas::default());
    let (job, _) = fx.submit("bob", spec(fx.doc)).unwrap();
    for node in 1..=ATTEMPTS as u64 {
        let c = fx.claim(node).expect("claimable");
        assert_eq!(c.attempt, node as u32);
        fx.h.now += LEASE + 1;
    }
    assert!(fx.claim(9).is_none(), "the job ran out of attempts");
    let failed = fx.job(job);
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("no attempts left")), "{failed:?}");
    assert_eq!(code(fx.h.sm.render_image(&t("acme"), job)), ErrorCode::FailedPrecondition);
    // A failed job does not answer the next identical request.
    let (again, dup) = fx.submit("bob", spec(fx.doc)).unwrap();
    assert!(!dup && again != job);

    // A retryable error requeues; a final one fails at once with its message.
    let c = fx.claim(1).unwrap();
    fx.finish(&c, 1, RenderOutcome::Retry("adapter lost".into())).unwrap();
    assert_eq!(fx.job(again).state, JobState::Queued);
    let c = fx.claim(2).unwrap();
    assert_eq!(c.attempt, 2);
    fx.finish(&c, 2, RenderOutcome::Failed("change 7 cannot be resolved".into())).unwrap();
    let v = fx.job(again);
    assert_eq!((v.state, v.error.as_deref()), (JobState::Failed, Some("change 7 cannot be resolved")));
}

#[test]
fn cancel_stops_queued_and_running_jobs_for_their_submitter_or_an_admin() {
    let mut fx = setup(Quotas::default());
    // The document itself counts too.
    let base = fx.usage().used_bytes;
    let (queued, _) = fx.submit("bob", spec(fx.doc)).unwrap();
    assert_eq!(code(fx.cancel("alice", queued)), ErrorCode::PermissionDenied, "alice is neither submitter nor admin");
    fx.cancel("bob", queued).unwrap();
    assert_eq!(fx.job(queued).state, JobState::Cancelled);
    assert!(fx.claim(1).is_none(), "a cancelled job is not claimed");
    assert_eq!(code(fx.cancel("bob", queued)), ErrorCode::FailedPrecondition);

    let (running, dup) = fx.submit("bob", spec(fx.doc)).unwrap();
    assert!(!dup, "a cancelled job does not answer a new request");
    let c = fx.claim(1).unwrap();
    fx.cancel("operator", running).unwrap();
    assert_eq!(code(fx.finish(&c, 1, RenderOutcome::Done(image(10, 1)))), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.renew(&c, 1)), ErrorCode::FailedPrecondition, "the worker learns to stop");
    assert_eq!(fx.usage().used_bytes, base);
    assert_eq!(code(fx.cancel("bob", JobId(424_242))), ErrorCode::NotFound);
}

#[test]
fn images_count_against_the_storage_quota_and_are_released_after_retention() {
    let quotas = Quotas { max_storage_bytes: 5000, ..Quotas::default() };
    let mut fx = setup(quotas);
    // The document itself counts too.
    let base = fx.usage().used_bytes;
    let (small, _) = fx.submit("bob", spec(fx.doc)).unwrap();
    let (big, _) = fx.submit("bob", RenderSpec { width: 999, ..spec(fx.doc) }).unwrap();
    let c = fx.claim(1).unwrap();
    assert_eq!(c.job, small, "oldest first");
    fx.finish(&c, 1, RenderOutcome::Done(image(3000, 1))).unwrap();
    let c = fx.claim(1).unwrap();
    fx.finish(&c, 1, RenderOutcome::Done(image(3000, 2))).unwrap();
    let refused = fx.job(big);
    assert_eq!(refused.state, JobState::Failed);
    assert!(refused.error.as_deref().is_some_and(|e| e.contains("quota")), "{refused:?}");
    assert_eq!(fx.usage().used_bytes, base + 3000, "the refused image left nothing behind");
    let hashes = |seed| image(3000, seed).chunks.iter().map(|c| c.hash).collect::<Vec<_>>();
    assert_eq!(fx.h.sm.chunks_referenced(&t("acme"), &hashes(2)).unwrap(), vec![false]);

    // A malformed image (chunk list not matching its size) fails the job.
    let (odd, _) = fx.submit("bob", RenderSpec { width: 77, ..spec(fx.doc) }).unwrap();
    let c = fx.claim(1).unwrap();
    let mut bad = image(100, 3);
    bad.size = 5 * u64::from(CHUNK_BYTES);
    fx.finish(&c, 1, RenderOutcome::Done(bad)).unwrap();
    assert_eq!(fx.job(odd).state, JobState::Failed);

    // Retention: finished jobs are forgotten and their images released.
    fx.h.command(Command::RenderSweep { retention_ms: 60_000 }).unwrap();
    assert_eq!(fx.job(small).state, JobState::Done, "younger than the retention");
    fx.h.now += 61_000;
    fx.h.command(Command::RenderSweep { retention_ms: 60_000 }).unwrap();
    assert_eq!(code(fx.h.sm.render_job(&t("acme"), small)), ErrorCode::NotFound);
    assert_eq!(fx.usage().used_bytes, base);
    assert_eq!(fx.h.sm.chunks_referenced(&t("acme"), &hashes(1)).unwrap(), vec![false]);
    let (again, dup) = fx.submit("bob", spec(fx.doc)).unwrap();
    assert!(!dup && again != small);
}

#[test]
fn deleting_a_tenant_removes_its_queued_jobs() {
    let mut fx = setup(Quotas::default());
    fx.submit("bob", spec(fx.doc)).unwrap();
    fx.submit("bob", RenderSpec { width: 1, ..spec(fx.doc) }).unwrap();
    fx.claim(1).unwrap();
    fx.h.op(Some("acme"), Op::TenantDelete);
    fx.h.now += LEASE + 1;
    assert!(fx.claim(1).is_none(), "neither the queued nor the expired job survives its tenant");
}

#[test]
fn claims_take_turns_across_tenants_so_one_backlog_does_not_hold_up_another() {
    let mut fx = setup(Quotas::default());
    fx.h.tenant("globex", Quotas::default());
    let g = fx.h.user("globex", "gina@globex.test", &["editor"]);
    let gina = fx.h.login("globex", g, 1 << 40);
    let gdoc = match fx.h.call(&gina, Some("globex"), Op::DocCreate { name: "g".into(), units: None }).unwrap() {
        ReplyBody::Created { id } => DocId(id),
        other => panic!("{other:?}"),
    };
    let gsubmit = |fx: &mut Fx, width: u32| match fx
        .h
        .call(&gina, Some("globex"), Op::Render(RenderOp::Submit { spec: RenderSpec { width, ..spec(gdoc) } }))
        .unwrap()
    {
        ReplyBody::RenderSubmitted { job, .. } => JobId(job),
        other => panic!("{other:?}"),
    };
    // acme queues a backlog of five first; globex's two come after it.
    let acme: Vec<JobId> =
        (0..5).map(|i| fx.submit("alice", RenderSpec { width: 300 + i, ..spec(fx.doc) }).unwrap().0).collect();
    fx.h.now += 1;
    let globex = [gsubmit(&mut fx, 300), gsubmit(&mut fx, 301)];
    // A queued job that is cancelled leaves the turn order alone.
    let cancelled = gsubmit(&mut fx, 302);
    let cancel = Op::Render(RenderOp::Cancel { job: cancelled });
    fx.h.call(&gina, Some("globex"), cancel).unwrap();

    let order: Vec<(String, JobId)> = (0..7)
        .map(|_| {
            let c = fx.claim(1).expect("a queued job");
            (c.tenant, c.job)
        })
        .collect();
    let want: Vec<(String, JobId)> = [
        ("acme", acme[0]),
        ("globex", globex[0]),
        ("acme", acme[1]),
        ("globex", globex[1]),
        ("acme", acme[2]),
        ("acme", acme[3]),
        ("acme", acme[4]),
    ]
    .into_iter()
    .map(|(t, j)| (t.to_owned(), j))
    .collect();
    assert_eq!(order, want);
    assert!(fx.claim(1).is_none(), "every queue is empty");

    // Lost leases put the jobs back in their tenants' queues; the turn
    // passes on from acme, which the last claim served.
    fx.h.now += LEASE + 1;
    let again = fx.claim(2).expect("an expired job back in the queue");
    assert_eq!((again.tenant.as_str(), again.job, again.attempt), ("globex", globex[0], 2));
    let next = fx.claim(2).expect("acme's turn");
    assert_eq!((next.tenant.as_str(), next.job), ("acme", acme[0]));
}

impl Fx {
    fn thumbnails(&mut self, who: &str, size: Option<[u32; 2]>) -> Result<ReplyBody, CaddyError> {
        let cred = self.cred(who);
        self.h.call(&cred, Some("acme"), Op::Render(RenderOp::Thumbnails { size }))
    }

    /// Commits a change drawing one more line; returns the new change number.
    fn draw(&mut self, x: f64) -> u64 {
        let call = DocCall::Fetch { doc: self.doc.to_string(), since: None, at: None };
        let (_, bytes) = self.h.sm.doc_read(&t("acme"), &call).unwrap();
        let mut replica = Document::from_snapshot(&bytes, 7, Limits::default()).unwrap();
        let before = replica.version();
        replica.add_line("0", [x, 0.0], [x, 10.0]).unwrap();
        let update = replica.export_updates_since(&before).unwrap();
        let bounds = DocBounds { max_update_bytes: 64 << 10, max_document_bytes: 1 << 20, max_entities: 50 };
        let cred = self.alice.clone();
        match self.h.call(&cred, Some("acme"), Op::DocUpdate { doc: self.doc, update, bounds }).unwrap() {
            ReplyBody::DocUpdated { seq, .. } => seq,
            other => panic!("{other:?}"),
        }
    }

    fn thumbnail(&self) -> Result<JobView, CaddyError> {
        self.h.sm.render_thumbnail(&t("acme"), self.doc)
    }

    fn jobs(&self) -> Vec<JobView> {
        self.h.sm.render_jobs(&t("acme"), None, 100).unwrap().0
    }
}

#[test]
fn thumbnails_follow_committed_changes_and_the_newest_one_is_kept() {
    let mut fx = setup(Quotas::default());
    fx.draw(1.0);
    // Off by default; only docs:admin turns them on; the size is checked.
    assert_eq!(fx.h.sm.render_thumbnail_setting(&t("acme")).unwrap().size, None);
    assert_eq!(code(fx.thumbnails("alice", Some([128, 96]))), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.thumbnails("admin", Some([0, 96]))), ErrorCode::InvalidArgument);
    assert_eq!(code(fx.thumbnail()), ErrorCode::NotFound);
    fx.thumbnails("admin", Some([128, 96])).unwrap();
    assert_eq!(fx.h.sm.render_thumbnail_setting(&t("acme")).unwrap().size, Some([128, 96]));
    assert!(fx.jobs().is_empty(), "turning thumbnails on renders nothing by itself");

    // A committed change queues a thumbnail; newer changes take over the
    // queued job instead of queueing more.
    let v2 = fx.draw(2.0);
    let v3 = fx.draw(3.0);
    let jobs = fx.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let first = &jobs[0];
    assert!(first.thumbnail && first.state == JobState::Queued, "{first:?}");
    assert_eq!((first.version, first.spec.width, first.spec.height), (v3, 128, 96));
    assert!(v3 > v2);
    // A client's identical request is a job of its own, never the thumbnail
    // job (which a newer change may still move).
    let (mine, dup) =
        fx.submit("alice", RenderSpec { version: Some(v3), width: 128, height: 96, ..spec(fx.doc) }).unwrap();
    assert!(!dup && mine.to_string() != first.id);
    assert_eq!(code(fx.thumbnail()), ErrorCode::NotFound, "queued is not done");

    // Done, it is the document's thumbnail, and retention leaves it alone.
    let c = fx.claim(1).expect("the thumbnail job");
    assert_eq!((c.job.to_string(), c.version), (first.id.clone(), v3));
    fx.finish(&c, 1, RenderOutcome::Done(image(4000, 1))).unwrap();
    assert_eq!(fx.thumbnail().unwrap().id, first.id);
    let mine_claim = fx.claim(1).expect("the client's job");
    fx.cancel("alice", mine_claim.job).unwrap();

    // A change while nothing is queued queues a new thumbnail; once done it
    // replaces the old one, which starts its retention period.
    let v4 = fx.draw(4.0);
    let c2 = fx.claim(2).expect("the next thumbnail");
    assert_eq!(c2.version, v4);
    // Meanwhile another change queues the one after.
    let v5 = fx.draw(5.0);
    fx.finish(&c2, 2, RenderOutcome::Done(image(4000, 2))).unwrap();
    assert_eq!(fx.thumbnail().unwrap().id, c2.job.to_string());
    let retention = 1_000;
    fx.h.now += retention + 1;
    fx.h.command(Command::RenderSweep { retention_ms: retention }).unwrap();
    let ids: Vec<String> = fx.jobs().into_iter().map(|j| j.id).collect();
    assert!(!ids.contains(&first.id), "the replaced thumbnail was forgotten: {ids:?}");
    assert!(ids.contains(&c2.job.to_string()), "the newest thumbnail is kept: {ids:?}");
    assert_eq!(fx.thumbnail().unwrap().version, v4);
    let c3 = fx.claim(3).expect("the thumbnail of the latest change");
    assert_eq!(c3.version, v5);

    // Off: changes queue nothing more.
    fx.thumbnails("admin", None).unwrap();
    let before = fx.jobs().len();
    fx.draw(6.0);
    assert_eq!(fx.jobs().len(), before);
}
