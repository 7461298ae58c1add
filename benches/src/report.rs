//! The results table and `results/latest.json`, from the JSON lines that the
//! other subcommands printed.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Map, Value, json};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// File of JSON lines (kv, failover, rss and files records).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the results JSON.
    #[arg(long)]
    output: PathBuf,
    /// Extra `key=value` facts for the JSON's `meta` object.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

const SYSTEMS: [&str; 2] = ["caddy", "etcd"];

fn find(records: &[Value], pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    records.iter().rev().find(|r| pred(r))
}

fn num(v: Option<&Value>, field: &str) -> Option<f64> {
    v.and_then(|v| v.get(field)).and_then(Value::as_f64)
}

fn ratio(caddy: Option<f64>, etcd: Option<f64>) -> Option<f64> {
    match (caddy, etcd) {
        (Some(c), Some(e)) if e > 0.0 => Some(c / e),
        _ => None,
    }
}

fn fmt_num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn round(v: Option<f64>, decimals: i32) -> Value {
    let scale = 10f64.powi(decimals);
    v.map_or(Value::Null, |v| json!((v * scale).round() / scale))
}

struct Table {
    text: String,
    rows: Vec<Value>,
}

impl Table {
    fn row(
        &mut self,
        section: &str,
        metric: &str,
        caddy: Option<f64>,
        etcd: Option<f64>,
        decimals: usize,
        better: &str,
    ) {
        let r = ratio(caddy, etcd);
        let _ = writeln!(
            self.text,
            "{:<28} {:<18} {:>11} {:>11} {:>11}",
            section,
            metric,
            fmt_num(caddy, decimals),
            fmt_num(etcd, decimals),
            r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x")),
        );
        self.rows.push(json!({
            "workload": section.trim(),
            "metric": metric,
            "caddy": round(caddy, 3),
            "etcd": round(etcd, 3),
            "ratio_caddy_over_etcd": round(r, 3),
            "better": better,
        }));
    }

    fn note(&mut self, line: &str) {
        let _ = writeln!(self.text, "{line}");
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let records: Vec<Value> =
        text.lines().filter(|l| l.trim_start().starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut meta = Map::new();
    for kv in &args.meta {
        if let Some((k, v)) = kv.split_once('=') {
            meta.insert(k.to_string(), json!(v));
        }
    }

    let mut t = Table { text: String::new(), rows: Vec::new() };
    t.note(&format!("{:<28} {:<18} {:>11} {:>11} {:>11}", "workload", "metric", "CADDY", "etcd", "CADDY/etcd"));
    t.note(&"-".repeat(83));

    // kv workloads, in the order they ran.
    let mut workloads: Vec<(String, u64)> = Vec::new();
    for r in &records {
        if r.get("kind").and_then(Value::as_str) == Some("kv") {
            let mode = r.get("mode").and_then(Value::as_str).unwrap_or("?").to_string();
            let clients = r.get("clients").and_then(Value::as_u64).unwrap_or(0);
            if !workloads.contains(&(mode.clone(), clients)) {
                workloads.push((mode, clients));
            }
        }
    }
    for (mode, clients) in &workloads {
        let get = |system: &str| {
            find(&records, |r| {
                r.get("kind").and_then(Value::as_str) == Some("kv")
                    && r.get("system").and_then(Value::as_str) == Some(system)
                    && r.get("mode").and_then(Value::as_str) == Some(mode)
                    && r.get("clients").and_then(Value::as_u64) == Some(*clients)
            })
        };
        let (c, e) = (get("caddy"), get("etcd"));
        let what = if mode == "read" { "lin. read" } else { "write" };
        let section = format!("{what}, {clients} client{}", if *clients == 1 { "" } else { "s" });
        t.row(&section, "throughput ops/s", num(c, "throughput"), num(e, "throughput"), 0, "higher");
        let ms = |v: Option<&Value>, f: &str| num(v, f).map(|us| us / 1000.0);
        t.row("", "p50 ms", ms(c, "p50_us"), ms(e, "p50_us"), 2, "lower");
        t.row("", "p99 ms", ms(c, "p99_us"), ms(e, "p99_us"), 2, "lower");
        let (ce, ee) = (num(c, "errors"), num(e, "errors"));
        if ce.unwrap_or(0.0) > 0.0 || ee.unwrap_or(0.0) > 0.0 {
            t.row("", "errors", ce, ee, 0, "lower");
        }
    }

    let fo = |system: &str| {
        find(&records, |r| {
            r.get("kind").and_then(Value::as_str) == Some("failover")
                && r.get("system").and_then(Value::as_str) == Some(system)
        })
    };
    let (fc, fe) = (fo("caddy"), fo("etcd"));
    if fc.is_some() || fe.is_some() {
        let clients = num(fc.or(fe), "clients").unwrap_or(0.0);
        let section = format!("leader kill -9 ({clients:.0} writers)");
        t.row(&section, "recovery p50 ms", num(fc, "recovery_p50_ms"), num(fe, "recovery_p50_ms"), 1, "lower");
        t.row("", "recovery p99 ms", num(fc, "recovery_p99_ms"), num(fe, "recovery_p99_ms"), 1, "lower");
        t.row("", "new leader p50 ms", num(fc, "elected_p50_ms"), num(fe, "elected_p50_ms"), 1, "lower");
        let recovered = |v: Option<&Value>| match (num(v, "recovered"), num(v, "kills")) {
            (Some(r), Some(k)) => format!("{r:.0}/{k:.0}"),
            _ => "-".into(),
        };
        let _ = writeln!(t.text, "{:<28} {:<18} {:>11} {:>11}", "", "recovered/kills", recovered(fc), recovered(fe));
    }

    let rss = |system: &str, label: &str, field: &str| {
        num(
            find(&records, |r| {
                r.get("kind").and_then(Value::as_str) == Some("rss")
                    && r.get("system").and_then(Value::as_str) == Some(system)
                    && r.get("label").and_then(Value::as_str) == Some(label)
            }),
            field,
        )
    };
    for (label, section) in
        [("idle", "RSS idle"), ("load", "RSS after 64-client writes"), ("after-reads", "RSS after 64-client reads")]
    {
        if rss("caddy", label, "avg_mib").is_some() || rss("etcd", label, "avg_mib").is_some() {
            t.row(section, "MiB avg/node", rss("caddy", label, "avg_mib"), rss("etcd", label, "avg_mib"), 1, "lower");
            t.row("", "MiB largest node", rss("caddy", label, "max_mib"), rss("etcd", label, "max_mib"), 1, "lower");
        }
    }

    // The kv/failover/rss table only when one of them ran.
    if t.rows.is_empty() {
        t.text.clear();
    }
    let files = find(&records, |r| r.get("bench").and_then(Value::as_str) == Some("files"));
    let files_rows = files.map(|f| files_table(&mut t, f)).unwrap_or_default();

    print!("{}", t.text);
    let failed: Vec<&Value> =
        records.iter().filter(|r| r.get("kind").and_then(Value::as_str) == Some("failed")).collect();
    for f in &failed {
        println!("FAILED STEP: {f}");
    }
    let by_system = |kind: &str| -> Value {
        SYSTEMS
            .iter()
            .map(|s| {
                let v = find(&records, |r| {
                    r.get("kind").and_then(Value::as_str) == Some(kind)
                        && r.get("system").and_then(Value::as_str) == Some(*s)
                });
                (s.to_string(), v.cloned().unwrap_or(Value::Null))
            })
            .collect::<Map<String, Value>>()
            .into()
    };
    let out = json!({
        "meta": meta,
        "table": t.text,
        "summary": t.rows,
        "failover": by_system("failover"),
        "files": files.cloned().unwrap_or(Value::Null),
        "files_summary": files_rows,
        "failed_steps": failed,
        "runs": records,
    });
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, serde_json::to_string_pretty(&out)? + "\n")
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}

/// The "Files" table (MB/s of CADDY and of the TCP+TLS baseline, and their
/// ratio, per size and direction) from a `files` record; returns its rows.
fn files_table(t: &mut Table, f: &Value) -> Vec<Value> {
    let mut rows = Vec::new();
    if !t.text.is_empty() {
        t.note("");
    }
    t.note(&format!(
        "{:<28} {:<18} {:>11} {:>11} {:>11}",
        "files (MB = 10^6 B)", "metric", "CADDY", "TCP+TLS", "CADDY/TLS"
    ));
    t.note(&"-".repeat(83));
    let sizes: Vec<u64> = f
        .get("sizes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    for size in sizes {
        let key = size.to_string();
        let get = |system: &str, field: &str| {
            f.get(system).and_then(|s| s.get(field)).and_then(|m| m.get(&key)).and_then(Value::as_f64)
        };
        let rounds = f.get("rounds").and_then(|r| r.get(&key)).and_then(Value::as_u64).unwrap_or(0);
        let label = if size % 1_000_000 == 0 { format!("{} MB", size / 1_000_000) } else { format!("{size} B") };
        let mut section = format!("{label} file, median of {rounds}");
        for (direction, field) in [("upload", "upload_mb_s"), ("download", "download_mb_s")] {
            let (c, b) = (get("caddy", field), get("tcp_tls", field));
            let r = ratio(c, b);
            let _ = writeln!(
                t.text,
                "{:<28} {:<18} {:>11} {:>11} {:>11}",
                section,
                format!("{direction} MB/s"),
                fmt_num(c, 1),
                fmt_num(b, 1),
                r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x")),
            );
            rows.push(json!({
                "size": size,
                "direction": direction,
                "caddy_mb_s": round(c, 3),
                "tcp_tls_mb_s": round(b, 3),
                "ratio_caddy_over_tcp_tls": round(r, 3),
            }));
            section.clear();
        }
    }
    rows
}
