//! The cluster handle: connection cache, failover and the typed requests.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caddy_core::identity::api::{AuditView, CheckpointView, IdentityAnswer, IdentityCall, MAX_PAGE, SessionView};
use caddy_wire::{FrameError, read_frame, write_frame};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::{Outcome, code_from_pb, settle};
use crate::lanes::LanePool;
use crate::pb::{self, request::Body as Req, response::Body as Resp};
use crate::watch::WatchStream;
use crate::{ClientConfig, ClientError, ErrorCode, human_duration};

/// First pause between two attempts of one request.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two attempts of one request.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// QUIC keep-alive, so that a dead peer is noticed by idle streams (watches).
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// QUIC idle timeout (the smaller of both sides' applies).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Stand-in deadline for timeouts too large to add to the clock.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Shortest time one attempt may take before the next endpoint is tried.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// How long a key-value request waits on one endpoint before it is also
/// tried on the next. A process killed with `kill -9` sends nothing over
/// UDP, so this bounds how long a client stays on a dead node; a retry is
/// safe (writes are exactly-once, reads are idempotent), and key-value
/// requests on a live node answer far faster than this.
const KV_ATTEMPT: Duration = Duration::from_millis(500);
/// With several endpoints, how long a request waits for a new handshake
/// before trying the next endpoint (the handshake goes on in the background
/// and its connection is cached for later requests).
const HEDGE_AFTER: Duration = Duration::from_millis(400);
/// Longest [`Client::close`] waits for its close frames to go out.
const CLOSE_FLUSH: Duration = Duration::from_millis(50);

/// Which audit entries a listing returns; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries by this actor (`operator`, `user-N`, `key-N`, `system`).
    pub actor: Option<String>,
    /// Only entries of this action (`user.create`) or action group (`user`).
    pub action: Option<String>,
    /// Only entries stamped at or after this time (ms since the epoch).
    pub from_ms: Option<u64>,
    /// Only entries stamped at or before this time.
    pub to_ms: Option<u64>,
}

/// A handle on a cluster. Cheap to clone; clones share one QUIC endpoint, the
/// cached connections (one per configured endpoint) and the write lanes.
/// Connections are made lazily, on the first request that needs them.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Requests through this handle end by then ([`Client::with_deadline`]).
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    quic: quinn::ClientConfig,
    slots: Vec<Slot>,
    sockets: Mutex<Sockets>,
    /// Index of the endpoint that answered last; attempts start there.
    preferred: AtomicUsize,
    /// Endpoint a follower named as the leader in its last answer
    /// (`usize::MAX` when none); taken by the next successful request.
    leader_hint: AtomicUsize,
    lanes: Arc<LanePool>,
    /// Names this client in document presence (random, never 0).
    presence_id: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let sockets = self.sockets.get_mut().unwrap_or_else(|p| p.into_inner());
        for socket in [sockets.v4.take(), sockets.v6.take()].into_iter().flatten() {
            socket.close(0u32.into(), b"client closed");
        }
    }
}

/// Lazily bound UDP sockets, one per address family.
#[derive(Default)]
struct Sockets {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

/// A connection being made (or made) in a background task; every request
/// that needs the endpoint meanwhile awaits the same handshake.
/// What opening a stream gave: the first answer (if read), the receive
/// side, and the send side when it was kept open.
type Opened = (Option<Resp>, quinn::RecvStream, Option<quinn::SendStream>);

type Connecting = Shared<BoxFuture<'static, Result<quinn::Connection, String>>>;

/// One configured endpoint and its cached (or in-progress) connection.
struct Slot {
    addr: String,
    conn: Mutex<Option<Connecting>>,
}

/// How one attempt on one endpoint failed.
enum AttemptError {
    /// The connection or stream failed; another endpoint may do better.
    Transport(String),
    /// The server closed the connection without serving it (too many
    /// connections from this address): nothing was sent; another endpoint
    /// may do better.
    Refused(ClientError),
    /// Retrying cannot help.
    Fatal(ClientError),
}

/// The server's refusal of a whole connection, if that is how it closed.
fn refusal(conn: &quinn::Connection) -> Option<ClientError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(caddy_wire::close::TOO_MANY_CONNECTIONS) =>
        {
            Some(ClientError::Server {
                code: ErrorCode::ResourceExhausted,
                message: String::from_utf8_lossy(&close.reason).into_owned(),
                current_revision: None,
                leader_hint: None,
                retry_after: None,
            })
        }
        _ => None,
    }
}

/// A little more than `wait`, so that clients told the same wait do not all
/// come back at the same instant.
fn jittered(wait: Duration) -> Duration {
    wait + wait.mul_f64(rand::random::<f64>() * 0.1)
}

fn frame_error(err: FrameError) -> AttemptError {
    if err.is_protocol_violation() {
        AttemptError::Fatal(ClientError::Protocol(err.to_string()))
    } else {
        AttemptError::Transport(err.to_string())
    }
}

/// Protocol name of a response body, for error messages.
pub(crate) fn body_name(body: &Resp) -> &'static str {
    match body {
        Resp::Error(_) => "error",
        Resp::Put(_) => "put",
        Resp::Get(_) => "get",
        Resp::Delete(_) => "delete",
        Resp::List(_) => "list",
        Resp::WatchEvent(_) => "watch_event",
        Resp::Status(_) => "status",
        Resp::Membership(_) => "membership",
        Resp::Snapshot(_) => "snapshot",
        Resp::JoinToken(_) => "join_token",
        Resp::BackupChunk(_) => "backup_chunk",
        Resp::Identity(_) => "identity",
        Resp::Doc(_) => "doc",
        Resp::File(_) => "file",
        Resp::Render(_) => "render",
        Resp::RotateCerts(_) => "rotate_certs",
    }
}

fn unexpected_answer(expected: &str, got: &IdentityAnswer) -> ClientError {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_default();
    ClientError::Protocol(format!("expected a {expected} answer, got {kind}"))
}

pub(crate) fn unexpected(expected: &str, got: &Resp) -> ClientError {
    ClientError::Protocol(format!("expected a {expected} response, got {}", body_name(got)))
}

macro_rules! expect_body {
    ($body:expr, $variant:ident, $name:literal) => {
        match $body {
            Resp::$variant(inner) => Ok(inner),
            other => Err(unexpected($name, &other)),
        }
    };
}

impl Client {
    /// Validates `config` and prepares the TLS and QUIC configuration. No
    /// connection is made until the first request.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let tls = caddy_wire::tls::client_config(&config.ca_cert_pem, &[caddy_wire::ALPN])
            .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ClientError::Config(format!("QUIC TLS configuration: {e}")))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        // Bounds the data an upload keeps buffered while unacknowledged.
        transport.send_window(4 * 1024 * 1024);
        let idle = quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
            .map_err(|e| ClientError::Config(format!("idle timeout: {e}")))?;
        transport.max_idle_timeout(Some(idle));
        quic.transport_config(Arc::new(transport));
        let slots = config.endpoints.iter().map(|addr| Slot { addr: addr.clone(), conn: Mutex::new(None) }).collect();
        Ok(Client {
            deadline: None,
            inner: Arc::new(Inner {
                config,
                quic,
                slots,
                sockets: Mutex::new(Sockets::default()),
                preferred: AtomicUsize::new(0),
                leader_hint: AtomicUsize::new(usize::MAX),
                lanes: LanePool::new(),
                presence_id: rand::random::<u64>() | 1,
            }),
        })
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A handle on the same connections and lanes whose requests all end by
    /// `deadline` (each still bounded by the request timeout too), as does
    /// [`Client::render_wait`]: one budget for a task made of several calls.
    /// A request that would start after it fails at once, unsent.
    pub fn with_deadline(&self, deadline: Instant) -> Client {
        Client { inner: Arc::clone(&self.inner), deadline: Some(deadline) }
    }

    /// The deadline set by [`Client::with_deadline`], if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How many writes through this client and its clones ended without a
    /// definitive answer: failed with [`ClientError::OutcomeUnknown`], or
    /// were cancelled (their future dropped) while they held their lane. A
    /// caller that cancels several calls at once (a timeout around them)
    /// reads it to learn whether a write may have been applied.
    pub fn writes_in_doubt(&self) -> u64 {
        self.inner.lanes.abandoned()
    }

    /// Closes every connection of this client and its clones. Waits only
    /// until each close frame has gone out (at most [`CLOSE_FLUSH`]), not
    /// for the drain period QUIC allows after it: the servers learn of the
    /// close at once, and a short-lived process can exit right away. Later
    /// requests on this client fail.
    pub async fn close(&self) {
        let open: Vec<quinn::Connection> = self
            .inner
            .slots
            .iter()
            .filter_map(|slot| {
                let cached = slot.conn.lock().unwrap_or_else(|p| p.into_inner());
                match cached.as_ref().and_then(|c| c.peek()) {
                    Some(Ok(conn)) if conn.close_reason().is_none() => Some(conn.clone()),
                    _ => None,
                }
            })
            .collect();
        // The close frame leaves in the next datagram each connection sends.
        let sent_before: Vec<u64> = open.iter().map(|c| c.stats().udp_tx.datagrams).collect();
        for conn in &open {
            conn.close(0u32.into(), b"client closed");
        }
        let sockets: Vec<quinn::Endpoint> = {
            let sockets = self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner());
            [sockets.v4.clone(), sockets.v6.clone()].into_iter().flatten().collect()
        };
        // Also ends handshakes still in progress.
        for socket in &sockets {
            socket.close(0u32.into(), b"client closed");
        }
        // The connection tasks send the close frames.
        let sent = async {
            while !open.iter().zip(&sent_before).all(|(c, before)| c.stats().udp_tx.datagrams > *before) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH, sent).await;
    }

    // ----- key-value -----

    /// Sets `key` to `value`.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<pb::PutResponse, ClientError> {
        self.put_request(key, value.into(), None).await
    }

    /// Sets `key` to `value` only if the key's mod revision is `if_revision`
    /// (0: only if the key does not exist). A mismatch is a
    /// `FailedPrecondition` error carrying the current revision.
    pub async fn put_if(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        if_revision: u64,
    ) -> Result<pb::PutResponse, ClientError> {
        self.put_request(key, value.into(), Some(if_revision)).await
    }

    async fn put_request(
        &self,
        key: &str,
        value: Vec<u8>,
        if_revision: Option<u64>,
    ) -> Result<pb::PutResponse, ClientError> {
        let body = Req::Put(pb::PutRequest { key: key.to_owned(), value, if_revision });
        settle(true, expect_body!(self.call(body, true).await?, Put, "put"))
    }

    /// Reads `key` linearizably (through the leader).
    pub async fn get(&self, key: &str) -> Result<pb::GetResponse, ClientError> {
        self.get_request(key, false).await
    }

    /// Reads `key` from whichever node answers, possibly stale.
    pub async fn get_serializable(&self, key: &str) -> Result<pb::GetResponse, ClientError> {
        self.get_request(key, true).await
    }

    async fn get_request(&self, key: &str, serializable: bool) -> Result<pb::GetResponse, ClientError> {
        let body = Req::Get(pb::GetRequest { key: key.to_owned(), serializable });
        expect_body!(self.call(body, false).await?, Get, "get")
    }

    /// Deletes `key`; `deleted` tells whether it existed.
    pub async fn delete(&self, key: &str) -> Result<pb::DeleteResponse, ClientError> {
        self.delete_request(key, None).await
    }

    /// Deletes `key` only if its mod revision is `if_revision`.
    pub async fn delete_if(&self, key: &str, if_revision: u64) -> Result<pb::DeleteResponse, ClientError> {
        self.delete_request(key, Some(if_revision)).await
    }

    async fn delete_request(&self, key: &str, if_revision: Option<u64>) -> Result<pb::DeleteResponse, ClientError> {
        let body = Req::Delete(pb::DeleteRequest { key: key.to_owned(), if_revision });
        settle(true, expect_body!(self.call(body, true).await?, Delete, "delete"))
    }

    /// Lists up to `limit` keys starting with `prefix` and strictly after
    /// `start_after`, in key order; `more` tells whether a further page exists.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
        serializable: bool,
    ) -> Result<pb::ListResponse, ClientError> {
        let body = Req::List(pb::ListRequest {
            prefix: prefix.to_owned(),
            start_after: start_after.to_owned(),
            limit,
            serializable,
        });
        expect_body!(self.call(body, false).await?, List, "list")
    }

    /// Watches keys starting with `prefix` from `from_revision` (0: only new
    /// events). The stream survives connection failures by resuming from the
    /// last seen revision + 1 on another endpoint; a typed server error (e.g.
    /// a compacted revision, a watcher that fell behind) is yielded once and
    /// ends it. Nothing is sent until the stream is first polled.
    pub fn watch(&self, prefix: &str, from_revision: u64) -> WatchStream {
        WatchStream::new(self.clone(), prefix.to_owned(), from_revision)
    }

    // ----- cluster -----

    /// The answering node's view of the cluster.
    pub async fn status(&self) -> Result<pb::StatusResponse, ClientError> {
        expect_body!(self.call(Req::Status(pb::StatusRequest {}), false).await?, Status, "status")
    }

    /// Adds the node whose peer listener is `raft_addr`: it joins as a
    /// learner and is promoted to voter once caught up, unless `learner_only`.
    pub async fn add_node(&self, raft_addr: &str, learner_only: bool) -> Result<pb::MembershipResponse, ClientError> {
        let body = Req::AddNode(pb::AddNodeRequest { raft_addr: raft_addr.to_owned(), learner_only });
        settle(true, expect_body!(self.call(body, true).await?, Membership, "membership"))
    }

    /// Removes node `id` from the cluster.
    pub async fn remove_node(&self, id: u64) -> Result<pb::MembershipResponse, ClientError> {
        let body = Req::RemoveNode(pb::RemoveNodeRequest { id });
        settle(true, expect_body!(self.call(body, true).await?, Membership, "membership"))
    }

    /// Asks the leader to hand leadership to node `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<pb::MembershipResponse, ClientError> {
        let body = Req::TransferLeader(pb::TransferLeaderRequest { to });
        settle(true, expect_body!(self.call(body, true).await?, Membership, "membership"))
    }

    /// Makes the answering node snapshot its state machine and compact its log.
    pub async fn snapshot(&self) -> Result<pb::SnapshotResponse, ClientError> {
        let answer = self.call(Req::Snapshot(pb::SnapshotRequest {}), true).await?;
        settle(true, expect_body!(answer, Snapshot, "snapshot"))
    }

    /// Creates a single-use token with which one new node can enroll, valid
    /// `ttl_seconds` (0: the server's default, 15 minutes; at most 24 hours).
    pub async fn join_token(&self, ttl_seconds: u64) -> Result<pb::JoinTokenResponse, ClientError> {
        let body = Req::JoinToken(pb::JoinTokenRequest { ttl_seconds, ..Default::default() });
        settle(true, expect_body!(self.call(body, true).await?, JoinToken, "join_token"))
    }

    /// The join tokens the cluster keeps (usable ones, and for a day those
    /// that were used, revoked or expired), by id.
    pub async fn join_tokens(&self) -> Result<Vec<pb::JoinTokenInfo>, ClientError> {
        let body = Req::JoinToken(pb::JoinTokenRequest {
            action: pb::JoinTokenAction::JoinTokenList as i32,
            ..Default::default()
        });
        let answer: pb::JoinTokenResponse = expect_body!(self.call(body, false).await?, JoinToken, "join_token")?;
        Ok(answer.tokens)
    }

    /// Makes a join token unusable, named by its id or by the token itself
    /// (an argument starting with `caddyjoin.`); returns its id.
    pub async fn revoke_join_token(&self, id_or_token: &str) -> Result<u64, ClientError> {
        let mut request =
            pb::JoinTokenRequest { action: pb::JoinTokenAction::JoinTokenRevoke as i32, ..Default::default() };
        match id_or_token.trim().parse::<u64>() {
            Ok(id) => request.id = id,
            Err(_) => request.token = id_or_token.trim().to_owned(),
        }
        let answer: pb::JoinTokenResponse =
            settle(true, expect_body!(self.call(Req::JoinToken(request), true).await?, JoinToken, "join_token"))?;
        Ok(answer.id)
    }

    /// Gives every member a new key and certificate (their old ones are
    /// refused afterwards); one entry per member, failed ones with `error`.
    pub async fn rotate_certs(&self) -> Result<pb::RotateCertsResponse, ClientError> {
        let body = Req::RotateCerts(pb::RotateCertsRequest {});
        settle(true, expect_body!(self.call(body, true).await?, RotateCerts, "rotate_certs"))
    }

    /// Streams a consistent backup into `writer`, calling `progress(done,
    /// total)` after each chunk (`total` is 0 if the server did not say).
    /// Returns the number of bytes written. Connection failures before the
    /// first chunk are retried on other endpoints; after it, they end the
    /// backup with `Unavailable` (the caller discards the partial output).
    pub async fn backup<W, P>(&self, mut writer: W, mut progress: P) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin,
        P: FnMut(u64, u64),
    {
        let req = self.request(Req::Backup(pb::BackupRequest {}), 0, 0);
        let (first, mut recv, _) = self.open(&req, true, false).await?;
        let mut body = first;
        let mut done = 0u64;
        let mut total = 0u64;
        loop {
            let chunk = match body {
                Some(Resp::BackupChunk(chunk)) => chunk,
                Some(Resp::Error(err)) => return Err(ClientError::from_pb(err)),
                Some(other) => return Err(unexpected("backup_chunk", &other)),
                None => return Err(ClientError::Protocol("response without a body".into())),
            };
            if total == 0 {
                total = chunk.total_bytes;
            }
            writer.write_all(&chunk.data).await?;
            done = done.saturating_add(chunk.data.len() as u64);
            progress(done, total);
            if chunk.last {
                break;
            }
            let timeout = self.inner.config.request_timeout;
            let frame = tokio::time::timeout(timeout, read_frame::<pb::Response, _>(&mut recv, self.max_frame()))
                .await
                .map_err(|_| {
                    ClientError::Unavailable(format!(
                        "backup stalled: no data for {} after {done} bytes",
                        human_duration(timeout)
                    ))
                })?;
            body = match frame {
                Ok(response) => response.body,
                Err(e) if e.is_protocol_violation() => {
                    return Err(ClientError::Protocol(e.to_string()));
                }
                Err(e) => {
                    return Err(ClientError::Unavailable(format!("backup interrupted after {done} bytes: {e}")));
                }
            };
        }
        writer.flush().await?;
        if total != 0 && done != total {
            return Err(ClientError::Protocol(format!("backup ended after {done} of {total} announced bytes")));
        }
        Ok(done)
    }

    // ----- machinery -----

    fn max_frame(&self) -> usize {
        self.inner.config.max_frame_bytes
    }

    fn request(&self, body: Req, client_id: u64, sequence: u64) -> pb::Request {
        pb::Request {
            credential: self.inner.config.credential.clone(),
            client_id,
            sequence,
            tenant: self.inner.config.tenant.clone().unwrap_or_default(),
            request_id: String::new(),
            body: Some(body),
        }
    }

    // ----- identity -----

    /// Sends one identity call (tenants, users, roles, teams, API keys,
    /// sessions, invitations, audit). Mutating calls go through an
    /// exactly-once lane like key-value writes.
    pub async fn identity(&self, call: &IdentityCall) -> Result<IdentityAnswer, ClientError> {
        let bytes = serde_json::to_vec(call).map_err(|e| ClientError::Protocol(format!("encoding call: {e}")))?;
        let body = Req::Identity(pb::IdentityRequest { call: bytes });
        let write = !call.is_read();
        let answer = settle(write, expect_body!(self.call(body, write).await?, Identity, "identity"))?;
        let decoded = serde_json::from_slice(&answer.answer)
            .map_err(|e| ClientError::Protocol(format!("undecodable identity answer: {e}")));
        settle(write, decoded)
    }

    /// Logs in to the configured tenant; returns the session token (shown
    /// once) and the session.
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, SessionView), ClientError> {
        let call = IdentityCall::Login { email: email.into(), password: password.into(), ttl_seconds: None };
        match self.identity(&call).await? {
            IdentityAnswer::Session { token, session, .. } => Ok((token, session)),
            other => Err(unexpected_answer("session", &other)),
        }
    }

    /// One audit request against the configured tenant's chain (the
    /// cluster chain for an operator without a tenant): entries after
    /// `after_seq` that match `filter`, at most `limit`, and the `after_seq`
    /// to continue with (`None`: the end of the chain). The server looks at
    /// a bounded slice of the chain per request, so a page may be empty and
    /// still have a continuation.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        after_seq: u64,
        limit: u32,
    ) -> Result<(Vec<AuditView>, Option<u64>), ClientError> {
        let call = IdentityCall::AuditList {
            actor: filter.actor.clone(),
            action: filter.action.clone(),
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            after_seq,
            limit,
        };
        match self.identity(&call).await? {
            IdentityAnswer::Audit { entries, more, next_after_seq } => {
                // A server without cursors continued after its last entry.
                let next = match next_after_seq {
                    Some(next) => Some(next),
                    None if more => entries.last().map(|e| e.seq),
                    None => None,
                };
                if next.is_some_and(|n| n <= after_seq) {
                    return Err(ClientError::Protocol("the audit listing did not advance".into()));
                }
                Ok((entries, next))
            }
            other => Err(unexpected_answer("audit", &other)),
        }
    }

    /// Up to `limit` entries after `after_seq` that match `filter`,
    /// following the server's cursor across as many requests as it takes;
    /// also the `after_seq` to continue with (`None`: the end of the chain).
    /// A `limit` of 0 asks for one default page.
    pub async fn audit_list(
        &self,
        filter: &AuditFilter,
        mut after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<AuditView>, Option<u64>), ClientError> {
        let mut entries = Vec::new();
        let limit = if limit == 0 { MAX_PAGE as usize } else { limit };
        loop {
            let want = (limit - entries.len()).min(MAX_PAGE as usize) as u32;
            let (page, next) = self.audit_page(filter, after_seq, want).await?;
            entries.extend(page);
            match next {
                Some(next) if entries.len() < limit => after_seq = next,
                next => return Ok((entries, next)),
            }
        }
    }

    /// Verifies the whole audit chain, page by page (each page continues
    /// the hash the previous one ended with); the answer sums them up:
    /// `entries` verified after `after_seq` (the chain's checkpoint once
    /// pruned), and `broken` naming the first bad entry. When pruning
    /// overtakes the walk, it restarts at the new checkpoint.
    pub async fn audit_verify(&self) -> Result<IdentityAnswer, ClientError> {
        let (mut after_seq, mut after_hash) = (0, String::new());
        let mut total = 0u64;
        let mut start: Option<(u64, Option<CheckpointView>)> = None;
        // Pruning faster than the walk would restart it forever.
        const MAX_VERIFY_RESTARTS: u32 = 3;
        let mut restarts = 0;
        loop {
            let call = IdentityCall::AuditVerify { after_seq, after_hash: after_hash.clone() };
            let answer = self.identity(&call).await?;
            let IdentityAnswer::Verified {
                tenant,
                entries,
                head_seq,
                broken,
                checkpoint,
                after_seq: from,
                last_seq,
                last_hash,
                more,
            } = answer
            else {
                return Err(unexpected_answer("verified", &answer));
            };
            if start.is_none() || from != after_seq {
                if start.is_some() {
                    restarts += 1;
                    if restarts > MAX_VERIFY_RESTARTS {
                        return Err(ClientError::Unavailable(format!(
                            "pruning overtook the verification {restarts} times; try again, or give the chain \
                             a longer retention while verifying"
                        )));
                    }
                }
                total = 0;
                start = Some((from, checkpoint));
            }
            total = total.saturating_add(entries);
            if broken.is_some() || !more {
                let before = usize::try_from(total.saturating_sub(entries)).unwrap_or(usize::MAX);
                let broken = broken.map(|mut b| {
                    b.index = b.index.saturating_add(before);
                    b
                });
                let (from, checkpoint) = start.unwrap_or((0, None));
                return Ok(IdentityAnswer::Verified {
                    tenant,
                    entries: total,
                    head_seq,
                    broken,
                    checkpoint,
                    after_seq: from,
                    last_seq,
                    last_hash,
                    more: false,
                });
            }
            if last_seq <= after_seq {
                return Err(ClientError::Protocol("the audit verification did not advance".into()));
            }
            (after_seq, after_hash) = (last_seq, last_hash);
        }
    }

    /// Sends one request and returns the answer's body (never an `Error`
    /// body: those become `ClientError::Server`). Writes take a lane.
    async fn call(&self, body: Req, write: bool) -> Result<Resp, ClientError> {
        self.call_stream(body, write, None).await.map(|(body, _)| body)
    }

    /// [`Self::call`], also returning the stream for further answer frames.
    /// Reads carry `read_client_id` when given (presence names its client).
    pub(crate) async fn call_stream(
        &self,
        body: Req,
        write: bool,
        read_client_id: Option<u64>,
    ) -> Result<(Resp, quinn::RecvStream), ClientError> {
        let guard = write.then(|| self.inner.lanes.acquire());
        let (client_id, sequence) =
            guard.as_ref().map_or((read_client_id.unwrap_or(0), 0), |g| (g.lane().client_id, g.lane().sequence));
        let req = self.request(body, client_id, sequence);
        let result = match self.open(&req, true, false).await {
            Ok((Some(Resp::Error(err)), _, _)) => Err(ClientError::from_pb(err)),
            Ok((Some(body), recv, _)) => Ok((body, recv)),
            Ok((None, _, _)) => settle(write, Err(ClientError::Protocol("response without a body".into()))),
            Err(e) => Err(e),
        };
        if let Some(guard) = guard {
            // A write known not applied (refused, or never sent) leaves its
            // lane usable; one in doubt must never be sent again. A refusal
            // with a retry-after is in doubt when an earlier attempt of the
            // write went unanswered (`open` says so): it may have been applied.
            let definitive = match &result {
                Ok(_) => true,
                Err(e) => e.outcome() == Outcome::NotApplied,
            };
            if definitive {
                guard.complete();
            }
        }
        result
    }

    /// Sends a streaming request (nothing read yet), with failover.
    pub(crate) async fn open_stream(&self, body: Req) -> Result<quinn::RecvStream, ClientError> {
        let req = self.request(body, 0, 0);
        let (_, recv, _) = self.open(&req, false, false).await?;
        Ok(recv)
    }

    /// Sends `body` as the given lane's request, keeping the send side open
    /// for what follows (an upload's chunks); returns the first answer and
    /// both sides, with failover for the opening exchange.
    pub(crate) async fn open_duplex(
        &self,
        body: Req,
        client_id: u64,
        sequence: u64,
    ) -> Result<(Resp, quinn::SendStream, quinn::RecvStream), ClientError> {
        let req = self.request(body, client_id, sequence);
        match self.open(&req, true, true).await? {
            (Some(Resp::Error(err)), _, _) => Err(ClientError::from_pb(err)),
            (Some(body), recv, Some(send)) => Ok((body, send, recv)),
            _ => Err(ClientError::Protocol("response without a body".into())),
        }
    }

    /// An exactly-once lane for a write that spans several requests (an
    /// upload resumed after a failure keeps its lane).
    pub(crate) fn write_lane(&self) -> crate::lanes::LaneGuard {
        self.inner.lanes.acquire()
    }

    /// This client's id in document presence.
    pub fn presence_id(&self) -> u64 {
        self.inner.presence_id
    }

    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame()
    }

    /// Opens a watch stream (request sent, nothing read yet), with failover.
    pub(crate) async fn open_watch(&self, prefix: &str, from_revision: u64) -> Result<quinn::RecvStream, ClientError> {
        let req = self.request(Req::Watch(pb::WatchRequest { prefix: prefix.to_owned(), from_revision }), 0, 0);
        let (_, recv, _) = self.open(&req, false, false).await?;
        Ok(recv)
    }

    /// Sends `req` on a new stream, retrying on the next endpoint after a
    /// transport failure, a timeout, a refused connection or an
    /// `UNAVAILABLE` answer, until the request timeout (or the handle's
    /// deadline, if sooner); then fails with the last `UNAVAILABLE` answer,
    /// or else the refusal (when no attempt may have reached a server), or
    /// else the last transport failure. An answer with a retry-after (the
    /// server did nothing and says when the same request may succeed) is
    /// retried on the same endpoint after that wait when it fits in that
    /// time, and returned at once otherwise. A write (a request with a
    /// sequence) one attempt of which went out and got no definitive answer
    /// fails as [`ClientError::OutcomeUnknown`], also when a later attempt
    /// is refused with a retry-after ([`ClientError::after_doubt`]). With
    /// `read_first`, the first answer frame is read (and a non-retryable
    /// `Error` body is returned as it is, for the caller to map); the
    /// receive side is returned for further frames.
    async fn open(&self, req: &pb::Request, read_first: bool, keep_send: bool) -> Result<Opened, ClientError> {
        let config = &self.inner.config;
        let n = self.inner.slots.len();
        if n == 0 {
            return Err(ClientError::Config("no endpoints configured".into()));
        }
        let now = Instant::now();
        // A huge configured timeout must not overflow the clock.
        let by_timeout = now.checked_add(config.request_timeout).unwrap_or_else(|| now + FAR_FUTURE);
        let deadline = self.deadline.map_or(by_timeout, |d| d.min(by_timeout));
        if deadline <= now {
            return Err(ClientError::Unavailable("the deadline passed before the request was sent".into()));
        }
        let total = deadline - now;
        // Reads carry sequence 0; every write carries its lane's (from 1).
        let write = req.sequence != 0;
        // Set once an attempt of the write went out and ended without a
        // definitive answer: from then on a server may have applied it,
        // whatever later attempts are told.
        let mut doubt = false;
        let is_kv = matches!(req.body, Some(Req::Put(_) | Req::Get(_) | Req::Delete(_) | Req::List(_)));
        let attempt_cap = self.attempt_cap(is_kv);
        let connect_wait = if n > 1 { HEDGE_AFTER } else { config.connect_timeout };
        let mut idx = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut backoff = MIN_BACKOFF;
        // The last typed UNAVAILABLE says more (e.g. "no leader") than a
        // transport failure of another endpoint, so it wins when there is one.
        let mut last_server: Option<ClientError> = None;
        let mut last: Option<ClientError> = None;
        // A refused connection is reported as such only if no attempt may
        // have reached a server (else the write's outcome is unknown).
        let mut refused: Option<ClientError> = None;
        let mut ambiguous = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let budget = remaining.min(attempt_cap);
            let addr = self.inner.slots[idx].addr.as_str();
            let mut next = (idx + 1) % n;
            // Set once this attempt's request frame starts out.
            let went_out = AtomicBool::new(false);
            let attempt = self.attempt(idx, req, read_first, keep_send, connect_wait, &went_out);
            let result = tokio::time::timeout(budget, attempt).await;
            let sent = write && went_out.load(Ordering::Relaxed);
            match result {
                Ok(Ok((Some(Resp::Error(err)), recv, send))) => {
                    if let Some(wait) = err.retry_after_ms.filter(|ms| *ms > 0).map(Duration::from_millis) {
                        let wait = jittered(wait);
                        if Instant::now().checked_add(wait).is_some_and(|at| at < deadline) {
                            tracing::debug!(endpoint = addr, ?wait, message = %err.message, "server asked to retry later");
                            tokio::time::sleep(wait).await;
                            backoff = MIN_BACKOFF;
                            continue;
                        }
                        self.inner.preferred.store(idx, Ordering::Relaxed);
                        if doubt {
                            return Err(ClientError::from_pb(err).after_doubt());
                        }
                        return Ok((Some(Resp::Error(err)), recv, send));
                    }
                    if code_from_pb(err.code) != Some(ErrorCode::Unavailable) {
                        self.inner.preferred.store(idx, Ordering::Relaxed);
                        return Ok((Some(Resp::Error(err)), recv, send));
                    }
                    if let Some(leader) = err.leader_hint.as_deref().and_then(|hint| self.slot_of(hint)) {
                        next = leader;
                    }
                    let err = ClientError::from_pb(err);
                    tracing::debug!(endpoint = addr, error = %err, "retrying elsewhere");
                    last_server = Some(err);
                    // Also what a leader answers when it loses leadership
                    // before the write commits.
                    doubt |= sent;
                }
                Ok(Ok(opened)) => {
                    let hinted = self.inner.leader_hint.swap(usize::MAX, Ordering::Relaxed);
                    self.inner.preferred.store(if hinted < n { hinted } else { idx }, Ordering::Relaxed);
                    return Ok(opened);
                }
                Ok(Err(AttemptError::Fatal(err))) => {
                    doubt |= sent;
                    return Err(if doubt { err.after_doubt() } else { err });
                }
                Ok(Err(AttemptError::Refused(err))) => {
                    // The server serves nothing on a connection it refuses:
                    // not a doubt, whatever went out on it.
                    tracing::debug!(endpoint = addr, error = %err, "connection refused, retrying elsewhere");
                    last = Some(ClientError::Unavailable(format!("{addr}: {err}")));
                    refused = Some(err);
                }
                Ok(Err(AttemptError::Transport(msg))) => {
                    tracing::debug!(endpoint = addr, error = %msg, "transport failure, retrying elsewhere");
                    last = Some(ClientError::Unavailable(format!("{addr}: {msg}")));
                    ambiguous = true;
                    doubt |= sent;
                }
                Err(_) => {
                    tracing::debug!(endpoint = addr, "attempt timed out, retrying elsewhere");
                    self.forget(idx, None);
                    last =
                        Some(ClientError::Unavailable(format!("{addr}: no answer within {}", human_duration(budget))));
                    ambiguous = true;
                    doubt |= sent;
                }
            }
            idx = next;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let err = last_server
            .or(refused.filter(|_| !ambiguous))
            .or(last)
            .unwrap_or_else(|| ClientError::Unavailable(format!("no answer within {}", human_duration(total))));
        Err(if doubt { err.after_doubt() } else { err })
    }

    /// How long one attempt on one endpoint may take before the next is
    /// tried. A call the server holds open (a render wait) must ask for
    /// less than this, or it is abandoned before it is answered.
    pub(crate) fn attempt_cap(&self, is_kv: bool) -> Duration {
        let timeout = self.inner.config.request_timeout;
        match (self.inner.slots.len() > 1, is_kv) {
            (false, _) => timeout,
            (true, true) => KV_ATTEMPT.min(timeout),
            (true, false) => (timeout / 3).max(MIN_ATTEMPT),
        }
    }

    /// Index of the configured endpoint named `hint`, if any.
    fn slot_of(&self, hint: &str) -> Option<usize> {
        self.inner.slots.iter().position(|s| s.addr == hint)
    }

    async fn attempt(
        &self,
        idx: usize,
        req: &pb::Request,
        read_first: bool,
        keep_send: bool,
        connect_wait: Duration,
        sent: &AtomicBool,
    ) -> Result<Opened, AttemptError> {
        let conn = match tokio::time::timeout(connect_wait, self.connection(idx)).await {
            Ok(conn) => conn.map_err(AttemptError::Transport)?,
            Err(_) => {
                return Err(AttemptError::Transport("connecting: handshake still in progress".into()));
            }
        };
        let result = self.exchange(&conn, req, read_first, keep_send, sent).await;
        if matches!(result, Err(AttemptError::Transport(_))) {
            self.forget(idx, Some(&conn));
            // Closed by the server before it served anything: say why.
            if let Some(refused) = refusal(&conn) {
                return Err(AttemptError::Refused(refused));
            }
        }
        result
    }

    async fn exchange(
        &self,
        conn: &quinn::Connection,
        req: &pb::Request,
        read_first: bool,
        keep_send: bool,
        sent: &AtomicBool,
    ) -> Result<Opened, AttemptError> {
        let (mut send, mut recv) =
            conn.open_bi().await.map_err(|e| AttemptError::Transport(format!("opening a stream: {e}")))?;
        sent.store(true, Ordering::Relaxed);
        write_frame(&mut send, req).await.map_err(frame_error)?;
        let send = if keep_send {
            Some(send)
        } else {
            send.finish().map_err(|e| AttemptError::Transport(format!("finishing the request: {e}")))?;
            None
        };
        if !read_first {
            return Ok((None, recv, send));
        }
        let response: pb::Response = read_frame(&mut recv, self.max_frame()).await.map_err(frame_error)?;
        if !response.leader_client_addr.is_empty()
            && let Some(leader) = self.slot_of(&response.leader_client_addr)
        {
            // Served by a follower: later requests go straight to the leader.
            self.inner.leader_hint.store(leader, Ordering::Relaxed);
        }
        match response.body {
            Some(body) => Ok((Some(body), recv, send)),
            None => Err(AttemptError::Fatal(ClientError::Protocol("response without a body".into()))),
        }
    }

    /// The cached connection to endpoint `idx`, or the one being made, or a
    /// new one. Handshakes run in a spawned task bounded by the connect
    /// timeout, so a caller that stops waiting does not waste them.
    async fn connection(&self, idx: usize) -> Result<quinn::Connection, String> {
        let slot = &self.inner.slots[idx];
        let connecting = {
            let mut cached = slot.conn.lock().unwrap_or_else(|p| p.into_inner());
            let reusable = match cached.as_ref().map(|c| c.peek()) {
                Some(Some(Ok(conn))) => {
                    if conn.close_reason().is_none() {
                        return Ok(conn.clone());
                    }
                    false
                }
                // A finished failure: try again.
                Some(Some(Err(_))) | None => false,
                // In progress.
                Some(None) => true,
            };
            match cached.as_ref() {
                Some(connecting) if reusable => connecting.clone(),
                _ => {
                    let runtime = tokio::runtime::Handle::try_current()
                        .map_err(|_| "the client must run inside a tokio runtime".to_string())?;
                    let connecting = self.connect_task(idx).boxed().shared();
                    runtime.spawn(connecting.clone());
                    *cached = Some(connecting.clone());
                    connecting
                }
            }
        };
        connecting.await
    }

    /// A handshake with endpoint `idx`; owns everything it needs, so that it
    /// can finish after every requester has moved on.
    fn connect_task(&self, idx: usize) -> impl Future<Output = Result<quinn::Connection, String>> + Send + 'static {
        let addr_text = self.inner.slots[idx].addr.clone();
        let quic = self.inner.quic.clone();
        let timeout = self.inner.config.connect_timeout;
        let client = self.clone();
        let handshake = async move {
            let addr = resolve(&addr_text).await?;
            let socket = client.socket_for(addr)?;
            drop(client);
            let connecting = socket
                .connect_with(quic, addr, caddy_wire::CLUSTER_SERVER_NAME)
                .map_err(|e| format!("connecting: {e}"))?;
            connecting.await.map_err(|e| format!("connecting: {e}"))
        };
        async move {
            match tokio::time::timeout(timeout, handshake).await {
                Ok(result) => result,
                Err(_) => Err(format!("connecting: no handshake within {}", human_duration(timeout))),
            }
        }
    }

    /// Drops the cached connection of `idx` if it is `conn` (any finished
    /// connection when `conn` is `None`); a handshake in progress is kept.
    fn forget(&self, idx: usize, conn: Option<&quinn::Connection>) {
        let mut cached = self.inner.slots[idx].conn.lock().unwrap_or_else(|p| p.into_inner());
        let drop_it = match (cached.as_ref().and_then(|c| c.peek()), conn) {
            (Some(Ok(cached)), Some(conn)) => cached.stable_id() == conn.stable_id(),
            (Some(_), None) => true,
            _ => false,
        };
        if drop_it {
            *cached = None;
        }
    }

    /// The UDP socket for `addr`'s address family, bound on first use.
    fn socket_for(&self, addr: SocketAddr) -> Result<quinn::Endpoint, String> {
        let mut sockets = self.inner.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let (slot, bind): (&mut Option<quinn::Endpoint>, SocketAddr) = if addr.is_ipv4() {
            (&mut sockets.v4, (Ipv4Addr::UNSPECIFIED, 0).into())
        } else {
            (&mut sockets.v6, (Ipv6Addr::UNSPECIFIED, 0).into())
        };
        if let Some(socket) = slot {
            return Ok(socket.clone());
        }
        let socket = quinn::Endpoint::client(bind).map_err(|e| format!("binding a UDP socket on {bind}: {e}"))?;
        *slot = Some(socket.clone());
        Ok(socket)
    }
}

async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let mut addrs = tokio::net::lookup_host(addr).await.map_err(|e| format!("resolving: {e}"))?;
    addrs.next().ok_or_else(|| "resolving: no address".to_string())
}
