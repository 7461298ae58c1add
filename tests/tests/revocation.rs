//! A revoked credential stops working everywhere: a key-value or document
//! watch ends with the typed error within seconds of its key being revoked,
//! its session ended, its user disabled or its tenant suspended, and a node
//! that had not yet applied a revocation does not serve the revoked key a
//! linearizable read.

mod support;

use std::time::{Duration, Instant};

use caddy_client::identity::{IdentityAnswer, IdentityCall};
use caddy_client::{Client, ClientConfig, ErrorCode};
use futures::StreamExt;
use support::{Dev, client_as, setup};

/// How long a watch may outlive its right to read.
const BOUND: Duration = Duration::from_secs(4);

async fn operator(dev: &Dev, tenant: Option<&str>) -> Client {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = tenant.map(str::to_owned);
    Client::connect(config).await.expect("connect")
}

/// Waits for a key-value watch to end; returns its error's code.
async fn kv_watch_ends(client: &Client, what: &str, revoke: impl AsyncFnOnce()) -> ErrorCode {
    // The watch is live once it has delivered this change.
    let revision = client.put("w/ready", what).await.expect("put").revision;
    let mut watch = client.watch("w/", revision);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("first event");
    assert!(matches!(first, Some(Ok(_))), "{what}: {first:?}");
    revoke().await;
    let started = Instant::now();
    match tokio::time::timeout(BOUND, watch.next()).await {
        Ok(Some(Err(e))) => e.code(),
        other => panic!("{what}: the watch went on after {:?}: {other:?}", started.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_end_when_their_credential_loses_the_right_to_read() {
    let dev = Dev::start(3, &[]);
    let tokens = setup(&dev, &[("alice@acme.test", "editor"), ("bob@acme.test", "editor")]).await;
    let admin = operator(&dev, Some("acme")).await;

    // A revoked API key.
    let (key_id, secret) = match admin
        .identity(&IdentityCall::ApiKeyCreate { name: "ci".into(), scopes: vec!["kv:*".into()], ttl_seconds: None })
        .await
        .expect("key")
    {
        IdentityAnswer::ApiKey { key, secret } => (key.id, secret),
        other => panic!("{other:?}"),
    };
    let keyed = client_as(&dev, None, &secret, "acme").await;
    let code = kv_watch_ends(&keyed, "revoked key", async || {
        admin.identity(&IdentityCall::ApiKeyRevoke { key: key_id }).await.expect("revoke");
    })
    .await;
    assert_eq!(code, ErrorCode::Unauthenticated);

    // An ended session.
    let alice = client_as(&dev, None, &tokens[0], "acme").await;
    let code = kv_watch_ends(&alice, "ended session", async || {
        let call = IdentityCall::SessionTerminate { session: None, user: Some("alice@acme.test".into()) };
        admin.identity(&call).await.expect("terminate");
    })
    .await;
    assert_eq!(code, ErrorCode::Unauthenticated);

    // A disabled user, on a document watch.
    let bob = client_as(&dev, None, &tokens[1], "acme").await;
    let doc = bob.doc_create("Watched", None).await.expect("doc").id;
    let mut watch = bob.doc_watch(&doc, None).await.expect("doc watch");
    let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.next().await {
                Some(Ok((caddy_client::doc_api::DocEvent::CaughtUp { .. }, _))) => return,
                Some(Ok(_)) => {}
                other => panic!("doc watch: {other:?}"),
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "the document watch never caught up");
    admin
        .identity(&IdentityCall::UserSetDisabled { user: "bob@acme.test".into(), disabled: true })
        .await
        .expect("disable");
    let ended = tokio::time::timeout(BOUND, async {
        loop {
            match watch.next().await {
                Some(Err(e)) => return Some(e.code()),
                None => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let code = ended.expect("the document watch went on after its user was disabled").expect("an error");
    assert!(matches!(code, ErrorCode::Unauthenticated | ErrorCode::PermissionDenied), "{code:?}");

    // A suspended tenant.
    let login = operator(&dev, Some("acme")).await;
    let (token, _) = login.login("alice@acme.test", "correct horse battery").await.expect("login again");
    let alice = client_as(&dev, None, &token, "acme").await;
    let code = kv_watch_ends(&alice, "suspended tenant", async || {
        admin.identity(&IdentityCall::TenantSuspend).await.expect("suspend");
    })
    .await;
    assert_eq!(code, ErrorCode::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_refuses_a_linearizable_read_to_a_key_revoked_before_it() {
    let dev = Dev::start(3, &[]);
    setup(&dev, &[]).await;
    let admin = operator(&dev, Some("acme")).await;
    admin.put("k", "v").await.expect("put");
    let (key_id, secret) = match admin
        .identity(&IdentityCall::ApiKeyCreate { name: "r".into(), scopes: vec!["kv:read".into()], ttl_seconds: None })
        .await
        .expect("key")
    {
        IdentityAnswer::ApiKey { key, secret } => (key.id, secret),
        other => panic!("{other:?}"),
    };
    let leader = dev.leader();
    let lagging = [1, 2, 3].into_iter().find(|n| *n != leader).expect("a follower");
    let reader = client_as(&dev, Some(lagging), &secret, "acme").await;
    assert_eq!(reader.get("k").await.expect("read before").kv.map(|kv| kv.value), Some(b"v".to_vec()));

    // The follower misses the revocation while paused; the read reaches it
    // before the entries that revoke the key do.
    let pid = dev.pid(lagging);
    support::signal(pid, libc::SIGSTOP);
    let on_leader = {
        let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
        config.endpoints = vec![dev.client_addr(leader)];
        config.tenant = Some("acme".into());
        Client::connect(config).await.expect("connect")
    };
    on_leader.identity(&IdentityCall::ApiKeyRevoke { key: key_id }).await.expect("revoke");
    let read = tokio::spawn(async move { reader.get("k").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    support::signal(pid, libc::SIGCONT);
    let got = read.await.expect("read task");
    match got {
        Err(e) => assert_eq!(e.code(), ErrorCode::Unauthenticated, "{e}"),
        Ok(r) => panic!("a revoked key read {:?} through a lagging node", r.kv.map(|kv| kv.value)),
    }
}
