//! Fixed-rate load for `make bench-webhook`: POSTs a body at RATE requests/s for SECONDS
//! over HTTPS keep-alive connections and prints the achieved rate and latency percentiles.
//! Latency is measured from each request's scheduled start, so a stalled server is not
//! hidden by the generator waiting for it (no coordinated omission).
//!
//! The requests are paced by a dedicated thread sleeping with the operating system's
//! timer (microsecond precision), not by tokio's timer, whose millisecond granularity
//! alone would add up to a millisecond to every latency measured from a scheduled start.
//! How late the pacer itself dispatched is printed too (`pacer_p99_ms`), so a loaded
//! generator is visible rather than blamed on the server.
//!
//!     cargo run --release --example webhook_load -- URL CA_PEM BODY_FILE RATE SECONDS
//!
//! Output (one line):
//! `rate=R ok=N errors=E p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. pacer_p99_ms=..`

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ca, body, rate, seconds] = args.as_slice() else {
        return Err("usage: webhook_load URL CA_PEM BODY_FILE RATE SECONDS".into());
    };
    let rate: u64 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    if rate == 0 || seconds == 0 {
        return Err("RATE and SECONDS must be at least 1".into());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let body = bytes::Bytes::from(std::fs::read(body)?);
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    // Warm the connection pool.
    runtime.block_on(async {
        for _ in 0..16 {
            client
                .post(url)
                .body(body.clone())
                .send()
                .await?
                .bytes()
                .await?;
        }
        Ok::<_, reqwest::Error>(())
    })?;

    let total = rate * seconds;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut pacer_lateness = Vec::with_capacity(total as usize);
    let period = Duration::from_nanos(1_000_000_000 / rate);
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
            url.clone(),
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
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    let mut l = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort();
    pacer_lateness.sort();
    println!(
        "rate={:.0} ok={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} pacer_p99_ms={:.3}",
        l.len() as f64 / elapsed.as_secs_f64(),
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        percentile(&l, 0.50),
        percentile(&l, 0.90),
        percentile(&l, 0.99),
        percentile(&l, 1.0),
        percentile(&pacer_lateness, 0.99),
    );
    Ok(())
}
