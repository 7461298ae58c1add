//! Real text-editing traces (josephg/editing-traces, CC BY 4.0, by Joseph
//! Gentle; `automerge-paper` originally from the automerge-perf data set by
//! Martin Kleppmann et al.) replayed into a text entity through the typed
//! API.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use caddy_doc::{Document, Limits};
use common::*;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default)]
    start_content: String,
    end_content: String,
    txns: Vec<Txn>,
}

#[derive(Deserialize)]
struct Txn {
    #[serde(default)]
    parents: Vec<usize>,
    #[serde(default)]
    agent: usize,
    patches: Vec<(usize, usize, String)>,
}

fn trace_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CADDY_EDITING_TRACES") {
        return PathBuf::from(dir);
    }
    // Kept in the repository (with their credit), so a fresh clone has them.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/editing-traces")
}

fn load(name: &str) -> Trace {
    let path = trace_dir().join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut json = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut json).expect("gunzip");
    serde_json::from_str(&json).expect("trace json")
}

fn apply_patches(d: &mut Document, id: &str, patches: &[(usize, usize, String)]) {
    for (pos, del, ins) in patches {
        if *del > 0 {
            d.text_delete(id, *pos, *del).expect("delete");
        }
        if !ins.is_empty() {
            d.text_insert(id, *pos, ins).expect("insert");
        }
    }
}

#[test]
fn sequential_trace_gives_its_end_content() {
    let trace = load("automerge-paper.json.gz");
    let started = Instant::now();
    let mut d = new_doc(1);
    let id = d.add_text("0", [0.0, 0.0], 2.5, &trace.start_content).expect("text");
    for txn in &trace.txns {
        apply_patches(&mut d, &id, &txn.patches);
    }
    assert_eq!(d.text(&id).expect("text"), trace.end_content);
    let edits = started.elapsed();
    // The replayed history loads on another replica with the same content.
    let copy = Document::from_snapshot(&d.export_snapshot().expect("snapshot"), 2, Limits::default()).expect("load");
    assert_eq!(copy.text(&id).expect("text"), trace.end_content);
    assert_eq!(json(&copy), json(&d));
    eprintln!(
        "automerge-paper: {} transactions in {:?} ({:?} with the snapshot round trip)",
        trace.txns.len(),
        edits,
        started.elapsed()
    );
}

#[test]
fn concurrent_trace_converges_on_every_replica() {
    let trace = load("friendsforever.json.gz");
    let started = Instant::now();
    let agents = trace.txns.iter().map(|t| t.agent).max().unwrap_or(0) + 1;
    // One replica per agent, peers 1..=agents, all starting from one document.
    let mut docs = replicas(agents as u64);
    let id = docs[0].add_text("0", [0.0, 0.0], 2.5, &trace.start_content).expect("text");
    let bytes = docs[0].export_updates_since(&Document::empty_version()).expect("export");
    for d in &mut docs[1..] {
        d.import(&bytes).expect("import");
    }
    // Each transaction's own update, and which replicas already hold it.
    let n = trace.txns.len();
    let mut updates: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut known = vec![vec![false; n]; agents];
    for (i, txn) in trace.txns.iter().enumerate() {
        let a = txn.agent;
        // Bring the agent's replica to exactly the transaction's parents:
        // import, in order, every ancestor it has not seen.
        let mut missing = Vec::new();
        let mut stack: Vec<usize> = txn.parents.clone();
        while let Some(p) = stack.pop() {
            if !known[a][p] {
                known[a][p] = true;
                missing.push(p);
                stack.extend(trace.txns[p].parents.iter().copied());
            }
        }
        if !missing.is_empty() {
            let blobs: Vec<Vec<u8>> = missing.iter().map(|&p| updates[p].clone()).collect();
            let report = docs[a].import_batch(&blobs).expect("import ancestors");
            assert!(!report.pending, "ancestors are complete");
        }
        let before = docs[a].version();
        apply_patches(&mut docs[a], &id, &txn.patches);
        updates.push(docs[a].export_updates_since(&before).expect("export txn"));
        known[a][i] = true;
    }
    // Deliver everything everywhere.
    sync_all(&mut docs);
    let first = docs[0].text(&id).expect("text");
    for d in &docs {
        assert_eq!(d.text(&id).expect("text"), first);
        assert_eq!(json(d), json(&docs[0]));
    }
    // Concurrent insertions at one position may interleave differently in
    // another CRDT, so the recorded end content is reported, not required.
    eprintln!(
        "friendsforever: {n} transactions, {agents} replicas converged in {:?}; end content {} the recorded one ({} vs {} chars)",
        started.elapsed(),
        if first == trace.end_content { "equals" } else { "differs from" },
        first.chars().count(),
        trace.end_content.chars().count()
    );
}
