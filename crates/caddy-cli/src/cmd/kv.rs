//! `caddyctl kv ...`

use std::io::Write;

use caddy_client::ErrorCode;
use futures::StreamExt;
use serde_json::json;

use super::{Ctx, emit_json, emit_text, watch_until_deadline};
use crate::cli::KvCommand;
use crate::failure::refused;
use crate::output;

/// Runs one key-value command.
pub async fn run(ctx: &Ctx, cmd: KvCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = &ctx.client;
    match cmd {
        KvCommand::Put { key, value, if_revision } => {
            let resp = match if_revision {
                Some(rev) => client.put_if(&key, value.into_bytes(), rev).await?,
                None => client.put(&key, value.into_bytes()).await?,
            };
            if ctx.json {
                emit_json(
                    out,
                    &json!({ "revision": resp.revision, "previous": resp.previous.as_ref().map(output::kv_json) }),
                )
            } else {
                emit_text(out, &format!("OK revision={}\n", resp.revision))
            }
        }
        KvCommand::Get { key, serializable } => {
            let resp = if serializable { client.get_serializable(&key).await? } else { client.get(&key).await? };
            let Some(kv) = resp.kv else { return Err(refused(ErrorCode::NotFound, format!("key not found: {key}"))) };
            if ctx.json {
                emit_json(out, &output::kv_json(&kv))
            } else {
                emit_text(out, &format!("{}\n", output::value_text(&kv.value)))
            }
        }
        KvCommand::Del { key, if_revision } => {
            let resp = match if_revision {
                Some(rev) => client.delete_if(&key, rev).await?,
                None => client.delete(&key).await?,
            };
            if ctx.json {
                emit_json(out, &json!({ "revision": resp.revision, "deleted": resp.deleted }))
            } else if resp.deleted {
                emit_text(out, &format!("deleted revision={}\n", resp.revision))
            } else {
                emit_text(out, &format!("not found (nothing deleted) revision={}\n", resp.revision))
            }
        }
        KvCommand::List { prefix, limit, all, serializable } => {
            let mut kvs = Vec::new();
            let mut start_after = String::new();
            let (more, revision) = loop {
                let page = client.list(&prefix, &start_after, limit, serializable).await?;
                let last = page.kvs.last().map(|kv| kv.key.clone());
                kvs.extend(page.kvs);
                match last {
                    Some(last) if all && page.more => start_after = last,
                    _ => break (page.more, page.revision),
                }
            };
            if ctx.json {
                emit_json(out, &output::list_json(&kvs, more, revision))
            } else {
                emit_text(out, &output::list_text(&kvs))?;
                if more {
                    eprintln!("(more keys: use --all or a larger --limit)");
                }
                Ok(())
            }
        }
        KvCommand::Watch { prefix, from_revision } => {
            let mut events = client.watch(&prefix, from_revision);
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            let watch = async {
                loop {
                    tokio::select! {
                        _ = &mut interrupted => return Ok(()),
                        item = events.next() => match item {
                            Some(Ok(event)) => {
                                if ctx.json {
                                    emit_json(out, &output::event_json(&event))?;
                                } else {
                                    emit_text(out, &format!("{}\n", output::event_line(&event)))?;
                                }
                            }
                            Some(Err(e)) => return Err(e.into()),
                            None => return Ok(()),
                        },
                    }
                }
            };
            watch_until_deadline(ctx, watch).await
        }
    }
}
