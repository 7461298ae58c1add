//! A closed-loop load generator: `clients` concurrent loops each run one
//! operation at a time for a fixed duration, and per-operation latencies go
//! into an HDR histogram (microseconds).
//!
//! Used by `caddyctl bench kv` and by the benchmark crate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Outcome of one load run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time from start until the last loop stopped, in seconds.
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Median latency of successful operations, µs.
    pub p50_us: u64,
    /// 90th percentile latency, µs.
    pub p90_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ops, {} errors in {:.2}s: {:.1} ops/s, latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ops,
            self.errors,
            self.elapsed_secs,
            self.throughput,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
        )
    }
}

/// One loop's tally.
struct Tally {
    ops: u64,
    errors: u64,
    histogram: Option<Histogram<u64>>,
}

fn new_histogram() -> Option<Histogram<u64>> {
    Histogram::<u64>::new(3).ok()
}

/// Runs `clients` concurrent loops (at least one) for `duration`. Each loop
/// calls `op(client_index, op_number)` and awaits it before the next call;
/// op numbers are unique across all loops and start at 0. A loop starts no
/// new operation after `duration`; the report's elapsed time includes the
/// operations still in flight then. Latencies of successful operations are
/// recorded; failures are counted.
pub async fn run<F, Fut>(clients: usize, duration: Duration, op: F) -> LoadReport
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let clients = clients.max(1);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // A duration too large for the clock means "run until stopped".
    let deadline = start.checked_add(duration).unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400));
    let mut tasks = Vec::with_capacity(clients);
    for index in 0..clients {
        let op = op.clone();
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally { ops: 0, errors: 0, histogram: new_histogram() };
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                match op(index, n).await {
                    Ok(()) => {
                        let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                        tally.ops += 1;
                        if let Some(h) = tally.histogram.as_mut() {
                            // Auto-resizing: recording cannot fail on range.
                            let _ = h.record(us);
                        }
                    }
                    Err(_) => tally.errors += 1,
                }
            }
            tally
        }));
    }
    let mut total = Tally { ops: 0, errors: 0, histogram: new_histogram() };
    for task in tasks {
        match task.await {
            Ok(tally) => {
                total.ops += tally.ops;
                total.errors += tally.errors;
                if let (Some(sum), Some(h)) = (total.histogram.as_mut(), tally.histogram.as_ref()) {
                    // Both histograms auto-resize, so adding cannot fail on range.
                    let _ = sum.add(h);
                }
            }
            // A panicking operation counts as one error for its loop.
            Err(_) => total.errors += 1,
        }
    }
    let elapsed_secs = start.elapsed().as_secs_f64();
    report(total, elapsed_secs)
}

fn report(total: Tally, elapsed_secs: f64) -> LoadReport {
    let q = |quantile: f64| {
        total.histogram.as_ref().map_or(0, |h| if h.is_empty() { 0 } else { h.value_at_quantile(quantile) })
    };
    LoadReport {
        ops: total.ops,
        errors: total.errors,
        elapsed_secs,
        throughput: if elapsed_secs > 0.0 { total.ops as f64 / elapsed_secs } else { 0.0 },
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: total.histogram.as_ref().map_or(0, |h| if h.is_empty() { 0 } else { h.max() }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_ops_errors_and_latency() {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let seen2 = Arc::clone(&seen);
        let report = run(4, Duration::from_millis(300), move |client, n| {
            let seen = Arc::clone(&seen2);
            async move {
                assert!(client < 4);
                assert!(seen.lock().unwrap().insert(n), "op number {n} repeated");
                tokio::time::sleep(Duration::from_millis(2)).await;
                if n % 10 == 0 { Err("boom".to_string()) } else { Ok(()) }
            }
        })
        .await;
        assert!(report.ops > 20, "{report}");
        assert!(report.errors > 0, "{report}");
        assert_eq!(report.ops + report.errors, seen.lock().unwrap().len() as u64);
        assert!(report.elapsed_secs >= 0.3);
        assert!(report.p50_us >= 2000, "{report:?}");
        assert!(report.p50_us <= report.p90_us && report.p90_us <= report.p99_us && report.p99_us <= report.max_us);
        assert!(report.throughput > 0.0);
        let line = report.to_string();
        assert!(line.contains("ops/s") && line.contains("p99"), "{line}");
        let json = serde_json::to_value(&report).unwrap();
        for field in ["ops", "errors", "elapsed_secs", "throughput", "p50_us", "p90_us", "p99_us", "max_us"] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
    }

    #[test]
    fn empty_report_is_zero() {
        let r = report(Tally { ops: 0, errors: 3, histogram: new_histogram() }, 1.0);
        assert_eq!((r.ops, r.errors, r.p50_us, r.max_us), (0, 3, 0, 0));
        assert_eq!(r.throughput, 0.0);
    }
}
