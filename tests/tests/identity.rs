//! Identity through the SDK against real `caddyd` processes: secrets never
//! reach disk or logs, and tenant credentials reach neither other tenants nor
//! the cluster, through every API.

mod support;

use std::path::Path;
use std::time::Duration;

use caddy_client::identity::{IdentityAnswer, IdentityCall, QuotasPatch};
use caddy_client::{Client, ClientConfig, ClientError, ErrorCode};
use futures::StreamExt;
use support::Dev;

async fn client_as(dev: &Dev, credential: &str, tenant: Option<&str>) -> Client {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.credential = credential.to_owned();
    config.tenant = tenant.map(str::to_owned);
    Client::connect(config).await.expect("connect")
}

async fn operator(dev: &Dev, tenant: Option<&str>) -> Client {
    let mut config = ClientConfig::from_file(dev.client_toml()).expect("client config");
    config.tenant = tenant.map(str::to_owned);
    Client::connect(config).await.expect("connect")
}

async fn ok(client: &Client, call: IdentityCall) -> IdentityAnswer {
    let name = call.name();
    client.identity(&call).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn create_tenant(id: &str) -> IdentityCall {
    IdentityCall::TenantCreate { id: id.into(), name: id.into(), plan: String::new(), quotas: None }
}

fn create_user(email: &str, password: &str, roles: &[&str]) -> IdentityCall {
    IdentityCall::UserCreate {
        email: email.into(),
        display_name: email.into(),
        password: password.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

async fn login(dev: &Dev, tenant: &str, email: &str, password: &str) -> String {
    let anonymous = client_as(dev, "", Some(tenant)).await;
    let (token, _) = anonymous.login(email, password).await.expect("login");
    anonymous.close().await;
    token
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_tokens_and_keys_never_reach_the_log_snapshots_audit_or_logs() {
    let mut dev = Dev::start(3, &[("RUST_LOG", "debug")]);
    let op = operator(&dev, Some("acme")).await;
    ok(&op, create_tenant("acme")).await;
    let admin_password = "Correct-Horse-7731";
    ok(&op, create_user("admin@acme.test", admin_password, &["admin"])).await;

    let session = login(&dev, "acme", "admin@acme.test", admin_password).await;
    let admin = client_as(&dev, &session, None).await;
    let invite_token = match ok(
        &admin,
        IdentityCall::InviteCreate { email: "new@acme.test".into(), roles: vec!["editor".into()], ttl_seconds: None },
    )
    .await
    {
        IdentityAnswer::Invitation { token, .. } => token,
        other => panic!("{other:?}"),
    };
    let invitee_password = "Battery-Staple-9942";
    let anonymous = client_as(&dev, "", None).await;
    ok(
        &anonymous,
        IdentityCall::InviteAccept {
            token: invite_token.clone(),
            display_name: "New".into(),
            password: invitee_password.into(),
        },
    )
    .await;
    let invitee_session = login(&dev, "acme", "new@acme.test", invitee_password).await;
    let changed_password = "Tr0ub4dor-and-3";
    ok(
        &admin,
        IdentityCall::UserUpdate {
            user: "new@acme.test".into(),
            email: None,
            display_name: None,
            password: Some(changed_password.into()),
        },
    )
    .await;
    let (key_id, key) = match ok(
        &admin,
        IdentityCall::ApiKeyCreate { name: "ci".into(), scopes: vec!["kv:*".into()], ttl_seconds: None },
    )
    .await
    {
        IdentityAnswer::ApiKey { key, secret } => (key.id, secret),
        other => panic!("{other:?}"),
    };
    let rotated = match ok(&admin, IdentityCall::ApiKeyRotate { key: key_id, grace_seconds: Some(60) }).await {
        IdentityAnswer::ApiKey { secret, .. } => secret,
        other => panic!("{other:?}"),
    };
    for secret in [&key, &rotated] {
        let service = client_as(&dev, secret, None).await;
        service.put("from-key", "v").await.expect("put with key");
        service.close().await;
    }
    // Snapshots on every node, so the secrets would be in them if anywhere.
    for node in 1..=3 {
        let c = dev.client_for(node).await;
        c.snapshot().await.expect("snapshot");
        c.close().await;
    }
    let audit =
        serde_json::to_string(&op.audit_page(&caddy_client::AuditFilter::default(), 0, 1000).await.expect("audit").0)
            .expect("json");
    for c in [op, admin, anonymous] {
        c.close().await;
    }
    dev.stop();

    let secrets =
        [admin_password, invitee_password, changed_password, &session, &invitee_session, &invite_token, &key, &rotated];
    for secret in secrets {
        assert!(!audit.contains(secret), "a secret is in the audit trail");
    }
    let mut paths = Vec::new();
    files(&dev.dir, &mut paths);
    let mut saw_email = false;
    let mut scanned = 0;
    for path in &paths {
        let bytes = std::fs::read(path).expect("read file");
        scanned += bytes.len();
        // The scan sees plaintext records: the user's email is stored.
        saw_email |= contains(&bytes, b"new@acme.test");
        for secret in secrets {
            assert!(!contains(&bytes, secret.as_bytes()), "a secret is stored in {}", path.display());
        }
    }
    assert!(saw_email, "the scan must see stored records ({} files, {scanned} bytes)", paths.len());
    let names: Vec<String> = paths.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into()).collect();
    assert!(names.iter().any(|n| n.ends_with(".snap")), "{names:?}");
    assert!(names.iter().any(|n| n == "caddyd.log"), "{names:?}");
}

fn assert_refused(result: Result<impl std::fmt::Debug, ClientError>, what: &str) {
    match result {
        Ok(v) => panic!("{what} succeeded: {v:?}"),
        Err(e) => assert!(
            matches!(e.code(), ErrorCode::PermissionDenied | ErrorCode::Unauthenticated),
            "{what}: unexpected error {e}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_reach_neither_other_tenants_nor_the_cluster() {
    let dev = Dev::start(1, &[]);
    let op = operator(&dev, None).await;
    for t in ["acme", "globex"] {
        ok(&op, create_tenant(t)).await;
        let tenant_op = operator(&dev, Some(t)).await;
        ok(&tenant_op, create_user(&format!("admin@{t}.test"), "password-123", &["admin"])).await;
        tenant_op.put("secret", format!("{t} data")).await.expect("put");
        tenant_op.close().await;
    }
    op.put("secret", "cluster data").await.expect("cluster put");
    let session = login(&dev, "acme", "admin@acme.test", "password-123").await;

    // Its own namespace: separate from the cluster's and globex's.
    let acme = client_as(&dev, &session, None).await;
    let own = acme.get("secret").await.expect("get").kv.expect("value");
    assert_eq!(own.value, b"acme data");
    assert_eq!(own.key, "secret", "keys are shown without the namespace prefix");
    let listed = acme.list("", "", 100, false).await.expect("list");
    assert_eq!(listed.kvs.len(), 1, "{listed:?}");
    let mut watch = acme.watch("", listed.revision + 1);
    op.put("cluster-only", "1").await.expect("put");
    acme.put("mine", "1").await.expect("put");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("event").expect("open");
    assert_eq!(event.expect("event").kv.expect("kv").key, "mine");

    // Everything aimed at globex.
    let foreign = client_as(&dev, &session, Some("globex")).await;
    assert_refused(foreign.get("secret").await, "get");
    assert_refused(foreign.put("secret", "stolen").await, "put");
    assert_refused(foreign.delete("secret").await, "delete");
    assert_refused(foreign.list("", "", 10, false).await, "list");
    let mut foreign_watch = foreign.watch("", 0);
    let first = tokio::time::timeout(Duration::from_secs(10), foreign_watch.next()).await.expect("answer");
    assert_refused(first.expect("an answer"), "watch");
    let calls = vec![
        IdentityCall::TenantGet,
        IdentityCall::TenantUsage,
        IdentityCall::TenantUpdate { name: Some("pwned".into()), plan: None, quotas: QuotasPatch::default() },
        IdentityCall::TenantSuspend,
        IdentityCall::TenantDelete { confirm: "globex".into() },
        IdentityCall::TenantList { start_after: String::new(), limit: 10 },
        IdentityCall::UserGet { user: "admin@globex.test".into() },
        IdentityCall::UserGet { user: "user-1".into() },
        IdentityCall::UserList { search: String::new(), start_after: String::new(), limit: 10 },
        IdentityCall::UserExport { user: "user-1".into() },
        IdentityCall::UserUpdate { user: "user-1".into(), email: None, display_name: Some("x".into()), password: None },
        IdentityCall::UserSetDisabled { user: "user-1".into(), disabled: true },
        IdentityCall::UserDelete { user: "user-1".into() },
        IdentityCall::UserErase { user: "user-1".into() },
        create_user("mole@globex.test", "password-123", &["owner"]),
        IdentityCall::InviteCreate { email: "m@globex.test".into(), roles: vec!["owner".into()], ttl_seconds: None },
        IdentityCall::RoleCreate {
            name: "r".into(),
            description: String::new(),
            permissions: vec!["kv:read".into()],
            inherits: vec![],
        },
        IdentityCall::RoleList,
        IdentityCall::RoleGrant { role: "owner".into(), user: Some("user-1".into()), team: None },
        IdentityCall::TeamCreate { name: "t".into() },
        IdentityCall::TeamList,
        IdentityCall::ApiKeyCreate { name: "k".into(), scopes: vec!["kv:read".into()], ttl_seconds: None },
        IdentityCall::ApiKeyList,
        IdentityCall::ApiKeyRevoke { key: "key-1".into() },
        IdentityCall::SessionList { user: Some("user-1".into()) },
        IdentityCall::SessionTerminate { session: None, user: Some("user-1".into()) },
        IdentityCall::AuditList { actor: None, action: None, from_ms: None, to_ms: None, after_seq: 0, limit: 10 },
        IdentityCall::AuditVerify { after_seq: 0, after_hash: String::new() },
        IdentityCall::AuditRetention,
        IdentityCall::AuditRetentionSet { max_age_days: None, max_entries: Some(10) },
    ];
    for call in &calls {
        assert_refused(foreign.identity(call).await, call.name());
    }
    // The cluster itself.
    assert_refused(acme.status().await, "status");
    assert_refused(acme.snapshot().await, "snapshot");
    assert_refused(acme.join_token(60).await, "join token");
    assert_refused(acme.transfer_leader(1).await, "transfer leader");
    assert_refused(acme.remove_node(2).await, "remove node");
    assert_refused(acme.add_node("127.0.0.1:1", false).await, "add node");
    assert_refused(acme.backup(Vec::new(), |_, _| {}).await, "backup");

    // globex is untouched.
    let globex = operator(&dev, Some("globex")).await;
    assert_eq!(globex.get("secret").await.expect("get").kv.expect("kv").value, b"globex data");
    match ok(&globex, IdentityCall::TenantGet).await {
        IdentityAnswer::Tenant { tenant } => {
            assert_eq!((tenant.name.as_str(), tenant.status.as_str()), ("globex", "active"))
        }
        other => panic!("{other:?}"),
    }
    match ok(&globex, IdentityCall::UserList { search: String::new(), start_after: String::new(), limit: 10 }).await {
        IdentityAnswer::Users { users, .. } => assert_eq!(users.len(), 1, "{users:?}"),
        other => panic!("{other:?}"),
    }
    // No credential at all.
    let nobody = client_as(&dev, "", Some("acme")).await;
    assert_refused(nobody.get("secret").await, "anonymous get");
    assert_refused(nobody.identity(&IdentityCall::TenantGet).await, "anonymous tenant get");
    assert_eq!(
        nobody.login("admin@acme.test", "wrong-password").await.expect_err("bad password").code(),
        ErrorCode::Unauthenticated
    );
    for c in [op, acme, foreign, globex, nobody] {
        c.close().await;
    }
}

/// What a request kind must do for a caller: succeed, be refused as
/// unauthenticated, be refused as not permitted, or (for the operator's
/// membership changes on a one-node cluster) fail for any reason but those.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Ok,
    Unauthenticated,
    Denied,
    NotRefused,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_table_for_key_value_and_cluster_requests() {
    let dev = Dev::start(1, &[]);
    let op = operator(&dev, Some("acme")).await;
    ok(&op, create_tenant("acme")).await;
    ok(&op, create_tenant("globex")).await;
    let mut credentials: Vec<(&str, String, Option<&str>)> = vec![("operator-cluster", String::new(), None)];
    for role in ["owner", "admin", "editor", "viewer"] {
        ok(&op, create_user(&format!("{role}@acme.test"), "password-123", &[role])).await;
        credentials.push((role, login(&dev, "acme", &format!("{role}@acme.test"), "password-123").await, None));
    }
    let key = |answer: IdentityAnswer| match answer {
        IdentityAnswer::ApiKey { key, secret } => (key.id, secret),
        other => panic!("{other:?}"),
    };
    let scopes = vec!["kv:*".to_string()];
    let (_, live) =
        key(ok(&op, IdentityCall::ApiKeyCreate { name: "a".into(), scopes: scopes.clone(), ttl_seconds: None }).await);
    let (dead_id, dead) =
        key(ok(&op, IdentityCall::ApiKeyCreate { name: "b".into(), scopes, ttl_seconds: None }).await);
    ok(&op, IdentityCall::ApiKeyRevoke { key: dead_id }).await;
    credentials.push(("key", live, None));
    credentials.push(("revoked-key", dead, None));
    ok(&op, create_user("short@acme.test", "password-123", &["admin"])).await;
    let anonymous = client_as(&dev, "", Some("acme")).await;
    let expiring = match ok(
        &anonymous,
        IdentityCall::Login { email: "short@acme.test".into(), password: "password-123".into(), ttl_seconds: Some(1) },
    )
    .await
    {
        IdentityAnswer::Session { token, .. } => token,
        other => panic!("{other:?}"),
    };
    credentials.push(("expired-session", expiring, None));
    let globex_op = operator(&dev, Some("globex")).await;
    ok(&globex_op, create_user("admin@globex.test", "password-123", &["admin"])).await;
    credentials.push((
        "other-tenant-admin",
        login(&dev, "globex", "admin@globex.test", "password-123").await,
        Some("acme"),
    ));
    credentials.push(("anonymous", String::new(), Some("acme")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    op.put("seed", "v").await.expect("seed");

    let kv_write = |who: &str| match who {
        "operator-cluster" | "owner" | "admin" | "editor" | "key" => Expect::Ok,
        "viewer" | "other-tenant-admin" => Expect::Denied,
        _ => Expect::Unauthenticated,
    };
    let kv_read = |who: &str| match who {
        "viewer" => Expect::Ok,
        other => kv_write(other),
    };
    let cluster = |who: &str| match who {
        "operator-cluster" => Expect::Ok,
        "owner" | "admin" | "editor" | "viewer" | "key" | "other-tenant-admin" => Expect::Denied,
        _ => Expect::Unauthenticated,
    };
    let membership = |who: &str| match cluster(who) {
        Expect::Ok => Expect::NotRefused,
        other => other,
    };
    let admin_credential = ClientConfig::from_file(dev.client_toml()).expect("config").credential;
    let mut checked = 0;
    for (who, credential, tenant) in &credentials {
        let credential = if *who == "operator-cluster" { admin_credential.as_str() } else { credential.as_str() };
        let c = client_as(&dev, credential, *tenant).await;
        // The put comes first so that an allowed watch from revision 1 has an event to deliver.
        let put = c.put("k", "v").await.map(drop);
        let mut watch = c.watch("", 1);
        let watched = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("watch answers");
        let results: Vec<(&str, Expect, Result<(), ClientError>)> = vec![
            ("put", kv_write(who), put),
            ("delete", kv_write(who), c.delete("k").await.map(drop)),
            ("get", kv_read(who), c.get("seed").await.map(drop)),
            ("list", kv_read(who), c.list("", "", 10, false).await.map(drop)),
            ("watch", kv_read(who), watched.map(|r| r.map(drop)).unwrap_or(Ok(()))),
            ("status", cluster(who), c.status().await.map(drop)),
            ("snapshot", cluster(who), c.snapshot().await.map(drop)),
            ("join token", cluster(who), c.join_token(60).await.map(drop)),
            ("backup", cluster(who), c.backup(Vec::new(), |_, _| {}).await.map(drop)),
            ("remove node", membership(who), c.remove_node(9).await.map(drop)),
            ("transfer leader", membership(who), c.transfer_leader(9).await.map(drop)),
        ];
        for (what, expect, result) in results {
            let code = result.as_ref().err().map(ClientError::code);
            let fits = match expect {
                Expect::Ok => result.is_ok(),
                Expect::Unauthenticated => code == Some(ErrorCode::Unauthenticated),
                Expect::Denied => code == Some(ErrorCode::PermissionDenied),
                Expect::NotRefused => !matches!(code, Some(ErrorCode::Unauthenticated | ErrorCode::PermissionDenied)),
            };
            assert!(fits, "{what} as {who}: expected {expect:?}, got {result:?}");
            checked += 1;
        }
        c.close().await;
    }
    assert_eq!(checked, credentials.len() * 11);
    for c in [op, globex_op, anonymous] {
        c.close().await;
    }
}
