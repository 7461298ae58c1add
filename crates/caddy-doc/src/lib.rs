//! The CAD document model of CADDY, on the [Loro](https://loro.dev) CRDT.
//!
//! This crate owns what a drawing *is*: its schema, how edits are validated,
//! how concurrent edits merge, how replicas sync, and how a drawing is read
//! back ([`ResolvedDoc`]) and drawn ([`ResolvedDoc::to_svg`]). It knows
//! nothing of Raft, the network or storage: the state machine imports the
//! update bytes clients send, the SDK keeps a local [`Document`] and edits
//! it through the typed API.
//!
//! **Architecture invariant:** nothing here reads a clock, a random source or
//! the network. Times are passed in; ids are generated from the writer's
//! peer id and Loro's operation counter. The same calls on the same bytes
//! give the same result on every replica. No caller touches a raw Loro
//! container.
//!
//! # Model
//!
//! A [`Document`] holds
//! - **metadata**: name, [`Units`], created by, created at (ms, stamped by
//!   the caller), and the **schema version** ([`SCHEMA_VERSION`]);
//! - **layers** (id, name, colour, line type, line weight, visible, locked);
//!   layer `"0"` always exists;
//! - **entities** (see [`Geometry`]): line, polyline (vertices with bulges,
//!   closed flag), circle, arc, ellipse, spline, text (its content is a
//!   collaborative text), linear / aligned / radial / angular dimensions
//!   (anchored on points or on other entities), hatch (boundary loops, solid
//!   or pattern fill), block insert (block, position, rotation, scale);
//! - a **hierarchy** of groups and block definitions (a Loro movable tree);
//!   a group has a member set of entities, a block definition owns the
//!   entities whose `owner` names it;
//! - a **draw order**.
//!
//! All angles are in degrees, counter-clockwise; line weights in mm.
//!
//! ## Storage layout (schema 1)
//!
//! | root container | type | content |
//! |---|---|---|
//! | `meta` | map | `schema`, `name`, `units`, `created_by`, `created_at_ms` |
//! | `layers` | map | layer id → map of the layer's properties + `deleted` |
//! | `entities` | map | entity id → map: `kind`, `layer`, `deleted`, style overrides, `owner`, one key per geometry property; a text's `content` is a child text |
//! | `order` | list | entity ids, bottom first (a moved id may appear more than once; the first copy counts) |
//! | `tree` | tree | one node per group/block; node metadata: `id`, `kind`, `name`, `base`, `deleted`, `members` (map entity id → true) |
//! | `nodes` | map | node id → tree node id |
//!
//! Per-item maps are Loro *mergeable* child maps: two peers that create the
//! same id concurrently write into the same map instead of one replacing the
//! other.
//!
//! ## Ids
//!
//! Callers may choose ids (1..=64 bytes of `[A-Za-z0-9_.:-]`). Otherwise an
//! id is generated as `<counter>@<peer>`: the Loro operation id of the first
//! operation that creates the item, unique as long as peer ids are (Loro's
//! own requirement: one peer id per writer session). `@` is reserved for
//! generated ids, so chosen and generated ids never collide. Ids are never
//! reused, not even after a delete.
//!
//! # Merge rules
//!
//! - **Properties merge per property.** Each entity (layer, node) is one
//!   Loro map with one key per property: concurrent edits of different
//!   properties both survive; concurrent edits of the same property resolve
//!   last-writer-wins by Loro's rule (greater Lamport timestamp wins; on a
//!   tie, the greater peer id). A point, a vertex list, a fill is one
//!   property.
//! - **Text content merges per character** (Loro's Fugue-based text).
//!   Setting the `content` property replaces the text by a deletion and an
//!   insertion, which merge like any character edits.
//! - **Delete wins over concurrent edits.** Deleting writes `deleted = true`
//!   into the item's map (a tombstone); property edits never write that key,
//!   so an edit concurrent with the delete is kept inside the tombstone but
//!   does not bring the entity back. Only an explicit restore (or undoing the
//!   delete) writes `deleted = false`; a restore concurrent with a delete is
//!   last-writer-wins on that key. Layers and nodes follow the same rule.
//! - **Deleting a node** ungroups it: its live children show under its
//!   nearest live ancestor.
//! - **Tree moves never form a cycle**: Loro's movable tree drops a
//!   concurrent move that would create one, so "A moves X under Y" while "B
//!   moves Y under X" leaves both in the tree, acyclic, on every replica.
//! - **Draw order** is a Loro list of entity ids; bringing to front or
//!   sending to back deletes every copy of the id and inserts it at the end
//!   or the start. Moves of different entities both apply; concurrent moves
//!   of one entity leave one copy per move, and resolution takes the first
//!   (lowest) copy of each live id, then live entities missing from the
//!   list, sorted by id: of a concurrent "to back" and "to front" the back
//!   wins, and the next move of that entity removes the extra copy. (A Loro
//!   movable list would have given last-writer-wins moves, but merging
//!   concurrent changes into one costs time proportional to the list on
//!   every import, which a server merging every update cannot afford.)
//! - **References are kept, never dropped.** A dimension whose anchor entity
//!   was deleted, an insert of a deleted block, a group member that is gone,
//!   an entity on a deleted layer: the referencing item stays and a
//!   [`Problem::BrokenReference`] says what is broken (like a CAD tool
//!   flags a failed feature). Undo or restore repairs it.
//!
//! # Invariants
//!
//! - The resolved model is a function of the set of changes seen: replicas
//!   that have imported the same changes, in any order, with duplicates,
//!   serialize [`Document::resolve`] to identical bytes.
//! - Every mutating call is **atomic**: it applies completely or returns a
//!   [`DocError`] and leaves the document unchanged. Batches are validated
//!   before anything is written; imports are decoded before they merge, and
//!   merged changes that break a bound are rolled back.
//! - No input panics: update bytes from the network, JSON from users and
//!   values written by faulty peers are all checked; the resolver reports
//!   what it cannot use as [`Problem::Malformed`].
//! - Bounds ([`Limits`]) hold after every call.
//!
//! # Sync
//!
//! [`Document::version`] is an encoded version vector;
//! [`Document::export_updates_since`] gives what a replica at a version is
//! missing; [`Document::import`] (or [`Document::import_batch`] for many
//! blobs at once) merges update or snapshot bytes, in any order, duplicates
//! included; [`Document::import_complete`] also refuses changes whose
//! dependencies are missing (for a server that stores only complete
//! histories); [`Document::export_snapshot`] / [`Document::from_snapshot`]
//! save and load the whole document; [`Document::at_version`] and
//! [`Document::export_snapshot_at`] give the drawing as it was at a past
//! version. Loro's own format is used on the wire and at rest, unwrapped:
//! the schema version lives inside the document.
//!
//! Imports are checked in two steps, both leaving the document unchanged on
//! failure: byte bounds and decoding (header, checksum, every change) before
//! anything merges; then the merged result against the schema version and
//! the bounds on entities, points per entity and text length, rolled back
//! (the document is rebuilt from its own history at the previous version)
//! if it breaks one.
//!
//! # Undo
//!
//! [`Document::enable_undo`] starts a per-peer undo history over Loro's
//! `UndoManager`: [`Document::undo`] reverts this peer's last edit step (one
//! typed call or one [`Document::apply_ops`] batch) and keeps everyone
//! else's concurrent edits. Undoing a delete writes `deleted = false`;
//! undoing an add removes the item's map key (or tree node), which hides it
//! like a delete. Undo is not checked against layer locks.
//!
//! # JSON edit operations
//!
//! [`EditOp`] is what `caddyctl doc apply ID FILE.json` reads: a JSON array
//! of operations (or `{"ops": [...]}`), applied all-or-nothing by
//! [`Document::apply_ops`]. Each operation is an object with an `"op"` tag;
//! unknown fields are refused. Points are `[x, y]`.
//!
//! ```json
//! [
//!   {"op": "add_layer", "id": "walls", "color": "#ff0000", "line_weight": 0.5},
//!   {"op": "add", "kind": "line", "id": "l1", "layer": "walls", "from": [0, 0], "to": [100, 0]},
//!   {"op": "add", "kind": "circle", "id": "c1", "center": [50, 50], "radius": 10, "color": "#0000ff"},
//!   {"op": "add", "kind": "aligned_dim", "p1": {"entity": "l1", "snap": "start"},
//!    "p2": {"entity": "l1", "snap": "end"}, "offset": 10},
//!   {"op": "set", "id": "c1", "set": {"radius": 12.5}},
//!   {"op": "text_insert", "id": "t1", "pos": 0, "text": "Hello"},
//!   {"op": "delete", "id": "c1"}
//! ]
//! ```
//!
//! | op | fields |
//! |---|---|
//! | `add` | `kind` plus that kind's fields (below); optional `id`, `layer` (default `"0"`), `color` (`"#rrggbb"`), `line_type`, `line_weight` (mm), `owner` (block id) |
//! | `set` | `id`, `set`: one property, e.g. `{"radius": 5}`, `{"color": null}` (by layer), `{"layer": "walls"}` ([`Property`]) |
//! | `delete`, `restore` | `id` |
//! | `text_insert` | `id`, `pos` (Unicode code points), `text` |
//! | `text_delete` | `id`, `pos`, `len` |
//! | `bring_to_front`, `send_to_back` | `id` |
//! | `set_meta` | optional `name`, `units` (`mm`, `cm`, `m`, `in`, `ft`, `unitless`) |
//! | `add_layer` | `id`; optional `name`, `color`, `line_type`, `line_weight`, `visible`, `locked` |
//! | `set_layer` | `id`, `set`: one of `name`, `color`, `line_type`, `line_weight`, `visible`, `locked` |
//! | `delete_layer`, `restore_layer` | `id` (layer `"0"` cannot be deleted) |
//! | `add_group` | `name`; optional `id`, `parent` |
//! | `add_block` | `name`; optional `id`, `base` (default `[0, 0]`), `parent` |
//! | `move_node` | `id`; optional `parent` (absent: root) |
//! | `rename_node` | `id`, `name` |
//! | `set_block_base` | `id`, `base` |
//! | `delete_node`, `restore_node` | `id` |
//! | `group_add`, `group_remove` | `group`, `entity` |
//!
//! Entity kinds and their fields (defaults in parentheses):
//!
//! | kind | fields |
//! |---|---|
//! | `line` | `from`, `to` |
//! | `polyline` | `vertices`: `[[x, y], [x, y, bulge], ...]` (≥ 2), `closed` (false) |
//! | `circle` | `center`, `radius` |
//! | `arc` | `center`, `radius`, `start_angle`, `end_angle` (counter-clockwise) |
//! | `ellipse` | `center`, `major_axis` (vector), `ratio` (0..1], `start_param` (0), `end_param` (360) |
//! | `spline` | `control_points` (≥ degree + 1), `degree` (1..=10) |
//! | `text` | `position`, `height`, `rotation` (0), `content` |
//! | `linear_dim` | `p1`, `p2`, `offset`, `angle` (0), `precision` (2), `text_height` (2.5) |
//! | `aligned_dim` | `p1`, `p2`, `offset`, `precision`, `text_height` |
//! | `radial_dim` | `target` (circle or arc id), `angle` (0), `precision`, `text_height` |
//! | `angular_dim` | `vertex`, `p1`, `p2`, `radius`, `precision`, `text_height` |
//! | `hatch` | `loops`: `[[[x, y], ...], ...]`, `fill`: `{"type": "solid"}` or `{"type": "pattern", "name": "ANSI31", "scale": 1, "angle": 45}` (solid) |
//! | `insert` | `block`, `position`, `rotation` (0), `scale` (`[1, 1]`) |
//!
//! Dimension anchors (`p1`, `p2`, `vertex`) are `{"point": [x, y]}` or
//! `{"entity": "id", "snap": "start" | "end" | "center" | "mid"}`.
//!
//! Validation refuses: unknown or deleted ids, duplicate ids, properties
//! the kind does not have, NaN, infinities and coordinates beyond ±1e12,
//! non-positive radii and heights, strings, point lists and texts over
//! [`Limits`], edits on locked layers, tree moves that would form a cycle.
//! Operations of a batch see the effects of the earlier ones (an `add` with
//! an `id` can be referenced later in the same batch).
//!
//! # Example
//!
//! ```
//! use caddy_doc::{Document, Limits, NewDocument, Units, Property, Color};
//!
//! let mut a = Document::new(1, NewDocument {
//!     name: "plan".into(), units: Units::Millimeters,
//!     created_by: "alice".into(), created_at_ms: 0,
//! }, Limits::default())?;
//! let mut b = Document::from_snapshot(&a.export_snapshot()?, 2, Limits::default())?;
//!
//! let c = a.add_circle("0", [0.0, 0.0], 5.0)?;
//! b.import(&a.export_updates_since(&b.version())?)?;
//! // Concurrent edits of different properties both survive.
//! a.set_entity_property(&c, Property::Radius(7.0))?;
//! b.set_entity_property(&c, Property::Color(Some(Color::rgb(255, 0, 0))))?;
//! b.import(&a.export_updates_since(&b.version())?)?;
//! a.import(&b.export_updates_since(&a.version())?)?;
//! assert_eq!(a.resolve(), b.resolve());
//! # Ok::<(), caddy_doc::DocError>(())
//! ```

mod doc;
mod error;
pub mod geom;
mod limits;
mod model;
mod ops;
mod resolve;
mod store;
pub mod svg;

pub use doc::{Document, ImportReport, NewDocument};
pub use error::{DocError, Result};
pub use limits::Limits;
pub use model::{
    Color, DimPoint, EntityKind, Fill, Geometry, LayerProperty, LineType, MAX_BULGE, MAX_COORD, MAX_ID_BYTES,
    MAX_LINE_WEIGHT_MM, MAX_SPLINE_DEGREE, NodeKind, PeerId, Point, Property, Snap, Style, Units, Vertex,
    validate_new_id,
};
pub use ops::{ApplyReport, EditOp, NewEntity, NewLayer};
pub use resolve::{BrokenReason, Entity, Layer, Measurement, Metadata, Node, Problem, ResolvedDoc};
pub use store::{DEFAULT_LAYER, SCHEMA_VERSION};
pub use svg::SvgOptions;
