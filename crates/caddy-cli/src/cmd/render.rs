//! `caddyctl render DOC ...` and `caddyctl render
//! jobs|show|cancel|thumbnails|thumbnail`: render
//! jobs through the SDK's `render_*` calls. With `-o` (or `--wait`) the
//! command follows the job to its end; `-o` then saves the PNG (written to a
//! temporary file beside it and renamed, so a failure leaves no partial
//! image). A job that ends failed or cancelled is an error (exit code 1),
//! and so is one still queued or running when the wait ends: at
//! `--wait-timeout`, or at `--timeout` (which bounds the whole command) if
//! that comes first; its JSON error object names the `job`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use caddy_client::doc_api::DocId;
use caddy_client::render_api::{JobState, JobView, RenderSpec, RenderView, ThumbnailSetting};
use caddy_client::{Outcome, human_duration};
use serde_json::json;
use tokio::time::Instant;

use super::{Ctx, emit_json, emit_text};
use crate::cli::{RenderArgs, RenderCommand, RenderSubmit};
use crate::failure::{CliError, refused, timed_out, usage};
use crate::output::{datetime, datetime_opt, table};
use crate::views::block;

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// One job in detail.
pub fn job_text(j: &JobView) -> String {
    let s = &j.spec;
    let mut pairs = vec![
        ("id", j.id.clone()),
        ("document", format!("{} at change {}", j.doc, j.version)),
        ("state", state_name(j.state).to_string()),
        ("size", format!("{}x{}", s.width, s.height)),
        ("attempts", j.attempts.to_string()),
        ("created", format!("{} by {}", datetime(j.created_ms), j.created_by)),
    ];
    if let Some(node) = j.node {
        pairs.push(("node", node.to_string()));
    }
    if j.finished_ms.is_some() {
        pairs.push(("finished", datetime_opt(j.finished_ms)));
    }
    if let Some(e) = &j.error {
        pairs.push(("error", e.clone()));
    }
    if let Some(i) = &j.image {
        pairs.push((
            "image",
            format!("{} bytes PNG, {} triangles, {} ms on {}", i.size, i.triangles, i.render_ms, i.adapter),
        ));
        if i.problem_count > 0 {
            pairs.push(("problems", format!("{}: {}", i.problem_count, i.problems.join("; "))));
        }
    }
    if j.deduplicated {
        pairs.push(("note", "an identical request's job (no new render)".into()));
    }
    if j.thumbnail {
        pairs.push(("kind", "automatic thumbnail".into()));
    }
    block(&pairs)
}

/// The thumbnail setting, for people.
pub fn thumbnails_text(setting: &ThumbnailSetting) -> String {
    match setting.size {
        Some([w, h]) => format!("thumbnails: on, {w}x{h}, for every committed document change"),
        None => "thumbnails: off".into(),
    }
}

fn jobs_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.doc.clone(),
                j.version.to_string(),
                format!("{}x{}", j.spec.width, j.spec.height),
                state_name(j.state).to_string(),
                j.attempts.to_string(),
                datetime(j.created_ms),
            ]
        })
        .collect();
    table(&["ID", "DOC", "VERSION", "SIZE", "STATE", "ATTEMPTS", "CREATED"], &rows)
}

fn show(ctx: &Ctx, out: &mut dyn Write, job: &JobView) -> anyhow::Result<()> {
    if ctx.json {
        emit_json(out, &serde_json::to_value(job).context("encoding JSON")?)
    } else {
        emit_text(out, &job_text(job))
    }
}

/// The spec a `render DOC` command line asks for.
pub fn spec_of(args: &RenderSubmit) -> anyhow::Result<RenderSpec> {
    let doc = DocId::parse(args.doc.as_deref().unwrap_or_default()).map_err(|e| refused(e.code, e.message))?;
    let view = match args.window.as_deref() {
        Some([x0, y0, x1, y1]) => RenderView::Window {
            min: [x0.min(*x1), y0.min(*y1)],
            max: [x0.max(*x1), y0.max(*y1)],
            rotation_deg: args.rotate,
        },
        Some(_) => return Err(usage("--window takes four numbers: X0,Y0,X1,Y1")),
        None => RenderView::Fit { margin: 0.05, rotation_deg: args.rotate },
    };
    let spec = RenderSpec {
        doc,
        version: args.version,
        view,
        width: args.size.0,
        height: args.size.1,
        background: args.background,
        layers: args.layers.clone(),
    };
    spec.validate().map_err(|e| refused(e.code, e.message))?;
    Ok(spec)
}

/// A job still queued or running when its wait ended (`wait_started` +
/// `--wait-timeout`, or the command's `--timeout`, whichever came first).
fn not_finished(ctx: &Ctx, job: &JobView, wait_started: Instant, wait_timeout: Duration) -> CliError {
    let by_wait = wait_started.checked_add(wait_timeout);
    let bound = match (ctx.deadline, ctx.timeout) {
        (Some(deadline), Some(timeout)) if by_wait.is_none_or(|w| deadline <= w) => {
            format!("--timeout {}", human_duration(timeout))
        }
        _ => format!("--wait-timeout {}", human_duration(wait_timeout)),
    };
    let idle = if job.state == JobState::Queued && job.attempts == 0 {
        "; no render worker has taken it: `caddyctl cluster status` shows which nodes render (a node without a \
         graphics adapter does not)"
    } else {
        ""
    };
    let message = format!(
        "{} is still {} after waiting {} ({bound}){idle}; follow it with `caddyctl render show {}`",
        job.id,
        state_name(job.state),
        human_duration(wait_started.elapsed()),
        job.id
    );
    timed_out(message, Outcome::NotApplied).with("job", json!(job.id)).with("state", json!(state_name(job.state)))
}

async fn save(ctx: &Ctx, job: &str, path: &Path) -> anyhow::Result<u64> {
    let tmp = path.with_extension(format!("part-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
    let result = ctx.client.render_image(job, &mut file).await;
    let written = match result {
        Ok((_, n)) => n,
        Err(e) => {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
    };
    file.sync_all().await.context("syncing the image")?;
    drop(file);
    tokio::fs::rename(&tmp, path).await.with_context(|| format!("renaming to {}", path.display()))?;
    Ok(written)
}

/// Runs `caddyctl render ...`.
pub async fn run(ctx: &Ctx, args: RenderArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match args.command {
        Some(RenderCommand::Jobs { limit }) => {
            let (jobs, _) = ctx.client.render_jobs(None, limit).await?;
            if ctx.json {
                emit_json(out, &serde_json::to_value(&jobs).context("encoding JSON")?)
            } else {
                emit_text(out, &jobs_table(&jobs))
            }
        }
        Some(RenderCommand::Show { job }) => show(ctx, out, &ctx.client.render_job(&job).await?),
        Some(RenderCommand::Cancel { job }) => show(ctx, out, &ctx.client.render_cancel(&job).await?),
        Some(RenderCommand::Thumbnails { state, size }) => {
            let set = state.map(|s| ThumbnailSetting { size: (s == "on").then_some([size.0, size.1]) });
            let setting = ctx.client.render_thumbnails(set).await?;
            if ctx.json {
                emit_json(out, &serde_json::to_value(setting).context("encoding JSON")?)
            } else {
                emit_text(out, &thumbnails_text(&setting))
            }
        }
        Some(RenderCommand::Thumbnail { doc, output }) => {
            let job = ctx.client.render_thumbnail(&doc).await?;
            if let Some(path) = &output {
                let bytes = save(ctx, &job.id, path).await?;
                if !ctx.json {
                    eprintln!("saved {bytes} bytes of {} to {}", job.id, path.display());
                }
            }
            show(ctx, out, &job)
        }
        None => {
            let submit = args.submit;
            let spec = spec_of(&submit)?;
            let mut job = ctx.client.render_submit(spec).await?;
            if submit.output.is_none() && !submit.wait {
                return show(ctx, out, &job);
            }
            let wait_started = Instant::now();
            if !job.state.is_final() {
                job = ctx.client.render_wait(&job.id, submit.wait_timeout).await?;
            }
            match job.state {
                JobState::Done => {}
                JobState::Failed => {
                    bail!("{} failed: {}", job.id, job.error.as_deref().unwrap_or("no reason recorded"))
                }
                JobState::Cancelled => bail!("{} was cancelled", job.id),
                _ => return Err(not_finished(ctx, &job, wait_started, submit.wait_timeout).into()),
            }
            if let Some(path) = &submit.output {
                let bytes = save(ctx, &job.id, path).await?;
                if !ctx.json {
                    eprintln!("saved {bytes} bytes of {} to {}", job.id, path.display());
                }
            }
            show(ctx, out, &job)
        }
    }
}
