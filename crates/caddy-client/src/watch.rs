//! Resumable watch streams.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use caddy_wire::read_frame;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;

use crate::client::unexpected;
use crate::pb::{self, response::Body as Resp};
use crate::{Client, ClientError};

/// First pause before re-opening a broken watch.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause before re-opening a broken watch.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A stream that lived at least this long counts as having been healthy, so
/// its breaking starts a fresh failure budget.
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Events of a watch, in revision order. Created by [`Client::watch`].
///
/// When the connection breaks, the watch is re-opened on another endpoint
/// from the last delivered revision + 1, so no event is lost or repeated.
/// A watch asked with `from_revision = 0` ("only new events") first reads
/// the answering node's current revision (a serializable one-key list) and
/// watches from the next one, so that it too resumes exactly. If no
/// endpoint accepts the watch within the request timeout,
/// an `Unavailable` error is yielded. Any typed server error other than
/// `UNAVAILABLE` is yielded once and ends the stream. Dropping the stream
/// cancels the watch.
pub struct WatchStream {
    inner: BoxStream<'static, Result<pb::WatchEvent, ClientError>>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl WatchStream {
    pub(crate) fn new(client: Client, prefix: String, from_revision: u64) -> Self {
        let state = WatchState {
            client,
            prefix,
            next_from: from_revision,
            recv: None,
            opened_at: None,
            failing_since: None,
            backoff: MIN_BACKOFF,
            finished: false,
        };
        let inner = futures::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })
        .boxed();
        WatchStream { inner }
    }
}

impl Stream for WatchStream {
    type Item = Result<pb::WatchEvent, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

struct WatchState {
    client: Client,
    prefix: String,
    /// Revision to resume from.
    next_from: u64,
    recv: Option<quinn::RecvStream>,
    opened_at: Option<Instant>,
    /// Start of the current run of failures, if any.
    failing_since: Option<Instant>,
    backoff: Duration,
    finished: bool,
}

impl WatchState {
    async fn next_item(&mut self) -> Option<Result<pb::WatchEvent, ClientError>> {
        if self.finished {
            return None;
        }
        loop {
            if self.next_from == 0 {
                // "Only new events": pin that to a concrete revision, so a
                // resumed watch neither misses nor repeats anything.
                match self.client.list(&self.prefix, "", 1, true).await {
                    Ok(page) => self.next_from = page.revision.saturating_add(1),
                    Err(err) => return self.finish(err),
                }
            }
            let recv = match self.recv.as_mut() {
                Some(recv) => recv,
                None => match self.client.open_watch(&self.prefix, self.next_from).await {
                    Ok(recv) => {
                        self.opened_at = Some(Instant::now());
                        self.recv.insert(recv)
                    }
                    Err(err) => return self.finish(err),
                },
            };
            let max_frame = self.client.config().max_frame_bytes;
            let broken = match read_frame::<pb::Response, _>(recv, max_frame).await {
                Ok(pb::Response { body: Some(Resp::WatchEvent(event)), .. }) => {
                    self.next_from = self.next_from.max(event.revision.saturating_add(1));
                    self.failing_since = None;
                    self.backoff = MIN_BACKOFF;
                    return Some(Ok(event));
                }
                Ok(pb::Response { body: Some(Resp::Error(err)), .. }) => {
                    let err = ClientError::from_pb(err);
                    if !err.is_retryable() {
                        return self.finish(err);
                    }
                    err
                }
                Ok(pb::Response { body: Some(other), .. }) => {
                    return self.finish(unexpected("watch_event", &other));
                }
                Ok(pb::Response { body: None, .. }) => {
                    return self.finish(ClientError::Protocol("response without a body".into()));
                }
                Err(e) if e.is_protocol_violation() => {
                    return self.finish(ClientError::Protocol(e.to_string()));
                }
                Err(e) => ClientError::Unavailable(format!("watch stream broken: {e}")),
            };
            tracing::debug!(error = %broken, resume_from = self.next_from, "re-opening watch");
            self.recv = None;
            let now = Instant::now();
            let was_healthy = self.opened_at.is_some_and(|t| now.duration_since(t) >= HEALTHY_AFTER);
            if was_healthy || self.failing_since.is_none() {
                self.failing_since = Some(now);
                self.backoff = MIN_BACKOFF;
            }
            let since = self.failing_since.unwrap_or(now);
            if now.duration_since(since) >= self.client.config().request_timeout {
                return self.finish(broken);
            }
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn finish(&mut self, err: ClientError) -> Option<Result<pb::WatchEvent, ClientError>> {
        self.finished = true;
        self.recv = None;
        Some(Err(err))
    }
}
