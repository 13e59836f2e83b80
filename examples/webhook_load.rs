//! Fixed-rate load for `make bench-webhook`: POSTs a body at RATE requests/s for SECONDS
//! over HTTPS keep-alive connections and prints the achieved rate and latency percentiles.
//! Latency is measured from each request's scheduled start, so a stalled server is not
//! hidden by the generator waiting for it (no coordinated omission).
//!
//!     cargo run --release --example webhook_load -- URL CA_PEM BODY_FILE RATE SECONDS
//!
//! Output (one line): `rate=R ok=N errors=E p50_ms=.. p90_ms=.. p99_ms=.. max_ms=..`

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ca, body, rate, seconds] = args.as_slice() else {
        return Err("usage: webhook_load URL CA_PEM BODY_FILE RATE SECONDS".into());
    };
    let rate: u64 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let body = bytes::Bytes::from(std::fs::read(body)?);
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    // Warm the connection pool.
    for _ in 0..16 {
        client
            .post(url)
            .body(body.clone())
            .send()
            .await?
            .bytes()
            .await?;
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = rate * seconds;
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url, body, latencies, errors) = (
            client.clone(),
            url.clone(),
            body.clone(),
            latencies.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
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
            if ok {
                latencies.lock().await.push(scheduled.elapsed());
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let mut l = latencies.lock().await.clone();
    l.sort();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    };
    println!(
        "rate={:.0} ok={} errors={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        l.len() as f64 / elapsed.as_secs_f64(),
        l.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
