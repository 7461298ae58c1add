//! In-process QUIC server tests: framing, TLS, failover, exactly-once lanes,
//! watch resumption and backups, without a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use caddy_wire::{read_frame, write_frame};
use futures::StreamExt;

use crate::pb::{self, request::Body as Req, response::Body as Resp};
use crate::{Client, ClientConfig, ClientError, ErrorCode, Outcome};

const CREDENTIAL: &str = "caddy_admin_test";

#[derive(Default)]
struct Log {
    /// (kind, key, client_id, sequence) of every request received.
    requests: Vec<(String, String, u64, u64)>,
    /// How many times each (client_id, sequence) write was seen.
    attempts: HashMap<(u64, u64), u32>,
    /// `from_revision` of every watch opened.
    watches: Vec<u64>,
}

struct TestServer {
    addr: SocketAddr,
    ca_pem: String,
    log: Arc<Mutex<Log>>,
    /// Connections accepted and not yet closed.
    open: Arc<AtomicUsize>,
    _endpoint: quinn::Endpoint,
}

fn error(code: pb::ErrorCode, message: &str) -> pb::Response {
    pb::Response {
        leader_client_addr: String::new(),
        body: Some(Resp::Error(pb::Error {
            code: code as i32,
            message: message.into(),
            current_revision: None,
            leader_hint: None,
            retry_after_ms: None,
        })),
    }
}

/// A refusal that says when the same request may succeed.
fn retry_later(message: &str, after_ms: u64) -> pb::Response {
    let mut response = error(pb::ErrorCode::ResourceExhausted, message);
    if let Some(Resp::Error(e)) = &mut response.body {
        e.retry_after_ms = Some(after_ms);
    }
    response
}

fn kv(key: &str, value: &[u8], rev: u64) -> pb::KeyValue {
    pb::KeyValue { key: key.into(), value: value.to_vec(), create_revision: rev, mod_revision: rev, version: 1 }
}

fn event(key: &str, rev: u64) -> pb::Response {
    pb::Response {
        leader_client_addr: String::new(),
        body: Some(Resp::WatchEvent(pb::WatchEvent {
            kind: pb::watch_event::Kind::Put as i32,
            kv: Some(kv(key, b"x", rev)),
            revision: rev,
        })),
    }
}

async fn start_server() -> TestServer {
    start_server_hinting(None, None).await
}

/// A server whose every answer names `leader` as the leader (as a follower
/// does), reusing `ca` when given so one client trusts several servers.
async fn start_server_hinting(leader: Option<String>, ca: Option<caddy_wire::tls::CaMaterial>) -> TestServer {
    let ca = ca.unwrap_or_else(|| caddy_wire::tls::generate_ca().unwrap());
    let node =
        caddy_wire::tls::issue_node_cert(&ca, caddy_wire::tls::NodeCertName { id: 1, generation: 1 }, &[]).unwrap();
    let tls = caddy_wire::tls::server_config(&node, &[caddy_wire::ALPN]).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let accept = endpoint.clone();
    let server_log = Arc::clone(&log);
    let open = Arc::new(AtomicUsize::new(0));
    let server_open = Arc::clone(&open);
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let log = Arc::clone(&server_log);
            let leader = leader.clone();
            let open = Arc::clone(&server_open);
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                open.fetch_add(1, Ordering::SeqCst);
                let closed = conn.clone();
                tokio::spawn(async move {
                    closed.closed().await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(handle(send, recv, Arc::clone(&log), leader.clone()));
                }
            });
        }
    });
    TestServer { addr, ca_pem: ca.cert_pem, log, open, _endpoint: endpoint }
}

async fn handle(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    log: Arc<Mutex<Log>>,
    leader: Option<String>,
) {
    let Ok(req) = read_frame::<pb::Request, _>(&mut recv, 1 << 20).await else {
        return;
    };
    let responses = answer(req, &log).await;
    for mut response in responses {
        response.leader_client_addr = leader.clone().unwrap_or_default();
        if write_frame(&mut send, &response).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

async fn answer(req: pb::Request, log: &Mutex<Log>) -> Vec<pb::Response> {
    if req.credential != CREDENTIAL {
        return vec![error(pb::ErrorCode::Unauthenticated, "bad credential")];
    }
    let (kind, key) = match &req.body {
        Some(Req::Put(p)) => ("put", p.key.clone()),
        Some(Req::Get(g)) => ("get", g.key.clone()),
        Some(Req::Delete(d)) => ("delete", d.key.clone()),
        Some(Req::Watch(w)) => ("watch", w.prefix.clone()),
        Some(Req::Backup(_)) => ("backup", String::new()),
        Some(Req::Status(_)) => ("status", String::new()),
        _ => ("other", String::new()),
    };
    let attempt = {
        let mut log = log.lock().unwrap();
        log.requests.push((kind.into(), key.clone(), req.client_id, req.sequence));
        let n = log.attempts.entry((req.client_id, req.sequence)).or_default();
        *n += 1;
        *n
    };
    match req.body {
        Some(Req::Get(g)) => {
            if req.client_id != 0 || req.sequence != 0 {
                return vec![error(pb::ErrorCode::InvalidArgument, "reads carry no lane")];
            }
            if g.key.starts_with("hang") {
                std::future::pending::<()>().await;
            }
            vec![pb::Response {
                leader_client_addr: String::new(),
                body: Some(Resp::Get(pb::GetResponse { kv: Some(kv(&g.key, b"canned", 4)), revision: 9 })),
            }]
        }
        Some(Req::Put(p)) => {
            if req.client_id == 0 || req.sequence == 0 {
                return vec![error(pb::ErrorCode::InvalidArgument, "writes need a lane")];
            }
            if p.key.starts_with("flaky") && attempt == 1 {
                return vec![error(pb::ErrorCode::Unavailable, "no leader yet")];
            }
            // Taken, never answered (a leader that lost its quorum).
            if p.key.starts_with("hang") {
                std::future::pending::<()>().await;
            }
            if p.key.starts_with("down") {
                return vec![error(pb::ErrorCode::Unavailable, "leadership changed before the write committed")];
            }
            if p.key.starts_with("busy") && attempt == 1 {
                return vec![retry_later("busy checking passwords", 300)];
            }
            if p.key.starts_with("throttled") {
                return vec![retry_later("too many failed logins", 60_000)];
            }
            // The first attempt is taken and never answered, or answered
            // UNAVAILABLE; the next ones are refused with a long retry-after.
            if p.key.starts_with("lost") || p.key.starts_with("deposed") {
                if attempt > 1 {
                    return vec![retry_later("too many failed logins", 60_000)];
                }
                if p.key.starts_with("lost") {
                    std::future::pending::<()>().await;
                }
                return vec![error(pb::ErrorCode::Unavailable, "leadership changed before the write committed")];
            }
            if p.key.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            vec![pb::Response {
                leader_client_addr: String::new(),
                body: Some(Resp::Put(pb::PutResponse {
                    revision: 10 + req.sequence,
                    previous: None,
                    previous_value_omitted: false,
                })),
            }]
        }
        Some(Req::Delete(_)) => vec![error(pb::ErrorCode::NotFound, "no such key")],
        Some(Req::List(_)) => {
            vec![pb::Response {
                leader_client_addr: String::new(),
                body: Some(Resp::List(pb::ListResponse { kvs: vec![], more: false, revision: 0 })),
            }]
        }
        Some(Req::Watch(w)) => {
            log.lock().unwrap().watches.push(w.from_revision);
            match w.from_revision {
                // First stream (from the revision listed + 1): two events,
                // then the stream ends (a "broken" watch).
                1 => vec![event("w/a", 1), event("w/b", 2)],
                // Resumed stream: one more event, then a typed error.
                3 => vec![event("w/c", 3), error(pb::ErrorCode::FailedPrecondition, "compacted")],
                _ => vec![error(pb::ErrorCode::InvalidArgument, "unexpected from_revision")],
            }
        }
        Some(Req::Backup(_)) => {
            let chunk = |data: &[u8], total: u64, last: bool| pb::Response {
                leader_client_addr: String::new(),
                body: Some(Resp::BackupChunk(pb::BackupChunk { total_bytes: total, data: data.to_vec(), last })),
            };
            vec![chunk(b"hello", 10, false), chunk(b"world", 0, true)]
        }
        // Wrong body on purpose, to exercise protocol checks.
        Some(Req::Status(_)) => {
            vec![pb::Response {
                leader_client_addr: String::new(),
                body: Some(Resp::Snapshot(pb::SnapshotResponse { index: 1, term: 1 })),
            }]
        }
        _ => vec![error(pb::ErrorCode::InvalidArgument, "unsupported")],
    }
}

fn config(endpoints: Vec<String>, ca_pem: &str) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints, ca_pem, CREDENTIAL);
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_millis(300);
    config
}

#[tokio::test]
async fn get_put_and_retry_on_unavailable_keep_the_lane() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();

    let got = client.get("k").await.unwrap();
    assert_eq!(got.revision, 9);
    assert_eq!(got.kv.unwrap().value, b"canned");

    let put = client.put("flaky1", "v").await.unwrap();
    assert_eq!(put.revision, 11);
    let put = client.put("flaky2", b"v".to_vec()).await.unwrap();
    assert_eq!(put.revision, 12);

    let log = server.log.lock().unwrap();
    let puts: Vec<_> = log.requests.iter().filter(|r| r.0 == "put").collect();
    assert_eq!(puts.len(), 4, "{puts:?}");
    let client_id = puts[0].2;
    assert_ne!(client_id, 0);
    // The retry after UNAVAILABLE reuses exactly the same pair; the next
    // write on the (returned) lane uses the next sequence.
    assert_eq!((puts[0].2, puts[0].3), (client_id, 1));
    assert_eq!((puts[1].2, puts[1].3), (client_id, 1));
    assert_eq!((puts[2].2, puts[2].3), (client_id, 2));
    assert_eq!((puts[3].2, puts[3].3), (client_id, 2));
}

#[tokio::test]
async fn concurrent_writes_use_distinct_lanes() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let (a, b, c) = tokio::join!(client.put("slow/a", "1"), client.put("slow/b", "2"), client.put("slow/c", "3"));
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let log = server.log.lock().unwrap();
    let ids: std::collections::HashSet<u64> = log.requests.iter().filter(|r| r.0 == "put").map(|r| r.2).collect();
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn typed_errors_are_not_retried() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let err = client.delete("missing").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(!err.is_retryable());
    assert_eq!(server.log.lock().unwrap().requests.iter().filter(|r| r.0 == "delete").count(), 1);

    let mut bad = config(vec![server.addr.to_string()], &server.ca_pem);
    bad.credential = "wrong".into();
    let bad = Client::connect(bad).await.unwrap();
    assert_eq!(bad.get("k").await.unwrap_err().code(), ErrorCode::Unauthenticated);

    // A well-formed frame of the wrong kind is a protocol violation.
    let err = client.status().await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn fails_over_from_a_silent_endpoint() {
    let server = start_server().await;
    // A UDP socket that never answers: the handshake times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoints = vec![silent.local_addr().unwrap().to_string(), server.addr.to_string()];
    let mut config = config(endpoints, &server.ca_pem);
    config.connect_timeout = Duration::from_secs(3);
    let client = Client::connect(config).await.unwrap();
    // The silent endpoint's handshake is not waited for to its timeout: the
    // next endpoint is tried meanwhile.
    let started = std::time::Instant::now();
    let got = client.get("k").await.unwrap();
    assert_eq!(got.revision, 9);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    // The working endpoint is now preferred: no new handshake wait.
    let started = std::time::Instant::now();
    client.get("k").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn unreachable_cluster_is_unavailable_after_the_timeout() {
    let server = start_server().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = config(vec![silent.local_addr().unwrap().to_string()], &server.ca_pem);
    config.request_timeout = Duration::from_millis(800);
    config.connect_timeout = Duration::from_millis(200);
    let client = Client::connect(config).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.put("k", "v").await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing reached a server: definitely not applied, and the lane is clean.
    assert_eq!(err.outcome(), Outcome::NotApplied);
    assert_eq!(client.writes_in_doubt(), 0);
    // Durations as people write them (`200ms`), not `199.871203ms`; which
    // bound spoke last (the handshake's or the request's) depends on timing.
    let text = err.to_string();
    let within = text.split("within ").nth(1).unwrap_or_default();
    let number: String = within.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    assert!(!number.is_empty() && !number.contains('.') && within[number.len()..].starts_with("ms"), "{text}");
}

#[tokio::test]
async fn outcomes_tell_a_refusal_from_a_write_in_doubt() {
    let server = start_server().await;
    let mut config = config(vec![server.addr.to_string()], &server.ca_pem);
    config.request_timeout = Duration::from_millis(600);
    let client = Client::connect(config).await.unwrap();
    // The server refused: nothing was applied.
    let err = client.delete("missing").await.unwrap_err();
    assert_eq!((err.code(), err.outcome()), (ErrorCode::NotFound, Outcome::NotApplied));
    // Sent and never answered: it may have been applied, and the message says so.
    let err = client.put("hang/1", "v").await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!((err.code(), err.outcome()), (ErrorCode::Unavailable, Outcome::Unknown));
    let text = err.to_string();
    assert!(text.contains("no answer within 600ms"), "{text}");
    assert!(text.contains("the write may or may not have been applied"), "{text}");
    // UNAVAILABLE is also what a leader answers when it loses leadership
    // before the write commits: in doubt too.
    let err = client.put("down/1", "v").await.unwrap_err();
    assert_eq!((err.code(), err.outcome()), (ErrorCode::Unavailable, Outcome::Unknown));
    // A read without an answer changed nothing.
    let err = client.get("hang/1").await.unwrap_err();
    assert_eq!((err.code(), err.outcome()), (ErrorCode::Unavailable, Outcome::NotApplied));
    assert_eq!(client.writes_in_doubt(), 2);
    // The lanes in doubt were thrown away; the next write takes a new one.
    client.put("k", "v").await.unwrap();
    let log = server.log.lock().unwrap();
    let lanes: std::collections::HashSet<u64> = log.requests.iter().filter(|r| r.0 == "put").map(|r| r.2).collect();
    assert_eq!(lanes.len(), 3, "{:?}", log.requests);
}

#[tokio::test]
async fn a_deadline_bounds_every_request_of_a_handle() {
    let server = start_server().await;
    let mut config = config(vec![server.addr.to_string()], &server.ca_pem);
    config.request_timeout = Duration::from_secs(10);
    let client = Client::connect(config).await.unwrap();
    let bounded = client.with_deadline(tokio::time::Instant::now() + Duration::from_millis(400));
    let started = Instant::now();
    let err = bounded.get("hang/1").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");
    // Past the deadline a request fails at once, unsent.
    let err = bounded.put("k", "v").await.unwrap_err();
    assert!(err.to_string().contains("deadline passed"), "{err}");
    assert_eq!(err.outcome(), Outcome::NotApplied);
    assert!(!server.log.lock().unwrap().requests.iter().any(|r| r.0 == "put"));
    // The handle it came from keeps its own bound.
    assert_eq!(client.deadline(), None);
    client.put("k", "v").await.unwrap();
}

#[tokio::test]
async fn close_tells_the_server_without_waiting_for_the_drain() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    for _ in 0..3 {
        client.get("k").await.unwrap();
    }
    assert_eq!(server.open.load(Ordering::SeqCst), 1);
    let started = Instant::now();
    client.close().await;
    // QUIC's drain period after a close is three probe timeouts (about
    // 80 ms even on loopback); a short-lived process must not sit it out.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(60), "close took {took:?}");
    // The server hears of it at once, not after its idle timeout.
    let deadline = Instant::now() + Duration::from_millis(500);
    while server.open.load(Ordering::SeqCst) != 0 {
        assert!(Instant::now() < deadline, "the server still holds the connection");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(client.get("k").await.is_err());
}

#[tokio::test]
async fn wrong_ca_is_rejected() {
    let server = start_server().await;
    let other = caddy_wire::tls::generate_ca().unwrap();
    let mut config = config(vec![server.addr.to_string()], &other.cert_pem);
    config.request_timeout = Duration::from_millis(500);
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.get("k").await.unwrap_err().code(), ErrorCode::Unavailable);
    assert!(matches!(
        Client::connect(ClientConfig::new(vec!["a:1".into()], "not pem", "c")).await,
        Err(ClientError::Config(_))
    ));
}

#[tokio::test]
async fn watch_resumes_after_a_broken_stream_and_ends_on_a_typed_error() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let mut watch = client.watch("w/", 0);
    let mut revisions = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap() {
            Some(Ok(event)) => revisions.push(event.revision),
            Some(Err(err)) => break err,
            None => panic!("stream ended without an error"),
        }
    };
    assert_eq!(revisions, vec![1, 2, 3]);
    assert_eq!(end.code(), ErrorCode::FailedPrecondition);
    assert!(watch.next().await.is_none());
    assert_eq!(server.log.lock().unwrap().watches, vec![1, 3]);
}

#[tokio::test]
async fn backup_streams_chunks_with_progress() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let mut out = Vec::new();
    let mut progress = Vec::new();
    let bytes = client.backup(&mut out, |done, total| progress.push((done, total))).await.unwrap();
    assert_eq!(bytes, 10);
    assert_eq!(out, b"helloworld");
    assert_eq!(progress, vec![(5, 10), (10, 10)]);
}

/// Compiled, never run: the SDK's futures must be `Send` so callers can spawn them.
#[allow(dead_code)]
fn futures_are_send(client: &Client) {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Client>();
    send(&client.put("k", "v"));
    send(&client.get("k"));
    send(&client.list("", "", 1, false));
    send(&client.status());
    send(&client.backup(tokio::io::sink(), |_, _| {}));
    send(&client.watch("p", 0));
    send(&client.with_deadline(tokio::time::Instant::now()).put("k", "v"));
}

#[tokio::test]
async fn huge_timeouts_do_not_overflow() {
    let server = start_server().await;
    let mut config = config(vec![server.addr.to_string()], &server.ca_pem);
    config.request_timeout = Duration::MAX;
    config.connect_timeout = Duration::MAX;
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.get("k").await.unwrap().revision, 9);
}

#[tokio::test]
async fn a_follower_naming_the_leader_moves_later_requests_there() {
    let ca = caddy_wire::tls::generate_ca().unwrap();
    let leader = start_server_hinting(None, Some(ca.clone())).await;
    let follower = start_server_hinting(Some(leader.addr.to_string()), Some(ca)).await;
    let client = Client::connect(config(vec![follower.addr.to_string(), leader.addr.to_string()], &leader.ca_pem))
        .await
        .unwrap();
    client.get("first").await.unwrap();
    client.get("second").await.unwrap();
    client.get("third").await.unwrap();
    let keys = |s: &TestServer| s.log.lock().unwrap().requests.iter().map(|r| r.1.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&follower), vec!["first".to_string()]);
    assert_eq!(keys(&leader), vec!["second".to_string(), "third".to_string()]);
}

#[tokio::test]
async fn a_refusal_with_retry_after_is_retried_after_that_wait_on_the_same_lane() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let started = std::time::Instant::now();
    let put = client.put("busy/1", "v").await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "retried after {waited:?}, before the server's 300 ms");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    let log = server.log.lock().unwrap();
    let puts: Vec<_> = log.requests.iter().filter(|r| r.0 == "put").collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!((puts[0].2, puts[0].3), (puts[1].2, puts[1].3), "the retry is the same write");
    assert_eq!(put.revision, 10 + puts[1].3);
}

#[tokio::test]
async fn a_retry_after_beyond_the_request_timeout_is_returned_at_once_with_the_wait() {
    let server = start_server().await;
    let client = Client::connect(config(vec![server.addr.to_string()], &server.ca_pem)).await.unwrap();
    let started = std::time::Instant::now();
    let err = client.put("throttled/1", "v").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    assert!(!err.is_retryable());
    assert_eq!(server.log.lock().unwrap().requests.iter().filter(|r| r.0 == "put").count(), 1);
}

/// A server that completes every handshake and then closes the connection
/// as a node does past its per-source connection limit.
async fn start_refusing_server() -> (SocketAddr, String, quinn::Endpoint) {
    let ca = caddy_wire::tls::generate_ca().unwrap();
    let node =
        caddy_wire::tls::issue_node_cert(&ca, caddy_wire::tls::NodeCertName { id: 1, generation: 1 }, &[]).unwrap();
    let tls = caddy_wire::tls::server_config(&node, &[caddy_wire::ALPN]).unwrap();
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let addr = endpoint.local_addr().unwrap();
    let accept = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            if let Ok(conn) = incoming.await {
                conn.close(
                    caddy_wire::close::TOO_MANY_CONNECTIONS.into(),
                    b"too many connections from 127.0.0.1 (at most 2 per address)",
                );
            }
        }
    });
    (addr, ca.cert_pem, endpoint)
}

#[tokio::test]
async fn a_connection_refused_for_too_many_from_this_address_is_a_clear_typed_error() {
    let (addr, ca_pem, _endpoint) = start_refusing_server().await;
    let mut config = config(vec![addr.to_string()], &ca_pem);
    config.request_timeout = Duration::from_millis(800);
    let client = Client::connect(config).await.unwrap();
    let err = client.put("k", "v").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("too many connections from 127.0.0.1"), "{err}");
}

#[tokio::test]
async fn a_retry_after_is_not_applied_unless_an_earlier_attempt_of_the_write_went_unanswered() {
    let server = start_server().await;
    let lanes_of = |key: &str| -> Vec<(u64, u64)> {
        let log = server.log.lock().unwrap();
        log.requests.iter().filter(|r| r.0 == "put" && r.1 == key).map(|r| (r.2, r.3)).collect()
    };
    // Alone, a refusal with a retry-after changed nothing: the lane goes on.
    let mut one = config(vec![server.addr.to_string()], &server.ca_pem);
    one.request_timeout = Duration::from_secs(2);
    let client = Client::connect(one).await.unwrap();
    let err = client.put("throttled/2", "v").await.unwrap_err();
    assert_eq!((err.code(), err.outcome()), (ErrorCode::ResourceExhausted, Outcome::NotApplied), "{err}");
    assert_eq!(client.writes_in_doubt(), 0);
    client.put("k/1", "v").await.unwrap();
    let (throttled, next) = (lanes_of("throttled/2"), lanes_of("k/1"));
    assert_eq!((next[0].0, next[0].1), (throttled[0].0, throttled[0].1 + 1), "the lane is reused");

    // The first attempt was answered UNAVAILABLE (leadership lost before
    // the commit), the second refused with a retry-after: the first may
    // have been applied.
    let err = client.put("deposed/1", "v").await.unwrap_err();
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert_eq!((err.code(), err.outcome()), (ErrorCode::ResourceExhausted, Outcome::Unknown));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)), "the advice is kept");
    assert!(err.to_string().contains("may or may not have been applied"), "{err}");
    let attempts = lanes_of("deposed/1");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0], attempts[1], "both attempts are the same write");
    assert_eq!(client.writes_in_doubt(), 1);

    // The first attempt went out and got no answer in its slice of the
    // request timeout (two endpoints: 500 ms each), the second (to the
    // other endpoint) was refused with a retry-after.
    let mut two = config(vec![server.addr.to_string(), server.addr.to_string()], &server.ca_pem);
    two.request_timeout = Duration::from_secs(3);
    let client = Client::connect(two).await.unwrap();
    let err = client.put("lost/1", "v").await.unwrap_err();
    assert_eq!((err.code(), err.outcome()), (ErrorCode::ResourceExhausted, Outcome::Unknown), "{err}");
    assert_eq!(lanes_of("lost/1").len(), 2);
    assert_eq!(client.writes_in_doubt(), 1);
    // The lane in doubt is never used again.
    client.put("k/2", "v").await.unwrap();
    assert_ne!(lanes_of("k/2")[0].0, lanes_of("lost/1")[0].0);
}
