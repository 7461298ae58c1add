//! Document requests: writes proposed through Raft as identity-checked
//! calls, reads from the local state machine after a read barrier, watches
//! that stream committed updates and presence, and presence updates.
//!
//! Every document answer is written here frame by frame: payloads larger
//! than [`PAYLOAD_CHUNK`] are split across frames (`more = true`).

use caddy_core::docs::{DocAnswer, DocBounds, DocCall, DocEvent, DocId, Presence, PresenceState, parse_version};
use caddy_core::identity::api::Op;
use caddy_core::identity::{Action, Caller, Permission, Resource, ResourceKind, TenantId, authorize};
use caddy_core::{CaddyError, ClientSeq, ErrorCode, ReplyBody};
use caddy_wire::pb::{self, response::Body as Resp};
use caddy_wire::write_frame;
use tokio::io::AsyncWrite;
use tokio::sync::broadcast;

use crate::presence::PresenceMsg;
use crate::service::{Asker, Service};

/// Largest payload slice in one frame.
pub const PAYLOAD_CHUNK: usize = 1024 * 1024;

fn gone() -> CaddyError {
    CaddyError::unavailable("client went away")
}

/// Writes one answer, splitting its payload over as many frames as needed.
async fn send<W: AsyncWrite + Unpin + Send>(
    out: &mut W,
    answer: &DocAnswer,
    payload: &[u8],
    leader: &str,
) -> Result<(), CaddyError> {
    let answer = serde_json::to_vec(answer).map_err(|e| CaddyError::internal(format!("encoding answer: {e}")))?;
    let mut chunks = payload.chunks(PAYLOAD_CHUNK).peekable();
    let first = chunks.next().unwrap_or_default();
    let frame = |answer: Vec<u8>, payload: &[u8], more: bool, leader: &str| pb::Response {
        leader_client_addr: leader.to_owned(),
        body: Some(Resp::Doc(pb::DocResponse { answer, payload: payload.to_vec(), more })),
    };
    write_frame(out, &frame(answer, first, chunks.peek().is_some(), leader)).await.map_err(|_| gone())?;
    while let Some(chunk) = chunks.next() {
        write_frame(out, &frame(Vec::new(), chunk, chunks.peek().is_some(), "")).await.map_err(|_| gone())?;
    }
    Ok(())
}

fn tenant_of(asker: &Asker) -> Result<TenantId, CaddyError> {
    asker.tenant.clone().ok_or_else(|| {
        CaddyError::invalid("documents belong to a tenant: name one (--tenant, or the tenant of your credential)")
    })
}

fn authorize_read(asker: &Asker) -> Result<(), CaddyError> {
    docs_read_allowed(&asker.caller, asker.tenant.as_ref())
}

fn docs_read_allowed(caller: &Caller, tenant: Option<&TenantId>) -> Result<(), CaddyError> {
    authorize(caller, tenant, Permission::new(ResourceKind::Docs, Action::Read), &Resource::Tenant)
}

impl Service {
    /// Handles one document request, writing its answer frame(s).
    pub(crate) async fn doc<W: AsyncWrite + Unpin + Send>(
        &self,
        req: pb::DocRequest,
        origin: Option<ClientSeq>,
        client_id: u64,
        asker: &Asker,
        out: &mut W,
    ) -> Result<(), CaddyError> {
        if matches!(asker.caller, Caller::Anonymous) {
            return Err(CaddyError::new(
                ErrorCode::Unauthenticated,
                "no credential presented: log in (caddyctl login) or use an API key",
            ));
        }
        let call: DocCall = serde_json::from_slice(&req.call)
            .map_err(|e| CaddyError::invalid(format!("undecodable document call: {e}")))?;
        let tenant = tenant_of(asker)?;
        if let DocCall::Watch { doc, since } = call {
            return self.doc_watch(&tenant, asker, &doc, since.as_deref(), out).await;
        }
        let timeout = std::time::Duration::from_millis(self.limits().request_timeout_ms);
        let (answer, payload) =
            match tokio::time::timeout(timeout, self.doc_unary(call, req.payload, origin, client_id, &tenant, asker))
                .await
            {
                Ok(r) => r?,
                Err(_) => {
                    return Err(CaddyError::unavailable(format!("request not completed within {timeout:?}; retry")));
                }
            };
        send(out, &answer, &payload, &self.leader_client_addr()).await
    }

    fn bounds(&self) -> DocBounds {
        let l = self.limits();
        DocBounds {
            max_update_bytes: l.doc_max_update_bytes,
            max_document_bytes: l.doc_max_document_bytes,
            max_entities: l.doc_max_entities,
        }
    }

    async fn doc_unary(
        &self,
        call: DocCall,
        payload: Vec<u8>,
        origin: Option<ClientSeq>,
        client_id: u64,
        tenant: &TenantId,
        asker: &Asker,
    ) -> Result<(DocAnswer, Vec<u8>), CaddyError> {
        let node = self.node();
        if call.is_read() {
            authorize_read(&self.barrier_then_refresh(asker).await?)?;
            return node.state_machine().doc_read(tenant, &call);
        }
        let info_after = |d: DocId| async move {
            node.read_barrier().await?;
            node.state_machine().doc_info(tenant, d).map(|i| (DocAnswer::Info(i), Vec::new()))
        };
        match call {
            DocCall::Create { name, units } => {
                match node.propose(origin, asker.call(Op::DocCreate { name, units })).await? {
                    ReplyBody::Created { id } => info_after(DocId(id)).await,
                    other => Err(CaddyError::internal(format!("unexpected reply to a create: {other:?}"))),
                }
            }
            DocCall::Update { doc } => {
                let doc = DocId::parse(&doc)?;
                let bounds = self.bounds();
                if payload.len() as u64 > bounds.max_update_bytes {
                    return Err(CaddyError::exhausted(format!(
                        "update of {} bytes exceeds the limit of {} bytes; sync more often",
                        payload.len(),
                        bounds.max_update_bytes
                    )));
                }
                match node.propose(origin, asker.call(Op::DocUpdate { doc, update: payload, bounds })).await? {
                    ReplyBody::DocUpdated { seq, version, changed } => {
                        Ok((DocAnswer::Updated { seq, version: hex::encode(version), changed }, Vec::new()))
                    }
                    other => Err(CaddyError::internal(format!("unexpected reply to an update: {other:?}"))),
                }
            }
            DocCall::Rename { doc, name } => {
                let doc = DocId::parse(&doc)?;
                node.propose(origin, asker.call(Op::DocRename { doc, name })).await?;
                info_after(doc).await
            }
            DocCall::Delete { doc } => {
                let doc = DocId::parse(&doc)?;
                node.propose(origin, asker.call(Op::DocSetDeleted { doc, deleted: true })).await?;
                info_after(doc).await
            }
            DocCall::Restore { doc } => {
                let doc = DocId::parse(&doc)?;
                node.propose(origin, asker.call(Op::DocSetDeleted { doc, deleted: false })).await?;
                info_after(doc).await
            }
            DocCall::Tag { doc, name, at } => {
                let doc = DocId::parse(&doc)?;
                node.propose(origin, asker.call(Op::DocTag { doc, name: name.clone(), at })).await?;
                node.read_barrier().await?;
                match node.state_machine().doc_read(tenant, &DocCall::Tags { doc: doc.to_string() })?.0 {
                    DocAnswer::Tags { tags } => tags
                        .into_iter()
                        .find(|t| t.name == name)
                        .map(|t| (DocAnswer::Tag(t), Vec::new()))
                        .ok_or_else(|| CaddyError::internal("tag not found after creating it")),
                    other => Err(CaddyError::internal(format!("unexpected tags answer: {other:?}"))),
                }
            }
            DocCall::Presence { doc, state, leave } => {
                authorize_read(asker)?;
                let doc = DocId::parse(&doc)?;
                self.set_presence(tenant, doc, asker, client_id, state, leave)?;
                Ok((DocAnswer::Done, Vec::new()))
            }
            read => Err(CaddyError::internal(format!("read call {read:?} routed as a write"))),
        }
    }
}

impl Service {
    fn set_presence(
        &self,
        tenant: &TenantId,
        doc: DocId,
        asker: &Asker,
        client_id: u64,
        state: PresenceState,
        leave: bool,
    ) -> Result<(), CaddyError> {
        state.validate()?;
        if client_id == 0 {
            return Err(CaddyError::invalid("presence needs a client id (the SDK sends one)"));
        }
        // A presence for a document that does not exist (or is trashed) is refused.
        let info = self.node().state_machine().doc_info(tenant, doc)?;
        if info.deleted_ms.is_some() {
            return Err(CaddyError::precondition(format!("document {doc} is in the trash")));
        }
        let user = asker.caller.actor().map(|a| a.to_string()).unwrap_or_else(|| "operator".into());
        let msg = if leave {
            PresenceMsg::Gone { tenant: tenant.to_string(), doc: doc.to_string(), user, client: client_id }
        } else {
            PresenceMsg::Set(Presence {
                tenant: tenant.to_string(),
                doc: doc.to_string(),
                user,
                client: client_id,
                state,
                ttl_ms: self.limits().presence_ttl_ms,
            })
        };
        if !self.presence().apply(msg.clone()) {
            return Err(CaddyError::exhausted("too many people are present in this document"));
        }
        let data = caddy_core::codec::to_bytes(&msg).map_err(|e| CaddyError::internal(e.to_string()))?;
        self.node().gossip(data);
        Ok(())
    }

    /// Streams a document: first what the watcher is missing (from `since`,
    /// or the whole document), then `caught_up`, the current presences, and
    /// every later committed update and presence change, in order.
    async fn doc_watch<W: AsyncWrite + Unpin + Send>(
        &self,
        tenant: &TenantId,
        asker: &Asker,
        doc: &str,
        since: Option<&str>,
        out: &mut W,
    ) -> Result<(), CaddyError> {
        let doc = DocId::parse(doc)?;
        if let Some(s) = since {
            parse_version(s)?;
        }
        let _permit = self.watch_permit()?;
        let node = self.node();
        authorize_read(&self.barrier_then_refresh(asker).await?)?;
        let sm = node.state_machine();
        // Subscribe before reading, so nothing committed falls in between.
        let mut live = sm.subscribe_docs();
        let mut presence = self.presence().subscribe();
        let fetch =
            caddy_core::docs::DocCall::Fetch { doc: doc.to_string(), since: since.map(str::to_owned), at: None };
        let (answer, bytes) = sm.doc_read(tenant, &fetch)?;
        let DocAnswer::Fetched(fetched) = answer else {
            return Err(CaddyError::internal("unexpected fetch answer"));
        };
        let mut seq = fetched.seq;
        let catch_up = DocEvent::Update { seq, author: String::new(), stamp_ms: 0, version: fetched.version.clone() };
        send(out, &DocAnswer::Event(catch_up), &bytes, "").await?;
        send(out, &DocAnswer::Event(DocEvent::CaughtUp { seq, version: fetched.version }), &[], "").await?;
        let (t, d) = (tenant.to_string(), doc.to_string());
        for p in self.presence().current(&t, &d) {
            send(out, &DocAnswer::Event(DocEvent::Presence(p)), &[], "").await?;
        }
        metrics::gauge!("caddy_doc_watches_active").increment(1.0);
        let mut shutdown = self.shutdown_signal();
        let recheck_every = crate::service::WATCH_RECHECK;
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + recheck_every, recheck_every);
        let result = async {
            loop {
                tokio::select! {
                    _ = recheck.tick() => self.recheck(asker, docs_read_allowed)?,
                    committed = live.recv() => match committed {
                        Ok(c) => {
                            if c.tenant != *tenant || c.doc != doc || (c.seq <= seq && !c.deleted) {
                                continue;
                            }
                            if c.deleted {
                                send(out, &DocAnswer::Event(DocEvent::Deleted), &[], "").await?;
                                return Ok(());
                            }
                            seq = c.seq;
                            let event = DocEvent::Update {
                                seq: c.seq,
                                author: c.author.clone(),
                                stamp_ms: c.stamp_ms,
                                version: hex::encode(&c.version),
                            };
                            send(out, &DocAnswer::Event(event), &c.update, "").await?;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Err(CaddyError::exhausted(format!(
                                "document watcher fell too far behind after change {seq}; resume from your version"
                            )));
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(CaddyError::unavailable("node shutting down; resume the watch elsewhere"));
                        }
                    },
                    msg = presence.recv() => match msg {
                        Ok(msg) => {
                            if msg.doc() != (t.as_str(), d.as_str()) {
                                continue;
                            }
                            let event = match msg {
                                PresenceMsg::Set(p) => DocEvent::Presence(p),
                                PresenceMsg::Gone { user, client, .. } => DocEvent::PresenceGone { user, client },
                            };
                            send(out, &DocAnswer::Event(event), &[], "").await?;
                        }
                        // Presence is ephemeral: a slow watcher skips some.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => {
                            return Err(CaddyError::unavailable("node shutting down; resume the watch elsewhere"));
                        }
                    },
                    _ = crate::run::stopped(&mut shutdown) => {
                        return Err(CaddyError::unavailable("node shutting down; resume the watch elsewhere"));
                    }
                }
            }
        }
        .await;
        metrics::gauge!("caddy_doc_watches_active").decrement(1.0);
        result
    }
}
