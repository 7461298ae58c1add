//! File requests: metadata calls proposed through Raft (as identity-checked
//! calls) or read after a read barrier, streamed uploads whose chunks are
//! stored and replicated before their metadata is proposed, and streamed
//! (ranged) downloads served from the blob store.
//!
//! Memory per transfer is bounded by a few chunks: an upload holds at most
//! [`REPLICATIONS_IN_FLIGHT`] chunks being stored and replicated plus the
//! one being read; a download holds one chunk.

use std::time::Duration;

use bytes::Bytes;
use caddy_core::files::{
    self, CHUNK_BYTES, ChunkRef, CommitTarget, FileAnswer, FileBounds, FileCall, FileId, FileOp, Grantee, ItemId,
};
use caddy_core::identity::api::Op;
use caddy_core::identity::{Action, Caller, Permission, Resource, ResourceKind, TenantId, authorize};
use caddy_core::{CaddyError, ClientSeq, ErrorCode, Reply, ReplyBody};
use caddy_wire::pb::{self, response::Body as Resp};
use caddy_wire::{FrameError, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;

use crate::accounts::now_ms;
use crate::service::{Asker, Service, local};

/// Largest payload slice in one download frame.
pub const PAYLOAD_CHUNK: usize = 1024 * 1024;
/// Chunks of one upload being replicated at once.
pub const REPLICATIONS_IN_FLIGHT: usize = 4;
/// Longest wait for the next chunk of an upload.
const CHUNK_READ_TIMEOUT: Duration = Duration::from_secs(60);

fn gone() -> CaddyError {
    CaddyError::unavailable("client went away")
}

fn frame(answer: Vec<u8>, payload: &[u8], more: bool, leader: &str) -> pb::Response {
    pb::Response {
        leader_client_addr: leader.to_owned(),
        body: Some(Resp::File(pb::FileResponse { answer, payload: payload.to_vec(), more })),
    }
}

fn encode(answer: &FileAnswer) -> Result<Vec<u8>, CaddyError> {
    serde_json::to_vec(answer).map_err(|e| CaddyError::internal(format!("encoding answer: {e}")))
}

async fn send<W: AsyncWrite + Unpin + Send>(out: &mut W, answer: &FileAnswer, leader: &str) -> Result<(), CaddyError> {
    write_frame(out, &frame(encode(answer)?, &[], false, leader)).await.map_err(|_| gone())
}

fn tenant_of(asker: &Asker) -> Result<TenantId, CaddyError> {
    asker.tenant.clone().ok_or_else(|| {
        CaddyError::invalid("files belong to a tenant: name one (--tenant, or the tenant of your credential)")
    })
}

fn authorize_files(asker: &Asker, action: Action) -> Result<(), CaddyError> {
    authorize(&asker.caller, asker.tenant.as_ref(), Permission::new(ResourceKind::Files, action), &Resource::Tenant)
}

/// A share-link token: shown once, stored only as its blake3.
fn new_link_token() -> (String, [u8; 32]) {
    let secret: [u8; 24] = rand::random();
    let token = format!("cl_{}", hex::encode(secret));
    let hash = *blake3::hash(token.as_bytes()).as_bytes();
    (token, hash)
}

fn link_hash(token: &str) -> Result<[u8; 32], CaddyError> {
    if !token.starts_with("cl_") || token.len() != 51 || !token[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CaddyError::invalid("not a share link token (cl_...)"));
    }
    Ok(*blake3::hash(token.as_bytes()).as_bytes())
}

fn created_id(reply: ReplyBody, what: &str) -> Result<u64, CaddyError> {
    match reply {
        ReplyBody::Created { id } => Ok(id),
        other => Err(CaddyError::internal(format!("unexpected reply to {what}: {other:?}"))),
    }
}

/// The file an applied upload commit created or added a version to.
fn committed_id(reply: ReplyBody, target: &CommitTarget) -> Result<FileId, CaddyError> {
    match (reply, target) {
        (ReplyBody::Created { id }, _) => Ok(FileId(id)),
        (_, CommitTarget::Version { file }) => Ok(*file),
        (other, _) => Err(CaddyError::internal(format!("unexpected reply to an upload: {other:?}"))),
    }
}

impl Service {
    /// Handles one file request: answer frame(s) to `out`; an upload reads
    /// its chunks from `input`.
    pub(crate) async fn file<W, R>(
        &self,
        req: pb::FileRequest,
        origin: Option<ClientSeq>,
        asker: &Asker,
        out: &mut W,
        input: &mut R,
    ) -> Result<(), CaddyError>
    where
        W: AsyncWrite + Unpin + Send,
        R: AsyncRead + Unpin + Send,
    {
        let call: FileCall = serde_json::from_slice(&req.call)
            .map_err(|e| CaddyError::invalid(format!("undecodable file call: {e}")))?;
        // A share link is its own credential.
        if let FileCall::Download { link: Some(token), file: None, version, offset, length } = &call {
            let hash = link_hash(token)?;
            return self.download(None, &Caller::Anonymous, None, Some(hash), *version, *offset, *length, out).await;
        }
        if matches!(asker.caller, Caller::Anonymous) {
            return Err(CaddyError::new(
                ErrorCode::Unauthenticated,
                "no credential presented: log in (caddyctl login) or use an API key",
            ));
        }
        let tenant = tenant_of(asker)?;
        match call {
            FileCall::Upload { name, folder, file, size, media_type, tags, chunks } => {
                let target = match file {
                    Some(f) => CommitTarget::Version { file: FileId::parse(&f)? },
                    None => {
                        let name = files::item_name(&name)?;
                        let media_type = if media_type.is_empty() {
                            files::guess_media_type(&name).to_owned()
                        } else {
                            files::media_type(&media_type)?
                        };
                        CommitTarget::New {
                            folder: files::parse_folder(folder.as_deref())?,
                            media_type,
                            tags: files::file_tags(&tags)?,
                            name,
                        }
                    }
                };
                let timeout = Duration::from_secs(self.files_config().upload_timeout_secs);
                let upload = self.upload(&tenant, asker, origin, target, size, &chunks, out, input);
                match tokio::time::timeout(timeout, upload).await {
                    Ok(r) => r,
                    Err(_) => Err(CaddyError::unavailable(format!(
                        "upload not completed within {timeout:?}; resume it (chunks already sent are kept)"
                    ))),
                }
            }
            FileCall::Download { file, link: None, version, offset, length } => {
                authorize_files(asker, Action::Read)?;
                let file = FileId::parse(file.as_deref().unwrap_or_default())?;
                self.download(Some(&tenant), &asker.caller, Some(file), None, version, offset, length, out).await?;
                if offset == 0 {
                    // Opening a file puts it in the caller's recent list.
                    let (node, cmd) = (self.node().clone(), asker.call(Op::File(FileOp::Touch { file })));
                    tokio::spawn(async move {
                        if let Err(e) = node.propose(None, cmd).await {
                            tracing::debug!(error = %e, "recent-files touch not recorded");
                        }
                    });
                }
                Ok(())
            }
            FileCall::Download { .. } => Err(CaddyError::invalid("download names either a file or a link, not both")),
            call => {
                let timeout = Duration::from_millis(self.limits().request_timeout_ms);
                let answer = match tokio::time::timeout(timeout, self.file_unary(call, origin, &tenant, asker)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(CaddyError::unavailable(format!(
                            "request not completed within {timeout:?}; retry"
                        )));
                    }
                };
                send(out, &answer, &self.leader_client_addr()).await
            }
        }
    }

    fn file_bounds(&self) -> FileBounds {
        let f = self.files_config();
        FileBounds { max_file_bytes: f.max_file_bytes, max_versions: f.max_versions }
    }

    async fn read_files(&self, tenant: &TenantId, asker: &Asker, call: &FileCall) -> Result<FileAnswer, CaddyError> {
        let node = self.node();
        node.read_barrier().await?;
        node.state_machine().file_read(tenant, &asker.caller, call, now_ms())
    }

    async fn info_of(&self, tenant: &TenantId, asker: &Asker, id: String) -> Result<FileAnswer, CaddyError> {
        self.read_files(tenant, asker, &FileCall::Info { id }).await
    }

    async fn file_unary(
        &self,
        call: FileCall,
        origin: Option<ClientSeq>,
        tenant: &TenantId,
        asker: &Asker,
    ) -> Result<FileAnswer, CaddyError> {
        if call.is_read() {
            authorize_files(asker, Action::Read)?;
            return self.read_files(tenant, asker, &call).await;
        }
        let node = self.node();
        match call {
            FileCall::Mkdir { name, parent } => {
                let parent = files::parse_folder(parent.as_deref())?;
                let id = created_id(
                    node.propose(origin, asker.call(Op::File(FileOp::MkDir { name, parent }))).await?,
                    "mkdir",
                )?;
                self.info_of(tenant, asker, files::FolderId(id).to_string()).await
            }
            FileCall::Mv { id, to } => {
                let item = ItemId::parse(&id)?;
                node.propose(origin, asker.call(Op::File(FileOp::Move { item, to: files::parse_folder(Some(&to))? })))
                    .await?;
                self.info_of(tenant, asker, id).await
            }
            FileCall::Rename { id, name } => {
                let item = ItemId::parse(&id)?;
                node.propose(origin, asker.call(Op::File(FileOp::Rename { item, name }))).await?;
                self.info_of(tenant, asker, id).await
            }
            FileCall::Tags { file, tags } => {
                let f = FileId::parse(&file)?;
                node.propose(origin, asker.call(Op::File(FileOp::SetTags { file: f, tags }))).await?;
                self.info_of(tenant, asker, f.to_string()).await
            }
            FileCall::RestoreVersion { file, version } => {
                let f = FileId::parse(&file)?;
                node.propose(
                    origin,
                    asker.call(Op::File(FileOp::RestoreVersion { file: f, version, bounds: self.file_bounds() })),
                )
                .await?;
                self.info_of(tenant, asker, f.to_string()).await
            }
            FileCall::Share { file, with, access, expires_ms } => {
                let f = FileId::parse(&file)?;
                let grantee = Grantee::parse(&with)?;
                node.propose(origin, asker.call(Op::File(FileOp::Share { file: f, grantee, access, expires_ms })))
                    .await?;
                self.read_files(tenant, asker, &FileCall::Shares { file: f.to_string() }).await
            }
            FileCall::Unshare { file, with } => {
                let f = FileId::parse(&file)?;
                node.propose(
                    origin,
                    asker.call(Op::File(FileOp::Unshare { file: f, grantee: Grantee::parse(&with)? })),
                )
                .await?;
                self.read_files(tenant, asker, &FileCall::Shares { file: f.to_string() }).await
            }
            FileCall::Link { file, expires_ms } => {
                let f = FileId::parse(&file)?;
                let (token, token_hash) = new_link_token();
                let id = created_id(
                    node.propose(origin, asker.call(Op::File(FileOp::Link { file: f, token_hash, expires_ms })))
                        .await?,
                    "link",
                )?;
                match self.read_files(tenant, asker, &FileCall::Links { file: f.to_string() }).await? {
                    FileAnswer::Links { links } => links
                        .into_iter()
                        .find(|l| l.id == id)
                        .map(|link| FileAnswer::Link { link, token: Some(token) })
                        .ok_or_else(|| CaddyError::internal("link not found after creating it")),
                    other => Err(CaddyError::internal(format!("unexpected links answer: {other:?}"))),
                }
            }
            FileCall::Unlink { file, link } => {
                node.propose(origin, asker.call(Op::File(FileOp::Unlink { file: FileId::parse(&file)?, link })))
                    .await?;
                Ok(FileAnswer::Done)
            }
            FileCall::Favorite { file } => {
                let f = FileId::parse(&file)?;
                node.propose(origin, asker.call(Op::File(FileOp::Favorite { file: f, on: true }))).await?;
                self.info_of(tenant, asker, f.to_string()).await
            }
            FileCall::Unfavorite { file } => {
                let f = FileId::parse(&file)?;
                node.propose(origin, asker.call(Op::File(FileOp::Favorite { file: f, on: false }))).await?;
                self.info_of(tenant, asker, f.to_string()).await
            }
            FileCall::Rm { id } => {
                node.propose(origin, asker.call(Op::File(FileOp::Trash { item: ItemId::parse(&id)? }))).await?;
                Ok(FileAnswer::Done)
            }
            FileCall::Restore { id } => {
                let item = ItemId::parse(&id)?;
                node.propose(origin, asker.call(Op::File(FileOp::Restore { item }))).await?;
                match item {
                    ItemId::Doc(_) => Ok(FileAnswer::Done),
                    _ => self.info_of(tenant, asker, id).await,
                }
            }
            FileCall::Purge { id } => {
                node.propose(origin, asker.call(Op::File(FileOp::Purge { item: ItemId::parse(&id)? }))).await?;
                Ok(FileAnswer::Done)
            }
            other => Err(CaddyError::internal(format!("file call {other:?} routed as a write"))),
        }
    }

    /// Receives an upload: answers which chunks are needed, stores and
    /// replicates each one as it arrives, makes sure a majority holds the
    /// ones it already had, then proposes the metadata.
    #[allow(clippy::too_many_arguments)]
    async fn upload<W, R>(
        &self,
        tenant: &TenantId,
        asker: &Asker,
        origin: Option<ClientSeq>,
        target: CommitTarget,
        size: u64,
        chunk_hex: &[String],
        out: &mut W,
        input: &mut R,
    ) -> Result<(), CaddyError>
    where
        W: AsyncWrite + Unpin + Send,
        R: AsyncRead + Unpin + Send,
    {
        authorize_files(asker, Action::Write)?;
        let bounds = self.file_bounds();
        if size > bounds.max_file_bytes {
            return Err(CaddyError::exhausted(format!(
                "a file of {size} bytes exceeds the limit of {} bytes",
                bounds.max_file_bytes
            )));
        }
        let expected = size.div_ceil(u64::from(CHUNK_BYTES));
        if chunk_hex.len() as u64 != expected {
            return Err(CaddyError::invalid(format!(
                "{size} bytes make {expected} chunks of {CHUNK_BYTES} bytes; the call lists {}",
                chunk_hex.len()
            )));
        }
        let mut chunks = Vec::with_capacity(chunk_hex.len());
        for (i, h) in chunk_hex.iter().enumerate() {
            let start = i as u64 * u64::from(CHUNK_BYTES);
            let len = (size - start).min(u64::from(CHUNK_BYTES)) as u32;
            chunks.push(ChunkRef { hash: files::parse_hash(h)?, len });
        }
        let node = self.node();
        node.read_barrier().await?;
        // A retry of an upload whose commit applied but whose answer was
        // lost: answer as the first attempt would have, before the precheck
        // (which would now see the name taken) judges it as new.
        if let Some(origin) = origin
            && let Some(Reply(applied)) =
                node.state_machine().applied_reply(&asker.session_scope(), origin).map_err(local)?
        {
            let id = committed_id(applied?, &target)?;
            let answer = self.info_of(tenant, asker, id.to_string()).await?;
            return send(out, &answer, &self.leader_client_addr()).await;
        }
        node.state_machine().file_commit_precheck(tenant, &asker.caller, &target, size, bounds)?;

        // Each distinct chunk once; the ones this node holds are not sent again.
        let mut distinct: Vec<[u8; 32]> = Vec::new();
        let mut first_index = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, c) in chunks.iter().enumerate() {
            if seen.insert(c.hash) {
                distinct.push(c.hash);
                first_index.push(i as u32);
            }
        }
        let blobs = self.blobs();
        let held = blobs.have_locally(tenant, &distinct).await?;
        let need: Vec<u32> = first_index.iter().zip(&held).filter(|(_, h)| !**h).map(|(i, _)| *i).collect();
        let already: Vec<[u8; 32]> = distinct.iter().zip(&held).filter(|(_, h)| **h).map(|(d, _)| *d).collect();
        send(out, &FileAnswer::Need { chunks: need.clone() }, "").await?;
        metrics::counter!("caddy_file_upload_chunks_skipped_total").increment(already.len() as u64);

        let limit = self.limits().max_frame_bytes;
        let mut replicating: JoinSet<Result<(), CaddyError>> = JoinSet::new();
        for want in need {
            let frame =
                match tokio::time::timeout(CHUNK_READ_TIMEOUT, read_frame::<pb::FileChunk, _>(input, limit)).await {
                    Ok(Ok(f)) => f,
                    Ok(Err(FrameError::Closed)) | Ok(Err(FrameError::Io(_))) => {
                        return Err(CaddyError::unavailable(
                            "upload interrupted; send the same upload again to resume (chunks received are kept)",
                        ));
                    }
                    Ok(Err(e)) => return Err(CaddyError::invalid(format!("bad upload chunk: {e}"))),
                    Err(_) => return Err(CaddyError::unavailable("no upload chunk within 60 s; resume the upload")),
                };
            let expected = chunks[want as usize];
            if frame.index != want {
                return Err(CaddyError::invalid(format!("expected chunk {want}, got chunk {}", frame.index)));
            }
            if frame.data.len() != expected.len as usize || *blake3::hash(&frame.data).as_bytes() != expected.hash {
                return Err(CaddyError::invalid(format!(
                    "chunk {want} does not match the hash and length the upload announced"
                )));
            }
            let data = Bytes::from(frame.data);
            while replicating.len() >= REPLICATIONS_IN_FLIGHT {
                if let Some(done) = replicating.join_next().await {
                    done.map_err(|e| CaddyError::internal(format!("replication task: {e}")))??;
                }
            }
            // Storing here and replicating overlap with reading the next chunk.
            let (blobs, tenant) = (blobs.clone(), tenant.clone());
            replicating.spawn(async move {
                blobs.store_local(&tenant, expected.hash, data.clone()).await?;
                blobs.replicate(&tenant, expected.hash, data).await
            });
        }
        while let Some(done) = replicating.join_next().await {
            done.map_err(|e| CaddyError::internal(format!("replication task: {e}")))??;
        }
        blobs.ensure_majority(tenant, &already).await?;

        let content_hash = files::content_hash(&chunks);
        let op = FileOp::Commit { target: target.clone(), size, content_hash, chunks, bounds };
        let reply = node.propose(origin, asker.call(Op::File(op))).await?;
        let id = committed_id(reply, &target)?;
        metrics::counter!("caddy_file_upload_bytes_total").increment(size);
        let answer = self.info_of(tenant, asker, id.to_string()).await?;
        send(out, &answer, &self.leader_client_addr()).await
    }

    /// Streams `offset..offset+length` of a file version.
    #[allow(clippy::too_many_arguments)]
    async fn download<W: AsyncWrite + Unpin + Send>(
        &self,
        tenant: Option<&TenantId>,
        caller: &Caller,
        file: Option<FileId>,
        link: Option<[u8; 32]>,
        version: Option<u64>,
        offset: u64,
        length: Option<u64>,
        out: &mut W,
    ) -> Result<(), CaddyError> {
        let node = self.node();
        node.read_barrier().await?;
        let (tenant, info, found) =
            node.state_machine().file_download(tenant, caller, file, link, version, now_ms())?;
        if offset > found.size {
            return Err(CaddyError::invalid(format!("offset {offset} is beyond the end ({} bytes)", found.size)));
        }
        let length = length.unwrap_or(u64::MAX).min(found.size - offset);
        let answer = FileAnswer::Download { file: info, version: found.version, offset, length };
        write_frame(out, &frame(encode(&answer)?, &[], length > 0, &self.leader_client_addr()))
            .await
            .map_err(|_| gone())?;
        let end = offset + length;
        let blobs = self.blobs();
        let mut pos = 0u64;
        for chunk in &found.chunks {
            let (start, stop) = (pos, pos + u64::from(chunk.len));
            pos = stop;
            if stop <= offset || start >= end {
                continue;
            }
            let data = blobs.read(&tenant, chunk.hash).await?;
            if data.len() != chunk.len as usize {
                return Err(CaddyError::internal(format!(
                    "chunk of {} bytes where {} were recorded",
                    data.len(),
                    chunk.len
                )));
            }
            let from = (offset.max(start) - start) as usize;
            let to = (end.min(stop) - start) as usize;
            let mut slices = data[from..to].chunks(PAYLOAD_CHUNK).peekable();
            while let Some(slice) = slices.next() {
                let more = slices.peek().is_some() || stop < end;
                write_frame(out, &frame(Vec::new(), slice, more, "")).await.map_err(|_| gone())?;
            }
            metrics::counter!("caddy_file_download_bytes_total").increment((to - from) as u64);
        }
        Ok(())
    }
}
