//! Drives the `caddyctl` binary against an in-process fake server that
//! speaks the client protocol with a tiny in-memory key-value map: exit
//! codes, output formats and error lines, without a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use caddy_wire::pb::{self, request::Body as Req, response::Body as Resp};
use caddy_wire::{read_frame, write_frame};
use tokio::sync::broadcast;

const CREDENTIAL: &str = "caddy_admin_cli_test";

#[derive(Default)]
struct Store {
    kvs: BTreeMap<String, pb::KeyValue>,
    revision: u64,
    events: Vec<pb::WatchEvent>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<pb::WatchEvent>,
}

fn resp(body: Resp) -> pb::Response {
    pb::Response { leader_client_addr: String::new(), body: Some(body) }
}

fn error(code: pb::ErrorCode, message: &str, current_revision: Option<u64>) -> pb::Response {
    resp(Resp::Error(pb::Error { code: code as i32, message: message.into(), current_revision, leader_hint: None }))
}

fn answer(shared: &Shared, req: pb::Request) -> Vec<pb::Response> {
    if req.credential != CREDENTIAL {
        return vec![error(pb::ErrorCode::Unauthenticated, "bad credential", None)];
    }
    let mut store = shared.store.lock().unwrap();
    let revision = store.revision;
    let record = |store: &mut Store, kind: pb::watch_event::Kind, kv: pb::KeyValue| {
        let event = pb::WatchEvent { kind: kind as i32, revision: store.revision, kv: Some(kv) };
        store.events.push(event.clone());
        let _ = shared.events.send(event);
    };
    match req.body {
        Some(Req::Put(p)) => {
            let current = store.kvs.get(&p.key).map_or(0, |kv| kv.mod_revision);
            if let Some(expected) = p.if_revision
                && expected != current
            {
                return vec![error(pb::ErrorCode::FailedPrecondition, "revision mismatch", Some(current))];
            }
            store.revision += 1;
            let rev = store.revision;
            let previous = store.kvs.get(&p.key).cloned();
            let kv = pb::KeyValue {
                key: p.key.clone(),
                value: p.value,
                create_revision: previous.as_ref().map_or(rev, |kv| kv.create_revision),
                mod_revision: rev,
                version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            };
            store.kvs.insert(p.key, kv.clone());
            record(&mut store, pb::watch_event::Kind::Put, kv);
            vec![resp(Resp::Put(pb::PutResponse { revision: rev, previous }))]
        }
        Some(Req::Get(g)) => vec![resp(Resp::Get(pb::GetResponse { kv: store.kvs.get(&g.key).cloned(), revision }))],
        Some(Req::Delete(d)) => match store.kvs.remove(&d.key) {
            Some(kv) => {
                store.revision += 1;
                let rev = store.revision;
                record(&mut store, pb::watch_event::Kind::Delete, pb::KeyValue { key: kv.key, ..Default::default() });
                vec![resp(Resp::Delete(pb::DeleteResponse { revision: rev, deleted: true }))]
            }
            None => vec![resp(Resp::Delete(pb::DeleteResponse { revision, deleted: false }))],
        },
        Some(Req::List(l)) => {
            let limit = if l.limit == 0 { 100 } else { l.limit as usize };
            let mut matching =
                store.kvs.values().filter(|kv| kv.key.starts_with(&l.prefix) && kv.key > l.start_after).cloned();
            let kvs: Vec<_> = matching.by_ref().take(limit).collect();
            let more = matching.next().is_some();
            vec![resp(Resp::List(pb::ListResponse { kvs, more, revision }))]
        }
        Some(Req::Status(_)) => vec![resp(Resp::Status(pb::StatusResponse {
            cluster_node: 1,
            term: 3,
            leader: Some(1),
            commit_index: 10,
            applied_index: 10,
            revision,
            last_log_index: 10,
            snapshot_index: None,
            members: vec![pb::MemberStatus {
                id: 1,
                raft_addr: "127.0.0.1:7001".into(),
                client_addr: "127.0.0.1:7101".into(),
                admin_addr: String::new(),
                role: "voter".into(),
                leader: true,
                lag: Some(0),
                health: "healthy".into(),
            }],
        }))],
        Some(Req::JoinToken(t)) => vec![resp(Resp::JoinToken(pb::JoinTokenResponse {
            token: format!("tok-{}", t.ttl_seconds),
            expires_at_ms: 1,
        }))],
        Some(Req::AddNode(_)) => {
            vec![resp(Resp::Membership(pb::MembershipResponse { voters: vec![1, 2], learners: vec![] }))]
        }
        Some(Req::Backup(_)) => {
            let chunk = |data: &[u8], total, last| {
                resp(Resp::BackupChunk(pb::BackupChunk { total_bytes: total, data: data.to_vec(), last }))
            };
            vec![chunk(b"backup-", 11, false), chunk(b"data", 0, true)]
        }
        _ => vec![error(pb::ErrorCode::InvalidArgument, "unsupported by the fake", None)],
    }
}

async fn handle(shared: Arc<Shared>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(req) = read_frame::<pb::Request, _>(&mut recv, 1 << 20).await else {
        return;
    };
    if let Some(Req::Watch(w)) = &req.body {
        let (backlog, mut live) = {
            let store = shared.store.lock().unwrap();
            let live = shared.events.subscribe();
            let backlog: Vec<_> = if w.from_revision == 0 {
                Vec::new()
            } else {
                store.events.iter().filter(|e| e.revision >= w.from_revision).cloned().collect()
            };
            (backlog, live)
        };
        let prefix = w.prefix.clone();
        let matches = |e: &pb::WatchEvent| e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix));
        for event in backlog.into_iter().filter(|e| matches(e)) {
            if write_frame(&mut send, &resp(Resp::WatchEvent(event))).await.is_err() {
                return;
            }
        }
        while let Ok(event) = live.recv().await {
            if matches(&event) && write_frame(&mut send, &resp(Resp::WatchEvent(event))).await.is_err() {
                return;
            }
        }
        return;
    }
    for response in answer(&shared, req) {
        if write_frame(&mut send, &response).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

struct Fake {
    dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Fake {
    fn start() -> Fake {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let ca = caddy_wire::tls::generate_ca().unwrap();
        let node = caddy_wire::tls::issue_node_cert(&ca, 1, &[]).unwrap();
        let tls = caddy_wire::tls::server_config(&node, &[caddy_wire::ALPN]).unwrap();
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap()
        };
        let addr = endpoint.local_addr().unwrap();
        let shared = Arc::new(Shared { store: Mutex::new(Store::default()), events: broadcast::channel(1024).0 });
        runtime.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(handle(Arc::clone(&shared), send, recv));
                    }
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).unwrap();
        std::fs::write(
            dir.path().join("client.toml"),
            format!("endpoints = [\"{addr}\"]\nca_cert = \"ca.pem\"\ncredential = \"{CREDENTIAL}\"\n"),
        )
        .unwrap();
        Fake { dir, _runtime: runtime }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("client.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_caddyctl"));
        cmd.arg("--config").arg(self.config()).args(args).env_remove("CADDY_CONFIG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status.code(), stderr(&o));
    stdout(&o)
}

fn fails(o: Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err.trim_end().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn kv_round_trip() {
    let fake = Fake::start();
    assert_eq!(ok(fake.run(&["kv", "put", "a", "hello"])), "OK revision=1\n");
    assert_eq!(ok(fake.run(&["kv", "get", "a"])), "hello\n");
    assert_eq!(ok(fake.run(&["kv", "get", "a", "--serializable"])), "hello\n");
    let got = json(&ok(fake.run(&["--json", "kv", "get", "a"])));
    assert_eq!(got["key"], "a");
    assert_eq!(got["value"], "hello");
    assert_eq!(got["mod_revision"], 1);
    assert_eq!(got["version"], 1);

    let put = json(&ok(fake.run(&["kv", "put", "a", "again", "--json", "--if-revision", "1"])));
    assert_eq!(put["revision"], 2);
    assert_eq!(put["previous"]["value"], "hello");
    let err = fails(fake.run(&["kv", "put", "a", "x", "--if-revision", "1"]));
    assert_eq!(err, "error: failed_precondition: revision mismatch (current revision 2)");

    assert_eq!(fails(fake.run(&["kv", "get", "nokey"])), "error: key not found: nokey");
    assert!(fake.run(&["kv", "get", "nokey"]).stdout.is_empty());

    assert_eq!(ok(fake.run(&["kv", "del", "a"])), "deleted revision=3\n");
    let del = json(&ok(fake.run(&["--json", "kv", "del", "a"])));
    assert_eq!(del["deleted"], false);
}

#[test]
fn list_pages_with_all() {
    let fake = Fake::start();
    for key in ["p/1", "p/2", "p/3", "q/1"] {
        ok(fake.run(&["kv", "put", key, "v"]));
    }
    let one_page = fake.run(&["kv", "list", "p/", "--limit", "2"]);
    let text = ok(one_page);
    assert_eq!(text.lines().count(), 3, "{text}");
    let all = json(&ok(fake.run(&["--json", "kv", "list", "p/", "--limit", "2", "--all"])));
    let keys: Vec<_> =
        all["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, ["p/1", "p/2", "p/3"]);
    assert_eq!(all["more"], false);
    let text = ok(fake.run(&["kv", "list"]));
    assert!(text.starts_with("KEY  MOD REV  VERSION  VALUE\np/1  1        1        v\n"), "{text}");
}

#[test]
fn cluster_commands() {
    let fake = Fake::start();
    let text = ok(fake.run(&["cluster", "status"]));
    assert!(text.contains("term:           3\n"), "{text}");
    assert!(text.contains("1   127.0.0.1:7001  127.0.0.1:7101  voter  *       0    healthy"), "{text}");
    let status = json(&ok(fake.run(&["cluster", "status", "--json"])));
    assert_eq!(status["members"][0]["role"], "voter");
    assert_eq!(ok(fake.run(&["cluster", "join-token", "--ttl", "2m"])), "tok-120\n");
    assert_eq!(ok(fake.run(&["cluster", "add-node", "127.0.0.1:7003"])), "voters=1,2 learners=-\n");

    let out = fake.dir.path().join("backup.bin");
    let text = ok(fake.run(&["cluster", "backup", "-o", out.to_str().unwrap()]));
    assert_eq!(text, format!("wrote 11 bytes to {}\n", out.display()));
    assert_eq!(std::fs::read(&out).unwrap(), b"backup-data");
    assert!(!Path::new(&format!("{}.tmp", out.display())).exists());
    let backup = json(&ok(fake.run(&["--json", "cluster", "backup", "-o", out.to_str().unwrap()])));
    assert_eq!(backup["bytes"], 11);
}

#[test]
fn watch_prints_events_as_they_happen() {
    let fake = Fake::start();
    ok(fake.run(&["kv", "put", "w/old", "0"]));
    let mut child = fake
        .command(&["kv", "watch", "w/", "--from-revision", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/old=0 rev=1");
    ok(fake.run(&["kv", "put", "other", "x"]));
    ok(fake.run(&["kv", "put", "w/new", "1"]));
    ok(fake.run(&["kv", "del", "w/old"]));
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/new=1 rev=3");
    assert_eq!(lines.next().unwrap().unwrap(), "DELETE w/old rev=4");
    child.kill().unwrap();
    let _ = child.wait();

    // Without --from-revision: only events after the watch started.
    let mut child = fake.command(&["kv", "watch", "w/"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    std::thread::sleep(std::time::Duration::from_millis(800));
    ok(fake.run(&["kv", "put", "w/later", "2"]));
    assert_eq!(lines.next().unwrap().unwrap(), "PUT w/later=2 rev=5");
    child.kill().unwrap();
    let _ = child.wait();

    let mut child =
        fake.command(&["--json", "kv", "watch", "w/", "--from-revision", "3"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = json(&lines.next().unwrap().unwrap());
    assert_eq!(
        (first["kind"].as_str(), first["key"].as_str(), first["revision"].as_u64()),
        (Some("PUT"), Some("w/new"), Some(3))
    );
    let second = json(&lines.next().unwrap().unwrap());
    assert_eq!(second["kind"], "DELETE");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn bench_reports_json() {
    let fake = Fake::start();
    let report = json(&ok(fake.run(&[
        "--json",
        "bench",
        "kv",
        "--clients",
        "2",
        "--duration",
        "500ms",
        "--keys",
        "5",
        "--read-ratio",
        "0.5",
    ])));
    assert!(report["ops"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0);
    let text = ok(fake.run(&["bench", "kv", "--clients", "1", "--duration", "200ms", "--value-size", "8"]));
    assert!(text.starts_with("throughput: "), "{text}");
    assert!(text.contains(" ms  p99 "), "{text}");
}

#[test]
fn errors_are_one_line() {
    let fake = Fake::start();
    let err = fails(
        Command::new(env!("CARGO_BIN_EXE_caddyctl"))
            .args(["--config", "/nonexistent/c.toml", "cluster", "status"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("/nonexistent/c.toml"), "{err}");

    let bad = fake.dir.path().join("bad.toml");
    std::fs::write(&bad, "endpoints = [\"127.0.0.1:1\"]\nca_cert = \"ca.pem\"\ncredential = \"wrong\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["--config", bad.to_str().unwrap(), "--timeout", "300ms", "kv", "get", "k"])
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.starts_with("error: unavailable: "), "{err}");

    // Wrong credential against the live fake: a typed error, not retried.
    let wrong = fake.dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(fake.config()).unwrap().replace(CREDENTIAL, "nope");
    std::fs::write(&wrong, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["--config", wrong.to_str().unwrap(), "kv", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(fails(out), "error: unauthenticated: bad credential");

    let usage = fake.run(&["kv", "frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let help = fake.run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));

    // CADDY_CONFIG is honoured when --config is absent.
    let out = Command::new(env!("CARGO_BIN_EXE_caddyctl"))
        .args(["kv", "put", "env", "1"])
        .env("CADDY_CONFIG", fake.config())
        .output()
        .unwrap();
    assert_eq!(ok(out), "OK revision=1\n");
}
