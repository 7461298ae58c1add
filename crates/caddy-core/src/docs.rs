//! CAD documents on the cluster: the protocol calls and answers, the views
//! clients see, the bounds that travel with a write, and presence.
//!
//! The document content itself is Loro update bytes (see `caddy-doc`); here
//! a document is an id, a record and a numbered sequence of committed
//! updates. Calls and answers are internally tagged JSON (`{"op": ...}` /
//! `{"kind": ...}`) like the identity protocol; update and snapshot bytes
//! travel beside the JSON as one binary payload, never inside it.
//!
//! Invariants:
//! - A document id is `doc-N`, allocated from its tenant's id counter, never
//!   reused.
//! - `seq` counts committed updates that changed the document: update `n`
//!   is the `n`th such change (0 is the creation). Versions are Loro
//!   version vectors, hex-encoded in JSON.
//! - Presence is never written to the Raft log.

use serde::{Deserialize, Serialize};

use crate::{CaddyError, ErrorCode};

/// Longest document name, in characters.
pub const MAX_DOC_NAME_CHARS: usize = 200;
/// Longest tag name, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// Most tags per document.
pub const MAX_TAGS_PER_DOC: usize = 1000;
/// Most selected ids in one presence state.
pub const MAX_PRESENCE_SELECTION: usize = 1000;

/// A document id: `doc-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocId(pub u64);

impl DocId {
    /// Parses `doc-N` (or a bare `N`).
    pub fn parse(s: &str) -> Result<DocId, CaddyError> {
        let digits = s.strip_prefix("doc-").unwrap_or(s);
        match digits.parse::<u64>() {
            Ok(n) if n > 0 && !digits.starts_with('0') => Ok(DocId(n)),
            _ => Err(CaddyError::invalid(format!("{s:?} is not a document id (doc-N)"))),
        }
    }

    /// Fixed-width form for storage keys, so keys sort by id.
    pub fn key_part(&self) -> String {
        format!("{:016x}", self.0)
    }
}

impl std::fmt::Display for DocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "doc-{}", self.0)
    }
}

/// Validates a document name: 1..=200 characters, no control characters.
pub fn doc_name(name: &str) -> Result<String, CaddyError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(CaddyError::invalid("document name must not be empty"));
    }
    if trimmed.chars().count() > MAX_DOC_NAME_CHARS {
        return Err(CaddyError::invalid(format!("document name longer than {MAX_DOC_NAME_CHARS} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(CaddyError::invalid("document name must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// Validates a tag name: 1..=64 bytes of `[A-Za-z0-9._-]`, not all digits
/// (a number names an update sequence number).
pub fn tag_name(name: &str) -> Result<String, CaddyError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_TAG_BYTES || !name.chars().all(ok_char) {
        return Err(CaddyError::invalid(format!(
            "tag {name:?} must be 1 to {MAX_TAG_BYTES} characters of letters, digits, '.', '_' or '-'"
        )));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(CaddyError::invalid(format!("tag {name:?} must not be a number (numbers name updates)")));
    }
    Ok(name.to_owned())
}

/// The bounds a document write is judged by. They are the accepting node's
/// configuration, carried inside the log entry so that every replica
/// judges the write the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocBounds {
    /// Largest update, in bytes.
    pub max_update_bytes: u64,
    /// Largest document, in bytes of committed updates (its whole history).
    pub max_document_bytes: u64,
    /// Most entities, deleted ones included.
    pub max_entities: u64,
}

impl Default for DocBounds {
    fn default() -> Self {
        DocBounds { max_update_bytes: 4 << 20, max_document_bytes: 256 << 20, max_entities: 1_000_000 }
    }
}

/// What clients see of a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocInfo {
    /// `doc-N`.
    pub id: String,
    /// Name (mirrors the name inside the drawing).
    pub name: String,
    /// Who created it (an actor, e.g. `user-3`).
    pub created_by: String,
    /// The owning user, if a user created it.
    pub owner: Option<String>,
    /// Creation time (stamped, ms since the epoch).
    pub created_ms: u64,
    /// Last committed change (stamped).
    pub modified_ms: u64,
    /// When it was deleted, if it is in the trash.
    pub deleted_ms: Option<u64>,
    /// Committed changes so far (0: just created).
    pub seq: u64,
    /// Current version (hex Loro version vector).
    pub version: String,
    /// Bytes of all committed updates (what counts against bounds and quota).
    pub bytes: u64,
    /// Entities, deleted ones included.
    pub entities: u64,
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Sequence number (0: creation).
    pub seq: u64,
    /// Who committed it.
    pub author: String,
    /// Stamped time.
    pub stamp_ms: u64,
    /// The document's version after it (hex).
    pub version: String,
    /// Size of the update in bytes.
    pub bytes: u64,
    /// What it was: `create`, `update`, `rename`.
    pub action: String,
}

/// A named version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocTag {
    /// Tag name.
    pub name: String,
    /// The change it names.
    pub seq: u64,
    /// The version at that change (hex).
    pub version: String,
    /// Who tagged.
    pub created_by: String,
    /// When (stamped).
    pub created_ms: u64,
}

/// Where a user is in a document. Ephemeral: fanned out to subscribers,
/// never stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PresenceState {
    /// Cursor position in drawing units.
    #[serde(default)]
    pub cursor: Option<[f64; 2]>,
    /// Selected entity ids.
    #[serde(default)]
    pub selection: Vec<String>,
    /// Visible window: min x, min y, max x, max y.
    #[serde(default)]
    pub viewport: Option<[f64; 4]>,
    /// Display colour, `#rrggbb`.
    #[serde(default)]
    pub color: String,
}

impl PresenceState {
    /// Checks bounds and shapes (no NaN, bounded selection, a colour).
    pub fn validate(&self) -> Result<(), CaddyError> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if self.cursor.is_some_and(|c| !finite(&c)) || self.viewport.is_some_and(|v| !finite(&v)) {
            return Err(CaddyError::invalid("presence coordinates must be finite numbers"));
        }
        if self.selection.len() > MAX_PRESENCE_SELECTION {
            return Err(CaddyError::invalid(format!("presence selection over {MAX_PRESENCE_SELECTION} ids")));
        }
        if self.selection.iter().any(|s| s.is_empty() || s.len() > 64) {
            return Err(CaddyError::invalid("presence selection ids must be 1 to 64 bytes"));
        }
        let hex = self.color.strip_prefix('#').unwrap_or("");
        if !self.color.is_empty() && (hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit())) {
            return Err(CaddyError::invalid(format!("presence color {:?} must look like #1f77b4", self.color)));
        }
        Ok(())
    }
}

/// A presence as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// Tenant of the document.
    pub tenant: String,
    /// The document.
    pub doc: String,
    /// Who (an actor, set by the server from the credential).
    pub user: String,
    /// Which client of that user (random per SDK instance).
    pub client: u64,
    /// The state.
    pub state: PresenceState,
    /// Milliseconds until it expires unless refreshed.
    pub ttl_ms: u64,
}

/// A document request (JSON, tag `op`). `update` carries its bytes in the
/// request's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DocCall {
    /// Creates a document; answers `info`.
    Create {
        name: String,
        #[serde(default)]
        units: Option<String>,
    },
    /// Lists the tenant's documents by id; answers `list`.
    List {
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
        /// Also list deleted documents.
        #[serde(default)]
        deleted: bool,
    },
    /// One document's record; answers `info`.
    Get { doc: String },
    /// Document bytes: the whole document (a snapshot), or only what a
    /// replica at `since` is missing, or the document as it was `at` a
    /// past change (a seq number, a tag or a hex version). Answers
    /// `fetched` with the bytes in the payload.
    Fetch {
        doc: String,
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        at: Option<String>,
    },
    /// Commits the update bytes in the payload; answers `updated`.
    Update { doc: String },
    /// Renames; answers `info`.
    Rename { doc: String, name: String },
    /// Moves to the trash (soft delete); answers `info`.
    Delete { doc: String },
    /// Brings back from the trash; answers `info`.
    Restore { doc: String },
    /// Committed changes, oldest first, after `after`; answers `history`.
    History {
        doc: String,
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Names a version (the current one, or `at` a seq); answers `tag`.
    Tag {
        doc: String,
        name: String,
        #[serde(default)]
        at: Option<u64>,
    },
    /// Lists tags; answers `tags`.
    Tags { doc: String },
    /// Streams committed updates from `since` (a hex version; none: the
    /// whole document first) and presence; answers a sequence of `event`.
    Watch {
        doc: String,
        #[serde(default)]
        since: Option<String>,
    },
    /// Sets (or with `leave`, clears) this client's presence; answers `done`.
    Presence {
        doc: String,
        #[serde(default)]
        state: PresenceState,
        #[serde(default)]
        leave: bool,
    },
}

impl DocCall {
    /// Whether this call only reads.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            DocCall::List { .. }
                | DocCall::Get { .. }
                | DocCall::Fetch { .. }
                | DocCall::History { .. }
                | DocCall::Tags { .. }
                | DocCall::Watch { .. }
        )
    }
}

/// What a fetch returned (the bytes are in the payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// The document's version the bytes bring a replica to (hex).
    pub version: String,
    /// The change number of that version.
    pub seq: u64,
    /// `true`: a snapshot (load it); `false`: updates (import them).
    pub snapshot: bool,
}

/// One event of a document watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DocEvent {
    /// Committed changes (bytes in the payload) bringing a replica to `version`.
    Update { seq: u64, author: String, stamp_ms: u64, version: String },
    /// Everything committed before the watch started has been sent.
    CaughtUp { seq: u64, version: String },
    /// Someone's presence changed.
    Presence(Presence),
    /// Someone's presence ended (left or went quiet).
    PresenceGone { user: String, client: u64 },
    /// The document was moved to the trash.
    Deleted,
}

/// A document answer (JSON, tag `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum DocAnswer {
    Info(DocInfo),
    List { docs: Vec<DocInfo>, more: bool },
    Fetched(Fetched),
    Updated { seq: u64, version: String, changed: bool },
    History { entries: Vec<HistoryEntry>, more: bool },
    Tag(DocTag),
    Tags { tags: Vec<DocTag> },
    Event(DocEvent),
    Done,
}

/// Parses a hex version from a request.
pub fn parse_version(hex_version: &str) -> Result<Vec<u8>, CaddyError> {
    hex::decode(hex_version).map_err(|_| {
        CaddyError::new(ErrorCode::InvalidArgument, "version must be a hex string (from a fetch or history)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_tags_are_validated() {
        assert_eq!(DocId::parse("doc-12").unwrap(), DocId(12));
        assert_eq!(DocId::parse("7").unwrap().to_string(), "doc-7");
        for bad in ["", "doc-", "doc-0", "doc-01", "doc-x", "doc--1", "doc-99999999999999999999"] {
            assert_eq!(DocId::parse(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad}");
        }
        assert_eq!(doc_name("  Floor plan ").unwrap(), "Floor plan");
        assert!(doc_name("").is_err() && doc_name("a\nb").is_err() && doc_name(&"x".repeat(201)).is_err());
        assert!(tag_name("v1.0-final").is_ok());
        assert!(tag_name("12").is_err() && tag_name("a b").is_err() && tag_name("").is_err());
        assert!(tag_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn presence_is_bounded() {
        let ok = PresenceState { cursor: Some([1.0, 2.0]), color: "#1f77b4".into(), ..Default::default() };
        ok.validate().unwrap();
        let nan = PresenceState { cursor: Some([f64::NAN, 0.0]), ..Default::default() };
        assert!(nan.validate().is_err());
        let color = PresenceState { color: "red".into(), ..Default::default() };
        assert!(color.validate().is_err());
        let many = PresenceState { selection: vec!["e".into(); 1001], ..Default::default() };
        assert!(many.validate().is_err());
    }

    #[test]
    fn calls_are_tagged_json() {
        let call: DocCall = serde_json::from_str(r#"{"op":"fetch","doc":"doc-1","at":"v2"}"#).unwrap();
        assert_eq!(call, DocCall::Fetch { doc: "doc-1".into(), since: None, at: Some("v2".into()) });
        let answer = DocAnswer::Event(DocEvent::CaughtUp { seq: 3, version: "ab".into() });
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<DocAnswer>(&text).unwrap(), answer);
    }
}
