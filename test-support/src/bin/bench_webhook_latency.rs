//! `bench_webhook_latency`: what the admission webhooks add to a create as a cluster feels
//! it, through the real API server (`test_support::cluster`: the real control plane, the
//! project's webhook configurations, image-reflector as its ServiceAccount), beside what
//! a bare webhook adds in the same run. Run by `make bench-webhook` (`bench/webhook.sh`)
//! after the HTTPS rounds.
//!
//! Server-side dry-run creates of one ImageRepository (the API server runs the whole
//! admission chain, schema defaults, CEL rules and the webhooks, and stores nothing),
//! timed from the client, on three sides: no webhook configurations; image-reflector's
//! two; and the same two pointed at a bare server (`examples/webhook_baseline
//! --echo-uid`, which reads the request's uid and checks nothing) through the same
//! Service, certificate and port routing. Each block runs `--per-block` creates on every
//! side, one after another, in one of the six orders in turn, so that the sides see the
//! same machine. A change of configurations takes effect in the API server after its
//! informer sees it; each side's creates start only once a create has reached exactly
//! that side's webhooks, read from the API server's own per-webhook call counts.
//!
//! Prints the median and p90 of each side and the medians of the blocks' differences.
//! Figures only: it never fails on a timing. Test infrastructure, not part of the
//! image-reflector binary.

use clap::Parser;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, metric_sum};
use test_support::registry::RegistryOptions;
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(
    name = "bench_webhook_latency",
    about = "The latency the admission webhooks add to a create through the real API server, beside a bare webhook's"
)]
struct Args {
    /// Blocks (each side gets `blocks * per_block` creates; 6 runs every order once).
    #[arg(long, default_value_t = 6)]
    blocks: usize,
    /// Creates per side in a block.
    #[arg(long, default_value_t = 10)]
    per_block: usize,
    /// The bare webhook server: `examples/webhook_baseline` as built.
    #[arg(long)]
    baseline: PathBuf,
    /// Write `spec.timeout` in the created object, so that the defaulting webhook has
    /// nothing to patch (by default it adds the timeout and its annotation, as it does for
    /// a spec that leaves the timeout out).
    #[arg(long)]
    timeout_written: bool,
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

/// How the webhooks' names end, as the API server labels its metrics with them: ours,
/// and the bare ones (the same names with this domain instead of the API group).
const OURS: &str = ".image.toolkit.fluxcd.io";
const BARE: &str = ".bare.bench.invalid";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    NoWebhooks = 0,
    Ours = 1,
    Bare = 2,
}

/// Every order of the three sides; block `b` runs `ORDERS[b % 6]`.
const ORDERS: [[Side; 3]; 6] = {
    use Side::*;
    [
        [NoWebhooks, Ours, Bare],
        [Ours, Bare, NoWebhooks],
        [Bare, NoWebhooks, Ours],
        [NoWebhooks, Bare, Ours],
        [Bare, Ours, NoWebhooks],
        [Ours, NoWebhooks, Bare],
    ]
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let c = Cluster::start(RegistryOptions::default()).await;
    let (_bare_server, bare_port) = start_bare(&args.baseline, &c).await;
    println!(
        "   stack ready in {:.1} s (control plane, registry, image-reflector, bare webhook on port {bare_port})",
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
    let mut spec = json!({
        "image": format!("{}/org/app", c.registry.host()),
        "interval": "5m",
        "exclusionList": ["^.*\\.sig$", "^sha256-.*"],
    });
    if args.timeout_written {
        spec["timeout"] = json!("5m");
    }
    let repository: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "image.toolkit.fluxcd.io/v1",
        "kind": "ImageRepository",
        "metadata": {"name": "latency", "namespace": "default"},
        "spec": spec,
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
    let ours = saved_configurations(&c).await;
    let configurations = Configurations {
        bare: bare_configurations(&ours, bare_port),
        ours,
    };

    for side in [Side::Bare, Side::Ours] {
        set_side(&c, &configurations, side, &create).await;
        for _ in 0..10 {
            create().await; // warm the connections, the webhook clients and the caches
        }
    }
    let mut times: [Vec<Duration>; 3] = Default::default();
    let (mut added_ours, mut added_bare, mut ours_over_bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut spent = Spent::default();
    for block in 0..args.blocks {
        let mut medians = [0.0; 3];
        for side in ORDERS[block % ORDERS.len()] {
            set_side(&c, &configurations, side, &create).await;
            let before = Spent::read(&c).await;
            let mut block_times = Vec::with_capacity(args.per_block);
            for _ in 0..args.per_block {
                block_times.push(create().await);
            }
            spent.add_since(&before, &Spent::read(&c).await);
            medians[side as usize] = ms(median(&mut block_times.clone()));
            times[side as usize].extend(block_times);
        }
        let [none, ours, bare] = medians;
        added_ours.push(ours - none);
        added_bare.push(bare - none);
        ours_over_bare.push(ours - bare);
    }
    set_side(&c, &configurations, Side::Ours, &create).await;

    println!(
        "   dry-run create of a spec {}, {} on each side in {} blocks of {} (the sides in turn, in every order):",
        if args.timeout_written {
            "with its timeout written (nothing to default)"
        } else {
            "without a timeout (our defaulting webhook patches it in)"
        },
        times[0].len(),
        args.blocks,
        args.per_block
    );
    for (side, name) in [
        (Side::NoWebhooks, "no webhooks"),
        (Side::Ours, "image-reflector's webhooks"),
        (Side::Bare, "bare webhooks"),
    ] {
        let t = &mut times[side as usize];
        println!(
            "     {name:<28} p50 {:.2} ms   p90 {:.2} ms",
            ms(median(t)),
            ms(percentile(t, 0.9))
        );
    }
    println!(
        "     added by image-reflector's webhooks: {}; target under 2 ms",
        summary(&mut added_ours)
    );
    println!(
        "     added by the bare webhooks:          {}",
        summary(&mut added_bare)
    );
    println!(
        "     image-reflector's beyond the bare:   {}",
        summary(&mut ours_over_bare)
    );
    let per_create = |seconds: f64| seconds * 1000.0 / times[0].len() as f64;
    println!(
        "     the API server's own timing of the webhook calls (apiserver_admission_webhook_admission_duration_seconds), per create: \
         image-reflector's {:.2} ms ({:.2} mutating + {:.2} validating), of which its handlers {:.3} ms; \
         the bare ones {:.2} ms ({:.2} + {:.2})",
        per_create(spent.ours.mutating + spent.ours.validating),
        per_create(spent.ours.mutating),
        per_create(spent.ours.validating),
        per_create(spent.handlers),
        per_create(spent.bare.mutating + spent.bare.validating),
        per_create(spent.bare.mutating),
        per_create(spent.bare.validating),
    );
}

/// Starts the bare webhook server with image-reflector's certificate, on a free port;
/// returns it (killed when dropped) and its port.
async fn start_bare(baseline: &std::path::Path, c: &Cluster) -> (tokio::process::Child, u16) {
    let (cert, key) = c.webhook_tls_files();
    let mut child = tokio::process::Command::new(baseline)
        .arg("127.0.0.1:0")
        .args([cert, key])
        .arg("--echo-uid")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", baseline.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let port = line
        .strip_prefix("listening on ")
        .and_then(|addr| addr.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the bare webhook server printed {line:?}, not its address"));
    (child, port)
}

/// The webhook configurations of each webhook side, ready to be created.
struct Configurations {
    ours: Vec<(String, Value)>,
    bare: Vec<(String, Value)>,
}

/// The two webhook configurations as the cluster holds them, ready to be created again.
async fn saved_configurations(c: &Cluster) -> Vec<(String, Value)> {
    let mut saved = Vec::new();
    for (plural, name) in CONFIGURATIONS {
        saved.push((plural.to_string(), c.saved_object(plural, name).await));
    }
    saved
}

/// Our configurations renamed (objects and webhooks) and sent to the bare server's port:
/// the same Service, CA, rules and match conditions.
fn bare_configurations(ours: &[(String, Value)], port: u16) -> Vec<(String, Value)> {
    ours.iter()
        .map(|(plural, obj)| {
            let mut obj = obj.clone();
            let name = format!(
                "{}-bare",
                obj["metadata"]["name"].as_str().unwrap_or_default()
            );
            obj["metadata"]["name"] = json!(name);
            for webhook in obj["webhooks"].as_array_mut().into_iter().flatten() {
                let renamed = webhook["name"]
                    .as_str()
                    .unwrap_or_default()
                    .replace(OURS, BARE);
                webhook["name"] = json!(renamed);
                webhook["clientConfig"]["service"]["port"] = json!(port);
            }
            (plural.clone(), obj)
        })
        .collect()
}

/// Creates or deletes a side's configurations.
async fn install(c: &Cluster, configurations: &[(String, Value)], installed: bool) {
    let name = |obj: &Value| {
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (plural, first) = &configurations[0];
    let present = c.kubectl(&["get", plural, &name(first)]).await.success();
    if present == installed {
        return;
    }
    for (plural, obj) in configurations {
        if installed {
            let ran = c
                .kubectl_with_stdin(&["create", "-f", "-"], &obj.to_string())
                .await;
            assert!(
                ran.success(),
                "kubectl create {}: {}",
                name(obj),
                ran.stderr
            );
        } else {
            c.kubectl_ok(&["delete", plural, &name(obj)]).await;
        }
    }
}

/// Leaves only `side`'s configurations installed, and waits until a create reaches that
/// side's webhooks and no other's (the API server acts on a change once its informer
/// has seen it).
async fn set_side(
    c: &Cluster,
    configurations: &Configurations,
    side: Side,
    create: &impl AsyncFn() -> Duration,
) {
    install(c, &configurations.ours, side == Side::Ours).await;
    install(c, &configurations.bare, side == Side::Bare).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = Spent::read(c).await;
        create().await;
        let after = Spent::read(c).await;
        let reached = (
            after.ours.count > before.ours.count,
            after.bare.count > before.bare.count,
        );
        if reached == (side == Side::Ours, side == Side::Bare) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API server did not act on the webhook configurations within 30 s (calls reached ours, bare: {reached:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One side's webhook calls as the API server timed them: seconds per type, and how many
/// calls so far (read to see which side a create reached; never summed).
#[derive(Default)]
struct Calls {
    mutating: f64,
    validating: f64,
    count: f64,
}

impl Calls {
    /// From the API server's metrics, for the webhooks whose names end in `suffix`.
    fn read(metrics: &str, suffix: &str) -> Calls {
        let name = format!("{suffix}\"");
        let seconds = |kind: &str| {
            metric_sum(
                metrics,
                "apiserver_admission_webhook_admission_duration_seconds_sum",
                &[&format!("type=\"{kind}\""), &name],
            )
        };
        Calls {
            mutating: seconds("admit"),
            validating: seconds("validating"),
            count: metric_sum(
                metrics,
                "apiserver_admission_webhook_admission_duration_seconds_count",
                &[&name],
            ),
        }
    }

    fn add_since(&mut self, before: &Calls, after: &Calls) {
        self.mutating += after.mutating - before.mutating;
        self.validating += after.validating - before.validating;
    }
}

/// Time spent on webhooks so far: each side's calls as the API server timed them, and
/// image-reflector's handlers (their `admission_request_duration_seconds`).
#[derive(Default)]
struct Spent {
    ours: Calls,
    bare: Calls,
    handlers: f64,
}

impl Spent {
    async fn read(c: &Cluster) -> Spent {
        let api = c.control_plane.metrics().await;
        Spent {
            ours: Calls::read(&api, OURS),
            bare: Calls::read(&api, BARE),
            handlers: metric_sum(
                &c.reflector_metrics().await,
                "admission_request_duration_seconds_sum",
                &[],
            ),
        }
    }

    fn add_since(&mut self, before: &Spent, after: &Spent) {
        self.ours.add_since(&before.ours, &after.ours);
        self.bare.add_since(&before.bare, &after.bare);
        self.handlers += after.handlers - before.handlers;
    }
}

/// "M ms (median of the blocks' differences; range A to B)".
fn summary(differences: &mut [f64]) -> String {
    differences.sort_by(f64::total_cmp);
    let (first, last) = (
        differences.first().copied().unwrap_or_default(),
        differences.last().copied().unwrap_or_default(),
    );
    let median = differences
        .get(differences.len() / 2)
        .copied()
        .unwrap_or_default();
    format!("{median:.2} ms (median of the blocks' differences; range {first:.2} to {last:.2})")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &mut [Duration]) -> Duration {
    percentile(times, 0.5)
}

fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).copied().unwrap_or_default()
}
