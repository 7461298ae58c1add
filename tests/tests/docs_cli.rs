//! The README's CAD documents walkthrough through `caddyctl` on a real
//! 3-node cluster: create, scripted edits, tags, a live watch, history, SVG
//! and JSON export (now and at a tag), rename, trash and restore, and bad
//! input that changes nothing.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{Dev, bin};

const WALLS: &str = r##"[
  {"op": "add_layer", "id": "walls", "name": "Walls", "color": "#aa0000", "line_weight": 0.5},
  {"op": "add", "kind": "polyline", "layer": "walls", "vertices": [[0,0],[8000,0],[8000,5000],[0,5000]], "closed": true},
  {"op": "add", "kind": "circle", "id": "column", "layer": "walls", "center": [4000, 2500], "radius": 200},
  {"op": "add", "kind": "text", "id": "label", "position": [300, 300], "height": 250, "content": "Living room"},
  {"op": "add", "kind": "radial_dim", "target": "column", "angle": 45}
]"##;

fn column_radius(json: &str) -> f64 {
    let doc: serde_json::Value = serde_json::from_str(json).expect("export json");
    let column = doc["entities"].as_array().expect("entities").iter().find(|e| e["id"] == "column").expect("column");
    column["geometry"]["radius"].as_f64().or_else(|| column["radius"].as_f64()).expect("radius")
}

#[test]
fn documents_walkthrough_through_the_cli() {
    let mut dev = Dev::start(3, &[]);
    dev.ctl_ok(&["tenant", "create", "acme", "--name", "Acme Corp"]);
    let acme = |args: &[&str]| {
        let mut all = vec!["--tenant", "acme"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dev.ctl_ok(&refs)
    };
    let created = run(acme(&["doc", "create", "Ground floor", "--units", "mm"]));
    let id = created.split_whitespace().nth(1).expect("id").to_string();
    assert!(created.starts_with("created doc-"), "{created}");

    let dir = tempfile::tempdir().expect("tmp");
    let walls = dir.path().join("walls.json");
    std::fs::write(&walls, WALLS).expect("write");
    let applied = run(acme(&["doc", "apply", &id, walls.to_str().expect("path")]));
    assert!(applied.contains(&format!("applied 5 operations to {id} (change 1)")), "{applied}");
    let tagged = run(acme(&["doc", "tag", &id, "first-draft"]));
    assert!(tagged.contains("tagged change 1"), "{tagged}");

    // A live watcher sees the next change as it is committed.
    let mut watcher = Command::new(bin("caddyctl"))
        .args(["--config", dev.client_toml().to_str().expect("path"), "--tenant", "acme", "doc", "watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    let (tx, rx) = mpsc::channel();
    let stdout = watcher.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("catch-up line");
    assert!(first.starts_with("update seq=1 "), "{first}");
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).expect("caught-up"), "caught-up seq=1");
    let set = r#"[{"op": "set", "id": "column", "set": {"radius": 300}}]"#;
    let applied = dev.ctl_in_ok(&["--tenant", "acme", "doc", "apply", &id, "-"], set);
    assert!(applied.contains("(change 2)"), "{applied}");
    let live = rx.recv_timeout(Duration::from_secs(20)).expect("live update");
    assert_eq!(live, "update seq=2 author=operator entities=4");
    let _ = watcher.kill();
    let _ = watcher.wait();

    let history = run(acme(&["doc", "history", &id]));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{history}");
    assert!(rows[0].contains("create") && rows[1].contains("update") && rows[2].contains("update"), "{history}");

    let svg = dir.path().join("floor.svg");
    run(acme(&["doc", "export", &id, "--format", "svg", "-o", svg.to_str().expect("path")]));
    let svg = std::fs::read_to_string(svg).expect("svg");
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("Living room") && svg.contains("#aa0000"), "the SVG lacks the text or the layer colour");
    let now = run(acme(&["doc", "export", &id, "--format", "json"]));
    let draft = run(acme(&["doc", "export", &id, "--format", "json", "--at", "first-draft"]));
    assert_eq!((column_radius(&draft), column_radius(&now)), (200.0, 300.0));

    run(acme(&["doc", "rename", &id, "Ground floor v2"]));
    assert!(run(acme(&["doc", "get", &id])).contains("Ground floor v2"));
    run(acme(&["doc", "delete", &id]));
    assert!(!run(acme(&["doc", "list"])).contains(&id));
    assert!(run(acme(&["doc", "list", "--deleted"])).contains(&id));
    let refused = dev.ctl(&["--tenant", "acme", "doc", "export", &id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("failed_precondition"), "{refused:?}");
    run(acme(&["doc", "restore", &id]));

    // Bad input: a typed error, nothing applied.
    let before = run(acme(&["doc", "history", &id, "--json"]));
    for (input, expect) in [
        ("not json", "expected an array"),
        (r#"[{"op": "set", "id": "no-such-entity", "set": {"radius": 1}}]"#, "nothing applied"),
        (r#"[{"op": "add", "kind": "circle", "center": [0, 0], "radius": -5}]"#, "nothing applied"),
    ] {
        let out = dev.ctl_in(&["--tenant", "acme", "doc", "apply", &id, "-"], input);
        assert!(!out.status.success(), "{input} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{input}: {err}");
    }
    assert_eq!(run(acme(&["doc", "history", &id, "--json"])), before);
    let missing = dev.ctl(&["--tenant", "acme", "doc", "get", "doc-999"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"), "{missing:?}");
    dev.stop();
}
