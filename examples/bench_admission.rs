//! Micro-benchmark of the webhook handler alone (no HTTP, no TLS): calls
//! `image_reflector::admission::handle` in a loop on the AdmissionReview body that
//! `make bench-webhook` sends and prints nanoseconds per call for `/validate` and `/mutate`.
//!
//!     cargo run --release --example bench_admission -- [BODY_JSON] [ITERATIONS]
//!
//! Without BODY_JSON it uses bench/review.json, the ImageRepository CREATE that
//! bench/webhook.sh sends.

#![forbid(unsafe_code)]

use image_reflector::admission::{Admission, Webhook, handle};
use std::time::Instant;

const BODY: &str = include_str!("../bench/review.json");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let body = match args.get(1) {
        Some(path) if path != "-" => std::fs::read(path)?,
        _ => BODY.trim_end().as_bytes().to_vec(),
    };
    let iterations: u32 = match args.get(2) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let admission = Admission::default();
    for (name, endpoint) in [("validate", Webhook::Validate), ("mutate", Webhook::Mutate)] {
        let first = handle(&body, endpoint, &admission)?;
        // Warm-up (allocator, caches).
        for _ in 0..iterations / 10 {
            std::hint::black_box(handle(std::hint::black_box(&body), endpoint, &admission)?);
        }
        let start = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(handle(std::hint::black_box(&body), endpoint, &admission)?);
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
        println!(
            "{name:<9} {ns:>8.0} ns/op  ({} -> {}, {} response bytes)",
            body.len(),
            first.result,
            first.body.len()
        );
    }
    Ok(())
}
