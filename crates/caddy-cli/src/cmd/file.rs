//! `caddyctl file ...` and `caddyctl storage usage`: files and folders
//! (upload, download, list, move, rename, tags, versions, shares, share
//! links, favorites, recent files, search, trash) and the tenant's storage
//! use, through the SDK's `file_*` calls.
//!
//! - Text output is tables and `key: value` blocks; `--json` prints the
//!   SDK's answer structs (`FileInfo`, `FolderInfo`, lists of them, or the
//!   tagged `FileAnswer` where the SDK returns one).
//! - Transfers draw a progress bar on stderr only when stderr is a
//!   terminal, the transfer is larger than [`BAR_THRESHOLD`] and `--json`
//!   is not given.
//! - `--expires` and the search time flags are turned into absolute times
//!   with this machine's clock.

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use caddy_client::file_api::{
    Access, FileAnswer, FileCall, FileInfo, FileQuery, FolderInfo, LinkInfo, MAX_FOLDER_DEPTH, ShareInfo, StorageUsage,
    TrashEntry, VersionInfo,
};
use caddy_client::{DownloadOptions, Downloaded, UploadOptions};
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Ctx, emit_json, emit_text};
use crate::cli::{FileCommand, ShareAccess, StorageCommand};
use crate::failure::usage;
use crate::output::{datetime, datetime_opt, table};
use crate::views::{block, list};

/// Page size when listing everything.
const PAGE: u32 = 500;
/// Transfers larger than this get a progress bar.
const BAR_THRESHOLD: u64 = 8 << 20;
/// Folder levels `ls --tree` lists (the server's own nesting bound).
const MAX_TREE_DEPTH: usize = MAX_FOLDER_DEPTH;

fn json_of<T: Serialize>(value: &T) -> anyhow::Result<Value> {
    serde_json::to_value(value).context("encoding JSON")
}

/// Prints `value` as JSON with `--json`, else `text()`.
fn show<T: Serialize>(ctx: &Ctx, out: &mut dyn Write, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if ctx.json { emit_json(out, &json_of(value)?) } else { emit_text(out, &text()) }
}

/// An answer of a kind the command did not expect.
fn unexpected(expected: &str, got: &FileAnswer) -> anyhow::Error {
    let kind = serde_json::to_value(got)
        .ok()
        .and_then(|v| v.get("kind").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    anyhow::anyhow!("unexpected answer from the server: {kind} instead of {expected}")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.0 GiB` (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 would print as "1024.0": move up a unit instead.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Exact and human: `12 bytes`, `1.5 MiB (1572864 bytes)`.
fn size_text(bytes: u64) -> String {
    if bytes < 1024 { format!("{bytes} bytes") } else { format!("{} ({bytes} bytes)", human_bytes(bytes)) }
}

/// `used` as a percentage of `max`, one decimal; `-` without a quota.
pub fn percent(used: u64, max: u64) -> String {
    if max == 0 || max == u64::MAX {
        return "-".into();
    }
    format!("{:.1}%", used as f64 * 100.0 / max as f64)
}

/// The absolute expiry (ms since the epoch) of an `--expires` duration.
pub fn expires_at(now_ms: u64, ttl: Duration) -> anyhow::Result<u64> {
    if ttl < Duration::from_secs(1) {
        return Err(usage("--expires must be at least 1s"));
    }
    u64::try_from(ttl.as_millis())
        .ok()
        .and_then(|ms| now_ms.checked_add(ms))
        .ok_or_else(|| anyhow::anyhow!("--expires is too far in the future"))
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
    }
}

/// A folder argument: `root`, `/` and nothing mean the root.
fn folder_arg(folder: Option<&str>) -> Option<&str> {
    folder.filter(|f| !matches!(*f, "" | "/" | "root"))
}

/// `name` when it can name a file in a local directory (one plain path
/// component), else an error pointing at `-o`.
fn local_name(name: &str) -> anyhow::Result<&str> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(part)), None) if part == std::ffi::OsStr::new(name) => Ok(name),
        _ => bail!("the file's name {name:?} cannot be used as a local file name: choose one with -o PATH"),
    }
}

// ---------------------------------------------------------------------------
// Renderings (pure).

fn by(ms: u64, who: &str) -> String {
    if who.is_empty() { datetime(ms) } else { format!("{} by {who}", datetime(ms)) }
}

/// One file in detail.
pub fn file_text(f: &FileInfo) -> String {
    let mut pairs = vec![
        ("id", f.id.clone()),
        ("name", f.name.clone()),
        ("path", f.path.clone()),
        ("size", size_text(f.size)),
        ("version", format!("{} ({} kept)", f.version, f.versions)),
        ("content hash", f.content_hash.clone()),
        ("media type", f.media_type.clone()),
        ("tags", list(&f.tags)),
        ("owner", f.owner.clone()),
        ("access", f.access.clone()),
        ("favorite", if f.favorite { "yes" } else { "no" }.to_string()),
        ("created", by(f.created_ms, &f.created_by)),
        ("modified", by(f.modified_ms, &f.modified_by)),
    ];
    if f.deleted_ms.is_some() {
        pairs.push(("deleted", datetime_opt(f.deleted_ms)));
    }
    block(&pairs)
}

/// One folder in detail.
pub fn folder_text(f: &FolderInfo) -> String {
    let mut pairs = vec![
        ("id", f.id.clone()),
        ("name", f.name.clone()),
        ("path", f.path.clone()),
        ("parent", f.parent.clone().unwrap_or_else(|| "root".into())),
        ("created", by(f.created_ms, &f.created_by)),
    ];
    if f.deleted_ms.is_some() {
        pairs.push(("deleted", datetime_opt(f.deleted_ms)));
    }
    block(&pairs)
}

/// A file or folder answer in detail.
fn item_text(answer: &FileAnswer) -> String {
    match answer {
        FileAnswer::File(f) => file_text(f),
        FileAnswer::Folder(f) => folder_text(f),
        other => format!("{}\n", serde_json::to_string(other).unwrap_or_default()),
    }
}

/// The id and path of a file or folder answer, for one-line confirmations.
fn item_place(answer: &FileAnswer) -> Option<(&str, &str)> {
    match answer {
        FileAnswer::File(f) => Some((&f.id, &f.path)),
        FileAnswer::Folder(f) => Some((&f.id, &f.path)),
        _ => None,
    }
}

/// One folder's content: folders first, then files.
pub fn listing_table(folders: &[FolderInfo], files: &[FileInfo]) -> String {
    let dirs = folders
        .iter()
        .map(|d| vec!["dir".into(), d.id.clone(), d.name.clone(), "-".into(), "-".into(), datetime(d.created_ms)]);
    let plain = files.iter().map(|f| {
        vec![
            "file".into(),
            f.id.clone(),
            f.name.clone(),
            human_bytes(f.size),
            f.version.to_string(),
            datetime(f.modified_ms),
        ]
    });
    let rows: Vec<Vec<String>> = dirs.chain(plain).collect();
    table(&["TYPE", "ID", "NAME", "SIZE", "VERSION", "MODIFIED"], &rows)
}

/// Files found anywhere (favorites, recent, search).
pub fn files_table(files: &[FileInfo]) -> String {
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            vec![
                f.id.clone(),
                f.path.clone(),
                human_bytes(f.size),
                f.version.to_string(),
                datetime(f.modified_ms),
                f.media_type.clone(),
            ]
        })
        .collect();
    table(&["ID", "PATH", "SIZE", "VERSION", "MODIFIED", "TYPE"], &rows)
}

/// A file's versions.
pub fn versions_table(versions: &[VersionInfo]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                human_bytes(v.size),
                v.author.clone(),
                datetime(v.stamp_ms),
                if v.current { "*".into() } else { String::new() },
                v.content_hash.chars().take(16).collect(),
            ]
        })
        .collect();
    table(&["VERSION", "SIZE", "AUTHOR", "TIME", "CURRENT", "HASH"], &rows)
}

/// A file's shares.
pub fn shares_table(shares: &[ShareInfo]) -> String {
    let rows: Vec<Vec<String>> = shares
        .iter()
        .map(|s| {
            vec![
                s.with.clone(),
                access_name(s.access).to_string(),
                s.expires_ms.map_or_else(|| "never".into(), datetime),
                s.granted_by.clone(),
                datetime(s.granted_ms),
            ]
        })
        .collect();
    table(&["WITH", "ACCESS", "EXPIRES", "GRANTED BY", "GRANTED"], &rows)
}

/// A file's share links (never their tokens).
pub fn links_table(links: &[LinkInfo]) -> String {
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            vec![
                l.id.to_string(),
                l.file.clone(),
                l.expires_ms.map_or_else(|| "never".into(), datetime),
                l.created_by.clone(),
                datetime(l.created_ms),
            ]
        })
        .collect();
    table(&["ID", "FILE", "EXPIRES", "CREATED BY", "CREATED"], &rows)
}

/// A new share link, its token set apart (it is shown only this once).
pub fn link_created_text(link: &LinkInfo, token: &str) -> String {
    let expires =
        link.expires_ms.map_or_else(|| "never expires".to_string(), |ms| format!("expires {} UTC", datetime(ms)));
    format!(
        "created link {id} for {file} ({expires})\n\n    {token}\n\n\
         The token is shown only once: store it now. Anyone who has it can download the file:\n  \
         caddyctl file download --link {token}\n\
         Remove the link with: caddyctl file unlink {file} {id}\n",
        id = link.id,
        file = link.file,
    )
}

/// The trash.
pub fn trash_table(items: &[TrashEntry]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| vec![t.id.clone(), t.name.clone(), t.deleted_by.clone(), datetime(t.deleted_ms), human_bytes(t.bytes)])
        .collect();
    table(&["ID", "NAME", "DELETED BY", "DELETED", "BYTES"], &rows)
}

/// Storage use against the quota.
pub fn usage_text(u: &StorageUsage) -> String {
    let used = if u.max_bytes == u64::MAX {
        format!("{} (no quota)", human_bytes(u.used_bytes))
    } else {
        format!(
            "{} of {} ({})",
            human_bytes(u.used_bytes),
            human_bytes(u.max_bytes),
            percent(u.used_bytes, u.max_bytes)
        )
    };
    block(&[
        ("used", used),
        ("files", u.files.to_string()),
        ("versions", u.versions.to_string()),
        ("file bytes", human_bytes(u.file_bytes)),
        ("trash bytes", human_bytes(u.trash_bytes)),
        ("folders", u.folders.to_string()),
    ])
}

/// One folder's whole content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// The folder (`None`: the root).
    pub folder: Option<FolderInfo>,
    /// Its subfolders.
    pub folders: Vec<FolderInfo>,
    /// Its files.
    pub files: Vec<FileInfo>,
}

/// A folder and everything below it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tree {
    /// The folder (`None`: the root).
    pub folder: Option<FolderInfo>,
    /// Its subfolders, each with its own content.
    pub folders: Vec<Tree>,
    /// Its files.
    pub files: Vec<FileInfo>,
    /// Its content was not listed (deeper than [`MAX_TREE_DEPTH`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unlisted: bool,
}

impl Tree {
    fn counts(&self) -> (u64, u64, u64) {
        let bytes: u64 = self.files.iter().map(|f| f.size).fold(0, u64::saturating_add);
        let mut totals = (self.folders.len() as u64, self.files.len() as u64, bytes);
        for sub in &self.folders {
            let (d, f, b) = sub.counts();
            totals = (totals.0 + d, totals.1 + f, totals.2.saturating_add(b));
        }
        totals
    }
}

/// A tree drawn with box characters, then the totals.
pub fn tree_text(tree: &Tree) -> String {
    let mut out = match &tree.folder {
        None => "/\n".to_string(),
        Some(f) => format!("{}  {}\n", f.path, f.id),
    };
    draw_children(tree, "", &mut out);
    let (folders, files, bytes) = tree.counts();
    out.push_str(&format!("\n{folders} folders, {files} files, {}\n", human_bytes(bytes)));
    out
}

fn draw_children(tree: &Tree, prefix: &str, out: &mut String) {
    if tree.unlisted {
        out.push_str(&format!("{prefix}└── … (not listed: more than {MAX_TREE_DEPTH} levels deep)\n"));
        return;
    }
    let count = tree.folders.len() + tree.files.len();
    let branch = |i: usize| if i + 1 == count { ("└── ", "    ") } else { ("├── ", "│   ") };
    for (i, sub) in tree.folders.iter().enumerate() {
        let (head, rest) = branch(i);
        let (name, id) = sub.folder.as_ref().map_or(("?", "?"), |f| (f.name.as_str(), f.id.as_str()));
        out.push_str(&format!("{prefix}{head}{name}/  {id}\n"));
        draw_children(sub, &format!("{prefix}{rest}"), out);
    }
    for (i, f) in tree.files.iter().enumerate() {
        let (head, _) = branch(tree.folders.len() + i);
        out.push_str(&format!("{prefix}{head}{}  {}  {}  v{}\n", f.name, f.id, human_bytes(f.size), f.version));
    }
}

// ---------------------------------------------------------------------------
// Progress.

/// Whether a transfer of `total` bytes gets a progress bar.
fn wants_bar(json: bool, stderr_is_terminal: bool, total: u64) -> bool {
    !json && stderr_is_terminal && total > BAR_THRESHOLD
}

/// A progress bar (hidden until a transfer turns out to be large) and the
/// callback that feeds it; `finish_and_clear` the bar when done.
fn transfer_progress(json: bool) -> (ProgressBar, impl FnMut(u64, u64)) {
    let terminal = std::io::stderr().is_terminal();
    let bar = ProgressBar::hidden();
    let handle = bar.clone();
    let mut shown = false;
    let progress = move |done: u64, total: u64| {
        if !shown && wants_bar(json, terminal, total) {
            shown = true;
            handle.set_draw_target(ProgressDrawTarget::stderr());
            if let Some(style) = super::cluster::transfer_style() {
                handle.set_style(style);
            }
            // Keeps the spinner alive while an upload hashes its source.
            handle.enable_steady_tick(Duration::from_millis(200));
        }
        if shown {
            handle.set_length(total);
            handle.set_position(done);
        }
    };
    (bar, progress)
}

// ---------------------------------------------------------------------------
// Commands.

/// Runs one `storage` command.
pub async fn storage(ctx: &Ctx, cmd: StorageCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        StorageCommand::Usage => {
            let usage = ctx.client.storage_usage().await?;
            show(ctx, out, &usage, || usage_text(&usage))
        }
    }
}

/// Runs one `file` command.
pub async fn run(ctx: &Ctx, cmd: FileCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let c = &ctx.client;
    match cmd {
        FileCommand::Upload { path, folder, name, as_version_of, media_type, tags } => {
            let meta = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if !meta.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            let options = UploadOptions {
                name: name.unwrap_or_default(),
                folder: folder_arg(folder.as_deref()).map(str::to_owned),
                new_version_of: as_version_of,
                media_type: media_type.unwrap_or_default(),
                tags,
            };
            let (bar, mut progress) = transfer_progress(ctx.json);
            progress(0, meta.len());
            let result = c.file_upload_path(&path, &options, progress).await;
            bar.finish_and_clear();
            let info = result.with_context(|| format!("uploading {}", path.display()))?;
            show(ctx, out, &info, || file_text(&info))
        }
        FileCommand::Download { id, output, version, offset, length, link } => {
            let options = DownloadOptions { version, offset, length };
            download(ctx, out, id.as_deref(), link.as_deref(), &options, output.as_deref()).await
        }
        FileCommand::Ls { folder, tree: false } => {
            let listing = list_all(ctx, folder_arg(folder.as_deref())).await?;
            show(ctx, out, &listing, || listing_table(&listing.folders, &listing.files))
        }
        FileCommand::Ls { folder, tree: true } => {
            let tree = fetch_tree(ctx, folder_arg(folder.as_deref()).map(str::to_owned), 0).await?;
            show(ctx, out, &tree, || tree_text(&tree))
        }
        FileCommand::Mkdir { name, parent } => {
            let folder = c.file_mkdir(&name, folder_arg(parent.as_deref())).await?;
            show(ctx, out, &folder, || format!("created {} {}\n", folder.id, folder.path))
        }
        FileCommand::Mv { id, to } => {
            let to = folder_arg(Some(&to)).unwrap_or("root");
            let answer = c.file_move(&id, to).await?;
            show(ctx, out, &answer, || match item_place(&answer) {
                Some((id, path)) => format!("moved {id} to {path}\n"),
                None => format!("moved {id}\n"),
            })
        }
        FileCommand::Rename { id, name } => {
            let answer = c.file_rename(&id, &name).await?;
            show(ctx, out, &answer, || match item_place(&answer) {
                Some((id, path)) => format!("renamed {id} to {path}\n"),
                None => format!("renamed {id} to {name:?}\n"),
            })
        }
        FileCommand::Info { id } => {
            let answer = c.file_info(&id).await?;
            show(ctx, out, &answer, || item_text(&answer))
        }
        FileCommand::Tag { file, tags } => {
            let info = c.file_set_tags(&file, &tags).await?;
            show(ctx, out, &info, || format!("{} tags: {}\n", info.id, list(&info.tags)))
        }
        FileCommand::Versions { file } => {
            let versions = c.file_versions(&file).await?;
            show(ctx, out, &versions, || versions_table(&versions))
        }
        FileCommand::RestoreVersion { file, number } => {
            let info = c.file_restore_version(&file, number).await?;
            show(ctx, out, &info, || format!("restored version {number} of {} as version {}\n", info.id, info.version))
        }
        FileCommand::Share { file, with, access, expires } => {
            let access = match access {
                ShareAccess::Read => Access::Read,
                ShareAccess::Write => Access::Write,
            };
            let expires_ms = expires.map(|d| expires_at(now_ms(), d)).transpose()?;
            let shares = c.file_share(&file, &with, access, expires_ms).await?;
            show(ctx, out, &shares, || shares_table(&shares))
        }
        FileCommand::Unshare { file, with } => {
            let shares = c.file_unshare(&file, &with).await?;
            show(ctx, out, &shares, || shares_table(&shares))
        }
        FileCommand::Shares { file } => {
            let shares = c.file_shares(&file).await?;
            show(ctx, out, &shares, || shares_table(&shares))
        }
        FileCommand::Link { file, expires } => {
            let expires_ms = expires.map(|d| expires_at(now_ms(), d)).transpose()?;
            let (link, token) = c.file_link(&file, expires_ms).await?;
            if ctx.json {
                emit_json(out, &json!({ "link": json_of(&link)?, "token": token }))
            } else {
                emit_text(out, &link_created_text(&link, &token))
            }
        }
        FileCommand::Unlink { file, link } => {
            c.file_unlink(&file, link).await?;
            let done = json!({ "file": file, "link": link, "removed": true });
            show(ctx, out, &done, || format!("removed link {link} of {file}\n"))
        }
        FileCommand::Links { file } => {
            let links = c.file_links(&file).await?;
            show(ctx, out, &links, || links_table(&links))
        }
        FileCommand::Favorite { file } => {
            let info = c.file_favorite(&file, true).await?;
            show(ctx, out, &info, || format!("{} ({}) is a favorite\n", info.id, info.path))
        }
        FileCommand::Unfavorite { file } => {
            let info = c.file_favorite(&file, false).await?;
            show(ctx, out, &info, || format!("{} ({}) is no longer a favorite\n", info.id, info.path))
        }
        FileCommand::Favorites => {
            let files = c.file_favorites().await?;
            show(ctx, out, &files, || files_table(&files))
        }
        FileCommand::Recent => {
            let files = c.file_recent().await?;
            show(ctx, out, &files, || files_table(&files))
        }
        FileCommand::Search { name, tag, media_type, folder, modified_after, modified_before, limit } => {
            let now = now_ms();
            let query = FileQuery {
                name,
                tag,
                media_type,
                folder,
                modified_after: modified_after.map(|w| w.resolve(now)),
                modified_before: modified_before.map(|w| w.resolve(now)),
            };
            let (files, more) = search(ctx, &query, limit).await?;
            show(ctx, out, &files, || files_table(&files))?;
            if more && !ctx.json {
                eprintln!("(more files match: use a larger --limit)");
            }
            Ok(())
        }
        FileCommand::Rm { id } => {
            c.file_trash(&id).await?;
            let done = json!({ "id": id, "trashed": true });
            show(ctx, out, &done, || format!("moved {id} to the trash (restore with: caddyctl file restore {id})\n"))
        }
        FileCommand::Trash => {
            let items = c.file_trash_list().await?;
            show(ctx, out, &items, || trash_table(&items))
        }
        FileCommand::Restore { id } => {
            let answer = c.file_restore(&id).await?;
            show(ctx, out, &answer, || match item_place(&answer) {
                Some((id, path)) => format!("restored {id} to {path}\n"),
                None => format!("restored {id}\n"),
            })
        }
        FileCommand::Purge { id } => {
            c.file_purge(&id).await?;
            let done = json!({ "id": id, "purged": true });
            show(ctx, out, &done, || format!("purged {id}: deleted for good\n"))
        }
    }
}

/// Every page of one folder.
async fn list_all(ctx: &Ctx, folder: Option<&str>) -> anyhow::Result<Listing> {
    let mut listing = Listing { folder: None, folders: Vec::new(), files: Vec::new() };
    let mut after: Option<String> = None;
    loop {
        let call = FileCall::List { folder: folder.map(str::to_owned), after: after.clone(), limit: Some(PAGE) };
        match ctx.client.file(&call).await? {
            FileAnswer::List { folder, folders, files, next } => {
                listing.folder = listing.folder.or(folder);
                listing.folders.extend(folders);
                listing.files.extend(files);
                match next {
                    None => return Ok(listing),
                    Some(next) if after.as_ref() == Some(&next) => {
                        bail!("the server repeated the listing cursor {next:?}")
                    }
                    Some(next) => after = Some(next),
                }
            }
            other => return Err(unexpected("list", &other)),
        }
    }
}

/// A folder and, recursively, its subfolders, down to [`MAX_TREE_DEPTH`] levels.
async fn fetch_tree(ctx: &Ctx, folder: Option<String>, depth: usize) -> anyhow::Result<Tree> {
    let listing = list_all(ctx, folder.as_deref()).await?;
    let mut tree = Tree { folder: listing.folder, folders: Vec::new(), files: listing.files, unlisted: false };
    for sub in listing.folders {
        let child = if depth + 1 >= MAX_TREE_DEPTH {
            Tree { folder: Some(sub), folders: Vec::new(), files: Vec::new(), unlisted: true }
        } else {
            let mut child = Box::pin(fetch_tree(ctx, Some(sub.id.clone()), depth + 1)).await?;
            child.folder.get_or_insert(sub);
            child
        };
        tree.folders.push(child);
    }
    Ok(tree)
}

/// Up to `limit` matches; whether more exist.
async fn search(ctx: &Ctx, query: &FileQuery, limit: u32) -> anyhow::Result<(Vec<FileInfo>, bool)> {
    let limit_len = limit as usize;
    let mut files = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let want = u32::try_from(limit_len - files.len()).unwrap_or(PAGE).min(PAGE);
        let (page, next) = ctx.client.file_search(query, after.as_deref(), want).await?;
        files.extend(page);
        match next {
            None => return Ok((files, false)),
            Some(_) if files.len() >= limit_len => {
                files.truncate(limit_len);
                return Ok((files, true));
            }
            Some(next) if after.as_ref() == Some(&next) => bail!("the server repeated the search cursor {next:?}"),
            Some(next) => after = Some(next),
        }
    }
}

/// Where a download goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Standard output.
    Stdout,
    /// This file.
    Path(PathBuf),
    /// The file's own name in this directory (empty: the current one).
    Dir(PathBuf),
}

fn target_of(output: Option<&Path>) -> Target {
    match output {
        None => Target::Dir(PathBuf::new()),
        Some(p) if p == Path::new("-") => Target::Stdout,
        Some(p) if p.is_dir() => Target::Dir(p.to_path_buf()),
        Some(p) => Target::Path(p.to_path_buf()),
    }
}

async fn download(
    ctx: &Ctx,
    out: &mut dyn Write,
    file: Option<&str>,
    link: Option<&str>,
    options: &DownloadOptions,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let c = &ctx.client;
    let target = target_of(output);
    if target == Target::Stdout && ctx.json {
        return Err(usage("--json cannot be combined with -o - (standard output carries the file's bytes)"));
    }
    let (bar, progress) = transfer_progress(ctx.json);
    let (downloaded, path) = match target {
        Target::Stdout => {
            let mut stdout = tokio::io::stdout();
            let result = c.file_download(file, link, options, &mut stdout, progress).await;
            bar.finish_and_clear();
            result?;
            return Ok(());
        }
        Target::Path(path) => {
            let result = c.file_download_path(file, link, options, &path, progress).await;
            bar.finish_and_clear();
            (result.with_context(|| format!("downloading to {}", path.display()))?, path)
        }
        Target::Dir(dir) => {
            // The name is known only once the download starts: download
            // beside the destination, then rename.
            let tmp = dir.join(format!(".caddyctl-download-{}", std::process::id()));
            let result = c.file_download_path(file, link, options, &tmp, progress).await;
            bar.finish_and_clear();
            let downloaded = result.with_context(|| format!("downloading to {}", tmp.display()))?;
            let path = match local_name(&downloaded.file.name) {
                Ok(name) => dir.join(name),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("writing {}", path.display()));
            }
            (downloaded, path)
        }
    };
    report_download(ctx, out, &downloaded, &path)
}

fn report_download(ctx: &Ctx, out: &mut dyn Write, d: &Downloaded, path: &Path) -> anyhow::Result<()> {
    if ctx.json {
        let value = json!({
            "file": json_of(&d.file)?,
            "version": d.version,
            "bytes": d.bytes,
            "path": path.display().to_string(),
        });
        emit_json(out, &value)
    } else {
        eprintln!("downloaded {} bytes of {} version {} to {}", d.bytes, d.file.id, d.version, path.display());
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(id: u64, name: &str, size: u64) -> FileInfo {
        FileInfo {
            id: format!("file-{id}"),
            name: name.into(),
            folder: None,
            path: format!("/{name}"),
            size,
            content_hash: "ab".repeat(32),
            media_type: "text/plain".into(),
            tags: vec![],
            owner: "user-1".into(),
            created_by: "user-1".into(),
            created_ms: 1_700_000_000_000,
            modified_by: "user-2".into(),
            modified_ms: 1_700_000_000_000,
            version: 2,
            versions: 2,
            deleted_ms: None,
            access: "owner".into(),
            favorite: false,
        }
    }

    fn folder(id: u64, name: &str, path: &str) -> FolderInfo {
        FolderInfo {
            id: format!("folder-{id}"),
            name: name.into(),
            parent: None,
            path: path.into(),
            created_by: "user-1".into(),
            created_ms: 0,
            deleted_ms: None,
        }
    }

    fn leaf(f: FolderInfo, files: Vec<FileInfo>) -> Tree {
        Tree { folder: Some(f), folders: vec![], files, unlisted: false }
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(size_text(12), "12 bytes");
        assert_eq!(size_text(1_572_864), "1.5 MiB (1572864 bytes)");
        assert_eq!(percent(1, 4), "25.0%");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(5, 0), "-");
        assert_eq!(percent(5, u64::MAX), "-");
    }

    #[test]
    fn expiry_is_now_plus_the_duration() {
        let now = 1_700_000_000_000;
        let parse = |s| crate::duration::parse_duration(s).unwrap();
        assert_eq!(expires_at(now, parse("1h")).unwrap(), now + 3_600_000);
        assert_eq!(expires_at(now, parse("7d")).unwrap(), now + 7 * 86_400_000);
        assert!(expires_at(now, parse("0s")).is_err());
        assert!(expires_at(now, parse("500ms")).is_err());
        assert!(expires_at(u64::MAX - 10, parse("1s")).is_err());
    }

    #[test]
    fn folder_args_and_local_names() {
        assert_eq!(folder_arg(None), None);
        assert_eq!(folder_arg(Some("root")), None);
        assert_eq!(folder_arg(Some("/")), None);
        assert_eq!(folder_arg(Some("folder-3")), Some("folder-3"));
        assert_eq!(local_name("plan.dxf").unwrap(), "plan.dxf");
        assert_eq!(local_name("Ünïcode ✓").unwrap(), "Ünïcode ✓");
        for bad in ["", ".", "..", "a/b", "/etc/passwd", "a/"] {
            assert!(local_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(target_of(None), Target::Dir(PathBuf::new()));
        assert_eq!(target_of(Some(Path::new("-"))), Target::Stdout);
        assert_eq!(target_of(Some(Path::new("/nonexistent/x.bin"))), Target::Path("/nonexistent/x.bin".into()));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(target_of(Some(dir.path())), Target::Dir(dir.path().to_path_buf()));
    }

    #[test]
    fn bars_only_for_large_transfers_on_a_terminal() {
        assert!(wants_bar(false, true, BAR_THRESHOLD + 1));
        assert!(!wants_bar(false, true, BAR_THRESHOLD));
        assert!(!wants_bar(true, true, u64::MAX));
        assert!(!wants_bar(false, false, u64::MAX));
    }

    #[test]
    fn trees_are_drawn_with_totals() {
        let tree = Tree {
            folder: None,
            folders: vec![
                Tree {
                    folder: Some(folder(3, "drawings", "/drawings")),
                    folders: vec![leaf(folder(5, "old", "/drawings/old"), vec![])],
                    files: vec![file(4, "plan.dxf", 1536)],
                    unlisted: false,
                },
                Tree { folder: Some(folder(6, "deep", "/deep")), folders: vec![], files: vec![], unlisted: true },
            ],
            files: vec![file(1, "notes.txt", 12)],
            unlisted: false,
        };
        assert_eq!(
            tree_text(&tree),
            "/\n\
             ├── drawings/  folder-3\n\
             │   ├── old/  folder-5\n\
             │   └── plan.dxf  file-4  1.5 KiB  v2\n\
             ├── deep/  folder-6\n\
             │   └── … (not listed: more than 64 levels deep)\n\
             └── notes.txt  file-1  12 B  v2\n\
             \n\
             3 folders, 2 files, 1.5 KiB\n"
        );
        let sub = leaf(folder(3, "drawings", "/drawings"), vec![]);
        assert_eq!(tree_text(&sub), "/drawings  folder-3\n\n0 folders, 0 files, 0 B\n");
        let json = json_of(&tree).unwrap();
        assert_eq!(json["folders"][0]["folders"][0]["folder"]["id"], "folder-5");
        assert_eq!(json["folders"][1]["unlisted"], true);
        assert!(json["folders"][0].get("unlisted").is_none());
        assert!(json["folder"].is_null());
    }

    #[test]
    fn tables_and_blocks() {
        let text = listing_table(&[folder(3, "drawings", "/drawings")], &[file(4, "plan.dxf", 2048)]);
        assert_eq!(
            text,
            "TYPE  ID        NAME      SIZE     VERSION  MODIFIED\n\
             dir   folder-3  drawings  -        -        1970-01-01 00:00:00\n\
             file  file-4    plan.dxf  2.0 KiB  2        2023-11-14 22:13:20\n"
        );
        let mut f = file(4, "plan.dxf", 2048);
        f.tags = vec!["a".into(), "b".into()];
        let text = file_text(&f);
        assert!(text.starts_with("id:           file-4\nname:         plan.dxf\npath:         /plan.dxf\n"), "{text}");
        assert!(text.contains("size:         2.0 KiB (2048 bytes)\n"), "{text}");
        assert!(text.contains("version:      2 (2 kept)\n"), "{text}");
        assert!(text.contains("tags:         a,b\n"), "{text}");
        assert!(text.contains("modified:     2023-11-14 22:13:20 by user-2\n"), "{text}");
        assert!(!text.contains("deleted"), "{text}");
        assert!(folder_text(&folder(3, "d", "/d")).contains("parent:  root\n"));
        let versions = [
            VersionInfo {
                version: 2,
                size: 10,
                content_hash: "0123456789abcdef0123".into(),
                author: "user-1".into(),
                stamp_ms: 0,
                current: true,
            },
            VersionInfo {
                version: 1,
                size: 5,
                content_hash: "ff".into(),
                author: "user-2".into(),
                stamp_ms: 0,
                current: false,
            },
        ];
        assert_eq!(
            versions_table(&versions),
            "VERSION  SIZE  AUTHOR  TIME                 CURRENT  HASH\n\
             2        10 B  user-1  1970-01-01 00:00:00  *        0123456789abcdef\n\
             1        5 B   user-2  1970-01-01 00:00:00           ff\n"
        );
        let share = ShareInfo {
            with: "team-2".into(),
            access: Access::Write,
            expires_ms: None,
            granted_by: "user-1".into(),
            granted_ms: 0,
        };
        assert!(shares_table(&[share]).contains("\nteam-2  write   never    user-1"));
        let trash = TrashEntry {
            id: "folder-3".into(),
            name: "d".into(),
            deleted_by: "user-1".into(),
            deleted_ms: 0,
            bytes: 3 << 20,
        };
        assert!(trash_table(&[trash]).ends_with("folder-3  d     user-1      1970-01-01 00:00:00  3.0 MiB\n"));
    }

    #[test]
    fn link_token_is_set_apart() {
        let link =
            LinkInfo { id: 4, file: "file-7".into(), expires_ms: Some(0), created_by: "user-1".into(), created_ms: 0 };
        let text = link_created_text(&link, "cl_secret");
        assert!(text.starts_with("created link 4 for file-7 (expires 1970-01-01 00:00:00 UTC)\n\n    cl_secret\n\n"));
        assert!(text.contains("shown only once"), "{text}");
        assert!(text.contains("caddyctl file unlink file-7 4\n"), "{text}");
        let text = links_table(&[LinkInfo { expires_ms: None, ..link }]);
        assert!(text.contains("\n4   file-7  never"), "{text}");
        assert!(!text.contains("cl_"), "{text}");
    }

    #[test]
    fn usage_against_the_quota() {
        let usage = StorageUsage {
            used_bytes: 3 << 30,
            max_bytes: 12 << 30,
            files: 7,
            versions: 9,
            file_bytes: 2 << 30,
            trash_bytes: 512,
            folders: 2,
        };
        assert_eq!(
            usage_text(&usage),
            "used:        3.0 GiB of 12.0 GiB (25.0%)\n\
             files:       7\n\
             versions:    9\n\
             file bytes:  2.0 GiB\n\
             trash bytes: 512 B\n\
             folders:     2\n"
        );
        let unlimited = StorageUsage { max_bytes: u64::MAX, ..usage };
        assert!(usage_text(&unlimited).starts_with("used:        3.0 GiB (no quota)\n"));
    }

    #[test]
    fn unexpected_answers_name_their_kind() {
        let err = unexpected("list", &FileAnswer::Done);
        assert_eq!(err.to_string(), "unexpected answer from the server: done instead of list");
        assert_eq!(item_place(&FileAnswer::File(file(1, "a", 1))), Some(("file-1", "/a")));
        assert_eq!(item_place(&FileAnswer::Done), None);
    }
}
