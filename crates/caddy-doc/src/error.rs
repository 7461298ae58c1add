//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong when building, editing, syncing or reading a
/// [`Document`](crate::Document).
///
/// Every variant is *deterministic*: the same input against the same
/// document state gives the same error on every replica, so a state machine
/// may return it to the client as is. A failed call leaves the document
/// exactly as it was (see the crate docs, "Atomicity").
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum DocError {
    /// A number was NaN, infinite, or outside the allowed range.
    #[error("invalid number for {field}: {reason}")]
    InvalidNumber {
        /// The property or argument at fault.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// An argument or property value is malformed (wrong shape, too few
    /// points, bad colour syntax, empty name, ...).
    #[error("invalid value for {field}: {reason}")]
    InvalidValue {
        /// The property or argument at fault.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// An id does not follow the id rules (1..=64 characters from
    /// `[A-Za-z0-9_.:-]`; `@` is reserved for generated ids).
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The refused id.
        id: String,
        /// Why it was refused.
        reason: String,
    },
    /// An edit names an entity, layer or node that does not exist.
    #[error("unknown {what} {id:?}")]
    UnknownId {
        /// `"entity"`, `"layer"`, `"node"`, `"group"` or `"block"`.
        what: &'static str,
        /// The id that was not found.
        id: String,
    },
    /// An edit names something that has been deleted (restore it first).
    #[error("{what} {id:?} is deleted")]
    Deleted {
        /// `"entity"`, `"layer"` or `"node"`.
        what: &'static str,
        /// The deleted item.
        id: String,
    },
    /// An add uses an id that is already taken (ids are never reused, not
    /// even the id of a deleted item).
    #[error("{what} id {id:?} already exists")]
    DuplicateId {
        /// `"entity"`, `"layer"` or `"node"`.
        what: &'static str,
        /// The taken id.
        id: String,
    },
    /// A property does not exist for this kind of entity (e.g. `radius` on a
    /// line).
    #[error("entity {id:?} is a {kind}, which has no property {property:?}")]
    PropertyNotApplicable {
        /// The entity.
        id: String,
        /// Its kind.
        kind: &'static str,
        /// The refused property.
        property: &'static str,
    },
    /// An edit targets an entity of the wrong kind (a text edit on a line, a
    /// group operation on a block, ...).
    #[error("{id:?} is a {actual}, expected a {expected}")]
    WrongKind {
        /// The target.
        id: String,
        /// What the operation needs.
        expected: &'static str,
        /// What the target is.
        actual: String,
    },
    /// The entity's layer (or the layer an edit moves it to) is locked.
    #[error("layer {layer:?} is locked")]
    LayerLocked {
        /// The locked layer.
        layer: String,
    },
    /// The default layer `"0"` cannot be deleted.
    #[error("the default layer \"0\" cannot be deleted")]
    DefaultLayer,
    /// A text position or range lies outside the text.
    #[error("text range {pos}..{end} is outside the text of {id:?} ({len} characters)")]
    TextRange {
        /// The text entity.
        id: String,
        /// Start of the range, in Unicode code points.
        pos: usize,
        /// End of the range.
        end: usize,
        /// Current length of the text.
        len: usize,
    },
    /// A tree move would make a node its own ancestor.
    #[error("moving node {id:?} under {parent:?} would create a cycle")]
    CyclicMove {
        /// The node being moved.
        id: String,
        /// The requested parent.
        parent: String,
    },
    /// A bound from [`Limits`](crate::Limits) was exceeded.
    #[error("{what} exceeds the limit: {actual} > {limit}")]
    LimitExceeded {
        /// Which bound.
        what: &'static str,
        /// The offending size.
        actual: usize,
        /// The configured bound.
        limit: usize,
    },
    /// Update or snapshot bytes could not be decoded (garbage, truncated,
    /// checksum mismatch, unsupported encoding).
    #[error("malformed document bytes: {0}")]
    Malformed(String),
    /// A version given to [`Document::export_updates_since`] or
    /// [`Document::at_version`] could not be decoded.
    ///
    /// [`Document::export_updates_since`]: crate::Document::export_updates_since
    /// [`Document::at_version`]: crate::Document::at_version
    #[error("malformed version: {0}")]
    BadVersion(String),
    /// [`Document::import_complete`](crate::Document::import_complete): the
    /// bytes hold changes that depend on changes this replica has not seen.
    #[error("the update depends on changes this document has not seen; sync first")]
    MissingDependencies,
    /// The version is well formed but this replica has not seen all of it.
    #[error("version is not contained in this document's history")]
    UnknownVersion,
    /// The bytes hold a document written with a newer schema than this build
    /// understands.
    #[error("document schema {found} is newer than the supported schema {supported}")]
    UnsupportedSchema {
        /// Schema found in the document.
        found: i64,
        /// Newest schema this build reads.
        supported: i64,
    },
    /// The bytes are a valid CRDT snapshot but not a CADDY document (no
    /// schema marker).
    #[error("not a CADDY document: {0}")]
    NotADocument(String),
    /// [`Document::undo`](crate::Document::undo) or `redo` was called before
    /// [`Document::enable_undo`](crate::Document::enable_undo).
    #[error("undo is not enabled on this document")]
    UndoNotEnabled,
    /// A peer id was refused (`u64::MAX` is reserved).
    #[error("invalid peer id {0}")]
    InvalidPeer(u64),
    /// A JSON batch of edit operations could not be parsed.
    #[error("invalid edit operations JSON: {0}")]
    Json(String),
    /// Operation `index` of a batch failed; nothing of the batch was applied.
    #[error("operation {index}: {error}")]
    InOp {
        /// Position of the failing operation in the batch.
        index: usize,
        /// Why it failed.
        error: Box<DocError>,
    },
    /// An error inside the CRDT library after validation passed. This is a
    /// bug; the document was rolled back to its state before the call.
    #[error("internal CRDT error: {0}")]
    Internal(String),
}

impl DocError {
    /// True when the error is about the caller's input (bad value, unknown
    /// id, bound exceeded, bad bytes) rather than a bug in this crate.
    pub fn is_client_error(&self) -> bool {
        match self {
            DocError::Internal(_) => false,
            DocError::InOp { error, .. } => error.is_client_error(),
            _ => true,
        }
    }

    /// The error itself, or for [`DocError::InOp`] the failing operation's error.
    pub fn root_cause(&self) -> &DocError {
        match self {
            DocError::InOp { error, .. } => error.root_cause(),
            e => e,
        }
    }

    pub(crate) fn number(field: &str, reason: impl Into<String>) -> Self {
        DocError::InvalidNumber { field: field.to_owned(), reason: reason.into() }
    }

    pub(crate) fn value(field: &str, reason: impl Into<String>) -> Self {
        DocError::InvalidValue { field: field.to_owned(), reason: reason.into() }
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        DocError::Internal(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DocError> = std::result::Result<T, E>;
