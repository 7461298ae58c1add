//! `caddyctl audit ...`: listing, JSON-lines export, chain verification and
//! retention. Listing, export and verification follow the server's pages
//! (each request looks at a bounded slice of the chain).

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context as _, bail};
use caddy_client::AuditFilter;
use caddy_client::identity::{IdentityAnswer, IdentityCall, MAX_PAGE};
use serde_json::json;

use super::cluster::tmp_path;
use super::identity::{answer_json, answer_text, call_and_show, show, unexpected};
use super::{Ctx, emit_json, emit_text};
use crate::cli::{AuditCommand, AuditRetentionCommand};

/// Runs one audit command.
pub async fn run(ctx: &Ctx, cmd: AuditCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List { actor, action, since, until, after_seq, limit } => {
            let filter = AuditFilter { actor, action, from_ms: since, to_ms: until };
            let (entries, next) = ctx.client.audit_list(&filter, after_seq, limit as usize).await?;
            show(ctx, out, &IdentityAnswer::Audit { entries, more: next.is_some(), next_after_seq: next })
        }
        AuditCommand::Export { output, after_seq } => export(ctx, out, output.as_deref(), after_seq).await,
        AuditCommand::Retention(AuditRetentionCommand::Show) => {
            call_and_show(ctx, out, IdentityCall::AuditRetention).await
        }
        AuditCommand::Retention(AuditRetentionCommand::Set { days, max_entries }) => {
            call_and_show(ctx, out, IdentityCall::AuditRetentionSet { max_age_days: days, max_entries }).await
        }
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

/// Pages through the trail after `after_seq`, writing one JSON object per
/// line to `w`; returns the number of entries.
async fn write_lines(ctx: &Ctx, w: &mut dyn Write, mut after_seq: u64) -> anyhow::Result<u64> {
    let mut count = 0;
    // An export must be whole: entries pruned before (or while) it ran
    // would otherwise be missing from the archive without a word.
    let mut previous: Option<(u64, String)> = None;
    loop {
        let (entries, next) = ctx.client.audit_page(&AuditFilter::default(), after_seq, MAX_PAGE).await?;
        for entry in &entries {
            let expected = previous.as_ref().map_or(after_seq, |(seq, _)| *seq).saturating_add(1);
            let first_of_chain = previous.is_none() && after_seq == 0;
            if entry.seq != expected && !first_of_chain {
                bail!(
                    "entries {expected}..{} were pruned before they were exported; \
                     export from the checkpoint on (`audit retention show`) into a new file",
                    entry.seq.saturating_sub(1)
                );
            }
            if let Some((_, hash)) = &previous
                && entry.prev_hash != *hash
            {
                bail!(
                    "entry {} does not continue entry {} (the trail changed during the export)",
                    entry.seq,
                    expected - 1
                );
            }
            previous = Some((entry.seq, entry.hash.clone()));
            let line = serde_json::to_string(entry).context("encoding JSON")?;
            writeln!(w, "{line}").context("writing the export")?;
            count += 1;
        }
        match next {
            Some(next) => after_seq = next,
            None => break,
        }
    }
    w.flush().context("writing the export")?;
    Ok(count)
}

/// `audit export`: JSON lines on stdout, or into FILE (through FILE.tmp).
async fn export(ctx: &Ctx, out: &mut dyn Write, output: Option<&Path>, after_seq: u64) -> anyhow::Result<()> {
    let Some(path) = output else {
        write_lines(ctx, out, after_seq).await?;
        return Ok(());
    };
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut writer = BufWriter::new(file);
    let written = async {
        let count = write_lines(ctx, &mut writer, after_seq).await?;
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
