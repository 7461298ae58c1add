//! A node under abuse by clients that prove nothing or guess passwords, with
//! real `caddyd` processes and small limits (through `CADDY_LIMITS_*`): a
//! connection that sends no credential is closed at the deadline, an idle one
//! is closed and the SDK reconnects, a source past its connection limit is
//! refused with the reason, password checks are bounded, and logins are
//! throttled per account with a retry-after that the SDK honours.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use caddy_client::{ClientConfig, ErrorCode};
use caddy_wire::pb;
use support::Dev;

async fn raw_connection(dev: &Dev) -> quinn::Connection {
    let config = ClientConfig::from_file(dev.client_toml()).expect("config");
    let tls = caddy_wire::tls::client_config(&config.ca_cert_pem, &[caddy_wire::ALPN]).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr = dev.client_addr(1).parse().expect("addr");
    endpoint.connect(addr, caddy_wire::CLUSTER_SERVER_NAME).expect("connect").await.expect("handshake")
}

/// Sends one request on a new stream and reads the single answer.
async fn exchange(conn: &quinn::Connection, req: &pb::Request) -> pb::Response {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    caddy_wire::write_frame(&mut send, req).await.expect("send");
    let _ = send.finish();
    caddy_wire::read_frame::<pb::Response, _>(&mut recv, 1 << 20).await.expect("an answer frame")
}

fn credential(dev: &Dev) -> String {
    ClientConfig::from_file(dev.client_toml()).expect("config").credential
}

fn get(credential: &str) -> pb::Request {
    pb::Request {
        credential: credential.to_owned(),
        body: Some(pb::request::Body::Get(pb::GetRequest { key: "k".into(), serializable: true })),
        ..Default::default()
    }
}

fn login(email: &str, password: &str, sequence: u64) -> pb::Request {
    let call = serde_json::json!({"op": "login", "email": email, "password": password, "ttl_seconds": null});
    pb::Request {
        client_id: 0xED6E,
        sequence,
        tenant: "acme".into(),
        body: Some(pb::request::Body::Identity(pb::IdentityRequest { call: call.to_string().into_bytes() })),
        ..Default::default()
    }
}

fn error_of(resp: &pb::Response) -> Option<&pb::Error> {
    match &resp.body {
        Some(pb::response::Body::Error(e)) => Some(e),
        _ => None,
    }
}

/// Waits (up to `within`) for the server to close `conn`; returns the
/// application close code and reason.
async fn closed_by_server(conn: &quinn::Connection, within: Duration) -> (u64, String) {
    match tokio::time::timeout(within, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned())
        }
        Ok(other) => panic!("connection ended otherwise: {other}"),
        Err(_) => panic!("the server did not close the connection within {within:?}"),
    }
}

async fn metrics(dev: &Dev) -> String {
    let ca = std::fs::read_to_string(dev.dir.join("node1/tls/ca.pem")).expect("ca");
    let (code, body) = support::https_get(&dev.admin_addr(1), &ca, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the first metric line starting with `series`.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_credential_or_without_requests_are_closed_and_the_sdk_reconnects() {
    let dev =
        Dev::start(1, &[("CADDY_LIMITS_CREDENTIAL_DEADLINE_MS", "1000"), ("CADDY_LIMITS_IDLE_TIMEOUT_MS", "3000")]);
    let cred = credential(&dev);

    // Connected, never asks anything: closed at the deadline, with the reason.
    let silent = raw_connection(&dev).await;
    let started = Instant::now();
    let (code, reason) = closed_by_server(&silent, Duration::from_secs(8)).await;
    assert_eq!(code, u64::from(caddy_wire::close::CREDENTIAL_DEADLINE), "{reason}");
    assert!(reason.contains("no authenticated request"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Wrong credentials do not count as authenticating.
    let guesser = raw_connection(&dev).await;
    let answer = exchange(&guesser, &get("caddy_admin_wrong")).await;
    assert_eq!(error_of(&answer).map(|e| e.code), Some(pb::ErrorCode::Unauthenticated as i32));
    let (code, _) = closed_by_server(&guesser, Duration::from_secs(8)).await;
    assert_eq!(code, u64::from(caddy_wire::close::CREDENTIAL_DEADLINE));

    // An authenticated connection outlives the deadline, and an open watch
    // keeps it from idling out; with nothing in flight it is closed as idle.
    let good = raw_connection(&dev).await;
    let answer = exchange(&good, &get(&cred)).await;
    assert!(error_of(&answer).is_none(), "{answer:?}");
    let watcher = raw_connection(&dev).await;
    let (mut send, _watch) = watcher.open_bi().await.expect("stream");
    let watch = pb::Request {
        credential: cred.clone(),
        body: Some(pb::request::Body::Watch(pb::WatchRequest { prefix: "w/".into(), from_revision: 0 })),
        ..Default::default()
    };
    caddy_wire::write_frame(&mut send, &watch).await.expect("watch");
    let _ = send.finish();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(good.close_reason().is_none(), "closed at the credential deadline: {:?}", good.close_reason());
    let (code, reason) = closed_by_server(&good, Duration::from_secs(8)).await;
    assert_eq!(code, u64::from(caddy_wire::close::IDLE), "{reason}");
    assert!(reason.contains("idle"), "{reason}");
    assert!(watcher.close_reason().is_none(), "a watching connection is not idle: {:?}", watcher.close_reason());

    // The SDK's connection idles out too, and its next request reconnects.
    let client = dev.client_for(1).await;
    client.put("k", "v").await.expect("put");
    let idle_before = metric(&metrics(&dev).await, "caddy_quic_connections_closed_total{reason=\"idle\"}");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let idle_after = metric(&metrics(&dev).await, "caddy_quic_connections_closed_total{reason=\"idle\"}");
    assert!(idle_after > idle_before, "the SDK's connection was not closed as idle ({idle_before} -> {idle_after})");
    let got = client.get("k").await.expect("the request after an idle close succeeds");
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"v".to_vec()));
    watcher.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_past_its_connection_limit_is_refused_with_the_reason() {
    let dev = Dev::start(1, &[("CADDY_LIMITS_MAX_CONNECTIONS_PER_SOURCE", "3")]);
    let cred = credential(&dev);
    // `caddyd dev` itself connected to set the cluster up; wait until it is gone.
    support::eventually("no client connection open", Duration::from_secs(10), async || {
        metric(&metrics(&dev).await, "caddy_quic_connections_open") == 0.0
    })
    .await;

    let mut held = Vec::new();
    for _ in 0..3 {
        let conn = raw_connection(&dev).await;
        let answer = exchange(&conn, &get(&cred)).await;
        assert!(error_of(&answer).is_none(), "{answer:?}");
        held.push(conn);
    }
    let fourth = raw_connection(&dev).await;
    let (code, reason) = closed_by_server(&fourth, Duration::from_secs(5)).await;
    assert_eq!(code, u64::from(caddy_wire::close::TOO_MANY_CONNECTIONS), "{reason}");
    assert!(reason.contains("too many connections from 127.0.0.1 (at most 3 per address)"), "{reason}");

    // Through the SDK: a typed error that says why.
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("config");
    config.request_timeout = Duration::from_secs(1);
    let client = caddy_client::Client::connect(config).await.expect("connect");
    let err = client.get("k").await.expect_err("a fourth connection from this address");
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("too many connections from 127.0.0.1"), "{err}");
    assert!(metric(&metrics(&dev).await, "caddy_quic_connections_refused_total{reason=\"per_source\"}") >= 2.0);

    // A slot freed is a slot for the next connection.
    held.pop().expect("held").close(0u32.into(), b"done");
    support::eventually("a freed slot", Duration::from_secs(10), async || client.get("k").await.is_ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_are_bounded_and_a_guessed_account_is_throttled_while_others_log_in() {
    let dev = Dev::start(
        1,
        &[
            ("CADDY_LIMITS_MAX_CONCURRENT_HASHES", "1"),
            ("CADDY_LIMITS_MAX_QUEUED_HASHES", "2"),
            ("CADDY_LIMITS_LOGIN_FAILURES_PER_ACCOUNT", "3"),
            ("CADDY_LIMITS_LOGIN_FAILURES_PER_SOURCE", "1000"),
            ("CADDY_LIMITS_LOGIN_BACKOFF_MS", "3000"),
            // The guessing connection never logs in; keep it past the default deadline.
            ("CADDY_LIMITS_CREDENTIAL_DEADLINE_MS", "60000"),
        ],
    );
    support::setup(&dev, &[("alice@acme.test", "editor"), ("bob@acme.test", "editor")]).await;
    let conn = raw_connection(&dev).await;

    // Many wrong passwords at once (for different accounts): one check runs,
    // two wait, the rest are refused at once with a retry-after.
    let answers = futures::future::join_all((0..24).map(|i| {
        let conn = conn.clone();
        async move { exchange(&conn, &login(&format!("guess{i}@acme.test"), "wrong password", 100 + i)).await }
    }))
    .await;
    let (mut refused, mut checked) = (0, 0);
    for answer in &answers {
        let e = error_of(answer).unwrap_or_else(|| panic!("a wrong password logged in: {answer:?}"));
        if e.code == pb::ErrorCode::ResourceExhausted as i32 {
            refused += 1;
            assert!(e.retry_after_ms.is_some_and(|ms| ms > 0), "no retry-after: {e:?}");
            assert!(e.message.contains("busy checking passwords"), "{e:?}");
        } else {
            assert_eq!(e.code, pb::ErrorCode::Unauthenticated as i32, "{e:?}");
            checked += 1;
        }
    }
    assert!(refused >= 1, "no check was refused: {checked} checked");
    assert!(checked >= 3, "{checked} checked, {refused} refused");

    // Three wrong passwords for alice, then even the right one must wait.
    for seq in 1..=3 {
        let answer = exchange(&conn, &login("alice@acme.test", "wrong password", seq)).await;
        assert_eq!(error_of(&answer).map(|e| e.code), Some(pb::ErrorCode::Unauthenticated as i32), "{answer:?}");
    }
    let answer = exchange(&conn, &login("alice@acme.test", "correct horse battery", 4)).await;
    let throttled_at = Instant::now();
    let e = error_of(&answer).expect("a throttled login is refused");
    assert_eq!(e.code, pb::ErrorCode::ResourceExhausted as i32, "{e:?}");
    assert!(e.message.contains("too many failed logins for alice@acme.test"), "{e:?}");
    let wait = Duration::from_millis(e.retry_after_ms.expect("retry-after"));
    assert!(wait > Duration::from_millis(1000) && wait <= Duration::from_millis(3000), "{wait:?}");

    // Bob, on the same node and from the same address, is not affected.
    let bob = support::client_as(&dev, Some(1), "", "acme").await;
    let started = Instant::now();
    bob.login("bob@acme.test", "correct horse battery").await.expect("bob logs in");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // The SDK waits out alice's retry-after (it fits in its request timeout)
    // and then logs in, which resets her account.
    let alice = support::client_as(&dev, Some(1), "", "acme").await;
    assert!(throttled_at.elapsed() < wait, "the wait is over before the SDK is tried");
    alice.login("alice@acme.test", "correct horse battery").await.expect("alice logs in after the wait");
    let took = throttled_at.elapsed();
    assert!(took >= wait - Duration::from_millis(100), "logged in {took:?} after a {wait:?} wait was asked for");
    for seq in 5..=6 {
        let answer = exchange(&conn, &login("alice@acme.test", "wrong password", seq)).await;
        assert_eq!(error_of(&answer).map(|e| e.code), Some(pb::ErrorCode::Unauthenticated as i32), "{answer:?}");
    }
}
