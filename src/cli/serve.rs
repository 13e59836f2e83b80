//! `image-reflector serve`: the webhooks, probes and metrics, and (without
//! `--webhook-only`) the controllers.

use crate::admission::Admission;
use crate::server::{AppState, Readiness, ServerConfig, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Parses a listen address; `:PORT` means every interface, as in Flux's flags.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| {
        format!("{s:?} is not a listen address; write HOST:PORT with an IP address (\"127.0.0.1:9443\", \"[::]:9443\") or \":PORT\"")
    })
}

fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    match crate::api::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The User-Agent of every Kubernetes API request; its product part is the field manager
/// the API server records for our writes (status, finalizers, events, the Lease).
pub const FIELD_MANAGER_USER_AGENT: &str =
    concat!("image-reflector-controller/", env!("CARGO_PKG_VERSION"));

/// Arguments of `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// HTTPS address of the admission webhooks (/mutate, /validate).
    #[arg(long, default_value = "0.0.0.0:9443", value_parser = parse_listen_addr)]
    pub webhook_addr: SocketAddr,
    /// HTTP address of /healthz and /readyz.
    #[arg(long, default_value = ":9440", value_parser = parse_listen_addr)]
    pub health_addr: SocketAddr,
    /// HTTP address of /metrics.
    #[arg(long, default_value = ":8080", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,
    /// PEM certificate chain of the webhook server; reloaded when the file changes.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs/tls.crt")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the webhook server; reloaded when the file changes.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs/tls.key")]
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration_flag)]
    pub tls_reload_interval: Duration,
    /// Serve only the webhooks, without controllers and without a cluster connection;
    /// checks that need cluster state (cross-namespace access) are skipped.
    #[arg(long)]
    pub webhook_only: bool,
    /// Refuse ImagePolicies that reference an ImageRepository in another namespace.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub no_cross_namespace_refs: bool,
    /// HTTP address of the push receiver (POST /hooks/PROVIDER): registries' push
    /// notifications rescan the pushed image's ImageRepositories at once. Off unless set;
    /// needs the controllers (not --webhook-only).
    #[arg(long, value_parser = parse_listen_addr)]
    pub receiver_addr: Option<SocketAddr>,
    /// Secret in --runtime-namespace holding the receiver's secrets: key `token`, and
    /// optionally one key per provider (`github`, `dockerhub`, ...) that overrides it.
    #[arg(long, default_value = "image-reflector-receiver")]
    pub receiver_secret: String,
    /// The receiver requests a scan once pushes to an image have stopped for this long
    /// (a burst of pushes becomes one scan per ImageRepository).
    #[arg(long, default_value = "500ms", value_parser = parse_duration_flag)]
    pub receiver_quiet_period: Duration,
    /// ... and at the latest this long after the first push of a burst.
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    pub receiver_max_delay: Duration,

    #[command(flatten)]
    pub controllers: ControllerArgs,

    #[command(flatten)]
    pub flux: super::flux_flags::FluxFlags,
}

/// Flags of the controllers (ignored with `--webhook-only`).
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Directory of the tag store (one checksummed file per ImageRepository).
    #[arg(long, default_value = "/data")]
    pub storage_path: PathBuf,
    /// Run the reconcilers only while holding the leader-election Lease; every replica
    /// serves the webhooks regardless.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_leader_election: bool,
    /// The namespace this process runs in: of the Lease, and the one watched without
    /// --watch-all-namespaces.
    #[arg(long, env = "RUNTIME_NAMESPACE", default_value = "flux-system")]
    pub runtime_namespace: String,
    /// Name of the leader-election Lease; by default
    /// `image-reflector-controller-leader-election`, with a hash of
    /// --watch-label-selector appended when one is set (as Flux names it, so shards do not
    /// share a Lease).
    #[arg(long)]
    pub leader_election_id: Option<String>,
    /// Watch every namespace; `--watch-all-namespaces=false` watches only --runtime-namespace.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub watch_all_namespaces: bool,
    /// Reconcile only objects with these labels (e.g. `sharding.fluxcd.io/key=shard1`).
    #[arg(long)]
    pub watch_label_selector: Option<String>,
    /// Objects of each kind reconciled at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent: u16,
    /// Client-side limit of Kubernetes API requests per second (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,
    /// Burst of Kubernetes API requests above --kube-api-qps.
    #[arg(long, default_value_t = 300)]
    pub kube_api_burst: u32,
    /// Requeues are delayed by a random share of the interval up to this percentage, so
    /// objects created together do not scan together.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub interval_jitter_percentage: u8,
    /// Service account whose image pull secrets are used when an ImageRepository has
    /// neither secretRef nor serviceAccountName.
    #[arg(long)]
    pub default_service_account: Option<String>,
    /// How long an ImagePolicy waits before looking again at a repository without tags.
    #[arg(long, default_value = "30s", value_parser = parse_duration_flag)]
    pub requeue_dependency: Duration,
    /// Tags asked for per page of `tags/list`.
    #[arg(long, default_value_t = 1000)]
    pub registry_page_size: usize,
    /// Largest number of tags kept for one repository; more fails the scan.
    #[arg(long, default_value_t = 250_000)]
    pub registry_max_tags: usize,
    /// Concurrent requests to one registry host, across every scan.
    #[arg(long, default_value_t = 8)]
    pub registry_concurrency: usize,
    /// Requests per second to one registry host, across every scan (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    pub registry_qps: f64,
}

/// The Lease name Flux's controller uses: `BASE`, or `BASE-HASH` where HASH is the first 8
/// hex digits of the SHA-256 of the watch label selector, so that shards do not share it.
pub fn leader_election_id(base: &str, watch_label_selector: Option<&str>) -> String {
    match watch_label_selector.filter(|s| !s.is_empty()) {
        Some(selector) => {
            use sha2::Digest as _;
            let sum = hex::encode(sha2::Sha256::digest(selector.as_bytes()));
            format!("{base}-{}", &sum[..8])
        }
        None => base.to_string(),
    }
}

impl ServeArgs {
    /// The server part of the configuration.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            webhook_addr: self.webhook_addr,
            health_addr: self.health_addr,
            metrics_addr: self.metrics_addr,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_reload_interval: self.tls_reload_interval,
            receiver_addr: self.receiver_addr,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives while the
/// server is still starting is not lost (nor does it kill the process outright).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            let term = async {
                match term {
                    Ok(mut s) => drop(s.recv().await),
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int {
                    Ok(mut s) => drop(s.recv().await),
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
            tracing::info!("shutdown requested; finishing in-flight requests");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}

/// Runs `serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.webhook_only {
        if args.receiver_addr.is_some() {
            anyhow::bail!(
                "--receiver-addr needs the controllers' caches and a cluster; leave out --webhook-only or --receiver-addr"
            );
        }
        let admission = Admission {
            cluster: None,
            no_cross_namespace_refs: args.no_cross_namespace_refs,
        };
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
        let state = AppState::new(admission, Readiness::new(false), registry);
        serve(&args.server_config(), state, shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    run_with_controllers(args).await
}

/// The whole process: watches, webhooks, probes, metrics and (on the leader) the
/// reconcilers, sharing one scanner, one tag store and one set of caches.
async fn run_with_controllers(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use crate::controller::{self, CacheView, ControllerOptions, leader, ratelimit};
    use anyhow::Context as _;
    use futures::FutureExt;
    use std::sync::Arc;

    let shutdown = shutdown_signal().boxed().shared();
    let c = &args.controllers;
    let flux = &args.flux;
    for notice in flux.notices() {
        tracing::warn!("{notice}");
    }
    let options = ControllerOptions {
        namespace: (!c.watch_all_namespaces).then(|| c.runtime_namespace.clone()),
        label_selector: c.watch_label_selector.clone().filter(|s| !s.is_empty()),
        concurrency: c.concurrent,
        interval_jitter_percentage: c.interval_jitter_percentage,
        default_service_account: c.default_service_account.clone().filter(|s| !s.is_empty()),
        cloud: controller::CloudOptions {
            autologin: flux.autologin(),
            object_level_workload_identity: flux.gates().enabled("ObjectLevelWorkloadIdentity"),
        },
        no_cross_namespace_refs: args.no_cross_namespace_refs,
        requeue_dependency: c.requeue_dependency,
        events_addr: flux.events_addr.clone(),
        min_retry_backoff: flux.min_retry_delay,
        max_retry_backoff: flux.max_retry_delay.max(flux.min_retry_delay),
        instance: std::env::var("POD_NAME").ok().or_else(hostname),
        ..ControllerOptions::default()
    };

    let mut kube_config = match &flux.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "finding the Kubernetes API (in-cluster service account, KUBECONFIG or --kubeconfig); to serve only the webhooks without a cluster, add --webhook-only",
        )?,
    };
    // The API server names the field manager of every write after the User-Agent's
    // product; kube sends none ("unknown"). Flux's controller writes as
    // "image-reflector-controller", so managedFields read the same with either.
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(FIELD_MANAGER_USER_AGENT),
    ));
    // Events get their own client and token bucket, as controller-runtime's recorder
    // does: a burst of events then never delays the status writes.
    let rest_metrics = controller::rest_metrics::RestClientMetrics::default();
    let limited = |config: kube::Config| -> anyhow::Result<kube::Client> {
        Ok(kube::client::ClientBuilder::try_from(config)
            .context("building the Kubernetes client")?
            .with_layer(&rest_metrics.layer())
            .with_layer(&ratelimit::RateLimitLayer::new(
                c.kube_api_qps,
                c.kube_api_burst,
            ))
            .build())
    };
    let client = limited(kube_config.clone())?;
    let event_client = limited(kube_config)?;

    let store = crate::store::TagStore::open(&c.storage_path)
        .with_context(|| format!("--storage-path {}", c.storage_path.display()))?;
    let scanner = crate::scanner::Scanner::new(crate::scanner::ScannerConfig {
        page_size: c.registry_page_size,
        max_tags: c.registry_max_tags,
        per_host_concurrency: c.registry_concurrency.max(1),
        per_host_requests_per_second: c.registry_qps,
        cloud: crate::scanner::cloud::CloudConfig {
            cache_max_size: flux.token_cache_max_size,
            cache_max_duration: flux.token_cache_max_duration,
        },
        ..Default::default()
    })
    .context("starting the registry scanner")?;

    let (caches, changes, drivers) = controller::start_watches(&client, &options);
    tokio::spawn(drivers.run());

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = controller::Metrics::default();
    metrics.register(&mut registry);
    rest_metrics.register(&mut registry);
    registry.register_collector(Box::new(crate::process_metrics::ProcessCollector));
    scanner.register_metrics(&mut registry);
    store.register_metrics(&mut registry);

    let view = CacheView {
        repositories: caches.repositories.clone(),
        namespaces: caches.namespaces.clone(),
    };
    let readiness = Readiness::new(true);
    let admission = Admission {
        cluster: Some(Arc::new(view)),
        no_cross_namespace_refs: args.no_cross_namespace_refs,
    };
    // The push receiver runs on every replica: it requests scans through the API, which
    // the leader's controller acts on.
    let receiver = args.receiver_addr.map(|_| {
        crate::receiver::Receiver::start(
            &crate::receiver::ReceiverConfig {
                namespace: c.runtime_namespace.clone(),
                secret_name: args.receiver_secret.clone(),
                coalescing: crate::receiver::Coalescing {
                    quiet_period: args.receiver_quiet_period,
                    max_delay: args.receiver_max_delay.max(args.receiver_quiet_period),
                },
            },
            &client,
            caches.repositories.clone(),
            readiness.clone(),
        )
    });
    if let Some(receiver) = &receiver {
        receiver.register_metrics(&mut registry);
    }
    let mut state = AppState::new(admission, readiness.clone(), registry);
    if let Some(receiver) = &receiver {
        let stop = tokio_util::sync::CancellationToken::new();
        let cancel = stop.clone();
        let on_shutdown = shutdown.clone();
        tokio::spawn(async move {
            on_shutdown.await;
            cancel.cancel();
        });
        receiver.spawn_tasks(client.clone(), changes.subscribe_repositories(), stop);
        state = state.with_receiver(receiver.router());
    }
    let server = crate::server::Server::bind(&args.server_config(), state).await?;
    let server_task = tokio::spawn(server.run(shutdown.clone()));

    tokio::select! {
        _ = caches.wait_until_ready() => {}
        _ = shutdown.clone() => {
            server_task.await??;
            return Ok(ExitCode::SUCCESS);
        }
    }
    readiness.mark_caches_synced();
    tracing::info!("caches synced");

    let release_lease = tokio_util::sync::CancellationToken::new();
    if c.enable_leader_election {
        let identity = options
            .instance
            .clone()
            .unwrap_or_else(|| "image-reflector".to_string());
        let identity = format!("{identity}_{:08x}", rand::random::<u32>());
        let lease = c.leader_election_id.clone().unwrap_or_else(|| {
            leader_election_id(
                "image-reflector-controller-leader-election",
                c.watch_label_selector.as_deref(),
            )
        });
        let config = leader::LeaderConfig {
            lease_duration: flux.leader_election_lease_duration,
            renew_deadline: flux.leader_election_renew_deadline,
            retry_period: flux.leader_election_retry_period,
            release_on_cancel: flux.leader_election_release_on_cancel,
            ..leader::LeaderConfig::new(&c.runtime_namespace, &lease, &identity)
        };
        let mut leading = leader::spawn(client.clone(), config, release_lease.clone());
        tracing::info!(%lease, %identity, "waiting for leadership");
        tokio::select! {
            r = leading.wait_for(|l| *l) => { r.context("leader election stopped")?; }
            _ = shutdown.clone() => {
                server_task.await??;
                return Ok(ExitCode::SUCCESS);
            }
        }
        // Losing the lease ends the process: a fresh start re-syncs before leading again,
        // as controller-runtime does.
        tokio::spawn(async move {
            if leading.wait_for(|l| !*l).await.is_ok() {
                tracing::error!("lost the leader-election lease; exiting");
                std::process::exit(1);
            }
        });
    }

    controller::run_controllers(
        client,
        event_client,
        caches,
        changes,
        scanner,
        store,
        metrics,
        options,
        shutdown.clone(),
    )
    .await?;
    release_lease.cancel();
    server_task.await??;
    // Give the election loop a moment to hand the lease over.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests;
