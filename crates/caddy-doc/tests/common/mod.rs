//! Helpers shared by the integration tests.
#![allow(dead_code)]

use caddy_doc::{Document, Limits, NewDocument, Units};

/// A new document written by `peer`.
pub fn new_doc(peer: u64) -> Document {
    Document::new(
        peer,
        NewDocument {
            name: "test drawing".into(),
            units: Units::Millimeters,
            created_by: "alice".into(),
            created_at_ms: 1_700_000_000_000,
        },
        Limits::default(),
    )
    .expect("new document")
}

/// `n` replicas of one freshly created document, peers 1..=n.
pub fn replicas(n: u64) -> Vec<Document> {
    let first = new_doc(1);
    let snap = first.export_snapshot().expect("snapshot");
    let mut out = vec![first];
    for peer in 2..=n {
        out.push(Document::from_snapshot(&snap, peer, Limits::default()).expect("from snapshot"));
    }
    out
}

/// Sends `from`'s changes that `to` lacks.
pub fn send(from: &Document, to: &mut Document) {
    let bytes = from.export_updates_since(&to.version()).expect("export");
    to.import(&bytes).expect("import");
}

/// Two-way sync.
pub fn sync(a: &mut Document, b: &mut Document) {
    send(a, b);
    send(b, a);
}

/// Full sync of every replica with every other.
pub fn sync_all(docs: &mut [Document]) {
    for i in 0..docs.len() {
        for j in 0..docs.len() {
            if i != j {
                let bytes = docs[i].export_updates_since(&docs[j].version()).expect("export");
                docs[j].import(&bytes).expect("import");
            }
        }
    }
}

/// The resolved model as JSON, the thing replicas must agree on byte for byte.
pub fn json(d: &Document) -> String {
    serde_json::to_string(&d.resolve()).expect("serialize")
}
