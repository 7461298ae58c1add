//! `caddyctl cluster ...`

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{Ctx, emit_json, emit_text};
use crate::cli::ClusterCommand;
use crate::failure::usage;
use crate::output;

/// Runs one cluster command.
pub async fn run(ctx: &Ctx, cmd: ClusterCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = &ctx.client;
    match cmd {
        ClusterCommand::Status => {
            let status = client.status().await?;
            if ctx.json {
                emit_json(out, &output::status_json(&status))
            } else {
                emit_text(out, &output::status_text(&status))
            }
        }
        ClusterCommand::AddNode { addr, learner } => {
            let m = client.add_node(&addr, learner).await?;
            membership(ctx, out, &m)
        }
        ClusterCommand::RemoveNode { id } => {
            let m = client.remove_node(id).await?;
            membership(ctx, out, &m)
        }
        ClusterCommand::TransferLeader { id } => {
            let m = client.transfer_leader(id).await?;
            membership(ctx, out, &m)
        }
        ClusterCommand::Snapshot => {
            let s = client.snapshot().await?;
            if ctx.json {
                emit_json(out, &json!({ "index": s.index, "term": s.term }))
            } else {
                emit_text(out, &format!("snapshot index={} term={}\n", s.index, s.term))
            }
        }
        ClusterCommand::JoinToken { list: true, .. } => {
            let tokens = client.join_tokens().await?;
            if ctx.json {
                emit_json(out, &output::join_tokens_json(&tokens))
            } else {
                emit_text(out, &output::join_tokens_text(&tokens))
            }
        }
        ClusterCommand::JoinToken { revoke: Some(which), .. } => {
            let id = client.revoke_join_token(&which).await?;
            if ctx.json {
                emit_json(out, &json!({ "revoked": id }))
            } else {
                emit_text(out, &format!("revoked join token {id}\n"))
            }
        }
        ClusterCommand::RotateCerts => {
            let rotated = client.rotate_certs().await?;
            if ctx.json {
                emit_json(out, &output::rotated_json(&rotated))?;
            } else {
                emit_text(out, &output::rotated_text(&rotated))?;
            }
            let failed: Vec<String> =
                rotated.members.iter().filter(|m| !m.error.is_empty()).map(|m| m.id.to_string()).collect();
            if !failed.is_empty() {
                anyhow::bail!(
                    "the certificates of node(s) {} were not rotated; their old ones stay valid",
                    failed.join(", ")
                );
            }
            Ok(())
        }
        ClusterCommand::JoinToken { ttl, .. } => {
            let ttl_seconds = ttl.as_secs();
            if ttl_seconds == 0 {
                return Err(usage("--ttl must be at least 1s"));
            }
            let t = client.join_token(ttl_seconds).await?;
            if ctx.json {
                emit_json(out, &json!({ "token": t.token, "id": t.id, "expires_at_ms": t.expires_at_ms }))
            } else {
                emit_text(out, &format!("{}\n", t.token))
            }
        }
        ClusterCommand::Backup { output: path } => {
            let bytes = backup(ctx, &path).await?;
            if ctx.json {
                emit_json(out, &json!({ "bytes": bytes, "path": path.display().to_string() }))
            } else {
                emit_text(out, &format!("wrote {bytes} bytes to {}\n", path.display()))
            }
        }
    }
}

fn membership(ctx: &Ctx, out: &mut dyn Write, m: &caddy_client::pb::MembershipResponse) -> anyhow::Result<()> {
    if ctx.json {
        emit_json(out, &output::membership_json(m))
    } else {
        emit_text(out, &format!("{}\n", output::membership_text(m)))
    }
}

/// `FILE.tmp` next to `FILE`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn progress_bar(json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Some(style) = transfer_style() {
        bar.set_style(style);
    }
    bar
}

/// The look of byte-transfer progress bars (backups, file transfers).
pub(super) fn transfer_style() -> Option<ProgressStyle> {
    ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})").ok()
}

/// Streams the backup into `FILE.tmp`, fsyncs it and renames it to `FILE`.
async fn backup(ctx: &Ctx, path: &Path) -> anyhow::Result<u64> {
    let tmp = tmp_path(path);
    let file = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
    let bar = progress_bar(ctx.json);
    let progress = bar.clone();
    let written = async {
        let mut writer = tokio::io::BufWriter::new(file);
        let bytes = ctx
            .client
            .backup(&mut writer, move |done, total| {
                if total > 0 {
                    progress.set_length(total);
                }
                progress.set_position(done);
            })
            .await?;
        writer.flush().await.with_context(|| format!("writing {}", tmp.display()))?;
        writer.into_inner().sync_all().await.with_context(|| format!("syncing {}", tmp.display()))?;
        anyhow::Ok(bytes)
    }
    .await;
    bar.finish_and_clear();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // Make the rename durable; best effort where directories cannot be opened.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_path_appends_suffix() {
        assert_eq!(tmp_path(Path::new("/b/backup.bin")), PathBuf::from("/b/backup.bin.tmp"));
        assert_eq!(tmp_path(Path::new("out")), PathBuf::from("out.tmp"));
    }
}
