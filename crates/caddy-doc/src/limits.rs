//! Bounds on what a document may hold and what one call may carry.

use serde::{Deserialize, Serialize};

use crate::error::{DocError, Result};

/// Bounds checked by every [`Document`](crate::Document) call. Past a bound
/// the call fails with [`DocError::LimitExceeded`] and the document is
/// unchanged. The server makes these configurable; the defaults suit an
/// interactive drawing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest update (or snapshot) accepted by
    /// [`Document::import`](crate::Document::import), in bytes.
    pub max_update_bytes: usize,
    /// Largest encoded document, in bytes. Loading a snapshot checks its
    /// exact size; imports and local edits are checked against a running
    /// estimate (imported bytes plus 8 bytes per local operation) that is
    /// reset to the exact size whenever a snapshot is exported or loaded.
    pub max_document_bytes: usize,
    /// Most entities a document may hold, counting deleted ones (their
    /// tombstones stay in the document).
    pub max_entities: usize,
    /// Most points one entity may have (polyline vertices, spline control
    /// points, all hatch loop points together).
    pub max_points: usize,
    /// Longest text content of a text entity, in Unicode code points.
    pub max_text_chars: usize,
    /// Longest short string (ids, names, units, creator), in bytes.
    pub max_string_bytes: usize,
    /// Most operations in one [`Document::apply_ops`](crate::Document::apply_ops) batch.
    pub max_ops_per_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_update_bytes: 8 * 1024 * 1024,
            max_document_bytes: 128 * 1024 * 1024,
            max_entities: 1_000_000,
            max_points: 100_000,
            max_text_chars: 1_000_000,
            max_string_bytes: 4096,
            max_ops_per_batch: 100_000,
        }
    }
}

impl Limits {
    /// No bound at all: for loading state that was accepted already (a
    /// committed document must load whatever bounds are configured now).
    pub fn unbounded() -> Self {
        Limits {
            max_update_bytes: usize::MAX,
            max_document_bytes: usize::MAX,
            max_entities: usize::MAX,
            max_points: usize::MAX,
            max_text_chars: usize::MAX,
            max_string_bytes: usize::MAX,
            max_ops_per_batch: usize::MAX,
        }
    }

    pub(crate) fn check(what: &'static str, actual: usize, limit: usize) -> Result<()> {
        if actual > limit { Err(DocError::LimitExceeded { what, actual, limit }) } else { Ok(()) }
    }
}
