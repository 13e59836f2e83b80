//! `bench_webhook_latency`: what the admission webhooks add to a create as a cluster feels
//! it, through the real API server (`test_support::cluster`: the real control plane, the
//! project's webhook configurations, image-reflector as its ServiceAccount). Run by `make
//! bench-webhook` (`bench/webhook.sh`) after the HTTPS rounds.
//!
//! Server-side dry-run creates of one ImageRepository (the API server runs the whole
//! admission chain, schema defaults, CEL rules and both webhooks, and stores nothing),
//! timed from the client, in blocks: `--per-block` creates with the webhook
//! configurations installed, then as many with them deleted, the order swapped every
//! block so that both sides see the same machine. Deleting and re-creating the
//! configurations takes effect in the API server after its informer sees it; each block
//! starts only once a create has (or has not) reached our webhooks, read from their
//! `admission_requests_total`.
//!
//! Prints the median and p90 of each side and the median of the blocks' differences.
//! Figures only: it never fails on a timing. Test infrastructure, not part of the
//! image-reflector binary.

use clap::Parser;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, metric_sum};
use test_support::registry::RegistryOptions;

#[derive(Parser, Debug)]
#[command(
    name = "bench_webhook_latency",
    about = "The latency the admission webhooks add to a create through the real API server"
)]
struct Args {
    /// Blocks per side (each side gets `blocks * per_block` creates).
    #[arg(long, default_value_t = 6)]
    blocks: usize,
    /// Creates per block.
    #[arg(long, default_value_t = 10)]
    per_block: usize,
}

const CONFIGURATIONS: [(&str, &str); 2] = [
    (
        "mutatingwebhookconfigurations",
        "image-reflector-defaulting",
    ),
    (
        "validatingwebhookconfigurations",
        "image-reflector-validation",
    ),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let c = Cluster::start(RegistryOptions::default()).await;
    println!(
        "   stack ready in {:.1} s (control plane, registry, image-reflector)",
        started.elapsed().as_secs_f64()
    );
    let repositories: Api<DynamicObject> = Api::namespaced_with(
        c.client().clone(),
        "default",
        &ApiResource {
            group: "image.toolkit.fluxcd.io".into(),
            version: "v1".into(),
            api_version: "image.toolkit.fluxcd.io/v1".into(),
            kind: "ImageRepository".into(),
            plural: "imagerepositories".into(),
        },
    );
    let repository: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageRepository",
        "metadata": {"name": "latency", "namespace": "default"},
        "spec": {
            "image": format!("{}/org/app", c.registry.host()),
            "interval": "5m",
            "exclusionList": ["^.*\\.sig$", "^sha256-.*"],
        },
    }))
    .expect("the repository is a valid object");
    let dry_run = PostParams {
        dry_run: true,
        field_manager: None,
    };
    let create = async || {
        let t = Instant::now();
        repositories
            .create(&dry_run, &repository)
            .await
            .expect("a dry-run create is admitted");
        t.elapsed()
    };
    let configurations = saved_configurations(&c).await;

    for _ in 0..10 {
        create().await; // warm the connection, the webhook client and the caches
    }
    let (mut with, mut without, mut differences) = (Vec::new(), Vec::new(), Vec::new());
    let mut waited = WebhookTime::default();
    for block in 0..args.blocks {
        let order = if block % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut medians = [Duration::ZERO; 2];
        for installed in order {
            set_webhooks(&c, &configurations, installed, &create).await;
            let before = WebhookTime::read(&c).await;
            let mut times = Vec::with_capacity(args.per_block);
            for _ in 0..args.per_block {
                times.push(create().await);
            }
            waited.add_since(&before, &WebhookTime::read(&c).await);
            medians[usize::from(installed)] = median(&mut times.clone());
            if installed {
                with.extend(times);
            } else {
                without.extend(times);
            }
        }
        differences.push(medians[1].as_secs_f64() - medians[0].as_secs_f64());
    }
    set_webhooks(&c, &configurations, true, &create).await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (with_p50, with_p90) = (median(&mut with), percentile(&mut with, 0.9));
    let (without_p50, without_p90) = (median(&mut without), percentile(&mut without, 0.9));
    differences.sort_by(f64::total_cmp);
    let added = differences[differences.len() / 2] * 1000.0;
    println!(
        "   dry-run create, {} each side in {} blocks of {}:",
        with.len(),
        args.blocks,
        args.per_block
    );
    println!(
        "     without webhooks   p50 {:.2} ms   p90 {:.2} ms",
        ms(without_p50),
        ms(without_p90)
    );
    println!(
        "     with webhooks      p50 {:.2} ms   p90 {:.2} ms",
        ms(with_p50),
        ms(with_p90)
    );
    println!(
        "     added by the webhooks: {:.2} ms (difference of the p50s), {:.2} ms (median of the blocks' differences; range {:.2} to {:.2}); target under 2 ms",
        ms(with_p50) - ms(without_p50),
        added,
        differences[0] * 1000.0,
        differences[differences.len() - 1] * 1000.0
    );
    let per_create = |seconds: f64| seconds * 1000.0 / with.len() as f64;
    println!(
        "     the API server's own timing of the webhook calls (apiserver_admission_webhook_admission_duration_seconds): \
         {:.2} ms per create ({:.2} mutating + {:.2} validating), of which image-reflector's handlers {:.3} ms",
        per_create(waited.mutating + waited.validating),
        per_create(waited.mutating),
        per_create(waited.validating),
        per_create(waited.handlers),
    );
}

/// Seconds spent on our webhooks so far: as the API server timed its calls (each type),
/// and in image-reflector's handlers (their `admission_request_duration_seconds`).
#[derive(Default)]
struct WebhookTime {
    mutating: f64,
    validating: f64,
    handlers: f64,
}

impl WebhookTime {
    async fn read(c: &Cluster) -> WebhookTime {
        let api = c.control_plane.metrics().await;
        let called = |kind: &str| {
            metric_sum(
                &api,
                "apiserver_admission_webhook_admission_duration_seconds_sum",
                &[&format!("type=\"{kind}\""), "image.toolkit.fluxcd.io\""],
            )
        };
        WebhookTime {
            mutating: called("admit"),
            validating: called("validating"),
            handlers: metric_sum(
                &c.reflector_metrics().await,
                "admission_request_duration_seconds_sum",
                &[],
            ),
        }
    }

    fn add_since(&mut self, before: &WebhookTime, after: &WebhookTime) {
        self.mutating += after.mutating - before.mutating;
        self.validating += after.validating - before.validating;
        self.handlers += after.handlers - before.handlers;
    }
}

/// The two webhook configurations as the cluster holds them, ready to be created again.
async fn saved_configurations(c: &Cluster) -> Vec<(String, Value)> {
    let mut saved = Vec::new();
    for (plural, name) in CONFIGURATIONS {
        saved.push((plural.to_string(), c.saved_object(plural, name).await));
    }
    saved
}

/// Installs or deletes both webhook configurations, and waits until a create shows the
/// API server acting on the change (our webhooks' review count moves, or stops moving).
async fn set_webhooks(
    c: &Cluster,
    saved: &[(String, Value)],
    installed: bool,
    create: &impl AsyncFn() -> Duration,
) {
    let present = c
        .kubectl(&["get", CONFIGURATIONS[1].0, CONFIGURATIONS[1].1])
        .await
        .success();
    if present != installed {
        for (plural, obj) in saved {
            if installed {
                c.kubectl_with_stdin(&["create", "-f", "-"], &obj.to_string())
                    .await;
            } else {
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                c.kubectl_ok(&["delete", plural, name]).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = reviews(c).await;
        create().await;
        let reached = reviews(c).await > before;
        if reached == installed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server did not act on the webhook configurations being {} within 30 s",
            if installed { "created" } else { "deleted" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reviews our webhooks have answered.
async fn reviews(c: &Cluster) -> f64 {
    metric_sum(
        &c.reflector_metrics().await,
        "admission_requests_total",
        &[],
    )
}

fn median(times: &mut [Duration]) -> Duration {
    percentile(times, 0.5)
}

fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).copied().unwrap_or_default()
}
