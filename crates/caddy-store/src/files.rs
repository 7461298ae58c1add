//! Files in the state machine: folders, files and their versions (chunk
//! lists only: the bytes live in the blob store), the per-folder name index,
//! chunk reference counts, shares, share links, favorites, recent files, the
//! trash (CAD documents included) and its retention sweep.
//!
//! # Layout of the `files` table
//!
//! `F` is 16 hex digits of an id, `N` of a version number, `MS` of a stamped
//! time, `{actor}` an actor string (`user-3`, `key-4`, `operator`),
//! `{item}` an item id (`file-3`, `folder-2`, `doc-7`).
//!
//! Per tenant `t`:
//! - `t/{t}/d/F`: [`FolderRec`] (name, parent, creator, trash state);
//! - `t/{t}/f/F`: [`FileRec`] (name, folder, media type, tags, owner,
//!   current version, next version number, versions kept, bytes of all
//!   kept versions, trash state);
//! - `t/{t}/v/F/N`: [`VersionRec`] (size, content hash, chunk list, author);
//! - `t/{t}/n/{F of the folder, or root}/{name}`: the [`ItemId`] holding
//!   that name in that folder (files and folders share it);
//! - `t/{t}/c/{blake3 hex}`: `u64`, how many chunk slots of version
//!   records reference the chunk;
//! - `t/{t}/s/F/{user-N|team-N}`: [`ShareRec`];
//! - `t/{t}/l/F/{link F}`: [`LinkRec`];
//! - `t/{t}/fav/{actor}/F`: favorite (value: stamped time);
//! - `t/{t}/r/{actor}`: [`RecentRec`], newest first, at most [`MAX_RECENT`];
//! - `t/{t}/x/MS/{item}`: [`TrashRec`], the tenant's trash by time;
//! - `t/{t}/u`: [`Counters`] (files, versions, folders, file bytes, trash
//!   bytes; trashed files and folders count until purged).
//!
//! Global:
//! - `L/{token hash hex}`: [`LinkRef`] (tenant, file, link) for downloads
//!   through a link without a credential;
//! - `T/MS/{t}/{item}`: [`TrashRef`], every tenant's trash by time, so the
//!   sweep reads only what expired;
//! - `E/MS/{t}/s/F/{grantee}` and `E/MS/{t}/l/F/{link F}`: [`ExpiryRef`],
//!   shares and links by expiry, so the sweep reads only what expired.
//!
//! # Access rules
//!
//! Every op needs its permission first (`files:write`, or `files:read` for
//! favorites and recent files; checked by the identity apply path and, for
//! reads, here). Then:
//! - **Admins**: the operator and callers holding `files:admin` (granted
//!   by `files:*`) see and may do everything; their `access` is `owner`.
//! - **Folders** are tenant-wide structure: visible to every `files:read`
//!   holder; created, moved and renamed with `files:write`. Trashing,
//!   restoring or purging a folder needs `files:admin`, or being its
//!   creator *and* owning every file in it (a folder holding other users'
//!   files is only an admin's to throw away).
//! - **Files** are private to their owner (the actor that uploaded the
//!   first version; API keys own as `key-N`) unless shared: a live,
//!   unexpired share (`expires_ms > now`) to the user or to a team the user
//!   is in (directly or through nested teams) gives `read` (info, download,
//!   versions, favorite, recent) or `write` (also new versions, rename,
//!   move, tags, restore a version). API keys get nothing through shares.
//!   Shares give nothing on a trashed file. Share, unshare, link, unlink,
//!   trash, restore, purge, and listing shares and links: owner or admin.
//! - A caller without any access to a file gets `not_found`, exactly as for
//!   a file that does not exist; with some access but not enough,
//!   `permission_denied`. Another tenant's ids are simply not found.
//! - **Documents** in the trash (`doc-N` items) follow the document rules:
//!   `docs:write` and the document's owner or `docs:admin`.
//!
//! # Invariants
//!
//! - Every op validates everything before its first write: a refused op
//!   changes nothing (but the audit chain, written by the caller).
//! - The chunk reference count of a hash equals the number of chunk slots
//!   of version records referencing it (a version naming a chunk twice
//!   counts twice); an entry is removed when it reaches zero, so a hash is
//!   referenced iff its entry exists.
//! - `usage.storage_bytes` of the tenant includes the size of every stored
//!   version (trashed files included, until purged), besides documents and
//!   key-value pairs; `FileRec::bytes` is the sum of its kept versions and
//!   `Counters::file_bytes` the sum over files.
//! - The name index maps `(folder, name)` to the one item holding it: every
//!   item not trashed on its own. Trashing an item releases its name; the
//!   contents of a trashed folder keep theirs (nothing can enter a trashed
//!   folder), so restoring the folder needs no name checks below it.
//! - An item is in the trash index iff it was trashed on its own (files,
//!   folders, documents). Items trashed with a folder carry
//!   `trashed_with: Some(folder)` and come back or go away with it; they
//!   cannot be restored or purged one by one.
//! - Ids (files, folders, links) come from the tenant's id counter in the
//!   tenant record and are never reused.
//!
//! # Decisions
//!
//! - A new version beyond the versions kept drops the oldest ones (their
//!   bytes and chunk references are released); the quota is judged on the
//!   net growth. Restoring version `k` adds a *new* current version `n+1`
//!   holding `k`'s chunks (so history only grows), under the same quota
//!   and cap.
//! - Restoring puts an item back in its folder if that folder is live,
//!   else in the root; a name taken there meanwhile is `already_exists`.
//! - Purging a folder purges what was trashed with it; files trashed on
//!   their own before stay in the trash (and restore to the root).
//! - Trashed documents released their `documents` quota when trashed
//!   (document rule); purging releases their bytes.
//! - Favorites and recent entries of files that were purged or are no
//!   longer visible stay stored and are filtered when read.
//! - The sweep ([`sweep`]) is system upkeep: it writes no audit entry.
//!   It purges at most [`SWEEP_BUDGET`] items per run (the next run goes on).
//! - Trashing, restoring or purging a folder touches at most
//!   [`MAX_TREE_ITEMS`] items (more: `resource_exhausted`, work on the
//!   subfolders first).
//! - Listings and searches examine at most [`MAX_SCAN`] records per page;
//!   a page may come back short with a `next` cursor. Folder listings page
//!   by name (each page: its subfolders, then its files); searches by id.
//! - `Info` shows a trashed file to its owner and admins (with
//!   `deleted_ms`); list, search, favorites, recent and downloads never show
//!   trashed files. The trash listing is newest first, at most
//!   [`MAX_TRASH_LISTED`] entries: the caller's own, or all for admins (a
//!   folder's entry stands for what was trashed with it).
//! - Share and link listings show expired entries until the sweep drops
//!   them; expired ones grant nothing meanwhile. Link downloads show the
//!   file without its folder (path `/{name}`).
//! - The upload precheck has no stamped time: it judges shares as
//!   unexpired (apply judges them at its stamp).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;

use caddy_core::docs::DocId;
use caddy_core::files::{
    Access, ChunkRef, CommitTarget, FileAnswer, FileBounds, FileCall, FileId, FileInfo, FileOp, FileQuery, FolderId,
    FolderInfo, Grantee, ItemId, LinkInfo, MAX_FAVORITES, MAX_FOLDER_DEPTH, MAX_LINKS, MAX_RECENT, MAX_SHARES,
    ShareInfo, StorageUsage, TrashEntry, VersionInfo, check_chunk_layout, content_hash, file_tags, item_name,
    media_type, parse_folder,
};
use caddy_core::identity::api::Op;
use caddy_core::identity::{
    Action, Actor, Caller, Permission, QuotaKind, Quotas, Resource, ResourceKind, TeamGraph, TeamId, TenantId, Usage,
    UserId, authorize,
};
use caddy_core::{CaddyError, ErrorCode, ReplyBody};
use redb::{ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::identity::keys_under;
use crate::io_err;
use crate::state_machine::{Tables, open_record, seal};

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;

pub(crate) const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");

/// Items one trash, restore or purge of a folder may touch.
pub const MAX_TREE_ITEMS: usize = 100_000;
/// Items one sweep may purge or expire.
pub const SWEEP_BUDGET: usize = 10_000;
/// Records a listing or search examines per page.
pub const MAX_SCAN: usize = 10_000;
/// Entries a trash listing returns (newest first).
pub const MAX_TRASH_LISTED: usize = 1000;
/// Versions a versions listing returns (oldest first).
const MAX_VERSIONS_LISTED: usize = 10_000;
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// What a download reads: one version's chunk list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecordView {
    /// The version number.
    pub version: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        }
    };
}

// ------------------------------------------------------------------ records

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FolderRec {
    id: FolderId,
    name: String,
    parent: Option<FolderId>,
    created_by: String,
    created_ms: u64,
    deleted_ms: Option<u64>,
    deleted_by: Option<String>,
    trashed_with: Option<ItemId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRec {
    id: FileId,
    name: String,
    folder: Option<FolderId>,
    media_type: String,
    tags: Vec<String>,
    owner: String,
    owner_user: Option<u64>,
    created_by: String,
    created_ms: u64,
    modified_by: String,
    modified_ms: u64,
    /// Current version number.
    current: u64,
    /// The number the next version gets.
    next_version: u64,
    /// Versions kept.
    versions: u64,
    /// Size and content hash of the current version.
    size: u64,
    content_hash: [u8; 32],
    /// Bytes of every kept version.
    bytes: u64,
    deleted_ms: Option<u64>,
    deleted_by: Option<String>,
    trashed_with: Option<ItemId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRec {
    n: u64,
    size: u64,
    content_hash: [u8; 32],
    chunks: Vec<ChunkRef>,
    author: String,
    stamp_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShareRec {
    grantee: Grantee,
    access: Access,
    expires_ms: Option<u64>,
    granted_by: String,
    granted_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinkRec {
    id: u64,
    file: FileId,
    token_hash: [u8; 32],
    expires_ms: Option<u64>,
    created_by: String,
    created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinkRef {
    tenant: TenantId,
    file: FileId,
    link: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counters {
    files: u64,
    versions: u64,
    folders: u64,
    file_bytes: u64,
    trash_bytes: u64,
}

/// An item in a tenant's trash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrashRec {
    pub(crate) item: ItemId,
    pub(crate) name: String,
    /// The actor it belongs to (file owner, folder creator, document owner).
    pub(crate) owner: String,
    pub(crate) deleted_by: String,
    pub(crate) deleted_ms: u64,
    /// Bytes it holds (a folder: every file trashed with it).
    pub(crate) bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrashRef {
    tenant: TenantId,
    item: ItemId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ExpiryRef {
    Share { tenant: TenantId, file: FileId, grantee: Grantee },
    Link { tenant: TenantId, file: FileId, link: u64 },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RecentRec {
    files: Vec<(FileId, u64)>,
}

// --------------------------------------------------------------------- keys

fn k_folder(t: &TenantId, id: FolderId) -> String {
    format!("t/{t}/d/{}", id.key_part())
}
fn p_files(t: &TenantId) -> String {
    format!("t/{t}/f/")
}
fn k_file(t: &TenantId, id: FileId) -> String {
    format!("t/{t}/f/{}", id.key_part())
}
fn p_versions(t: &TenantId, f: FileId) -> String {
    format!("t/{t}/v/{}/", f.key_part())
}
fn k_version(t: &TenantId, f: FileId, n: u64) -> String {
    format!("{}{n:016x}", p_versions(t, f))
}
fn p_names(t: &TenantId, folder: Option<FolderId>) -> String {
    match folder {
        Some(f) => format!("t/{t}/n/{}/", f.key_part()),
        None => format!("t/{t}/n/root/"),
    }
}
fn k_name(t: &TenantId, folder: Option<FolderId>, name: &str) -> String {
    format!("{}{name}", p_names(t, folder))
}
fn p_chunks(t: &TenantId) -> String {
    format!("t/{t}/c/")
}
fn k_chunk(t: &TenantId, hash: &[u8; 32]) -> String {
    format!("t/{t}/c/{}", hex::encode(hash))
}
fn p_shares(t: &TenantId, f: FileId) -> String {
    format!("t/{t}/s/{}/", f.key_part())
}
fn k_share(t: &TenantId, f: FileId, g: Grantee) -> String {
    format!("{}{g}", p_shares(t, f))
}
fn p_links(t: &TenantId, f: FileId) -> String {
    format!("t/{t}/l/{}/", f.key_part())
}
fn k_link(t: &TenantId, f: FileId, link: u64) -> String {
    format!("{}{link:016x}", p_links(t, f))
}

/// Whether link `link` of file `f` opens with the token hashing to `token_hash`.
pub(crate) fn link_token_is(
    files: &impl ReadableTable<&'static str, &'static [u8]>,
    t: &TenantId,
    f: FileId,
    link: u64,
    token_hash: &[u8; 32],
) -> io::Result<bool> {
    Ok(get::<LinkRec>(files, &k_link(t, f, link))?.is_some_and(|l| l.token_hash == *token_hash))
}
fn g_link(hash: &[u8; 32]) -> String {
    format!("L/{}", hex::encode(hash))
}
fn p_favorites(t: &TenantId, actor: &str) -> String {
    format!("t/{t}/fav/{actor}/")
}
fn k_favorite(t: &TenantId, actor: &str, f: FileId) -> String {
    format!("{}{}", p_favorites(t, actor), f.key_part())
}
fn k_recent(t: &TenantId, actor: &str) -> String {
    format!("t/{t}/r/{actor}")
}
fn k_counters(t: &TenantId) -> String {
    format!("t/{t}/u")
}
fn p_tenant_trash(t: &TenantId) -> String {
    format!("t/{t}/x/")
}
fn k_tenant_trash(t: &TenantId, ms: u64, item: &ItemId) -> String {
    format!("t/{t}/x/{ms:016x}/{item}")
}
fn g_trash(ms: u64, t: &TenantId, item: &ItemId) -> String {
    format!("T/{ms:016x}/{t}/{item}")
}
fn g_share_expiry(ms: u64, t: &TenantId, f: FileId, g: Grantee) -> String {
    format!("E/{ms:016x}/{t}/s/{}/{g}", f.key_part())
}
fn g_link_expiry(ms: u64, t: &TenantId, f: FileId, link: u64) -> String {
    format!("E/{ms:016x}/{t}/l/{}/{link:016x}", f.key_part())
}

/// Every key of a tenant in the `files` table starts with this.
pub(crate) fn tenant_files_prefix(t: &TenantId) -> String {
    format!("t/{t}/")
}

/// The smallest key after every key starting with `prefix` when `prefix`
/// ends in `/` (`/` + 1 is `0`).
fn prefix_end(prefix: &str) -> String {
    match prefix.strip_suffix('/') {
        Some(head) => format!("{head}0"),
        None => format!("{prefix}\u{10ffff}"),
    }
}

// ----------------------------------------------------------------- helpers

/// Read access to a `&str -> &[u8]` table (write tables and read-only
/// tables alike).
pub(crate) trait Tbl: ReadableTable<&'static str, &'static [u8]> {}
impl<T: ReadableTable<&'static str, &'static [u8]>> Tbl for T {}

pub(crate) type FTable<'t> = Table<'t, &'static str, &'static [u8]>;

pub(crate) fn get<T: DeserializeOwned>(table: &impl Tbl, key: &str) -> io::Result<Option<T>> {
    match table.get(key).map_err(io_err)? {
        Some(v) => Ok(Some(open_record(key, v.value())?)),
        None => Ok(None),
    }
}

fn exists(table: &impl Tbl, key: &str) -> io::Result<bool> {
    Ok(table.get(key).map_err(io_err)?.is_some())
}

pub(crate) fn put<T: Serialize>(table: &mut FTable<'_>, key: &str, value: &T) -> io::Result<()> {
    table.insert(key, seal(value)?.as_slice()).map_err(io_err)?;
    Ok(())
}

pub(crate) fn del(table: &mut FTable<'_>, key: &str) -> io::Result<()> {
    table.remove(key).map_err(io_err)?;
    Ok(())
}

/// Records under `prefix` strictly after the key `after` (a full key), at
/// most `limit`, with their full keys; the flag says whether more follow.
pub(crate) fn scan<T: DeserializeOwned>(
    table: &impl Tbl,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> io::Result<(Vec<(String, T)>, bool)> {
    let start = after.map_or_else(|| prefix.to_owned(), |a| format!("{a}\u{0}"));
    let mut out = Vec::new();
    for item in table.range(start.as_str()..).map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((k.value().to_owned(), open_record(k.value(), v.value())?));
    }
    Ok((out, false))
}

/// How many keys start with `prefix`, counting at most `cap`.
fn count(table: &impl Tbl, prefix: &str, cap: usize) -> io::Result<usize> {
    let mut n = 0;
    for item in table.range(prefix..).map_err(io_err)? {
        let (k, _) = item.map_err(io_err)?;
        if !k.value().starts_with(prefix) || n == cap {
            break;
        }
        n += 1;
    }
    Ok(n)
}

fn not_found(what: impl std::fmt::Display) -> CaddyError {
    CaddyError::new(ErrorCode::NotFound, format!("{what} not found"))
}

fn denied(message: impl Into<String>) -> CaddyError {
    CaddyError::new(ErrorCode::PermissionDenied, message)
}

fn in_trash(what: impl std::fmt::Display) -> CaddyError {
    CaddyError::precondition(format!("{what} is in the trash: restore it first"))
}

fn folder_label(folder: Option<FolderId>) -> String {
    folder.map_or_else(|| "the root folder".to_owned(), |f| f.to_string())
}

fn taken(name: &str, folder: Option<FolderId>) -> CaddyError {
    CaddyError::new(ErrorCode::AlreadyExists, format!("{name:?} already exists in {}", folder_label(folder)))
}

fn page(limit: Option<u32>) -> usize {
    limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize
}

fn counters(files: &impl Tbl, t: &TenantId) -> io::Result<Counters> {
    Ok(get(files, &k_counters(t))?.unwrap_or_default())
}

fn bump(files: &mut FTable<'_>, t: &TenantId, change: impl FnOnce(&mut Counters)) -> io::Result<()> {
    let mut c = counters(&*files, t)?;
    change(&mut c);
    put(files, &k_counters(t), &c)
}

fn sum_bytes<'a>(recs: impl IntoIterator<Item = &'a FileRec>) -> u64 {
    recs.into_iter().fold(0u64, |a, r| a.saturating_add(r.bytes))
}

// ------------------------------------------------------------------ access

/// How much a caller may do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None,
    Read,
    Write,
    Owner,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Read => "read",
            Level::Write => "write",
            Level::Owner => "owner",
        }
    }
}

impl From<Access> for Level {
    fn from(a: Access) -> Level {
        match a {
            Access::Read => Level::Read,
            Access::Write => Level::Write,
        }
    }
}

/// The caller as the access rules see it.
struct Who {
    actor: String,
    user: Option<UserId>,
    teams: BTreeSet<TeamId>,
    admin: bool,
}

impl Who {
    fn new(caller: &Caller, t: &TenantId, teams: &TeamGraph) -> Who {
        let admin =
            authorize(caller, Some(t), Permission::new(ResourceKind::Files, Action::Admin), &Resource::Tenant).is_ok();
        let actor = caller.actor().unwrap_or(Actor::System).to_string();
        match caller {
            Caller::User(u) => Who { actor, user: Some(u.user), teams: teams.effective_teams(u.user), admin },
            _ => Who { actor, user: None, teams: BTreeSet::new(), admin },
        }
    }
}

/// The caller's access to `rec` at `now`.
fn level(files: &impl Tbl, t: &TenantId, who: &Who, rec: &FileRec, now: u64) -> io::Result<Level> {
    if who.admin || rec.owner == who.actor {
        return Ok(Level::Owner);
    }
    if rec.deleted_ms.is_some() || who.user.is_none() {
        return Ok(Level::None);
    }
    let mut best = Level::None;
    let (shares, _) = scan::<ShareRec>(files, &p_shares(t, rec.id), None, MAX_SHARES)?;
    for (_, s) in shares {
        if s.expires_ms.is_some_and(|e| e <= now) {
            continue;
        }
        let hit = match s.grantee {
            Grantee::User(u) => who.user == Some(u),
            Grantee::Team(team) => who.teams.contains(&team),
        };
        if hit {
            best = best.max(Level::from(s.access));
        }
    }
    Ok(best)
}

/// The file, if the caller has at least `need` access: `not_found` without
/// any access, `permission_denied` with too little.
fn file_for(
    files: &impl Tbl,
    t: &TenantId,
    who: &Who,
    id: FileId,
    need: Level,
    now: u64,
) -> io::Result<Result<(FileRec, Level), CaddyError>> {
    let Some(rec) = get::<FileRec>(files, &k_file(t, id))? else {
        return Ok(Err(not_found(id)));
    };
    let got = level(files, t, who, &rec, now)?;
    if got == Level::None {
        return Ok(Err(not_found(id)));
    }
    if got < need {
        return Ok(Err(denied(format!("your access to {id} is {}; this needs {}", got.name(), need.name()))));
    }
    Ok(Ok((rec, got)))
}

/// Whether the caller may trash, restore or purge a folder holding `inside`.
fn may_manage_folder(who: &Who, rec: &FolderRec, inside: &[FileRec], what: &str) -> Result<(), CaddyError> {
    if who.admin {
        return Ok(());
    }
    if rec.created_by != who.actor {
        return Err(denied(format!("only the creator of {} or someone with files:admin may {what} it", rec.id)));
    }
    if inside.iter().any(|f| f.owner != who.actor) {
        return Err(denied(format!(
            "{} holds files of other users: only someone with files:admin may {what} it",
            rec.id
        )));
    }
    Ok(())
}

// ----------------------------------------------------------------- folders

fn folder_rec(files: &impl Tbl, t: &TenantId, id: FolderId) -> io::Result<Result<FolderRec, CaddyError>> {
    Ok(get::<FolderRec>(files, &k_folder(t, id))?.ok_or_else(|| not_found(id)))
}

fn folder_live(files: &impl Tbl, t: &TenantId, id: FolderId) -> io::Result<bool> {
    Ok(get::<FolderRec>(files, &k_folder(t, id))?.is_some_and(|r| r.deleted_ms.is_none()))
}

/// Ok when `folder` (None: the root) exists and is not in the trash.
fn live_target(files: &impl Tbl, t: &TenantId, folder: Option<FolderId>) -> io::Result<Result<(), CaddyError>> {
    let Some(id) = folder else { return Ok(Ok(())) };
    let rec = check!(folder_rec(files, t, id)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(id)));
    }
    Ok(Ok(()))
}

/// `folder` and its ancestors, innermost first (bounded by the depth limit).
fn ancestors(files: &impl Tbl, t: &TenantId, folder: Option<FolderId>) -> io::Result<Vec<FolderRec>> {
    let mut out: Vec<FolderRec> = Vec::new();
    let mut at = folder;
    while let Some(id) = at {
        if out.len() > MAX_FOLDER_DEPTH {
            break;
        }
        match get::<FolderRec>(files, &k_folder(t, id))? {
            Some(rec) => {
                at = rec.parent;
                out.push(rec);
            }
            None => break,
        }
    }
    Ok(out)
}

/// Nesting depth of a folder (the root is 0, a folder in it 1).
fn depth(files: &impl Tbl, t: &TenantId, folder: Option<FolderId>) -> io::Result<usize> {
    Ok(ancestors(files, t, folder)?.len())
}

/// `/a/b` for a folder `b` in `a`; empty for the root.
fn path(files: &impl Tbl, t: &TenantId, folder: Option<FolderId>) -> io::Result<String> {
    let chain = ancestors(files, t, folder)?;
    Ok(chain.iter().rev().map(|f| format!("/{}", f.name)).collect())
}

fn name_free(
    files: &impl Tbl,
    t: &TenantId,
    folder: Option<FolderId>,
    name: &str,
) -> io::Result<Result<(), CaddyError>> {
    if exists(files, &k_name(t, folder, name))? {
        return Ok(Err(taken(name, folder)));
    }
    Ok(Ok(()))
}

/// Removes a name index entry if it names `item`.
fn release_name(
    files: &mut FTable<'_>,
    t: &TenantId,
    folder: Option<FolderId>,
    name: &str,
    item: ItemId,
) -> io::Result<()> {
    let key = k_name(t, folder, name);
    if get::<ItemId>(&*files, &key)? == Some(item) {
        del(files, &key)?;
    }
    Ok(())
}

/// Moves `item`'s entry in the name index from `(from, old)` to `(to, new)`,
/// refusing (and changing nothing) when the new place is taken.
fn move_name(
    files: &mut FTable<'_>,
    t: &TenantId,
    item: ItemId,
    from: Option<FolderId>,
    old: &str,
    to: Option<FolderId>,
    new: &str,
) -> io::Result<Result<(), CaddyError>> {
    if let Err(e) = name_free(&*files, t, to, new)? {
        return Ok(Err(e));
    }
    release_name(files, t, from, old, item)?;
    put(files, &k_name(t, to, new), &item)?;
    Ok(Ok(()))
}

/// What the name index holds below a folder.
#[derive(Default)]
struct Tree {
    /// Folders with their depth below the root of the walk (children: 1).
    folders: Vec<(FolderId, usize)>,
    files: Vec<FileId>,
}

/// Walks the name index below `root`, breadth first. Refuses (exhausted)
/// more than `limit` items; files are collected and counted only when
/// `with_files`.
fn tree(
    files: &impl Tbl,
    t: &TenantId,
    root: FolderId,
    with_files: bool,
    limit: usize,
) -> io::Result<Result<Tree, CaddyError>> {
    let mut out = Tree::default();
    let mut queue = VecDeque::from([(root, 0usize)]);
    while let Some((folder, d)) = queue.pop_front() {
        let prefix = p_names(t, Some(folder));
        for item in files.range(prefix.as_str()..).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            match open_record::<ItemId>(k.value(), v.value())? {
                ItemId::Folder(sub) => {
                    out.folders.push((sub, d + 1));
                    queue.push_back((sub, d + 1));
                }
                ItemId::File(f) if with_files => out.files.push(f),
                _ => {}
            }
            if out.folders.len() + out.files.len() > limit {
                return Ok(Err(CaddyError::exhausted(format!(
                    "{root} holds more than {limit} items; work on its subfolders first"
                ))));
            }
        }
    }
    Ok(Ok(out))
}

fn file_recs(files: &impl Tbl, t: &TenantId, ids: &[FileId]) -> io::Result<Vec<FileRec>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(rec) = get::<FileRec>(files, &k_file(t, *id))? {
            out.push(rec);
        }
    }
    Ok(out)
}

// ------------------------------------------------------- chunks, versions

pub(crate) fn chunks_add(files: &mut FTable<'_>, t: &TenantId, chunks: &[ChunkRef]) -> io::Result<()> {
    for c in chunks {
        let key = k_chunk(t, &c.hash);
        let n: u64 = get(&*files, &key)?.unwrap_or(0);
        put(files, &key, &n.saturating_add(1))?;
    }
    Ok(())
}

pub(crate) fn chunks_release(files: &mut FTable<'_>, t: &TenantId, chunks: &[ChunkRef]) -> io::Result<()> {
    for c in chunks {
        let key = k_chunk(t, &c.hash);
        match get::<u64>(&*files, &key)? {
            Some(n) if n > 1 => put(files, &key, &(n - 1))?,
            Some(_) => del(files, &key)?,
            None => tracing::error!(%key, "chunk reference count missing while releasing a reference"),
        }
    }
    Ok(())
}

/// The oldest versions a new one would push out of the `max_versions` kept.
fn drops_for(files: &impl Tbl, t: &TenantId, rec: &FileRec, max_versions: u32) -> io::Result<Vec<VersionRec>> {
    let keep = u64::from(max_versions.max(1));
    let n = rec.versions.saturating_add(1).saturating_sub(keep);
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    Ok(scan::<VersionRec>(files, &p_versions(t, rec.id), None, n)?.0.into_iter().map(|(_, v)| v).collect())
}

/// Ok when storing `add` more bytes while freeing `freed` stays in quota.
fn check_growth(usage: &Usage, quotas: &Quotas, add: u64, freed: u64) -> Result<(), CaddyError> {
    match add.checked_sub(freed) {
        Some(grow) if grow > 0 => usage.check(quotas, QuotaKind::StorageBytes, grow),
        _ => Ok(()),
    }
}

fn check_size(size: u64, bounds: &FileBounds) -> Result<(), CaddyError> {
    if size > bounds.max_file_bytes {
        return Err(CaddyError::exhausted(format!(
            "a file of {size} bytes exceeds the limit of {} bytes",
            bounds.max_file_bytes
        )));
    }
    Ok(())
}

/// Stores `v` as the new current version of `rec` (numbered here), drops
/// `drops`, and keeps counters and usage in step.
fn add_version(
    files: &mut FTable<'_>,
    t: &TenantId,
    rec: &mut FileRec,
    mut v: VersionRec,
    drops: &[VersionRec],
    usage: &mut Usage,
) -> io::Result<()> {
    let n = rec.next_version;
    v.n = n;
    put(files, &k_version(t, rec.id, n), &v)?;
    chunks_add(files, t, &v.chunks)?;
    let mut freed = 0u64;
    for old in drops {
        del(files, &k_version(t, rec.id, old.n))?;
        chunks_release(files, t, &old.chunks)?;
        freed = freed.saturating_add(old.size);
    }
    let dropped = drops.len() as u64;
    rec.next_version = n.saturating_add(1);
    rec.current = n;
    rec.size = v.size;
    rec.content_hash = v.content_hash;
    rec.versions = rec.versions.saturating_add(1).saturating_sub(dropped);
    rec.bytes = rec.bytes.saturating_add(v.size).saturating_sub(freed);
    rec.modified_by = v.author.clone();
    rec.modified_ms = v.stamp_ms;
    put(files, &k_file(t, rec.id), rec)?;
    usage.storage_bytes = usage.storage_bytes.saturating_add(v.size);
    usage.release(QuotaKind::StorageBytes, freed);
    bump(files, t, |c| {
        c.versions = c.versions.saturating_add(1).saturating_sub(dropped);
        c.file_bytes = c.file_bytes.saturating_add(v.size).saturating_sub(freed);
    })
}

fn touch_recent(files: &mut FTable<'_>, t: &TenantId, actor: &str, f: FileId, stamp: u64) -> io::Result<()> {
    let key = k_recent(t, actor);
    let mut recent: RecentRec = get(&*files, &key)?.unwrap_or_default();
    recent.files.retain(|(id, _)| *id != f);
    recent.files.insert(0, (f, stamp));
    recent.files.truncate(MAX_RECENT);
    put(files, &key, &recent)
}

// ------------------------------------------------------------ trash index

/// Puts an item in the tenant's and the global trash index.
pub(crate) fn trash_put(files: &mut FTable<'_>, t: &TenantId, rec: &TrashRec) -> io::Result<()> {
    put(files, &k_tenant_trash(t, rec.deleted_ms, &rec.item), rec)?;
    put(files, &g_trash(rec.deleted_ms, t, &rec.item), &TrashRef { tenant: t.clone(), item: rec.item })
}

/// Takes an item out of both trash indexes.
pub(crate) fn trash_remove(files: &mut FTable<'_>, t: &TenantId, item: ItemId, deleted_ms: u64) -> io::Result<()> {
    del(files, &k_tenant_trash(t, deleted_ms, &item))?;
    del(files, &g_trash(deleted_ms, t, &item))
}

// ------------------------------------------------------------------ purge

/// Removes a file with its versions, chunk references, shares and links;
/// returns the bytes it held.
fn purge_file(files: &mut FTable<'_>, t: &TenantId, rec: &FileRec) -> io::Result<u64> {
    let (versions, _) = scan::<VersionRec>(&*files, &p_versions(t, rec.id), None, usize::MAX)?;
    for (key, v) in &versions {
        chunks_release(files, t, &v.chunks)?;
        del(files, key)?;
    }
    let (shares, _) = scan::<ShareRec>(&*files, &p_shares(t, rec.id), None, usize::MAX)?;
    for (key, s) in &shares {
        if let Some(e) = s.expires_ms {
            del(files, &g_share_expiry(e, t, rec.id, s.grantee))?;
        }
        del(files, key)?;
    }
    let (links, _) = scan::<LinkRec>(&*files, &p_links(t, rec.id), None, usize::MAX)?;
    for (key, l) in &links {
        del(files, &g_link(&l.token_hash))?;
        if let Some(e) = l.expires_ms {
            del(files, &g_link_expiry(e, t, rec.id, l.id))?;
        }
        del(files, key)?;
    }
    release_name(files, t, rec.folder, &rec.name, ItemId::File(rec.id))?;
    del(files, &k_file(t, rec.id))?;
    let trashed = rec.deleted_ms.is_some();
    bump(files, t, |c| {
        c.files = c.files.saturating_sub(1);
        c.versions = c.versions.saturating_sub(rec.versions);
        c.file_bytes = c.file_bytes.saturating_sub(rec.bytes);
        if trashed {
            c.trash_bytes = c.trash_bytes.saturating_sub(rec.bytes);
        }
    })?;
    Ok(rec.bytes)
}

/// Removes a folder and everything the name index holds below it; returns
/// the bytes its files held.
fn purge_tree(
    files: &mut FTable<'_>,
    t: &TenantId,
    root: FolderId,
    tree: &Tree,
    inside: &[FileRec],
) -> io::Result<u64> {
    let mut bytes = 0u64;
    for rec in inside {
        bytes = bytes.saturating_add(purge_file(files, t, rec)?);
    }
    let all: Vec<FolderId> = std::iter::once(root).chain(tree.folders.iter().map(|(f, _)| *f)).collect();
    for folder in &all {
        for key in keys_under(&*files, &p_names(t, Some(*folder)))? {
            del(files, &key)?;
        }
        del(files, &k_folder(t, *folder))?;
    }
    let n = all.len() as u64;
    bump(files, t, |c| c.folders = c.folders.saturating_sub(n))?;
    Ok(bytes)
}

// ------------------------------------------------------------------ apply

/// What a file op needs from the identity apply path.
pub(crate) struct FileCtx<'a> {
    pub(crate) tenant: &'a TenantId,
    pub(crate) caller: &'a Caller,
    pub(crate) quotas: Quotas,
    pub(crate) usage: &'a mut Usage,
    pub(crate) stamp: u64,
    pub(crate) teams: &'a TeamGraph,
}

/// A file op's reply and the resource its audit entry names.
pub(crate) struct FileDone {
    pub(crate) body: ReplyBody,
    pub(crate) resource: String,
}

struct Cx<'a> {
    t: &'a TenantId,
    caller: &'a Caller,
    who: Who,
    quotas: Quotas,
    usage: &'a mut Usage,
    stamp: u64,
    teams: &'a TeamGraph,
}

/// A reply and, when the op only knows it now, the audit resource.
type Step = io::Result<Result<(ReplyBody, Option<String>), CaddyError>>;

fn done() -> Step {
    Ok(Ok((ReplyBody::Done, None)))
}

/// Applies one file op. `allocate` hands out the tenant's next id.
pub(crate) fn apply(
    tables: &mut Tables<'_>,
    ctx: FileCtx<'_>,
    op: &FileOp,
    mut allocate: impl FnMut() -> u64,
) -> io::Result<Result<FileDone, CaddyError>> {
    let who = Who::new(ctx.caller, ctx.tenant, ctx.teams);
    let mut cx = Cx {
        t: ctx.tenant,
        caller: ctx.caller,
        who,
        quotas: ctx.quotas,
        usage: ctx.usage,
        stamp: ctx.stamp,
        teams: ctx.teams,
    };
    let files = &mut tables.files;
    let step = match op {
        FileOp::MkDir { name, parent } => mkdir(files, &cx, name, *parent, &mut allocate)?,
        FileOp::Commit { target, size, content_hash, chunks, bounds } => {
            let upload = Upload { size: *size, hash: content_hash, chunks, bounds };
            commit(files, &mut cx, target, &upload, &mut allocate)?
        }
        FileOp::Move { item, to } => move_item(files, &cx, *item, *to)?,
        FileOp::Rename { item, name } => rename(files, &cx, *item, name)?,
        FileOp::SetTags { file, tags } => set_tags(files, &cx, *file, tags)?,
        FileOp::RestoreVersion { file, version, bounds } => restore_version(files, &mut cx, *file, *version, bounds)?,
        FileOp::Share { file, grantee, access, expires_ms } => {
            share(tables, &cx, *file, *grantee, *access, *expires_ms)?
        }
        FileOp::Unshare { file, grantee } => unshare(files, &cx, *file, *grantee)?,
        FileOp::Link { file, token_hash, expires_ms } => {
            link(files, &cx, *file, token_hash, *expires_ms, &mut allocate)?
        }
        FileOp::Unlink { file, link } => unlink(files, &cx, *file, *link)?,
        FileOp::Favorite { file, on } => favorite(files, &cx, *file, *on)?,
        FileOp::Touch { file } => {
            let (rec, _) = check!(file_for(&*files, cx.t, &cx.who, *file, Level::Read, cx.stamp)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(file)));
            }
            touch_recent(files, cx.t, &cx.who.actor, *file, cx.stamp)?;
            done()?
        }
        FileOp::Trash { item } => match item {
            ItemId::File(f) => trash_file(files, &cx, *f)?,
            ItemId::Folder(f) => trash_folder(files, &cx, *f)?,
            ItemId::Doc(d) => doc_item(tables, &mut cx, *d, DocAction::Trash)?,
        },
        FileOp::Restore { item } => match item {
            ItemId::File(f) => restore_file(files, &cx, *f)?,
            ItemId::Folder(f) => restore_folder(files, &cx, *f)?,
            ItemId::Doc(d) => doc_item(tables, &mut cx, *d, DocAction::Restore)?,
        },
        FileOp::Purge { item } => match item {
            ItemId::File(f) => purge_file_op(files, &mut cx, *f)?,
            ItemId::Folder(f) => purge_folder_op(files, &mut cx, *f)?,
            ItemId::Doc(d) => doc_item(tables, &mut cx, *d, DocAction::Purge)?,
        },
    };
    Ok(step.map(|(body, resource)| FileDone { body, resource: resource.unwrap_or_else(|| op.resource()) }))
}

fn mkdir(
    files: &mut FTable<'_>,
    cx: &Cx<'_>,
    name: &str,
    parent: Option<FolderId>,
    allocate: &mut impl FnMut() -> u64,
) -> Step {
    let t = cx.t;
    let name = check!(item_name(name));
    check!(live_target(&*files, t, parent)?);
    if depth(&*files, t, parent)? + 1 > MAX_FOLDER_DEPTH {
        return Ok(Err(CaddyError::invalid(format!("folders nest at most {MAX_FOLDER_DEPTH} deep"))));
    }
    check!(name_free(&*files, t, parent, &name)?);
    let id = FolderId(allocate());
    let rec = FolderRec {
        id,
        name: name.clone(),
        parent,
        created_by: cx.who.actor.clone(),
        created_ms: cx.stamp,
        deleted_ms: None,
        deleted_by: None,
        trashed_with: None,
    };
    put(files, &k_folder(t, id), &rec)?;
    put(files, &k_name(t, parent, &name), &ItemId::Folder(id))?;
    bump(files, t, |c| c.folders = c.folders.saturating_add(1))?;
    Ok(Ok((ReplyBody::Created { id: id.0 }, Some(id.to_string()))))
}

struct Upload<'a> {
    size: u64,
    hash: &'a [u8; 32],
    chunks: &'a [ChunkRef],
    bounds: &'a FileBounds,
}

/// Validated fields of a new file.
struct NewFile {
    name: String,
    folder: Option<FolderId>,
    media_type: String,
    tags: Vec<String>,
}

/// The checks of a new file that need no chunk list.
fn check_new(files: &impl Tbl, t: &TenantId, target: &CommitTarget) -> io::Result<Result<NewFile, CaddyError>> {
    let CommitTarget::New { name, folder, media_type: media, tags } = target else {
        return Ok(Err(CaddyError::internal("not a new file")));
    };
    let name = check!(item_name(name));
    let media_type = check!(media_type(media));
    let tags = check!(file_tags(tags));
    check!(live_target(files, t, *folder)?);
    check!(name_free(files, t, *folder, &name)?);
    Ok(Ok(NewFile { name, folder: *folder, media_type, tags }))
}

fn commit(
    files: &mut FTable<'_>,
    cx: &mut Cx<'_>,
    target: &CommitTarget,
    up: &Upload<'_>,
    allocate: &mut impl FnMut() -> u64,
) -> Step {
    let t = cx.t;
    check!(check_size(up.size, up.bounds));
    check!(check_chunk_layout(up.size, up.chunks));
    if content_hash(up.chunks) != *up.hash {
        return Ok(Err(CaddyError::invalid("the content hash does not match the chunk list")));
    }
    let version = VersionRec {
        n: 0,
        size: up.size,
        content_hash: *up.hash,
        chunks: up.chunks.to_vec(),
        author: cx.who.actor.clone(),
        stamp_ms: cx.stamp,
    };
    match target {
        CommitTarget::New { .. } => {
            let new = check!(check_new(&*files, t, target)?);
            check!(cx.usage.check(&cx.quotas, QuotaKind::StorageBytes, up.size));
            let id = FileId(allocate());
            let mut rec = FileRec {
                id,
                name: new.name,
                folder: new.folder,
                media_type: new.media_type,
                tags: new.tags,
                owner: cx.who.actor.clone(),
                owner_user: cx.who.user.map(|u| u.0),
                created_by: cx.who.actor.clone(),
                created_ms: cx.stamp,
                modified_by: cx.who.actor.clone(),
                modified_ms: cx.stamp,
                current: 0,
                next_version: 1,
                versions: 0,
                size: 0,
                content_hash: [0; 32],
                bytes: 0,
                deleted_ms: None,
                deleted_by: None,
                trashed_with: None,
            };
            put(files, &k_name(t, rec.folder, &rec.name), &ItemId::File(id))?;
            bump(files, t, |c| c.files = c.files.saturating_add(1))?;
            add_version(files, t, &mut rec, version, &[], cx.usage)?;
            touch_recent(files, t, &cx.who.actor, id, cx.stamp)?;
            Ok(Ok((ReplyBody::Created { id: id.0 }, Some(id.to_string()))))
        }
        CommitTarget::Version { file } => {
            let (mut rec, _) = check!(file_for(&*files, t, &cx.who, *file, Level::Write, cx.stamp)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(file)));
            }
            let drops = drops_for(&*files, t, &rec, up.bounds.max_versions)?;
            let freed = drops.iter().fold(0u64, |a, v| a.saturating_add(v.size));
            check!(check_growth(cx.usage, &cx.quotas, up.size, freed));
            add_version(files, t, &mut rec, version, &drops, cx.usage)?;
            touch_recent(files, t, &cx.who.actor, *file, cx.stamp)?;
            done()
        }
    }
}

fn restore_version(files: &mut FTable<'_>, cx: &mut Cx<'_>, f: FileId, n: u64, bounds: &FileBounds) -> Step {
    let t = cx.t;
    let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Write, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(f)));
    }
    let Some(old) = get::<VersionRec>(&*files, &k_version(t, f, n))? else {
        return Ok(Err(not_found(format!("version {n} of {f}"))));
    };
    check!(check_size(old.size, bounds));
    let drops = drops_for(&*files, t, &rec, bounds.max_versions)?;
    let freed = drops.iter().fold(0u64, |a, v| a.saturating_add(v.size));
    check!(check_growth(cx.usage, &cx.quotas, old.size, freed));
    let version = VersionRec { author: cx.who.actor.clone(), stamp_ms: cx.stamp, ..old };
    add_version(files, t, &mut rec, version, &drops, cx.usage)?;
    done()
}

fn move_item(files: &mut FTable<'_>, cx: &Cx<'_>, item: ItemId, to: Option<FolderId>) -> Step {
    let t = cx.t;
    match item {
        ItemId::File(f) => {
            let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Write, cx.stamp)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(f)));
            }
            check!(live_target(&*files, t, to)?);
            if rec.folder == to {
                return done();
            }
            check!(move_name(files, t, item, rec.folder, &rec.name, to, &rec.name)?);
            rec.folder = to;
            rec.modified_by = cx.who.actor.clone();
            rec.modified_ms = cx.stamp;
            put(files, &k_file(t, f), &rec)?;
            done()
        }
        ItemId::Folder(id) => {
            let mut rec = check!(folder_rec(&*files, t, id)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(id)));
            }
            check!(live_target(&*files, t, to)?);
            let above = ancestors(&*files, t, to)?;
            if above.iter().any(|a| a.id == id) {
                return Ok(Err(CaddyError::invalid(format!("cannot move {id} into itself or one of its subfolders"))));
            }
            if rec.parent == to {
                return done();
            }
            let sub = check!(tree(&*files, t, id, false, MAX_TREE_ITEMS)?);
            let height = sub.folders.iter().map(|(_, d)| *d).max().unwrap_or(0);
            if above.len() + 1 + height > MAX_FOLDER_DEPTH {
                return Ok(Err(CaddyError::invalid(format!(
                    "moving {id} there would nest folders more than {MAX_FOLDER_DEPTH} deep"
                ))));
            }
            check!(move_name(files, t, item, rec.parent, &rec.name, to, &rec.name)?);
            rec.parent = to;
            put(files, &k_folder(t, id), &rec)?;
            done()
        }
        ItemId::Doc(d) => {
            Ok(Err(CaddyError::invalid(format!("{d} is a document: it can be trashed, restored or purged"))))
        }
    }
}

fn rename(files: &mut FTable<'_>, cx: &Cx<'_>, item: ItemId, name: &str) -> Step {
    let t = cx.t;
    match item {
        ItemId::File(f) => {
            let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Write, cx.stamp)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(f)));
            }
            let name = check!(item_name(name));
            if rec.name == name {
                return done();
            }
            check!(move_name(files, t, item, rec.folder, &rec.name, rec.folder, &name)?);
            rec.name = name;
            rec.modified_by = cx.who.actor.clone();
            rec.modified_ms = cx.stamp;
            put(files, &k_file(t, f), &rec)?;
            done()
        }
        ItemId::Folder(id) => {
            let mut rec = check!(folder_rec(&*files, t, id)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(id)));
            }
            let name = check!(item_name(name));
            if rec.name == name {
                return done();
            }
            check!(move_name(files, t, item, rec.parent, &rec.name, rec.parent, &name)?);
            rec.name = name;
            put(files, &k_folder(t, id), &rec)?;
            done()
        }
        ItemId::Doc(d) => Ok(Err(CaddyError::invalid(format!("{d} is a document: rename it with the document calls")))),
    }
}

fn set_tags(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId, tags: &[String]) -> Step {
    let t = cx.t;
    let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Write, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(f)));
    }
    rec.tags = check!(file_tags(tags));
    rec.modified_by = cx.who.actor.clone();
    rec.modified_ms = cx.stamp;
    put(files, &k_file(t, f), &rec)?;
    done()
}

fn share(
    tables: &mut Tables<'_>,
    cx: &Cx<'_>,
    f: FileId,
    grantee: Grantee,
    access: Access,
    expires_ms: Option<u64>,
) -> Step {
    let t = cx.t;
    let files = &mut tables.files;
    let (rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(f)));
    }
    if expires_ms.is_some_and(|e| e <= cx.stamp) {
        return Ok(Err(CaddyError::invalid("the share would already be expired")));
    }
    let known = match grantee {
        Grantee::User(u) => crate::identity::user_exists(&tables.ident, t, u)?,
        Grantee::Team(team) => cx.teams.get(team).is_some(),
    };
    if !known {
        return Ok(Err(not_found(grantee)));
    }
    let key = k_share(t, f, grantee);
    let old = get::<ShareRec>(&*files, &key)?;
    if old.is_none() && count(&*files, &p_shares(t, f), MAX_SHARES)? >= MAX_SHARES {
        return Ok(Err(CaddyError::exhausted(format!("{f} already has {MAX_SHARES} shares (the limit)"))));
    }
    if let Some(e) = old.and_then(|o| o.expires_ms) {
        del(files, &g_share_expiry(e, t, f, grantee))?;
    }
    let rec = ShareRec { grantee, access, expires_ms, granted_by: cx.who.actor.clone(), granted_ms: cx.stamp };
    put(files, &key, &rec)?;
    if let Some(e) = expires_ms {
        put(files, &g_share_expiry(e, t, f, grantee), &ExpiryRef::Share { tenant: t.clone(), file: f, grantee })?;
    }
    done()
}

fn unshare(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId, grantee: Grantee) -> Step {
    let t = cx.t;
    check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    let key = k_share(t, f, grantee);
    let Some(old) = get::<ShareRec>(&*files, &key)? else {
        return Ok(Err(not_found(format!("a share of {f} with {grantee}"))));
    };
    if let Some(e) = old.expires_ms {
        del(files, &g_share_expiry(e, t, f, grantee))?;
    }
    del(files, &key)?;
    done()
}

fn link(
    files: &mut FTable<'_>,
    cx: &Cx<'_>,
    f: FileId,
    token_hash: &[u8; 32],
    expires_ms: Option<u64>,
    allocate: &mut impl FnMut() -> u64,
) -> Step {
    let t = cx.t;
    let (rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(f)));
    }
    if expires_ms.is_some_and(|e| e <= cx.stamp) {
        return Ok(Err(CaddyError::invalid("the link would already be expired")));
    }
    if count(&*files, &p_links(t, f), MAX_LINKS)? >= MAX_LINKS {
        return Ok(Err(CaddyError::exhausted(format!("{f} already has {MAX_LINKS} links (the limit)"))));
    }
    if exists(&*files, &g_link(token_hash))? {
        return Ok(Err(CaddyError::new(ErrorCode::AlreadyExists, "a link with this token already exists")));
    }
    let id = allocate();
    let rec = LinkRec {
        id,
        file: f,
        token_hash: *token_hash,
        expires_ms,
        created_by: cx.who.actor.clone(),
        created_ms: cx.stamp,
    };
    put(files, &k_link(t, f, id), &rec)?;
    put(files, &g_link(token_hash), &LinkRef { tenant: t.clone(), file: f, link: id })?;
    if let Some(e) = expires_ms {
        put(files, &g_link_expiry(e, t, f, id), &ExpiryRef::Link { tenant: t.clone(), file: f, link: id })?;
    }
    Ok(Ok((ReplyBody::Created { id }, Some(format!("{f} link {id}")))))
}

fn unlink(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId, id: u64) -> Step {
    let t = cx.t;
    check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    let key = k_link(t, f, id);
    let Some(old) = get::<LinkRec>(&*files, &key)? else {
        return Ok(Err(not_found(format!("link {id} of {f}"))));
    };
    del(files, &g_link(&old.token_hash))?;
    if let Some(e) = old.expires_ms {
        del(files, &g_link_expiry(e, t, f, id))?;
    }
    del(files, &key)?;
    Ok(Ok((ReplyBody::Done, Some(format!("{f} link {id}")))))
}

fn favorite(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId, on: bool) -> Step {
    let t = cx.t;
    let key = k_favorite(t, &cx.who.actor, f);
    if !on {
        // Unmarking needs no access any more (a share may have ended), only
        // the mark; without it, say nothing about the file.
        if exists(&*files, &key)? {
            del(files, &key)?;
            return done();
        }
        check!(file_for(&*files, t, &cx.who, f, Level::Read, cx.stamp)?);
        return done();
    }
    let (rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Read, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(in_trash(f)));
    }
    if exists(&*files, &key)? {
        return done();
    }
    if count(&*files, &p_favorites(t, &cx.who.actor), MAX_FAVORITES)? >= MAX_FAVORITES {
        return Ok(Err(CaddyError::exhausted(format!("you already have {MAX_FAVORITES} favorites (the limit)"))));
    }
    put(files, &key, &cx.stamp)?;
    done()
}

fn trash_file(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId) -> Step {
    let t = cx.t;
    let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(CaddyError::precondition(format!("{f} is already in the trash"))));
    }
    release_name(files, t, rec.folder, &rec.name, ItemId::File(f))?;
    rec.deleted_ms = Some(cx.stamp);
    rec.deleted_by = Some(cx.who.actor.clone());
    rec.trashed_with = None;
    put(files, &k_file(t, f), &rec)?;
    let entry = TrashRec {
        item: ItemId::File(f),
        name: rec.name.clone(),
        owner: rec.owner.clone(),
        deleted_by: cx.who.actor.clone(),
        deleted_ms: cx.stamp,
        bytes: rec.bytes,
    };
    trash_put(files, t, &entry)?;
    bump(files, t, |c| c.trash_bytes = c.trash_bytes.saturating_add(rec.bytes))?;
    done()
}

fn trash_folder(files: &mut FTable<'_>, cx: &Cx<'_>, id: FolderId) -> Step {
    let t = cx.t;
    let mut rec = check!(folder_rec(&*files, t, id)?);
    if rec.deleted_ms.is_some() {
        return Ok(Err(CaddyError::precondition(format!("{id} is already in the trash"))));
    }
    let tree = check!(tree(&*files, t, id, true, MAX_TREE_ITEMS)?);
    let inside = file_recs(&*files, t, &tree.files)?;
    check!(may_manage_folder(&cx.who, &rec, &inside, "trash"));
    let bytes = sum_bytes(&inside);
    let with = Some(ItemId::Folder(id));
    for (sub, _) in &tree.folders {
        if let Some(mut r) = get::<FolderRec>(&*files, &k_folder(t, *sub))? {
            r.deleted_ms = Some(cx.stamp);
            r.deleted_by = Some(cx.who.actor.clone());
            r.trashed_with = with;
            put(files, &k_folder(t, *sub), &r)?;
        }
    }
    for mut r in inside {
        r.deleted_ms = Some(cx.stamp);
        r.deleted_by = Some(cx.who.actor.clone());
        r.trashed_with = with;
        put(files, &k_file(t, r.id), &r)?;
    }
    release_name(files, t, rec.parent, &rec.name, ItemId::Folder(id))?;
    rec.deleted_ms = Some(cx.stamp);
    rec.deleted_by = Some(cx.who.actor.clone());
    rec.trashed_with = None;
    put(files, &k_folder(t, id), &rec)?;
    let entry = TrashRec {
        item: ItemId::Folder(id),
        name: rec.name.clone(),
        owner: rec.created_by.clone(),
        deleted_by: cx.who.actor.clone(),
        deleted_ms: cx.stamp,
        bytes,
    };
    trash_put(files, t, &entry)?;
    bump(files, t, |c| c.trash_bytes = c.trash_bytes.saturating_add(bytes))?;
    done()
}

/// The trash time of an item trashed on its own, or why it cannot be
/// restored or purged by itself.
fn trashed_alone(item: ItemId, deleted_ms: Option<u64>, trashed_with: Option<ItemId>) -> Result<u64, CaddyError> {
    match (deleted_ms, trashed_with) {
        (None, _) => Err(CaddyError::precondition(format!("{item} is not in the trash"))),
        (Some(_), Some(with)) => {
            Err(CaddyError::precondition(format!("{item} was trashed with {with}: restore or purge {with}")))
        }
        (Some(ms), None) => Ok(ms),
    }
}

fn restore_file(files: &mut FTable<'_>, cx: &Cx<'_>, f: FileId) -> Step {
    let t = cx.t;
    let (mut rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    let deleted_ms = check!(trashed_alone(ItemId::File(f), rec.deleted_ms, rec.trashed_with));
    let target = match rec.folder {
        Some(folder) if folder_live(&*files, t, folder)? => Some(folder),
        _ => None,
    };
    check!(name_free(&*files, t, target, &rec.name)?);
    put(files, &k_name(t, target, &rec.name), &ItemId::File(f))?;
    rec.folder = target;
    rec.deleted_ms = None;
    rec.deleted_by = None;
    put(files, &k_file(t, f), &rec)?;
    trash_remove(files, t, ItemId::File(f), deleted_ms)?;
    bump(files, t, |c| c.trash_bytes = c.trash_bytes.saturating_sub(rec.bytes))?;
    done()
}

fn restore_folder(files: &mut FTable<'_>, cx: &Cx<'_>, id: FolderId) -> Step {
    let t = cx.t;
    let mut rec = check!(folder_rec(&*files, t, id)?);
    let deleted_ms = check!(trashed_alone(ItemId::Folder(id), rec.deleted_ms, rec.trashed_with));
    let target = match rec.parent {
        Some(parent) if folder_live(&*files, t, parent)? => Some(parent),
        _ => None,
    };
    check!(name_free(&*files, t, target, &rec.name)?);
    let tree = check!(tree(&*files, t, id, true, MAX_TREE_ITEMS)?);
    let height = tree.folders.iter().map(|(_, d)| *d).max().unwrap_or(0);
    if depth(&*files, t, target)? + 1 + height > MAX_FOLDER_DEPTH {
        return Ok(Err(CaddyError::precondition(format!(
            "restoring {id} would nest folders more than {MAX_FOLDER_DEPTH} deep: restore it after moving its \
             parent up"
        ))));
    }
    let with = Some(ItemId::Folder(id));
    let inside: Vec<FileRec> =
        file_recs(&*files, t, &tree.files)?.into_iter().filter(|r| r.trashed_with == with).collect();
    check!(may_manage_folder(&cx.who, &rec, &inside, "restore"));
    let bytes = sum_bytes(&inside);
    for (sub, _) in &tree.folders {
        if let Some(mut r) = get::<FolderRec>(&*files, &k_folder(t, *sub))?
            && r.trashed_with == with
        {
            r.deleted_ms = None;
            r.deleted_by = None;
            r.trashed_with = None;
            put(files, &k_folder(t, *sub), &r)?;
        }
    }
    for mut r in inside {
        r.deleted_ms = None;
        r.deleted_by = None;
        r.trashed_with = None;
        put(files, &k_file(t, r.id), &r)?;
    }
    put(files, &k_name(t, target, &rec.name), &ItemId::Folder(id))?;
    rec.parent = target;
    rec.deleted_ms = None;
    rec.deleted_by = None;
    put(files, &k_folder(t, id), &rec)?;
    trash_remove(files, t, ItemId::Folder(id), deleted_ms)?;
    bump(files, t, |c| c.trash_bytes = c.trash_bytes.saturating_sub(bytes))?;
    done()
}

fn purge_file_op(files: &mut FTable<'_>, cx: &mut Cx<'_>, f: FileId) -> Step {
    let t = cx.t;
    let (rec, _) = check!(file_for(&*files, t, &cx.who, f, Level::Owner, cx.stamp)?);
    let deleted_ms = check!(trashed_alone(ItemId::File(f), rec.deleted_ms, rec.trashed_with));
    let bytes = purge_file(files, t, &rec)?;
    trash_remove(files, t, ItemId::File(f), deleted_ms)?;
    cx.usage.release(QuotaKind::StorageBytes, bytes);
    done()
}

fn purge_folder_op(files: &mut FTable<'_>, cx: &mut Cx<'_>, id: FolderId) -> Step {
    let t = cx.t;
    let rec = check!(folder_rec(&*files, t, id)?);
    let deleted_ms = check!(trashed_alone(ItemId::Folder(id), rec.deleted_ms, rec.trashed_with));
    let tree = check!(tree(&*files, t, id, true, MAX_TREE_ITEMS)?);
    let inside = file_recs(&*files, t, &tree.files)?;
    check!(may_manage_folder(&cx.who, &rec, &inside, "purge"));
    let bytes = purge_tree(files, t, id, &tree, &inside)?;
    trash_remove(files, t, ItemId::Folder(id), deleted_ms)?;
    cx.usage.release(QuotaKind::StorageBytes, bytes);
    done()
}

enum DocAction {
    Trash,
    Restore,
    Purge,
}

/// Trash, restore or purge of a CAD document: the document rules apply
/// (`docs:write`, and the owner or `docs:admin`).
fn doc_item(tables: &mut Tables<'_>, cx: &mut Cx<'_>, d: DocId, action: DocAction) -> Step {
    check!(authorize(cx.caller, Some(cx.t), Permission::new(ResourceKind::Docs, Action::Write), &Resource::Tenant));
    let ctx = crate::docs::DocCtx {
        tenant: cx.t,
        caller: cx.caller,
        quotas: cx.quotas,
        usage: &mut *cx.usage,
        stamp: cx.stamp,
    };
    match action {
        DocAction::Trash | DocAction::Restore => {
            let op = Op::DocSetDeleted { doc: d, deleted: matches!(action, DocAction::Trash) };
            let done = check!(crate::docs::apply(tables, ctx, &op, || 0)?);
            Ok(Ok((done.body, Some(done.resource))))
        }
        DocAction::Purge => {
            check!(crate::docs::purge(tables, ctx, d)?);
            Ok(Ok((ReplyBody::Done, Some(d.to_string()))))
        }
    }
}

// ------------------------------------------------------------------ sweep

/// Purges every trash item whose retention ended by `stamp` (oldest first)
/// and drops expired shares and links, at most [`SWEEP_BUDGET`] items per
/// run. System upkeep: no audit entry.
pub(crate) fn sweep(tables: &mut Tables<'_>, stamp: u64, retention_ms: u64) -> io::Result<ReplyBody> {
    let mut budget = SWEEP_BUDGET;
    let mut due: Vec<(u64, TrashRef)> = Vec::new();
    for item in tables.files.range("T/".."T0").map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let ms = k.value().get(2..18).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
        if ms.saturating_add(retention_ms) > stamp || due.len() >= budget {
            break;
        }
        due.push((ms, open_record(k.value(), v.value())?));
    }
    let mut released: BTreeMap<TenantId, u64> = BTreeMap::new();
    for (ms, r) in due {
        if budget == 0 {
            break;
        }
        let t = &r.tenant;
        let (bytes, items) = match r.item {
            ItemId::File(f) => match get::<FileRec>(&tables.files, &k_file(t, f))? {
                Some(rec) if rec.deleted_ms.is_some() && rec.trashed_with.is_none() => {
                    (purge_file(&mut tables.files, t, &rec)?, 1)
                }
                _ => (0, 1),
            },
            ItemId::Folder(id) => match get::<FolderRec>(&tables.files, &k_folder(t, id))? {
                Some(rec) if rec.deleted_ms.is_some() && rec.trashed_with.is_none() => {
                    match tree(&tables.files, t, id, true, usize::MAX)? {
                        Ok(tree) => {
                            let inside = file_recs(&tables.files, t, &tree.files)?;
                            let n = 1 + tree.folders.len() + inside.len();
                            (purge_tree(&mut tables.files, t, id, &tree, &inside)?, n)
                        }
                        Err(_) => (0, 1),
                    }
                }
                _ => (0, 1),
            },
            ItemId::Doc(d) => (crate::docs::purge_trashed(tables, t, d)?.unwrap_or(0), 1),
        };
        trash_remove(&mut tables.files, t, r.item, ms)?;
        let slot = released.entry(t.clone()).or_default();
        *slot = slot.saturating_add(bytes);
        budget = budget.saturating_sub(items);
    }
    let mut expired: Vec<(String, ExpiryRef)> = Vec::new();
    for item in tables.files.range("E/".."E0").map_err(io_err)? {
        let (k, v) = item.map_err(io_err)?;
        let ms = k.value().get(2..18).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
        if ms > stamp || expired.len() >= budget {
            break;
        }
        expired.push((k.value().to_owned(), open_record(k.value(), v.value())?));
    }
    for (key, e) in expired {
        match e {
            ExpiryRef::Share { tenant, file, grantee } => del(&mut tables.files, &k_share(&tenant, file, grantee))?,
            ExpiryRef::Link { tenant, file, link } => {
                let lk = k_link(&tenant, file, link);
                if let Some(l) = get::<LinkRec>(&tables.files, &lk)? {
                    del(&mut tables.files, &g_link(&l.token_hash))?;
                }
                del(&mut tables.files, &lk)?;
            }
        }
        del(&mut tables.files, &key)?;
    }
    for (t, bytes) in released {
        if bytes > 0 {
            crate::identity::release_storage(&mut tables.ident, &t, bytes)?;
        }
    }
    Ok(ReplyBody::Done)
}

/// Removes every file record of a tenant (the tenant is being deleted),
/// with its global link, trash and expiry index entries.
pub(crate) fn delete_tenant_files(tables: &mut Tables<'_>, t: &TenantId) -> io::Result<()> {
    let files = &mut tables.files;
    let prefix = tenant_files_prefix(t);
    let mut global = Vec::new();
    for (_, l) in scan::<LinkRec>(&*files, &format!("t/{t}/l/"), None, usize::MAX)?.0 {
        global.push(g_link(&l.token_hash));
        if let Some(e) = l.expires_ms {
            global.push(g_link_expiry(e, t, l.file, l.id));
        }
    }
    let share_prefix = format!("t/{t}/s/");
    for (key, s) in scan::<ShareRec>(&*files, &share_prefix, None, usize::MAX)?.0 {
        if let (Some(e), Some(file)) = (s.expires_ms, share_file(&key, &share_prefix)) {
            global.push(g_share_expiry(e, t, file, s.grantee));
        }
    }
    for (_, r) in scan::<TrashRec>(&*files, &p_tenant_trash(t), None, usize::MAX)?.0 {
        global.push(g_trash(r.deleted_ms, t, &r.item));
    }
    for key in global {
        del(files, &key)?;
    }
    for key in keys_under(&*files, &prefix)? {
        del(files, &key)?;
    }
    Ok(())
}

/// The file of a share key `{prefix}{F}/{grantee}`.
fn share_file(key: &str, prefix: &str) -> Option<FileId> {
    let rest = key.strip_prefix(prefix)?;
    let (hex, _) = rest.split_once('/')?;
    u64::from_str_radix(hex, 16).ok().map(FileId)
}

// ------------------------------------------------------------------ reads

fn folder_info_at(rec: &FolderRec, parent_path: &str) -> FolderInfo {
    FolderInfo {
        id: rec.id.to_string(),
        name: rec.name.clone(),
        parent: rec.parent.map(|p| p.to_string()),
        path: format!("{parent_path}/{}", rec.name),
        created_by: rec.created_by.clone(),
        created_ms: rec.created_ms,
        deleted_ms: rec.deleted_ms,
    }
}

fn folder_info(files: &impl Tbl, t: &TenantId, rec: &FolderRec) -> io::Result<FolderInfo> {
    Ok(folder_info_at(rec, &path(files, t, rec.parent)?))
}

fn file_info_at(rec: &FileRec, parent_path: &str, level: Level, favorite: bool) -> FileInfo {
    FileInfo {
        id: rec.id.to_string(),
        name: rec.name.clone(),
        folder: rec.folder.map(|f| f.to_string()),
        path: format!("{parent_path}/{}", rec.name),
        size: rec.size,
        content_hash: hex::encode(rec.content_hash),
        media_type: rec.media_type.clone(),
        tags: rec.tags.clone(),
        owner: rec.owner.clone(),
        created_by: rec.created_by.clone(),
        created_ms: rec.created_ms,
        modified_by: rec.modified_by.clone(),
        modified_ms: rec.modified_ms,
        version: rec.current,
        versions: rec.versions,
        deleted_ms: rec.deleted_ms,
        access: level.name().to_owned(),
        favorite,
    }
}

fn file_info(files: &impl Tbl, t: &TenantId, who: &Who, rec: &FileRec, level: Level) -> io::Result<FileInfo> {
    let favorite = exists(files, &k_favorite(t, &who.actor, rec.id))?;
    Ok(file_info_at(rec, &path(files, t, rec.folder)?, level, favorite))
}

/// Folder paths computed during one read.
#[derive(Default)]
struct Paths(BTreeMap<Option<FolderId>, String>);

impl Paths {
    fn of(&mut self, files: &impl Tbl, t: &TenantId, folder: Option<FolderId>) -> io::Result<String> {
        if let Some(p) = self.0.get(&folder) {
            return Ok(p.clone());
        }
        let p = path(files, t, folder)?;
        self.0.insert(folder, p.clone());
        Ok(p)
    }
}

/// Files by id (favorites, recent) that the caller can still see, live.
fn visible_files(
    files: &impl Tbl,
    t: &TenantId,
    who: &Who,
    ids: impl IntoIterator<Item = FileId>,
    now: u64,
) -> io::Result<Vec<FileInfo>> {
    let mut paths = Paths::default();
    let mut out = Vec::new();
    for id in ids {
        let Some(rec) = get::<FileRec>(files, &k_file(t, id))? else { continue };
        let got = level(files, t, who, &rec, now)?;
        if got == Level::None || rec.deleted_ms.is_some() {
            continue;
        }
        let favorite = exists(files, &k_favorite(t, &who.actor, id))?;
        out.push(file_info_at(&rec, &paths.of(files, t, rec.folder)?, got, favorite));
    }
    Ok(out)
}

/// Answers a read-only file call.
pub(crate) fn read(
    files: &impl Tbl,
    ident: &impl Tbl,
    t: &TenantId,
    caller: &Caller,
    call: &FileCall,
    now: u64,
) -> io::Result<Result<FileAnswer, CaddyError>> {
    check!(authorize(caller, Some(t), Permission::new(ResourceKind::Files, Action::Read), &Resource::Tenant));
    let Some((quotas, usage)) = crate::identity::tenant_usage(ident, t)? else {
        return Ok(Err(not_found(format!("tenant {t}"))));
    };
    let teams = crate::identity::teams_of(ident, t)?;
    let who = Who::new(caller, t, &teams);
    let answer = match call {
        FileCall::List { folder, after, limit } => {
            check!(list(files, t, &who, folder.as_deref(), after.as_deref(), *limit, now)?)
        }
        FileCall::Info { id } => match check!(ItemId::parse(id)) {
            ItemId::File(f) => {
                let (rec, got) = check!(file_for(files, t, &who, f, Level::Read, now)?);
                FileAnswer::File(file_info(files, t, &who, &rec, got)?)
            }
            ItemId::Folder(f) => FileAnswer::Folder(folder_info(files, t, &check!(folder_rec(files, t, f)?))?),
            ItemId::Doc(d) => {
                return Ok(Err(CaddyError::invalid(format!("{d} is a document: use the document calls"))));
            }
        },
        FileCall::Versions { file } => {
            let f = check!(FileId::parse(file));
            let (rec, _) = check!(file_for(files, t, &who, f, Level::Read, now)?);
            let (items, _) = scan::<VersionRec>(files, &p_versions(t, f), None, MAX_VERSIONS_LISTED)?;
            let versions = items
                .into_iter()
                .map(|(_, v)| VersionInfo {
                    version: v.n,
                    size: v.size,
                    content_hash: hex::encode(v.content_hash),
                    author: v.author,
                    stamp_ms: v.stamp_ms,
                    current: v.n == rec.current,
                })
                .collect();
            FileAnswer::Versions { versions }
        }
        FileCall::Shares { file } => {
            let f = check!(FileId::parse(file));
            check!(file_for(files, t, &who, f, Level::Owner, now)?);
            let (items, _) = scan::<ShareRec>(files, &p_shares(t, f), None, MAX_SHARES)?;
            let shares = items
                .into_iter()
                .map(|(_, s)| ShareInfo {
                    with: s.grantee.to_string(),
                    access: s.access,
                    expires_ms: s.expires_ms,
                    granted_by: s.granted_by,
                    granted_ms: s.granted_ms,
                })
                .collect();
            FileAnswer::Shares { shares }
        }
        FileCall::Links { file } => {
            let f = check!(FileId::parse(file));
            check!(file_for(files, t, &who, f, Level::Owner, now)?);
            let (items, _) = scan::<LinkRec>(files, &p_links(t, f), None, MAX_LINKS)?;
            let links = items
                .into_iter()
                .map(|(_, l)| LinkInfo {
                    id: l.id,
                    file: l.file.to_string(),
                    expires_ms: l.expires_ms,
                    created_by: l.created_by,
                    created_ms: l.created_ms,
                })
                .collect();
            FileAnswer::Links { links }
        }
        FileCall::Favorites => {
            let prefix = p_favorites(t, &who.actor);
            let ids: Vec<FileId> = keys_under(files, &prefix)?
                .iter()
                .take(MAX_FAVORITES)
                .filter_map(|k| k.strip_prefix(&prefix).and_then(|h| u64::from_str_radix(h, 16).ok()))
                .map(FileId)
                .collect();
            FileAnswer::Files { files: visible_files(files, t, &who, ids, now)?, next: None }
        }
        FileCall::Recent => {
            let recent: RecentRec = get(files, &k_recent(t, &who.actor))?.unwrap_or_default();
            let ids = recent.files.into_iter().map(|(f, _)| f);
            FileAnswer::Files { files: visible_files(files, t, &who, ids, now)?, next: None }
        }
        FileCall::Search { query, after, limit } => {
            check!(search(files, t, &who, query, after.as_deref(), *limit, now)?)
        }
        FileCall::Trash => {
            let prefix = p_tenant_trash(t);
            let end = prefix_end(&prefix);
            let mut items = Vec::new();
            for item in files.range(prefix.as_str()..end.as_str()).map_err(io_err)?.rev() {
                let (k, v) = item.map_err(io_err)?;
                let r: TrashRec = open_record(k.value(), v.value())?;
                if !who.admin && r.owner != who.actor {
                    continue;
                }
                items.push(TrashEntry {
                    id: r.item.to_string(),
                    name: r.name,
                    deleted_by: r.deleted_by,
                    deleted_ms: r.deleted_ms,
                    bytes: r.bytes,
                });
                if items.len() == MAX_TRASH_LISTED {
                    break;
                }
            }
            FileAnswer::Trash { items }
        }
        FileCall::Usage => {
            let c = counters(files, t)?;
            FileAnswer::Usage(StorageUsage {
                used_bytes: usage.storage_bytes,
                max_bytes: quotas.max_storage_bytes,
                files: c.files,
                versions: c.versions,
                file_bytes: c.file_bytes,
                trash_bytes: c.trash_bytes,
                folders: c.folders,
            })
        }
        other => return Ok(Err(CaddyError::internal(format!("file call {other:?} is not a read")))),
    };
    Ok(Ok(answer))
}

fn list(
    files: &impl Tbl,
    t: &TenantId,
    who: &Who,
    folder: Option<&str>,
    after: Option<&str>,
    limit: Option<u32>,
    now: u64,
) -> io::Result<Result<FileAnswer, CaddyError>> {
    let folder = check!(parse_folder(folder));
    let own = match folder {
        None => None,
        Some(id) => {
            let rec = check!(folder_rec(files, t, id)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(id)));
            }
            Some(folder_info(files, t, &rec)?)
        }
    };
    let base = own.as_ref().map_or_else(String::new, |f| f.path.clone());
    let want = page(limit);
    let prefix = p_names(t, folder);
    let start = after.map_or_else(|| prefix.clone(), |a| format!("{prefix}{a}\u{0}"));
    let (mut folders, mut found, mut next) = (Vec::new(), Vec::new(), None);
    let mut last: Option<String> = None;
    for (examined, item) in files.range(start.as_str()..).map_err(io_err)?.enumerate() {
        let (k, v) = item.map_err(io_err)?;
        let Some(name) = k.value().strip_prefix(&prefix) else { break };
        if folders.len() + found.len() == want || examined == MAX_SCAN {
            next = last;
            break;
        }
        match open_record::<ItemId>(k.value(), v.value())? {
            ItemId::Folder(f) => {
                if let Some(rec) = get::<FolderRec>(files, &k_folder(t, f))? {
                    folders.push(folder_info_at(&rec, &base));
                }
            }
            ItemId::File(f) => {
                if let Some(rec) = get::<FileRec>(files, &k_file(t, f))? {
                    let got = level(files, t, who, &rec, now)?;
                    if got != Level::None && rec.deleted_ms.is_none() {
                        let favorite = exists(files, &k_favorite(t, &who.actor, f))?;
                        found.push(file_info_at(&rec, &base, got, favorite));
                    }
                }
            }
            ItemId::Doc(_) => {}
        }
        last = Some(name.to_owned());
    }
    Ok(Ok(FileAnswer::List { folder: own, folders, files: found, next }))
}

fn search(
    files: &impl Tbl,
    t: &TenantId,
    who: &Who,
    query: &FileQuery,
    after: Option<&str>,
    limit: Option<u32>,
    now: u64,
) -> io::Result<Result<FileAnswer, CaddyError>> {
    let in_folder = match query.folder.as_deref() {
        Some(f) => Some(check!(parse_folder(Some(f)))),
        None => None,
    };
    let needle = query.name.as_ref().map(|n| n.to_lowercase());
    let media = query.media_type.as_ref().map(|m| m.to_ascii_lowercase());
    let want = page(limit);
    let prefix = p_files(t);
    let start = match after {
        Some(a) => format!("{prefix}{}\u{0}", check!(FileId::parse(a)).key_part()),
        None => prefix.clone(),
    };
    let mut paths = Paths::default();
    let (mut found, mut next) = (Vec::new(), None);
    let mut last: Option<FileId> = None;
    for (examined, item) in files.range(start.as_str()..).map_err(io_err)?.enumerate() {
        let (k, v) = item.map_err(io_err)?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        if found.len() == want || examined == MAX_SCAN {
            next = last.map(|f| f.to_string());
            break;
        }
        let rec: FileRec = open_record(k.value(), v.value())?;
        last = Some(rec.id);
        let hit = rec.deleted_ms.is_none()
            && in_folder.is_none_or(|f| rec.folder == f)
            && needle.as_ref().is_none_or(|n| rec.name.to_lowercase().contains(n.as_str()))
            && query.tag.as_ref().is_none_or(|tag| rec.tags.contains(tag))
            && media.as_ref().is_none_or(|m| {
                if m.ends_with('/') { rec.media_type.starts_with(m.as_str()) } else { rec.media_type == *m }
            })
            && query.modified_after.is_none_or(|a| rec.modified_ms >= a)
            && query.modified_before.is_none_or(|b| rec.modified_ms < b);
        if !hit {
            continue;
        }
        let got = level(files, t, who, &rec, now)?;
        if got == Level::None {
            continue;
        }
        let favorite = exists(files, &k_favorite(t, &who.actor, rec.id))?;
        found.push(file_info_at(&rec, &paths.of(files, t, rec.folder)?, got, favorite));
    }
    Ok(Ok(FileAnswer::Files { files: found, next }))
}

/// Finds what a download reads: by file (the caller needs read access) or
/// by a link's token hash (no credential needed). Link downloads do not
/// show the file's folder (its path is `/{name}`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn download(
    files: &impl Tbl,
    ident: &impl Tbl,
    tenant: Option<&TenantId>,
    caller: &Caller,
    file: Option<FileId>,
    link: Option<[u8; 32]>,
    version: Option<u64>,
    now: u64,
) -> io::Result<Result<(TenantId, FileInfo, VersionRecordView), CaddyError>> {
    let (t, info, rec) = if let Some(hash) = link {
        let Some(r) = get::<LinkRef>(files, &g_link(&hash))? else {
            return Ok(Err(not_found("link")));
        };
        let Some(l) = get::<LinkRec>(files, &k_link(&r.tenant, r.file, r.link))? else {
            return Ok(Err(not_found("link")));
        };
        if l.expires_ms.is_some_and(|e| e <= now) {
            return Ok(Err(CaddyError::precondition("link expired")));
        }
        let Some(rec) = get::<FileRec>(files, &k_file(&r.tenant, r.file))? else {
            return Ok(Err(not_found("link")));
        };
        if rec.deleted_ms.is_some() {
            return Ok(Err(not_found("link")));
        }
        let info = FileInfo { folder: None, ..file_info_at(&rec, "", Level::Read, false) };
        (r.tenant, info, rec)
    } else if let Some(f) = file {
        let Some(t) = tenant else {
            return Ok(Err(CaddyError::invalid("files belong to a tenant: name one")));
        };
        check!(authorize(caller, Some(t), Permission::new(ResourceKind::Files, Action::Read), &Resource::Tenant));
        let teams = crate::identity::teams_of(ident, t)?;
        let who = Who::new(caller, t, &teams);
        let (rec, got) = check!(file_for(files, t, &who, f, Level::Read, now)?);
        if rec.deleted_ms.is_some() {
            return Ok(Err(not_found(f)));
        }
        (t.clone(), file_info(files, t, &who, &rec, got)?, rec)
    } else {
        return Ok(Err(CaddyError::invalid("name a file or a link to download")));
    };
    let n = version.unwrap_or(rec.current);
    let Some(v) = get::<VersionRec>(files, &k_version(&t, rec.id, n))? else {
        return Ok(Err(not_found(format!("version {n} of {}", rec.id))));
    };
    Ok(Ok((t, info, VersionRecordView { version: n, size: v.size, chunks: v.chunks })))
}

/// The checks a commit will make that need no chunk list (access, names,
/// folder, size bound, quota headroom), so the server can refuse an upload
/// before receiving its bytes. Shares are judged as unexpired here (there
/// is no stamped time yet); apply judges them at its stamp.
pub(crate) fn commit_precheck(
    files: &impl Tbl,
    ident: &impl Tbl,
    t: &TenantId,
    caller: &Caller,
    target: &CommitTarget,
    size: u64,
    bounds: &FileBounds,
) -> io::Result<Result<(), CaddyError>> {
    check!(authorize(caller, Some(t), Permission::new(ResourceKind::Files, Action::Write), &Resource::Tenant));
    check!(check_size(size, bounds));
    let Some((quotas, usage)) = crate::identity::tenant_usage(ident, t)? else {
        return Ok(Err(not_found(format!("tenant {t}"))));
    };
    match target {
        CommitTarget::New { .. } => {
            check!(check_new(files, t, target)?);
            check!(usage.check(&quotas, QuotaKind::StorageBytes, size));
        }
        CommitTarget::Version { file } => {
            let teams = crate::identity::teams_of(ident, t)?;
            let who = Who::new(caller, t, &teams);
            let (rec, _) = check!(file_for(files, t, &who, *file, Level::Write, 0)?);
            if rec.deleted_ms.is_some() {
                return Ok(Err(in_trash(file)));
            }
            let drops = drops_for(files, t, &rec, bounds.max_versions)?;
            let freed = drops.iter().fold(0u64, |a, v| a.saturating_add(v.size));
            check!(check_growth(&usage, &quotas, size, freed));
        }
    }
    Ok(Ok(()))
}

/// The first tenant with a key at or after `from` in the `t/` range.
fn tenant_from(files: &impl Tbl, from: &str) -> io::Result<Option<TenantId>> {
    if let Some(item) = files.range(from..).map_err(io_err)?.next() {
        let (k, _) = item.map_err(io_err)?;
        let Some(rest) = k.value().strip_prefix("t/") else { return Ok(None) };
        let name = rest.split('/').next().unwrap_or_default();
        return TenantId::new(name).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message));
    }
    Ok(None)
}

/// Every referenced chunk of every tenant, in key order, strictly after
/// `after`, at most `limit`.
pub(crate) fn chunk_refs_page(
    files: &impl Tbl,
    after: Option<(TenantId, [u8; 32])>,
    limit: usize,
) -> io::Result<Vec<(TenantId, [u8; 32])>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let (mut tenant, mut start) = match after {
        Some((t, hash)) => {
            let start = format!("{}\u{0}", k_chunk(&t, &hash));
            (Some(t), start)
        }
        None => {
            let t = tenant_from(files, "t/")?;
            let start = t.as_ref().map(p_chunks).unwrap_or_default();
            (t, start)
        }
    };
    while let Some(t) = tenant {
        let prefix = p_chunks(&t);
        for item in files.range(start.as_str()..).map_err(io_err)? {
            let (k, _) = item.map_err(io_err)?;
            let Some(hex_hash) = k.value().strip_prefix(&prefix) else { break };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex_hash, &mut hash)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("chunk key {}: {e}", k.value())))?;
            out.push((t.clone(), hash));
            if out.len() == limit {
                return Ok(out);
            }
        }
        tenant = tenant_from(files, &prefix_end(&tenant_files_prefix(&t)))?;
        start = tenant.as_ref().map(p_chunks).unwrap_or_default();
    }
    Ok(out)
}

/// Whether each chunk is referenced by a version record of `t`.
pub(crate) fn chunks_referenced(files: &impl Tbl, t: &TenantId, hashes: &[[u8; 32]]) -> io::Result<Vec<bool>> {
    hashes.iter().map(|h| exists(files, &k_chunk(t, h))).collect()
}
