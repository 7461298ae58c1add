//! The README's Files walkthrough through `caddyctl` on a real 3-node
//! cluster: a folder, an upload with a tag, a second version, restoring the
//! first, downloading a chosen version, a share with a user who then reads
//! the file, a share link used without a credential, search, trash and
//! restore, and storage usage.

mod support;

use std::path::Path;

use serde_json::Value;
use support::Dev;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn files_walkthrough_through_the_cli() {
    let dev = Dev::start(3, &[]);
    dev.ctl_ok(&["tenant", "create", "acme", "--name", "Acme Corp"]);
    let acme = |args: &[&str]| -> String {
        let mut all = vec!["--tenant", "acme"];
        all.extend_from_slice(args);
        dev.ctl_ok(&all)
    };
    let acme_json = |args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&acme(&all))
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let first = b"0 LINE 10 0 0 SECTION survey rev A".repeat(40_000); // 1.3 MB: two chunks
    let second = b"0 LINE 10 0 0 SECTION survey rev B".repeat(10);
    let first_path = tmp.path().join("site-survey.dxf");
    let second_path = tmp.path().join("site-survey-rev-b.dxf");
    std::fs::write(&first_path, &first).expect("write");
    std::fs::write(&second_path, &second).expect("write");

    let folder = acme_json(&["file", "mkdir", "drawings"]);
    let folder_id = folder["id"].as_str().expect("folder id").to_owned();
    let uploaded = acme(&["file", "upload", path(&first_path), "--folder", &folder_id, "--tag", "survey"]);
    let id = uploaded
        .lines()
        .find_map(|l| l.strip_prefix("id:").map(str::trim))
        .expect("the upload prints the file's id")
        .to_owned();
    assert!(uploaded.contains("/drawings/site-survey.dxf"), "{uploaded}");
    let info = acme_json(&["file", "info", &id]);
    assert_eq!(info["size"].as_u64(), Some(first.len() as u64), "{info}");
    assert_eq!(info["tags"], serde_json::json!(["survey"]), "{info}");
    assert_eq!(info["media_type"], "image/vnd.dxf", "{info}");

    let v2 = acme_json(&["file", "upload", path(&second_path), "--as-version-of", &id]);
    assert_eq!((v2["id"].as_str(), v2["version"].as_u64()), (Some(id.as_str()), Some(2)), "{v2}");
    let versions = acme(&["file", "versions", &id]);
    let current: Vec<&str> = versions.lines().filter(|l| l.contains(" * ") || l.contains("*  ")).collect();
    assert!(current.len() == 1 && current[0].starts_with('2'), "{versions}");
    assert_eq!(versions.lines().count(), 3, "{versions}");
    let restored = acme_json(&["file", "restore-version", &id, "1"]);
    assert_eq!(restored["version"].as_u64(), Some(3), "{restored}");
    let current = tmp.path().join("current.dxf");
    acme(&["file", "download", &id, "-o", path(&current)]);
    assert_eq!(std::fs::read(&current).expect("read"), first, "version 3 holds the bytes of version 1");
    let copy = tmp.path().join("copy.dxf");
    acme(&["file", "download", &id, "-o", path(&copy), "--version", "2"]);
    assert_eq!(std::fs::read(&copy).expect("read"), second);

    // A share with Bob: before it he cannot see the file, after it he reads it.
    let create_bob = ["--tenant", "acme", "user", "create", "--email", "bob@acme.test", "--name", "Bob"];
    dev.ctl_in_ok(&[&create_bob[..], &["--role", "editor", "--password-stdin"]].concat(), "bob-password-12\n");
    let bob_creds = tmp.path().join("bob.cred");
    let bob = |args: &[&str]| {
        let mut all = vec!["--tenant", "acme", "--credentials", path(&bob_creds)];
        all.extend_from_slice(args);
        dev.ctl(&all)
    };
    dev.ctl_in_ok(
        &[
            "--tenant",
            "acme",
            "--credentials",
            path(&bob_creds),
            "login",
            "--email",
            "bob@acme.test",
            "--password-stdin",
        ],
        "bob-password-12\n",
    );
    let bobs_copy = tmp.path().join("bob.dxf");
    let refused = bob(&["file", "download", &id, "-o", path(&bobs_copy)]);
    assert!(!refused.status.success(), "Bob read a file nobody shared with him");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not_found"), "{refused:?}");
    let bob_user = json(&acme(&["--json", "user", "get", "bob@acme.test"]));
    let bob_id =
        bob_user["id"].as_str().or(bob_user["user"]["id"].as_str()).unwrap_or_else(|| panic!("{bob_user}")).to_owned();
    let shared = acme(&["file", "share", &id, &bob_id, "--access", "read", "--expires", "7d"]);
    assert!(shared.contains(&bob_id), "{shared}");
    let read = bob(&["file", "download", &id, "-o", path(&bobs_copy)]);
    assert!(read.status.success(), "{read:?}");
    assert_eq!(std::fs::read(&bobs_copy).expect("read"), first);
    let shares = acme(&["file", "shares", &id]);
    assert!(shares.contains(&bob_id) && shares.contains("read"), "{shares}");

    // A link works without any credential.
    let link = acme(&["file", "link", &id, "--expires", "1d"]);
    let token = link.split_whitespace().find(|w| w.starts_with("cl_")).expect("a link token").to_owned();
    let anonymous = tmp.path().join("anonymous.toml");
    let config = std::fs::read_to_string(dev.client_toml()).expect("client.toml");
    let dir = dev.client_toml().parent().expect("dir").to_path_buf();
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("credential") {
                "credential = \"\"".to_owned()
            } else if let Some(value) = l.strip_prefix("ca_cert = ") {
                let ca = dir.join(value.trim_matches('"'));
                format!("ca_cert = {:?}", path(&ca))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&anonymous, config).expect("write config");
    let linked = tmp.path().join("linked.dxf");
    let out = std::process::Command::new(support::bin("caddyctl"))
        .args(["--config", path(&anonymous), "file", "download", "--link", &token, "-o", path(&linked)])
        .env_remove("CADDY_CREDENTIALS")
        .env_remove("CADDY_TENANT")
        .output()
        .expect("caddyctl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&linked).expect("read"), first);

    let found = acme_json(&["file", "search", "--name", "survey", "--type", "image/"]);
    let found = found.as_array().expect("search results");
    assert_eq!(found.iter().map(|f| f["id"].as_str()).collect::<Vec<_>>(), vec![Some(id.as_str())], "{found:?}");

    // Trash and restore.
    acme(&["file", "rm", &id]);
    let trash = acme(&["file", "trash"]);
    assert!(trash.contains(&id) && trash.contains("site-survey.dxf"), "{trash}");
    let gone = dev.ctl(&["--tenant", "acme", "file", "info", &id]);
    assert!(String::from_utf8_lossy(&gone.stdout).contains("deleted"), "{gone:?}");
    acme(&["file", "restore", &id]);
    assert!(!acme(&["file", "trash"]).contains(&id));
    let listing = acme(&["file", "ls", &folder_id]);
    assert!(listing.contains("site-survey.dxf"), "{listing}");

    // Usage counts every stored version.
    let usage = acme_json(&["storage", "usage"]);
    assert_eq!(usage["versions"].as_u64(), Some(3), "{usage}");
    let distinct = (first.len() + second.len()) as u64;
    assert!(usage["file_bytes"].as_u64().is_some_and(|u| u >= distinct), "{usage}");
    let text = acme(&["storage", "usage"]);
    assert!(text.contains("versions") && text.contains('3'), "{text}");
}
