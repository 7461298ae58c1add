//! Bad input gets a typed error and the node keeps serving: malformed and
//! oversized frames, unknown request types, wrong credentials, stale
//! compare-and-set, watches from a compacted revision.

mod support;

use std::sync::Arc;

use caddy_client::{ClientConfig, ErrorCode};
use caddy_wire::pb;
use futures::StreamExt;
use prost::Message;
use support::Dev;

async fn raw_connection(dev: &Dev, node: u64) -> quinn::Connection {
    let config = ClientConfig::from_file(dev.client_toml()).expect("config");
    let tls = caddy_wire::tls::client_config(&config.ca_cert_pem, &[caddy_wire::ALPN]).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let addr = dev.client_addr(node).parse().expect("addr");
    endpoint.connect(addr, caddy_wire::CLUSTER_SERVER_NAME).expect("connect").await.expect("handshake")
}

/// Sends raw bytes on a new stream and decodes the single answer.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> pb::Response {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(bytes).await.expect("send");
    let _ = send.finish();
    caddy_wire::read_frame::<pb::Response, _>(&mut recv, 1 << 20).await.expect("an answer frame")
}

fn error_code(resp: &pb::Response) -> (pb::ErrorCode, String) {
    match &resp.body {
        Some(pb::response::Body::Error(e)) => (pb::ErrorCode::try_from(e.code).expect("code"), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn credential(dev: &Dev) -> String {
    ClientConfig::from_file(dev.client_toml()).expect("config").credential
}

fn frame(req: &pb::Request) -> Vec<u8> {
    let body = req.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_its_typed_error_and_the_node_keeps_serving() {
    let dev = Dev::start(3, &[("CADDY_LIMITS_WATCH_HISTORY", "5")]);
    let conn = raw_connection(&dev, 1).await;
    let cred = credential(&dev);

    // Oversized frame: refused before the body is read.
    let mut huge = (64u32 * 1024 * 1024).to_be_bytes().to_vec();
    huge.extend(vec![0u8; 1024]);
    let (code, msg) = error_code(&exchange(&conn, &huge).await);
    assert_eq!(code, pb::ErrorCode::ResourceExhausted, "{msg}");
    assert!(msg.contains("exceeds the limit"), "{msg}");

    // Malformed protobuf.
    let (code, msg) = error_code(&exchange(&conn, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await);
    assert_eq!(code, pb::ErrorCode::InvalidArgument, "{msg}");

    // A request type this server does not know (an unknown oneof field).
    let mut unknown = pb::Request { credential: cred.clone(), ..Default::default() }.encode_to_vec();
    unknown.extend([0xfa, 0x06, 0x00]); // field 111, length-delimited, empty
    let mut bytes = (unknown.len() as u32).to_be_bytes().to_vec();
    bytes.extend(unknown);
    let (code, msg) = error_code(&exchange(&conn, &bytes).await);
    assert_eq!(code, pb::ErrorCode::InvalidArgument, "{msg}");
    assert!(msg.contains("unknown"), "{msg}");

    // Wrong and missing credentials.
    let get = |credential: &str| pb::Request {
        credential: credential.to_string(),
        body: Some(pb::request::Body::Get(pb::GetRequest { key: "k".into(), serializable: false })),
        ..Default::default()
    };
    let (code, _) = error_code(&exchange(&conn, &frame(&get("caddy_admin_wrong"))).await);
    assert_eq!(code, pb::ErrorCode::Unauthenticated);
    let (code, _) = error_code(&exchange(&conn, &frame(&get(""))).await);
    assert_eq!(code, pb::ErrorCode::Unauthenticated);

    // A truncated frame followed by the stream's end.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 100, 1, 2]).await.expect("send");
    let _ = send.finish();
    let resp = caddy_wire::read_frame::<pb::Response, _>(&mut recv, 1 << 20).await.expect("answer");
    assert_eq!(error_code(&resp).0, pb::ErrorCode::InvalidArgument);

    // The same connection still serves a good request.
    let client = dev.client().await;
    let put = client.put("k", "v1").await.expect("put after bad input");

    // Compare-and-set on a stale revision.
    let err = client.put_if("k", "v2", put.revision - 1).await.expect_err("stale CAS must fail");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert_eq!(err.current_revision(), Some(put.revision));
    client.put_if("k", "v2", put.revision).await.expect("CAS on the current revision");
    let err = client.put_if("fresh", "x", 5).await.expect_err("CAS on an absent key");
    assert_eq!(err.current_revision(), Some(0));

    // Oversized value through the SDK.
    let err = client.put("big", vec![0u8; 1_100_000]).await.expect_err("value over the limit");
    assert_eq!(err.code(), ErrorCode::ResourceExhausted, "{err}");

    // A watch from a compacted revision (history of 5 events).
    for i in 0..20 {
        client.put(&format!("h/{i}"), "x").await.expect("put");
    }
    let mut watch = client.watch("h/", 1);
    let first = watch.next().await.expect("an item");
    let err = first.expect_err("watching from a compacted revision must fail");
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("compacted"), "{err}");

    // Wrong credential through the SDK.
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("config");
    config.credential = "caddy_admin_nope".into();
    let bad = caddy_client::Client::connect(config).await.expect("connect");
    assert_eq!(bad.get("k").await.expect_err("bad credential").code(), ErrorCode::Unauthenticated);

    // CLI: a missing key is a one-line error and exit code 1.
    let out = dev.ctl(&["kv", "get", "does/not/exist"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");

    // And the node is still healthy and serving.
    assert_eq!(client.get("k").await.expect("get").kv.map(|kv| kv.value), Some(b"v2".to_vec()));
    conn.close(0u32.into(), b"done");
}

fn identity_request(credential: &str, tenant: &str, seq: u64, call: &str) -> pb::Request {
    pb::Request {
        credential: credential.to_owned(),
        client_id: 77,
        sequence: seq,
        tenant: tenant.to_owned(),
        body: Some(pb::request::Body::Identity(pb::IdentityRequest { call: call.as_bytes().to_vec() })),
        ..Default::default()
    }
}

/// A raw connection to node 1 and the operator credential, after creating
/// tenant `acme` through it (client 77, sequence 1).
async fn raw_with_tenant(dev: &Dev) -> (quinn::Connection, String) {
    let conn = raw_connection(dev, 1).await;
    let cred = credential(dev);
    let create = r#"{"op":"tenant_create","id":"acme","name":"Acme","plan":"","quotas":null}"#;
    let resp = exchange(&conn, &frame(&identity_request(&cred, "", 1, create))).await;
    assert!(matches!(resp.body, Some(pb::response::Body::Identity(_))), "{resp:?}");
    (conn, cred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_bad_input_and_a_retried_secret_never_answering_with_a_dead_secret() {
    let dev = Dev::start(1, &[]);
    let (conn, cred) = raw_with_tenant(&dev).await;

    // Undecodable, unknown and ill-typed calls.
    for call in ["not json", r#"{"op":"become_root"}"#, r#"{"op":"user_get","user":7}"#] {
        let (code, msg) = error_code(&exchange(&conn, &frame(&identity_request(&cred, "acme", 0, call))).await);
        assert_eq!(code, pb::ErrorCode::InvalidArgument, "{call}: {msg}");
    }
    let (code, msg) = error_code(&exchange(&conn, &frame(&identity_request(&cred, "Not A Tenant", 0, "{}"))).await);
    assert_eq!(code, pb::ErrorCode::InvalidArgument, "{msg}");

    // The same API key creation twice (a client retry whose first answer was
    // lost): applied once, and the retry does not hand out a secret that was
    // never stored.
    let key = r#"{"op":"api_key_create","name":"ci","scopes":["kv:*"],"ttl_seconds":null}"#;
    let first = exchange(&conn, &frame(&identity_request(&cred, "acme", 2, key))).await;
    let Some(pb::response::Body::Identity(answer)) = first.body else { panic!("{first:?}") };
    let answer: serde_json::Value = serde_json::from_slice(&answer.answer).expect("json");
    let secret = answer["secret"].as_str().expect("secret").to_owned();
    let (code, msg) = error_code(&exchange(&conn, &frame(&identity_request(&cred, "acme", 2, key))).await);
    assert_eq!(code, pb::ErrorCode::FailedPrecondition, "{msg}");
    assert!(msg.contains("earlier attempt") && msg.contains("key-"), "{msg}");
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("config");
    config.credential = secret;
    let service = caddy_client::Client::connect(config).await.expect("connect");
    service.put("k", "v").await.expect("the first answer's key works");
    let keys = r#"{"op":"api_key_list"}"#;
    let resp = exchange(&conn, &frame(&identity_request(&cred, "acme", 0, keys))).await;
    let Some(pb::response::Body::Identity(answer)) = resp.body else { panic!("{resp:?}") };
    let answer: serde_json::Value = serde_json::from_slice(&answer.answer).expect("json");
    assert_eq!(answer["keys"].as_array().map(Vec::len), Some(1), "created once: {answer}");
    service.close().await;
}

/// Sends one upload on its own stream: the call, then every chunk the node
/// asks for; returns the final answer (or error) frame.
async fn raw_upload(conn: &quinn::Connection, req: &pb::Request, data: &[u8]) -> pb::Response {
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&frame(req)).await.expect("send");
    let first = caddy_wire::read_frame::<pb::Response, _>(&mut recv, 1 << 20).await.expect("an answer frame");
    let Some(pb::response::Body::File(answer)) = &first.body else { return first };
    let answer: serde_json::Value = serde_json::from_slice(&answer.answer).expect("json");
    if answer["kind"] != "need" {
        return first;
    }
    let need = answer["chunks"].as_array().expect("chunk indexes");
    for index in need {
        let index = index.as_u64().expect("index") as u32;
        let chunk = pb::FileChunk { index, data: data.to_vec() };
        caddy_wire::write_frame(&mut send, &chunk).await.expect("chunk");
    }
    let _ = send.finish();
    caddy_wire::read_frame::<pb::Response, _>(&mut recv, 1 << 20).await.expect("the final frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_upload_whose_answer_was_lost_gets_the_first_answer_and_commits_once() {
    let dev = Dev::start(1, &[]);
    let (conn, cred) = raw_with_tenant(&dev).await;

    let data = b"one upload, sent twice".to_vec();
    let call = serde_json::json!({
        "op": "upload", "name": "twice.txt", "size": data.len(), "chunks": [blake3::hash(&data).to_hex().to_string()],
    });
    let upload = |seq: u64| pb::Request {
        credential: cred.clone(),
        client_id: 78,
        sequence: seq,
        tenant: "acme".to_owned(),
        body: Some(pb::request::Body::File(pb::FileRequest { call: call.to_string().into_bytes() })),
        ..Default::default()
    };
    let file_of = |resp: &pb::Response| -> serde_json::Value {
        let Some(pb::response::Body::File(answer)) = &resp.body else { panic!("expected a file answer: {resp:?}") };
        serde_json::from_slice(&answer.answer).expect("json")
    };
    let first = file_of(&raw_upload(&conn, &upload(1), &data).await);
    // The same request again, as a client does whose answer was lost: the
    // first commit's answer, not `already_exists`, and no second file.
    let again = file_of(&raw_upload(&conn, &upload(1), &data).await);
    assert_eq!(first["id"], again["id"], "first {first}, retry {again}");
    assert_eq!(again["size"].as_u64(), Some(data.len() as u64), "{again}");
    // A new request (next sequence) for the same name is judged anew.
    let (code, msg) = error_code(&raw_upload(&conn, &upload(2), &data).await);
    assert_eq!(code, pb::ErrorCode::AlreadyExists, "{msg}");
    let list = pb::Request {
        credential: cred.clone(),
        tenant: "acme".to_owned(),
        body: Some(pb::request::Body::File(pb::FileRequest { call: br#"{"op":"list"}"#.to_vec() })),
        ..Default::default()
    };
    let listing = file_of(&exchange(&conn, &frame(&list)).await);
    assert_eq!(listing["files"].as_array().map(Vec::len), Some(1), "{listing}");
    conn.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_share_link_creation_never_answers_with_a_dead_token() {
    let dev = Dev::start(1, &[]);
    let (conn, cred) = raw_with_tenant(&dev).await;
    let data = b"shared".to_vec();
    let call = serde_json::json!({
        "op": "upload", "name": "shared.txt", "size": data.len(), "chunks": [blake3::hash(&data).to_hex().to_string()],
    });
    let file_request = |client_id: u64, seq: u64, call: String| pb::Request {
        credential: cred.clone(),
        client_id,
        sequence: seq,
        tenant: "acme".to_owned(),
        body: Some(pb::request::Body::File(pb::FileRequest { call: call.into_bytes() })),
        ..Default::default()
    };
    let uploaded = raw_upload(&conn, &file_request(79, 1, call.to_string()), &data).await;
    let Some(pb::response::Body::File(answer)) = uploaded.body else { panic!("{uploaded:?}") };
    let file: serde_json::Value = serde_json::from_slice(&answer.answer).expect("json");
    let id = file["id"].as_str().expect("file id").to_owned();

    // The same link creation twice (a retry whose first answer was lost).
    let link = serde_json::json!({ "op": "link", "file": id, "expires_ms": null }).to_string();
    let first = exchange(&conn, &frame(&file_request(79, 2, link.clone()))).await;
    let Some(pb::response::Body::File(answer)) = first.body else { panic!("{first:?}") };
    let answer: serde_json::Value = serde_json::from_slice(&answer.answer).expect("json");
    let token = answer["token"].as_str().expect("token").to_owned();
    let (code, msg) = error_code(&exchange(&conn, &frame(&file_request(79, 2, link))).await);
    assert_eq!(code, pb::ErrorCode::FailedPrecondition, "{msg}");
    assert!(msg.contains("earlier attempt") && msg.contains("share link"), "{msg}");
    // The first answer's token opens the file.
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("config");
    config.credential = String::new();
    let anonymous = caddy_client::Client::connect(config).await.expect("connect");
    let mut bytes = Vec::new();
    let options = caddy_client::DownloadOptions::default();
    anonymous
        .file_download(None, Some(&token), &options, &mut bytes, |_, _| {})
        .await
        .expect("the first answer's token opens the file");
    assert_eq!(bytes, data);
    anonymous.close().await;
}
