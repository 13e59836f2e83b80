//! `bench_push`: push-to-`latestRef` latency through the push receiver, and what a burst
//! of pushes costs the registry, on the real stack (`test_support::cluster`: the real
//! control plane, Debian's docker-registry notifying the receiver with a bearer token,
//! image-reflector as its ServiceAccount). Run by `make bench-push` (`bench/push.sh`),
//! which builds the release binaries first.
//!
//! An ImageRepository with `interval: 1h` and a semver ImagePolicy on it, and an
//! unrelated ImageRepository of another image beside them. With two replicas (the
//! default, as the Deployment runs) the registry notifies the one that does not lead.
//!
//! 1. `--pushes` times: push a new highest tag, then poll the ImagePolicy (every 10 ms)
//!    until `status.latestRef.tag` is that tag; prints p50, max and every latency.
//! 2. A burst of `--burst` tags pushed at once (32 manifest PUTs in flight), then
//!    `--settle` seconds of quiet: prints the registry requests image-reflector made (from
//!    the registry's access log), the `tags/list` requests among them, and the scans the
//!    receiver requested.
//!
//! Figures only: it never fails on a timing. Test infrastructure, not part of the
//! image-reflector binary.

use clap::Parser;
use serde_json::Value;
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, metric_sum, ready_is};
use test_support::registry::{RegistryNotifications, RegistryOptions};

#[derive(Parser, Debug)]
#[command(
    name = "bench_push",
    about = "Push-to-latestRef latency through the push receiver"
)]
struct Args {
    /// Pushes measured one after another.
    #[arg(long, default_value_t = 20)]
    pushes: usize,
    /// Tags pushed at once in the burst.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// Replicas of image-reflector (1, or 2 with leader election: the registry notifies
    /// the one that does not lead).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    replicas: u8,
    /// Seconds to wait after the burst's last scan for any further request.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// Extra flags for `image-reflector serve` (e.g. "--receiver-quiet-period 200ms").
    #[arg(long, default_value = "")]
    serve_args: String,
}

const TOKEN: &str = "bench-push-token";
const NAMESPACE: &str = "bench";
const SCANNER_AGENT: &str = "image-reflector/";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let port = test_support::free_port();
    let started = Instant::now();
    let mut c = Cluster::install_notifying(
        RegistryOptions::default(),
        Some(RegistryNotifications {
            url: format!("http://127.0.0.1:{port}/hooks/distribution"),
            headers: vec![("Authorization".into(), format!("Bearer {TOKEN}"))],
        }),
    )
    .await;
    let host = c.registry.host();
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "image-reflector-receiver",
        "-n",
        "flux-system",
        &format!("--from-literal=token={TOKEN}"),
    ])
    .await;
    let receiver_addr = format!("127.0.0.1:{port}");
    let mut extra: Vec<&str> = args.serve_args.split_whitespace().collect();
    let follower = if args.replicas == 2 {
        let mut leader_flags = extra.clone();
        leader_flags.push("--enable-leader-election");
        c.start_reflector_with(&leader_flags).await;
        let wait = Instant::now();
        while !c.reflector().logged("controllers started") {
            assert!(wait.elapsed() < Duration::from_secs(60), "no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        extra.extend([
            "--enable-leader-election",
            "--receiver-addr",
            &receiver_addr,
        ]);
        Some(c.start_replica_with("follower", &extra).await)
    } else {
        extra.extend(["--receiver-addr", &receiver_addr]);
        c.start_reflector_with(&extra).await;
        None
    };
    let receiver_metrics = || async {
        match &follower {
            Some(f) => f.metrics_text().await,
            None => c.reflector_metrics().await,
        }
    };

    c.registry.push_tags("bench/app", &["1.0.0"]).await;
    c.registry.push_tags("bench/other", &["1.0.0"]).await;
    c.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
    ))
    .await;
    for (name, path) in [("app", "bench/app"), ("other", "bench/other")] {
        c.apply(&format!(
            "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImageRepository
metadata:
  name: {name}
  namespace: {NAMESPACE}
spec:
  interval: 1h
  image: {host}/{path}
"
        ))
        .await;
    }
    c.apply(&format!(
        "apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: app
  namespace: {NAMESPACE}
spec:
  imageRepositoryRef:
    name: app
  policy:
    semver:
      range: '>=1.0.0'
"
    ))
    .await;
    for name in ["app", "other"] {
        c.wait_for_repository(NAMESPACE, name, "Ready", |o| ready_is(o, "True", None))
            .await;
    }
    wait_for_tag(&c, "1.0.0", Duration::from_secs(60)).await;
    let other_requests = c.registry.requests_matching("/v2/bench/other/");
    println!(
        "bench-push: {} replica(s){}, interval 1h, registry docker-registry 2.8, stack up in {:.1} s",
        args.replicas,
        if args.replicas == 2 {
            " (the registry notifies the one that does not lead)"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    );

    // 1. One push at a time.
    let mut latencies = Vec::with_capacity(args.pushes);
    for i in 1..=args.pushes {
        let tag = format!("1.{i}.0");
        c.registry.push_tags("bench/app", &[tag.as_str()]).await;
        let pushed = Instant::now();
        wait_for_tag(&c, &tag, Duration::from_secs(120)).await;
        latencies.push(pushed.elapsed());
    }
    let mut sorted = latencies.clone();
    sorted.sort();
    let secs = |d: Duration| d.as_secs_f64();
    let p50 = secs(sorted[sorted.len() / 2]);
    let max = secs(sorted[sorted.len() - 1]);
    let min = secs(sorted[0]);
    println!(
        "push -> latestRef over {} pushes: p50 {p50:.3} s, max {max:.3} s, min {min:.3} s   (target: p50 under 2 s with interval 1h)",
        args.pushes
    );
    println!(
        "  each (s): {}",
        latencies
            .iter()
            .map(|d| format!("{:.3}", secs(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let m = receiver_metrics().await;
    let count = metric_sum(
        &m,
        "image_reflector_receiver_push_to_scan_seconds_count",
        &[],
    );
    let sum = metric_sum(&m, "image_reflector_receiver_push_to_scan_seconds_sum", &[]);
    if count > 0.0 {
        println!(
            "  the receiver's own figure, first push to the scan recorded in the status: mean {:.3} s over {count} scans",
            sum / count
        );
    }

    // 2. A burst.
    let scanner_before = c.registry.requests_matching(SCANNER_AGENT);
    let listings_before = c.registry.requests_matching("GET /v2/bench/app/tags/list");
    let requested_before = metric_sum(
        &m,
        "image_reflector_receiver_scan_requests_total",
        &["result=\"requested\""],
    );
    let events_before = metric_sum(&m, "image_reflector_receiver_events_total", &[]);
    let tags: Vec<String> = (0..args.burst).map(|i| format!("2.0.{i}")).collect();
    let burst_started = Instant::now();
    c.registry.push_tags("bench/app", &tags).await;
    let pushed_in = burst_started.elapsed();
    let top = tags.last().cloned().unwrap_or_default();
    wait_for_tag(&c, &top, Duration::from_secs(120)).await;
    let burst_latency = burst_started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let m = receiver_metrics().await;
    let requested = metric_sum(
        &m,
        "image_reflector_receiver_scan_requests_total",
        &["result=\"requested\""],
    ) - requested_before;
    let deliveries = metric_sum(&m, "image_reflector_receiver_events_total", &[]) - events_before;
    let listings = c.registry.requests_matching("GET /v2/bench/app/tags/list") - listings_before;
    let scanner = c.registry.requests_matching(SCANNER_AGENT) - scanner_before;
    println!(
        "burst of {} pushes (pushed in {:.3} s, latestRef at {top} {:.3} s after the first): {listings} tags/list request(s), {scanner} registry request(s) by image-reflector in all, {requested} scan request(s) from {deliveries} notification(s)   (target: one scan per repository per burst)",
        args.burst,
        secs(pushed_in),
        secs(burst_latency)
    );
    println!(
        "unrelated ImageRepository (interval 1h): {} registry request(s) during all of the above",
        c.registry.requests_matching("/v2/bench/other/") - other_requests
    );
}

async fn wait_for_tag(c: &Cluster, tag: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let policy: Option<Value> = c.policy(NAMESPACE, "app").await;
        if policy
            .as_ref()
            .is_some_and(|p| p["status"]["latestRef"]["tag"] == tag)
        {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "latestRef did not reach {tag} within {timeout:?}: {}\n{}",
            policy.map(|p| p["status"].to_string()).unwrap_or_default(),
            c.reflector_log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
