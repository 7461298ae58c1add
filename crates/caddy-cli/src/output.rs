//! Rendering of responses: aligned tables and lines for people, JSON for
//! machines. Pure functions, so they are tested without a cluster.

use caddy_client::pb;
use serde_json::{Value, json};

/// Collapses a multi-line message into one line.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value as text: lossy UTF-8.
pub fn value_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// A value for a one-line human rendering: lossy UTF-8 with control
/// characters escaped, so one record stays on one line.
pub fn value_inline(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Columns aligned with two spaces between them; no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.trim_end().to_string()
    };
    let mut out = render(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A key-value record as JSON: `value` is lossy UTF-8, and `value_hex`
/// carries the exact bytes when they are not valid UTF-8.
pub fn kv_json(kv: &pb::KeyValue) -> Value {
    let mut obj = json!({
        "key": kv.key,
        "value": value_text(&kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    if std::str::from_utf8(&kv.value).is_err() {
        obj["value_hex"] = Value::String(hex(&kv.value));
    }
    obj
}

/// `kv list` as a table.
pub fn list_text(kvs: &[pb::KeyValue]) -> String {
    let rows: Vec<Vec<String>> = kvs
        .iter()
        .map(|kv| vec![kv.key.clone(), kv.mod_revision.to_string(), kv.version.to_string(), value_inline(&kv.value)])
        .collect();
    table(&["KEY", "MOD REV", "VERSION", "VALUE"], &rows)
}

/// `kv list` as JSON.
pub fn list_json(kvs: &[pb::KeyValue], more: bool, revision: u64) -> Value {
    json!({ "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(), "more": more, "revision": revision })
}

fn event_kind(event: &pb::WatchEvent) -> String {
    match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Put) => "PUT".into(),
        Ok(pb::watch_event::Kind::Delete) => "DELETE".into(),
        Err(_) => format!("UNKNOWN({})", event.kind),
    }
}

/// One watch event as a human line: `PUT key=value rev=N` / `DELETE key rev=N`.
pub fn event_line(event: &pb::WatchEvent) -> String {
    let kind = event_kind(event);
    let key = event.kv.as_ref().map_or("", |kv| kv.key.as_str());
    match pb::watch_event::Kind::try_from(event.kind) {
        Ok(pb::watch_event::Kind::Delete) => format!("DELETE {key} rev={}", event.revision),
        _ => {
            let value = event.kv.as_ref().map(|kv| value_inline(&kv.value)).unwrap_or_default();
            format!("{kind} {key}={value} rev={}", event.revision)
        }
    }
}

/// One watch event as a JSON object (one line).
pub fn event_json(event: &pb::WatchEvent) -> Value {
    let mut obj = match &event.kv {
        Some(kv) => kv_json(kv),
        None => json!({ "key": "" }),
    };
    obj["kind"] = Value::String(event_kind(event));
    obj["revision"] = json!(event.revision);
    if pb::watch_event::Kind::try_from(event.kind) == Ok(pb::watch_event::Kind::Delete)
        && let Some(map) = obj.as_object_mut()
    {
        for field in ["value", "value_hex", "create_revision", "mod_revision", "version"] {
            map.remove(field);
        }
    }
    obj
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `cluster status` for people: a header block, then one row per member.
pub fn status_text(status: &pb::StatusResponse) -> String {
    let header = [
        ("node", status.cluster_node.to_string()),
        ("term", status.term.to_string()),
        ("leader", opt(status.leader)),
        ("commit index", status.commit_index.to_string()),
        ("applied index", status.applied_index.to_string()),
        ("last log index", status.last_log_index.to_string()),
        ("snapshot index", opt(status.snapshot_index)),
        ("revision", status.revision.to_string()),
    ];
    let width = header.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in header {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.raft_addr.clone(),
                m.client_addr.clone(),
                m.role.clone(),
                if m.leader { "*".into() } else { String::new() },
                opt(m.lag),
                m.health.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "RAFT ADDR", "CLIENT ADDR", "ROLE", "LEADER", "LAG", "HEALTH"], &rows));
    out
}

/// `cluster status` as JSON.
pub fn status_json(status: &pb::StatusResponse) -> Value {
    json!({
        "cluster_node": status.cluster_node,
        "term": status.term,
        "leader": status.leader,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_log_index": status.last_log_index,
        "snapshot_index": status.snapshot_index,
        "revision": status.revision,
        "members": status.members.iter().map(|m| json!({
            "id": m.id,
            "raft_addr": m.raft_addr,
            "client_addr": m.client_addr,
            "admin_addr": m.admin_addr,
            "role": m.role,
            "leader": m.leader,
            "lag": m.lag,
            "health": m.health,
        })).collect::<Vec<_>>(),
    })
}

fn ids(ids: &[u64]) -> String {
    if ids.is_empty() { "-".into() } else { ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",") }
}

/// A membership answer for people.
pub fn membership_text(m: &pb::MembershipResponse) -> String {
    format!("voters={} learners={}", ids(&m.voters), ids(&m.learners))
}

/// A membership answer as JSON.
pub fn membership_json(m: &pb::MembershipResponse) -> Value {
    json!({ "voters": m.voters, "learners": m.learners })
}

/// Latency in milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// `bench kv` results for people.
pub fn bench_text(report: &caddy_client::LoadReport) -> String {
    format!(
        "throughput: {:.1} ops/s ({} ops, {} errors in {:.2}s)\nlatency:    p50 {} ms  p90 {} ms  p99 {} ms  max {} ms\n",
        report.throughput,
        report.ops,
        report.errors,
        report.elapsed_secs,
        ms(report.p50_us),
        ms(report.p90_us),
        ms(report.p99_us),
        ms(report.max_us),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8]) -> pb::KeyValue {
        pb::KeyValue { key: key.into(), value: value.to_vec(), create_revision: 2, mod_revision: 5, version: 3 }
    }

    #[test]
    fn tables_align_without_trailing_spaces() {
        let t = table(&["A", "LONG HEADER", "C"], &[vec!["wide cell".into(), "x".into(), String::new()]]);
        assert_eq!(t, "A          LONG HEADER  C\nwide cell  x\n");
    }

    #[test]
    fn kv_json_marks_binary_values() {
        let text = kv_json(&kv("a", b"hello"));
        assert_eq!(text["value"], "hello");
        assert_eq!(text["mod_revision"], 5);
        assert!(text.get("value_hex").is_none());
        let binary = kv_json(&kv("b", &[0xff, 0x00, 0x41]));
        assert_eq!(binary["value_hex"], "ff0041");
        assert_eq!(binary["value"], "\u{fffd}\u{0}A");
        assert_eq!(binary["create_revision"], 2);
        assert_eq!(binary["version"], 3);
    }

    #[test]
    fn watch_lines() {
        let put = pb::WatchEvent { kind: pb::watch_event::Kind::Put as i32, kv: Some(kv("k", b"v\n1")), revision: 9 };
        assert_eq!(event_line(&put), "PUT k=v\\n1 rev=9");
        let del = pb::WatchEvent { kind: pb::watch_event::Kind::Delete as i32, kv: Some(kv("k", b"")), revision: 10 };
        assert_eq!(event_line(&del), "DELETE k rev=10");
        let json = event_json(&put);
        assert_eq!(
            (json["kind"].as_str(), json["key"].as_str(), json["value"].as_str()),
            (Some("PUT"), Some("k"), Some("v\n1"))
        );
        assert_eq!(json["revision"], 9);
        let json = event_json(&del);
        assert_eq!(json["kind"], "DELETE");
        assert!(json.get("value").is_none());
        assert!(!serde_json::to_string(&json).unwrap().contains('\n'));
    }

    #[test]
    fn status_rendering() {
        let status = pb::StatusResponse {
            cluster_node: 1,
            term: 4,
            leader: Some(2),
            commit_index: 120,
            applied_index: 119,
            revision: 57,
            last_log_index: 121,
            snapshot_index: None,
            members: vec![
                pb::MemberStatus {
                    id: 1,
                    raft_addr: "127.0.0.1:7001".into(),
                    client_addr: "127.0.0.1:7101".into(),
                    admin_addr: "127.0.0.1:7201".into(),
                    role: "voter".into(),
                    leader: false,
                    lag: Some(1),
                    health: "healthy".into(),
                },
                pb::MemberStatus {
                    id: 2,
                    raft_addr: "127.0.0.1:7002".into(),
                    client_addr: "127.0.0.1:7102".into(),
                    admin_addr: String::new(),
                    role: "voter".into(),
                    leader: true,
                    lag: None,
                    health: "healthy".into(),
                },
            ],
        };
        let text = status_text(&status);
        assert!(text.starts_with("node:           1\nterm:           4\nleader:         2\n"), "{text}");
        assert!(text.contains("snapshot index: -\n"), "{text}");
        assert!(text.contains("\nID  RAFT ADDR       CLIENT ADDR     ROLE   LEADER  LAG  HEALTH\n"), "{text}");
        assert!(text.contains("\n1   127.0.0.1:7001  127.0.0.1:7101  voter          1    healthy\n"), "{text}");
        assert!(text.contains("\n2   127.0.0.1:7002  127.0.0.1:7102  voter  *       -    healthy\n"), "{text}");
        let json = status_json(&status);
        assert_eq!(json["leader"], 2);
        assert!(json["snapshot_index"].is_null());
        assert_eq!(json["members"][1]["leader"], true);
        assert!(json["members"][1]["lag"].is_null());
    }

    #[test]
    fn list_and_membership() {
        let text = list_text(&[kv("a", b"1"), kv("bb", b"two")]);
        assert_eq!(text, "KEY  MOD REV  VERSION  VALUE\na    5        3        1\nbb   5        3        two\n");
        let json = list_json(&[kv("a", b"1")], true, 8);
        assert_eq!(json["kvs"][0]["key"], "a");
        assert_eq!(json["more"], true);
        let m = pb::MembershipResponse { voters: vec![1, 2, 3], learners: vec![] };
        assert_eq!(membership_text(&m), "voters=1,2,3 learners=-");
        assert_eq!(membership_json(&m)["voters"][2], 3);
    }

    #[test]
    fn bench_and_misc() {
        let report = caddy_client::LoadReport {
            ops: 1000,
            errors: 2,
            elapsed_secs: 2.0,
            throughput: 500.0,
            p50_us: 1234,
            p90_us: 2000,
            p99_us: 10_500,
            max_us: 20_001,
        };
        let text = bench_text(&report);
        assert!(text.contains("throughput: 500.0 ops/s"), "{text}");
        assert!(text.contains("p50 1.23 ms  p90 2.00 ms  p99 10.50 ms  max 20.00 ms"), "{text}");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert_eq!(hex(&[0, 255]), "00ff");
    }
}
