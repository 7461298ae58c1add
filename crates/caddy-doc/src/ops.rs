//! High-level edit operations: the typed form of every edit, and the JSON
//! format read by `caddyctl doc apply` (see the crate docs for the format).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{DocError, Result};
use crate::model::{Color, Geometry, LayerProperty, LineType, Point, Property, Style, Units};
use crate::store::DEFAULT_LAYER;

/// A new entity: the body of an `add` operation.
///
/// JSON: `{"op": "add", "kind": "line", "id": "l1", "layer": "walls",
/// "color": "#ff0000", "from": [0, 0], "to": [10, 0]}`: the entity's kind,
/// its geometry fields (see [`Geometry`]) and the optional common fields
/// `id` (generated when absent), `layer` (default `"0"`), `color`,
/// `line_type`, `line_weight` (absent: by layer) and `owner` (a block id:
/// the entity then belongs to that block definition). Unknown fields are
/// refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewEntity {
    /// Caller-chosen id; generated (`<counter>@<peer>`) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Layer id.
    pub layer: String,
    /// Style overrides.
    #[serde(flatten)]
    pub style: Style,
    /// Owning block definition, or `None` for model space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The geometry (and kind).
    #[serde(flatten)]
    pub geometry: Geometry,
}

impl NewEntity {
    /// An entity on `layer` with a generated id and no style overrides.
    pub fn new(layer: impl Into<String>, geometry: Geometry) -> NewEntity {
        NewEntity { id: None, layer: layer.into(), style: Style::default(), owner: None, geometry }
    }

    /// Sets a caller-chosen id.
    pub fn with_id(mut self, id: impl Into<String>) -> NewEntity {
        self.id = Some(id.into());
        self
    }

    /// Sets the style overrides.
    pub fn with_style(mut self, style: Style) -> NewEntity {
        self.style = style;
        self
    }

    /// Makes the entity part of a block definition.
    pub fn with_owner(mut self, block: impl Into<String>) -> NewEntity {
        self.owner = Some(block.into());
        self
    }
}

impl<'de> Deserialize<'de> for NewEntity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        fn take<T: serde::de::DeserializeOwned, E: serde::de::Error>(
            map: &mut serde_json::Map<String, serde_json::Value>,
            key: &str,
        ) -> std::result::Result<Option<T>, E> {
            match map.remove(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => serde_json::from_value(v).map(Some).map_err(|e| E::custom(format!("field `{key}`: {e}"))),
            }
        }
        let id = take(&mut map, "id")?;
        let layer = take(&mut map, "layer")?.unwrap_or_else(|| DEFAULT_LAYER.to_owned());
        let style = Style {
            color: take::<Color, _>(&mut map, "color")?,
            line_type: take::<LineType, _>(&mut map, "line_type")?,
            line_weight: take(&mut map, "line_weight")?,
        };
        let owner = take(&mut map, "owner")?;
        let geometry: Geometry = serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(NewEntity { id, layer, style, owner, geometry })
    }
}

/// A new layer: the body of an `add_layer` operation. Absent fields take
/// the defaults: name = id, colour black, continuous, 0.25 mm, visible,
/// unlocked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewLayer {
    /// Layer id (caller-chosen, e.g. `"walls"`).
    pub id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<Color>,
    /// Line type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_type: Option<LineType>,
    /// Line weight, mm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_weight: Option<f64>,
    /// Visibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<bool>,
    /// Lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

impl NewLayer {
    /// A layer with default properties.
    pub fn new(id: impl Into<String>) -> NewLayer {
        NewLayer { id: id.into(), ..NewLayer::default() }
    }
}

/// One high-level edit. [`Document::apply_ops`](crate::Document::apply_ops)
/// applies a batch of them all-or-nothing; every typed edit method of
/// [`Document`](crate::Document) is a batch of one.
///
/// Serialized as JSON objects tagged by `"op"`; see the crate docs for the
/// full format. Unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum EditOp {
    /// Adds an entity.
    Add(NewEntity),
    /// Sets one property of an entity: `{"op":"set","id":"c1","set":{"radius":5}}`.
    Set {
        /// The entity.
        id: String,
        /// The property and its new value.
        set: Property,
    },
    /// Deletes an entity (a tombstone: see the crate docs, "Merge rules").
    Delete {
        /// The entity.
        id: String,
    },
    /// Restores a deleted entity.
    Restore {
        /// The entity.
        id: String,
    },
    /// Inserts characters into a text entity's content.
    TextInsert {
        /// The text entity.
        id: String,
        /// Position, in Unicode code points.
        pos: usize,
        /// What to insert.
        text: String,
    },
    /// Deletes characters from a text entity's content.
    TextDelete {
        /// The text entity.
        id: String,
        /// Position, in Unicode code points.
        pos: usize,
        /// Number of code points.
        len: usize,
    },
    /// Draws the entity above all others.
    BringToFront {
        /// The entity.
        id: String,
    },
    /// Draws the entity below all others.
    SendToBack {
        /// The entity.
        id: String,
    },
    /// Changes the document's name and/or units.
    SetMeta {
        /// New name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// New units.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        units: Option<Units>,
    },
    /// Adds a layer.
    AddLayer(NewLayer),
    /// Sets one property of a layer: `{"op":"set_layer","id":"walls","set":{"visible":false}}`.
    SetLayer {
        /// The layer.
        id: String,
        /// The property and its new value.
        set: LayerProperty,
    },
    /// Deletes a layer (a tombstone; its entities stay and are reported).
    DeleteLayer {
        /// The layer.
        id: String,
    },
    /// Restores a deleted layer.
    RestoreLayer {
        /// The layer.
        id: String,
    },
    /// Adds a group node to the hierarchy.
    AddGroup {
        /// Caller-chosen id; generated when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Display name.
        name: String,
        /// Parent node; the root when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// Adds a block definition node to the hierarchy.
    AddBlock {
        /// Caller-chosen id; generated when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Block name.
        name: String,
        /// Base point (default `[0, 0]`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base: Option<Point>,
        /// Parent node; the root when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// Moves a node under another one (or to the root when `parent` is absent).
    MoveNode {
        /// The node.
        id: String,
        /// The new parent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// Renames a node.
    RenameNode {
        /// The node.
        id: String,
        /// New name.
        name: String,
    },
    /// Changes the base point of a block definition.
    SetBlockBase {
        /// The block.
        id: String,
        /// New base point.
        base: Point,
    },
    /// Deletes a node (a tombstone: its children show under its nearest live
    /// ancestor).
    DeleteNode {
        /// The node.
        id: String,
    },
    /// Restores a deleted node.
    RestoreNode {
        /// The node.
        id: String,
    },
    /// Adds an entity to a group.
    GroupAdd {
        /// The group.
        group: String,
        /// The entity.
        entity: String,
    },
    /// Removes an entity from a group (also works for a member that no longer exists).
    GroupRemove {
        /// The group.
        group: String,
        /// The entity.
        entity: String,
    },
}

impl EditOp {
    /// Parses a JSON batch: either an array of operations or an object
    /// `{"ops": [...]}`.
    pub fn parse_batch(json: &str) -> Result<Vec<EditOp>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Batch {
            List(Vec<serde_json::Value>),
            Wrapped { ops: Vec<serde_json::Value> },
        }
        let batch: Batch = serde_json::from_str(json)
            .map_err(|e| DocError::Json(format!("expected an array of operations or {{\"ops\": [...]}}: {e}")))?;
        let (Batch::List(values) | Batch::Wrapped { ops: values }) = batch;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| serde_json::from_value(v).map_err(|e| DocError::Json(format!("operation {i}: {e}"))))
            .collect()
    }

    /// The batch as pretty JSON (the format [`EditOp::parse_batch`] reads).
    pub fn to_json_batch(ops: &[EditOp]) -> String {
        // Serializing these plain data types cannot fail.
        serde_json::to_string_pretty(ops).unwrap_or_default()
    }
}

/// What [`Document::apply_ops`](crate::Document::apply_ops) did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Ids of the entities and nodes created, in operation order.
    pub created: Vec<String>,
}
