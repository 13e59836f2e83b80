//! `make abuse`: the webhook under abuse on loopback. Each case runs an abuser for a
//! window while legitimate AdmissionReviews arrive at a fixed rate over one HTTP/2
//! connection (as kube-apiserver sends them), and prints the legitimate reviews' latency
//! (from each one's scheduled start, `common/paced_load.rs`), the server's peak resident
//! memory during the case (VmRSS sampled every 50 ms; VmHWM at the end) and what the
//! server did to the abuser. Each case follows a window without abuse, its baseline: the
//! two see the same machine. The generator's own lateness (pacer p99) is printed too: on
//! a loaded machine it is part of every latency.
//!
//!     cargo run --release --example webhook_abuse -- URL CA_PEM BODY_FILE SERVER_PID RATE SECONDS [CASE...]
//!
//! Cases (all by default): `slow-loris`, `idle-tls`, `stalled-handshakes`,
//! `big-headers`, `rapid-reset`, `stalled-bodies` (see `attacks.rs`). It fails when the
//! server process dies.

#![forbid(unsafe_code)]

mod attacks;
#[path = "../common/paced_load.rs"]
mod paced_load;

use paced_load::percentile_ms;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Reads a `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the server's VmRSS every 50 ms and keeps the largest since the last reset.
struct RssPeak {
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssPeak { peak_kib, stop }
    }

    fn take_mib(&self) -> f64 {
        self.peak_kib.swap(0, Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Row {
    case: String,
    p50: f64,
    p99: f64,
    max: f64,
    /// How late the generator itself dispatched (p99): the machine's share of the latency.
    pacer_p99: f64,
    ok: usize,
    errors: u64,
    rss_mib: f64,
    server_did: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ca, body, pid, rate, seconds, cases @ ..] = args.as_slice() else {
        return Err(
            "usage: webhook_abuse URL CA_PEM BODY_FILE SERVER_PID RATE SECONDS [CASE...]".into(),
        );
    };
    let pid: u32 = pid.parse()?;
    let rate: u64 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    let cases: Vec<&str> = if cases.is_empty() {
        attacks::CASES.to_vec()
    } else {
        cases.iter().map(String::as_str).collect()
    };
    for case in &cases {
        if !attacks::CASES.contains(case) {
            return Err(
                format!("unknown case {case:?}; the cases are {:?}", attacks::CASES).into(),
            );
        }
    }
    let ca_pem = std::fs::read(ca)?;
    let body = bytes::Bytes::from(std::fs::read(body)?);
    let target = attacks::Target::new(url, &ca_pem)?;

    // The legitimate client: one HTTP/2 connection, on its own runtime thread.
    let legit = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem)?])
        .timeout(Duration::from_secs(30))
        .build()?;
    legit.block_on(async {
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

    let rss = RssPeak::start(pid);
    let window = |case: &str| -> Result<Row, Box<dyn std::error::Error>> {
        rss.take_mib();
        let abuser = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let attack = abuser.spawn(attacks::run(case.to_string(), target.clone(), deadline));
        let measured = paced_load::run(&legit, &client, url, &body, rate, seconds)?;
        let server_did = abuser
            .block_on(attack)
            .unwrap_or_else(|e| format!("the abuser failed: {e}"));
        abuser.shutdown_timeout(Duration::from_secs(1));
        if status_kib(pid, "VmRSS").is_none() {
            return Err(format!("the server (pid {pid}) died during {case}").into());
        }
        let row = Row {
            case: case.to_string(),
            p50: percentile_ms(&measured.latencies, 0.50),
            p99: percentile_ms(&measured.latencies, 0.99),
            max: percentile_ms(&measured.latencies, 1.0),
            pacer_p99: percentile_ms(&measured.pacer_lateness, 0.99),
            ok: measured.latencies.len(),
            errors: measured.errors,
            rss_mib: rss.take_mib(),
            server_did,
        };
        println!(
            "case={} rate={:.0} {} rss_peak_mib={:.1} server: {}",
            row.case,
            measured.rate(),
            measured.summary(),
            row.rss_mib,
            row.server_did
        );
        // Let the server close what the abuser left before the next window.
        std::thread::sleep(Duration::from_secs(2));
        Ok(row)
    };
    // Each case right after a window without abuse: the pair sees the same machine, whose
    // load moves from one minute to the next.
    let mut pairs = Vec::new();
    for case in &cases {
        let baseline = window("none")?;
        pairs.push((baseline, window(case)?));
    }
    let hwm = status_kib(pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    println!();
    println!(
        "legitimate reviews at {rate}/s over one HTTP/2 connection, {seconds} s per window; server VmHWM at the end {hwm:.1} MiB"
    );
    println!(
        "| abuse | legit p50 / p99 / max ms | p99 without abuse just before | pacer p99 ms (abuse / none) | answered (errors) | server RSS peak MiB (none: {:.1}) | what the server did |",
        pairs.iter().map(|(b, _)| b.rss_mib).fold(0.0, f64::max)
    );
    println!("|---|---|---|---|---|---|---|");
    for (b, r) in &pairs {
        println!(
            "| {} | {:.2} / {:.2} / {:.1} | {:.2} | {:.2} / {:.2} | {} ({}) | {:.1} | {} |",
            r.case,
            r.p50,
            r.p99,
            r.max,
            b.p99,
            r.pacer_p99,
            b.pacer_p99,
            r.ok,
            r.errors,
            r.rss_mib,
            r.server_did
        );
    }
    Ok(())
}
