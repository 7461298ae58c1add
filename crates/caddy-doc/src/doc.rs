//! [`Document`]: a CAD drawing held in a Loro document, its edits, sync and
//! undo.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use loro::{
    ContainerType, EncodedBlobMode, ExportMode, Frontiers, ID, LoroDoc, LoroList, LoroMap, LoroResult, LoroTree,
    LoroValue, TreeID, TreeParentId, UndoManager, VersionVector,
};
use serde::{Deserialize, Serialize};

use crate::error::{DocError, Result};
use crate::limits::Limits;
use crate::model::{
    Color, DimPoint, EntityKind, Geometry, LayerProperty, LineType, NodeKind, PeerId, Point, Property, Units, Vertex,
    check_name, check_point, check_string, validate_new_id, validate_ref_id,
};
use crate::ops::{ApplyReport, EditOp, NewEntity, NewLayer};
use crate::resolve::{ResolvedDoc, resolve_doc};
use crate::store::{self, *};

/// What a new document starts with. Times are passed in (the state machine
/// stamps them), never read from a clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDocument {
    /// Display name.
    pub name: String,
    /// Drawing units.
    pub units: Units,
    /// Id of the creating user.
    pub created_by: String,
    /// Creation time, milliseconds since the Unix epoch (stamped by the caller).
    pub created_at_ms: i64,
}

/// What [`Document::import`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Some changes were new to this replica and are now applied.
    pub applied: bool,
    /// Some changes wait for changes this replica has not seen yet; they are
    /// applied by the import that brings the missing ones.
    pub pending: bool,
}

/// A CAD document: metadata, layers, entities, draw order and the
/// group/block hierarchy, held in a Loro CRDT document.
///
/// See the crate docs for the merge rules, the invariants and the JSON edit
/// format. Every mutating call is atomic: it succeeds completely or returns
/// an error and leaves the document as it was.
pub struct Document {
    doc: LoroDoc,
    limits: Limits,
    undo: Option<UndoManager>,
    undo_steps: usize,
    approx_bytes: AtomicUsize,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("peer", &self.doc.peer_id())
            .field("entities", &self.entity_count())
            .field("approx_bytes", &self.approx_bytes.load(Ordering::Relaxed))
            .field("undo", &self.undo.is_some())
            .finish()
    }
}

fn malformed(e: impl fmt::Display) -> DocError {
    DocError::Malformed(e.to_string())
}

fn tree_id_value(t: TreeID) -> LoroValue {
    LoroValue::from(vec![LoroValue::I64(t.peer as i64), LoroValue::I64(i64::from(t.counter))])
}

fn tree_id_from_value(v: &LoroValue) -> Option<TreeID> {
    let LoroValue::List(l) = v else { return None };
    match l.as_slice() {
        [LoroValue::I64(p), LoroValue::I64(c)] => Some(TreeID { peer: *p as u64, counter: i32::try_from(*c).ok()? }),
        _ => None,
    }
}

/// Reads `meta.schema` of a Loro document: `Ok(None)` when absent.
pub(crate) fn check_schema(doc: &LoroDoc) -> Result<Option<i64>> {
    match get_val(&doc.get_map(META), K_SCHEMA) {
        None => Ok(None),
        Some(v) => match as_i64(&v) {
            Some(found) if found > SCHEMA_VERSION => {
                Err(DocError::UnsupportedSchema { found, supported: SCHEMA_VERSION })
            }
            Some(found) if found >= 1 => Ok(Some(found)),
            _ => Err(DocError::NotADocument("the schema marker is not a positive integer".into())),
        },
    }
}

impl Document {
    /// Creates a new document written by `peer`, with layer `"0"`.
    pub fn new(peer: PeerId, meta: NewDocument, limits: Limits) -> Result<Document> {
        check_string("name", &meta.name, &limits)?;
        check_string("created_by", &meta.created_by, &limits)?;
        let d = Document::replica(peer, limits)?;
        let write = || -> LoroResult<()> {
            let m = d.doc.get_map(META);
            m.insert(K_SCHEMA, SCHEMA_VERSION)?;
            m.insert(K_NAME, meta.name.as_str())?;
            m.insert("units", meta.units.as_str())?;
            m.insert("created_by", meta.created_by.as_str())?;
            m.insert("created_at_ms", meta.created_at_ms)?;
            d.write_layer(&NewLayer::new(DEFAULT_LAYER))
        };
        write().map_err(DocError::internal)?;
        d.commit_local();
        Ok(d)
    }

    /// An empty replica written by `peer`, to be filled by [`Document::import`]
    /// (e.g. a client that first downloads the document's history).
    pub fn replica(peer: PeerId, limits: Limits) -> Result<Document> {
        let doc = LoroDoc::new();
        doc.set_peer_id(peer).map_err(|_| DocError::InvalidPeer(peer))?;
        Ok(Document { doc, limits, undo: None, undo_steps: 0, approx_bytes: AtomicUsize::new(0) })
    }

    /// Loads a snapshot made by [`Document::export_snapshot`], to be written
    /// by `peer`. Checks the bytes, the schema and every bound of `limits`.
    pub fn from_snapshot(bytes: &[u8], peer: PeerId, limits: Limits) -> Result<Document> {
        Limits::check("snapshot size in bytes", bytes.len(), limits.max_document_bytes)?;
        let meta = LoroDoc::decode_import_blob_meta(bytes, true).map_err(malformed)?;
        if !matches!(meta.mode, EncodedBlobMode::Snapshot | EncodedBlobMode::ShallowSnapshot) {
            return Err(DocError::Malformed(format!("expected a snapshot, got {}", meta.mode)));
        }
        let doc = LoroDoc::from_snapshot(bytes).map_err(malformed)?;
        doc.set_peer_id(peer).map_err(|_| DocError::InvalidPeer(peer))?;
        if check_schema(&doc)?.is_none() {
            return Err(DocError::NotADocument("no schema marker".into()));
        }
        let d = Document { doc, limits, undo: None, undo_steps: 0, approx_bytes: AtomicUsize::new(bytes.len()) };
        d.check_all_bounds()?;
        Ok(d)
    }

    /// This replica's peer id.
    pub fn peer(&self) -> PeerId {
        self.doc.peer_id()
    }

    /// Changes the peer id this replica writes with. Resets the undo history.
    pub fn set_peer(&mut self, peer: PeerId) -> Result<()> {
        self.doc.commit();
        self.doc.set_peer_id(peer).map_err(|_| DocError::InvalidPeer(peer))?;
        if self.undo.is_some() {
            self.enable_undo(self.undo_steps);
        }
        Ok(())
    }

    /// The bounds in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the bounds (they apply to later calls).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Number of entities, deleted ones included (the quantity bounded by
    /// [`Limits::max_entities`]).
    pub fn entity_count(&self) -> usize {
        self.doc.get_map(ENTITIES).len()
    }

    /// Running estimate of the encoded size, in bytes (see
    /// [`Limits::max_document_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes.load(Ordering::Relaxed)
    }

    /// The document's name (empty if a faulty peer wrote something else).
    pub fn name(&self) -> String {
        get_val(&self.doc.get_map(META), K_NAME).as_ref().and_then(as_str).unwrap_or_default().to_owned()
    }

    /// The current content of a text entity.
    pub fn text(&self, id: &str) -> Result<String> {
        let m = self.entity_map(id).ok_or_else(|| unknown("entity", id))?;
        let kind = get_val(&m, K_KIND);
        if kind.as_ref().and_then(as_str) != Some(EntityKind::Text.as_str()) {
            return Err(DocError::WrongKind {
                id: id.to_owned(),
                expected: "text",
                actual: kind.as_ref().and_then(as_str).unwrap_or("?").to_owned(),
            });
        }
        Ok(child_text(&m, K_CONTENT).map(|t| t.to_string()).unwrap_or_default())
    }

    /// The resolved model: what every replica that has seen the same
    /// changes shows, byte for byte once serialized.
    pub fn resolve(&self) -> ResolvedDoc {
        resolve_doc(&self.doc)
    }

    // ---------------------------------------------------------------- edits

    /// Applies a batch of operations all-or-nothing: every operation is
    /// validated (ids, numbers, sizes, references, locks; later operations
    /// see the effect of earlier ones) before anything is written, and the
    /// batch becomes one change (and one undo step). On error, the
    /// [`DocError::InOp`] names the failing operation and nothing is applied.
    pub fn apply_ops(&mut self, ops: &[EditOp]) -> Result<ApplyReport> {
        Limits::check("operations in one batch", ops.len(), self.limits.max_ops_per_batch)?;
        self.apply_batch(ops, true)
    }

    fn apply_batch(&mut self, ops: &[EditOp], wrap: bool) -> Result<ApplyReport> {
        Limits::check("document size in bytes (estimate)", self.approx_bytes(), self.limits.max_document_bytes)?;
        {
            let mut planner = Planner::new(self);
            for (index, op) in ops.iter().enumerate() {
                planner.check(op).map_err(|e| if wrap { DocError::InOp { index, error: Box::new(e) } } else { e })?;
            }
        }
        self.doc.commit();
        let before = self.doc.oplog_frontiers();
        let mut report = ApplyReport::default();
        for op in ops {
            match self.apply_one(op) {
                Ok(Some(id)) => report.created.push(id),
                Ok(None) => {}
                Err(e) => {
                    self.doc.commit();
                    // Local operations do not touch the changes waiting for
                    // dependencies: carry them over.
                    let pending = self.doc.export_pending_updates().map_err(DocError::internal)?;
                    self.rollback(&before, pending.as_deref())?;
                    return Err(DocError::internal(e));
                }
            }
        }
        self.commit_local();
        Ok(report)
    }

    fn apply_single(&mut self, op: EditOp) -> Result<Option<String>> {
        Ok(self.apply_batch(std::slice::from_ref(&op), false)?.created.pop())
    }

    fn apply_unit(&mut self, op: EditOp) -> Result<()> {
        self.apply_batch(std::slice::from_ref(&op), false).map(|_| ())
    }

    /// Adds an entity; returns its id (the given one or a generated one).
    pub fn add(&mut self, entity: NewEntity) -> Result<String> {
        self.apply_single(EditOp::Add(entity))?.ok_or_else(|| DocError::Internal("no id returned".into()))
    }

    /// Adds an entity with the given geometry on `layer`, with a generated id.
    pub fn add_geometry(&mut self, layer: &str, geometry: Geometry) -> Result<String> {
        self.add(NewEntity::new(layer, geometry))
    }

    /// Adds a line.
    pub fn add_line(&mut self, layer: &str, from: Point, to: Point) -> Result<String> {
        self.add_geometry(layer, Geometry::Line { from, to })
    }

    /// Adds a polyline.
    pub fn add_polyline(&mut self, layer: &str, vertices: Vec<Vertex>, closed: bool) -> Result<String> {
        self.add_geometry(layer, Geometry::Polyline { vertices, closed })
    }

    /// Adds a circle.
    pub fn add_circle(&mut self, layer: &str, center: Point, radius: f64) -> Result<String> {
        self.add_geometry(layer, Geometry::Circle { center, radius })
    }

    /// Adds an arc, counter-clockwise from `start_angle` to `end_angle` (degrees).
    pub fn add_arc(
        &mut self,
        layer: &str,
        center: Point,
        radius: f64,
        start_angle: f64,
        end_angle: f64,
    ) -> Result<String> {
        self.add_geometry(layer, Geometry::Arc { center, radius, start_angle, end_angle })
    }

    /// Adds a text.
    pub fn add_text(&mut self, layer: &str, position: Point, height: f64, content: &str) -> Result<String> {
        self.add_geometry(layer, Geometry::Text { position, height, rotation: 0.0, content: content.to_owned() })
    }

    /// Adds an insert of `block` at `position`.
    pub fn add_insert(
        &mut self,
        layer: &str,
        block: &str,
        position: Point,
        rotation: f64,
        scale: [f64; 2],
    ) -> Result<String> {
        self.add_geometry(layer, Geometry::Insert { block: block.to_owned(), position, rotation, scale })
    }

    /// Sets one property of an entity.
    pub fn set_entity_property(&mut self, id: &str, property: Property) -> Result<()> {
        self.apply_unit(EditOp::Set { id: id.to_owned(), set: property })
    }

    /// Deletes an entity (tombstone; see "Merge rules").
    pub fn delete_entity(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::Delete { id: id.to_owned() })
    }

    /// Restores a deleted entity.
    pub fn restore_entity(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::Restore { id: id.to_owned() })
    }

    /// Inserts `text` at `pos` (Unicode code points) in a text entity.
    pub fn text_insert(&mut self, id: &str, pos: usize, text: &str) -> Result<()> {
        // Fast path for typing: the checks of the `text_insert` operation,
        // without building a batch.
        let Some(t) = self.editable_text(id)? else {
            return self.apply_unit(EditOp::TextInsert { id: id.to_owned(), pos, text: text.to_owned() });
        };
        check_text_insert(id, t.len_unicode(), pos, text, &self.limits)?;
        t.insert(pos, text).map_err(DocError::internal)?;
        self.commit_local();
        Ok(())
    }

    /// Deletes `len` code points at `pos` in a text entity.
    pub fn text_delete(&mut self, id: &str, pos: usize, len: usize) -> Result<()> {
        let Some(t) = self.editable_text(id)? else {
            return self.apply_unit(EditOp::TextDelete { id: id.to_owned(), pos, len });
        };
        check_text_delete(id, t.len_unicode(), pos, len)?;
        t.delete(pos, len).map_err(DocError::internal)?;
        self.commit_local();
        Ok(())
    }

    /// The content of a live, unlocked text entity; `None` when the content
    /// container does not exist yet (the general path creates it).
    fn editable_text(&self, id: &str) -> Result<Option<loro::LoroText>> {
        Limits::check("document size in bytes (estimate)", self.approx_bytes(), self.limits.max_document_bytes)?;
        validate_ref_id(id)?;
        let m = self.entity_map(id).ok_or_else(|| unknown("entity", id))?;
        if get_val(&m, K_DELETED).as_ref().and_then(as_bool) == Some(true) {
            return Err(deleted("entity", id));
        }
        let kind = get_val(&m, K_KIND);
        let kind = kind.as_ref().and_then(as_str);
        if kind != Some(EntityKind::Text.as_str()) {
            return Err(DocError::WrongKind {
                id: id.to_owned(),
                expected: "text",
                actual: kind.unwrap_or("entity of unknown kind").to_owned(),
            });
        }
        if let Some(layer) = get_val(&m, K_LAYER).as_ref().and_then(as_str)
            && let Some(st) = self.read_layer_state(layer)
            && !st.deleted
            && st.locked
        {
            return Err(DocError::LayerLocked { layer: layer.to_owned() });
        }
        Ok(child_text(&m, K_CONTENT))
    }

    /// Draws an entity above all others.
    pub fn bring_to_front(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::BringToFront { id: id.to_owned() })
    }

    /// Draws an entity below all others.
    pub fn send_to_back(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::SendToBack { id: id.to_owned() })
    }

    /// Changes the name and/or units.
    pub fn set_metadata(&mut self, name: Option<&str>, units: Option<Units>) -> Result<()> {
        self.apply_unit(EditOp::SetMeta { name: name.map(str::to_owned), units })
    }

    /// Adds a layer.
    pub fn add_layer(&mut self, layer: NewLayer) -> Result<()> {
        self.apply_unit(EditOp::AddLayer(layer))
    }

    /// Sets one property of a layer.
    pub fn set_layer_property(&mut self, id: &str, property: LayerProperty) -> Result<()> {
        self.apply_unit(EditOp::SetLayer { id: id.to_owned(), set: property })
    }

    /// Deletes a layer (tombstone).
    pub fn delete_layer(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::DeleteLayer { id: id.to_owned() })
    }

    /// Adds a group under `parent` (the root if `None`); returns its id.
    pub fn add_group(&mut self, name: &str, parent: Option<&str>) -> Result<String> {
        self.apply_single(EditOp::AddGroup { id: None, name: name.to_owned(), parent: parent.map(str::to_owned) })?
            .ok_or_else(|| DocError::Internal("no id returned".into()))
    }

    /// Adds a block definition under `parent` (the root if `None`); returns its id.
    pub fn add_block(&mut self, name: &str, base: Point, parent: Option<&str>) -> Result<String> {
        self.apply_single(EditOp::AddBlock {
            id: None,
            name: name.to_owned(),
            base: Some(base),
            parent: parent.map(str::to_owned),
        })?
        .ok_or_else(|| DocError::Internal("no id returned".into()))
    }

    /// Moves a node under `parent` (the root if `None`).
    pub fn move_node(&mut self, id: &str, parent: Option<&str>) -> Result<()> {
        self.apply_unit(EditOp::MoveNode { id: id.to_owned(), parent: parent.map(str::to_owned) })
    }

    /// Renames a node.
    pub fn rename_node(&mut self, id: &str, name: &str) -> Result<()> {
        self.apply_unit(EditOp::RenameNode { id: id.to_owned(), name: name.to_owned() })
    }

    /// Deletes a node (tombstone).
    pub fn delete_node(&mut self, id: &str) -> Result<()> {
        self.apply_unit(EditOp::DeleteNode { id: id.to_owned() })
    }

    /// Adds an entity to a group.
    pub fn group_add(&mut self, group: &str, entity: &str) -> Result<()> {
        self.apply_unit(EditOp::GroupAdd { group: group.to_owned(), entity: entity.to_owned() })
    }

    /// Removes an entity from a group.
    pub fn group_remove(&mut self, group: &str, entity: &str) -> Result<()> {
        self.apply_unit(EditOp::GroupRemove { group: group.to_owned(), entity: entity.to_owned() })
    }

    // ----------------------------------------------------------------- undo

    /// Starts recording this peer's own edits for [`Document::undo`] /
    /// [`Document::redo`], keeping at most `max_steps` steps. Each edit call
    /// (each [`Document::apply_ops`] batch) is one step. Remote changes are
    /// never undone; undoing one's edit keeps the concurrent edits of others.
    /// Restarting (or a peer change, or a rejected import) clears the history.
    pub fn enable_undo(&mut self, max_steps: usize) {
        self.doc.commit();
        let mut um = UndoManager::new(&self.doc);
        um.set_max_undo_steps(max_steps);
        um.set_merge_interval(0);
        self.undo = Some(um);
        self.undo_steps = max_steps;
    }

    /// Undoes this peer's last edit step. Returns whether anything changed.
    pub fn undo(&mut self) -> Result<bool> {
        self.doc.commit();
        let counter_before = self.own_counter();
        let um = self.undo.as_mut().ok_or(DocError::UndoNotEnabled)?;
        let r = um.undo().map_err(DocError::internal)?;
        self.doc.commit();
        self.account_local(counter_before);
        Ok(r)
    }

    /// Redoes the last undone step. Returns whether anything changed.
    pub fn redo(&mut self) -> Result<bool> {
        self.doc.commit();
        let counter_before = self.own_counter();
        let um = self.undo.as_mut().ok_or(DocError::UndoNotEnabled)?;
        let r = um.redo().map_err(DocError::internal)?;
        self.doc.commit();
        self.account_local(counter_before);
        Ok(r)
    }

    /// Whether [`Document::undo`] has something to undo.
    pub fn can_undo(&self) -> bool {
        self.undo.as_ref().is_some_and(UndoManager::can_undo)
    }

    /// Whether [`Document::redo`] has something to redo.
    pub fn can_redo(&self) -> bool {
        self.undo.as_ref().is_some_and(UndoManager::can_redo)
    }

    // ----------------------------------------------------------------- sync

    /// This replica's version: an encoded version vector (every change seen,
    /// per peer). Pass it to another replica's
    /// [`Document::export_updates_since`] to get what this one is missing,
    /// or to [`Document::at_version`] to see the drawing as it was.
    pub fn version(&self) -> Vec<u8> {
        self.doc.commit();
        self.doc.oplog_vv().encode()
    }

    /// The version of an empty replica (`export_updates_since` of it is the
    /// whole history). An empty slice is accepted as this version too.
    pub fn empty_version() -> Vec<u8> {
        VersionVector::new().encode()
    }

    fn decode_version(bytes: &[u8]) -> Result<VersionVector> {
        if bytes.is_empty() {
            return Ok(VersionVector::new());
        }
        VersionVector::decode(bytes).map_err(|e| DocError::BadVersion(e.to_string()))
    }

    /// Whether this replica has seen every change of `version`.
    pub fn includes_version(&self, version: &[u8]) -> Result<bool> {
        let vv = Document::decode_version(version)?;
        Ok(self.doc.oplog_vv().includes_vv(&vv))
    }

    /// Whether this replica has changes a replica at `version` lacks (what
    /// a client checks before sending an update).
    pub fn has_changes_since(&self, version: &[u8]) -> Result<bool> {
        let vv = Document::decode_version(version)?;
        self.doc.commit();
        Ok(!vv.includes_vv(&self.doc.oplog_vv()))
    }

    /// The changes this replica has and a replica at `version` lacks, as
    /// update bytes for [`Document::import`].
    pub fn export_updates_since(&self, version: &[u8]) -> Result<Vec<u8>> {
        let vv = Document::decode_version(version)?;
        self.doc.commit();
        self.doc.export(ExportMode::updates(&vv)).map_err(DocError::internal)
    }

    /// The whole document (history and state) as snapshot bytes for
    /// [`Document::from_snapshot`]. Also resets the size estimate to the
    /// exact size.
    pub fn export_snapshot(&self) -> Result<Vec<u8>> {
        self.doc.commit();
        let bytes = self.doc.export(ExportMode::Snapshot).map_err(DocError::internal)?;
        self.approx_bytes.store(bytes.len(), Ordering::Relaxed);
        Ok(bytes)
    }

    /// Merges update (or snapshot) bytes from another replica. Duplicates
    /// and out-of-order delivery are fine (changes missing a dependency wait,
    /// see [`ImportReport::pending`]).
    ///
    /// Refused with the document unchanged: bytes over
    /// [`Limits::max_update_bytes`] or that would take the document over
    /// [`Limits::max_document_bytes`] (checked before decoding); garbage,
    /// truncated or corrupted bytes ([`DocError::Malformed`]); and changes
    /// that would break a bound (entities, points per entity, text length)
    /// or carry a newer schema (checked after merging, and then rolled back).
    /// A rollback drops this replica's undo history.
    pub fn import(&mut self, bytes: &[u8]) -> Result<ImportReport> {
        self.import_with(bytes, false)
    }

    /// Like [`Document::import`], but also refuses (and rolls back) bytes
    /// holding changes whose dependencies this replica lacks
    /// ([`DocError::MissingDependencies`]): for a server that wants every
    /// stored update to apply at once, and clients to sync before sending.
    pub fn import_complete(&mut self, bytes: &[u8]) -> Result<ImportReport> {
        self.import_with(bytes, true)
    }

    /// Merges several update blobs at once (any order), which is much
    /// cheaper than one [`Document::import`] each when they hold concurrent
    /// changes. All-or-nothing, with the same checks as `import` (each blob
    /// is bounded by [`Limits::max_update_bytes`]).
    pub fn import_batch(&mut self, blobs: &[Vec<u8>]) -> Result<ImportReport> {
        self.import_blobs(blobs, false)
    }

    fn import_with(&mut self, bytes: &[u8], complete: bool) -> Result<ImportReport> {
        self.import_blobs(std::slice::from_ref(&bytes), complete)
    }

    fn import_blobs<B: AsRef<[u8]>>(&mut self, blobs: &[B], complete: bool) -> Result<ImportReport> {
        let mut total = 0usize;
        for b in blobs {
            let len = b.as_ref().len();
            Limits::check("update size in bytes", len, self.limits.max_update_bytes)?;
            total = total.saturating_add(len);
        }
        Limits::check(
            "document size in bytes (estimate)",
            self.approx_bytes().saturating_add(total),
            self.limits.max_document_bytes,
        )?;
        self.doc.commit();
        let before = self.doc.oplog_frontiers();
        let pending_before = self.doc.export_pending_updates().map_err(DocError::internal)?;
        let status = match blobs {
            [one] => self.doc.import(one.as_ref()),
            many => {
                let owned: Vec<Vec<u8>> = many.iter().map(|b| b.as_ref().to_vec()).collect();
                self.doc.import_batch(&owned)
            }
        }
        .map_err(malformed)?;
        let checked = if complete && status.pending.is_some() {
            Err(DocError::MissingDependencies)
        } else {
            self.check_imported(&status)
        };
        if let Err(e) = checked {
            self.rollback(&before, pending_before.as_deref())?;
            return Err(e);
        }
        let applied = status.success.iter().any(|(_, (s, e))| e > s);
        let pending = status.pending.is_some();
        if applied || pending {
            self.approx_bytes.fetch_add(total, Ordering::Relaxed);
        }
        Ok(ImportReport { applied, pending })
    }

    /// Snapshot bytes of the document as it was at `version`: history up to
    /// that version and the state there (load with
    /// [`Document::from_snapshot`]).
    pub fn export_snapshot_at(&self, version: &[u8]) -> Result<Vec<u8>> {
        let frontiers = self.frontiers_of(version)?;
        self.doc
            .export(ExportMode::SnapshotAt { version: std::borrow::Cow::Owned(frontiers) })
            .map_err(DocError::internal)
    }

    fn frontiers_of(&self, version: &[u8]) -> Result<Frontiers> {
        let vv = Document::decode_version(version)?;
        self.doc.commit();
        if !self.doc.oplog_vv().includes_vv(&vv) {
            return Err(DocError::UnknownVersion);
        }
        Ok(self.doc.vv_to_frontiers(&vv))
    }

    /// The resolved model as it was at `version` (from
    /// [`Document::version`], e.g. recorded in the history), read-only.
    pub fn at_version(&self, version: &[u8]) -> Result<ResolvedDoc> {
        let frontiers = self.frontiers_of(version)?;
        let past = self.doc.fork_at(&frontiers).map_err(DocError::internal)?;
        check_schema(&past)?;
        Ok(resolve_doc(&past))
    }

    // ------------------------------------------------------------ internals

    /// The counter of this peer's next operation. Loro's oplog version
    /// vector already counts the operations of the open transaction, so
    /// it is the next counter as it stands (adding the pending length would
    /// skip ahead and make later ids collide with earlier ones).
    fn own_counter(&self) -> usize {
        let peer = self.doc.peer_id();
        self.doc.oplog_vv().get(&peer).map_or(0, |c| usize::try_from(*c).unwrap_or(0))
    }

    /// Commits the pending local operations, adding them to the size
    /// estimate (8 bytes per operation).
    fn commit_local(&self) {
        let ops = self.doc.get_pending_txn_len();
        self.doc.commit();
        self.approx_bytes.fetch_add(ops * 8, Ordering::Relaxed);
    }

    /// Adds the local operations made since `counter_before` to the size
    /// estimate (8 bytes per operation).
    fn account_local(&self, counter_before: usize) {
        let added = self.own_counter().saturating_sub(counter_before);
        self.approx_bytes.fetch_add(added * 8, Ordering::Relaxed);
    }

    /// A fresh id: the id of the next Loro operation of this peer,
    /// `<counter>@<peer>`, unique because Loro operation ids are.
    fn next_id(&self) -> String {
        format!("{}@{}", self.own_counter(), self.doc.peer_id())
    }

    /// Replaces the Loro document by its own past at `frontiers` (plus the
    /// changes that were waiting for dependencies), dropping what came after.
    fn rollback(&mut self, frontiers: &Frontiers, pending: Option<&[u8]>) -> Result<()> {
        let peer = self.doc.peer_id();
        let past = self.doc.fork_at(frontiers).map_err(DocError::internal)?;
        past.set_peer_id(peer).map_err(DocError::internal)?;
        if let Some(p) = pending {
            past.import(p).map_err(DocError::internal)?;
        }
        self.doc = past;
        if self.undo.is_some() {
            self.enable_undo(self.undo_steps);
        }
        Ok(())
    }

    fn check_imported(&self, status: &loro::ImportStatus) -> Result<()> {
        check_schema(&self.doc)?;
        Limits::check("entities", self.entity_count(), self.limits.max_entities)?;
        for (peer, (start, end)) in status.success.iter() {
            let Ok(len) = usize::try_from(end - start) else { continue };
            if len == 0 {
                continue;
            }
            for cid in self.doc.get_changed_containers_in(ID::new(*peer, *start), len) {
                self.check_container(&cid)?;
            }
        }
        Ok(())
    }

    fn check_container(&self, cid: &loro::ContainerID) -> Result<()> {
        match cid.container_type() {
            ContainerType::Text => Limits::check(
                "text length in characters",
                self.doc.get_text(cid).len_unicode(),
                self.limits.max_text_chars,
            ),
            // The top-level maps hold no points; reading one would cost a
            // value per entity on every import. (Per-item maps are
            // mergeable maps, which Loro also names as roots.)
            ContainerType::Map if is_top_level(cid) => Ok(()),
            ContainerType::Map => Limits::check(
                "points in one entity",
                store::point_count(&self.doc.get_map(cid).get_value()),
                self.limits.max_points,
            ),
            _ => Ok(()),
        }
    }

    /// Checks every bound over the whole document (after loading a snapshot).
    fn check_all_bounds(&self) -> Result<()> {
        let entities = self.doc.get_map(ENTITIES);
        Limits::check("entities", entities.len(), self.limits.max_entities)?;
        for key in entities.keys() {
            if let Some(m) = child_map(&entities, &key) {
                Limits::check("points in one entity", store::point_count(&m.get_value()), self.limits.max_points)?;
                if let Some(t) = child_text(&m, K_CONTENT) {
                    Limits::check("text length in characters", t.len_unicode(), self.limits.max_text_chars)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn entity_map(&self, id: &str) -> Option<LoroMap> {
        child_map(&self.doc.get_map(ENTITIES), id)
    }

    fn read_entity_state(&self, id: &str) -> Option<EntState> {
        let m = self.entity_map(id)?;
        Some(EntState {
            kind: get_val(&m, K_KIND).as_ref().and_then(as_str).and_then(EntityKind::parse),
            layer: get_val(&m, K_LAYER).as_ref().and_then(as_str).map(str::to_owned),
            deleted: get_val(&m, K_DELETED).as_ref().and_then(as_bool).unwrap_or(false),
        })
    }

    fn read_layer_state(&self, id: &str) -> Option<LayerState> {
        let m = child_map(&self.doc.get_map(LAYERS), id)?;
        Some(LayerState {
            deleted: get_val(&m, K_DELETED).as_ref().and_then(as_bool).unwrap_or(false),
            locked: get_val(&m, "locked").as_ref().and_then(as_bool).unwrap_or(false),
        })
    }

    fn tree(&self) -> LoroTree {
        self.doc.get_tree(TREE)
    }

    fn node_tid(&self, id: &str) -> Option<TreeID> {
        let tid = tree_id_from_value(&get_val(&self.doc.get_map(NODES), id)?)?;
        let tree = self.tree();
        // Undoing a node's creation deletes it from the Loro tree.
        (tree.contains(tid) && tree.is_node_deleted(&tid) == Ok(false)).then_some(tid)
    }

    fn node_meta(&self, id: &str) -> Option<LoroMap> {
        self.tree().get_meta(self.node_tid(id)?).ok()
    }

    fn read_node_state(&self, id: &str) -> Option<NodeState> {
        let tree = self.tree();
        let tid = self.node_tid(id)?;
        let meta = tree.get_meta(tid).ok()?;
        let parent = match tree.parent(tid) {
            Some(TreeParentId::Node(p)) => {
                tree.get_meta(p).ok().and_then(|m| get_val(&m, K_ID)).as_ref().and_then(as_str).map(str::to_owned)
            }
            _ => None,
        };
        Some(NodeState {
            kind: get_val(&meta, K_KIND).as_ref().and_then(as_str).and_then(NodeKind::parse),
            deleted: get_val(&meta, K_DELETED).as_ref().and_then(as_bool).unwrap_or(false),
            parent,
        })
    }

    fn text_len(&self, id: &str) -> usize {
        self.entity_map(id).and_then(|m| child_text(&m, K_CONTENT)).map_or(0, |t| t.len_unicode())
    }

    fn write_layer(&self, l: &NewLayer) -> LoroResult<()> {
        let m = self.doc.get_map(LAYERS).ensure_mergeable_map(&l.id)?;
        m.insert(K_NAME, l.name.clone().unwrap_or_else(|| l.id.clone()))?;
        m.insert("color", l.color.clone().unwrap_or_else(Color::black).as_str())?;
        m.insert("line_type", l.line_type.unwrap_or(LineType::Continuous).as_str())?;
        m.insert("line_weight", l.line_weight.unwrap_or(0.25))?;
        m.insert("visible", l.visible.unwrap_or(true))?;
        m.insert("locked", l.locked.unwrap_or(false))?;
        m.insert(K_DELETED, false)
    }

    fn write_property(&self, m: &LoroMap, p: &Property) -> LoroResult<()> {
        if let Property::Content(s) = p {
            let t = match child_text(m, K_CONTENT) {
                Some(t) => t,
                None => m.ensure_mergeable_text(K_CONTENT)?,
            };
            let len = t.len_unicode();
            if len > 0 {
                t.delete(0, len)?;
            }
            return t.insert(0, s);
        }
        m.insert(p.name(), store::property_value(p))
    }

    /// The draw order: a plain Loro list, not a movable list. Importing
    /// concurrent changes into a movable list rebuilds it (cost grows with
    /// the drawing), which made every merged update O(entities); a move is
    /// a delete and an insert here, and resolution keeps one copy per id.
    fn order(&self) -> LoroList {
        self.doc.get_list(ORDER)
    }

    /// Positions of every copy of `id` in the draw order, last first.
    fn order_positions(&self, id: &str) -> Vec<usize> {
        let mut at: Vec<usize> =
            self.order().to_vec().iter().enumerate().filter(|(_, v)| as_str(v) == Some(id)).map(|(i, _)| i).collect();
        at.reverse();
        at
    }

    fn missing(what: &str) -> loro::LoroError {
        loro::LoroError::ArgErr(format!("{what} vanished after validation").into())
    }

    /// Writes one validated operation. Errors here are bugs (validation
    /// should have refused the operation); the caller rolls back.
    fn apply_one(&self, op: &EditOp) -> LoroResult<Option<String>> {
        let entity = |id: &str| self.entity_map(id).ok_or_else(|| Self::missing("entity"));
        let node = |id: &str| self.node_meta(id).ok_or_else(|| Self::missing("node"));
        match op {
            EditOp::Add(e) => {
                let id = e.id.clone().unwrap_or_else(|| self.next_id());
                let m = self.doc.get_map(ENTITIES).ensure_mergeable_map(&id)?;
                m.insert(K_KIND, e.geometry.kind().as_str())?;
                m.insert(K_LAYER, e.layer.as_str())?;
                m.insert(K_DELETED, false)?;
                if let Some(c) = &e.style.color {
                    m.insert("color", c.as_str())?;
                }
                if let Some(t) = e.style.line_type {
                    m.insert("line_type", t.as_str())?;
                }
                if let Some(w) = e.style.line_weight {
                    m.insert("line_weight", w)?;
                }
                if let Some(o) = &e.owner {
                    m.insert("owner", o.as_str())?;
                }
                for p in e.geometry.clone().into_properties() {
                    self.write_property(&m, &p)?;
                }
                self.order().push(id.as_str())?;
                Ok(Some(id))
            }
            EditOp::Set { id, set } => {
                self.write_property(&entity(id)?, set)?;
                Ok(None)
            }
            EditOp::Delete { id } => {
                entity(id)?.insert(K_DELETED, true)?;
                Ok(None)
            }
            EditOp::Restore { id } => {
                entity(id)?.insert(K_DELETED, false)?;
                Ok(None)
            }
            EditOp::TextInsert { id, pos, text } => {
                let m = entity(id)?;
                let t = match child_text(&m, K_CONTENT) {
                    Some(t) => t,
                    None => m.ensure_mergeable_text(K_CONTENT)?,
                };
                t.insert(*pos, text)?;
                Ok(None)
            }
            EditOp::TextDelete { id, pos, len } => {
                if let Some(t) = child_text(&entity(id)?, K_CONTENT) {
                    t.delete(*pos, *len)?;
                }
                Ok(None)
            }
            EditOp::BringToFront { id } | EditOp::SendToBack { id } => {
                let list = self.order();
                let front = matches!(op, EditOp::BringToFront { .. });
                // Concurrent moves of one entity leave a copy per move;
                // every move removes all of them, so copies do not pile up.
                for i in self.order_positions(id) {
                    list.delete(i, 1)?;
                }
                if front {
                    list.push(id.as_str())?;
                } else {
                    list.insert(0, id.as_str())?;
                }
                Ok(None)
            }
            EditOp::SetMeta { name, units } => {
                let m = self.doc.get_map(META);
                if let Some(n) = name {
                    m.insert(K_NAME, n.as_str())?;
                }
                if let Some(u) = units {
                    m.insert("units", u.as_str())?;
                }
                Ok(None)
            }
            EditOp::AddLayer(l) => {
                self.write_layer(l)?;
                Ok(None)
            }
            EditOp::SetLayer { id, set } => {
                let m = child_map(&self.doc.get_map(LAYERS), id).ok_or_else(|| Self::missing("layer"))?;
                let v: LoroValue = match set {
                    LayerProperty::Name(n) => n.as_str().into(),
                    LayerProperty::Color(c) => c.as_str().into(),
                    LayerProperty::LineType(t) => t.as_str().into(),
                    LayerProperty::LineWeight(w) => (*w).into(),
                    LayerProperty::Visible(b) | LayerProperty::Locked(b) => (*b).into(),
                };
                m.insert(set.name(), v)?;
                Ok(None)
            }
            EditOp::DeleteLayer { id } | EditOp::RestoreLayer { id } => {
                let m = child_map(&self.doc.get_map(LAYERS), id).ok_or_else(|| Self::missing("layer"))?;
                m.insert(K_DELETED, matches!(op, EditOp::DeleteLayer { .. }))?;
                Ok(None)
            }
            EditOp::AddGroup { id, name, parent } | EditOp::AddBlock { id, name, parent, .. } => {
                let id = id.clone().unwrap_or_else(|| self.next_id());
                let parent_tid = match parent {
                    Some(p) => Some(self.node_tid(p).ok_or_else(|| Self::missing("node"))?),
                    None => None,
                };
                let tree = self.tree();
                let tid = tree.create(parent_tid)?;
                let meta = tree.get_meta(tid)?;
                meta.insert(K_ID, id.as_str())?;
                meta.insert(K_NAME, name.as_str())?;
                meta.insert(K_DELETED, false)?;
                if let EditOp::AddBlock { base, .. } = op {
                    meta.insert(K_KIND, NodeKind::Block.as_str())?;
                    meta.insert(K_BASE, point_value(&base.unwrap_or([0.0, 0.0])))?;
                } else {
                    meta.insert(K_KIND, NodeKind::Group.as_str())?;
                }
                self.doc.get_map(NODES).insert(&id, tree_id_value(tid))?;
                Ok(Some(id))
            }
            EditOp::MoveNode { id, parent } => {
                let tid = self.node_tid(id).ok_or_else(|| Self::missing("node"))?;
                let parent_tid = match parent {
                    Some(p) => Some(self.node_tid(p).ok_or_else(|| Self::missing("node"))?),
                    None => None,
                };
                self.tree().mov(tid, parent_tid)?;
                Ok(None)
            }
            EditOp::RenameNode { id, name } => {
                node(id)?.insert(K_NAME, name.as_str())?;
                Ok(None)
            }
            EditOp::SetBlockBase { id, base } => {
                node(id)?.insert(K_BASE, point_value(base))?;
                Ok(None)
            }
            EditOp::DeleteNode { id } | EditOp::RestoreNode { id } => {
                node(id)?.insert(K_DELETED, matches!(op, EditOp::DeleteNode { .. }))?;
                Ok(None)
            }
            EditOp::GroupAdd { group, entity } => {
                node(group)?.ensure_mergeable_map(K_MEMBERS)?.insert(entity, true)?;
                Ok(None)
            }
            EditOp::GroupRemove { group, entity } => {
                if let Some(m) = child_map(&node(group)?, K_MEMBERS) {
                    m.delete(entity)?;
                }
                Ok(None)
            }
        }
    }
}

fn unknown(what: &'static str, id: &str) -> DocError {
    DocError::UnknownId { what, id: id.to_owned() }
}

fn deleted(what: &'static str, id: &str) -> DocError {
    DocError::Deleted { what, id: id.to_owned() }
}

/// Checks an insertion into a text of `len` code points; returns the new length.
fn check_text_insert(id: &str, len: usize, pos: usize, text: &str, limits: &Limits) -> Result<usize> {
    if pos > len {
        return Err(DocError::TextRange { id: id.to_owned(), pos, end: pos, len });
    }
    let new_len = len + text.chars().count();
    Limits::check("text length in characters", new_len, limits.max_text_chars)?;
    Ok(new_len)
}

/// Checks a deletion from a text of `len` code points.
fn check_text_delete(id: &str, len: usize, pos: usize, n: usize) -> Result<()> {
    let end = pos.saturating_add(n);
    if end > len {
        return Err(DocError::TextRange { id: id.to_owned(), pos, end, len });
    }
    Ok(())
}

#[derive(Clone)]
struct EntState {
    kind: Option<EntityKind>,
    layer: Option<String>,
    deleted: bool,
}

#[derive(Clone)]
struct LayerState {
    deleted: bool,
    locked: bool,
}

#[derive(Clone)]
struct NodeState {
    kind: Option<NodeKind>,
    deleted: bool,
    parent: Option<String>,
}

/// Validates a batch against the document plus the effects of the batch's
/// earlier operations, without writing anything.
struct Planner<'a> {
    d: &'a Document,
    entities: HashMap<String, EntState>,
    layers: HashMap<String, LayerState>,
    nodes: HashMap<String, NodeState>,
    texts: HashMap<String, usize>,
    entity_count: usize,
}

impl<'a> Planner<'a> {
    fn new(d: &'a Document) -> Planner<'a> {
        Planner {
            d,
            entities: HashMap::new(),
            layers: HashMap::new(),
            nodes: HashMap::new(),
            texts: HashMap::new(),
            entity_count: d.entity_count(),
        }
    }

    fn limits(&self) -> &Limits {
        &self.d.limits
    }

    fn entity(&mut self, id: &str) -> Result<EntState> {
        validate_ref_id(id)?;
        if let Some(e) = self.entities.get(id) {
            return Ok(e.clone());
        }
        let e = self.d.read_entity_state(id).ok_or_else(|| unknown("entity", id))?;
        self.entities.insert(id.to_owned(), e.clone());
        Ok(e)
    }

    fn live_entity(&mut self, id: &str) -> Result<EntState> {
        let e = self.entity(id)?;
        if e.deleted {
            return Err(deleted("entity", id));
        }
        Ok(e)
    }

    /// A live entity whose layer is not locked.
    fn editable_entity(&mut self, id: &str) -> Result<EntState> {
        let e = self.live_entity(id)?;
        self.check_unlocked(e.layer.as_deref())?;
        Ok(e)
    }

    fn layer(&mut self, id: &str) -> Result<LayerState> {
        validate_ref_id(id)?;
        if let Some(l) = self.layers.get(id) {
            return Ok(l.clone());
        }
        let l = self.d.read_layer_state(id).ok_or_else(|| unknown("layer", id))?;
        self.layers.insert(id.to_owned(), l.clone());
        Ok(l)
    }

    fn check_unlocked(&mut self, layer: Option<&str>) -> Result<()> {
        if let Some(l) = layer
            && let Ok(st) = self.layer(l)
            && !st.deleted
            && st.locked
        {
            return Err(DocError::LayerLocked { layer: l.to_owned() });
        }
        Ok(())
    }

    /// A live, unlocked layer that entities may be put on.
    fn usable_layer(&mut self, id: &str) -> Result<()> {
        let l = self.layer(id)?;
        if l.deleted {
            return Err(deleted("layer", id));
        }
        if l.locked {
            return Err(DocError::LayerLocked { layer: id.to_owned() });
        }
        Ok(())
    }

    fn node(&mut self, id: &str) -> Result<NodeState> {
        validate_ref_id(id)?;
        if let Some(n) = self.nodes.get(id) {
            return Ok(n.clone());
        }
        let n = self.d.read_node_state(id).ok_or_else(|| unknown("node", id))?;
        self.nodes.insert(id.to_owned(), n.clone());
        Ok(n)
    }

    fn live_node(&mut self, id: &str, kind: Option<NodeKind>) -> Result<NodeState> {
        let n = self.node(id)?;
        if n.deleted {
            return Err(deleted("node", id));
        }
        if let Some(k) = kind
            && n.kind != Some(k)
        {
            return Err(DocError::WrongKind {
                id: id.to_owned(),
                expected: k.as_str(),
                actual: n.kind.map_or("node of unknown kind", NodeKind::as_str).to_owned(),
            });
        }
        Ok(n)
    }

    fn text_len(&mut self, id: &str) -> usize {
        if let Some(n) = self.texts.get(id) {
            return *n;
        }
        let n = self.d.text_len(id);
        self.texts.insert(id.to_owned(), n);
        n
    }

    fn text_entity(&mut self, id: &str) -> Result<usize> {
        let e = self.editable_entity(id)?;
        if e.kind != Some(EntityKind::Text) {
            return Err(DocError::WrongKind {
                id: id.to_owned(),
                expected: "text",
                actual: e.kind.map_or("entity of unknown kind", EntityKind::as_str).to_owned(),
            });
        }
        Ok(self.text_len(id))
    }

    fn new_entity_id(&mut self, id: &str) -> Result<()> {
        validate_new_id(id)?;
        if self.entities.contains_key(id) || self.d.entity_map(id).is_some() {
            return Err(DocError::DuplicateId { what: "entity", id: id.to_owned() });
        }
        Ok(())
    }

    fn new_node_id(&mut self, id: &str) -> Result<()> {
        validate_new_id(id)?;
        if self.nodes.contains_key(id) || get_val(&self.d.doc.get_map(NODES), id).is_some() {
            return Err(DocError::DuplicateId { what: "node", id: id.to_owned() });
        }
        Ok(())
    }

    /// Checks the entities a property refers to.
    fn check_references(&mut self, p: &Property) -> Result<()> {
        match p {
            Property::Owner(Some(b)) | Property::Block(b) => {
                self.live_node(b, Some(NodeKind::Block))?;
            }
            Property::Target(t) => {
                let e = self.live_entity(t)?;
                if !matches!(e.kind, Some(EntityKind::Circle | EntityKind::Arc)) {
                    return Err(DocError::WrongKind {
                        id: t.clone(),
                        expected: "circle or arc",
                        actual: e.kind.map_or("?", EntityKind::as_str).to_owned(),
                    });
                }
            }
            Property::P1(DimPoint::Entity { entity, .. })
            | Property::P2(DimPoint::Entity { entity, .. })
            | Property::Vertex(DimPoint::Entity { entity, .. }) => {
                self.live_entity(entity)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn check(&mut self, op: &EditOp) -> Result<()> {
        let limits = self.limits().clone();
        match op {
            EditOp::Add(e) => {
                if let Some(id) = &e.id {
                    self.new_entity_id(id)?;
                }
                self.usable_layer(&e.layer)?;
                if let Some(w) = e.style.line_weight {
                    Property::LineWeight(Some(w)).validate(&limits)?;
                }
                if let Some(o) = &e.owner {
                    self.live_node(o, Some(NodeKind::Block))?;
                }
                e.geometry.validate(&limits)?;
                for p in e.geometry.clone().into_properties() {
                    self.check_references(&p)?;
                }
                self.entity_count += 1;
                Limits::check("entities", self.entity_count, limits.max_entities)?;
                if let Some(id) = &e.id {
                    self.entities.insert(
                        id.clone(),
                        EntState { kind: Some(e.geometry.kind()), layer: Some(e.layer.clone()), deleted: false },
                    );
                    if let Geometry::Text { content, .. } = &e.geometry {
                        self.texts.insert(id.clone(), content.chars().count());
                    }
                }
            }
            EditOp::Set { id, set } => {
                let e = self.editable_entity(id)?;
                let Some(kind) = e.kind else {
                    return Err(DocError::WrongKind {
                        id: id.clone(),
                        expected: "entity of a known kind",
                        actual: "entity of unknown kind".into(),
                    });
                };
                if !set.applies_to(kind) {
                    return Err(DocError::PropertyNotApplicable {
                        id: id.clone(),
                        kind: kind.as_str(),
                        property: set.name(),
                    });
                }
                set.validate(&limits)?;
                self.check_references(set)?;
                match set {
                    Property::Layer(l) => {
                        self.usable_layer(l)?;
                        if let Some(st) = self.entities.get_mut(id) {
                            st.layer = Some(l.clone());
                        }
                    }
                    Property::Content(s) => {
                        self.texts.insert(id.clone(), s.chars().count());
                    }
                    _ => {}
                }
            }
            EditOp::Delete { id } | EditOp::Restore { id } => {
                let e = self.entity(id)?;
                self.check_unlocked(e.layer.as_deref())?;
                if let Some(st) = self.entities.get_mut(id) {
                    st.deleted = matches!(op, EditOp::Delete { .. });
                }
            }
            EditOp::TextInsert { id, pos, text } => {
                let len = self.text_entity(id)?;
                let new_len = check_text_insert(id, len, *pos, text, &limits)?;
                self.texts.insert(id.clone(), new_len);
            }
            EditOp::TextDelete { id, pos, len: n } => {
                let len = self.text_entity(id)?;
                check_text_delete(id, len, *pos, *n)?;
                self.texts.insert(id.clone(), len - n);
            }
            EditOp::BringToFront { id } | EditOp::SendToBack { id } => {
                self.editable_entity(id)?;
            }
            EditOp::SetMeta { name, .. } => {
                if let Some(n) = name {
                    check_string("name", n, &limits)?;
                }
            }
            EditOp::AddLayer(l) => {
                validate_new_id(&l.id)?;
                if self.layers.contains_key(&l.id) || self.d.read_layer_state(&l.id).is_some() {
                    return Err(DocError::DuplicateId { what: "layer", id: l.id.clone() });
                }
                if let Some(n) = &l.name {
                    check_name("name", n, &limits)?;
                }
                if let Some(w) = l.line_weight {
                    Property::LineWeight(Some(w)).validate(&limits)?;
                }
                self.layers.insert(l.id.clone(), LayerState { deleted: false, locked: l.locked.unwrap_or(false) });
            }
            EditOp::SetLayer { id, set } => {
                let l = self.layer(id)?;
                if l.deleted {
                    return Err(deleted("layer", id));
                }
                set.validate(&limits)?;
                if let (LayerProperty::Locked(b), Some(st)) = (set, self.layers.get_mut(id)) {
                    st.locked = *b;
                }
            }
            EditOp::DeleteLayer { id } | EditOp::RestoreLayer { id } => {
                if id == DEFAULT_LAYER && matches!(op, EditOp::DeleteLayer { .. }) {
                    return Err(DocError::DefaultLayer);
                }
                self.layer(id)?;
                if let Some(st) = self.layers.get_mut(id) {
                    st.deleted = matches!(op, EditOp::DeleteLayer { .. });
                }
            }
            EditOp::AddGroup { id, name, parent } | EditOp::AddBlock { id, name, parent, .. } => {
                check_name("name", name, &limits)?;
                if let EditOp::AddBlock { base: Some(b), .. } = op {
                    check_point("base", b)?;
                }
                if let Some(p) = parent {
                    self.live_node(p, None)?;
                }
                if let Some(id) = id {
                    self.new_node_id(id)?;
                    let kind = if matches!(op, EditOp::AddBlock { .. }) { NodeKind::Block } else { NodeKind::Group };
                    self.nodes
                        .insert(id.clone(), NodeState { kind: Some(kind), deleted: false, parent: parent.clone() });
                }
            }
            EditOp::MoveNode { id, parent } => {
                self.live_node(id, None)?;
                if let Some(p) = parent {
                    self.live_node(p, None)?;
                    let cyclic = || DocError::CyclicMove { id: id.clone(), parent: p.clone() };
                    let mut cur = p.clone();
                    let mut steps = 0usize;
                    loop {
                        if &cur == id {
                            return Err(cyclic());
                        }
                        steps += 1;
                        match self.node(&cur)?.parent {
                            Some(up) if steps < 1_000_000 => cur = up,
                            Some(_) => return Err(cyclic()),
                            None => break,
                        }
                    }
                }
                if let Some(st) = self.nodes.get_mut(id) {
                    st.parent = parent.clone();
                }
            }
            EditOp::RenameNode { id, name } => {
                check_name("name", name, &limits)?;
                self.live_node(id, None)?;
            }
            EditOp::SetBlockBase { id, base } => {
                check_point("base", base)?;
                self.live_node(id, Some(NodeKind::Block))?;
            }
            EditOp::DeleteNode { id } | EditOp::RestoreNode { id } => {
                self.node(id)?;
                if let Some(st) = self.nodes.get_mut(id) {
                    st.deleted = matches!(op, EditOp::DeleteNode { .. });
                }
            }
            EditOp::GroupAdd { group, entity } => {
                self.live_node(group, Some(NodeKind::Group))?;
                self.live_entity(entity)?;
            }
            EditOp::GroupRemove { group, entity } => {
                self.live_node(group, Some(NodeKind::Group))?;
                validate_ref_id(entity)?;
            }
        }
        Ok(())
    }
}

/// Whether `cid` is one of the document's top-level maps.
fn is_top_level(cid: &loro::ContainerID) -> bool {
    matches!(cid, loro::ContainerID::Root { name, .. } if [META, LAYERS, ENTITIES, NODES].contains(&name.as_str()))
}
