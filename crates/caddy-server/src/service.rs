//! Client request handling: authentication, validation, dispatch to Raft or
//! local state, and the typed error mapping. Transport-agnostic: a handler
//! writes its answer frames to any `AsyncWrite`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caddy_core::identity::api::{Call, IdentityCall, Op, Principal};
use caddy_core::identity::{Action, Caller, CredentialState, Permission, Resource, ResourceKind, TenantId, authorize};
use caddy_core::{CaddyError, ClientSeq, Command, ErrorCode, EventKind, KeyValue, KvEvent, ReplyBody};
use caddy_raft::RaftNode;
use caddy_raft::node::MembershipOp;
use caddy_store::WatchMessage;
use caddy_wire::pb::{self, request::Body as Req, response::Body as Resp};
use caddy_wire::write_frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, broadcast};

use crate::accounts::{KeyTouches, WriteCtx, now_ms};
use crate::blobs::Blobs;
use crate::config::{FilesConfig, Limits};
use crate::edge::{Edge, Peer, Source};
use crate::presence::PresenceHub;

/// How often a watch checks that its credential may still read what it
/// watches: a revoked key, an ended session, a disabled user or a suspended
/// tenant ends the stream within this time.
pub(crate) const WATCH_RECHECK: Duration = Duration::from_secs(1);

/// How long `cluster status` waits for each other member to describe its
/// local services; a member that takes longer shows an empty render line.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(700);
/// Lifetime of a join token when the request names none: long enough to
/// start a node, short enough that a leaked one is soon useless.
const DEFAULT_JOIN_TOKEN_TTL_SECS: u64 = 15 * 60;
/// Longest join token lifetime (the state machine refuses longer ones too).
const MAX_JOIN_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Shared state of the client-facing service.
pub struct Service {
    node: RaftNode,
    limits: Limits,
    watches: Arc<Semaphore>,
    backup_dir: std::path::PathBuf,
    shutdown: tokio::sync::watch::Receiver<bool>,
    touches: KeyTouches,
    presence: PresenceHub,
    files: FilesConfig,
    blobs: Arc<Blobs>,
    render: Arc<crate::render::RenderStatus>,
    edge: Edge,
}

/// Who is asking, for which tenant, from where.
pub(crate) struct Asker {
    pub(crate) principal: Principal,
    pub(crate) caller: Caller,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) request_id: String,
    pub(crate) client_addr: String,
    /// Where the request came from, for per-source limits.
    pub(crate) source: Option<Source>,
    /// The bearer credential as presented, so that a long-lived stream can
    /// check it again later ([`Service::recheck`]).
    credential: String,
}

impl Asker {
    /// The Raft command for `op` on behalf of this asker.
    pub(crate) fn call(&self, op: Op) -> Command {
        Command::Call(Box::new(Call {
            principal: self.principal.clone(),
            tenant: self.tenant.clone(),
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
            op,
        }))
    }

    /// The exactly-once session scope of this asker's writes (the same as
    /// their Raft commands carry, whatever the op, for a credential).
    pub(crate) fn session_scope(&self) -> [u8; 32] {
        self.call(Op::ApiKeyTouch { key: caddy_core::identity::ApiKeyId(0) }).session_scope()
    }

    /// The storage prefix of the key-value namespace this request acts on.
    fn namespace(&self) -> String {
        caddy_store::identity::kv_namespace(self.tenant.as_ref())
    }

    /// Authorizes a key-value read (one authorization function for all).
    fn authorize_kv_read(&self) -> Result<(), CaddyError> {
        kv_read_allowed(&self.caller, self.tenant.as_ref())
    }

    /// Authorizes an operation on the cluster itself.
    fn authorize_cluster(&self) -> Result<(), CaddyError> {
        authorize(&self.caller, None, Permission::new(ResourceKind::Cluster, Action::Admin), &Resource::Cluster)
    }
}

/// Whether `caller` may read the key-value namespace of `tenant` (the
/// cluster's without one).
fn kv_read_allowed(caller: &Caller, tenant: Option<&TenantId>) -> Result<(), CaddyError> {
    match tenant {
        Some(_) => authorize(caller, tenant, Permission::new(ResourceKind::Kv, Action::Read), &Resource::Tenant),
        None => authorize(caller, None, Permission::new(ResourceKind::Cluster, Action::Admin), &Resource::Cluster),
    }
}

/// Refuses a credential that resolved but can no longer be used, before
/// anything is proposed for it.
fn usable(caller: &Caller) -> Result<(), CaddyError> {
    let state = match caller {
        Caller::User(u) => u.session,
        Caller::ApiKey(k) => k.state,
        Caller::Operator | Caller::Anonymous => CredentialState::Active,
    };
    match (state, caller) {
        (CredentialState::Active, _) => Ok(()),
        (_, Caller::ApiKey(k)) => Err(CaddyError::new(
            ErrorCode::Unauthenticated,
            format!(
                "API key {} is {}: create or rotate a key",
                k.key,
                if state == CredentialState::Expired { "expired" } else { "revoked" }
            ),
        )),
        _ => {
            Err(CaddyError::new(ErrorCode::Unauthenticated, "the session has expired or was terminated: log in again"))
        }
    }
}

fn strip_namespace(mut kv: KeyValue, namespace: &str) -> KeyValue {
    if let Some(rest) = kv.key.strip_prefix(namespace) {
        kv.key = rest.to_owned();
    }
    kv
}

fn code_to_pb(code: ErrorCode) -> pb::ErrorCode {
    match code {
        ErrorCode::InvalidArgument => pb::ErrorCode::InvalidArgument,
        ErrorCode::NotFound => pb::ErrorCode::NotFound,
        ErrorCode::AlreadyExists => pb::ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition => pb::ErrorCode::FailedPrecondition,
        ErrorCode::Unauthenticated => pb::ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied => pb::ErrorCode::PermissionDenied,
        ErrorCode::ResourceExhausted => pb::ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable => pb::ErrorCode::Unavailable,
        ErrorCode::Internal => pb::ErrorCode::Internal,
    }
}

/// The protocol form of an error.
pub fn error_response(e: &CaddyError) -> pb::Response {
    pb::Response {
        leader_client_addr: String::new(),
        body: Some(Resp::Error(pb::Error {
            code: code_to_pb(e.code) as i32,
            message: e.message.clone(),
            current_revision: e.current_revision,
            leader_hint: e.leader_hint.clone(),
            retry_after_ms: e.retry_after_ms,
        })),
    }
}

fn kv_to_pb(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn event_to_pb(e: &KvEvent) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: match e.kind {
            EventKind::Put => pb::watch_event::Kind::Put as i32,
            EventKind::Delete => pb::watch_event::Kind::Delete as i32,
        },
        kv: Some(kv_to_pb(e.kv.clone())),
        revision: e.revision,
    }
}

pub(crate) fn local(e: std::io::Error) -> CaddyError {
    CaddyError::internal(format!("local storage: {e}"))
}

fn ok(body: Resp) -> Result<pb::Response, CaddyError> {
    Ok(pb::Response { leader_client_addr: String::new(), body: Some(body) })
}

/// Name of a request kind, for metrics and logs.
pub fn request_name(body: &Option<Req>) -> &'static str {
    match body {
        None => "unknown",
        Some(Req::Put(_)) => "put",
        Some(Req::Get(_)) => "get",
        Some(Req::Delete(_)) => "delete",
        Some(Req::List(_)) => "list",
        Some(Req::Watch(_)) => "watch",
        Some(Req::Status(_)) => "status",
        Some(Req::AddNode(_)) => "add_node",
        Some(Req::RemoveNode(_)) => "remove_node",
        Some(Req::TransferLeader(_)) => "transfer_leader",
        Some(Req::Snapshot(_)) => "snapshot",
        Some(Req::JoinToken(_)) => "join_token",
        Some(Req::Backup(_)) => "backup",
        Some(Req::Identity(_)) => "identity",
        Some(Req::Doc(_)) => "doc",
        Some(Req::File(_)) => "file",
        Some(Req::Render(_)) => "render",
        Some(Req::RotateCerts(_)) => "rotate_certs",
    }
}

impl Service {
    /// A service for `node` with `limits`; backups are staged in
    /// `backup_dir`; long-lived streams end when `shutdown` flips.
    pub fn new(
        node: RaftNode,
        limits: Limits,
        files: FilesConfig,
        blobs: Arc<Blobs>,
        render: Arc<crate::render::RenderStatus>,
        backup_dir: std::path::PathBuf,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let watches = Arc::new(Semaphore::new(limits.max_watches));
        let edge = Edge::new(&limits);
        Self {
            node,
            limits,
            watches,
            backup_dir,
            shutdown,
            touches: KeyTouches::default(),
            presence: PresenceHub::default(),
            files,
            blobs,
            render,
            edge,
        }
    }

    pub(crate) fn files_config(&self) -> &FilesConfig {
        &self.files
    }

    /// This node's blob store.
    pub fn blobs(&self) -> &Arc<Blobs> {
        &self.blobs
    }

    /// Limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn node(&self) -> &RaftNode {
        &self.node
    }

    /// This node's document presence table.
    pub fn presence(&self) -> &PresenceHub {
        &self.presence
    }

    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// One of this node's bounded watch slots (key-value and document watches).
    pub(crate) fn watch_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CaddyError> {
        self.watches.clone().try_acquire_owned().map_err(|_| {
            CaddyError::exhausted(format!(
                "this node serves at most {} watches; try another node",
                self.limits.max_watches
            ))
        })
    }

    /// Checks again, now, that the asker's credential still resolves to a
    /// usable caller who passes `authorize` (long-lived streams call it
    /// every [`WATCH_RECHECK`]).
    pub(crate) fn recheck(
        &self,
        asker: &Asker,
        authorize: impl Fn(&Caller, Option<&TenantId>) -> Result<(), CaddyError>,
    ) -> Result<(), CaddyError> {
        let (_, caller) = self.node.state_machine().authenticate(&asker.credential, now_ms())?;
        usable(&caller)?;
        authorize(&caller, asker.tenant.as_ref())
    }

    /// A linearizable read's barrier, then the asker as the state after it
    /// knows them: authorization judged on the credential as it was before
    /// the barrier could let a lagging node serve a read to a key revoked
    /// (or a session ended) an instant before.
    pub(crate) async fn barrier_then_refresh(&self, asker: &Asker) -> Result<Asker, CaddyError> {
        self.node.read_barrier().await?;
        let (principal, caller) = self.node.state_machine().authenticate(&asker.credential, now_ms())?;
        usable(&caller)?;
        Ok(Asker {
            principal,
            caller,
            tenant: asker.tenant.clone(),
            request_id: asker.request_id.clone(),
            client_addr: asker.client_addr.clone(),
            source: asker.source,
            credential: asker.credential.clone(),
        })
    }

    /// The leader's client address when this node is not the leader.
    pub(crate) fn leader_client_addr(&self) -> String {
        match self.node.leader() {
            Some((id, node)) if id != self.node.id() => node.client_addr,
            _ => String::new(),
        }
    }

    fn authenticate(&self, req: &pb::Request, peer: &Peer) -> Result<Asker, CaddyError> {
        let sm = self.node.state_machine();
        if sm.admin_credential_hash().is_none() {
            return Err(CaddyError::unavailable(
                "the cluster is not initialized yet (no credentials exist); retry shortly",
            ));
        }
        let (principal, caller) = sm.authenticate(&req.credential, now_ms())?;
        let tenant = if req.tenant.is_empty() { caller.tenant().cloned() } else { Some(TenantId::new(&req.tenant)?) };
        let mut request_id: String = req.request_id.chars().take(128).collect();
        if request_id.is_empty() {
            request_id = if req.client_id != 0 {
                format!("{:016x}-{}", req.client_id, req.sequence)
            } else {
                format!("{:016x}", rand::random::<u64>())
            };
        }
        let client_addr = peer.addr().map(|p| p.to_string()).unwrap_or_default();
        Ok(Asker {
            principal,
            caller,
            tenant,
            request_id,
            client_addr,
            source: peer.source(),
            credential: req.credential.clone(),
        })
    }

    fn check_key(&self, key: &str) -> Result<(), CaddyError> {
        if key.is_empty() {
            return Err(CaddyError::invalid("key must not be empty"));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(CaddyError::invalid(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Handles one request, writing its answer frame(s) to `out`. Returns
    /// the status label for metrics.
    /// `input` is the rest of the request stream (an upload's chunks);
    /// `peer` is the connection it came on, marked authenticated once a
    /// request on it presents a working credential or logs in.
    pub async fn handle<W: AsyncWrite + Unpin + Send, R: AsyncRead + Unpin + Send>(
        &self,
        req: pb::Request,
        out: &mut W,
        input: &mut R,
        peer: &Peer,
    ) -> &'static str {
        let started = Instant::now();
        let name = request_name(&req.body);
        let status = match self.dispatch(req, out, input, peer).await {
            Ok(Some(mut resp)) => {
                resp.leader_client_addr = self.leader_client_addr();
                match write_frame(out, &resp).await {
                    Ok(()) => "ok",
                    Err(_) => "client_gone",
                }
            }
            Ok(None) => "ok",
            Err(e) => {
                let _ = write_frame(out, &error_response(&e)).await;
                e.code.as_str()
            }
        };
        metrics::histogram!("caddy_request_seconds", "op" => name).record(started.elapsed().as_secs_f64());
        metrics::counter!("caddy_requests_total", "op" => name, "status" => status).increment(1);
        status
    }

    async fn dispatch<W: AsyncWrite + Unpin + Send, R: AsyncRead + Unpin + Send>(
        &self,
        mut req: pb::Request,
        out: &mut W,
        input: &mut R,
        peer: &Peer,
    ) -> Result<Option<pb::Response>, CaddyError> {
        let Some(body) = req.body.take() else {
            return Err(CaddyError::invalid(
                "unknown or missing request type; this server speaks caddy/1 (upgrade the server or the client)",
            ));
        };
        let asker = self.authenticate(&req, peer)?;
        usable(&asker.caller)?;
        let anonymous = matches!(asker.caller, Caller::Anonymous);
        if !anonymous {
            peer.mark_authenticated();
        }
        self.touches.touch(&self.node, &asker.principal);
        let origin = (req.client_id != 0).then_some(ClientSeq { client_id: req.client_id, sequence: req.sequence });
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        match body {
            Req::Watch(w) => return self.watch(w, &asker, out).await.map(|()| None),
            Req::Doc(d) => return self.doc(d, origin, req.client_id, &asker, out).await.map(|()| None),
            Req::File(f) => return self.file(f, origin, &asker, out, input).await.map(|()| None),
            Req::Render(r) => return self.render(r, origin, &asker, out).await.map(|()| None),
            Req::Backup(_) => {
                asker.authorize_cluster()?;
                return self.backup(out).await.map(|()| None);
            }
            other => match tokio::time::timeout(timeout, self.unary(other, origin, &asker)).await {
                Ok(r) => {
                    // The only unary calls an anonymous caller may make
                    // successfully are a login and an invitation acceptance.
                    if anonymous && r.is_ok() {
                        peer.mark_authenticated();
                    }
                    r.map(Some)
                }
                Err(_) => Err(CaddyError::unavailable(format!("request not completed within {timeout:?}; retry"))),
            },
        }
    }

    async fn unary(&self, body: Req, origin: Option<ClientSeq>, asker: &Asker) -> Result<pb::Response, CaddyError> {
        let node = &self.node;
        let ns = asker.namespace();
        let identity: Option<IdentityCall> = match &body {
            Req::Identity(i) => Some(
                serde_json::from_slice(&i.call)
                    .map_err(|e| CaddyError::invalid(format!("undecodable identity call: {e}")))?,
            ),
            _ => None,
        };
        let anonymous_ok = matches!(identity, Some(IdentityCall::Login { .. } | IdentityCall::InviteAccept { .. }));
        if matches!(asker.caller, Caller::Anonymous) && !anonymous_ok {
            return Err(CaddyError::new(
                ErrorCode::Unauthenticated,
                "no credential presented: log in (caddyctl login) or use an API key",
            ));
        }
        let call = |op: Op| {
            Command::Call(Box::new(Call {
                principal: asker.principal.clone(),
                tenant: asker.tenant.clone(),
                request_id: asker.request_id.clone(),
                client_addr: asker.client_addr.clone(),
                op,
            }))
        };
        match body {
            Req::Identity(_) => {
                let call = identity.ok_or_else(|| CaddyError::internal("identity call not decoded"))?;
                let answer = if call.is_read() {
                    let fresh = self.barrier_then_refresh(asker).await?;
                    node.state_machine().identity_read(&fresh.caller, fresh.tenant.as_ref(), &call, now_ms())?
                } else {
                    let ctx = WriteCtx {
                        principal: asker.principal.clone(),
                        caller: asker.caller.clone(),
                        tenant: asker.tenant.clone(),
                        origin,
                        request_id: asker.request_id.clone(),
                        client_addr: asker.client_addr.clone(),
                        limits: &self.limits,
                        edge: &self.edge,
                        source: asker.source,
                    };
                    crate::accounts::write_call(node, ctx, call).await?
                };
                let bytes = serde_json::to_vec(&answer)
                    .map_err(|e| CaddyError::internal(format!("encoding identity answer: {e}")))?;
                ok(Resp::Identity(pb::IdentityResponse { answer: bytes }))
            }
            Req::Put(p) => {
                self.check_key(&p.key)?;
                if p.value.len() > self.limits.max_value_bytes {
                    return Err(CaddyError::exhausted(format!(
                        "value of {} bytes exceeds the limit of {} bytes",
                        p.value.len(),
                        self.limits.max_value_bytes
                    )));
                }
                let cmd = call(Op::KvPut { key: p.key, value: p.value, if_revision: p.if_revision });
                match node.propose(origin, cmd).await? {
                    ReplyBody::Put { revision, previous } => ok(Resp::Put(pb::PutResponse {
                        revision,
                        previous: previous.map(|kv| kv_to_pb(strip_namespace(kv, &ns))),
                        previous_value_omitted: false,
                    })),
                    ReplyBody::PutPreviousOmitted { revision, previous } => ok(Resp::Put(pb::PutResponse {
                        revision,
                        previous: Some(kv_to_pb(strip_namespace(previous, &ns))),
                        previous_value_omitted: true,
                    })),
                    other => Err(CaddyError::internal(format!("unexpected reply to put: {other:?}"))),
                }
            }
            Req::Delete(d) => {
                self.check_key(&d.key)?;
                match node.propose(origin, call(Op::KvDelete { key: d.key, if_revision: d.if_revision })).await? {
                    ReplyBody::Delete { revision, deleted } => {
                        ok(Resp::Delete(pb::DeleteResponse { revision, deleted }))
                    }
                    other => Err(CaddyError::internal(format!("unexpected reply to delete: {other:?}"))),
                }
            }
            Req::Get(g) => {
                self.check_key(&g.key)?;
                if g.serializable {
                    asker.authorize_kv_read()?;
                } else {
                    self.barrier_then_refresh(asker).await?.authorize_kv_read()?;
                }
                let sm = node.state_machine();
                let revision = sm.revision();
                let kv = sm.get(&format!("{ns}{}", g.key)).map_err(local)?;
                ok(Resp::Get(pb::GetResponse { kv: kv.map(|kv| kv_to_pb(strip_namespace(kv, &ns))), revision }))
            }
            Req::List(l) => {
                if l.serializable {
                    asker.authorize_kv_read()?;
                } else {
                    self.barrier_then_refresh(asker).await?.authorize_kv_read()?;
                }
                let limit = if l.limit == 0 { 100 } else { l.limit.min(self.limits.max_list_limit) } as usize;
                let sm = node.state_machine();
                let revision = sm.revision();
                let start_after =
                    if l.start_after.is_empty() { String::new() } else { format!("{ns}{}", l.start_after) };
                let (kvs, more) = sm.list(&format!("{ns}{}", l.prefix), &start_after, limit).map_err(local)?;
                let kvs = kvs.into_iter().map(|kv| kv_to_pb(strip_namespace(kv, &ns))).collect();
                ok(Resp::List(pb::ListResponse { kvs, more, revision }))
            }
            Req::Watch(_) | Req::Backup(_) | Req::Doc(_) => {
                Err(CaddyError::internal("streaming request routed as unary"))
            }
            cluster => {
                asker.authorize_cluster()?;
                self.cluster_op(cluster).await
            }
        }
    }

    async fn cluster_op(&self, body: Req) -> Result<pb::Response, CaddyError> {
        let node = &self.node;
        match body {
            Req::Status(_) => ok(Resp::Status(self.status().await?)),
            Req::AddNode(a) => {
                let peers = node.peers().ok_or_else(|| CaddyError::internal("no peer network"))?;
                let mut client =
                    peers.newcomer_client(&a.raft_addr).map_err(|s| CaddyError::invalid(s.message().to_string()))?;
                let who = tokio::time::timeout(Duration::from_secs(5), client.identify(caddy_raft::pb::Empty {}))
                    .await
                    .map_err(|_| CaddyError::precondition(format!("no answer from a node at {}", a.raft_addr)))?
                    .map_err(|s| {
                        // Not UNAVAILABLE: retrying elsewhere cannot make that node reachable.
                        CaddyError::precondition(format!(
                            "cannot reach a CADDY node at {} ({}); it must be running with this cluster's certificates",
                            a.raft_addr,
                            s.message()
                        ))
                    })?
                    .into_inner();
                let op = MembershipOp::Add {
                    id: who.node_id,
                    node: caddy_store::CaddyNode {
                        raft_addr: who.raft_addr,
                        client_addr: who.client_addr,
                        admin_addr: who.admin_addr,
                    },
                    learner_only: a.learner_only,
                };
                self.membership(op).await
            }
            Req::RemoveNode(r) => self.membership(MembershipOp::Remove { id: r.id }).await,
            Req::TransferLeader(t) => self.membership(MembershipOp::TransferLeader { to: t.to }).await,
            Req::Snapshot(_) => {
                let (index, term) = node.snapshot_now().await?;
                ok(Resp::Snapshot(pb::SnapshotResponse { index, term }))
            }
            Req::JoinToken(j) => self.join_token(j).await,
            Req::RotateCerts(_) => {
                let members = node
                    .rotate_all()
                    .await
                    .into_iter()
                    .map(|(id, result)| match result {
                        Ok(generation) => pb::RotatedMember { id, generation, error: String::new() },
                        Err(e) => pb::RotatedMember { id, generation: 0, error: e.to_string() },
                    })
                    .collect();
                ok(Resp::RotateCerts(pb::RotateCertsResponse { members }))
            }
            other => Err(CaddyError::internal(format!("{} is not a cluster operation", request_name(&Some(other))))),
        }
    }

    async fn join_token(&self, j: pb::JoinTokenRequest) -> Result<pb::Response, CaddyError> {
        use caddy_raft::certs::TokenRef;
        use caddy_store::cluster::TokenState;
        let node = &self.node;
        match pb::JoinTokenAction::try_from(j.action) {
            Ok(pb::JoinTokenAction::JoinTokenCreate) => {
                let ttl = if j.ttl_seconds == 0 { DEFAULT_JOIN_TOKEN_TTL_SECS } else { j.ttl_seconds };
                if ttl > MAX_JOIN_TOKEN_TTL_SECS {
                    return Err(CaddyError::invalid("a join token lives at most 24 hours"));
                }
                let (token, id, expires_at_ms) = node.create_join_token(Duration::from_secs(ttl)).await?;
                ok(Resp::JoinToken(pb::JoinTokenResponse { token, expires_at_ms, id, tokens: Vec::new() }))
            }
            Ok(pb::JoinTokenAction::JoinTokenList) => {
                let now = caddy_raft::now_ms();
                let tokens = node
                    .join_tokens()
                    .await?
                    .into_iter()
                    .map(|t| {
                        let (state, used_by, ended_at_ms) = match t.state {
                            TokenState::Used { node, at_ms, .. } => ("used", node, at_ms),
                            TokenState::Revoked { at_ms } => ("revoked", 0, at_ms),
                            TokenState::Active if t.expires_at_ms <= now => ("expired", 0, t.expires_at_ms),
                            TokenState::Active => ("active", 0, 0),
                        };
                        pb::JoinTokenInfo {
                            id: t.id,
                            created_at_ms: t.created_ms,
                            expires_at_ms: t.expires_at_ms,
                            state: state.into(),
                            used_by,
                            ended_at_ms,
                        }
                    })
                    .collect();
                ok(Resp::JoinToken(pb::JoinTokenResponse { tokens, ..Default::default() }))
            }
            Ok(pb::JoinTokenAction::JoinTokenRevoke) => {
                let which = match (j.id, j.token.is_empty()) {
                    (0, false) => TokenRef::Token(j.token),
                    (id, true) if id > 0 => TokenRef::Id(id),
                    _ => return Err(CaddyError::invalid("name the join token to revoke by its id or by the token")),
                };
                let id = node.revoke_join_token(which).await?;
                ok(Resp::JoinToken(pb::JoinTokenResponse { id, ..Default::default() }))
            }
            Err(_) => Err(CaddyError::invalid(format!("unknown join token action {}", j.action))),
        }
    }

    async fn membership(&self, op: MembershipOp) -> Result<pb::Response, CaddyError> {
        let view = self.node.membership(op).await.map_err(|e| match e.code {
            ErrorCode::PermissionDenied => caddy_raft::node::refused_by_leader(&e),
            _ => e,
        })?;
        ok(Resp::Membership(pb::MembershipResponse { voters: view.voters, learners: view.learners }))
    }

    /// Cluster status, from the leader's point of view when it can be had.
    /// A node the leader refuses (removed) answers `Unavailable` rather than
    /// its stale view, so clients ask another node.
    pub async fn status(&self) -> Result<pb::StatusResponse, CaddyError> {
        let local = self.node.status();
        let leader_view = async {
            match local.leader {
                Some(l) if l != local.id => match self.node.membership(MembershipOp::Status).await {
                    Ok(v) => Ok(v.status.unwrap_or_else(|| local.clone())),
                    Err(e) if e.code == ErrorCode::PermissionDenied => Err(caddy_raft::node::refused_by_leader(&e)),
                    Err(_) => Ok(local.clone()),
                },
                _ => Ok(local.clone()),
            }
        };
        // Both ask other nodes; with one of them down, asking one after the
        // other would add the two waits.
        let (leader_view, mut described) = tokio::join!(leader_view, self.node.describe_members(DESCRIBE_TIMEOUT));
        let leader_view = leader_view?;
        let unreachable_after = 3 * self.node.timing().election_max_ms;
        let own_render = self.render.line();
        let members = leader_view
            .members
            .iter()
            .map(|m| {
                let is_leader = Some(m.id) == leader_view.leader;
                let lag =
                    if is_leader { Some(0) } else { m.matched.map(|x| leader_view.last_log_index.saturating_sub(x)) };
                let health = if is_leader {
                    "healthy"
                } else if leader_view.leader != Some(leader_view.id) {
                    "unknown"
                } else if m.matched.is_none() || m.last_ack_ms.is_none_or(|ms| ms > unreachable_after) {
                    "unreachable"
                } else if lag.unwrap_or(0) > 1000 {
                    "lagging"
                } else {
                    "healthy"
                };
                pb::MemberStatus {
                    id: m.id,
                    raft_addr: m.node.raft_addr.clone(),
                    client_addr: m.node.client_addr.clone(),
                    admin_addr: m.node.admin_addr.clone(),
                    role: if m.voter { "voter" } else { "learner" }.into(),
                    leader: is_leader,
                    lag,
                    health: health.into(),
                    render: if m.id == local.id {
                        own_render.clone()
                    } else {
                        described.remove(&m.id).map(|d| d.render).unwrap_or_default()
                    },
                }
            })
            .collect();
        Ok(pb::StatusResponse {
            cluster_node: local.id,
            term: local.term.max(leader_view.term),
            leader: local.leader,
            commit_index: leader_view.commit_index,
            applied_index: local.applied_index,
            revision: local.revision,
            members,
            last_log_index: local.last_log_index,
            snapshot_index: local.snapshot_index,
            render: own_render,
            cluster_id: self.node.state_machine().cluster_id().unwrap_or_default(),
        })
    }

    async fn watch<W: AsyncWrite + Unpin + Send>(
        &self,
        mut w: pb::WatchRequest,
        asker: &Asker,
        out: &mut W,
    ) -> Result<(), CaddyError> {
        if matches!(asker.caller, Caller::Anonymous) {
            return Err(CaddyError::new(ErrorCode::Unauthenticated, "no credential presented"));
        }
        asker.authorize_kv_read()?;
        let ns = asker.namespace();
        w.prefix = format!("{ns}{}", w.prefix);
        let event_to_pb = |e: &KvEvent| {
            let mut e = e.clone();
            e.kv = strip_namespace(e.kv, &ns);
            event_to_pb(&e)
        };
        let _permit = self.watch_permit()?;
        let sm = self.node.state_machine();
        // Subscribe before reading history, so no event falls between the two.
        let mut live = sm.subscribe_events();
        let mut next = if w.from_revision == 0 { sm.revision() + 1 } else { w.from_revision };
        loop {
            let batch = sm.events_from(next, &w.prefix, 512)?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                next = e.revision + 1;
                write_frame(
                    out,
                    &pb::Response { leader_client_addr: String::new(), body: Some(Resp::WatchEvent(event_to_pb(e))) },
                )
                .await
                .map_err(|_| CaddyError::unavailable("watcher went away"))?;
            }
        }
        // Older history could also have been compacted while we read it.
        if next <= sm.compacted_revision() {
            return Err(CaddyError::precondition("watch history was compacted while catching up; restart the watch"));
        }
        metrics::gauge!("caddy_watches_active").increment(1.0);
        let mut shutdown = self.shutdown.clone();
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + WATCH_RECHECK, WATCH_RECHECK);
        let result = async {
            loop {
                let message = tokio::select! {
                    m = live.recv() => m,
                    _ = recheck.tick() => {
                        self.recheck(asker, kv_read_allowed)?;
                        continue;
                    }
                    _ = crate::run::stopped(&mut shutdown) => {
                        return Err(CaddyError::unavailable(format!(
                            "node shutting down; resume the watch elsewhere from revision {next}"
                        )));
                    }
                };
                match message {
                    Ok(WatchMessage::Event(e)) => {
                        if e.revision < next || !e.kv.key.starts_with(&w.prefix) {
                            continue;
                        }
                        next = e.revision + 1;
                        write_frame(out, &pb::Response { leader_client_addr: String::new(), body: Some(Resp::WatchEvent(event_to_pb(&e))) })
                            .await
                            .map_err(|_| CaddyError::unavailable("watcher went away"))?;
                    }
                    Ok(WatchMessage::Reset { revision }) => {
                        return Err(CaddyError::precondition(format!(
                            "this node's state was replaced by a snapshot at revision {revision}; re-read and watch from revision {}",
                            revision + 1
                        )));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Err(CaddyError::exhausted(format!(
                            "watcher fell too far behind; resume from revision {next}"
                        )));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(CaddyError::unavailable("node shutting down; resume the watch elsewhere"));
                    }
                }
            }
        }
        .await;
        metrics::gauge!("caddy_watches_active").decrement(1.0);
        result
    }

    async fn backup<W: AsyncWrite + Unpin + Send>(&self, out: &mut W) -> Result<(), CaddyError> {
        // Everything acknowledged before the request is in the copy.
        self.node.read_barrier().await?;
        std::fs::create_dir_all(&self.backup_dir).map_err(local)?;
        let path = self.backup_dir.join(format!("backup-{:016x}.snap", rand::random::<u64>()));
        let sm = self.node.state_machine().clone();
        let export_path = path.clone();
        let exported = tokio::task::spawn_blocking(move || sm.export(&export_path))
            .await
            .map_err(|e| CaddyError::internal(e.to_string()))?;
        let result = async {
            let (_, size) = exported.map_err(local)?;
            let mut file = tokio::fs::File::open(&path).await.map_err(local)?;
            let mut sent = 0u64;
            let mut first = true;
            loop {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256 * 1024];
                let n = file.read(&mut buf).await.map_err(local)?;
                buf.truncate(n);
                sent += n as u64;
                let last = n == 0 || sent >= size;
                let chunk = pb::BackupChunk { total_bytes: if first { size } else { 0 }, data: buf, last };
                first = false;
                write_frame(
                    out,
                    &pb::Response { leader_client_addr: String::new(), body: Some(Resp::BackupChunk(chunk)) },
                )
                .await
                .map_err(|_| CaddyError::unavailable("client went away during the backup"))?;
                if last {
                    return Ok(());
                }
            }
        }
        .await;
        let _ = std::fs::remove_file(&path);
        result
    }
}
