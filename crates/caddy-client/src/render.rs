//! Render jobs through the SDK: submit a document (at a version) for an
//! image, follow the job, cancel it, and download the PNG.

use std::time::Duration;

use caddy_core::render::{JobView, RenderAnswer, RenderCall, RenderSpec, ThumbnailSetting};
use caddy_wire::read_frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::{body_name, unexpected};
use crate::error::settle;
use crate::pb::{self, request::Body as Req, response::Body as Resp};
use crate::{Client, ClientError};

fn decode(bytes: &[u8]) -> Result<RenderAnswer, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("undecodable render answer: {e}")))
}

fn not_a(expected: &str, got: &RenderAnswer) -> ClientError {
    let kind = match got {
        RenderAnswer::Job(_) => "job",
        RenderAnswer::Jobs { .. } => "jobs",
        RenderAnswer::Image { .. } => "image",
        RenderAnswer::Thumbnails(_) => "thumbnails",
    };
    ClientError::Protocol(format!("unexpected render answer: {kind} instead of {expected}"))
}

/// What a held wait leaves between its server-side end and the deadline,
/// for the answer to travel back.
const WAIT_MARGIN: Duration = Duration::from_millis(250);

/// Calls that change something (and so take an exactly-once lane).
fn is_write(call: &RenderCall) -> bool {
    matches!(call, RenderCall::Submit { .. } | RenderCall::Cancel { .. } | RenderCall::Thumbnails { set: Some(_) })
}

impl Client {
    /// Sends one render call and returns its first answer (and the stream,
    /// for an image's payload frames).
    async fn render_call(&self, call: &RenderCall) -> Result<(pb::RenderResponse, quinn::RecvStream), ClientError> {
        let bytes = serde_json::to_vec(call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let write = is_write(call);
        let (first, recv) = self.call_stream(Req::Render(pb::RenderRequest { call: bytes }), write, None).await?;
        let Resp::Render(first) = first else { return settle(write, Err(unexpected("render", &first))) };
        Ok((first, recv))
    }

    async fn render_job_call(&self, call: &RenderCall) -> Result<JobView, ClientError> {
        let (first, _) = self.render_call(call).await?;
        let job = match decode(&first.answer) {
            Ok(RenderAnswer::Job(job)) => Ok(job),
            Ok(other) => Err(not_a("job", &other)),
            Err(e) => Err(e),
        };
        settle(is_write(call), job)
    }

    /// Submits a render job; an identical earlier request's job comes back
    /// instead (with `deduplicated` set).
    pub async fn render_submit(&self, spec: RenderSpec) -> Result<JobView, ClientError> {
        self.render_job_call(&RenderCall::Submit { spec }).await
    }

    /// The tenant's automatic thumbnail setting; with `set`, changes it
    /// first (needs `docs:admin`). While on, every committed document change
    /// queues a thumbnail (a newer change takes over a thumbnail job not yet
    /// started).
    pub async fn render_thumbnails(&self, set: Option<ThumbnailSetting>) -> Result<ThumbnailSetting, ClientError> {
        let call = RenderCall::Thumbnails { set };
        let (first, _) = self.render_call(&call).await?;
        let setting = match decode(&first.answer) {
            Ok(RenderAnswer::Thumbnails(setting)) => Ok(setting),
            Ok(other) => Err(not_a("thumbnails", &other)),
            Err(e) => Err(e),
        };
        settle(is_write(&call), setting)
    }

    /// The newest finished thumbnail job of `doc` (`render_image` fetches
    /// its PNG); `not_found` when there is none yet.
    pub async fn render_thumbnail(&self, doc: &str) -> Result<JobView, ClientError> {
        self.render_job_call(&RenderCall::Thumbnail { doc: doc.into() }).await
    }

    /// One job.
    pub async fn render_job(&self, job: &str) -> Result<JobView, ClientError> {
        self.render_job_call(&RenderCall::Get { job: job.into() }).await
    }

    /// The tenant's jobs, newest first; the second value is the cursor of
    /// the next page.
    pub async fn render_jobs(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<JobView>, Option<String>), ClientError> {
        let call = RenderCall::List { after: after.map(str::to_owned), limit: Some(limit) };
        let (first, _) = self.render_call(&call).await?;
        match decode(&first.answer)? {
            RenderAnswer::Jobs { jobs, next } => Ok((jobs, next)),
            other => Err(not_a("jobs", &other)),
        }
    }

    /// Cancels a queued or running job.
    pub async fn render_cancel(&self, job: &str) -> Result<JobView, ClientError> {
        self.render_job_call(&RenderCall::Cancel { job: job.into() }).await
    }

    /// Waits until the job is done, failed or cancelled, or `timeout` (or
    /// the handle's deadline, [`Client::with_deadline`], if sooner) has
    /// passed, then returns it as it is. The server holds each call open
    /// until the job changes state, up to a slice of the request timeout.
    pub async fn render_wait(&self, job: &str, timeout: Duration) -> Result<JobView, ClientError> {
        let now = tokio::time::Instant::now();
        let wait_end = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        // The handle's deadline cuts the call itself, so a held call must
        // answer a little before it; `timeout` is only how long to hold.
        let answer_by = self.deadline().map(|d| d.checked_sub(WAIT_MARGIN).unwrap_or(now));
        // Each held call must end on the server well before the client gives
        // up on the attempt and tries another endpoint.
        let slice = (self.attempt_cap(false) * 3 / 4).max(Duration::from_millis(200));
        let mut last: Option<JobView> = None;
        loop {
            let now = tokio::time::Instant::now();
            let end = answer_by.map_or(wait_end, |a| a.min(wait_end));
            let hold = end.saturating_duration_since(now).min(slice);
            if hold.is_zero()
                && let Some(view) = last
            {
                return Ok(view);
            }
            let call = RenderCall::Wait { job: job.into(), timeout_ms: Some(hold.as_millis() as u64) };
            let view = self.render_job_call(&call).await?;
            if view.state.is_final() || tokio::time::Instant::now() >= wait_end {
                return Ok(view);
            }
            last = Some(view);
        }
    }

    /// Writes a finished job's PNG to `sink`; returns the job and the bytes
    /// written.
    pub async fn render_image<W: AsyncWrite + Unpin>(
        &self,
        job: &str,
        sink: &mut W,
    ) -> Result<(JobView, u64), ClientError> {
        let (first, mut recv) = self.render_call(&RenderCall::Image { job: job.into() }).await?;
        let (view, size) = match decode(&first.answer)? {
            RenderAnswer::Image { job, size } => (job, size),
            other => return Err(not_a("image", &other)),
        };
        let mut more = first.more;
        let mut got = 0u64;
        while more {
            let frame = match read_frame::<pb::Response, _>(&mut recv, self.max_frame_bytes()).await {
                Ok(pb::Response { body: Some(Resp::Render(r)), .. }) => r,
                Ok(pb::Response { body: Some(Resp::Error(err)), .. }) => return Err(ClientError::from_pb(err)),
                Ok(pb::Response { body: Some(other), .. }) => {
                    return Err(ClientError::Protocol(format!("unexpected {} frame in an image", body_name(&other))));
                }
                Ok(pb::Response { body: None, .. }) => {
                    return Err(ClientError::Protocol("frame without a body".into()));
                }
                Err(e) => return Err(ClientError::Unavailable(format!("image download interrupted: {e}"))),
            };
            got += frame.payload.len() as u64;
            if got > size {
                return Err(ClientError::Protocol("server sent more image bytes than it announced".into()));
            }
            sink.write_all(&frame.payload).await?;
            more = frame.more;
        }
        if got != size {
            return Err(ClientError::Unavailable(format!("image download ended after {got} of {size} bytes")));
        }
        sink.flush().await?;
        Ok((view, got))
    }
}
