//! `caddyctl doc ...`: CAD documents (create, list, inspect, rename, trash,
//! scripted edits, export to JSON or SVG, history, tags, live watch).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use caddy_client::caddy_doc::{Document, EditOp, Limits, ResolvedDoc, SvgOptions};
use caddy_client::doc_api::{DocEvent, DocInfo, DocTag, HistoryEntry};
use caddy_client::{ClientError, ErrorCode};
use serde_json::json;

use super::{Ctx, emit_json, emit_text, watch_until_deadline};
use crate::cli::{DocCommand, ExportFormat};
use crate::output::{datetime, datetime_opt, table};
use crate::views::block;

/// Page size when listing everything.
const PAGE: u32 = 500;

fn info_text(i: &DocInfo) -> String {
    block(&[
        ("id", i.id.clone()),
        ("name", i.name.clone()),
        ("created by", i.created_by.clone()),
        ("owner", i.owner.clone().unwrap_or_else(|| "-".into())),
        ("created", datetime(i.created_ms)),
        ("modified", datetime(i.modified_ms)),
        ("deleted", datetime_opt(i.deleted_ms)),
        ("changes", i.seq.to_string()),
        ("entities", i.entities.to_string()),
        ("bytes", i.bytes.to_string()),
        ("version", i.version.clone()),
    ])
}

fn json_of<T: serde::Serialize>(value: &T) -> anyhow::Result<serde_json::Value> {
    serde_json::to_value(value).context("encoding JSON")
}

fn docs_table(docs: &[DocInfo]) -> String {
    let rows: Vec<Vec<String>> = docs
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                d.seq.to_string(),
                d.entities.to_string(),
                d.bytes.to_string(),
                datetime(d.modified_ms),
                if d.deleted_ms.is_some() { "deleted".into() } else { String::new() },
            ]
        })
        .collect();
    table(&["ID", "NAME", "CHANGES", "ENTITIES", "BYTES", "MODIFIED", ""], &rows)
}

fn history_table(entries: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|h| {
            vec![
                h.seq.to_string(),
                h.action.clone(),
                h.author.clone(),
                datetime(h.stamp_ms),
                h.bytes.to_string(),
                h.version.chars().take(16).collect(),
            ]
        })
        .collect();
    table(&["SEQ", "ACTION", "AUTHOR", "TIME", "BYTES", "VERSION"], &rows)
}

fn tags_table(tags: &[DocTag]) -> String {
    let rows: Vec<Vec<String>> = tags
        .iter()
        .map(|t| vec![t.name.clone(), t.seq.to_string(), t.created_by.clone(), datetime(t.created_ms)])
        .collect();
    table(&["TAG", "SEQ", "BY", "TIME"], &rows)
}

async fn show_info(ctx: &Ctx, out: &mut dyn Write, info: &DocInfo, line: String) -> anyhow::Result<()> {
    if ctx.json { emit_json(out, &json_of(info)?) } else { emit_text(out, &format!("{line}\n")) }
}

/// Reads an edit batch from FILE (or stdin for `-`).
fn read_ops(file: &Path) -> anyhow::Result<Vec<EditOp>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading operations from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    EditOp::parse_batch(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn summary(r: &ResolvedDoc) -> String {
    format!(
        "{} layers, {} entities, {} groups/blocks, {} problems\n",
        r.layers.len(),
        r.entities.len(),
        r.nodes.len(),
        r.problems.len()
    )
}

/// Runs one document command.
pub async fn run(ctx: &Ctx, cmd: DocCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let c = &ctx.client;
    match cmd {
        DocCommand::Create { name, units } => {
            let info = c.doc_create(&name, units.as_deref()).await?;
            show_info(ctx, out, &info, format!("created {} {:?}", info.id, info.name)).await
        }
        DocCommand::List { deleted, all, limit, after } => {
            let mut docs = Vec::new();
            let mut after = after;
            loop {
                let (page, more) = c.doc_list(after.as_deref(), if all { PAGE } else { limit }, deleted).await?;
                after = page.last().map(|d| d.id.clone());
                docs.extend(page);
                if !all || !more {
                    break;
                }
            }
            if ctx.json { emit_json(out, &json_of(&docs)?) } else { emit_text(out, &docs_table(&docs)) }
        }
        DocCommand::Get { id } => {
            let info = c.doc_info(&id).await?;
            let resolved = if info.deleted_ms.is_none() { Some(c.doc_resolve(&id, None).await?) } else { None };
            if ctx.json {
                let mut value = json_of(&info)?;
                if let (Some(r), Some(obj)) = (&resolved, value.as_object_mut()) {
                    obj.insert(
                        "drawing".into(),
                        json!({"layers": r.layers.len(), "entities": r.entities.len(), "nodes": r.nodes.len(), "problems": r.problems.len()}),
                    );
                }
                emit_json(out, &value)
            } else {
                let mut text = info_text(&info);
                if let Some(r) = &resolved {
                    text.push_str(&format!("drawing: {}", summary(r)));
                    for p in r.problems.iter().take(20) {
                        text.push_str(&format!("  problem: {}\n", serde_json::to_string(p).unwrap_or_default()));
                    }
                }
                emit_text(out, &text)
            }
        }
        DocCommand::Rename { id, name } => {
            let info = c.doc_rename(&id, &name).await?;
            show_info(ctx, out, &info, format!("renamed {} to {:?}", info.id, info.name)).await
        }
        DocCommand::Delete { id } => {
            let info = c.doc_delete(&id).await?;
            show_info(
                ctx,
                out,
                &info,
                format!("moved {} to the trash (restore with: caddyctl doc restore {})", info.id, info.id),
            )
            .await
        }
        DocCommand::Restore { id } => {
            let info = c.doc_restore(&id).await?;
            show_info(ctx, out, &info, format!("restored {}", info.id)).await
        }
        DocCommand::Apply { id, file } => {
            let ops = read_ops(&file)?;
            let handle = c.doc_open(&id).await?;
            let report = handle.edit(|d| d.apply_ops(&ops)).map_err(|e| anyhow::anyhow!("nothing applied: {e}"))?;
            let seq = handle.push().await?;
            if ctx.json {
                emit_json(out, &json!({"doc": id, "operations": ops.len(), "change": seq, "created": report.created}))
            } else {
                let mut text = match seq {
                    Some(seq) => format!("applied {} operations to {id} (change {seq})\n", ops.len()),
                    None => format!("applied {} operations to {id} (nothing changed)\n", ops.len()),
                };
                if !report.created.is_empty() {
                    text.push_str(&format!("created: {}\n", report.created.join(" ")));
                }
                emit_text(out, &text)
            }
        }
        DocCommand::Export { id, format, at, output } => {
            let resolved = c.doc_resolve(&id, at.as_deref()).await?;
            let body = match format {
                ExportFormat::Json => {
                    let mut s = serde_json::to_string_pretty(&resolved).context("encoding JSON")?;
                    s.push('\n');
                    s
                }
                ExportFormat::Svg => resolved.to_svg(&SvgOptions::default()),
            };
            match output {
                None => emit_text(out, &body),
                Some(path) => {
                    let tmp = super::cluster::tmp_path(&path);
                    std::fs::write(&tmp, body.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {} ({} bytes)", path.display(), body.len());
                    Ok(())
                }
            }
        }
        DocCommand::History { id, limit, all } => {
            let mut entries = Vec::new();
            let mut after = None;
            loop {
                let (page, more) = c.doc_history(&id, after, if all { PAGE } else { limit }).await?;
                after = page.last().map(|h| h.seq);
                entries.extend(page);
                if !all || !more {
                    break;
                }
            }
            if ctx.json { emit_json(out, &json_of(&entries)?) } else { emit_text(out, &history_table(&entries)) }
        }
        DocCommand::Tag { id, name, at } => {
            let tag = c.doc_tag(&id, &name, at).await?;
            if ctx.json {
                emit_json(out, &json_of(&tag)?)
            } else {
                emit_text(out, &format!("tagged change {} of {id} as {}\n", tag.seq, tag.name))
            }
        }
        DocCommand::Tags { id } => {
            let tags = c.doc_tags(&id).await?;
            if ctx.json { emit_json(out, &json_of(&tags)?) } else { emit_text(out, &tags_table(&tags)) }
        }
        DocCommand::Watch { id, since } => watch_until_deadline(ctx, watch(ctx, out, &id, since.as_deref())).await,
    }
}

/// Prints events as they arrive; a broken stream is re-opened from the
/// local replica's version, so no update is missed.
async fn watch(ctx: &Ctx, out: &mut dyn Write, id: &str, since: Option<&str>) -> anyhow::Result<()> {
    let mut replica = Document::replica(rand_peer(), Limits::default())?;
    let mut since: Option<Vec<u8>> = match since {
        Some(s) => Some(hex::decode(s).context("--since must be a hex version")?),
        None => None,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let opened = ctx.client.doc_watch(id, since.as_deref()).await;
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if retryable(&e) => {
                eprintln!("watch: {e}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let Some(item) = stream.next().await else {
                return Ok(());
            };
            let (event, payload) = match item {
                Ok(x) => x,
                Err(e) if retryable(&e) => {
                    eprintln!("watch: {e}; reconnecting from the local version");
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            backoff = Duration::from_millis(100);
            if !payload.is_empty() {
                replica
                    .import(&payload)
                    .map_err(|e| anyhow::anyhow!("the server sent bytes that do not import: {e}"))?;
            }
            since = Some(replica.version());
            if ctx.json {
                let mut value = json_of(&event)?;
                if let (DocEvent::Update { .. }, Some(obj)) = (&event, value.as_object_mut()) {
                    obj.insert("entities".into(), json!(replica.resolve().entities.len()));
                }
                emit_json(out, &value)?;
                continue;
            }
            let line = match &event {
                DocEvent::Update { seq, author, .. } => {
                    let author = if author.is_empty() { "-" } else { author.as_str() };
                    format!("update seq={seq} author={author} entities={}", replica.resolve().entities.len())
                }
                DocEvent::CaughtUp { seq, .. } => format!("caught-up seq={seq}"),
                DocEvent::Presence(p) => {
                    let cursor = p.state.cursor.map_or("-".to_string(), |[x, y]| format!("{x},{y}"));
                    format!(
                        "presence {} client={} cursor={cursor} selection=[{}] color={}",
                        p.user,
                        p.client,
                        p.state.selection.join(","),
                        if p.state.color.is_empty() { "-" } else { p.state.color.as_str() }
                    )
                }
                DocEvent::PresenceGone { user, client } => format!("presence-gone {user} client={client}"),
                DocEvent::Deleted => "deleted".to_string(),
            };
            emit_text(out, &format!("{line}\n"))?;
            if matches!(event, DocEvent::Deleted) {
                return Ok(());
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn retryable(e: &ClientError) -> bool {
    e.code() == ErrorCode::Unavailable || e.code() == ErrorCode::ResourceExhausted && e.to_string().contains("resume")
}

fn rand_peer() -> u64 {
    // Peer ids only need to be distinct per writer; this replica never writes.
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64 >> 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_example_parses_and_garbage_does_not() {
        assert_eq!(EditOp::parse_batch(crate::cli::DOC_APPLY_EXAMPLE).map(|o| o.len()).ok(), Some(2));
        assert!(EditOp::parse_batch("{\"op\": \"add\"}").is_err());
        assert!(EditOp::parse_batch("not json").is_err());
    }
}
