//! `caddyctl audit ...`: listing, JSON-lines export and chain verification.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, bail};
use caddy_client::identity::{IdentityAnswer, IdentityCall, MAX_PAGE};
use serde_json::json;

use super::cluster::tmp_path;
use super::identity::{answer_json, answer_text, call_and_show, unexpected};
use super::{Ctx, emit_json, emit_text};
use crate::cli::AuditCommand;

/// Runs one audit command.
pub async fn run(ctx: &Ctx, cmd: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List { actor, action, since, until, after_seq, limit } => {
            let call = IdentityCall::AuditList { actor, action, from_ms: since, to_ms: until, after_seq, limit };
            call_and_show(ctx, out, call).await
        }
        AuditCommand::Export { output } => export(ctx, out, output.as_deref()).await,
        AuditCommand::Verify => {
            let answer = ctx.client.audit_verify().await?;
            let IdentityAnswer::Verified { broken, .. } = &answer else {
                return Err(unexpected("verified", &answer));
            };
            if ctx.json {
                emit_json(out, &answer_json(&answer)?)?;
            } else {
                emit_text(out, &answer_text(&answer))?;
            }
            match broken {
                Some(b) => bail!("audit chain verification failed at seq {}", b.seq),
                None => Ok(()),
            }
        }
    }
}

/// Pages through the whole trail, writing one JSON object per line to `w`;
/// returns the number of entries.
async fn write_lines(ctx: &Ctx, w: &mut dyn Write) -> anyhow::Result<u64> {
    let mut after_seq = 0;
    let mut count = 0;
    loop {
        let (entries, more) = ctx.client.audit_page(after_seq, MAX_PAGE).await?;
        for entry in &entries {
            let line = serde_json::to_string(entry).context("encoding JSON")?;
            writeln!(w, "{line}").context("writing the export")?;
            count += 1;
        }
        match entries.last() {
            Some(last) if more => after_seq = last.seq,
            _ => break,
        }
    }
    w.flush().context("writing the export")?;
    Ok(count)
}

/// `audit export`: JSON lines on stdout, or into FILE (through FILE.tmp).
async fn export(ctx: &Ctx, out: &mut dyn Write, output: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = output else {
        write_lines(ctx, out).await?;
        return Ok(());
    };
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = BufWriter::new(file);
    let written = async {
        let count = write_lines(ctx, &mut writer).await?;
        writer.get_ref().sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        anyhow::Ok(count)
    }
    .await;
    drop(writer);
    let count = match written {
        Ok(count) => count,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if ctx.json {
        emit_json(out, &json!({ "entries": count, "path": path.display().to_string() }))
    } else {
        emit_text(out, &format!("exported {count} audit entries to {}\n", path.display()))
    }
}
