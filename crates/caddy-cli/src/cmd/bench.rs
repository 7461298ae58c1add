//! `caddyctl bench kv`: closed-loop load through `caddy_client::loadgen`.

use std::io::Write;
use std::sync::{Arc, OnceLock};

use anyhow::bail;

use super::{Ctx, emit_json, emit_text};
use crate::cli::BenchKvArgs;
use crate::output;

/// A well-mixed 64-bit hash (splitmix64), to pick keys and operation kinds
/// deterministically from the operation number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What operation number `n` does: `(key index, is_read)`.
pub fn plan(n: u64, keys: u64, read_ratio: f64) -> (u64, bool) {
    let h = mix(n);
    let key = (h >> 16) % keys.max(1);
    let draw = (h & 0xffff) as f64 / 65_536.0;
    (key, draw < read_ratio)
}

/// Key of index `i` in the benchmark key space.
pub fn key_name(i: u64) -> String {
    format!("bench/{i:08}")
}

/// Runs the load and prints the report.
pub async fn run(ctx: &Ctx, args: BenchKvArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let value: Arc<Vec<u8>> = Arc::new((0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    let first_error: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let client = ctx.client.clone();
    let (keys, read_ratio, serializable) = (args.keys, args.read_ratio, args.serializable);
    let errors = Arc::clone(&first_error);
    let clients = usize::try_from(args.clients).unwrap_or(usize::MAX);
    let report = caddy_client::loadgen::run(clients, args.duration, move |_client, n| {
        let client = client.clone();
        let value = Arc::clone(&value);
        let errors = Arc::clone(&errors);
        let (key_index, read) = plan(n, keys, read_ratio);
        async move {
            let key = key_name(key_index);
            let result = if !read {
                client.put(&key, value.as_ref().clone()).await.map(drop)
            } else if serializable {
                client.get_serializable(&key).await.map(drop)
            } else {
                client.get(&key).await.map(drop)
            };
            result.map_err(|e| {
                let message = e.to_string();
                errors.get_or_init(|| message.clone());
                message
            })
        }
    })
    .await;
    if report.ops == 0 && report.errors > 0 {
        bail!(
            "all {} operations failed; first error: {}",
            report.errors,
            first_error.get().map_or("unknown", String::as_str)
        );
    }
    if report.errors > 0
        && let Some(first) = first_error.get()
    {
        eprintln!("{} operations failed; first error: {}", report.errors, output::one_line(first));
    }
    if ctx.json {
        emit_json(out, &serde_json::to_value(&report)?)
    } else {
        emit_text(out, &output::bench_text(&report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_respects_ratio_and_key_space() {
        let n = 20_000u64;
        for ratio in [0.0, 0.25, 0.9, 1.0] {
            let reads = (0..n).filter(|&i| plan(i, 10, ratio).1).count() as f64 / n as f64;
            assert!((reads - ratio).abs() < 0.02, "ratio {ratio}: got {reads}");
        }
        assert!((0..n).all(|i| plan(i, 7, 0.5).0 < 7));
        let distinct: std::collections::HashSet<u64> = (0..n).map(|i| plan(i, 100, 0.0).0).collect();
        assert_eq!(distinct.len(), 100);
        assert_eq!(key_name(42), "bench/00000042");
    }
}
