//! Drives the `caddyctl` binary: mostly against an in-process fake server
//! that speaks the client protocol with a tiny in-memory key-value map (exit
//! codes, output formats and error lines, without a real cluster), and at
//! the end against a real `caddyd dev` cluster (exit codes and JSON errors
//! from the real server, `--endpoint`, `--timeout`, failover from a killed
//! node, a write without a quorum; `cargo build --bins` first).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use caddy_client::file_api::{FileAnswer, FileCall, FileInfo, FolderInfo, LinkInfo, StorageUsage};
use caddy_client::identity::{AuditView, IdentityAnswer, IdentityCall, SessionView, UserView};
use caddy_wire::pb::{self, request::Body as Req, response::Body as Resp};
use caddy_wire::{read_frame, write_frame};
use tokio::sync::broadcast;

const CREDENTIAL: &str = "caddy_admin_cli_test";
const SESSION_TOKEN: &str = "cs_fake_session_token";
const PASSWORD: &str = "correct horse";

#[derive(Default)]
struct Store {
    kvs: BTreeMap<String, pb::KeyValue>,
    revision: u64,
    events: Vec<pb::WatchEvent>,
    /// Imported users (emails), in order.
    users: Vec<String>,
    /// Import batch sizes, in order.
    batches: Vec<usize>,
    /// `(credential, tenant)` of every identity request.
    identity_requests: Vec<(String, String)>,
    /// Uploaded files: record and bytes, by number.
    files: BTreeMap<u64, (FileInfo, Vec<u8>)>,
    /// `(credential, op)` of every file request.
    file_requests: Vec<(String, String)>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<pb::WatchEvent>,
}

fn resp(body: Resp) -> pb::Response {
    pb::Response { leader_client_addr: String::new(), body: Some(body) }
}

fn error(code: pb::ErrorCode, message: &str, current_revision: Option<u64>) -> pb::Response {
    resp(Resp::Error(pb::Error {
        code: code as i32,
        message: message.into(),
        current_revision,
        leader_hint: None,
        retry_after_ms: None,
    }))
}

fn identity_answer(answer: IdentityAnswer) -> Vec<pb::Response> {
    let bytes = serde_json::to_vec(&answer).unwrap();
    vec![resp(Resp::Identity(pb::IdentityResponse { answer: bytes }))]
}

fn user_view(id: usize, email: &str) -> UserView {
    UserView {
        id: format!("user-{id}"),
        email: email.into(),
        display_name: format!("User, {id}"),
        disabled: false,
        roles: vec!["viewer".into()],
        teams: vec![],
        has_password: false,
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
    }
}

/// A tiny identity service: login/logout with one password, user import and
/// listing, a five-entry audit trail (broken for tenant `broken`).
fn identity(shared: &Shared, req: &pb::Request, call: IdentityCall) -> Vec<pb::Response> {
    let mut store = shared.store.lock().unwrap();
    store.identity_requests.push((req.credential.clone(), req.tenant.clone()));
    let anonymous_ok = matches!(call, IdentityCall::Login { .. } | IdentityCall::InviteAccept { .. });
    let known = req.credential == CREDENTIAL || req.credential == SESSION_TOKEN;
    if !(known || anonymous_ok && req.credential.is_empty()) {
        return vec![error(pb::ErrorCode::Unauthenticated, "bad credential", None)];
    }
    match call {
        IdentityCall::Login { email, password, ttl_seconds } => {
            if req.tenant != "acme" || password != PASSWORD {
                return vec![error(pb::ErrorCode::Unauthenticated, "invalid email or password", None)];
            }
            let created_ms = 1_700_000_000_000;
            identity_answer(IdentityAnswer::Session {
                tenant: req.tenant.clone(),
                token: SESSION_TOKEN.into(),
                session: SessionView {
                    id: "session-9".into(),
                    user: format!("user-1 ({email})"),
                    created_ms,
                    expires_ms: created_ms + ttl_seconds.unwrap_or(3600) * 1000,
                    terminated_ms: None,
                    state: "active".into(),
                },
            })
        }
        IdentityCall::Logout if req.credential == SESSION_TOKEN => {
            identity_answer(IdentityAnswer::Done { message: "session.terminate: done".into() })
        }
        IdentityCall::Logout => vec![error(pb::ErrorCode::InvalidArgument, "not a session", None)],
        IdentityCall::UserImport { users } => {
            if let Some(k) = users.iter().position(|u| u.email.contains("bad")) {
                let message = format!("user #{}: invalid email", k + 1);
                return vec![error(pb::ErrorCode::InvalidArgument, &message, None)];
            }
            store.batches.push(users.len());
            let first = store.users.len() + 1;
            store.users.extend(users.into_iter().map(|u| u.email));
            let created = (first..=store.users.len()).map(|i| format!("user-{i}")).collect();
            identity_answer(IdentityAnswer::Imported { created })
        }
        IdentityCall::UserList { start_after, limit, .. } => {
            let after: usize = start_after.trim_start_matches("user-").parse().unwrap_or(0);
            let all: Vec<UserView> =
                store.users.iter().enumerate().map(|(i, email)| user_view(i + 1, email)).skip(after).collect();
            let limit = limit as usize;
            identity_answer(IdentityAnswer::Users {
                more: all.len() > limit,
                users: all.into_iter().take(limit).collect(),
            })
        }
        // Like the server, one request looks at a bounded slice of the
        // chain (here two entries) and says where to continue.
        IdentityCall::AuditList { after_seq, limit, actor, .. } => {
            let mut entries = Vec::new();
            let mut cursor = after_seq;
            let mut more = false;
            // Tenant "gappy" lost entry 3 (pruned while an export ran).
            let gappy = req.tenant == "gappy";
            for view in (after_seq + 1..=5).filter(|seq| !(gappy && *seq == 3)).map(|seq| AuditView {
                seq,
                tenant: Some(req.tenant.clone()),
                actor: "operator".into(),
                action: "user.create".into(),
                resource: format!("user-{seq}"),
                outcome: "ok".into(),
                stamp_ms: 1_700_000_000_000 + seq * 1000,
                request_id: format!("r{seq}"),
                client_addr: String::new(),
                prev_hash: format!("h{}", seq - 1),
                hash: format!("h{seq}"),
            }) {
                if view.seq - after_seq > 2 {
                    more = true;
                    break;
                }
                if actor.as_ref().is_none_or(|a| *a == view.actor) {
                    if entries.len() == limit as usize {
                        more = true;
                        break;
                    }
                    entries.push(view);
                }
                cursor += 1;
            }
            identity_answer(IdentityAnswer::Audit { entries, more, next_after_seq: more.then_some(cursor) })
        }
        // Tenant "pruned" has a checkpoint at 2 and verifies in two pages.
        IdentityCall::AuditVerify { after_seq, after_hash } => {
            let pruned = req.tenant == "pruned";
            let checkpoint = pruned.then(|| caddy_client::identity::CheckpointView {
                seq: 2,
                hash: "c2".repeat(32),
                stamp_ms: 1_700_000_000_000,
                pruned_at_ms: 1_700_000_100_000,
            });
            let (from, entries, last_seq, more) = match (pruned, after_seq) {
                (false, _) => (0, 5, 5, false),
                (true, 0) => (2, 2, 4, true),
                (true, 4) if after_hash == "a4" => (4, 1, 5, false),
                _ => return vec![error(pb::ErrorCode::InvalidArgument, "unexpected page", None)],
            };
            identity_answer(IdentityAnswer::Verified {
                tenant: Some(req.tenant.clone()),
                entries,
                head_seq: 5,
                broken: (req.tenant == "broken").then(|| caddy_core::identity::BrokenLink {
                    seq: 3,
                    index: 2,
                    reason: "hash mismatch".into(),
                }),
                checkpoint,
                after_seq: from,
                last_seq,
                last_hash: format!("a{last_seq}"),
                more,
            })
        }
        _ => vec![error(pb::ErrorCode::InvalidArgument, "unsupported by the fake", None)],
    }
}

fn answer(shared: &Shared, req: pb::Request) -> Vec<pb::Response> {
    if let Some(Req::Identity(i)) = &req.body {
        return match serde_json::from_slice::<IdentityCall>(&i.call) {
            Ok(call) => identity(shared, &req, call),
            Err(e) => vec![error(pb::ErrorCode::InvalidArgument, &e.to_string(), None)],
        };
    }
    if req.credential != CREDENTIAL {
        return vec![error(pb::ErrorCode::Unauthenticated, "bad credential", None)];
    }
    let mut store = shared.store.lock().unwrap();
    let revision = store.revision;
    let record = |store: &mut Store, kind: pb::watch_event::Kind, kv: pb::KeyValue| {
        let event = pb::WatchEvent { kind: kind as i32, revision: store.revision, kv: Some(kv) };
        store.events.push(event.clone());
        let _ = shared.events.send(event);
    };
    match req.body {
        Some(Req::Put(p)) => {
            let current = store.kvs.get(&p.key).map_or(0, |kv| kv.mod_revision);
            if let Some(expected) = p.if_revision
                && expected != current
            {
                return vec![error(pb::ErrorCode::FailedPrecondition, "revision mismatch", Some(current))];
            }
            store.revision += 1;
            let rev = store.revision;
            let previous = store.kvs.get(&p.key).cloned();
            let kv = pb::KeyValue {
                key: p.key.clone(),
                value: p.value,
                create_revision: previous.as_ref().map_or(rev, |kv| kv.create_revision),
                mod_revision: rev,
                version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            };
            store.kvs.insert(p.key, kv.clone());
            record(&mut store, pb::watch_event::Kind::Put, kv);
            vec![resp(Resp::Put(pb::PutResponse { revision: rev, previous, previous_value_omitted: false }))]
        }
        Some(Req::Get(g)) => vec![resp(Resp::Get(pb::GetResponse { kv: store.kvs.get(&g.key).cloned(), revision }))],
        Some(Req::Delete(d)) => match store.kvs.remove(&d.key) {
            Some(kv) => {
                store.revision += 1;
                let rev = store.revision;
                record(&mut store, pb::watch_event::Kind::Delete, pb::KeyValue { key: kv.key, ..Default::default() });
                vec![resp(Resp::Delete(pb::DeleteResponse { revision: rev, deleted: true }))]
            }
            None => vec![resp(Resp::Delete(pb::DeleteResponse { revision, deleted: false }))],
        },
        Some(Req::List(l)) => {
            let limit = if l.limit == 0 { 100 } else { l.limit as usize };
            let mut matching =
                store.kvs.values().filter(|kv| kv.key.starts_with(&l.prefix) && kv.key > l.start_after).cloned();
            let kvs: Vec<_> = matching.by_ref().take(limit).collect();
            let more = matching.next().is_some();
            vec![resp(Resp::List(pb::ListResponse { kvs, more, revision }))]
        }
        Some(Req::Status(_)) => vec![resp(Resp::Status(pb::StatusResponse {
            cluster_node: 1,
            term: 3,
            leader: Some(1),
            commit_index: 10,
            applied_index: 10,
            revision,
            last_log_index: 10,
            snapshot_index: None,
            render: "off: disabled in configuration (render.enabled = false)".into(),
            cluster_id: "c0ffee".into(),
            members: vec![pb::MemberStatus {
                id: 1,
                raft_addr: "127.0.0.1:7001".into(),
                client_addr: "127.0.0.1:7101".into(),
                admin_addr: String::new(),
                role: "voter".into(),
                leader: true,
                lag: Some(0),
                health: "healthy".into(),
                render: "off: disabled in configuration (render.enabled = false)".into(),
            }],
        }))],
        Some(Req::JoinToken(t)) => match pb::JoinTokenAction::try_from(t.action) {
            Ok(pb::JoinTokenAction::JoinTokenList) => vec![resp(Resp::JoinToken(pb::JoinTokenResponse {
                tokens: vec![pb::JoinTokenInfo {
                    id: 4,
                    created_at_ms: 1,
                    expires_at_ms: 2,
                    state: "used".into(),
                    used_by: 9,
                    ended_at_ms: 2,
                }],
                ..Default::default()
            }))],
            Ok(pb::JoinTokenAction::JoinTokenRevoke) => vec![resp(Resp::JoinToken(pb::JoinTokenResponse {
                id: if t.id != 0 { t.id } else { t.token.len() as u64 },
                ..Default::default()
            }))],
            _ => vec![resp(Resp::JoinToken(pb::JoinTokenResponse {
                token: format!("tok-{}", t.ttl_seconds),
                expires_at_ms: 1,
                id: 1,
                tokens: vec![],
            }))],
        },
        Some(Req::RotateCerts(_)) => vec![resp(Resp::RotateCerts(pb::RotateCertsResponse {
            members: vec![
                pb::RotatedMember { id: 1, generation: 3, error: String::new() },
                pb::RotatedMember { id: 2, generation: 0, error: "unavailable: no answer in time".into() },
            ],
        }))],
        Some(Req::AddNode(_)) => {
            vec![resp(Resp::Membership(pb::MembershipResponse { voters: vec![1, 2], learners: vec![] }))]
        }
        Some(Req::Backup(_)) => {
            let chunk = |data: &[u8], total, last| {
                resp(Resp::BackupChunk(pb::BackupChunk { total_bytes: total, data: data.to_vec(), last }))
            };
            vec![chunk(b"backup-", 11, false), chunk(b"data", 0, true)]
        }
        _ => vec![error(pb::ErrorCode::InvalidArgument, "unsupported by the fake", None)],
    }
}

/// The fake's one share link token (for `file-1`).
const LINK_TOKEN: &str = "cl_000000000000000000000000000000000000000000000001";
/// The fake lists folders `LIST_PAGE` entries at a time, whatever the limit.
const LIST_PAGE: usize = 2;

fn file_frame(answer: &FileAnswer, payload: &[u8], more: bool) -> pb::Response {
    let answer = if payload.is_empty() { serde_json::to_vec(answer).unwrap() } else { Vec::new() };
    resp(Resp::File(pb::FileResponse { answer, payload: payload.to_vec(), more }))
}

fn drawings() -> FolderInfo {
    FolderInfo {
        id: "folder-1".into(),
        name: "drawings".into(),
        parent: None,
        path: "/drawings".into(),
        created_by: "user-1".into(),
        created_ms: 1_700_000_000_000,
        deleted_ms: None,
    }
}

/// A tiny file service: one folder (`folder-1`), uploads, ranged
/// downloads (by id or through [`LINK_TOKEN`]), paged listings, links and
/// usage. Everything else is refused.
async fn file_request(
    shared: &Shared,
    req: &pb::Request,
    call: FileCall,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Vec<pb::Response> {
    let op = serde_json::to_value(&call).unwrap()["op"].as_str().unwrap_or_default().to_string();
    shared.store.lock().unwrap().file_requests.push((req.credential.clone(), op));
    let anonymous_link = matches!(&call, FileCall::Download { link: Some(_), file: None, .. });
    if req.credential != CREDENTIAL && !anonymous_link {
        return vec![error(pb::ErrorCode::Unauthenticated, "bad credential", None)];
    }
    let one = |answer: FileAnswer| vec![file_frame(&answer, &[], false)];
    match call {
        FileCall::Upload { name, folder, file: None, size, media_type, tags, chunks } => {
            let need: Vec<u32> = (0..chunks.len() as u32).collect();
            if write_frame(send, &file_frame(&FileAnswer::Need { chunks: need.clone() }, &[], false)).await.is_err() {
                return vec![];
            }
            let mut bytes = Vec::new();
            for index in need {
                let chunk = read_frame::<pb::FileChunk, _>(recv, 4 << 20).await.unwrap();
                assert_eq!(chunk.index, index);
                bytes.extend(chunk.data);
            }
            assert_eq!(bytes.len() as u64, size);
            let mut store = shared.store.lock().unwrap();
            let n = store.files.len() as u64 + 1;
            let path = match folder.as_deref() {
                Some("folder-1") => format!("/drawings/{name}"),
                _ => format!("/{name}"),
            };
            let info = FileInfo {
                id: format!("file-{n}"),
                name,
                folder,
                path,
                size,
                content_hash: format!("{:064x}", bytes.len()),
                media_type: if media_type.is_empty() { "application/octet-stream".into() } else { media_type },
                tags,
                owner: "user-1".into(),
                created_by: "user-1".into(),
                created_ms: 1_700_000_000_000,
                modified_by: "user-1".into(),
                modified_ms: 1_700_000_000_000,
                version: 1,
                versions: 1,
                deleted_ms: None,
                access: "owner".into(),
                favorite: false,
            };
            store.files.insert(n, (info.clone(), bytes));
            one(FileAnswer::File(info))
        }
        FileCall::Download { file, link, version: _, offset, length } => {
            let id = match (file, link) {
                (Some(f), None) => f,
                (None, Some(token)) if token == LINK_TOKEN => "file-1".to_string(),
                _ => return vec![error(pb::ErrorCode::NotFound, "no such link", None)],
            };
            let store = shared.store.lock().unwrap();
            let Some((info, bytes)) = id.strip_prefix("file-").and_then(|n| store.files.get(&n.parse().ok()?)) else {
                return vec![error(pb::ErrorCode::NotFound, &format!("{id} not found"), None)];
            };
            let start = (offset as usize).min(bytes.len());
            let end = length.map_or(bytes.len(), |l| (start + l as usize).min(bytes.len()));
            let range = &bytes[start..end];
            let answer = FileAnswer::Download { file: info.clone(), version: 1, offset, length: range.len() as u64 };
            let mut frames = vec![file_frame(&answer, &[], !range.is_empty())];
            let count = range.chunks(100_000).count();
            for (i, piece) in range.chunks(100_000).enumerate() {
                frames.push(file_frame(&FileAnswer::Done, piece, i + 1 < count));
            }
            frames
        }
        FileCall::List { folder, after, limit: _ } => {
            let store = shared.store.lock().unwrap();
            let inside = folder.as_deref() == Some("folder-1");
            let mut entries: Vec<Result<FolderInfo, FileInfo>> = Vec::new();
            if !inside {
                entries.push(Ok(drawings()));
            }
            for (info, _) in store.files.values() {
                if (info.folder.as_deref() == Some("folder-1")) == inside {
                    entries.push(Err(info.clone()));
                }
            }
            let start: usize = after.map_or(0, |a| a.parse().unwrap());
            let end = (start + LIST_PAGE).min(entries.len());
            let (mut folders, mut files) = (Vec::new(), Vec::new());
            for entry in &entries[start..end] {
                match entry {
                    Ok(f) => folders.push(f.clone()),
                    Err(f) => files.push(f.clone()),
                }
            }
            let next = (end < entries.len()).then(|| end.to_string());
            one(FileAnswer::List { folder: inside.then(drawings), folders, files, next })
        }
        FileCall::Link { file, expires_ms } => {
            let link = LinkInfo { id: 1, file, expires_ms, created_by: "user-1".into(), created_ms: 1_700_000_000_000 };
            one(FileAnswer::Link { link, token: Some(LINK_TOKEN.into()) })
        }
        FileCall::Usage => {
            let store = shared.store.lock().unwrap();
            let bytes: u64 = store.files.values().map(|(f, _)| f.size).sum();
            one(FileAnswer::Usage(StorageUsage {
                used_bytes: bytes,
                max_bytes: 4 * bytes,
                files: store.files.len() as u64,
                versions: store.files.len() as u64,
                file_bytes: bytes,
                trash_bytes: 0,
                folders: 1,
            }))
        }
        FileCall::Rm { .. } => one(FileAnswer::Done),
        _ => vec![error(pb::ErrorCode::InvalidArgument, "unsupported by the fake", None)],
    }
}

async fn handle(shared: Arc<Shared>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(req) = read_frame::<pb::Request, _>(&mut recv, 1 << 20).await else {
        return;
    };
    if let Some(Req::File(f)) = &req.body {
        let responses = match serde_json::from_slice::<FileCall>(&f.call) {
            Ok(call) => file_request(&shared, &req, call, &mut send, &mut recv).await,
            Err(e) => vec![error(pb::ErrorCode::InvalidArgument, &e.to_string(), None)],
        };
        for response in responses {
            if write_frame(&mut send, &response).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
        let _ = send.stopped().await;
        return;
    }
    if let Some(Req::Watch(w)) = &req.body {
        let (backlog, mut live) = {
            let store = shared.store.lock().unwrap();
            let live = shared.events.subscribe();
            let backlog: Vec<_> = if w.from_revision == 0 {
                Vec::new()
            } else {
                store.events.iter().filter(|e| e.revision >= w.from_revision).cloned().collect()
            };
            (backlog, live)
        };
        let prefix = w.prefix.clone();
        let matches = |e: &pb::WatchEvent| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix));
        for event in backlog.into_iter().filter(|e| matches(e)) {
            if write_frame(&mut send, &resp(Resp::WatchEvent(event))).await.is_err() {
                return;
            }
        }
        while let Ok(event) = live.recv().await {
            if matches(&event) && write_frame(&mut send, &resp(Resp::WatchEvent(event))).await.is_err() {
                return;
            }
        }
        return;
    }
    for response in answer(&shared, req) {
        if write_frame(&mut send, &response).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

struct Fake {
    dir: tempfile::TempDir,
    shared: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start() -> Fake {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let ca = caddy_wire::tls::generate_ca().unwrap();
        let node =
            caddy_wire::tls::issue_node_cert(&ca, caddy_wire::tls::NodeCertName { id: 1, generation: 1 }, &[]).unwrap();
        let tls = caddy_wire::tls::server_config(&node, &[caddy_wire::ALPN]).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap()
        };
        let addr = endpoint.local_addr().unwrap();
        let shared = Arc::new(Shared { store: Mutex::new(Store::default()), events: broadcast::channel(1024).0 });
        let server_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            let shared = server_shared;
            while let Some(incoming) = endpoint.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(handle(Arc::clone(&shared), send, recv));
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(
            dir.path().join("client.toml"),
            format!("endpoints = [\"{addr}\"]\nca_cert = \"ca.pem\"\ncredential = \"{CREDENTIAL}\"\n"),
        )
        .unwrap();
        Fake { dir, shared, _runtime: runtime }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_caddyctl"));
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("CADDY_CONFIG")
            .env_remove("CADDY_TENANT")
            .env_remove("CADDY_CREDENTIALS")
            .env_remove("CADDY_PASSWORD");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status.code(), stderr(&o));
    stdout(&o)
}

fn fails(o: Output) -> String {
    fails_with(o, 1)
}

/// Exit code `code` and exactly one `error:` line on stderr; returns it.
fn fails_with(o: Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err.trim_end().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn kv_round_trip() {
    let fake = Fake::start();
    assert_eq!(ok(fake.run(&["kv", "put", "a", "hello"])), "OK revision=1\n");
    assert_eq!(ok(fake.run(&["kv", "get", "a"])), "hello\n");
    assert_eq!(ok(fake.run(&["kv", "get", "a", "--serializable"])), "hello\n");
    let got = json(&ok(fake.run(&["--json", "kv", "get", "a"])));
    assert_eq!(got["key"], "a");
    assert_eq!(got["value"], "hello");
    assert_eq!(got["mod_revision"], 1);
    assert_eq!(got["version"], 1);

    let put = json(&ok(fake.run(&["kv", "put", "a", "again", "--json", "--if-revision", "1"])));
    assert_eq!(put["revision"], 2);
    assert_eq!(put["previous"]["value"], "hello");
    let err = fails(fake.run(&["kv", "put", "a", "x", "--if-revision", "1"]));
    assert_eq!(err, "error: failed_precondition: revision mismatch (current revision 2)");

    assert_eq!(fails(fake.run(&["kv", "get", "nokey"])), "error: key not found: nokey");
    assert!(fake.run(&["kv", "get", "nokey"]).stdout.is_empty());

    // With --json the failure is also on stdout, as one object a script reads.
    let o = fake.run(&["--json", "kv", "get", "nokey"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        json(&stdout(&o)),
        serde_json::json!({"error": {"code": "not_found", "message": "key not found: nokey", "outcome": "not_applied", "retryable": false}})
    );
    let o = fake.run(&["--json", "kv", "put", "a", "x", "--if-revision", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let error = &json(&stdout(&o))["error"];
    assert_eq!(
        (error["code"].as_str(), error["outcome"].as_str(), error["current_revision"].as_u64()),
        (Some("failed_precondition"), Some("not_applied"), Some(2)),
        "{error}"
    );
    assert_eq!(error["message"], "failed_precondition: revision mismatch (current revision 2)");

    assert_eq!(ok(fake.run(&["kv", "del", "a"])), "deleted revision=3\n");
    let del = json(&ok(fake.run(&["--json", "kv", "del", "a"])));
    assert_eq!(del["deleted"], false);
}

#[test]
fn list_pages_with_all() {
    let fake = Fake::start();
    for key in ["p/1", "p/2", "p/3", "q/1"] {
        ok(fake.run(&["kv", "put", key, "v"]));
    }
    let one_page = fake.run(&["kv", "list", "p/", "--limit", "2"]);
    let text = ok(one_page);
    assert_eq!(text.lines().count(), 3, "{text}");
    let all = json(&ok(fake.run(&["--json", "kv", "list", "p/", "--limit", "2", "--all"])));
    let keys: Vec<_> =
        all["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, ["p/1", "p/2", "p/3"]);
    assert_eq!(all["more"], false);
    let text = ok(fake.run(&["kv", "list"]));
    assert!(text.starts_with("KEY  MOD REV  VERSION  VALUE\np/1  1        1        v\n"), "{text}");
}

#[test]
fn cluster_commands() {
    let fake = Fake::start();
    let text = ok(fake.run(&["cluster", "status"]));
    assert!(text.contains("term:           3\n"), "{text}");
    assert!(text.contains("1   127.0.0.1:7001  127.0.0.1:7101  voter  *       0    healthy"), "{text}");
    let status = json(&ok(fake.run(&["cluster", "status", "--json"])));
    assert_eq!(status["members"][0]["role"], "voter");
    assert!(text.contains("cluster id:     c0ffee\n"), "{text}");
    assert_eq!(status["cluster_id"], "c0ffee");
    assert_eq!(ok(fake.run(&["cluster", "join-token", "--ttl", "2m"])), "tok-120\n");
    assert_eq!(ok(fake.run(&["cluster", "join-token"])), "tok-900\n");
    let list = ok(fake.run(&["cluster", "join-token", "--list"]));
    assert!(list.starts_with("ID  STATE  CREATED") && list.contains("used") && list.contains(" 9 "), "{list}");
    let list = json(&ok(fake.run(&["cluster", "join-token", "--list", "--json"])));
    assert_eq!(list[0]["used_by"], 9);
    assert_eq!(ok(fake.run(&["cluster", "join-token", "--revoke", "4"])), "revoked join token 4\n");
    assert_eq!(ok(fake.run(&["cluster", "join-token", "--revoke", "caddyjoin.x.y"])), "revoked join token 13\n");
    let rotated = fake.run(&["cluster", "rotate-certs"]);
    assert!(!rotated.status.success(), "a partial rotation must fail the command");
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(stdout.contains("node 1: certificate generation 3") && stdout.contains("node 2: FAILED"), "{stdout}");
    assert!(String::from_utf8_lossy(&rotated.stderr).contains("node(s) 2"));
    assert_eq!(ok(fake.run(&["cluster", "add-node", "127.0.0.1:7003"])), "voters=1,2 learners=-\n");

    let out = fake.dir.path().join("backup.bin");
    let text = ok(fake.run(&["cluster", "backup", "-o", out.to_str().unwrap()]));
    assert_eq!(text, format!("wrote 11 bytes to {}\n", out.display()));
    assert_eq!(std::fs::read(&out).unwrap(), b"backup-data");
    assert!(!Path::new(&format!("{}.tmp", out.display())).exists());
    let backup = json(&ok(fake.run(&["--json", "cluster", "backup", "-o", out.to_str().unwrap()])));
    assert_eq!(backup["bytes"], 11);
}

#[test]
fn watch_prints_events_as_they_happen() {
    let fake = Fake::start();
    ok(fake.run(&["kv", "put", "w/old", "0"]));
    let mut child = fake
        .command(&["kv", "watch", "w/", "--from-revision", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/old=0 rev=1");
    ok(fake.run(&["kv", "put", "other", "x"]));
    ok(fake.run(&["kv", "put", "w/new", "1"]));
    ok(fake.run(&["kv", "del", "w/old"]));
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/new=1 rev=3");
    assert_eq!(lines.next().unwrap().unwrap(), "DELETE w/old rev=4");
    child.kill().unwrap();
    let _ = child.wait();

    // Without --from-revision: only events after the watch started.
    let mut child = fake.command(&["kv", "watch", "w/"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::sleep(std::time::Duration::from_millis(800));
    ok(fake.run(&["kv", "put", "w/later", "2"]));
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/later=2 rev=5");
    child.kill().unwrap();
    let _ = child.wait();

    let mut child =
        fake.command(&["--json", "kv", "watch", "w/", "--from-revision", "3"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = json(&lines.next().unwrap().unwrap());
    assert_eq!(
        (first["kind"].as_str(), first["key"].as_str(), first["revision"].as_u64()),
        (Some("PUT"), Some("w/new"), Some(3))
    );
    let second = json(&lines.next().unwrap().unwrap());
    assert_eq!(second["kind"], "DELETE");
    child.kill().unwrap();
    let _ = child.wait();

    // --timeout on a watch is how long to watch: it then ends, successfully.
    let watch = &["kv", "watch", "w/", "--from-revision", "3", "--timeout", "700ms"];
    let (o, took) = output_within(&mut fake.command(watch), std::time::Duration::from_secs(10));
    assert_eq!(ok(o), "PUT w/new=1 rev=3\nDELETE w/old rev=4\nPUT w/later=2 rev=5\n");
    assert!(took >= std::time::Duration::from_millis(700), "{took:?}");
}

/// Runs `cmd`, killing it if it is still running after `limit`; returns
/// its output and how long it ran.
fn output_within(cmd: &mut Command, limit: std::time::Duration) -> (Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}{}", stdout(&out), stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn bench_reports_json() {
    let fake = Fake::start();
    let report = json(&ok(fake.run(&[
        "--json",
        "bench",
        "kv",
        "--clients",
        "2",
        "--duration",
        "500ms",
        "--keys",
        "5",
        "--read-ratio",
        "0.5",
    ])));
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0);
    let text = ok(fake.run(&["bench", "kv", "--clients", "1", "--duration", "200ms", "--value-size", "8"]));
    assert!(text.starts_with("throughput: "), "{text}");
    assert!(text.contains(" ms  p99 "), "{text}");
}

#[test]
fn errors_are_one_line() {
    let fake = Fake::start();
    let err = fails(
        Command::new(env!("CARGO_BIN_EXE_caddyctl"))
            .args(["--config", "/nonexistent/c.toml", "cluster", "status"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("/nonexistent/c.toml"), "{err}");

    let bad = fake.dir.path().join("bad.toml");
    std::fs::write(&bad, "endpoints = [\"127.0.0.1:1\"]\nca_cert = \"ca.pem\"\ncredential = \"wrong\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["--config", bad.to_str().unwrap(), "--timeout", "300ms", "kv", "get", "k"])
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.starts_with("error: unavailable: "), "{err}");

    // Wrong credential against the live fake: a typed error, not retried.
    let wrong = fake.dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(fake.config()).unwrap().replace(CREDENTIAL, "nope");
    std::fs::write(&wrong, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["--config", wrong.to_str().unwrap(), "kv", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(fails(out), "error: unauthenticated: bad credential");

    let usage = fake.run(&["kv", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(usage.stdout.is_empty());
    let usage = fake.run(&["--json", "kv", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let error = &json(&stdout(&usage))["error"];
    assert_eq!(
        (error["code"].as_str(), error["message"].as_str()),
        (Some("usage"), Some("unrecognized subcommand 'frobnicate'"))
    );
    // Found after parsing, still a usage error.
    let err = fails_with(fake.run(&["user", "list", "--json", "--format", "csv"]), 2);
    assert!(err.contains("contradict"), "{err}");
    let help = fake.run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));

    // CADDY_CONFIG is honoured when --config is absent.
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["kv", "put", "env", "1"])
        .env("CADDY_CONFIG", fake.config())
        .output()
        .unwrap();
    assert_eq!(ok(out), "OK revision=1\n");
}

fn run_with_stdin(fake: &Fake, args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child =
        fake.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_saves_a_private_session_that_later_commands_use() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::start();
    let creds = fake.dir.path().join("credentials");

    let err = fails_with(fake.run(&["login", "--email", "a@x.io"]), 2);
    assert!(err.contains("login needs a tenant"), "{err}");
    let err = fails_with(fake.run(&["login", "--tenant", "acme", "--email", "a@x.io"]), 2);
    assert!(err.contains("--password-stdin"), "{err}");
    let err = fails(run_with_stdin(
        &fake,
        &["login", "--tenant", "acme", "--email", "a@x.io", "--password-stdin"],
        "wrong\n",
    ));
    assert_eq!(err, "error: unauthenticated: invalid email or password");
    assert!(!creds.exists());

    let text = ok(run_with_stdin(
        &fake,
        &["login", "--tenant", "acme", "--email", "a@x.io", "--password-stdin", "--ttl", "2h"],
        &format!("{PASSWORD}\n"),
    ));
    assert_eq!(
        text,
        format!(
            "logged in to tenant acme as a@x.io (session session-9, expires 2023-11-15 00:13:20 UTC); \
             credentials saved to {}\n",
            creds.display()
        )
    );
    assert!(!text.contains(SESSION_TOKEN));
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    let saved = std::fs::read_to_string(&creds).unwrap();
    assert!(saved.contains(&format!("credential = \"{SESSION_TOKEN}\"")) && saved.contains("tenant = \"acme\""));

    // The session and its tenant are used from now on; login itself went anonymous.
    ok(fake.run(&["user", "list"]));
    {
        let store = fake.shared.store.lock().unwrap();
        let sent: Vec<_> = store.identity_requests.iter().map(|(c, t)| (c.as_str(), t.as_str())).collect();
        assert_eq!(sent, [("", "acme"), ("", "acme"), (SESSION_TOKEN, "acme")]);
    }

    // Logging in again over a 0644 file, with CADDY_PASSWORD and --json: no token on stdout.
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = fake.command(&["--json", "login", "--email", "a@x.io"]).env("CADDY_PASSWORD", PASSWORD).output().unwrap();
    let text = ok(out);
    assert!(!text.contains(SESSION_TOKEN), "{text}");
    let answer = json(&text);
    assert_eq!((answer["tenant"].as_str(), answer["session"]["id"].as_str()), (Some("acme"), Some("session-9")));
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);

    assert_eq!(ok(fake.run(&["logout"])), format!("logged out; removed {}\n", creds.display()));
    assert!(!creds.exists());
    let err = fails(fake.run(&["logout"]));
    assert!(err.contains("not logged in"), "{err}");
    let missing = fake.dir.path().join("elsewhere");
    let err = fails(fake.run(&["--credentials", missing.to_str().unwrap(), "user", "list"]));
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn user_import_in_batches_and_csv_export() {
    let fake = Fake::start();
    let file = fake.dir.path().join("users.csv");
    let mut text = String::from("email,display_name,roles,password\n");
    for i in 1..=250 {
        text.push_str(&format!("u{i}@x.io,\"User, {i}\",viewer;editor,\n"));
    }
    std::fs::write(&file, &text).unwrap();
    let out = ok(fake.run(&["user", "import", file.to_str().unwrap()]));
    assert_eq!(out, format!("created 250 users from {}\n", file.display()));
    assert_eq!(fake.shared.store.lock().unwrap().batches, [100, 100, 50]);

    let csv = ok(fake.run(&["user", "list", "--all", "--limit", "100", "--format", "csv"]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 251);
    assert_eq!(lines[0], "id,email,display_name,disabled,roles");
    assert_eq!(lines[1], "user-1,u1@x.io,\"User, 1\",false,viewer");
    assert_eq!(lines[250], "user-250,u250@x.io,\"User, 250\",false,viewer");
    let page = json(&ok(fake.run(&["--json", "user", "list", "--limit", "2"])));
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], true);

    // A failing batch stops the import and names its lines.
    let mut text = String::from("email,display_name\n");
    for i in 1..=150 {
        text.push_str(&format!("{}{i}@x.io,N\n", if i == 120 { "bad" } else { "v" }));
    }
    std::fs::write(&file, &text).unwrap();
    let err = fails(fake.run(&["user", "import", file.to_str().unwrap()]));
    assert_eq!(
        err,
        "error: import stopped at the batch on lines 102-151 (none of its users were created): \
         invalid_argument (line 121): user #20: invalid email; 100 users created before it"
    );
    // With --json: one object on stdout, the users created before it included.
    let o = fake.run(&["--json", "user", "import", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let error = &json(&stdout(&o))["error"];
    assert_eq!((error["code"].as_str(), error["outcome"].as_str()), (Some("invalid_argument"), Some("not_applied")));
    assert_eq!(error["created"].as_array().map(Vec::len), Some(100), "{error}");
    std::fs::write(&file, "\nname,email\nA,a@x.io\n").unwrap();
    let err = fails(fake.run(&["user", "import", file.to_str().unwrap()]));
    assert_eq!(
        err,
        format!(
            "error: {}: line 2: bad header: unknown column \"name\" (expected email,display_name,roles,password)",
            file.display()
        )
    );
}

#[test]
fn audit_export_and_verify() {
    let fake = Fake::start();
    let table = ok(fake.run(&["audit", "list", "--tenant", "acme", "--limit", "2"]));
    assert_eq!(
        table,
        "SEQ  TIME                 ACTOR     ACTION       RESOURCE  OUTCOME\n\
         1    2023-11-14 22:13:21  operator  user.create  user-1    ok\n\
         2    2023-11-14 22:13:22  operator  user.create  user-2    ok\n"
    );
    let lines = ok(fake.run(&["audit", "export", "--tenant", "acme"]));
    let seqs: Vec<u64> = lines.lines().map(|l| json(l)["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    let file = fake.dir.path().join("trail.jsonl");
    let text = ok(fake.run(&["audit", "export", "--tenant", "acme", "-o", file.to_str().unwrap()]));
    assert_eq!(text, format!("exported 5 audit entries to {}\n", file.display()));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), lines);
    // An export with a hole in it is refused, and leaves no file behind.
    let gap = fake.dir.path().join("gap.jsonl");
    let err = fails(fake.run(&["audit", "export", "--tenant", "gappy", "-o", gap.to_str().unwrap()]));
    assert!(err.contains("entries 3..3 were pruned before they were exported"), "{err}");
    assert!(!gap.exists());

    // A filter that matches nothing: caddyctl follows the cursor over every slice.
    let before = fake.shared.store.lock().unwrap().identity_requests.len();
    let none = ok(fake.run(&["audit", "list", "--tenant", "acme", "--actor", "user-9", "--json"]));
    assert_eq!(json(&none)["entries"], serde_json::json!([]), "{none}");
    assert_eq!(json(&none)["more"], false, "{none}");
    assert_eq!(fake.shared.store.lock().unwrap().identity_requests.len() - before, 3, "slices 1-2, 3-4, 5");
    // A limit reached mid-chain gives where to continue.
    let out = fake.run(&["audit", "list", "--tenant", "acme", "--limit", "3"]);
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
    assert!(stderr(&out).contains("--after-seq 3"), "{}", stderr(&out));

    assert_eq!(ok(fake.run(&["audit", "verify", "--tenant", "acme"])), "audit chain verified: 5 entries, head seq 5\n");
    assert_eq!(
        ok(fake.run(&["audit", "verify", "--tenant", "pruned"])),
        format!(
            "audit chain verified: entries 3..=5 from checkpoint at 2 {}, head seq 5\n\
             (the entries up to the checkpoint were pruned, latest at 2023-11-14 22:15:00 UTC)\n",
            "c2".repeat(32)
        )
    );
    let verified = json(&ok(fake.run(&["audit", "verify", "--tenant", "pruned", "--json"])));
    assert_eq!((verified["entries"].as_u64(), verified["after_seq"].as_u64()), (Some(3), Some(2)), "{verified}");
    let out = fake.run(&["audit", "verify", "--tenant", "broken"]);
    assert_eq!(stdout(&out), "audit chain BROKEN at seq 3: hash mismatch\n");
    assert_eq!(fails(out), "error: audit chain verification failed at seq 3");
}

#[test]
fn file_upload_list_download_and_usage() {
    let fake = Fake::start();
    let dir = fake.dir.path();
    // Three chunks: two full, one short.
    let data: Vec<u8> = (0..(2 << 20) + 5).map(|i: u32| (i % 251) as u8).collect();
    let local = dir.join("plan.dxf");
    std::fs::write(&local, &data).unwrap();
    let local = local.to_str().unwrap();

    let text =
        ok(fake.run(&["file", "upload", local, "--folder", "folder-1", "--tag", "a", "--type", "image/vnd.dxf"]));
    assert!(
        text.starts_with("id:           file-1\nname:         plan.dxf\npath:         /drawings/plan.dxf\n"),
        "{text}"
    );
    assert!(text.contains("size:         2.0 MiB (2097157 bytes)\n"), "{text}");
    assert!(text.contains("tags:         a\n") && text.contains("media type:   image/vnd.dxf\n"), "{text}");
    std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.join("more.txt"), b"more").unwrap();
    let info = json(&ok(fake.run(&["--json", "file", "upload", dir.join("notes.txt").to_str().unwrap()])));
    assert_eq!(
        (info["id"].as_str(), info["path"].as_str(), info["size"].as_u64()),
        (Some("file-2"), Some("/notes.txt"), Some(5))
    );
    ok(fake.run(&["file", "upload", dir.join("more.txt").to_str().unwrap(), "--name", "more.md"]));
    let err = fails(fake.run(&["file", "upload", dir.to_str().unwrap()]));
    assert!(err.ends_with("is not a regular file"), "{err}");

    // Listings page through the fake's two-entry pages.
    let text = ok(fake.run(&["file", "ls"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("TYPE  ID        NAME       SIZE") && lines[1].starts_with("dir   folder-1  drawings"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("file  file-2    notes.txt  5 B ") && lines[3].starts_with("file  file-3    more.md"),
        "{text}"
    );
    let listing = json(&ok(fake.run(&["--json", "file", "ls", "root"])));
    assert_eq!((listing["folders"].as_array().unwrap().len(), listing["files"].as_array().unwrap().len()), (1, 2));
    let tree = ok(fake.run(&["file", "ls", "--tree"]));
    assert_eq!(
        tree,
        "/\n\
         ├── drawings/  folder-1\n\
         │   └── plan.dxf  file-1  2.0 MiB  v1\n\
         ├── notes.txt  file-2  5 B  v1\n\
         └── more.md  file-3  4 B  v1\n\
         \n\
         1 folders, 3 files, 2.0 MiB\n"
    );
    let sub = json(&ok(fake.run(&["--json", "file", "ls", "folder-1", "--tree"])));
    assert_eq!((sub["folder"]["path"].as_str(), sub["files"][0]["id"].as_str()), (Some("/drawings"), Some("file-1")));

    // Downloads: to a path, to stdout, a range, through a link into the current directory.
    let out = dir.join("copy.bin");
    let o = fake.run(&["file", "download", "file-1", "-o", out.to_str().unwrap()]);
    assert_eq!(stderr(&o), format!("downloaded 2097157 bytes of file-1 version 1 to {}\n", out.display()));
    assert!(ok(o).is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let o = fake.run(&["file", "download", "file-1", "-o", "-", "--offset", "10", "--length", "300000"]);
    assert!(o.status.success() && stderr(&o).is_empty(), "{}", stderr(&o));
    assert_eq!(o.stdout, &data[10..300_010]);
    let err = fails_with(fake.run(&["--json", "file", "download", "file-1", "-o", "-"]), 2);
    assert!(err.contains("--json cannot be combined with -o -"), "{err}");
    let cwd = tempfile::tempdir().unwrap();
    let o =
        fake.command(&["--json", "file", "download", "--link", LINK_TOKEN]).current_dir(cwd.path()).output().unwrap();
    let got = json(&ok(o));
    assert_eq!(
        (got["bytes"].as_u64(), got["path"].as_str(), got["file"]["id"].as_str()),
        (Some(2_097_157), Some("plan.dxf"), Some("file-1"))
    );
    assert_eq!(std::fs::read(cwd.path().join("plan.dxf")).unwrap(), data);
    let names: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["plan.dxf"]);
    let o = fake.run(&["file", "download", "file-2", "-o", cwd.path().to_str().unwrap()]);
    assert_eq!(std::fs::read(cwd.path().join("notes.txt")).unwrap(), b"hello", "{}", stderr(&o));
    let err = fails(fake.run(&["file", "download", "file-9", "-o", cwd.path().join("x").to_str().unwrap()]));
    assert!(err.contains("file-9 not found"), "{err}");
    assert!(!cwd.path().join("x").exists());
    {
        let store = fake.shared.store.lock().unwrap();
        let link: Vec<_> = store.file_requests.iter().filter(|(c, op)| op == "download" && c.is_empty()).collect();
        assert_eq!(link.len(), 1, "the link download goes without a credential");
    }

    let text = ok(fake.run(&["file", "link", "file-1", "--expires", "1d"]));
    assert!(text.contains(&format!("\n\n    {LINK_TOKEN}\n\n")) && text.contains("shown only once"), "{text}");
    let link = json(&ok(fake.run(&["--json", "file", "link", "file-1"])));
    assert_eq!((link["token"].as_str(), link["link"]["id"].as_u64()), (Some(LINK_TOKEN), Some(1)));
    assert_eq!(
        ok(fake.run(&["file", "rm", "file-3"])),
        "moved file-3 to the trash (restore with: caddyctl file restore file-3)\n"
    );

    let usage = ok(fake.run(&["storage", "usage"]));
    assert!(usage.starts_with("used:        2.0 MiB of 8.0 MiB (25.0%)\nfiles:       3\n"), "{usage}");
    let usage = json(&ok(fake.run(&["--json", "storage", "usage"])));
    assert_eq!(usage["used_bytes"], 2_097_166);
    let err = fails(fake.run(&["file", "versions", "file-1"]));
    assert_eq!(err, "error: invalid_argument: unsupported by the fake");
}

// ----- real clusters -----
//
// The checks below start `caddyd dev` (built by `cargo build --bins`) and
// drive `caddyctl` against real nodes: exit codes and JSON errors from the
// real server, `--endpoint`, `--timeout` bounding a render wait, failover
// from a killed node and a write without a quorum.

/// A `caddyd dev` cluster in a temp dir; every process of it is killed
/// when this is dropped.
struct Cluster {
    dir: tempfile::TempDir,
    nodes: u64,
    dev: std::process::Child,
}

/// `kill -SIG pid`, through the system's `kill` (no libc binding needed).
fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

impl Cluster {
    fn start(nodes: u64, env: &[(&str, &str)]) -> Cluster {
        let caddyd = Path::new(env!("CARGO_BIN_EXE_caddyctl")).with_file_name("caddyd");
        assert!(caddyd.exists(), "{} not built: run `cargo build --bins` first", caddyd.display());
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
        let mut cmd = Command::new(caddyd);
        cmd.args(["dev", "--nodes", &nodes.to_string(), "--dir"]).arg(dir.path().join("c"));
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let dev = cmd.spawn().unwrap();
        let mut cluster = Cluster { dir, nodes, dev };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(cluster.dir.path().join("dev.log")).unwrap_or_default();
            if text.contains("client config:") {
                return cluster;
            }
            let exited = cluster.dev.try_wait().unwrap();
            assert!(exited.is_none() && std::time::Instant::now() < deadline, "caddyd dev did not come up:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("c/client.toml")
    }

    fn node_file(&self, node: u64, name: &str) -> PathBuf {
        self.dir.path().join(format!("c/node{node}/{name}"))
    }

    fn pid(&self, node: u64) -> u32 {
        std::fs::read_to_string(self.node_file(node, "caddyd.pid")).unwrap().trim().parse().unwrap()
    }

    /// The node's client (QUIC) listener.
    fn client_addr(&self, node: u64) -> String {
        let text = std::fs::read_to_string(self.node_file(node, "caddyd.toml")).unwrap();
        let line = text.lines().find_map(|l| l.strip_prefix("client = \"")).unwrap();
        line.trim_end_matches('"').to_string()
    }

    fn kill9(&self, node: u64) {
        let pid = self.pid(node);
        send_signal(pid, "KILL");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Gone, or a zombie of `caddyd dev`: its sockets are closed either way.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(std::time::Instant::now() < deadline, "node {node} did not die");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_caddyctl"));
        cmd.arg("--config").arg(self.config()).args(args).stdin(Stdio::null());
        for var in ["CADDY_CONFIG", "CADDY_TENANT", "CADDY_CREDENTIALS", "CADDY_PASSWORD", "CADDY_ENDPOINTS"] {
            cmd.env_remove(var);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> (Output, std::time::Duration) {
        output_within(&mut self.command(args), std::time::Duration::from_secs(30))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=self.nodes {
            if let Ok(text) = std::fs::read_to_string(self.node_file(node, "caddyd.pid"))
                && let Ok(pid) = text.trim().parse::<u32>()
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("caddyd"))
            {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
        }
        let _ = self.dev.kill();
        let _ = self.dev.wait();
    }
}

/// Exit code `code`, an `error:` line on stderr (one line, but for clap's
/// own usage errors, which add the usage text), and the JSON error object
/// on stdout with the same message; returns the object's `error` member.
fn json_failure(o: &Output, code: i32) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(code), "stdout: {} stderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{err}");
    let object = json(&stdout(o));
    let error = object["error"].clone();
    assert_eq!(error["message"].as_str(), first.strip_prefix("error: "), "{object}");
    error
}

/// Whether `text` shows a number with more than one decimal (a duration
/// printed to the nanosecond, `1.999913s`).
fn has_long_fraction(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(4).any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit() && w[3].is_ascii_digit())
}

#[test]
fn exit_codes_endpoints_and_time_bounds_on_a_real_cluster() {
    use std::time::Duration;
    // No node has a graphics adapter: render jobs stay queued.
    let no_gpu = [("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("VK_DRIVER_FILES", "/nonexistent/icd.json")];
    let cluster = Cluster::start(3, &no_gpu);

    // A key that does not exist: refused, nothing applied, exit 1.
    let (o, _) = cluster.run(&["--json", "kv", "get", "no/such/key"]);
    let error = json_failure(&o, 1);
    assert_eq!(
        (error["code"].as_str(), error["outcome"].as_str()),
        (Some("not_found"), Some("not_applied")),
        "{error}"
    );
    // A write the server refuses (compare-and-set on a missing key): exit 1.
    let (o, _) = cluster.run(&["--json", "kv", "put", "k", "v", "--if-revision", "999"]);
    let error = json_failure(&o, 1);
    assert_eq!(
        (error["code"].as_str(), error["outcome"].as_str(), error["retryable"].as_bool()),
        (Some("failed_precondition"), Some("not_applied"), Some(false)),
        "{error}"
    );
    assert_eq!(error["current_revision"], 0, "{error}");
    // A usage error, caught by the parser or after it: exit 2.
    let (o, _) = cluster.run(&["--json", "kv", "put", "only-a-key"]);
    assert_eq!(json_failure(&o, 2)["code"], "usage");
    let (o, _) = cluster.run(&["--json", "render", "doc-1", "--window", "1,2,3"]);
    assert_eq!(json_failure(&o, 2)["code"], "usage");

    // --endpoint (or CADDY_ENDPOINTS) talks to the chosen node only.
    let answering = |o: Output| json(&ok(o))["cluster_node"].as_u64();
    let node2 = cluster.client_addr(2);
    let (o, _) = cluster.run(&["--json", "--endpoint", &node2, "cluster", "status"]);
    assert_eq!(answering(o), Some(2));
    let mut by_env = cluster.command(&["--json", "cluster", "status"]);
    by_env.env("CADDY_ENDPOINTS", cluster.client_addr(3));
    let (o, _) = output_within(&mut by_env, Duration::from_secs(30));
    assert_eq!(answering(o), Some(3));

    // --timeout bounds a render wait no node can serve (it waited out the
    // 10-minute --wait-timeout before).
    ok(cluster.run(&["tenant", "create", "acme", "--name", "Acme"]).0);
    let (o, _) = cluster.run(&["--tenant", "acme", "doc", "create", "plan"]);
    let doc = ok(o).split_whitespace().nth(1).unwrap().to_string();
    let png = cluster.dir.path().join("out.png");
    let render = ["--json", "--tenant", "acme", "--timeout", "2s", "render", &doc, "-o", png.to_str().unwrap()];
    let (o, took) = output_within(&mut cluster.command(&render), Duration::from_secs(20));
    let error = json_failure(&o, 1);
    assert_eq!((error["code"].as_str(), error["state"].as_str()), (Some("timeout"), Some("queued")), "{error}");
    assert!(error["job"].as_str().is_some_and(|j| j.starts_with("job-")), "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("--timeout 2s") && message.contains("no render worker"), "{message}");
    assert!(!has_long_fraction(message), "{message}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "{took:?}");
    assert!(!png.exists());

    // The first endpoint of client.toml is killed: requests fail over to
    // the others well before their timeout.
    cluster.kill9(1);
    for args in [
        &["--timeout", "10s", "kv", "put", "after/kill", "1"][..],
        &["--timeout", "10s", "kv", "get", "after/kill"],
        &["--timeout", "10s", "--tenant", "acme", "doc", "list"],
    ] {
        let (o, took) = cluster.run(args);
        ok(o);
        assert!(took < Duration::from_secs(3), "{args:?} took {took:?}");
    }

    // A second node paused: no quorum. A write goes out and cannot complete:
    // exit 3, and the message says it may or may not have been applied.
    send_signal(cluster.pid(2), "STOP");
    let (o, took) = cluster.run(&["--json", "--timeout", "2s", "kv", "put", "lost/quorum", "v"]);
    let error = json_failure(&o, 3);
    assert_eq!((error["code"].as_str(), error["outcome"].as_str()), (Some("unavailable"), Some("unknown")), "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("the write may or may not have been applied"), "{message}");
    assert!(!has_long_fraction(message), "{message}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // A read that cannot complete changed nothing: exit 1.
    let (o, _) = cluster.run(&["--json", "--timeout", "2s", "kv", "get", "after/kill"]);
    let error = json_failure(&o, 1);
    assert_eq!(
        (error["code"].as_str(), error["outcome"].as_str()),
        (Some("unavailable"), Some("not_applied")),
        "{error}"
    );
    // Text mode: the same exit code and message.
    let (o, _) = cluster.run(&["--timeout", "1s", "kv", "del", "after/kill"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("may or may not have been applied"), "{}", stderr(&o));
}
