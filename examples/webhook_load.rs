//! Fixed-rate load for `make bench-webhook`: POSTs a body at RATE requests/s for SECONDS
//! over HTTPS keep-alive connections and prints the achieved rate and latency percentiles.
//! Latency is measured from each request's scheduled start, so a stalled server is not
//! hidden by the generator waiting for it (no coordinated omission).
//!
//! The pacing is `common/paced_load.rs`'s (the OS timer on a dedicated thread); how late
//! the pacer itself dispatched is printed too (`pacer_p99_ms`), so a loaded generator is
//! visible rather than blamed on the server.
//!
//!     cargo run --release --example webhook_load -- URL CA_PEM BODY_FILE RATE SECONDS
//!
//! Output (one line):
//! `rate=R ok=N errors=E p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. pacer_p99_ms=..`

#![forbid(unsafe_code)]

#[path = "common/paced_load.rs"]
mod paced_load;

use std::time::Duration;

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

    let measured = paced_load::run(&runtime, &client, url, &body, rate, seconds)?;
    println!("rate={:.0} {}", measured.rate(), measured.summary());
    Ok(())
}
