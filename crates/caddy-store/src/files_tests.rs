//! Files in the state machine: folders and names, commits and versions,
//! quotas, chunk reference counts, access (owner, shares, teams, expiry,
//! links, API keys, other tenants), trash, restore, purge and the retention
//! sweep (documents included), favorites and recent files, search,
//! snapshots and tenant deletion. Time is the harness's stamped time.

use std::collections::{BTreeMap, BTreeSet};

use caddy_core::docs::DocId;
use caddy_core::files::{
    Access, CHUNK_BYTES, ChunkRef, CommitTarget, FileAnswer, FileBounds, FileCall, FileId, FileInfo, FileOp, FileQuery,
    FolderId, Grantee, ItemId, MAX_FOLDER_DEPTH, MAX_RECENT, StorageUsage, content_hash,
};
use caddy_core::identity::api::Op;
use caddy_core::identity::{Caller, Member, Quotas, RoleName, TeamId, UserId};
use caddy_core::{CaddyError, Command, ErrorCode, ReplyBody};
use redb::{ReadableDatabase, ReadableTable};

use crate::StateMachineStore;
use crate::backend::Disk;
use crate::files::FILES;
use crate::identity::tests::{ADMIN, H, t};

const BOUNDS: FileBounds = FileBounds { max_file_bytes: 64 << 20, max_versions: 3 };
const MIB: u64 = CHUNK_BYTES as u64;
const LONG: u64 = 1_000_000_000_000;

struct Fx {
    h: H,
    creds: BTreeMap<&'static str, String>,
    users: BTreeMap<&'static str, UserId>,
    team: TeamId,
}

fn role(h: &mut H, name: &str, perms: &[&str]) {
    h.op(
        Some("acme"),
        Op::RoleUpsert {
            name: RoleName::new(name).unwrap(),
            description: String::new(),
            permissions: perms.iter().map(|p| p.parse().unwrap()).collect(),
            inherits: Default::default(),
        },
    );
}

fn setup() -> Fx {
    setup_with(Quotas::default())
}

fn setup_with(quotas: Quotas) -> Fx {
    let mut h = H::new();
    h.tenant("acme", quotas);
    h.tenant("globex", Quotas::default());
    // Plain file users: read and write, no files:admin (that needs files:*).
    role(&mut h, "filer", &["files:read", "files:write", "docs:read", "docs:write"]);
    role(&mut h, "reader", &["files:read"]);
    let mut users = BTreeMap::new();
    let mut creds = BTreeMap::new();
    for (name, tenant, roles) in [
        ("alice", "acme", &["filer"][..]),
        ("bob", "acme", &["filer"]),
        ("carol", "acme", &["filer"]),
        ("reader", "acme", &["reader"]),
        ("admin", "acme", &["admin"]),
        ("foreign", "globex", &["admin"]),
    ] {
        let id = h.user(tenant, &format!("{name}@{tenant}.test"), roles);
        let token = h.login(tenant, id, LONG);
        users.insert(name, id);
        creds.insert(name, token);
    }
    creds.insert("operator", ADMIN.to_owned());
    let team = match h.op(Some("acme"), Op::TeamCreate { name: "design".into() }) {
        ReplyBody::Created { id } => TeamId(id),
        other => panic!("{other:?}"),
    };
    h.op(Some("acme"), Op::TeamAdd { team, member: Member::User(users["carol"]) });
    Fx { h, creds, users, team }
}

/// A chunk list of `size` bytes (the hashes stand for content nobody reads here).
fn chunks(size: u64, seed: u8) -> Vec<ChunkRef> {
    (0..size.div_ceil(MIB))
        .map(|i| ChunkRef {
            hash: *blake3::hash(&[seed, i as u8, (i >> 8) as u8]).as_bytes(),
            len: (size - i * MIB).min(MIB) as u32,
        })
        .collect()
}

fn commit_op(target: CommitTarget, list: Vec<ChunkRef>, bounds: FileBounds) -> FileOp {
    let size = list.iter().map(|c| u64::from(c.len)).sum();
    FileOp::Commit { target, size, content_hash: content_hash(&list), chunks: list, bounds }
}

fn new_file(name: &str, folder: Option<FolderId>) -> CommitTarget {
    CommitTarget::New { name: name.into(), folder, media_type: String::new(), tags: Vec::new() }
}

fn code<T: std::fmt::Debug>(r: Result<T, CaddyError>) -> ErrorCode {
    r.unwrap_err().code
}

impl Fx {
    fn cred(&self, who: &str) -> String {
        self.creds.get(who).cloned().unwrap_or_else(|| who.to_owned())
    }

    fn op(&mut self, who: &str, op: FileOp) -> Result<ReplyBody, CaddyError> {
        self.op_in(who, "acme", op)
    }

    fn op_in(&mut self, who: &str, tenant: &str, op: FileOp) -> Result<ReplyBody, CaddyError> {
        let cred = self.cred(who);
        self.h.call(&cred, Some(tenant), Op::File(op))
    }

    fn caller(&self, who: &str) -> Caller {
        self.h.sm.authenticate(&self.cred(who), self.h.now).unwrap().1
    }

    fn read(&self, who: &str, call: FileCall) -> Result<FileAnswer, CaddyError> {
        self.read_at(who, call, self.h.now)
    }

    fn read_at(&self, who: &str, call: FileCall, now: u64) -> Result<FileAnswer, CaddyError> {
        self.h.sm.file_read(&t("acme"), &self.caller(who), &call, now)
    }

    fn created(&mut self, who: &str, op: FileOp) -> u64 {
        match self.op(who, op).unwrap() {
            ReplyBody::Created { id } => id,
            other => panic!("{other:?}"),
        }
    }

    fn mkdir(&mut self, who: &str, name: &str, parent: Option<FolderId>) -> FolderId {
        FolderId(self.created(who, FileOp::MkDir { name: name.into(), parent }))
    }

    fn upload(&mut self, who: &str, name: &str, folder: Option<FolderId>, size: u64, seed: u8) -> FileId {
        FileId(self.created(who, commit_op(new_file(name, folder), chunks(size, seed), BOUNDS)))
    }

    fn version(&mut self, who: &str, file: FileId, size: u64, seed: u8) -> Result<ReplyBody, CaddyError> {
        self.op(who, commit_op(CommitTarget::Version { file }, chunks(size, seed), BOUNDS))
    }

    fn info(&self, who: &str, id: impl ToString) -> Result<FileInfo, CaddyError> {
        match self.read(who, FileCall::Info { id: id.to_string() })? {
            FileAnswer::File(f) => Ok(f),
            other => panic!("{other:?}"),
        }
    }

    fn folder_path(&self, id: FolderId) -> String {
        match self.read("alice", FileCall::Info { id: id.to_string() }).unwrap() {
            FileAnswer::Folder(f) => f.path,
            other => panic!("{other:?}"),
        }
    }

    /// Names of the subfolders and files `who` sees in `folder`.
    fn ls(&self, who: &str, folder: Option<FolderId>) -> (Vec<String>, Vec<String>) {
        let call = FileCall::List { folder: folder.map(|f| f.to_string()), after: None, limit: Some(1000) };
        match self.read(who, call).unwrap() {
            FileAnswer::List { folders, files, .. } => {
                (folders.into_iter().map(|f| f.name).collect(), files.into_iter().map(|f| f.name).collect())
            }
            other => panic!("{other:?}"),
        }
    }

    fn files_of(&self, who: &str, call: FileCall) -> (Vec<String>, Option<String>) {
        match self.read(who, call).unwrap() {
            FileAnswer::Files { files, next } => (files.into_iter().map(|f| f.name).collect(), next),
            other => panic!("{other:?}"),
        }
    }

    fn usage(&self) -> StorageUsage {
        match self.read("admin", FileCall::Usage).unwrap() {
            FileAnswer::Usage(u) => u,
            other => panic!("{other:?}"),
        }
    }

    fn trash(&self, who: &str) -> Vec<(String, u64)> {
        match self.read(who, FileCall::Trash).unwrap() {
            FileAnswer::Trash { items } => items.into_iter().map(|i| (i.id, i.bytes)).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn versions(&self, who: &str, file: FileId) -> Vec<(u64, u64, bool)> {
        match self.read(who, FileCall::Versions { file: file.to_string() }).unwrap() {
            FileAnswer::Versions { versions } => versions.into_iter().map(|v| (v.version, v.size, v.current)).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn download(&self, who: &str, file: FileId, now: u64) -> Result<(FileInfo, u64, u64), CaddyError> {
        let (_, info, v) = self.h.sm.file_download(Some(&t("acme")), &self.caller(who), Some(file), None, None, now)?;
        Ok((info, v.version, v.size))
    }

    fn by_link(&self, hash: [u8; 32], now: u64) -> Result<FileInfo, CaddyError> {
        self.h.sm.file_download(None, &Caller::Anonymous, None, Some(hash), None, now).map(|(_, info, _)| info)
    }

    /// Every record of the `files` table.
    fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let txn = self.h.sm.db().begin_read().unwrap();
        let table = txn.open_table(FILES).unwrap();
        table.iter().unwrap().map(|i| i.unwrap()).map(|(k, v)| (k.value().to_owned(), v.value().to_vec())).collect()
    }

    fn keys_with(&self, prefix: &str) -> Vec<String> {
        self.dump().into_iter().map(|(k, _)| k).filter(|k| k.starts_with(prefix)).collect()
    }

    fn refcount(&self, tenant: &str, hash: &[u8; 32]) -> Option<u64> {
        let key = format!("t/{tenant}/c/{}", hex::encode(hash));
        let txn = self.h.sm.db().begin_read().unwrap();
        let table = txn.open_table(FILES).unwrap();
        table.get(key.as_str()).unwrap().map(|v| crate::state_machine::open_record(&key, v.value()).unwrap())
    }

    fn used_bytes(&self) -> u64 {
        self.usage().used_bytes
    }
}

#[test]
fn folders_mkdir_list_move_rename_and_bad_names() {
    let mut fx = setup();
    let plans = fx.mkdir("alice", "plans", None);
    let year = fx.mkdir("alice", "2024", Some(plans));
    let drafts = fx.mkdir("bob", "drafts", None);
    assert_eq!(fx.folder_path(year), "/plans/2024");
    let before = fx.dump();
    let long = "x".repeat(256);
    for bad in ["a/b", "..", ".", "a\0b", "", " pad", long.as_str()] {
        let err = fx.op("alice", FileOp::MkDir { name: bad.into(), parent: None }).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}: {err}");
        let err = fx.op("alice", FileOp::Rename { item: ItemId::Folder(plans), name: bad.into() }).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "rename to {bad:?}");
        let err = fx.op("alice", commit_op(new_file(bad, None), chunks(10, 1), BOUNDS)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "upload {bad:?}");
    }
    assert_eq!(code(fx.op("alice", FileOp::MkDir { name: "plans".into(), parent: None })), ErrorCode::AlreadyExists);
    // Files and folders share names.
    assert_eq!(
        code(fx.op("alice", commit_op(new_file("plans", None), chunks(5, 1), BOUNDS))),
        ErrorCode::AlreadyExists
    );
    let missing = FileOp::MkDir { name: "x".into(), parent: Some(FolderId(999)) };
    assert_eq!(code(fx.op("alice", missing)), ErrorCode::NotFound);
    // A folder into itself or below itself: refused, nothing changed.
    let into_self = FileOp::Move { item: ItemId::Folder(plans), to: Some(plans) };
    assert_eq!(code(fx.op("alice", into_self)), ErrorCode::InvalidArgument);
    let into_child = FileOp::Move { item: ItemId::Folder(plans), to: Some(year) };
    assert_eq!(code(fx.op("alice", into_child)), ErrorCode::InvalidArgument);
    assert_eq!(fx.dump(), before, "refusals changed the files table");
    // Refusals are audited.
    let refused = fx.h.audit(Some("acme")).into_iter().filter(|e| e.action == "file.move" && e.outcome != "ok").count();
    assert_eq!(refused, 2);

    assert_eq!(fx.ls("reader", None), (vec!["drafts".to_owned(), "plans".to_owned()], vec![]));
    fx.op("bob", FileOp::Move { item: ItemId::Folder(year), to: Some(drafts) }).unwrap();
    assert_eq!(fx.folder_path(year), "/drafts/2024");
    assert_eq!(fx.ls("alice", Some(plans)), (vec![], vec![]));
    fx.op("alice", FileOp::Rename { item: ItemId::Folder(drafts), name: "archive".into() }).unwrap();
    assert_eq!(fx.folder_path(year), "/archive/2024");
    let clash = FileOp::Rename { item: ItemId::Folder(drafts), name: "plans".into() };
    assert_eq!(code(fx.op("alice", clash)), ErrorCode::AlreadyExists);
    // A file moves and renames too; its path follows its folder.
    let f = fx.upload("alice", "site.dxf", Some(year), 100, 1);
    assert_eq!(fx.info("alice", f).unwrap().path, "/archive/2024/site.dxf");
    fx.op("alice", FileOp::Move { item: ItemId::File(f), to: Some(plans) }).unwrap();
    fx.op("alice", FileOp::Rename { item: ItemId::File(f), name: "Site.dxf".into() }).unwrap();
    let info = fx.info("alice", f).unwrap();
    assert_eq!((info.path.as_str(), info.folder), ("/plans/Site.dxf", Some(plans.to_string())));
    assert_eq!(fx.ls("alice", Some(plans)).1, vec!["Site.dxf"]);
    let to_missing = FileOp::Move { item: ItemId::File(f), to: Some(FolderId(12345)) };
    assert_eq!(code(fx.op("alice", to_missing)), ErrorCode::NotFound);

    // Listing pages by name: subfolders and files in name order.
    for name in ["e", "b", "d"] {
        fx.upload("alice", name, Some(year), 1, 2);
    }
    fx.mkdir("alice", "c", Some(year));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let call = FileCall::List { folder: Some(year.to_string()), after: after.clone(), limit: Some(2) };
        let FileAnswer::List { folder, folders, files, next } = fx.read("alice", call).unwrap() else { panic!() };
        assert_eq!(folder.unwrap().path, "/archive/2024");
        assert!(folders.len() + files.len() <= 2);
        seen.extend(folders.into_iter().map(|f| format!("d:{}", f.name)));
        seen.extend(files.into_iter().map(|f| format!("f:{}", f.name)));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    seen.sort_by(|a, b| a[2..].cmp(&b[2..]));
    assert_eq!(seen, vec!["f:b", "d:c", "f:d", "f:e"]);

    // Nesting is bounded.
    let mut parent = None;
    for i in 0..MAX_FOLDER_DEPTH {
        parent = Some(fx.mkdir("alice", &format!("n{i}"), parent));
    }
    assert_eq!(code(fx.op("alice", FileOp::MkDir { name: "deep".into(), parent })), ErrorCode::InvalidArgument);
    let deep = FileOp::Move { item: ItemId::Folder(year), to: parent };
    assert_eq!(code(fx.op("alice", deep)), ErrorCode::InvalidArgument);
    assert_eq!(fx.usage().folders, 4 + MAX_FOLDER_DEPTH as u64);
}

#[test]
fn commits_versions_cap_and_restore_version() {
    let mut fx = setup();
    let f = fx.upload("alice", "part.step", None, 1000, 1);
    let used0 = fx.used_bytes();
    let v1 = chunks(1000, 1)[0].hash;
    let v2 = chunks(2000, 2)[0].hash;
    for (size, seed) in [(2000, 2), (3000, 3), (4000, 4)] {
        assert_eq!(fx.version("alice", f, size, seed).unwrap(), ReplyBody::Done);
    }
    // At most 3 versions kept: version 1 went, with its bytes and chunk.
    assert_eq!(fx.versions("alice", f), vec![(2, 2000, false), (3, 3000, false), (4, 4000, true)]);
    let u = fx.usage();
    assert_eq!((u.files, u.versions, u.file_bytes), (1, 3, 9000));
    assert_eq!(fx.used_bytes(), used0 - 1000 + 9000);
    assert_eq!(fx.refcount("acme", &v1), None);
    assert_eq!(fx.h.sm.chunks_referenced(&t("acme"), &[v1, v2]).unwrap(), vec![false, true]);
    let info = fx.info("alice", f).unwrap();
    assert_eq!((info.version, info.versions, info.size), (4, 3, 4000));

    // Restoring version 2 makes a new version 5 with its content; version
    // 2 itself is the oldest and goes, its chunk stays referenced by 5.
    fx.op("alice", FileOp::RestoreVersion { file: f, version: 2, bounds: BOUNDS }).unwrap();
    assert_eq!(fx.versions("alice", f), vec![(3, 3000, false), (4, 4000, false), (5, 2000, true)]);
    let info = fx.info("alice", f).unwrap();
    assert_eq!(info.content_hash, hex::encode(content_hash(&chunks(2000, 2))));
    assert_eq!(fx.refcount("acme", &v2), Some(1));
    assert_eq!(fx.usage().file_bytes, 9000);
    let gone = FileOp::RestoreVersion { file: f, version: 1, bounds: BOUNDS };
    assert_eq!(code(fx.op("alice", gone)), ErrorCode::NotFound);

    // Bad commits change nothing.
    let before = fx.dump();
    let mut wrong_hash = commit_op(CommitTarget::Version { file: f }, chunks(10, 9), BOUNDS);
    if let FileOp::Commit { content_hash, .. } = &mut wrong_hash {
        content_hash[0] ^= 1;
    }
    assert_eq!(code(fx.op("alice", wrong_hash)), ErrorCode::InvalidArgument);
    let bad_layout = FileOp::Commit {
        target: CommitTarget::Version { file: f },
        size: MIB + 1,
        content_hash: content_hash(&chunks(5, 9)),
        chunks: chunks(5, 9),
        bounds: BOUNDS,
    };
    assert_eq!(code(fx.op("alice", bad_layout)), ErrorCode::InvalidArgument);
    let small = FileBounds { max_file_bytes: 100, max_versions: 3 };
    let too_big = commit_op(CommitTarget::Version { file: f }, chunks(101, 9), small);
    assert_eq!(code(fx.op("alice", too_big)), ErrorCode::ResourceExhausted);
    let restore_too_big = FileOp::RestoreVersion { file: f, version: 4, bounds: small };
    assert_eq!(code(fx.op("alice", restore_too_big)), ErrorCode::ResourceExhausted);
    let bad_media = CommitTarget::New { name: "x".into(), folder: None, media_type: "png".into(), tags: vec![] };
    assert_eq!(code(fx.op("alice", commit_op(bad_media, chunks(1, 1), BOUNDS))), ErrorCode::InvalidArgument);
    let bad_tags =
        CommitTarget::New { name: "x".into(), folder: None, media_type: String::new(), tags: vec!["a b".into()] };
    assert_eq!(code(fx.op("alice", commit_op(bad_tags, chunks(1, 1), BOUNDS))), ErrorCode::InvalidArgument);
    assert_eq!(fx.dump(), before);

    // Downloads: the current version by default, or one named.
    let now = fx.h.now;
    let (info, version, size) = fx.download("alice", f, now).unwrap();
    assert_eq!((info.name.as_str(), version, size), ("part.step", 5, 2000));
    let (_, _, v3) = fx.h.sm.file_download(Some(&t("acme")), &fx.caller("alice"), Some(f), None, Some(3), now).unwrap();
    assert_eq!((v3.version, v3.size, v3.chunks), (3, 3000, chunks(3000, 3)));
    let none = fx.h.sm.file_download(Some(&t("acme")), &fx.caller("alice"), Some(f), None, Some(1), now);
    assert_eq!(code(none), ErrorCode::NotFound);

    // Tags; an empty file is fine.
    fx.op("alice", FileOp::SetTags { file: f, tags: vec!["cnc".into(), "rev-b".into(), "cnc".into()] }).unwrap();
    assert_eq!(fx.info("alice", f).unwrap().tags, vec!["cnc", "rev-b"]);
    let empty = fx.upload("alice", "empty", None, 0, 0);
    assert_eq!(fx.info("alice", empty).unwrap().size, 0);
}

#[test]
fn quota_refuses_commit_and_changes_nothing() {
    let mut fx = setup_with(Quotas { max_storage_bytes: 3 * MIB, ..Quotas::default() });
    let f = fx.upload("alice", "big.bin", None, 2 * MIB, 1);
    assert_eq!(fx.used_bytes(), 2 * MIB);
    let before = (fx.dump(), fx.usage());
    let second = commit_op(new_file("big2.bin", None), chunks(2 * MIB, 2), BOUNDS);
    let err = fx.op("bob", second).unwrap_err();
    assert_eq!(err.code, ErrorCode::ResourceExhausted, "{err}");
    assert!(err.message.contains("max_storage_bytes"), "{err}");
    assert_eq!((fx.dump(), fx.usage()), before, "a refused commit wrote something");
    // The server's precheck refuses the same before any byte is sent.
    let target = new_file("big2.bin", None);
    let pre = fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("bob"), &target, 2 * MIB, BOUNDS);
    assert_eq!(code(pre), ErrorCode::ResourceExhausted);
    let taken = fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("bob"), &new_file("big.bin", None), 1, BOUNDS);
    assert_eq!(code(taken), ErrorCode::AlreadyExists);
    let stranger =
        fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("bob"), &CommitTarget::Version { file: f }, 1, BOUNDS);
    assert_eq!(code(stranger), ErrorCode::NotFound);
    let reader = fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("reader"), &new_file("r", None), 1, BOUNDS);
    assert_eq!(code(reader), ErrorCode::PermissionDenied);
    let fine = fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("alice"), &new_file("ok", None), MIB, BOUNDS);
    fine.unwrap();
    // A new version is judged on net growth: keeping one version, 2 MiB
    // replacing 2 MiB fits; keeping more, the same upload does not.
    let one = FileBounds { max_file_bytes: 64 << 20, max_versions: 1 };
    let pre =
        fx.h.sm.file_commit_precheck(&t("acme"), &fx.caller("alice"), &CommitTarget::Version { file: f }, 2 * MIB, one);
    pre.unwrap();
    fx.op("alice", commit_op(CommitTarget::Version { file: f }, chunks(2 * MIB, 3), one)).unwrap();
    assert_eq!(fx.used_bytes(), 2 * MIB);
    assert_eq!(fx.versions("alice", f), vec![(2, 2 * MIB, true)]);
    let keep_two = commit_op(CommitTarget::Version { file: f }, chunks(2 * MIB, 4), BOUNDS);
    assert_eq!(code(fx.op("alice", keep_two)), ErrorCode::ResourceExhausted);
    // Restoring a version counts like an upload.
    let restore = FileOp::RestoreVersion { file: f, version: 2, bounds: BOUNDS };
    assert_eq!(code(fx.op("alice", restore)), ErrorCode::ResourceExhausted);
    // Trashed files still count; purging frees.
    fx.op("alice", FileOp::Trash { item: ItemId::File(f) }).unwrap();
    assert_eq!(fx.used_bytes(), 2 * MIB);
    assert_eq!(fx.usage().trash_bytes, 2 * MIB);
    fx.op("alice", FileOp::Purge { item: ItemId::File(f) }).unwrap();
    assert_eq!(fx.used_bytes(), 0);
    fx.upload("bob", "big2.bin", None, 2 * MIB, 2);
}

#[test]
fn chunk_refcounts_follow_versions_and_page_across_tenants() {
    let mut fx = setup();
    // One version naming the same chunk twice counts twice.
    let x = ChunkRef { hash: [7; 32], len: CHUNK_BYTES };
    let a = FileId(fx.created("alice", commit_op(new_file("a", None), vec![x, x], BOUNDS)));
    assert_eq!(fx.refcount("acme", &x.hash), Some(2));
    let tail = ChunkRef { hash: [8; 32], len: 10 };
    let b = FileId(fx.created("bob", commit_op(new_file("b", None), vec![x, tail], BOUNDS)));
    assert_eq!(fx.refcount("acme", &x.hash), Some(3));
    fx.op("bob", commit_op(CommitTarget::Version { file: b }, vec![tail], BOUNDS)).unwrap();
    assert_eq!((fx.refcount("acme", &x.hash), fx.refcount("acme", &tail.hash)), (Some(3), Some(2)));
    let c = fx.upload("carol", "c", None, 3 * MIB + 1, 3);
    let foreign_target = new_file("g", None);
    let g = commit_op(foreign_target, chunks(MIB + 1, 4), BOUNDS);
    fx.op_in("foreign", "globex", g).unwrap();

    // Every referenced chunk, every tenant, exactly once, in order.
    let mut want: BTreeSet<(String, [u8; 32])> = BTreeSet::new();
    for h in [x.hash, tail.hash].into_iter().chain(chunks(3 * MIB + 1, 3).iter().map(|c| c.hash)) {
        want.insert(("acme".into(), h));
    }
    for c in chunks(MIB + 1, 4) {
        want.insert(("globex".into(), c.hash));
    }
    for limit in [1, 2, 3, 100] {
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = fx.h.sm.chunk_refs_page(after.clone(), limit).unwrap();
            assert!(page.len() <= limit);
            got.extend(page.iter().map(|(t, h)| (t.to_string(), *h)));
            if page.len() < limit {
                break;
            }
            after = page.last().cloned();
        }
        let unique: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(unique.len(), got.len(), "limit {limit}: a chunk came twice");
        assert_eq!(unique, want, "limit {limit}");
    }

    // Purging releases every reference.
    for (who, f) in [("alice", a), ("bob", b), ("carol", c)] {
        fx.op(who, FileOp::Trash { item: ItemId::File(f) }).unwrap();
        fx.op(who, FileOp::Purge { item: ItemId::File(f) }).unwrap();
    }
    assert_eq!(fx.keys_with("t/acme/c/"), Vec::<String>::new());
    assert_eq!(fx.h.sm.chunks_referenced(&t("acme"), &[x.hash, tail.hash]).unwrap(), vec![false, false]);
    let left = fx.h.sm.chunk_refs_page(None, 100).unwrap();
    assert!(left.iter().all(|(t, _)| t.as_str() == "globex") && left.len() == 2, "{left:?}");
    let u = fx.usage();
    assert_eq!((u.files, u.versions, u.file_bytes, u.trash_bytes), (0, 0, 0, 0));
}

#[test]
fn access_owner_shares_teams_expiry_and_api_keys() {
    let mut fx = setup();
    let f = fx.upload("alice", "secret.dxf", None, 100, 1);
    let now = fx.h.now;
    // Strangers see nothing: not found, not "denied".
    for who in ["bob", "reader", "carol"] {
        assert_eq!(code(fx.info(who, f)), ErrorCode::NotFound, "{who}");
        assert_eq!(code(fx.download(who, f, now)), ErrorCode::NotFound, "{who}");
        assert!(fx.ls(who, None).1.is_empty(), "{who}");
    }
    let before = fx.dump();
    let rename = |name: &str| FileOp::Rename { item: ItemId::File(f), name: name.into() };
    assert_eq!(code(fx.op("bob", rename("mine"))), ErrorCode::NotFound);
    assert_eq!(code(fx.version("bob", f, 5, 2)), ErrorCode::NotFound);
    assert_eq!(code(fx.op("bob", FileOp::Trash { item: ItemId::File(f) })), ErrorCode::NotFound);
    let share_self =
        FileOp::Share { file: f, grantee: Grantee::User(fx.users["bob"]), access: Access::Write, expires_ms: None };
    assert_eq!(code(fx.op("bob", share_self)), ErrorCode::NotFound);
    assert_eq!(fx.dump(), before);
    // The admin (files:*) and the operator see everything.
    assert_eq!(fx.info("admin", f).unwrap().access, "owner");
    assert_eq!(fx.info("operator", f).unwrap().access, "owner");
    assert_eq!(fx.info("alice", f).unwrap().access, "owner");

    // A read share: download, no rename, no new version.
    let bob = Grantee::User(fx.users["bob"]);
    fx.op("alice", FileOp::Share { file: f, grantee: bob, access: Access::Read, expires_ms: None }).unwrap();
    assert_eq!(fx.info("bob", f).unwrap().access, "read");
    assert_eq!(fx.download("bob", f, now).unwrap().2, 100);
    assert_eq!(fx.ls("bob", None).1, vec!["secret.dxf"]);
    assert_eq!(code(fx.op("bob", rename("mine"))), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.version("bob", f, 5, 2)), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.op("bob", FileOp::Trash { item: ItemId::File(f) })), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.read("bob", FileCall::Shares { file: f.to_string() })), ErrorCode::PermissionDenied);
    // A write share: new versions, rename; still not share or trash.
    fx.op("alice", FileOp::Share { file: f, grantee: bob, access: Access::Write, expires_ms: None }).unwrap();
    fx.version("bob", f, 200, 2).unwrap();
    fx.op("bob", rename("shared.dxf")).unwrap();
    let info = fx.info("alice", f).unwrap();
    assert_eq!(
        (info.name.as_str(), info.version, info.modified_by.clone()),
        ("shared.dxf", 2, fx.users["bob"].to_string())
    );
    assert_eq!(info.owner, fx.users["alice"].to_string());
    let reshare =
        FileOp::Share { file: f, grantee: Grantee::User(fx.users["reader"]), access: Access::Read, expires_ms: None };
    assert_eq!(code(fx.op("bob", reshare)), ErrorCode::PermissionDenied);
    // A team share reaches its members.
    let team = Grantee::Team(fx.team);
    fx.op("alice", FileOp::Share { file: f, grantee: team, access: Access::Read, expires_ms: None }).unwrap();
    assert_eq!(fx.info("carol", f).unwrap().access, "read");
    assert_eq!(code(fx.info("reader", f)), ErrorCode::NotFound);
    // Shares with nobody, or already expired, are refused.
    let ghost = FileOp::Share { file: f, grantee: Grantee::User(UserId(999)), access: Access::Read, expires_ms: None };
    assert_eq!(code(fx.op("alice", ghost)), ErrorCode::NotFound);
    let no_team =
        FileOp::Share { file: f, grantee: Grantee::Team(TeamId(999)), access: Access::Read, expires_ms: None };
    assert_eq!(code(fx.op("alice", no_team)), ErrorCode::NotFound);
    let past = FileOp::Share { file: f, grantee: bob, access: Access::Read, expires_ms: Some(fx.h.now) };
    assert_eq!(code(fx.op("alice", past)), ErrorCode::InvalidArgument);
    let FileAnswer::Shares { shares } = fx.read("alice", FileCall::Shares { file: f.to_string() }).unwrap() else {
        panic!()
    };
    assert_eq!(shares.len(), 2);

    // Expiry is judged by time: a share to carol alone, expiring.
    fx.op("alice", FileOp::Unshare { file: f, grantee: team }).unwrap();
    assert_eq!(code(fx.info("carol", f)), ErrorCode::NotFound);
    let carol = Grantee::User(fx.users["carol"]);
    let expires = fx.h.now + 1_000;
    fx.op("alice", FileOp::Share { file: f, grantee: carol, access: Access::Write, expires_ms: Some(expires) })
        .unwrap();
    assert!(fx.read_at("carol", FileCall::Info { id: f.to_string() }, expires - 1).is_ok());
    let late = fx.read_at("carol", FileCall::Info { id: f.to_string() }, expires);
    assert_eq!(code(late), ErrorCode::NotFound);
    assert_eq!(code(fx.download("carol", f, expires + 5)), ErrorCode::NotFound);
    fx.version("carol", f, 300, 3).unwrap();
    fx.h.now = expires;
    assert_eq!(code(fx.version("carol", f, 400, 4)), ErrorCode::NotFound, "apply judges expiry at its stamp");
    // Unsharing takes access away; unsharing nothing is not found.
    fx.op("alice", FileOp::Unshare { file: f, grantee: bob }).unwrap();
    assert_eq!(code(fx.info("bob", f)), ErrorCode::NotFound);
    assert_eq!(code(fx.op("alice", FileOp::Unshare { file: f, grantee: bob })), ErrorCode::NotFound);

    // API keys act as themselves: their own files, nobody else's.
    let (_, key) = fx.h.api_key("acme", &["files:read", "files:write"]);
    let (_, admin_key) = fx.h.api_key("acme", &["files:*"]);
    let k = fx.upload(&key, "from-ci.bin", None, 10, 5);
    let key_actor = fx.info(&key, k).unwrap().owner;
    assert!(key_actor.starts_with("key-"), "{key_actor}");
    assert_eq!(code(fx.info(&key, f)), ErrorCode::NotFound);
    assert_eq!(code(fx.info("alice", k)), ErrorCode::NotFound);
    assert_eq!(fx.info(&admin_key, f).unwrap().access, "owner");
}

#[test]
fn links_download_expiry_and_unknown() {
    let mut fx = setup();
    let folder = fx.mkdir("alice", "private-structure", None);
    let f = fx.upload("alice", "handout.pdf", Some(folder), 1234, 1);
    let h1 = *blake3::hash(b"token-1").as_bytes();
    let h2 = *blake3::hash(b"token-2").as_bytes();
    let l1 = fx.created("alice", FileOp::Link { file: f, token_hash: h1, expires_ms: None });
    let expires = fx.h.now + 500;
    fx.created("alice", FileOp::Link { file: f, token_hash: h2, expires_ms: Some(expires) });
    let dup = FileOp::Link { file: f, token_hash: h1, expires_ms: None };
    assert_eq!(code(fx.op("alice", dup)), ErrorCode::AlreadyExists);
    let stranger = FileOp::Link { file: f, token_hash: [3; 32], expires_ms: None };
    assert_eq!(code(fx.op("bob", stranger)), ErrorCode::NotFound);
    let expired = FileOp::Link { file: f, token_hash: [4; 32], expires_ms: Some(fx.h.now) };
    assert_eq!(code(fx.op("alice", expired)), ErrorCode::InvalidArgument);

    let now = fx.h.now;
    let info = fx.by_link(h1, now).unwrap();
    assert_eq!(
        (info.name.as_str(), info.size, info.path.as_str(), info.folder),
        ("handout.pdf", 1234, "/handout.pdf", None)
    );
    assert_eq!(info.access, "read");
    fx.by_link(h2, expires - 1).unwrap();
    let err = fx.by_link(h2, expires).unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (ErrorCode::FailedPrecondition, "link expired"));
    assert_eq!(code(fx.by_link([9; 32], now)), ErrorCode::NotFound);
    let FileAnswer::Links { links } = fx.read("alice", FileCall::Links { file: f.to_string() }).unwrap() else {
        panic!()
    };
    assert_eq!(links.len(), 2);
    assert_eq!(code(fx.read("bob", FileCall::Links { file: f.to_string() })), ErrorCode::NotFound);

    fx.op("alice", FileOp::Unlink { file: f, link: l1 }).unwrap();
    assert_eq!(code(fx.by_link(h1, now)), ErrorCode::NotFound);
    assert_eq!(code(fx.op("alice", FileOp::Unlink { file: f, link: l1 })), ErrorCode::NotFound);
    // A trashed file is not served through its links.
    fx.op("alice", FileOp::Trash { item: ItemId::File(f) }).unwrap();
    assert_eq!(code(fx.by_link(h2, now)), ErrorCode::NotFound);
    fx.op("alice", FileOp::Restore { item: ItemId::File(f) }).unwrap();
    fx.by_link(h2, now).unwrap();
    // Links per file are bounded.
    for i in 1..caddy_core::files::MAX_LINKS {
        fx.created("alice", FileOp::Link { file: f, token_hash: [i as u8; 32], expires_ms: None });
    }
    let over = FileOp::Link { file: f, token_hash: [255; 32], expires_ms: None };
    assert_eq!(code(fx.op("alice", over)), ErrorCode::ResourceExhausted);
}

#[test]
fn another_tenant_sees_nothing() {
    let mut fx = setup();
    let folder = fx.mkdir("alice", "acme-only", None);
    let f = fx.upload("alice", "plan.dxf", Some(folder), 10, 1);
    let globex = t("globex");
    let foreign = fx.caller("foreign");
    for id in [f.to_string(), folder.to_string()] {
        let err = fx.h.sm.file_read(&globex, &foreign, &FileCall::Info { id }, fx.h.now).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
    }
    let err = fx.h.sm.file_download(Some(&globex), &foreign, Some(f), None, None, fx.h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    for op in [
        FileOp::Rename { item: ItemId::File(f), name: "x".into() },
        FileOp::Trash { item: ItemId::File(f) },
        FileOp::Move { item: ItemId::Folder(folder), to: None },
        FileOp::Share { file: f, grantee: Grantee::User(UserId(1)), access: Access::Read, expires_ms: None },
        FileOp::MkDir { name: "x".into(), parent: Some(folder) },
    ] {
        assert_eq!(code(fx.op_in("foreign", "globex", op)), ErrorCode::NotFound);
    }
    // Naming acme itself is refused outright.
    let err = fx.h.sm.file_read(&t("acme"), &foreign, &FileCall::Info { id: f.to_string() }, fx.h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    let err = fx.h.sm.file_download(Some(&t("acme")), &foreign, Some(f), None, None, fx.h.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    assert_eq!(code(fx.op_in("foreign", "acme", FileOp::Trash { item: ItemId::File(f) })), ErrorCode::PermissionDenied);
    assert_eq!(fx.info("alice", f).unwrap().name, "plan.dxf");
}

#[test]
fn trash_restore_folder_with_children_and_purge() {
    let mut fx = setup();
    let a = fx.mkdir("alice", "A", None);
    let b = fx.mkdir("alice", "B", Some(a));
    let f1 = fx.upload("alice", "f1", Some(a), 100, 1);
    let f2 = fx.upload("alice", "f2", Some(b), 200, 2);
    let f3 = fx.upload("alice", "f3", None, 300, 3);
    let used = fx.used_bytes();

    // A folder holding someone else's file is only an admin's to trash.
    let c = fx.mkdir("alice", "C", None);
    let g = fx.upload("bob", "g", Some(c), 50, 4);
    assert_eq!(code(fx.op("alice", FileOp::Trash { item: ItemId::Folder(c) })), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.op("bob", FileOp::Trash { item: ItemId::Folder(a) })), ErrorCode::PermissionDenied);
    fx.op("admin", FileOp::Trash { item: ItemId::Folder(c) }).unwrap();
    assert!(fx.info("bob", g).unwrap().deleted_ms.is_some());
    assert_eq!(code(fx.op("bob", FileOp::Restore { item: ItemId::File(g) })), ErrorCode::FailedPrecondition);
    fx.op("admin", FileOp::Restore { item: ItemId::Folder(c) }).unwrap();
    assert!(fx.info("bob", g).unwrap().deleted_ms.is_none());

    fx.op("alice", FileOp::Trash { item: ItemId::Folder(a) }).unwrap();
    assert_eq!(fx.ls("alice", None), (vec!["C".to_owned()], vec!["f3".to_owned()]));
    assert_eq!(fx.trash("alice"), vec![(a.to_string(), 300)]);
    assert!(fx.trash("bob").is_empty(), "bob sees only his own trash");
    assert_eq!(fx.trash("admin"), vec![(a.to_string(), 300)]);
    assert!(fx.info("alice", f2).unwrap().deleted_ms.is_some());
    let everything = FileCall::Search { query: FileQuery::default(), after: None, limit: None };
    assert_eq!(fx.files_of("alice", everything).0, vec!["f3"]);
    let listing_trashed = FileCall::List { folder: Some(a.to_string()), after: None, limit: None };
    assert_eq!(code(fx.read("alice", listing_trashed)), ErrorCode::FailedPrecondition);
    let u = fx.usage();
    assert_eq!((u.trash_bytes, u.used_bytes), (300, used + 50));
    // Nothing goes into or out of a trashed folder, and its content comes
    // back only with it.
    assert_eq!(
        code(fx.op("alice", FileOp::MkDir { name: "x".into(), parent: Some(b) })),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(code(fx.version("alice", f1, 10, 9)), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.op("alice", FileOp::Restore { item: ItemId::File(f2) })), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.op("alice", FileOp::Purge { item: ItemId::File(f1) })), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.op("alice", FileOp::Trash { item: ItemId::Folder(a) })), ErrorCode::FailedPrecondition);
    // The name is free meanwhile; restoring onto a taken name is refused.
    let a2 = fx.mkdir("alice", "A", None);
    let before = fx.dump();
    assert_eq!(code(fx.op("alice", FileOp::Restore { item: ItemId::Folder(a) })), ErrorCode::AlreadyExists);
    assert_eq!(fx.dump(), before);
    fx.op("alice", FileOp::Rename { item: ItemId::Folder(a2), name: "A-new".into() }).unwrap();
    fx.op("alice", FileOp::Restore { item: ItemId::Folder(a) }).unwrap();
    assert_eq!(fx.info("alice", f2).unwrap().path, "/A/B/f2");
    assert!(fx.info("alice", f2).unwrap().deleted_ms.is_none());
    assert_eq!(fx.ls("alice", Some(a)), (vec!["B".to_owned()], vec!["f1".to_owned()]));
    assert!(fx.trash("alice").is_empty());
    assert_eq!(fx.usage().trash_bytes, 0);

    // A file trashed on its own before its folder stays in the trash when
    // the folder comes back, and restores to the root once its folder is gone.
    fx.op("alice", FileOp::Trash { item: ItemId::File(f2) }).unwrap();
    fx.op("alice", FileOp::Trash { item: ItemId::Folder(a) }).unwrap();
    assert_eq!(fx.trash("alice").len(), 2);
    fx.op("alice", FileOp::Purge { item: ItemId::Folder(a) }).unwrap();
    assert_eq!(code(fx.info("alice", f1)), ErrorCode::NotFound);
    assert_eq!(code(fx.read("alice", FileCall::Info { id: b.to_string() })), ErrorCode::NotFound);
    assert_eq!(fx.trash("alice"), vec![(f2.to_string(), 200)]);
    fx.op("alice", FileOp::Restore { item: ItemId::File(f2) }).unwrap();
    assert_eq!(fx.info("alice", f2).unwrap().path, "/f2");
    assert_eq!(fx.used_bytes(), used + 50 - 100);

    // Purge only what is in the trash; it frees the quota.
    assert_eq!(code(fx.op("alice", FileOp::Purge { item: ItemId::File(f3) })), ErrorCode::FailedPrecondition);
    fx.op("alice", FileOp::Trash { item: ItemId::File(f3) }).unwrap();
    assert_eq!(code(fx.op("bob", FileOp::Purge { item: ItemId::File(f3) })), ErrorCode::NotFound);
    fx.op("alice", FileOp::Purge { item: ItemId::File(f3) }).unwrap();
    assert_eq!(code(fx.info("alice", f3)), ErrorCode::NotFound);
    assert_eq!(fx.used_bytes(), used + 50 - 100 - 300);
    let u = fx.usage();
    assert_eq!((u.files, u.folders, u.file_bytes, u.trash_bytes), (2, 2, 250, 0));
    assert!(fx.keys_with("T/").is_empty() && fx.keys_with("t/acme/x/").is_empty());
}

#[test]
fn retention_sweep_purges_expired_items_and_docs() {
    const DAY: u64 = 86_400_000;
    let mut fx = setup();
    let keep = fx.upload("alice", "keep", None, 10, 1);
    let old = fx.upload("alice", "old", None, 1000, 2);
    let folder = fx.mkdir("alice", "old-folder", None);
    let inner = fx.upload("alice", "inner", Some(folder), 500, 3);
    let alice = fx.cred("alice");
    let doc = match fx.h.call(&alice, Some("acme"), Op::DocCreate { name: "Old drawing".into(), units: None }).unwrap()
    {
        ReplyBody::Created { id } => DocId(id),
        other => panic!("{other:?}"),
    };
    let doc_bytes = fx.h.sm.doc_info(&t("acme"), doc).unwrap().bytes;
    let used = fx.used_bytes();
    // Expiring shares and links go in the same sweep.
    let bob = Grantee::User(fx.users["bob"]);
    let soon = fx.h.now + DAY;
    fx.op("alice", FileOp::Share { file: keep, grantee: bob, access: Access::Read, expires_ms: Some(soon) }).unwrap();
    let token = *blake3::hash(b"t").as_bytes();
    fx.created("alice", FileOp::Link { file: keep, token_hash: token, expires_ms: Some(soon) });

    fx.op("alice", FileOp::Trash { item: ItemId::File(old) }).unwrap();
    fx.op("alice", FileOp::Trash { item: ItemId::Folder(folder) }).unwrap();
    // `caddyctl doc delete` lands in the same trash.
    fx.h.call(&alice, Some("acme"), Op::DocSetDeleted { doc, deleted: true }).unwrap();
    let trashed_at = fx.h.now;
    let listed: Vec<String> = fx.trash("alice").into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, vec![doc.to_string(), folder.to_string(), old.to_string()], "newest first");
    assert_eq!(fx.trash("alice")[0].1, doc_bytes);

    let sweep = |fx: &mut Fx| fx.h.command(Command::FilesSweep { trash_retention_ms: 7 * DAY }).unwrap();
    fx.h.now += 6 * DAY;
    sweep(&mut fx);
    assert_eq!(fx.trash("alice").len(), 3, "nothing purged before its retention ended");
    assert_eq!(fx.used_bytes(), used);
    assert!(fx.h.sm.doc_info(&t("acme"), doc).is_ok());
    // Expired shares and links are gone already.
    assert_eq!(code(fx.info("bob", keep)), ErrorCode::NotFound);
    let FileAnswer::Shares { shares } = fx.read("alice", FileCall::Shares { file: keep.to_string() }).unwrap() else {
        panic!()
    };
    assert!(shares.is_empty());
    assert_eq!(code(fx.by_link(token, 0)), ErrorCode::NotFound);
    assert!(fx.keys_with("E/").is_empty() && fx.keys_with("L/").is_empty());

    fx.h.now = trashed_at + 7 * DAY;
    sweep(&mut fx);
    assert!(fx.trash("admin").is_empty());
    for gone in [old, inner] {
        assert_eq!(code(fx.info("alice", gone)), ErrorCode::NotFound);
    }
    assert_eq!(code(fx.read("alice", FileCall::Info { id: folder.to_string() })), ErrorCode::NotFound);
    assert_eq!(fx.h.sm.doc_info(&t("acme"), doc).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(fx.used_bytes(), used - 1000 - 500 - doc_bytes);
    let u = fx.usage();
    assert_eq!((u.files, u.folders, u.versions, u.file_bytes, u.trash_bytes), (1, 0, 1, 10, 0));
    assert!(fx.keys_with("T/").is_empty());
    let txn = fx.h.sm.db().begin_read().unwrap();
    let docs = txn.open_table(crate::docs::DOCS).unwrap();
    assert_eq!(docs.range("t/acme/".."t/acme0").unwrap().count(), 0, "the document left records behind");
    drop(docs);
    drop(txn);
    assert_eq!(fx.info("alice", keep).unwrap().name, "keep");

    // Documents restored through the files calls leave the trash; purge
    // through them needs the trash first.
    let d2 = match fx.h.call(&alice, Some("acme"), Op::DocCreate { name: "d2".into(), units: None }).unwrap() {
        ReplyBody::Created { id } => DocId(id),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(fx.op("alice", FileOp::Purge { item: ItemId::Doc(d2) })), ErrorCode::FailedPrecondition);
    assert_eq!(code(fx.op("bob", FileOp::Trash { item: ItemId::Doc(d2) })), ErrorCode::PermissionDenied);
    assert_eq!(code(fx.op("reader", FileOp::Trash { item: ItemId::Doc(d2) })), ErrorCode::PermissionDenied);
    fx.op("alice", FileOp::Trash { item: ItemId::Doc(d2) }).unwrap();
    assert_eq!(fx.trash("alice").len(), 1);
    fx.op("alice", FileOp::Restore { item: ItemId::Doc(d2) }).unwrap();
    assert!(fx.trash("alice").is_empty() && fx.keys_with("T/").is_empty());
    assert!(fx.h.sm.doc_info(&t("acme"), d2).unwrap().deleted_ms.is_none());
    let with_doc = fx.used_bytes();
    let d2_bytes = fx.h.sm.doc_info(&t("acme"), d2).unwrap().bytes;
    fx.op("alice", FileOp::Trash { item: ItemId::Doc(d2) }).unwrap();
    fx.op("alice", FileOp::Purge { item: ItemId::Doc(d2) }).unwrap();
    assert_eq!(fx.h.sm.doc_info(&t("acme"), d2).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(fx.used_bytes(), with_doc - d2_bytes);
    assert!(fx.trash("alice").is_empty() && fx.keys_with("T/").is_empty());
    let audited: Vec<String> = fx.h.audit(Some("acme")).into_iter().map(|e| e.action).collect();
    assert!(audited.contains(&"file.purge".to_owned()) && audited.contains(&"file.trash".to_owned()));
}

#[test]
fn favorites_and_recent_are_bounded_and_ordered() {
    let mut fx = setup();
    let f1 = fx.upload("alice", "f1", None, 1, 1);
    let f2 = fx.upload("alice", "f2", None, 1, 2);
    let f3 = fx.upload("alice", "f3", None, 1, 3);
    assert_eq!(fx.files_of("alice", FileCall::Recent).0, vec!["f3", "f2", "f1"]);
    fx.op("alice", FileOp::Touch { file: f1 }).unwrap();
    assert_eq!(fx.files_of("alice", FileCall::Recent).0, vec!["f1", "f3", "f2"]);
    assert_eq!(code(fx.op("bob", FileOp::Touch { file: f1 })), ErrorCode::NotFound);
    // Touch and favorites need only files:read.
    let reader = Grantee::User(fx.users["reader"]);
    fx.op("alice", FileOp::Share { file: f2, grantee: reader, access: Access::Read, expires_ms: None }).unwrap();
    fx.op("reader", FileOp::Touch { file: f2 }).unwrap();
    fx.op("reader", FileOp::Favorite { file: f2, on: true }).unwrap();
    assert_eq!(fx.files_of("reader", FileCall::Recent).0, vec!["f2"]);
    assert_eq!(fx.files_of("reader", FileCall::Favorites).0, vec!["f2"]);
    assert!(fx.info("reader", f2).unwrap().favorite);
    // Files no longer visible drop out of both lists; unmarking still works.
    fx.op("alice", FileOp::Unshare { file: f2, grantee: reader }).unwrap();
    assert!(fx.files_of("reader", FileCall::Favorites).0.is_empty());
    assert!(fx.files_of("reader", FileCall::Recent).0.is_empty());
    fx.op("reader", FileOp::Favorite { file: f2, on: false }).unwrap();
    assert_eq!(code(fx.op("reader", FileOp::Favorite { file: f2, on: false })), ErrorCode::NotFound);
    assert_eq!(code(fx.op("reader", FileOp::Favorite { file: f2, on: true })), ErrorCode::NotFound);

    fx.op("alice", FileOp::Favorite { file: f3, on: true }).unwrap();
    fx.op("alice", FileOp::Favorite { file: f1, on: true }).unwrap();
    fx.op("alice", FileOp::Favorite { file: f1, on: true }).unwrap();
    assert_eq!(fx.files_of("alice", FileCall::Favorites).0, vec!["f1", "f3"]);
    assert!(fx.info("alice", f1).unwrap().favorite && !fx.info("alice", f2).unwrap().favorite);
    fx.op("alice", FileOp::Favorite { file: f1, on: false }).unwrap();
    assert_eq!(fx.files_of("alice", FileCall::Favorites).0, vec!["f3"]);
    fx.op("alice", FileOp::Trash { item: ItemId::File(f3) }).unwrap();
    assert!(fx.files_of("alice", FileCall::Favorites).0.is_empty());

    // Recent is bounded, newest first.
    for i in 0..MAX_RECENT + 5 {
        fx.upload("alice", &format!("n{i:03}"), None, 1, 9);
    }
    let recent = fx.files_of("alice", FileCall::Recent).0;
    assert_eq!(recent.len(), MAX_RECENT);
    assert_eq!(recent[0], format!("n{:03}", MAX_RECENT + 4));
    assert_eq!(recent[MAX_RECENT - 1], "n005");
}

#[test]
fn search_filters_and_paging() {
    let mut fx = setup();
    let x = fx.mkdir("alice", "X", None);
    let mk = |name: &str, folder, media: &str, tags: &[&str]| CommitTarget::New {
        name: name.into(),
        folder,
        media_type: media.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    };
    fx.op("alice", commit_op(mk("Plan-A.dxf", None, "image/vnd.dxf", &["floor"]), chunks(1, 1), BOUNDS)).unwrap();
    let mid = fx.h.now + 1;
    fx.op("alice", commit_op(mk("plan-b.dxf", Some(x), "image/vnd.dxf", &[]), chunks(1, 1), BOUNDS)).unwrap();
    fx.op("alice", commit_op(mk("notes.txt", None, "Text/Plain", &["floor", "draft"]), chunks(1, 1), BOUNDS)).unwrap();
    let late = fx.h.now + 1;
    fx.op("alice", commit_op(mk("model.step", None, "model/step", &[]), chunks(1, 1), BOUNDS)).unwrap();
    let trashed = fx.upload("alice", "plan-old.dxf", None, 1, 1);
    fx.op("alice", FileOp::Trash { item: ItemId::File(trashed) }).unwrap();
    fx.upload("bob", "bobs-plan.dxf", None, 1, 1);

    let search = |fx: &Fx, who: &str, query: FileQuery| {
        let mut names = fx.files_of(who, FileCall::Search { query, after: None, limit: Some(1000) }).0;
        names.sort();
        names
    };
    let q = |f: fn(&mut FileQuery)| {
        let mut query = FileQuery::default();
        f(&mut query);
        query
    };
    assert_eq!(search(&fx, "alice", q(|q| q.name = Some("PLAN".into()))), vec!["Plan-A.dxf", "plan-b.dxf"]);
    assert_eq!(search(&fx, "alice", q(|q| q.tag = Some("floor".into()))), vec!["Plan-A.dxf", "notes.txt"]);
    assert_eq!(search(&fx, "alice", q(|q| q.media_type = Some("image/".into()))), vec!["Plan-A.dxf", "plan-b.dxf"]);
    assert_eq!(search(&fx, "alice", q(|q| q.media_type = Some("text/plain".into()))), vec!["notes.txt"]);
    assert_eq!(search(&fx, "alice", q(|q| q.media_type = Some("model".into()))), Vec::<String>::new());
    let in_x = FileQuery { folder: Some(x.to_string()), ..FileQuery::default() };
    assert_eq!(search(&fx, "alice", in_x), vec!["plan-b.dxf"]);
    let in_root = FileQuery { folder: Some("root".into()), ..FileQuery::default() };
    assert_eq!(search(&fx, "alice", in_root), vec!["Plan-A.dxf", "model.step", "notes.txt"]);
    let range = FileQuery { modified_after: Some(mid), modified_before: Some(late), ..FileQuery::default() };
    assert_eq!(search(&fx, "alice", range), vec!["notes.txt", "plan-b.dxf"]);
    let both = FileQuery { name: Some("plan".into()), tag: Some("floor".into()), ..FileQuery::default() };
    assert_eq!(search(&fx, "alice", both), vec!["Plan-A.dxf"]);
    // Only what the caller can see; an admin sees everyone's.
    assert_eq!(search(&fx, "bob", FileQuery::default()), vec!["bobs-plan.dxf"]);
    assert_eq!(search(&fx, "admin", FileQuery::default()).len(), 5);

    // Paging by file id: every visible file once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let call = FileCall::Search { query: FileQuery::default(), after: after.clone(), limit: Some(2) };
        let (names, next) = fx.files_of("alice", call);
        assert!(names.len() <= 2);
        seen.extend(names);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["Plan-A.dxf", "model.step", "notes.txt", "plan-b.dxf"]);
    let bad = FileCall::Search { query: FileQuery::default(), after: Some("nope".into()), limit: None };
    assert_eq!(code(fx.read("alice", bad)), ErrorCode::InvalidArgument);
}

#[test]
fn snapshot_restore_keeps_files() {
    let mut fx = setup();
    let folder = fx.mkdir("alice", "plans", None);
    let f = fx.upload("alice", "a.dxf", Some(folder), MIB + 5, 1);
    fx.version("alice", f, 20, 2).unwrap();
    let token = *blake3::hash(b"snap").as_bytes();
    fx.created("alice", FileOp::Link { file: f, token_hash: token, expires_ms: None });
    let bob = Grantee::User(fx.users["bob"]);
    fx.op("alice", FileOp::Share { file: f, grantee: bob, access: Access::Read, expires_ms: None }).unwrap();
    let trashed = fx.upload("alice", "t", None, 3, 3);
    fx.op("alice", FileOp::Trash { item: ItemId::File(trashed) }).unwrap();

    let file = fx.h._dir.path().join("files.snap");
    fx.h.sm.export(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = StateMachineStore::open(&Disk::Dir(dir.path().to_path_buf())).unwrap();
    copy.restore_backup(&file).unwrap();
    let now = fx.h.now;
    for who in ["alice", "bob"] {
        let caller = fx.caller(who);
        let a = fx.h.sm.file_read(&t("acme"), &caller, &FileCall::Info { id: f.to_string() }, now).unwrap();
        let b = copy.file_read(&t("acme"), &caller, &FileCall::Info { id: f.to_string() }, now).unwrap();
        assert_eq!(a, b, "{who}");
        let list = FileCall::List { folder: Some(folder.to_string()), after: None, limit: None };
        assert_eq!(
            fx.h.sm.file_read(&t("acme"), &caller, &list, now).unwrap(),
            copy.file_read(&t("acme"), &caller, &list, now).unwrap()
        );
    }
    let admin = fx.caller("admin");
    for call in [FileCall::Trash, FileCall::Usage, FileCall::Versions { file: f.to_string() }] {
        assert_eq!(
            fx.h.sm.file_read(&t("acme"), &admin, &call, now).unwrap(),
            copy.file_read(&t("acme"), &admin, &call, now).unwrap()
        );
    }
    let (_, info, v) = copy.file_download(None, &Caller::Anonymous, None, Some(token), Some(1), now).unwrap();
    assert_eq!((info.name.as_str(), v.size, v.chunks), ("a.dxf", MIB + 5, chunks(MIB + 5, 1)));
    assert_eq!(copy.chunk_refs_page(None, 100).unwrap(), fx.h.sm.chunk_refs_page(None, 100).unwrap());
}

#[test]
fn tenant_delete_removes_files_and_global_indexes() {
    let mut fx = setup();
    let f = fx.upload("alice", "a", None, 10, 1);
    let soon = fx.h.now + 1000;
    fx.created("alice", FileOp::Link { file: f, token_hash: [1; 32], expires_ms: Some(soon) });
    fx.created("alice", FileOp::Link { file: f, token_hash: [2; 32], expires_ms: None });
    let bob = Grantee::User(fx.users["bob"]);
    fx.op("alice", FileOp::Share { file: f, grantee: bob, access: Access::Read, expires_ms: Some(soon) }).unwrap();
    let t2 = fx.upload("alice", "t", None, 10, 2);
    fx.op("alice", FileOp::Trash { item: ItemId::File(t2) }).unwrap();
    fx.op("alice", FileOp::Favorite { file: f, on: true }).unwrap();
    // globex keeps its own.
    let gf = match fx.op_in("foreign", "globex", commit_op(new_file("g", None), chunks(10, 3), BOUNDS)).unwrap() {
        ReplyBody::Created { id } => FileId(id),
        other => panic!("{other:?}"),
    };
    fx.op_in("foreign", "globex", FileOp::Link { file: gf, token_hash: [3; 32], expires_ms: None }).unwrap();
    assert!(!fx.keys_with("E/").is_empty() && !fx.keys_with("T/").is_empty());

    fx.h.op(Some("acme"), Op::TenantDelete);
    assert!(fx.keys_with("t/acme/").is_empty(), "{:?}", fx.keys_with("t/acme/"));
    let globals: Vec<String> = fx.keys_with("").into_iter().filter(|k| !k.starts_with("t/")).collect();
    assert_eq!(globals, vec![format!("L/{}", hex::encode([3u8; 32]))]);
    assert!(fx.keys_with("E/").is_empty() && fx.keys_with("T/").is_empty());
    assert_eq!(code(fx.by_link([2; 32], 0)), ErrorCode::NotFound);
    assert!(fx.h.sm.chunk_refs_page(None, 100).unwrap().iter().all(|(t, _)| t.as_str() == "globex"));
    assert_eq!(fx.keys_with("t/globex/c/").len(), 1);
    fx.by_link([3; 32], 0).unwrap();
}
