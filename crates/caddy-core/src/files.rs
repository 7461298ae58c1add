//! Files on the cluster: ids, names, the protocol calls and answers, the
//! views clients see, and the bounds that travel with a write.
//!
//! A file's bytes never enter the Raft log: they are split into chunks of
//! [`CHUNK_BYTES`] (the last one shorter) addressed by blake3 and kept in
//! the blob store; the log carries only the chunk list. Calls and answers
//! are internally tagged JSON (`{"op": ...}` / `{"kind": ...}`), like the
//! document protocol; file bytes travel beside the JSON.
//!
//! Invariants:
//! - Ids are `file-N` and `folder-N`, allocated from the tenant's id
//!   counter, never reused. The root folder has no id.
//! - A version's content hash is [`content_hash`] of its chunk list, so a
//!   server can check it without reading chunks it already holds.
//! - Names are 1..=255 bytes, never `.` or `..`, and contain no `/`, NUL
//!   or other control character.

use serde::{Deserialize, Serialize};

use crate::docs::DocId;
use crate::identity::{TeamId, UserId};
use crate::{CaddyError, ErrorCode};

/// Size of every chunk but a file's last.
pub const CHUNK_BYTES: u32 = 1024 * 1024;
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Most tags on one file.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Longest media type, in bytes.
pub const MAX_MEDIA_TYPE_BYTES: usize = 127;
/// Deepest folder nesting.
pub const MAX_FOLDER_DEPTH: usize = 64;
/// Most shares on one file.
pub const MAX_SHARES: usize = 256;
/// Most links on one file.
pub const MAX_LINKS: usize = 64;
/// Recent files remembered per user.
pub const MAX_RECENT: usize = 50;
/// Most favorites per user.
pub const MAX_FAVORITES: usize = 1000;

fn parse_numbered(s: &str, prefix: &str, what: &str) -> Result<u64, CaddyError> {
    let digits = s.strip_prefix(prefix).unwrap_or(s);
    match digits.parse::<u64>() {
        Ok(n) if n > 0 && !digits.starts_with('0') && !digits.starts_with('+') => Ok(n),
        _ => Err(CaddyError::invalid(format!("{s:?} is not a {what} id ({prefix}N)"))),
    }
}

/// A file id: `file-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub u64);

impl FileId {
    /// Parses `file-N` (or a bare `N`).
    pub fn parse(s: &str) -> Result<FileId, CaddyError> {
        parse_numbered(s, "file-", "file").map(FileId)
    }
    /// Fixed-width form for storage keys.
    pub fn key_part(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl std::fmt::Display for FileId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "file-{}", self.0)
    }
}

/// A folder id: `folder-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FolderId(pub u64);

impl FolderId {
    /// Parses `folder-N` (or a bare `N`).
    pub fn parse(s: &str) -> Result<FolderId, CaddyError> {
        parse_numbered(s, "folder-", "folder").map(FolderId)
    }
    /// Fixed-width form for storage keys.
    pub fn key_part(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl std::fmt::Display for FolderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "folder-{}", self.0)
    }
}

/// Parses an optional folder argument: absent, empty, `/` or `root` mean the root.
pub fn parse_folder(s: Option<&str>) -> Result<Option<FolderId>, CaddyError> {
    match s {
        None | Some("") | Some("/") | Some("root") => Ok(None),
        Some(s) => FolderId::parse(s).map(Some),
    }
}

/// Something that can be moved, renamed or trashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ItemId {
    /// A file.
    File(FileId),
    /// A folder (and everything in it).
    Folder(FolderId),
    /// A CAD document (trash, restore and purge only).
    Doc(DocId),
}

impl ItemId {
    /// Parses `file-N`, `folder-N` or `doc-N`.
    pub fn parse(s: &str) -> Result<ItemId, CaddyError> {
        if s.starts_with("file-") {
            FileId::parse(s).map(ItemId::File)
        } else if s.starts_with("folder-") {
            FolderId::parse(s).map(ItemId::Folder)
        } else if s.starts_with("doc-") {
            DocId::parse(s).map(ItemId::Doc)
        } else {
            Err(CaddyError::invalid(format!("{s:?} is not a file-N, folder-N or doc-N id")))
        }
    }
}

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemId::File(id) => id.fmt(f),
            ItemId::Folder(id) => id.fmt(f),
            ItemId::Doc(id) => id.fmt(f),
        }
    }
}

/// Validates a file or folder name (kept exactly as given).
pub fn item_name(name: &str) -> Result<String, CaddyError> {
    let bad = |why: &str| Err(CaddyError::invalid(format!("name {name:?} {why}")));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(CaddyError::invalid(format!("name longer than {MAX_NAME_BYTES} bytes")));
    }
    if name == "." || name == ".." {
        return bad("is reserved");
    }
    if name.contains('/') {
        return bad("must not contain '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("must not contain NUL or control characters");
    }
    if name.trim() != name {
        return bad("must not start or end with whitespace");
    }
    Ok(name.to_owned())
}

/// Validates a file's tags: at most [`MAX_TAGS`], each 1..=64 bytes of
/// letters, digits, `.`, `_`, `-`; duplicates removed, order kept.
pub fn file_tags(tags: &[String]) -> Result<Vec<String>, CaddyError> {
    if tags.len() > MAX_TAGS {
        return Err(CaddyError::invalid(format!("at most {MAX_TAGS} tags per file")));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        if t.is_empty() || t.len() > MAX_TAG_BYTES || !t.chars().all(ok_char) {
            return Err(CaddyError::invalid(format!(
                "tag {t:?} must be 1 to {MAX_TAG_BYTES} letters, digits, '.', '_' or '-'"
            )));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Validates a media type (`type/subtype`, printable ASCII, no spaces);
/// empty means `application/octet-stream`.
pub fn media_type(value: &str) -> Result<String, CaddyError> {
    if value.is_empty() {
        return Ok("application/octet-stream".into());
    }
    let ok = value.len() <= MAX_MEDIA_TYPE_BYTES
        && value.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        && value.chars().all(|c| c.is_ascii_graphic());
    if !ok {
        return Err(CaddyError::invalid(format!("{value:?} is not a media type (type/subtype)")));
    }
    Ok(value.to_ascii_lowercase())
}

/// Guesses a media type from a file name's extension.
pub fn guess_media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "dxf" => "image/vnd.dxf",
        "dwg" => "image/vnd.dwg",
        "step" | "stp" => "model/step",
        "stl" => "model/stl",
        "obj" => "model/obj",
        "gltf" => "model/gltf+json",
        "glb" => "model/gltf-binary",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" | "md" => "text/plain",
        "csv" => "text/csv",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// One chunk of a version: its blake3 and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// blake3 of the chunk's bytes.
    pub hash: [u8; 32],
    /// Its length in bytes.
    pub len: u32,
}

/// The content hash of a version: blake3 over the chunk size and every
/// chunk hash in order. Equal for equal bytes; computable from the list.
pub fn content_hash(chunks: &[ChunkRef]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&CHUNK_BYTES.to_le_bytes());
    for c in chunks {
        h.update(&c.hash);
    }
    *h.finalize().as_bytes()
}

/// Checks that a chunk list describes `size` bytes cut at [`CHUNK_BYTES`].
pub fn check_chunk_layout(size: u64, chunks: &[ChunkRef]) -> Result<(), CaddyError> {
    let expected = size.div_ceil(u64::from(CHUNK_BYTES));
    if chunks.len() as u64 != expected {
        return Err(CaddyError::invalid(format!(
            "{size} bytes make {expected} chunks of {CHUNK_BYTES} bytes, not {}",
            chunks.len()
        )));
    }
    for (i, c) in chunks.iter().enumerate() {
        let start = i as u64 * u64::from(CHUNK_BYTES);
        let want = (size - start).min(u64::from(CHUNK_BYTES));
        if u64::from(c.len) != want {
            return Err(CaddyError::invalid(format!("chunk {i} should be {want} bytes, not {}", c.len)));
        }
    }
    Ok(())
}

/// Read or write access granted by a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Download, list versions.
    Read,
    /// Also upload new versions, rename, move, tag, restore a version.
    Write,
}

impl Access {
    /// Parses `read` or `write`.
    pub fn parse(s: &str) -> Result<Access, CaddyError> {
        match s {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            _ => Err(CaddyError::invalid(format!("access {s:?} must be read or write"))),
        }
    }
}

/// Who a file is shared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Grantee {
    /// One user.
    User(UserId),
    /// Every member of a team (and its sub-teams).
    Team(TeamId),
}

impl Grantee {
    /// Parses `user-N` or `team-N`.
    pub fn parse(s: &str) -> Result<Grantee, CaddyError> {
        if let Some(n) = s.strip_prefix("user-") {
            return parse_numbered(n, "", "user").map(|n| Grantee::User(UserId(n)));
        }
        if let Some(n) = s.strip_prefix("team-") {
            return parse_numbered(n, "", "team").map(|n| Grantee::Team(TeamId(n)));
        }
        Err(CaddyError::invalid(format!("share with {s:?}: name a user-N or a team-N")))
    }
}

impl std::fmt::Display for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grantee::User(u) => u.fmt(f),
            Grantee::Team(t) => t.fmt(f),
        }
    }
}

/// The bounds an upload is judged by: the accepting node's configuration,
/// carried inside the log entry so that every replica judges alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBounds {
    /// Largest file, in bytes.
    pub max_file_bytes: u64,
    /// Versions kept per file (the oldest beyond it are dropped).
    pub max_versions: u32,
}

impl Default for FileBounds {
    fn default() -> Self {
        FileBounds { max_file_bytes: 4 << 30, max_versions: 20 }
    }
}

/// What an upload commits to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommitTarget {
    /// A new file.
    New {
        /// Its name.
        name: String,
        /// Its folder (`None`: the root).
        folder: Option<FolderId>,
        /// Its media type.
        media_type: String,
        /// Its tags.
        tags: Vec<String>,
    },
    /// A new version of an existing file.
    Version {
        /// The file.
        file: FileId,
    },
}

/// A file-system change proposed through Raft (inside an identity-checked
/// call). New variants go at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum FileOp {
    MkDir {
        name: String,
        parent: Option<FolderId>,
    },
    /// Commits an upload whose chunks a quorum of nodes (or the shared
    /// object store) already holds.
    Commit {
        target: CommitTarget,
        size: u64,
        content_hash: [u8; 32],
        chunks: Vec<ChunkRef>,
        bounds: FileBounds,
    },
    Move {
        item: ItemId,
        to: Option<FolderId>,
    },
    Rename {
        item: ItemId,
        name: String,
    },
    SetTags {
        file: FileId,
        tags: Vec<String>,
    },
    RestoreVersion {
        file: FileId,
        version: u64,
        bounds: FileBounds,
    },
    Share {
        file: FileId,
        grantee: Grantee,
        access: Access,
        expires_ms: Option<u64>,
    },
    Unshare {
        file: FileId,
        grantee: Grantee,
    },
    /// Creates a share link; the proposer generated the token and keeps it.
    Link {
        file: FileId,
        token_hash: [u8; 32],
        expires_ms: Option<u64>,
    },
    Unlink {
        file: FileId,
        link: u64,
    },
    Favorite {
        file: FileId,
        on: bool,
    },
    /// Records that the caller opened the file (recent files).
    Touch {
        file: FileId,
    },
    Trash {
        item: ItemId,
    },
    Restore {
        item: ItemId,
    },
    Purge {
        item: ItemId,
    },
}

impl FileOp {
    /// Audit action name.
    pub fn name(&self) -> &'static str {
        match self {
            FileOp::MkDir { .. } => "file.mkdir",
            FileOp::Commit { target: CommitTarget::New { .. }, .. } => "file.upload",
            FileOp::Commit { target: CommitTarget::Version { .. }, .. } => "file.version",
            FileOp::Move { .. } => "file.move",
            FileOp::Rename { .. } => "file.rename",
            FileOp::SetTags { .. } => "file.tags",
            FileOp::RestoreVersion { .. } => "file.restore_version",
            FileOp::Share { .. } => "file.share",
            FileOp::Unshare { .. } => "file.unshare",
            FileOp::Link { .. } => "file.link",
            FileOp::Unlink { .. } => "file.unlink",
            FileOp::Favorite { on: true, .. } => "file.favorite",
            FileOp::Favorite { on: false, .. } => "file.unfavorite",
            FileOp::Touch { .. } => "file.touch",
            FileOp::Trash { .. } => "file.trash",
            FileOp::Restore { .. } => "file.restore",
            FileOp::Purge { .. } => "file.purge",
        }
    }

    /// Whether only `files:read` is needed (the op changes nothing but the
    /// caller's own favorites and recent list).
    pub fn is_personal(&self) -> bool {
        matches!(self, FileOp::Favorite { .. } | FileOp::Touch { .. })
    }

    /// The resource the audit entry names.
    pub fn resource(&self) -> String {
        match self {
            FileOp::MkDir { name, .. } => format!("folder {name}"),
            FileOp::Commit { target: CommitTarget::New { name, .. }, .. } => format!("file {name}"),
            FileOp::Commit { target: CommitTarget::Version { file }, .. } => file.to_string(),
            FileOp::Move { item, .. }
            | FileOp::Rename { item, .. }
            | FileOp::Trash { item }
            | FileOp::Restore { item }
            | FileOp::Purge { item } => item.to_string(),
            FileOp::SetTags { file, .. }
            | FileOp::RestoreVersion { file, .. }
            | FileOp::Link { file, .. }
            | FileOp::Unlink { file, .. }
            | FileOp::Favorite { file, .. }
            | FileOp::Touch { file } => file.to_string(),
            FileOp::Share { file, grantee, .. } | FileOp::Unshare { file, grantee } => format!("{file} to {grantee}"),
        }
    }
}

/// A folder as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FolderInfo {
    /// `folder-N`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Parent (`None`: the root).
    pub parent: Option<String>,
    /// Path from the root, `/a/b`.
    pub path: String,
    /// Creator.
    pub created_by: String,
    /// Stamped creation time.
    pub created_ms: u64,
    /// When it was trashed.
    pub deleted_ms: Option<u64>,
}

/// A file as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    /// `file-N`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Folder (`None`: the root).
    pub folder: Option<String>,
    /// Path from the root including the name.
    pub path: String,
    /// Size of the current version.
    pub size: u64,
    /// Content hash of the current version (hex).
    pub content_hash: String,
    /// Media type.
    pub media_type: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Owner (an actor, e.g. `user-3`).
    pub owner: String,
    /// Created by and at.
    pub created_by: String,
    /// Stamped.
    pub created_ms: u64,
    /// Last changed by and at.
    pub modified_by: String,
    /// Stamped.
    pub modified_ms: u64,
    /// Current version number (1 is the first upload).
    pub version: u64,
    /// Versions kept.
    pub versions: u64,
    /// When it was trashed.
    pub deleted_ms: Option<u64>,
    /// The caller's access: `owner`, `write` or `read`.
    pub access: String,
    /// Whether the caller marked it favorite.
    pub favorite: bool,
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Number (1 is the first upload; never reused).
    pub version: u64,
    /// Bytes.
    pub size: u64,
    /// Content hash (hex).
    pub content_hash: String,
    /// Who uploaded it.
    pub author: String,
    /// Stamped.
    pub stamp_ms: u64,
    /// Whether it is the current version.
    pub current: bool,
}

/// One share of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareInfo {
    /// `user-N` or `team-N`.
    pub with: String,
    /// `read` or `write`.
    pub access: Access,
    /// Stamped expiry.
    pub expires_ms: Option<u64>,
    /// Who shared it.
    pub granted_by: String,
    /// Stamped.
    pub granted_ms: u64,
}

/// One share link (its token is shown only when it is created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// Link number within the tenant.
    pub id: u64,
    /// The file.
    pub file: String,
    /// Stamped expiry.
    pub expires_ms: Option<u64>,
    /// Creator.
    pub created_by: String,
    /// Stamped.
    pub created_ms: u64,
}

/// Something in the trash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// `file-N`, `folder-N` or `doc-N`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Who trashed it.
    pub deleted_by: String,
    /// Stamped.
    pub deleted_ms: u64,
    /// Bytes it holds (all versions; for a folder, everything inside).
    pub bytes: u64,
}

/// A tenant's storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageUsage {
    /// Bytes counted against the quota (every stored file version,
    /// documents, key-value data).
    pub used_bytes: u64,
    /// The quota.
    pub max_bytes: u64,
    /// Files (trashed included).
    pub files: u64,
    /// Stored versions.
    pub versions: u64,
    /// Bytes of file versions.
    pub file_bytes: u64,
    /// Bytes of file versions in the trash.
    pub trash_bytes: u64,
    /// Folders.
    pub folders: u64,
}

/// Search filters; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileQuery {
    /// Case-insensitive substring of the name.
    #[serde(default)]
    pub name: Option<String>,
    /// Has this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Media type equals this, or starts with it when it ends in `/`.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Directly in this folder (`root` for the root).
    #[serde(default)]
    pub folder: Option<String>,
    /// Modified at or after (stamped ms).
    #[serde(default)]
    pub modified_after: Option<u64>,
    /// Modified before (stamped ms).
    #[serde(default)]
    pub modified_before: Option<u64>,
}

/// A file request (JSON, tag `op`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum FileCall {
    Mkdir {
        name: String,
        #[serde(default)]
        parent: Option<String>,
    },
    /// One folder's subfolders and files, by name, paged.
    List {
        #[serde(default)]
        folder: Option<String>,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Info {
        id: String,
    },
    Mv {
        id: String,
        to: String,
    },
    Rename {
        id: String,
        name: String,
    },
    Tags {
        file: String,
        tags: Vec<String>,
    },
    Versions {
        file: String,
    },
    RestoreVersion {
        file: String,
        version: u64,
    },
    Share {
        file: String,
        with: String,
        access: Access,
        #[serde(default)]
        expires_ms: Option<u64>,
    },
    Unshare {
        file: String,
        with: String,
    },
    Shares {
        file: String,
    },
    Link {
        file: String,
        #[serde(default)]
        expires_ms: Option<u64>,
    },
    Unlink {
        file: String,
        link: u64,
    },
    Links {
        file: String,
    },
    Favorite {
        file: String,
    },
    Unfavorite {
        file: String,
    },
    Favorites,
    Recent,
    Search {
        #[serde(flatten)]
        query: FileQuery,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Rm {
        id: String,
    },
    Trash,
    Restore {
        id: String,
    },
    Purge {
        id: String,
    },
    Usage,
    /// Starts an upload: the server answers which chunks it needs, the
    /// client sends them as `FileChunk` frames, the server answers with the
    /// committed file.
    Upload {
        /// New file: its name (and folder). Ignored when `file` is given.
        #[serde(default)]
        name: String,
        #[serde(default)]
        folder: Option<String>,
        /// Existing file: upload a new version of it.
        #[serde(default)]
        file: Option<String>,
        size: u64,
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        tags: Vec<String>,
        /// blake3 of each chunk, hex, in order.
        chunks: Vec<String>,
    },
    /// Downloads a file (or through a share link's token, without a
    /// credential), optionally one version and a byte range.
    Download {
        #[serde(default)]
        file: Option<String>,
        #[serde(default)]
        link: Option<String>,
        #[serde(default)]
        version: Option<u64>,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        length: Option<u64>,
    },
}

impl FileCall {
    /// Whether the call changes nothing (served after a read barrier).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            FileCall::List { .. }
                | FileCall::Info { .. }
                | FileCall::Versions { .. }
                | FileCall::Shares { .. }
                | FileCall::Links { .. }
                | FileCall::Favorites
                | FileCall::Recent
                | FileCall::Search { .. }
                | FileCall::Trash
                | FileCall::Usage
        )
    }
}

/// A file answer (JSON, tag `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum FileAnswer {
    File(FileInfo),
    Folder(FolderInfo),
    /// One folder's content; `next` is the `after` cursor of the next page.
    List {
        folder: Option<FolderInfo>,
        folders: Vec<FolderInfo>,
        files: Vec<FileInfo>,
        next: Option<String>,
    },
    Files {
        files: Vec<FileInfo>,
        next: Option<String>,
    },
    Versions {
        versions: Vec<VersionInfo>,
    },
    Shares {
        shares: Vec<ShareInfo>,
    },
    /// A link; `token` only in the answer to its creation.
    Link {
        link: LinkInfo,
        token: Option<String>,
    },
    Links {
        links: Vec<LinkInfo>,
    },
    Trash {
        items: Vec<TrashEntry>,
    },
    Usage(StorageUsage),
    /// Which chunk indexes the server needs for an upload.
    Need {
        chunks: Vec<u32>,
    },
    /// A download starts: the bytes `offset..offset+length` of `version`
    /// follow as payload frames.
    Download {
        file: FileInfo,
        version: u64,
        offset: u64,
        length: u64,
    },
    Done,
}

/// Parses a hex chunk hash from a request.
pub fn parse_hash(hex_hash: &str) -> Result<[u8; 32], CaddyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut out)
        .map_err(|_| CaddyError::new(ErrorCode::InvalidArgument, format!("{hex_hash:?} is not a blake3 hash")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["plan.dxf", "Ünïcode ✓", "a b", &"x".repeat(255)] {
            assert_eq!(item_name(good).unwrap(), good);
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", "tab\there", " lead", "trail ", &"x".repeat(256)] {
            assert_eq!(item_name(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad:?}");
        }
        assert_eq!(file_tags(&["a".into(), "b-1".into(), "a".into()]).unwrap(), vec!["a", "b-1"]);
        assert!(file_tags(&["a b".into()]).is_err() && file_tags(&vec!["t".into(); 33]).is_err());
        assert_eq!(media_type("").unwrap(), "application/octet-stream");
        assert_eq!(media_type("Image/PNG").unwrap(), "image/png");
        assert!(media_type("png").is_err() && media_type("a/ b").is_err());
    }

    #[test]
    fn ids_parse() {
        assert_eq!(ItemId::parse("file-3").unwrap(), ItemId::File(FileId(3)));
        assert_eq!(ItemId::parse("folder-9").unwrap(), ItemId::Folder(FolderId(9)));
        assert_eq!(ItemId::parse("doc-2").unwrap(), ItemId::Doc(DocId(2)));
        for bad in ["file-0", "file-", "x-1", "folder-01", "3"] {
            assert!(ItemId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_folder(Some("root")).unwrap(), None);
        assert_eq!(Grantee::parse("team-4").unwrap(), Grantee::Team(TeamId(4)));
        assert!(Grantee::parse("user-0").is_err() && Grantee::parse("bob").is_err());
    }

    #[test]
    fn chunk_layout_is_checked() {
        let c = |len| ChunkRef { hash: [0; 32], len };
        let full = CHUNK_BYTES;
        check_chunk_layout(0, &[]).unwrap();
        check_chunk_layout(u64::from(full) + 5, &[c(full), c(5)]).unwrap();
        assert!(check_chunk_layout(u64::from(full) + 5, &[c(full)]).is_err());
        assert!(check_chunk_layout(10, &[c(9)]).is_err());
        assert!(check_chunk_layout(u64::from(full) * 2, &[c(5), c(full)]).is_err());
        assert_ne!(content_hash(&[c(1)]), content_hash(&[c(1), c(1)]));
    }

    #[test]
    fn calls_are_tagged_json() {
        let call: FileCall = serde_json::from_str(r#"{"op":"search","name":"plan","limit":5}"#).unwrap();
        let FileCall::Search { query, limit, .. } = call else { panic!("not a search") };
        assert_eq!((query.name.as_deref(), limit), (Some("plan"), Some(5)));
        let answer = FileAnswer::Need { chunks: vec![0, 2] };
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<FileAnswer>(&text).unwrap(), answer);
    }
}
