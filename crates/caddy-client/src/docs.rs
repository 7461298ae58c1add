//! CAD documents: one-shot calls ([`Client::doc`] and friends), live
//! watches ([`DocWatch`]), and [`DocHandle`], a local replica that edits
//! offline and syncs with the cluster.
//!
//! A handle's invariants:
//! - Edits go to the local replica only; [`DocHandle::push`] sends what the
//!   cluster does not have yet, computed against the last version the
//!   cluster is known to hold, so a retried or interrupted push re-sends
//!   (the cluster ignores what it already has) and nothing is lost.
//! - Remote changes are imported as they arrive ([`DocHandle::go_live`]) or
//!   on [`DocHandle::pull`]; a broken watch is re-opened from the local
//!   version, so nothing committed in between is missed.
//! - Undo and redo touch only this handle's own edits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use caddy_core::docs::{DocAnswer, DocCall, DocEvent, DocInfo, DocTag, Fetched, HistoryEntry, Presence, PresenceState};
use caddy_doc::{Document, Limits, ResolvedDoc};
use caddy_wire::read_frame;

use crate::client::unexpected;
use crate::error::settle;
use crate::pb::{self, request::Body as Req, response::Body as Resp};
use crate::{Client, ClientError};

/// Largest payload a document answer may assemble on the client.
pub const MAX_DOC_PAYLOAD: usize = 1 << 30;
/// Undo steps a handle keeps.
const UNDO_STEPS: usize = 200;
/// How often a live handle refreshes its presence.
const PRESENCE_REFRESH: Duration = Duration::from_secs(4);

fn decode_answer(bytes: &[u8]) -> Result<DocAnswer, ClientError> {
    serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("undecodable document answer: {e}")))
}

fn unexpected_doc(expected: &str, got: &DocAnswer) -> ClientError {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default();
    ClientError::Protocol(format!("expected a {expected} answer, got {kind}"))
}

fn doc_error(e: caddy_doc::DocError) -> ClientError {
    ClientError::Document(e.to_string())
}

fn hex_version(hex_text: &str) -> Result<Vec<u8>, ClientError> {
    hex::decode(hex_text).map_err(|_| ClientError::Protocol("server sent a version that is not hex".into()))
}

/// Reads the rest of a split payload.
async fn rest_of_payload(
    recv: &mut quinn::RecvStream,
    mut payload: Vec<u8>,
    mut more: bool,
    max_frame: usize,
) -> Result<Vec<u8>, ClientError> {
    while more {
        match read_frame::<pb::Response, _>(recv, max_frame).await {
            Ok(pb::Response { body: Some(Resp::Doc(d)), .. }) => {
                if payload.len() + d.payload.len() > MAX_DOC_PAYLOAD {
                    return Err(ClientError::Protocol("document payload over 1 GiB".into()));
                }
                payload.extend_from_slice(&d.payload);
                more = d.more;
            }
            Ok(pb::Response { body: Some(Resp::Error(err)), .. }) => return Err(ClientError::from_pb(err)),
            Ok(pb::Response { body: Some(other), .. }) => return Err(unexpected("doc", &other)),
            Ok(pb::Response { body: None, .. }) => return Err(ClientError::Protocol("response without a body".into())),
            Err(e) if e.is_protocol_violation() => return Err(ClientError::Protocol(e.to_string())),
            Err(e) => return Err(ClientError::Unavailable(format!("document stream broken: {e}"))),
        }
    }
    Ok(payload)
}

impl Client {
    /// Sends one document call with its payload (the update bytes of an
    /// `update`); returns the answer and its payload (the bytes of a
    /// `fetch`). Writes go through an exactly-once lane.
    pub async fn doc(&self, call: &DocCall, payload: Vec<u8>) -> Result<(DocAnswer, Vec<u8>), ClientError> {
        let bytes = serde_json::to_vec(call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let body = Req::Doc(pb::DocRequest { call: bytes, payload });
        let write = !call.is_read() && !matches!(call, DocCall::Presence { .. });
        let presence_client = matches!(call, DocCall::Presence { .. }).then(|| self.presence_id());
        let (first, mut recv) = self.call_stream(body, write, presence_client).await?;
        let Resp::Doc(first) = first else { return settle(write, Err(unexpected("doc", &first))) };
        let answer = settle(write, decode_answer(&first.answer))?;
        let payload = rest_of_payload(&mut recv, first.payload, first.more, self.max_frame_bytes()).await;
        Ok((answer, settle(write, payload)?))
    }

    /// Creates a document in the configured tenant.
    pub async fn doc_create(&self, name: &str, units: Option<&str>) -> Result<DocInfo, ClientError> {
        let call = DocCall::Create { name: name.into(), units: units.map(str::to_owned) };
        info_of(self.doc(&call, Vec::new()).await?.0)
    }

    /// One page of the tenant's documents (by id, after `after`).
    pub async fn doc_list(
        &self,
        after: Option<&str>,
        limit: u32,
        deleted: bool,
    ) -> Result<(Vec<DocInfo>, bool), ClientError> {
        let call = DocCall::List { after: after.map(str::to_owned), limit: Some(limit), deleted };
        match self.doc(&call, Vec::new()).await?.0 {
            DocAnswer::List { docs, more } => Ok((docs, more)),
            other => Err(unexpected_doc("list", &other)),
        }
    }

    /// A document's record.
    pub async fn doc_info(&self, doc: &str) -> Result<DocInfo, ClientError> {
        info_of(self.doc(&DocCall::Get { doc: doc.into() }, Vec::new()).await?.0)
    }

    /// Renames a document.
    pub async fn doc_rename(&self, doc: &str, name: &str) -> Result<DocInfo, ClientError> {
        info_of(self.doc(&DocCall::Rename { doc: doc.into(), name: name.into() }, Vec::new()).await?.0)
    }

    /// Moves a document to the trash.
    pub async fn doc_delete(&self, doc: &str) -> Result<DocInfo, ClientError> {
        info_of(self.doc(&DocCall::Delete { doc: doc.into() }, Vec::new()).await?.0)
    }

    /// Brings a document back from the trash.
    pub async fn doc_restore(&self, doc: &str) -> Result<DocInfo, ClientError> {
        info_of(self.doc(&DocCall::Restore { doc: doc.into() }, Vec::new()).await?.0)
    }

    /// Committed changes after `after`, oldest first.
    pub async fn doc_history(
        &self,
        doc: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<HistoryEntry>, bool), ClientError> {
        let call = DocCall::History { doc: doc.into(), after, limit: Some(limit) };
        match self.doc(&call, Vec::new()).await?.0 {
            DocAnswer::History { entries, more } => Ok((entries, more)),
            other => Err(unexpected_doc("history", &other)),
        }
    }

    /// Names the current version (or change `at`).
    pub async fn doc_tag(&self, doc: &str, name: &str, at: Option<u64>) -> Result<DocTag, ClientError> {
        match self.doc(&DocCall::Tag { doc: doc.into(), name: name.into(), at }, Vec::new()).await?.0 {
            DocAnswer::Tag(tag) => Ok(tag),
            other => Err(unexpected_doc("tag", &other)),
        }
    }

    /// A document's tags.
    pub async fn doc_tags(&self, doc: &str) -> Result<Vec<DocTag>, ClientError> {
        match self.doc(&DocCall::Tags { doc: doc.into() }, Vec::new()).await?.0 {
            DocAnswer::Tags { tags } => Ok(tags),
            other => Err(unexpected_doc("tags", &other)),
        }
    }

    /// Document bytes: the whole document, what a replica at `since` lacks,
    /// or the document `at` a past change (number, tag or hex version).
    pub async fn doc_fetch(
        &self,
        doc: &str,
        since: Option<&[u8]>,
        at: Option<&str>,
    ) -> Result<(Fetched, Vec<u8>), ClientError> {
        let call = DocCall::Fetch { doc: doc.into(), since: since.map(hex::encode), at: at.map(str::to_owned) };
        match self.doc(&call, Vec::new()).await? {
            (DocAnswer::Fetched(f), bytes) => Ok((f, bytes)),
            (other, _) => Err(unexpected_doc("fetched", &other)),
        }
    }

    /// The resolved drawing, now or `at` a past change, read-only.
    pub async fn doc_resolve(&self, doc: &str, at: Option<&str>) -> Result<ResolvedDoc, ClientError> {
        let (_, bytes) = self.doc_fetch(doc, None, at).await?;
        let replica =
            Document::from_snapshot(&bytes, rand::random::<u64>() >> 1, Limits::default()).map_err(doc_error)?;
        Ok(replica.resolve())
    }

    /// Opens a live stream of a document's committed updates (from `since`,
    /// or the whole document first) and presence. It ends at the first
    /// error; re-open it from your replica's version to resume.
    pub async fn doc_watch(&self, doc: &str, since: Option<&[u8]>) -> Result<DocWatch, ClientError> {
        let call = DocCall::Watch { doc: doc.into(), since: since.map(hex::encode) };
        let bytes = serde_json::to_vec(&call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let recv = self.open_stream(Req::Doc(pb::DocRequest { call: bytes, payload: Vec::new() })).await?;
        Ok(DocWatch { recv, max_frame: self.max_frame_bytes(), _client: self.clone() })
    }

    /// Sets this client's presence in a document (it expires unless
    /// refreshed; a live [`DocHandle`] refreshes it).
    pub async fn doc_presence(&self, doc: &str, state: PresenceState) -> Result<(), ClientError> {
        self.doc(&DocCall::Presence { doc: doc.into(), state, leave: false }, Vec::new()).await.map(|_| ())
    }

    /// Opens a document as a local replica (downloads it first).
    pub async fn doc_open(&self, doc: &str) -> Result<DocHandle, ClientError> {
        let (fetched, bytes) = self.doc_fetch(doc, None, None).await?;
        let peer = rand::random::<u64>() >> 1;
        let mut replica = Document::from_snapshot(&bytes, peer, Limits::default()).map_err(doc_error)?;
        replica.enable_undo(UNDO_STEPS);
        let server = hex_version(&fetched.version)?;
        Ok(DocHandle {
            inner: Arc::new(HandleInner {
                client: self.clone(),
                id: doc.to_owned(),
                local: Mutex::new(Local { doc: replica, server, seq: fetched.seq }),
                listeners: Mutex::new(Vec::new()),
                presences: Mutex::new(HashMap::new()),
                my_presence: Mutex::new(None),
                live: Mutex::new(None),
            }),
        })
    }
}

fn info_of(answer: DocAnswer) -> Result<DocInfo, ClientError> {
    match answer {
        DocAnswer::Info(info) => Ok(info),
        other => Err(unexpected_doc("info", &other)),
    }
}

/// A live document stream, from [`Client::doc_watch`].
pub struct DocWatch {
    recv: quinn::RecvStream,
    max_frame: usize,
    /// Keeps the connection open for as long as the stream lives.
    _client: Client,
}

impl std::fmt::Debug for DocWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocWatch").finish_non_exhaustive()
    }
}

impl DocWatch {
    /// The next event and its payload (update bytes), or `None` when the
    /// server ended the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<(DocEvent, Vec<u8>), ClientError>> {
        let frame = match read_frame::<pb::Response, _>(&mut self.recv, self.max_frame).await {
            Ok(pb::Response { body: Some(Resp::Doc(d)), .. }) => d,
            Ok(pb::Response { body: Some(Resp::Error(err)), .. }) => return Some(Err(ClientError::from_pb(err))),
            Ok(pb::Response { body: Some(other), .. }) => return Some(Err(unexpected("doc", &other))),
            Ok(pb::Response { body: None, .. }) => {
                return Some(Err(ClientError::Protocol("response without a body".into())));
            }
            Err(caddy_wire::FrameError::Closed) => return None,
            Err(e) if e.is_protocol_violation() => return Some(Err(ClientError::Protocol(e.to_string()))),
            Err(e) => return Some(Err(ClientError::Unavailable(format!("document watch broken: {e}")))),
        };
        let answer = match decode_answer(&frame.answer) {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        let payload = match rest_of_payload(&mut self.recv, frame.payload, frame.more, self.max_frame).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        match answer {
            DocAnswer::Event(event) => Some(Ok((event, payload))),
            other => Some(Err(unexpected_doc("event", &other))),
        }
    }
}

/// What a [`DocHandle`] listener hears.
#[derive(Debug, Clone, PartialEq)]
pub enum DocChange {
    /// Remote changes were merged into the local replica.
    Remote {
        /// The cluster's change number.
        seq: u64,
        /// Who committed them (empty for a catch-up after reconnecting).
        author: String,
    },
    /// Someone's presence changed.
    Presence(Presence),
    /// Someone left or went quiet.
    PresenceGone {
        /// Who.
        user: String,
        /// Which client.
        client: u64,
    },
    /// The document was moved to the trash; the live stream stopped.
    Deleted,
}

/// What [`DocHandle::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Local changes were committed by the cluster (at this change number).
    pub pushed: Option<u64>,
    /// Remote changes were merged locally.
    pub pulled: bool,
}

struct Local {
    doc: Document,
    /// A version the cluster is known to hold.
    server: Vec<u8>,
    /// The cluster's change number at `server`.
    seq: u64,
}

type Listener = Box<dyn Fn(&DocChange) + Send + Sync>;

struct HandleInner {
    client: Client,
    id: String,
    local: Mutex<Local>,
    listeners: Mutex<Vec<Listener>>,
    presences: Mutex<HashMap<(String, u64), Presence>>,
    my_presence: Mutex<Option<PresenceState>>,
    live: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.live).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A document opened as a local replica; cheap to clone (clones share it).
#[derive(Clone)]
pub struct DocHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for DocHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocHandle").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

impl DocHandle {
    /// The document id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Edits the local replica through the typed API (offline is fine;
    /// [`Self::push`] or [`Self::sync`] sends the edits).
    pub fn edit<R>(&self, f: impl FnOnce(&mut Document) -> R) -> R {
        f(&mut lock(&self.inner.local).doc)
    }

    /// Reads the local replica.
    pub fn read<R>(&self, f: impl FnOnce(&Document) -> R) -> R {
        f(&lock(&self.inner.local).doc)
    }

    /// The local replica's resolved drawing.
    pub fn resolve(&self) -> ResolvedDoc {
        self.read(Document::resolve)
    }

    /// The local replica's version.
    pub fn version(&self) -> Vec<u8> {
        self.read(Document::version)
    }

    /// Undoes this handle's last own edit (remote edits are never undone).
    pub fn undo(&self) -> Result<bool, ClientError> {
        self.edit(|d| d.undo()).map_err(doc_error)
    }

    /// Redoes the last undone edit.
    pub fn redo(&self) -> Result<bool, ClientError> {
        self.edit(|d| d.redo()).map_err(doc_error)
    }

    /// Whether local edits have not reached the cluster yet.
    pub fn has_unsent(&self) -> bool {
        let local = lock(&self.inner.local);
        local.doc.has_changes_since(&local.server).unwrap_or(true)
    }

    /// Sends local edits the cluster lacks; returns the change number they
    /// were committed at (`None`: nothing to send). On an error the edits
    /// stay local and the next push sends them again.
    pub async fn push(&self) -> Result<Option<u64>, ClientError> {
        let update = {
            let local = lock(&self.inner.local);
            if !local.doc.has_changes_since(&local.server).map_err(doc_error)? {
                return Ok(None);
            }
            local.doc.export_updates_since(&local.server).map_err(doc_error)?
        };
        let call = DocCall::Update { doc: self.inner.id.clone() };
        match self.inner.client.doc(&call, update).await?.0 {
            DocAnswer::Updated { seq, version, .. } => {
                let version = hex_version(&version)?;
                let mut local = lock(&self.inner.local);
                if seq >= local.seq {
                    local.server = version;
                    local.seq = seq;
                }
                Ok(Some(seq))
            }
            other => Err(unexpected_doc("updated", &other)),
        }
    }

    /// Fetches and merges what the cluster has and this replica lacks;
    /// returns whether anything new arrived.
    pub async fn pull(&self) -> Result<bool, ClientError> {
        let version = self.version();
        let (fetched, bytes) = self.inner.client.doc_fetch(&self.inner.id, Some(&version), None).await?;
        let applied = self.merge(&bytes, &fetched.version, fetched.seq)?;
        if applied {
            self.notify(&DocChange::Remote { seq: fetched.seq, author: String::new() });
        }
        Ok(applied)
    }

    /// Pushes local edits, then pulls remote ones.
    pub async fn sync(&self) -> Result<SyncReport, ClientError> {
        let pushed = self.push().await?;
        let pulled = self.pull().await?;
        Ok(SyncReport { pushed, pulled })
    }

    fn merge(&self, bytes: &[u8], version_hex: &str, seq: u64) -> Result<bool, ClientError> {
        let version = hex_version(version_hex)?;
        let mut local = lock(&self.inner.local);
        let applied = !bytes.is_empty() && local.doc.import(bytes).map_err(doc_error)?.applied;
        if seq >= local.seq {
            local.server = version;
            local.seq = seq;
        }
        Ok(applied)
    }

    /// Calls `listener` on every remote change and presence change.
    pub fn on_change(&self, listener: impl Fn(&DocChange) + Send + Sync + 'static) {
        lock(&self.inner.listeners).push(Box::new(listener));
    }

    fn notify(&self, change: &DocChange) {
        for l in lock(&self.inner.listeners).iter() {
            l(change);
        }
    }

    /// Others present in the document (as last heard).
    pub fn presences(&self) -> Vec<Presence> {
        lock(&self.inner.presences).values().cloned().collect()
    }

    /// Sets this client's presence now; a live handle keeps refreshing it.
    pub async fn set_presence(&self, state: PresenceState) -> Result<(), ClientError> {
        *lock(&self.inner.my_presence) = Some(state.clone());
        self.inner.client.doc_presence(&self.inner.id, state).await
    }

    /// Clears this client's presence.
    pub async fn leave(&self) -> Result<(), ClientError> {
        *lock(&self.inner.my_presence) = None;
        let call = DocCall::Presence { doc: self.inner.id.clone(), state: PresenceState::default(), leave: true };
        self.inner.client.doc(&call, Vec::new()).await.map(|_| ())
    }

    /// Starts merging remote changes as they are committed (and refreshing
    /// this client's presence), until [`Self::stop_live`] or the handle is
    /// dropped. A broken stream is re-opened from the local version.
    pub fn go_live(&self) {
        let mut live = lock(&self.inner.live);
        if live.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // The task holds the handle only weakly (and strongly only while it
        // merges one event), so dropping the last handle ends it.
        let weak = Arc::downgrade(&self.inner);
        let id = self.inner.id.clone();
        *live = Some(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                match DocHandle::run_live(&weak).await {
                    Ok(()) => return,
                    Err(e) if !e.is_retryable() && !matches!(e, ClientError::Unavailable(_)) => {
                        tracing::warn!(doc = %id, error = %e, "document live stream stopped");
                        return;
                    }
                    Err(e) => tracing::debug!(doc = %id, error = %e, "re-opening document stream"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }));
    }

    /// Stops the live stream.
    pub fn stop_live(&self) {
        if let Some(task) = lock(&self.inner.live).take() {
            task.abort();
        }
    }

    /// One live stream until it breaks (`Err`), the document is deleted or
    /// the handle is dropped (`Ok`).
    async fn run_live(weak: &Weak<HandleInner>) -> Result<(), ClientError> {
        let Some(inner) = weak.upgrade() else { return Ok(()) };
        let (client, id) = (inner.client.clone(), inner.id.clone());
        let version = DocHandle { inner }.version();
        let mut watch = client.doc_watch(&id, Some(&version)).await?;
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        loop {
            let item = tokio::select! {
                item = watch.next() => item,
                _ = refresh.tick() => {
                    let Some(inner) = weak.upgrade() else { return Ok(()) };
                    let mine = lock(&inner.my_presence).clone();
                    drop(inner);
                    if let Some(state) = mine {
                        // Best effort: a failed refresh is retried next tick.
                        let _ = client.doc_presence(&id, state).await;
                    }
                    continue;
                }
            };
            let Some(item) = item else {
                return Err(ClientError::Unavailable("document stream ended".into()));
            };
            let Some(inner) = weak.upgrade() else { return Ok(()) };
            let handle = DocHandle { inner };
            match item? {
                (DocEvent::Update { seq, author, version, .. }, bytes) => {
                    if handle.merge(&bytes, &version, seq)? {
                        handle.notify(&DocChange::Remote { seq, author });
                    }
                }
                (DocEvent::CaughtUp { .. }, _) => {}
                (DocEvent::Presence(p), _) => {
                    lock(&handle.inner.presences).insert((p.user.clone(), p.client), p.clone());
                    handle.notify(&DocChange::Presence(p));
                }
                (DocEvent::PresenceGone { user, client }, _) => {
                    lock(&handle.inner.presences).remove(&(user.clone(), client));
                    handle.notify(&DocChange::PresenceGone { user, client });
                }
                (DocEvent::Deleted, _) => {
                    handle.notify(&DocChange::Deleted);
                    return Ok(());
                }
            }
        }
    }
}
