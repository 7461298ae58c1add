//! The tenants-and-users story through `caddyctl` on a real 3-node cluster:
//! create a tenant, invite and accept a user, log in as that user, be refused
//! an admin action, succeed at a permitted one, see both in the audit log and
//! verify the chain; then the rest of the identity commands.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use support::Dev;

fn ctl_in(dev: &Dev, args: &[&str], input: &str) -> Output {
    dev.ctl_in(args, input)
}

fn ok_in(dev: &Dev, args: &[&str], input: &str) -> String {
    dev.ctl_in_ok(args, input)
}

fn ok(dev: &Dev, args: &[&str]) -> String {
    ok_in(dev, args, "")
}

fn json(dev: &Dev, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let text = ok(dev, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("caddyctl {args:?}: not JSON ({e}): {text}"))
}

/// The first string field named `name` anywhere in `v`.
fn field(v: &Value, name: &str) -> Option<String> {
    match v {
        Value::Object(map) => map
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(|x| field(x, name))),
        Value::Array(items) => items.iter().find_map(|x| field(x, name)),
        _ => None,
    }
}

fn audit_entries(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map.get("entries").and_then(Value::as_array).cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_invite_login_refusal_and_audit_through_the_cli() {
    let dev = Dev::start(3, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let bob_cred = dir.path().join("bob.cred");
    let bob_cred = bob_cred.to_str().expect("path");

    ok(&dev, &["tenant", "create", "acme", "--name", "Acme Corp"]);
    ok_in(
        &dev,
        &[
            "--tenant",
            "acme",
            "user",
            "create",
            "--email",
            "alice@acme.test",
            "--name",
            "Alice",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "alice-password-1\n",
    );
    let invite = json(&dev, &["--tenant", "acme", "invite", "create", "--email", "bob@acme.test", "--role", "editor"]);
    let token = field(&invite, "token").unwrap_or_else(|| panic!("no token in {invite}"));
    ok_in(&dev, &["invite", "accept", &token, "--name", "Bob", "--password-stdin"], "bob-password-12\n");
    // A used invitation cannot be accepted twice.
    assert!(
        !ctl_in(&dev, &["invite", "accept", &token, "--name", "Bob", "--password-stdin"], "bob-password-12\n")
            .status
            .success()
    );

    let out = ok_in(
        &dev,
        &["--tenant", "acme", "--credentials", bob_cred, "login", "--email", "bob@acme.test", "--password-stdin"],
        "bob-password-12\n",
    );
    assert!(out.contains("logged in"), "{out}");
    let mode = std::fs::metadata(bob_cred).expect("credentials file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "credentials file mode");
    let saved = std::fs::read_to_string(bob_cred).expect("read credentials");
    assert!(saved.contains("cs_"), "a session token is saved");
    assert!(!out.contains("cs_"), "the token is not printed");

    // A wrong password is refused.
    let out = ctl_in(
        &dev,
        &[
            "--tenant",
            "acme",
            "--credentials",
            &format!("{bob_cred}.x"),
            "login",
            "--email",
            "bob@acme.test",
            "--password-stdin",
        ],
        "not-bobs-password\n",
    );
    assert!(!out.status.success());

    // As Bob (an editor): refused an admin action, allowed a permitted one.
    let refused = ctl_in(
        &dev,
        &["--credentials", bob_cred, "user", "create", "--email", "eve@acme.test", "--name", "Eve", "--password-stdin"],
        "eve-password-123\n",
    );
    assert!(!refused.status.success(), "an editor may not create users");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("permission"), "{stderr}");
    ok(&dev, &["--credentials", bob_cred, "kv", "put", "drawing/1", "v1"]);
    let got = ok(&dev, &["--credentials", bob_cred, "kv", "get", "drawing/1"]);
    assert!(got.contains("v1"), "{got}");
    // The tenant's namespace is not the cluster's.
    let cluster = ctl_in(&dev, &["kv", "get", "drawing/1"], "");
    assert!(!String::from_utf8_lossy(&cluster.stdout).contains("v1"));
    // Bob cannot read the audit trail; the operator can.
    assert!(!ctl_in(&dev, &["--credentials", bob_cred, "audit", "list"], "").status.success());

    let audit = json(&dev, &["--tenant", "acme", "audit", "list", "--limit", "100"]);
    let entries = audit_entries(&audit);
    let bob = entries
        .iter()
        .find(|e| e["action"] == "invite.accept" && e["outcome"] == "ok")
        .and_then(|e| e["actor"].as_str())
        .unwrap_or_else(|| panic!("no accepted invitation in {audit}"))
        .to_owned();
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == bob.as_str() && e["action"] == "user.create" && e["outcome"] == "permission_denied"),
        "the refusal is audited: {audit}"
    );
    assert!(
        entries.iter().any(|e| e["actor"] == bob.as_str() && e["action"] == "kv.put" && e["outcome"] == "ok"),
        "the permitted write is audited: {audit}"
    );
    assert!(entries.iter().all(|e| !e["client_addr"].as_str().unwrap_or_default().is_empty()), "{audit}");
    let filtered = json(&dev, &["--tenant", "acme", "audit", "list", "--actor", &bob, "--action", "kv"]);
    assert_eq!(audit_entries(&filtered).len(), 1, "{filtered}");
    let verified = ok(&dev, &["--tenant", "acme", "audit", "verify"]);
    assert!(verified.contains("verified"), "{verified}");
    let export = dir.path().join("audit.jsonl");
    ok(&dev, &["--tenant", "acme", "audit", "export", "-o", export.to_str().expect("path")]);
    let lines = std::fs::read_to_string(&export).expect("export");
    assert_eq!(lines.lines().count(), entries.len(), "{lines}");
    for line in lines.lines() {
        serde_json::from_str::<Value>(line).expect("each line is JSON");
    }
    // Logging out ends the session.
    ok(&dev, &["--credentials", bob_cred, "logout"]);
    assert!(!Path::new(bob_cred).exists(), "logout removes the credentials file");

    rest_of_the_commands(&dev, dir.path());
}

/// Retention through `caddyctl` on a real node: the operator gives a
/// tenant's chain its own bound, the leader's periodic sweep prunes it, and
/// `audit verify` verifies from the checkpoint the pruning left.
#[test]
fn audit_retention_prunes_and_verify_starts_at_the_checkpoint() {
    let dev = Dev::start(1, &[("CADDY_AUDIT_SWEEP_INTERVAL_MS", "200")]);
    let t = ["--tenant", "acme"];
    let with = |args: &[&'static str]| -> Vec<&'static str> { t.iter().copied().chain(args.iter().copied()).collect() };
    ok(&dev, &["tenant", "create", "acme", "--name", "Acme"]);
    ok(&dev, &with(&["audit", "retention", "set", "--max-entries", "5"]));
    assert!(!ctl_in(&dev, &with(&["audit", "retention", "set", "--max-entries", "0"]), "").status.success());
    for i in 0..12 {
        let key = format!("k{i}");
        ok(&dev, &["--tenant", "acme", "kv", "put", &key, "v"]);
    }
    // 13 entries: the setting and 12 writes (the refused setting never
    // reached the log); 5 stay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shown = loop {
        let shown = json(&dev, &with(&["audit", "retention", "show"]));
        if shown["kept"] == 5 && shown["checkpoint"]["seq"] == 8 {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "the sweep did not prune: {shown}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(shown["own"]["max_entries"], 5, "{shown}");
    assert_eq!(shown["default"]["max_entries"], 10_000, "{shown}");
    let hash = shown["checkpoint"]["hash"].as_str().expect("hash").to_owned();
    let verified = ok(&dev, &with(&["audit", "verify"]));
    assert!(
        verified
            .starts_with(&format!("audit chain verified: entries 9..=13 from checkpoint at 8 {hash}, head seq 13\n")),
        "{verified}"
    );
    let listed = json(&dev, &with(&["audit", "list"]));
    let seqs: Vec<u64> = audit_entries(&listed).iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, [9, 10, 11, 12, 13], "{listed}");
    let exported = ok(&dev, &with(&["audit", "export", "--after-seq", "11"]));
    assert_eq!(exported.lines().count(), 2, "{exported}");
    let text = ok(&dev, &with(&["audit", "retention", "show"]));
    assert!(text.contains("own:     default age, 5 entries") && text.contains("pruned:  up to seq 8"), "{text}");
}

/// Every remaining identity command once, with its JSON form where useful.
fn rest_of_the_commands(dev: &Dev, dir: &Path) {
    let t = ["--tenant", "acme"];
    let with = |args: &[&'static str]| -> Vec<&'static str> { t.iter().copied().chain(args.iter().copied()).collect() };

    // Tenants.
    ok(dev, &["tenant", "create", "globex", "--name", "Globex", "--max-users", "2"]);
    let list = ok(dev, &["tenant", "list"]);
    assert!(list.contains("acme") && list.contains("globex"), "{list}");
    ok(dev, &["tenant", "update", "globex", "--plan", "enterprise"]);
    let got = json(dev, &["tenant", "get", "globex"]);
    assert_eq!(field(&got, "plan").as_deref(), Some("enterprise"), "{got}");
    ok(dev, &["tenant", "suspend", "globex"]);
    assert_eq!(field(&json(dev, &["tenant", "get", "globex"]), "status").as_deref(), Some("suspended"));
    ok(dev, &["tenant", "resume", "globex"]);
    let usage = json(dev, &["tenant", "usage", "acme"]);
    assert!(usage.to_string().contains("\"users\":2"), "{usage}");
    assert!(!ctl_in(dev, &["tenant", "delete", "globex", "--confirm", "acme"], "").status.success());
    ok(dev, &["tenant", "delete", "globex", "--confirm", "globex"]);
    assert!(!ctl_in(dev, &["tenant", "get", "globex"], "").status.success());

    // Users: import, list and export, update, disable, enable, GDPR.
    let csv = dir.join("users.csv");
    std::fs::write(
        &csv,
        "email,display_name,roles,password\ncarol@acme.test,\"Carol, C.\",viewer,carol-password-1\ndan@acme.test,Dan,viewer;editor,\n",
    )
    .expect("csv");
    let out = ok(dev, &["--tenant", "acme", "user", "import", csv.to_str().expect("path")]);
    assert!(out.contains('2'), "{out}");
    let exported = ok(dev, &with(&["user", "list", "--all", "--format", "csv"]));
    assert!(exported.contains("\"Carol, C.\"") && exported.contains("dan@acme.test"), "{exported}");
    let found = json(dev, &with(&["user", "list", "--search", "carol"]));
    assert_eq!(field(&found, "email").as_deref(), Some("carol@acme.test"), "{found}");
    ok(dev, &with(&["user", "update", "dan@acme.test", "--name", "Daniel"]));
    assert_eq!(field(&json(dev, &with(&["user", "get", "dan@acme.test"])), "display_name").as_deref(), Some("Daniel"));
    ok(dev, &with(&["user", "disable", "dan@acme.test"]));
    ok(dev, &with(&["user", "enable", "dan@acme.test"]));
    let gdpr = json(dev, &with(&["user", "export", "carol@acme.test"]));
    assert!(gdpr.to_string().contains("carol@acme.test"), "{gdpr}");
    ok(dev, &with(&["user", "erase", "carol@acme.test", "--yes"]));
    assert!(!ctl_in(dev, &with(&["user", "get", "carol@acme.test"]), "").status.success());
    ok(dev, &with(&["user", "delete", "dan@acme.test"]));

    // Roles and teams.
    ok(dev, &with(&["role", "create", "auditor", "--permission", "audit:read", "--inherits", "viewer"]));
    assert!(!ctl_in(dev, &with(&["role", "create", "viewer2", "--permission", "nope:read"]), "").status.success());
    let roles = ok(dev, &with(&["role", "list"]));
    assert!(roles.contains("auditor") && roles.contains("owner"), "{roles}");
    ok(dev, &with(&["team", "create", "designers"]));
    let teams = json(dev, &with(&["team", "list"]));
    let team = field(&teams, "id").unwrap_or_else(|| panic!("{teams}"));
    ok(dev, &["--tenant", "acme", "team", "add", &team, "--user", "alice@acme.test"]);
    ok(dev, &["--tenant", "acme", "role", "grant", "auditor", "--team", &team]);
    ok(dev, &with(&["role", "grant", "auditor", "--user", "alice@acme.test"]));
    ok(dev, &with(&["role", "revoke", "auditor", "--user", "alice@acme.test"]));
    ok(dev, &["--tenant", "acme", "team", "remove", &team, "--user", "alice@acme.test"]);

    // API keys: the key works as the protocol credential until revoked.
    let created = json(dev, &with(&["apikey", "create", "--name", "ci", "--scope", "kv:*"]));
    let secret = field(&created, "secret").unwrap_or_else(|| panic!("{created}"));
    let key_id = field(&created, "id").unwrap_or_else(|| panic!("{created}"));
    let key_file = dir.join("key.cred");
    std::fs::write(&key_file, format!("credential = \"{secret}\"\n")).expect("key credentials");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key_cred = key_file.to_str().expect("path");
    ok(dev, &["--credentials", key_cred, "kv", "put", "from-ci", "1"]);
    let rotated = json(dev, &["--tenant", "acme", "apikey", "rotate", &key_id, "--grace", "1s"]);
    assert_ne!(field(&rotated, "secret"), Some(secret.clone()));
    let keys = ok(dev, &with(&["apikey", "list"]));
    assert!(keys.contains("ci"), "{keys}");
    let new_id = field(&rotated, "id").unwrap_or_else(|| panic!("{rotated}"));
    ok(dev, &["--tenant", "acme", "apikey", "revoke", &new_id]);

    // Sessions.
    ok_in(
        dev,
        &[
            "--tenant",
            "acme",
            "--credentials",
            dir.join("alice.cred").to_str().expect("path"),
            "login",
            "--email",
            "alice@acme.test",
            "--password-stdin",
        ],
        "alice-password-1\n",
    );
    let sessions = json(dev, &with(&["session", "list", "--user", "alice@acme.test"]));
    let session = field(&sessions, "id").unwrap_or_else(|| panic!("{sessions}"));
    ok(dev, &["--tenant", "acme", "session", "terminate", &session]);
    assert!(
        !ctl_in(dev, &["--credentials", dir.join("alice.cred").to_str().expect("path"), "kv", "get", "x"], "")
            .status
            .success()
    );
    ok(dev, &with(&["session", "terminate", "--user", "alice@acme.test", "--all"]));

    // Everything above is in a chain that still verifies.
    let verified = json(dev, &with(&["audit", "verify"]));
    assert!(verified.to_string().contains("\"broken\":null"), "{verified}");
}
