//! Fixed-rate load shared by `webhook_load` and `webhook_abuse`: POSTs a body at RATE
//! requests/s for SECONDS and measures each request's latency from its scheduled start, so
//! a stalled server is not hidden by the generator waiting for it (no coordinated
//! omission).
//!
//! Requests are paced by the calling thread sleeping with the operating system's timer
//! (microsecond precision), not by tokio's timer, whose millisecond granularity alone
//! would add up to a millisecond to every latency measured from a scheduled start. How
//! late the pacer itself dispatched is measured too, so a loaded generator is visible
//! rather than blamed on the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one run measured.
pub struct Measured {
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    /// Requests that failed or were not answered 2xx.
    pub errors: u64,
    /// How late the pacer dispatched each request, sorted.
    pub pacer_lateness: Vec<Duration>,
    pub elapsed: Duration,
}

/// The `p` quantile (0..=1) of `sorted`, in milliseconds (NaN when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

impl Measured {
    /// `ok=N errors=E p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. pacer_p99_ms=..`
    pub fn summary(&self) -> String {
        let l = &self.latencies;
        format!(
            "ok={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} pacer_p99_ms={:.3}",
            l.len(),
            self.errors,
            percentile_ms(l, 0.50),
            percentile_ms(l, 0.90),
            percentile_ms(l, 0.99),
            percentile_ms(l, 1.0),
            percentile_ms(&self.pacer_lateness, 0.99),
        )
    }

    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// POSTs `body` to `url` at `rate` requests/s for `seconds`, on `runtime`; blocks the
/// calling thread, which paces.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
    body: &bytes::Bytes,
    rate: u64,
    seconds: u64,
) -> Result<Measured, tokio::task::JoinError> {
    let total = rate * seconds;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let mut pacer_lateness = Vec::with_capacity(total as usize);
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut tasks = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        let scheduled = start + period * i as u32;
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        pacer_lateness.push(scheduled.elapsed());
        let (client, url, body, latencies, errors) = (
            client.clone(),
            url.to_string(),
            body.clone(),
            latencies.clone(),
            errors.clone(),
        );
        tasks.push(runtime.spawn(async move {
            let ok = match client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            let elapsed = scheduled.elapsed();
            if ok {
                latencies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(elapsed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    runtime.block_on(async {
        for t in tasks {
            t.await?;
        }
        Ok::<_, tokio::task::JoinError>(())
    })?;
    let elapsed = start.elapsed();
    let mut latencies = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    latencies.sort();
    pacer_lateness.sort();
    Ok(Measured {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        pacer_lateness,
        elapsed,
    })
}
