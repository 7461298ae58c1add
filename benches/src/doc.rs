//! `caddy-bench doc`: what the `caddy-doc` layer costs on top of raw Loro.
//!
//! Three measurements, each run `--runs` times (median reported), each with
//! the same inputs on both sides and `Instant` around only the measured loop:
//!
//! 1. **merge**: a seeded synthetic CAD workload (8 authors editing
//!    concurrently in rounds, exchanging updates every few rounds) produces
//!    a list of update blobs; a fresh `Document::replica` and a fresh
//!    `loro::LoroDoc` each import them one by one. Both must end at the same
//!    version vector, the same Loro state and the same resolved model.
//!    `Document::resolve` of the result is timed separately; one
//!    `import_batch` of all blobs on each side is reported for reference.
//! 2. **memory**: 100 000 lines written in batches of 1000 into one replica,
//!    by `caddy-doc` and by raw Loro writing the same keys and values
//!    (mergeable map per entity, `kind`, `layer`, `deleted`, `from`, `to`,
//!    id pushed on the `order` list); RSS increase and snapshot size.
//! 3. **trace**: the sequential `automerge-paper` editing trace replayed into
//!    a text entity (`text_insert` / `text_delete`) and into a raw `LoroText`
//!    at the same place in the container tree (positions in Unicode code
//!    points on both sides, one commit per call); a root `LoroText` and a
//!    single commit are reported for reference.
//!
//! One JSON line per measurement on stdout; a summary on stderr.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use caddy_doc::{
    Color, Document, EditOp, Geometry, LayerProperty, Limits, NewDocument, NewEntity, NewLayer, Property, Units, Vertex,
};
use clap::{Args, ValueEnum};
use loro::{ExportMode, LoroDoc, LoroValue, VersionVector};
use serde_json::{Value, json};

#[derive(Args)]
pub struct DocArgs {
    /// Total edits of the synthetic merge workload.
    #[arg(long, default_value_t = 100_000)]
    edits: usize,
    /// Entities (lines) of the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    entities: usize,
    /// Directory holding automerge-paper.json.gz (relative to the current directory).
    #[arg(long, default_value = "crates/caddy-doc/tests/data/editing-traces")]
    traces_dir: PathBuf,
    /// Repetitions of each measured part; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the synthetic workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parts to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "memory,merge,trace")]
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Memory,
    Merge,
    Trace,
}

const AUTHORS: usize = 8;
/// Edits each author makes per round (one update blob).
const CHUNK: usize = 50;
/// Authors exchange all their updates every this many rounds.
const EXCHANGE_EVERY: usize = 4;
/// Entities per `apply_ops` batch (and per raw Loro commit) in the memory part.
const MEMORY_BATCH: usize = 1000;

pub fn run(args: DocArgs) -> anyhow::Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    if args.parts.contains(&Part::Memory) {
        memory(&args)?;
    }
    if args.parts.contains(&Part::Merge) {
        merge(&args)?;
    }
    if args.parts.contains(&Part::Trace) {
        trace(&args)?;
    }
    Ok(())
}

// ------------------------------------------------------------------ helpers

/// splitmix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[lo, hi)`, rounded to 0.01 (a drawing's precision).
    fn coord(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + u * (hi - lo)) * 100.0).round() / 100.0
    }

    fn point(&mut self) -> [f64; 2] {
        [self.coord(0.0, 10_000.0), self.coord(0.0, 10_000.0)]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn limits() -> Limits {
    // The defaults, with room for runs larger than the default one.
    Limits { max_document_bytes: 1 << 30, ..Limits::default() }
}

fn new_document(peer: u64) -> anyhow::Result<Document> {
    Document::new(
        peer,
        NewDocument {
            name: "bench drawing".into(),
            units: Units::Millimeters,
            created_by: "bench".into(),
            created_at_ms: 1_700_000_000_000,
        },
        limits(),
    )
    .context("new document")
}

fn rss_kib() -> anyhow::Result<u64> {
    crate::vm_rss_kib(std::process::id() as i32)
}

/// Gives freed heap memory back to the system, so that RSS differences
/// count live memory rather than what earlier phases left in the allocator.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

fn vv_of(d: &Document) -> anyhow::Result<VersionVector> {
    VersionVector::decode(&d.version()).context("decode caddy-doc version")
}

/// The Loro state of a caddy-doc document, through its snapshot.
fn loro_state(d: &Document) -> anyhow::Result<LoroValue> {
    let snap = d.export_snapshot().context("caddy-doc snapshot")?;
    Ok(LoroDoc::from_snapshot(&snap).context("loading the caddy-doc snapshot in raw Loro")?.get_deep_value())
}

// ------------------------------------------------------------------- memory

fn memory(args: &DocArgs) -> anyhow::Result<()> {
    let n = args.entities;
    let initial = new_document(1)?.export_snapshot().context("initial snapshot")?;
    let (mut caddy_rss, mut caddy_ms, mut raw_rss, mut raw_ms) = (vec![], vec![], vec![], vec![]);
    let (mut caddy_snap, mut raw_snap) = (0, 0);
    for run in 0..args.runs {
        // caddy-doc
        trim_heap();
        let before = rss_kib()?;
        let started = Instant::now();
        let d = build_caddy(&initial, n, args.seed)?;
        caddy_ms.push(ms(started.elapsed()));
        trim_heap();
        caddy_rss.push(rss_kib()?.saturating_sub(before) as f64);
        // raw Loro
        trim_heap();
        let before = rss_kib()?;
        let started = Instant::now();
        let raw = build_raw(&initial, n, args.seed)?;
        raw_ms.push(ms(started.elapsed()));
        trim_heap();
        raw_rss.push(rss_kib()?.saturating_sub(before) as f64);

        caddy_snap = d.export_snapshot().context("caddy-doc snapshot")?.len();
        raw_snap = raw.export(ExportMode::Snapshot).context("raw snapshot")?.len();
        if run == 0 {
            ensure!(d.entity_count() == n, "caddy-doc holds {} entities, expected {n}", d.entity_count());
            ensure!(loro_state(&d)? == raw.get_deep_value(), "memory: caddy-doc and raw Loro hold different states");
        }
        drop(d);
        drop(raw);
    }
    let (c_kib, r_kib) = (median(caddy_rss), median(raw_rss));
    let (c_ms, r_ms) = (median(caddy_ms), median(raw_ms));
    let mib = |kib: f64| kib / 1024.0;
    eprintln!(
        "memory, {n} lines: caddy-doc RSS +{:.1} MiB ({:.0} B/entity), snapshot {:.2} MiB, built in {c_ms:.0} ms; \
         raw Loro RSS +{:.1} MiB ({:.0} B/entity), snapshot {:.2} MiB, built in {r_ms:.0} ms; \
         RSS ratio {:.2}x, snapshot ratio {:.2}x, build ratio {:.2}x",
        mib(c_kib),
        c_kib * 1024.0 / n as f64,
        caddy_snap as f64 / 1048576.0,
        mib(r_kib),
        r_kib * 1024.0 / n as f64,
        raw_snap as f64 / 1048576.0,
        c_kib / r_kib.max(1.0),
        caddy_snap as f64 / raw_snap.max(1) as f64,
        c_ms / r_ms,
    );
    println!(
        "{}",
        json!({"kind": "doc_memory", "entities": n, "batch": MEMORY_BATCH, "runs": args.runs,
               "caddy_rss_kib": c_kib, "raw_rss_kib": r_kib, "rss_ratio": round2(c_kib / r_kib.max(1.0)),
               "caddy_snapshot_bytes": caddy_snap, "raw_snapshot_bytes": raw_snap,
               "snapshot_ratio": round2(caddy_snap as f64 / raw_snap.max(1) as f64),
               "caddy_build_ms": round2(c_ms), "raw_build_ms": round2(r_ms), "build_ratio": round2(c_ms / r_ms)})
    );
    Ok(())
}

fn build_caddy(initial: &[u8], n: usize, seed: u64) -> anyhow::Result<Document> {
    let mut rng = Rng(seed);
    let mut d = Document::from_snapshot(initial, 2, limits()).context("load initial snapshot")?;
    let mut done = 0;
    while done < n {
        let k = MEMORY_BATCH.min(n - done);
        let ops: Vec<EditOp> = (done..done + k)
            .map(|i| {
                let line = Geometry::Line { from: rng.point(), to: rng.point() };
                EditOp::Add(NewEntity::new("0", line).with_id(entity_id(i)))
            })
            .collect();
        d.apply_ops(&ops).context("apply_ops")?;
        done += k;
    }
    Ok(d)
}

/// Id of the `i`-th entity of the memory part. Chosen rather than generated:
/// with Loro 1.17.1, caddy-doc's generated ids collide inside a multi-add
/// `apply_ops` batch (entities get lost), see the note in README.md.
fn entity_id(i: usize) -> String {
    format!("e{i:06}")
}

/// The same keys and values caddy-doc writes for a line, written directly.
fn build_raw(initial: &[u8], n: usize, seed: u64) -> anyhow::Result<LoroDoc> {
    let mut rng = Rng(seed);
    let doc = LoroDoc::from_snapshot(initial).context("load initial snapshot")?;
    doc.set_peer_id(2)?;
    let entities = doc.get_map("entities");
    let order = doc.get_list("order");
    let mut done = 0;
    while done < n {
        let k = MEMORY_BATCH.min(n - done);
        for i in done..done + k {
            let (from, to) = (rng.point(), rng.point());
            let id = entity_id(i);
            let m = entities.ensure_mergeable_map(&id)?;
            m.insert("kind", "line")?;
            m.insert("layer", "0")?;
            m.insert("deleted", false)?;
            m.insert("from", LoroValue::from(vec![from[0], from[1]]))?;
            m.insert("to", LoroValue::from(vec![to[0], to[1]]))?;
            order.push(id.as_str())?;
        }
        doc.commit();
        done += k;
    }
    Ok(doc)
}

// -------------------------------------------------------------------- merge

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Line,
    Circle,
    Polyline,
    Text,
}

struct Ent {
    id: String,
    kind: Kind,
    author: usize,
    /// Exchange epoch in which it was created.
    born: usize,
    /// (epoch, author) of its deletion.
    deleted: Option<(usize, usize)>,
}

struct LayerRec {
    id: String,
    author: usize,
    born: usize,
}

#[derive(Default)]
struct Counts {
    add_line: usize,
    add_circle: usize,
    add_polyline: usize,
    add_text: usize,
    set_property: usize,
    delete: usize,
    add_layer: usize,
    set_layer: usize,
    text_insert: usize,
    text_delete: usize,
}

struct Workload {
    blobs: Vec<Vec<u8>>,
    edits: usize,
    counts: Counts,
    rounds: usize,
    exchanges: usize,
    entities: usize,
}

struct Gen {
    rng: Rng,
    ents: Vec<Ent>,
    /// Indexes into `ents` of the text entities.
    texts: Vec<usize>,
    layers: Vec<LayerRec>,
    epoch: usize,
    counts: Counts,
}

const WORDS: &[&str] = &[
    "wall", "door", "window", "beam", "column", "slab", "stair", "north", "level", "grid", "section", "detail", "see",
    "note", "typ.", "Ø12", "200mm", "façade", "fire", "rated",
];

impl Gen {
    fn visible(&self, author: usize, born: usize, by: usize) -> bool {
        born < self.epoch || by == author
    }

    /// An entity `author` sees and does not know to be deleted; recent
    /// entities are picked more often, like in an editing session.
    fn pick(&mut self, author: usize, text_only: bool) -> Option<usize> {
        let len = if text_only { self.texts.len() } else { self.ents.len() };
        if len == 0 {
            return None;
        }
        for _ in 0..16 {
            let i = if self.rng.below(2) == 0 { len - 1 - self.rng.below(len.min(256)) } else { self.rng.below(len) };
            let e = &self.ents[if text_only { self.texts[i] } else { i }];
            let known_deleted = e.deleted.is_some_and(|(ep, by)| ep < self.epoch || by == author);
            if self.visible(author, e.born, e.author) && !known_deleted {
                return Some(if text_only { self.texts[i] } else { i });
            }
        }
        None
    }

    fn pick_layer(&mut self, author: usize) -> String {
        for _ in 0..16 {
            let l = &self.layers[self.rng.below(self.layers.len())];
            if self.visible(author, l.born, l.author) {
                return l.id.clone();
            }
        }
        "0".to_owned()
    }

    fn color(&mut self) -> Color {
        Color::rgb(self.rng.below(256) as u8, self.rng.below(256) as u8, self.rng.below(256) as u8)
    }

    fn words(&mut self, n: usize) -> String {
        (0..n).map(|_| WORDS[self.rng.below(WORDS.len())]).collect::<Vec<_>>().join(" ")
    }

    fn add(&mut self, d: &mut Document, author: usize, kind: Kind) -> anyhow::Result<()> {
        let layer = self.pick_layer(author);
        let geometry = match kind {
            Kind::Line => Geometry::Line { from: self.rng.point(), to: self.rng.point() },
            Kind::Circle => Geometry::Circle { center: self.rng.point(), radius: self.rng.coord(1.0, 500.0) },
            Kind::Polyline => {
                let n = 3 + self.rng.below(6);
                let vertices =
                    (0..n).map(|_| Vertex::new(self.rng.coord(0.0, 1e4), self.rng.coord(0.0, 1e4))).collect();
                Geometry::Polyline { vertices, closed: self.rng.below(2) == 0 }
            }
            Kind::Text => {
                let n = 1 + self.rng.below(4);
                Geometry::Text { position: self.rng.point(), height: 2.5, rotation: 0.0, content: self.words(n) }
            }
        };
        let id = d.add(NewEntity::new(layer, geometry)).context("add")?;
        let c = &mut self.counts;
        *match kind {
            Kind::Line => &mut c.add_line,
            Kind::Circle => &mut c.add_circle,
            Kind::Polyline => &mut c.add_polyline,
            Kind::Text => &mut c.add_text,
        } += 1;
        if kind == Kind::Text {
            self.texts.push(self.ents.len());
        }
        self.ents.push(Ent { id, kind, author, born: self.epoch, deleted: None });
        Ok(())
    }

    fn set_property(&mut self, d: &mut Document, e: usize, author: usize) -> anyhow::Result<()> {
        let r = self.rng.below(4);
        let property = match (self.ents[e].kind, r) {
            (_, 0) if self.ents[e].kind != Kind::Text => Property::Color(Some(self.color())),
            (_, 1) if self.ents[e].kind != Kind::Text => Property::Layer(self.pick_layer(author)),
            (Kind::Line, 2) => Property::From(self.rng.point()),
            (Kind::Line, _) => Property::To(self.rng.point()),
            (Kind::Circle, 2) => Property::Center(self.rng.point()),
            (Kind::Circle, _) => Property::Radius(self.rng.coord(1.0, 500.0)),
            (Kind::Polyline, 2) => Property::Closed(self.rng.below(2) == 0),
            (Kind::Polyline, _) => {
                let n = 3 + self.rng.below(6);
                Property::Vertices(
                    (0..n).map(|_| Vertex::new(self.rng.coord(0.0, 1e4), self.rng.coord(0.0, 1e4))).collect(),
                )
            }
            (Kind::Text, 0) => Property::Height(self.rng.coord(1.0, 10.0)),
            (Kind::Text, 1) => Property::Rotation(self.rng.coord(0.0, 360.0)),
            (Kind::Text, _) => Property::Position(self.rng.point()),
        };
        d.set_entity_property(&self.ents[e].id, property).context("set_entity_property")?;
        self.counts.set_property += 1;
        Ok(())
    }

    fn text_edit(&mut self, d: &mut Document, e: usize) -> anyhow::Result<()> {
        let id = self.ents[e].id.clone();
        let id = id.as_str();
        let len = d.text(id).context("text")?.chars().count();
        let delete = len > 0 && (len > 400 || self.rng.below(4) == 0);
        if delete {
            let n = (1 + self.rng.below(3)).min(len);
            let pos = self.rng.below(len - n + 1);
            d.text_delete(id, pos, n).context("text_delete")?;
            self.counts.text_delete += 1;
        } else {
            let pos = self.rng.below(len + 1);
            let n = 1 + self.rng.below(4);
            const CHARS: &[char] = &['a', 'e', 'i', 'o', 'n', 's', 't', 'r', 'l', ' ', ' ', '.', '1', '2', 'é', 'Ø'];
            let s: String = (0..n).map(|_| CHARS[self.rng.below(CHARS.len())]).collect();
            d.text_insert(id, pos, &s).context("text_insert")?;
            self.counts.text_insert += 1;
        }
        Ok(())
    }

    /// One successful edit by `author`.
    fn edit(&mut self, d: &mut Document, author: usize) -> anyhow::Result<()> {
        let r = self.rng.below(1000);
        let kind = match r {
            0..120 => Some(Kind::Line),
            120..190 => Some(Kind::Circle),
            190..250 => Some(Kind::Polyline),
            250..290 => Some(Kind::Text),
            _ => None,
        };
        if let Some(kind) = kind {
            return self.add(d, author, kind);
        }
        match r {
            290..620 => {
                if let Some(e) = self.pick(author, false) {
                    return self.set_property(d, e, author);
                }
            }
            620..650 => {
                // Deletes only entities nobody deleted yet (a second,
                // concurrent delete adds nothing to the workload).
                if let Some(e) = self.pick(author, false)
                    && self.ents[e].deleted.is_none()
                {
                    d.delete_entity(&self.ents[e].id).context("delete_entity")?;
                    self.ents[e].deleted = Some((self.epoch, author));
                    self.counts.delete += 1;
                    return Ok(());
                }
            }
            650..652 => {
                let id = format!("L{author}-{}", self.layers.len());
                let layer = NewLayer {
                    color: Some(self.color()),
                    line_weight: Some([0.13, 0.25, 0.35, 0.5][self.rng.below(4)]),
                    ..NewLayer::new(id.clone())
                };
                d.add_layer(layer).context("add_layer")?;
                self.layers.push(LayerRec { id, author, born: self.epoch });
                self.counts.add_layer += 1;
                return Ok(());
            }
            652..660 => {
                let id = self.pick_layer(author);
                let property = if self.rng.below(2) == 0 {
                    LayerProperty::Name(format!("{} {}", self.words(1), self.rng.below(100)))
                } else {
                    LayerProperty::Color(self.color())
                };
                d.set_layer_property(&id, property).context("set_layer_property")?;
                self.counts.set_layer += 1;
                return Ok(());
            }
            _ => {
                if let Some(e) = self.pick(author, true) {
                    return self.text_edit(d, e);
                }
            }
        }
        // Nothing suitable to edit yet: draw something.
        self.add(d, author, Kind::Line)
    }
}

fn generate(edits: usize, seed: u64) -> anyhow::Result<Workload> {
    let base = new_document(1)?;
    let mut blobs = vec![base.export_updates_since(&Document::empty_version()).context("initial updates")?];
    let snapshot = base.export_snapshot().context("initial snapshot")?;
    let mut docs = (0..AUTHORS)
        .map(|a| Document::from_snapshot(&snapshot, 11 + a as u64, limits()).context("author replica"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut g = Gen {
        rng: Rng(seed),
        ents: vec![],
        texts: vec![],
        layers: vec![LayerRec { id: "0".into(), author: 0, born: 0 }],
        epoch: 0,
        counts: Counts::default(),
    };
    // Author of each blob (the first one is everybody's starting point).
    let mut blob_author = vec![usize::MAX];
    let (mut done, mut rounds, mut exchanges, mut last_exchange) = (0, 0, 0, blobs.len());
    while done < edits {
        for (a, d) in docs.iter_mut().enumerate() {
            if done >= edits {
                break;
            }
            let before = d.version();
            for _ in 0..CHUNK.min(edits - done) {
                g.edit(d, a).with_context(|| format!("author {a}, edit {done}"))?;
                done += 1;
            }
            blobs.push(d.export_updates_since(&before).context("export")?);
            blob_author.push(a);
        }
        rounds += 1;
        if rounds % EXCHANGE_EVERY == 0 && done < edits {
            for (a, d) in docs.iter_mut().enumerate() {
                let theirs: Vec<Vec<u8>> =
                    (last_exchange..blobs.len()).filter(|&i| blob_author[i] != a).map(|i| blobs[i].clone()).collect();
                let report = d.import_batch(&theirs).context("exchange")?;
                ensure!(!report.pending, "exchange left changes pending");
            }
            last_exchange = blobs.len();
            g.epoch += 1;
            exchanges += 1;
        }
    }
    Ok(Workload { blobs, edits: done, counts: g.counts, rounds, exchanges, entities: g.ents.len() })
}

fn merge(args: &DocArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let w = generate(args.edits, args.seed)?;
    let bytes: usize = w.blobs.iter().map(Vec::len).sum();
    let c = &w.counts;
    eprintln!(
        "merge workload: {} edits by {AUTHORS} authors in {} rounds of {CHUNK}, {} exchanges, {} update blobs \
         ({:.2} MiB), {} entities; adds line/circle/polyline/text {}/{}/{}/{}, set {}, delete {}, add layer {}, \
         set layer {}, text insert/delete {}/{}; generated in {:.1} s",
        w.edits,
        w.rounds,
        w.exchanges,
        w.blobs.len(),
        bytes as f64 / 1048576.0,
        w.entities,
        c.add_line,
        c.add_circle,
        c.add_polyline,
        c.add_text,
        c.set_property,
        c.delete,
        c.add_layer,
        c.set_layer,
        c.text_insert,
        c.text_delete,
        started.elapsed().as_secs_f64()
    );

    let (mut caddy_ms, mut raw_ms) = (vec![], vec![]);
    let mut last: Option<(Document, LoroDoc)> = None;
    for _ in 0..args.runs {
        drop(last.take());
        let mut d = Document::replica(100, limits()).context("replica")?;
        let mut pending = false;
        let t = Instant::now();
        for b in &w.blobs {
            pending |= d.import(b).context("caddy-doc import")?.pending;
        }
        caddy_ms.push(ms(t.elapsed()));
        ensure!(!pending, "caddy-doc: changes left pending");

        let raw = LoroDoc::new();
        raw.set_peer_id(100)?;
        let mut pending = false;
        let t = Instant::now();
        for b in &w.blobs {
            pending |= raw.import(b).context("raw Loro import")?.pending.is_some();
        }
        raw_ms.push(ms(t.elapsed()));
        ensure!(!pending, "raw Loro: changes left pending");
        last = Some((d, raw));
    }
    let (d, raw) = last.context("no run")?;

    // For reference: the same blobs in one import_batch call on each side.
    let (mut caddy_batch_ms, mut raw_batch_ms) = (vec![], vec![]);
    for _ in 0..args.runs {
        let mut b = Document::replica(102, limits()).context("replica")?;
        let t = Instant::now();
        let report = b.import_batch(&w.blobs).context("caddy-doc import_batch")?;
        caddy_batch_ms.push(ms(t.elapsed()));
        ensure!(!report.pending && vv_of(&b)? == vv_of(&d)?, "caddy-doc import_batch: another version");
        drop(b);
        let b = LoroDoc::new();
        b.set_peer_id(102)?;
        let t = Instant::now();
        let status = b.import_batch(&w.blobs).context("raw Loro import_batch")?;
        raw_batch_ms.push(ms(t.elapsed()));
        ensure!(status.pending.is_none() && b.oplog_vv() == raw.oplog_vv(), "raw Loro import_batch: another version");
    }

    // Same end state: version vector, Loro state, resolved model.
    let vv = vv_of(&d)?;
    if vv != raw.oplog_vv() {
        bail!("merge: version vectors differ: caddy-doc {vv:?}, raw Loro {:?}", raw.oplog_vv());
    }
    if loro_state(&d)? != raw.get_deep_value() {
        bail!("merge: caddy-doc and raw Loro hold different states after importing the same updates");
    }
    let raw_snapshot = raw.export(ExportMode::Snapshot).context("raw snapshot")?;
    let resolved = d.resolve();
    let from_raw = Document::from_snapshot(&raw_snapshot, 101, limits()).context("load raw snapshot")?.resolve();
    ensure!(resolved == from_raw, "merge: resolved models differ");
    ensure!(
        d.entity_count() == w.entities,
        "merge: {} entities after import, the workload created {}",
        d.entity_count(),
        w.entities
    );
    let live = resolved.entities.len();
    drop((resolved, from_raw, raw_snapshot));

    let mut resolve_ms = vec![];
    for _ in 0..args.runs {
        let t = Instant::now();
        let r = d.resolve();
        resolve_ms.push(ms(t.elapsed()));
        drop(r);
    }

    let n = w.blobs.len() as f64;
    let (c_ms, r_ms, res_ms) = (median(caddy_ms), median(raw_ms), median(resolve_ms));
    let ratio = c_ms / r_ms;
    eprintln!(
        "merge, import one by one: caddy-doc {c_ms:.0} ms ({:.0} updates/s, {:.0} edits/s), raw Loro {r_ms:.0} ms \
         ({:.0} updates/s, {:.0} edits/s); caddy-doc/raw {ratio:.2}x (goal <= 1.3x); same end state: yes",
        n / c_ms * 1000.0,
        w.edits as f64 / c_ms * 1000.0,
        n / r_ms * 1000.0,
        w.edits as f64 / r_ms * 1000.0,
    );
    let (cb_ms, rb_ms) = (median(caddy_batch_ms), median(raw_batch_ms));
    eprintln!(
        "merge, all {} updates in one import_batch (reference): caddy-doc {cb_ms:.0} ms, raw Loro {rb_ms:.0} ms, \
         ratio {:.2}x",
        w.blobs.len(),
        cb_ms / rb_ms
    );
    eprintln!("resolve of the merged document ({} entities, {live} live): {res_ms:.1} ms", w.entities);
    println!(
        "{}",
        json!({"kind": "doc_merge", "edits": w.edits, "authors": AUTHORS, "chunk": CHUNK,
               "exchange_every": EXCHANGE_EVERY, "rounds": w.rounds, "updates": w.blobs.len(),
               "update_bytes": bytes, "entities": w.entities, "runs": args.runs, "seed": args.seed,
               "caddy_ms": round2(c_ms), "raw_ms": round2(r_ms), "ratio": round2(ratio),
               "caddy_updates_per_s": (n / c_ms * 1000.0).round(), "raw_updates_per_s": (n / r_ms * 1000.0).round(),
               "caddy_edits_per_s": (w.edits as f64 / c_ms * 1000.0).round(),
               "raw_edits_per_s": (w.edits as f64 / r_ms * 1000.0).round(), "same_state": true})
    );
    println!(
        "{}",
        json!({"kind": "doc_merge_batch", "edits": w.edits, "updates": w.blobs.len(), "runs": args.runs,
               "caddy_ms": round2(cb_ms), "raw_ms": round2(rb_ms), "ratio": round2(cb_ms / rb_ms)})
    );
    println!(
        "{}",
        json!({"kind": "doc_resolve", "edits": w.edits, "entities": w.entities, "live_entities": live,
               "runs": args.runs, "resolve_ms": round2(res_ms)})
    );
    Ok(())
}

// -------------------------------------------------------------------- trace

struct Trace {
    start: String,
    end: String,
    patches: Vec<(usize, usize, String)>,
    txns: usize,
}

fn load_trace(path: &std::path::Path) -> anyhow::Result<Trace> {
    let file = std::fs::File::open(path).with_context(|| {
        format!("{}: pass --traces-dir (default crates/caddy-doc/tests/data/editing-traces)", path.display())
    })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("gunzip {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let string = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let txns = v.get("txns").and_then(Value::as_array).context("trace: no txns")?;
    let mut patches = Vec::new();
    for (i, txn) in txns.iter().enumerate() {
        for p in txn.get("patches").and_then(Value::as_array).with_context(|| format!("txn {i}: no patches"))? {
            let patch = (|| {
                let p = p.as_array()?;
                Some((p.first()?.as_u64()? as usize, p.get(1)?.as_u64()? as usize, p.get(2)?.as_str()?.to_owned()))
            })()
            .with_context(|| format!("txn {i}: bad patch {p}"))?;
            patches.push(patch);
        }
    }
    Ok(Trace { start: string("startContent"), end: string("endContent"), patches, txns: txns.len() })
}

fn trace(args: &DocArgs) -> anyhow::Result<()> {
    let path = args.traces_dir.join("automerge-paper.json.gz");
    let t = load_trace(&path)?;
    let (mut caddy_ms, mut raw_ms, mut root_ms, mut one_txn_ms) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.runs {
        // caddy-doc: a text entity, one typed call (one commit) per patch part.
        let mut d = new_document(1)?;
        let id = d.add_text("0", [0.0, 0.0], 2.5, &t.start).context("add_text")?;
        let started = Instant::now();
        for (pos, del, ins) in &t.patches {
            if *del > 0 {
                d.text_delete(&id, *pos, *del).context("text_delete")?;
            }
            if !ins.is_empty() {
                d.text_insert(&id, *pos, ins).context("text_insert")?;
            }
        }
        caddy_ms.push(ms(started.elapsed()));
        ensure!(d.text(&id)? == t.end, "caddy-doc: the replayed text differs from endContent");
        drop(d);

        // Raw Loro, the same container layout, the same calls, one commit each.
        raw_ms.push(replay_raw(&t, Layout::LikeCaddyDoc, true).context("raw Loro")?);
        // References: a root text (one commit per call), and the caddy-doc
        // layout with a single commit at the end.
        root_ms.push(replay_raw(&t, Layout::RootText, true).context("raw Loro, root text")?);
        one_txn_ms.push(replay_raw(&t, Layout::LikeCaddyDoc, false).context("raw Loro, one transaction")?);
    }
    let (c_ms, r_ms) = (median(caddy_ms), median(raw_ms));
    let (root_ms, one_txn_ms) = (median(root_ms), median(one_txn_ms));
    eprintln!(
        "trace automerge-paper ({} txns, {} patches, {} chars at the end): caddy-doc {c_ms:.0} ms, raw Loro {r_ms:.0} ms \
         (same container layout, commit per call like caddy-doc), ratio {:.2}x; references: raw Loro root text \
         {root_ms:.0} ms (caddy-doc/that {:.2}x), raw Loro in one transaction {one_txn_ms:.0} ms; all end with endContent",
        t.txns,
        t.patches.len(),
        t.end.chars().count(),
        c_ms / r_ms,
        c_ms / root_ms,
    );
    println!(
        "{}",
        json!({"kind": "doc_trace", "trace": "automerge-paper", "txns": t.txns, "patches": t.patches.len(),
               "runs": args.runs, "caddy_ms": round2(c_ms), "raw_ms": round2(r_ms), "ratio": round2(c_ms / r_ms),
               "raw_root_text_ms": round2(root_ms), "ratio_vs_root_text": round2(c_ms / root_ms),
               "raw_one_txn_ms": round2(one_txn_ms), "end_content_ok": true})
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Layout {
    /// A mergeable text in a mergeable map under the root `entities` map,
    /// where caddy-doc keeps a text entity's content.
    LikeCaddyDoc,
    /// A root text container.
    RootText,
}

/// Replays the trace into a raw Loro text; returns the milliseconds of the
/// replay loop (with `commit_each`, one commit per insert or delete call).
fn replay_raw(t: &Trace, layout: Layout, commit_each: bool) -> anyhow::Result<f64> {
    let doc = LoroDoc::new();
    doc.set_peer_id(1)?;
    let text = match layout {
        Layout::LikeCaddyDoc => doc.get_map("entities").ensure_mergeable_map("t1")?.ensure_mergeable_text("content")?,
        Layout::RootText => doc.get_text("content"),
    };
    if !t.start.is_empty() {
        text.insert(0, &t.start)?;
    }
    doc.commit();
    let started = Instant::now();
    for (pos, del, ins) in &t.patches {
        if *del > 0 {
            text.delete(*pos, *del)?;
            if commit_each {
                doc.commit();
            }
        }
        if !ins.is_empty() {
            text.insert(*pos, ins)?;
            if commit_each {
                doc.commit();
            }
        }
    }
    doc.commit();
    let elapsed = ms(started.elapsed());
    ensure!(text.to_string() == t.end, "the replayed text differs from endContent");
    Ok(elapsed)
}
