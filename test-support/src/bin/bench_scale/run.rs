//! One controller measured: started on its own shard, loaded, rescanned, restarted,
//! stopped (see the phases in `main.rs`).

use crate::{Args, Subject};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use test_support::cluster::{Cluster, GROUP, condition};
use test_support::control_plane::WriteCounts;
use test_support::fake_registry::StandIn;
use test_support::flux::FluxController;
use test_support::peak_rss_kib;

/// The label both controllers shard on (`--watch-label-selector`).
const SHARD_LABEL: &str = "sharding.fluxcd.io/key";
const IMAGE_REPOSITORIES: &str = "imagerepositories.image.toolkit.fluxcd.io";
/// Objects created or patched at once.
const PARALLEL_WRITES: usize = 8;
/// How long objects patched to a new interval may take to show the new generation.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

/// What one controller measured.
pub struct Figures {
    pub subject: Subject,
    /// VmHWM a few seconds after start, before any object exists.
    pub idle_rss_kib: u64,
    /// Creating every object (the driver's writes alone).
    pub created_s: f64,
    /// From the first create until every object is Ready.
    pub ready_s: f64,
    /// The controller's API writes until every object was Ready.
    pub first_writes: WriteCounts,
    /// The registry's `tags/list` and all requests until then.
    pub first_tag_requests: usize,
    pub first_requests: usize,
    /// VmHWM after the first scans and the rescans, before the restart.
    pub peak_rss_kib: u64,
    /// Scans counted in the rescan window (`tags/list` requests / pages of one scan).
    pub rescans: f64,
    /// Every API write in the rescan window (kube-apiserver's own leases among them).
    pub rescan_writes: WriteCounts,
    pub rescan_requests: usize,
    /// Registry requests and API writes in the window after the restart.
    pub restart_requests: usize,
    pub restart_writes: WriteCounts,
    /// Objects still Ready, and `lastScanResult.revision`s changed, after that window.
    pub still_ready: usize,
    pub revisions_changed: usize,
    /// VmHWM of the restarted process at the end of the window.
    pub restart_rss_kib: u64,
}

impl Figures {
    /// Registry `tags/list` requests one scan takes (from the first scans).
    pub fn pages_per_scan(&self, repos: usize) -> f64 {
        self.first_tag_requests as f64 / repos.max(1) as f64
    }

    /// The controller's writes in the rescan window, per rescan.
    pub fn writes_per_rescan(&self) -> Option<f64> {
        (self.rescans > 0.0)
            .then(|| controller_writes(&self.rescan_writes).total() as f64 / self.rescans)
    }
}

/// The writes a controller of ImageRepositories makes: the objects and their events (the
/// rest, such as kube-apiserver's own Lease renewals, is someone else's).
pub fn controller_writes(w: &WriteCounts) -> WriteCounts {
    w.only(|r| r.starts_with("imagerepositories") || r.starts_with("events"))
}

/// kube-apiserver's `/version` gitVersion.
pub async fn apiserver_version(cluster: &Cluster) -> String {
    cluster
        .client()
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Whether kube-apiserver runs API Priority and Fairness (its default), told as Flux tells
/// it: by the `X-Kubernetes-PF-FlowSchema-UID` header on the answer to `HEAD /livez/ping`.
/// Flux's controller then turns its client-side limit off, whatever `--kube-api-qps` says
/// (`GetConfigOrDie` of fluxcd/pkg/runtime/client sets QPS and burst to -1).
pub async fn priority_and_fairness(cluster: &Cluster) -> bool {
    let request = http::Request::head("/livez/ping")
        .body(kube::client::Body::empty())
        .expect("HEAD /livez/ping");
    cluster
        .client()
        .send(request)
        .await
        .is_ok_and(|r| r.headers().contains_key("x-kubernetes-pf-flowschema-uid"))
}

/// The registry's repositories swept without a controller or an API server.
pub struct Sweep {
    pub seconds: f64,
    pub requests: usize,
}

/// Lists every repository's tags directly (8 at a time, `n=1000`, following `Link`).
pub async fn sweep_registry(registry: &StandIn, repos: usize) -> Sweep {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client");
    let base = format!("http://{}", registry.host());
    let before = registry.requests();
    let started = Instant::now();
    futures::stream::iter(0..repos)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let mut path = format!("/v2/sweep/repo-{i:05}/tags/list?n=1000");
                loop {
                    let resp = http
                        .get(format!("{base}{path}"))
                        .send()
                        .await
                        .and_then(|r| r.error_for_status())
                        .unwrap_or_else(|e| panic!("registry sweep {path}: {e}"));
                    let next = resp
                        .headers()
                        .get("link")
                        .and_then(|l| l.to_str().ok())
                        .and_then(|l| Some(l.split_once('<')?.1.split_once('>')?.0.to_string()));
                    let _ = resp.bytes().await;
                    match next {
                        Some(p) => path = p,
                        None => break,
                    }
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    Sweep {
        seconds: started.elapsed().as_secs_f64(),
        requests: registry.requests() - before,
    }
}

/// A running controller under measurement.
enum Running {
    Ours(Vec<String>),
    Flux(Box<FluxController>),
}

impl Running {
    async fn start(cluster: &mut Cluster, args: &Args, subject: Subject) -> Running {
        let mut flags = vec![
            format!("--watch-label-selector={SHARD_LABEL}={}", subject.key()),
            format!("--kube-api-qps={}", args.kube_api_qps),
            format!("--kube-api-burst={}", args.kube_api_burst),
            format!("--concurrent={}", args.concurrent),
        ];
        let running = match subject {
            Subject::Ours => {
                flags.extend(args.serve_args.split_whitespace().map(str::to_string));
                Running::Ours(flags)
            }
            Subject::Flux | Subject::FluxFluxstorage => {
                if subject == Subject::FluxFluxstorage {
                    flags.push("--feature-gates=FluxStorage=true".into());
                }
                flags.extend(args.flux_args.split_whitespace().map(str::to_string));
                let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
                // As the same ServiceAccount as ours, as it would run in a cluster.
                Running::Flux(Box::new(
                    FluxController::start(
                        "image-reflector-controller",
                        cluster.reflector_kubeconfig(),
                        &refs,
                    )
                    .await,
                ))
            }
        };
        if let Running::Ours(flags) = &running {
            let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
            cluster.start_reflector_with(&refs).await;
        }
        running
    }

    fn pid(&self, cluster: &Cluster) -> u32 {
        match self {
            Running::Ours(_) => cluster.reflector().pid(),
            Running::Flux(f) => f.pid(),
        }
        .expect("the controller runs")
    }

    /// VmHWM; fails with the controller's log when the process is gone.
    fn peak_rss(&self, cluster: &Cluster) -> u64 {
        peak_rss_kib(self.pid(cluster))
            .unwrap_or_else(|| panic!("the controller died; {}", self.log_tail(cluster)))
    }

    async fn restart(&mut self, cluster: &mut Cluster) {
        match self {
            Running::Ours(flags) => {
                cluster.stop_reflector().await;
                let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
                cluster.start_reflector_with(&refs).await;
            }
            Running::Flux(f) => f.restart().await,
        }
    }

    async fn stop(self, cluster: &mut Cluster) {
        match self {
            Running::Ours(_) => {
                cluster.stop_reflector().await;
            }
            Running::Flux(mut f) => {
                f.stop().await;
            }
        }
    }

    fn log_tail(&self, cluster: &Cluster) -> String {
        match self {
            Running::Ours(_) => cluster.reflector_log_tail(),
            Running::Flux(f) => {
                let log = f.log();
                let lines: Vec<&str> = log.lines().collect();
                let start = lines.len().saturating_sub(40);
                format!("Flux's log (last lines):\n{}", lines[start..].join("\n"))
            }
        }
    }
}

/// The ImageRepositories of one shard, kept current by a watch.
struct Watch {
    store: reflector::Store<DynamicObject>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    async fn start(client: kube::Client, resource: &ApiResource, key: &str) -> Watch {
        let api: Api<DynamicObject> = Api::all_with(client, resource);
        let writer = reflector::store::Writer::new(resource.clone());
        let store = writer.as_reader();
        let config = watcher::Config::default().labels(&format!("{SHARD_LABEL}={key}"));
        let task = tokio::spawn(
            watcher(api, config)
                .default_backoff()
                .reflect(writer)
                .for_each(|_| futures::future::ready(())),
        );
        store
            .wait_until_ready()
            .await
            .expect("the ImageRepository watch started");
        Watch { store, task }
    }

    fn count(&self, f: impl Fn(&DynamicObject) -> bool) -> usize {
        self.store.state().iter().filter(|o| f(o)).count()
    }

    /// `namespace/name` -> `status.lastScanResult.revision`.
    fn revisions(&self) -> BTreeMap<String, String> {
        self.store
            .state()
            .iter()
            .map(|o| {
                (
                    id(o),
                    o.data["status"]["lastScanResult"]["revision"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `namespace/name`.
fn id(o: &DynamicObject) -> String {
    format!(
        "{}/{}",
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default()
    )
}

fn is_ready(o: &DynamicObject) -> bool {
    condition(&o.data, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Ready, with the status written for generation `generation` or later.
fn settled_at(o: &DynamicObject, generation: i64) -> bool {
    is_ready(o) && o.data["status"]["observedGeneration"].as_i64() >= Some(generation)
}

/// Measures one controller; prints what it sees as it goes.
pub async fn measure(
    cluster: &mut Cluster,
    registry: &StandIn,
    args: &Args,
    subject: Subject,
) -> Figures {
    let key = subject.key();
    let client = cluster.client().clone();
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "ImageRepository"),
        "imagerepositories",
    );
    let namespaces: Vec<String> = (0..args.namespaces.max(1))
        .map(|i| format!("{key}-{i}"))
        .collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        ns_api
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
    }
    let objects: Vec<(String, String)> = (0..args.repos)
        .map(|i| {
            (
                namespaces[i % namespaces.len()].clone(),
                format!("repo-{i:05}"),
            )
        })
        .collect();
    let api_in = |ns: &str| Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource);

    println!("== {}: start", subject.title());
    let mut running = Running::start(cluster, args, subject).await;
    let watch = Watch::start(client.clone(), &resource, key).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kib = running.peak_rss(cluster);

    // 1. Create everything; wait until all are Ready.
    let (w0, t0, r0) = (
        cluster.writes().await,
        registry.tag_requests(),
        registry.requests(),
    );
    let first_create = Instant::now();
    futures::stream::iter(objects.iter())
        .map(|(ns, name)| {
            let api = api_in(ns);
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{GROUP}/v1"),
                "kind": "ImageRepository",
                "metadata": {"name": name, "namespace": ns, "labels": {SHARD_LABEL: key}},
                "spec": {
                    "image": format!("{}/{key}/{name}", registry.host()),
                    "interval": "1h",
                    "insecure": true,
                },
            }))
            .expect("ImageRepository");
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_or_else(|e| panic!("create an ImageRepository: {e}"));
    let created_s = first_create.elapsed().as_secs_f64();
    wait_for(
        &watch,
        |w| w.count(is_ready),
        objects.len(),
        "Ready",
        first_create,
        Duration::from_secs(args.ready_timeout),
        &running,
        cluster,
    )
    .await;
    let ready_s = first_create.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await; // trailing writes (events) land
    // The driver's own creates are not the controller's writes.
    let mut first_writes = cluster.writes().await.since(&w0);
    let creates = (IMAGE_REPOSITORIES.to_string(), "POST".to_string());
    if let Some(n) = first_writes.0.remove(&creates)
        && n > objects.len() as u64
    {
        first_writes.0.insert(creates, n - objects.len() as u64);
    }
    let first_writes = controller_writes(&first_writes);
    let first_tag_requests = registry.tag_requests() - t0;
    let first_requests = registry.requests() - r0;
    println!(
        "   created in {created_s:.1} s; all {} Ready {ready_s:.1} s after the first create; \
         registry: {first_tag_requests} tags/list of {first_requests} requests; API writes: {first_writes}",
        objects.len()
    );
    let revisions = watch.revisions();

    // 2. Unchanged rescans.
    let subset = &objects[..args.rescan_objects.min(objects.len())];
    set_interval(
        &api_in,
        &watch,
        subset,
        &args.rescan_interval,
        &running,
        cluster,
    )
    .await;
    let (w2, t2, r2) = (
        cluster.writes().await,
        registry.tag_requests(),
        registry.requests(),
    );
    tokio::time::sleep(Duration::from_secs(args.rescan_window)).await;
    let rescan_writes = cluster.writes().await.since(&w2);
    let rescan_tags = registry.tag_requests() - t2;
    let rescan_requests = registry.requests() - r2;
    let pages = first_tag_requests as f64 / objects.len().max(1) as f64;
    let rescans = if pages > 0.0 {
        rescan_tags as f64 / pages
    } else {
        0.0
    };
    println!(
        "   {} objects at interval {} for {} s: {rescans:.0} rescans ({rescan_tags} tags/list, \
         {rescan_requests} requests); API writes: {rescan_writes}",
        subset.len(),
        args.rescan_interval,
        args.rescan_window
    );
    set_interval(&api_in, &watch, subset, "1h", &running, cluster).await;
    let peak_rss_kib = running.peak_rss(cluster);

    // 3. Restart on the same storage.
    let (w4, r4) = (cluster.writes().await, registry.requests());
    running.restart(cluster).await;
    let restarted = Instant::now();
    let window = Duration::from_secs(args.restart_window);
    while restarted.elapsed() < window {
        running.peak_rss(cluster);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restart_writes = controller_writes(&cluster.writes().await.since(&w4));
    let restart_requests = registry.requests() - r4;
    let still_ready = watch.count(is_ready);
    let now = watch.revisions();
    let revisions_changed = revisions
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(v))
        .count();
    let restart_rss_kib = running.peak_rss(cluster);
    println!(
        "   restarted: {restart_requests} registry requests and API writes {restart_writes} in {} s; \
         {still_ready}/{} still Ready, {revisions_changed} revisions changed",
        args.restart_window,
        objects.len()
    );
    running.stop(cluster).await;
    drop(watch);
    Figures {
        subject,
        idle_rss_kib,
        created_s,
        ready_s,
        first_writes,
        first_tag_requests,
        first_requests,
        peak_rss_kib,
        rescans,
        rescan_writes,
        rescan_requests,
        restart_requests,
        restart_writes,
        still_ready,
        revisions_changed,
        restart_rss_kib,
    }
}

/// Patches the objects' interval and waits until the controller has written the status of
/// the new generation of each.
async fn set_interval(
    api_in: &impl Fn(&str) -> Api<DynamicObject>,
    watch: &Watch,
    objects: &[(String, String)],
    interval: &str,
    running: &Running,
    cluster: &Cluster,
) {
    let patch = Patch::Merge(json!({"spec": {"interval": interval}}));
    let patched: Vec<(String, i64)> = futures::stream::iter(objects.iter())
        .map(|(ns, name)| {
            let api = api_in(ns);
            let patch = &patch;
            async move {
                let o = api.patch(name, &PatchParams::default(), patch).await?;
                Ok::<_, kube::Error>((format!("{ns}/{name}"), o.metadata.generation.unwrap_or(0)))
            }
        })
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("patch the interval to {interval}: {e}"));
    let wanted: BTreeMap<String, i64> = patched.into_iter().collect();
    wait_for(
        watch,
        |w| w.count(|o| wanted.get(&id(o)).is_some_and(|g| settled_at(o, *g))),
        wanted.len(),
        &format!("settled at interval {interval}"),
        Instant::now(),
        SETTLE_TIMEOUT,
        running,
        cluster,
    )
    .await;
}

/// Waits until `count` finds `wanted` objects, printing progress every 30 s; fails with the
/// controller's log when it dies or `timeout` after `since`.
#[allow(clippy::too_many_arguments)]
async fn wait_for(
    watch: &Watch,
    count: impl Fn(&Watch) -> usize,
    wanted: usize,
    what: &str,
    since: Instant,
    timeout: Duration,
    running: &Running,
    cluster: &Cluster,
) {
    let mut last_report = Instant::now();
    loop {
        let done = count(watch);
        if done == wanted {
            return;
        }
        running.peak_rss(cluster);
        assert!(
            since.elapsed() < timeout,
            "only {done}/{wanted} {what} {timeout:?} after the start; {}",
            running.log_tail(cluster)
        );
        if last_report.elapsed() > Duration::from_secs(30) {
            println!(
                "   {done}/{wanted} {what} after {:.0} s",
                since.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
