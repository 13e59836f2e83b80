//! `bench_scale`: many ImageRepositories of many tags on the real control plane, measured
//! for image-reflector and for Flux's image-reflector-controller v1.2.0 (Badger, its
//! default storage, and the `FluxStorage` feature gate's filesystem storage) in one run.
//! Run by `make bench-scale` (`bench/scale.sh`, which builds release binaries first).
//!
//! One control plane (`test_support::cluster`: the project's CRDs and RBAC applied, no
//! admission webhook in the path, since Flux has none), one registry stand-in serving the
//! same `TAGS` tags under every repository name and counting requests, the same
//! ServiceAccount, client-side API limits (`--kube-api-qps`, `--kube-api-burst`) and
//! `--concurrent` for every controller. (Flux's controller drops its client-side limit
//! when kube-apiserver runs API Priority and Fairness, as it does by default; the run says
//! which, and `KUBE_APISERVER_ARGS=--enable-priority-and-fairness=false` turns APF off.)
//! The controllers are measured in turn, each on its own namespaces and shard
//! (`sharding.fluxcd.io/key`, `--watch-label-selector`), and only one runs at a time, since
//! kube-apiserver's `apiserver_request_total` does not say which client wrote. For each:
//!
//! 1. create `REPOS` objects (interval 1h) and time from the first create until every one
//!    is `Ready=True` (a watch counts them);
//! 2. patch `RESCAN_OBJECTS` of them to `RESCAN_INTERVAL`, and over `RESCAN_WINDOW`
//!    seconds count the API writes (by verb and resource) and the scans (the registry's
//!    `tags/list` requests over the pages one scan takes): writes per unchanged rescan;
//! 3. the peak RSS (`VmHWM` of /proc/PID/status) of the process so far;
//! 4. stop it (SIGTERM), start it again on the same storage and count the registry's
//!    requests in the `RESTART_WINDOW` seconds after the start.
//!
//! It prints every figure beside Flux's from the same run, the ratio ours/Flux and the
//! target, and baselines (the floor the API limits set, the registry swept directly). It
//! never fails on a timing; it fails only when the stack does not work (a process dies,
//! objects never become Ready). Test infrastructure, not part of the image-reflector
//! binary. Knobs are flags or environment variables (`bench_scale --help`).

mod report;
mod run;

use clap::Parser;
use std::time::Instant;
use test_support::cluster::Cluster;
use test_support::fake_registry::{StandIn, StandInOptions};
use test_support::registry::RegistryOptions;

/// Who is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subject {
    /// image-reflector (release build), default flags.
    Ours,
    /// Flux's image-reflector-controller v1.2.0 with Badger, its default storage.
    Flux,
    /// Flux's controller with `--feature-gates=FluxStorage=true` (filesystem storage).
    FluxFluxstorage,
}

impl Subject {
    /// The shard key and namespace prefix.
    pub fn key(self) -> &'static str {
        match self {
            Subject::Ours => "ours",
            Subject::Flux => "flux-badger",
            Subject::FluxFluxstorage => "flux-fluxstorage",
        }
    }

    /// How the tables name it.
    pub fn title(self) -> &'static str {
        match self {
            Subject::Ours => "image-reflector",
            Subject::Flux => "Flux Badger",
            Subject::FluxFluxstorage => "Flux FluxStorage",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "bench_scale",
    about = "image-reflector and Flux's controller under the same load on the real control plane"
)]
pub struct Args {
    /// ImageRepositories created per controller.
    #[arg(long, env = "REPOS", default_value_t = 1000)]
    pub repos: usize,
    /// Tags of every repository.
    #[arg(long, env = "TAGS", default_value_t = 1000)]
    pub tags: usize,
    /// Namespaces the objects of one controller are spread over.
    #[arg(long, env = "NAMESPACES", default_value_t = 10)]
    pub namespaces: usize,
    /// Who is measured, in this order.
    #[arg(
        long,
        env = "CONTROLLERS",
        value_enum,
        value_delimiter = ',',
        default_value = "ours,flux,flux-fluxstorage"
    )]
    pub controllers: Vec<Subject>,
    /// `--kube-api-qps` of every controller.
    #[arg(long, env = "KUBE_API_QPS", default_value_t = 50.0)]
    pub kube_api_qps: f64,
    /// `--kube-api-burst` of every controller.
    #[arg(long, env = "KUBE_API_BURST", default_value_t = 300)]
    pub kube_api_burst: u32,
    /// `--concurrent` of every controller.
    #[arg(long, env = "CONCURRENT", default_value_t = 4)]
    pub concurrent: u32,
    /// The registry's page size when a client sends no `n` (clients that send one get it).
    #[arg(long, env = "REGISTRY_DEFAULT_PAGE_SIZE", default_value_t = 100)]
    pub registry_default_page_size: usize,
    /// Objects patched to a short interval in phase 2.
    #[arg(long, env = "RESCAN_OBJECTS", default_value_t = 200)]
    pub rescan_objects: usize,
    /// Their interval.
    #[arg(long, env = "RESCAN_INTERVAL", default_value = "10s")]
    pub rescan_interval: String,
    /// Seconds of rescans counted.
    #[arg(long, env = "RESCAN_WINDOW", default_value_t = 35)]
    pub rescan_window: u64,
    /// Seconds counted after a restart.
    #[arg(long, env = "RESTART_WINDOW", default_value_t = 60)]
    pub restart_window: u64,
    /// Seconds to wait for every object to become Ready before failing.
    #[arg(long, env = "READY_TIMEOUT", default_value_t = 3600)]
    pub ready_timeout: u64,
    /// Extra flags for `image-reflector serve`.
    #[arg(
        long,
        env = "SERVE_ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub serve_args: String,
    /// Extra flags for Flux's controller.
    #[arg(
        long,
        env = "FLUX_ARGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub flux_args: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let started = Instant::now();
    let registry = StandIn::start(StandInOptions {
        repository: "*".into(),
        tags: (0..args.tags)
            .map(|i| format!("1.{}.{}", i / 100, i % 100))
            .collect(),
        default_page_size: (args.registry_default_page_size > 0)
            .then_some(args.registry_default_page_size),
        ..Default::default()
    })
    .await;
    let mut cluster = Cluster::install(RegistryOptions::default()).await;
    // Flux has no admission webhook: neither controller gets one in the path.
    cluster
        .kubectl_ok(&[
            "delete",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            "--all",
        ])
        .await;
    println!(
        "== bench-scale: {} ImageRepositories x {} tags per controller, {} namespaces each; \
         stack up in {:.1} s",
        args.repos,
        args.tags,
        args.namespaces,
        started.elapsed().as_secs_f64()
    );
    println!(
        "   one control plane (kube-apiserver {}), one registry stand-in {} (pages of {} without n); \
         every controller: --kube-api-qps {} --kube-api-burst {} --concurrent {}",
        run::apiserver_version(&cluster).await,
        registry.host(),
        args.registry_default_page_size,
        args.kube_api_qps,
        args.kube_api_burst,
        args.concurrent
    );
    let apf = run::priority_and_fairness(&cluster).await;
    println!(
        "   API Priority and Fairness is {}",
        if apf {
            "on (kube-apiserver's default): Flux's controller then turns its client-side \
             limit off, whatever --kube-api-qps says; KUBE_APISERVER_ARGS=--enable-priority-and-fairness=false \
             makes it keep the limit"
        } else {
            "off: every controller keeps its client-side limit"
        }
    );
    let sweep = run::sweep_registry(&registry, args.repos).await;
    println!(
        "   baseline: the registry swept directly, {} repositories x 8 connections: {:.2} s, {} requests",
        args.repos, sweep.seconds, sweep.requests
    );

    let mut measured = Vec::new();
    for subject in args.controllers.clone() {
        println!();
        let figures = run::measure(&mut cluster, &registry, &args, subject).await;
        measured.push(figures);
    }
    println!();
    report::print(&args, &measured, &sweep, apf);
}
