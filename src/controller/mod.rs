//! The controllers: ImageRepository (scan registries, keep tags in the store) and
//! ImagePolicy (select the newest tag). Both share one scanner, one tag store and one set
//! of watched caches with the admission webhooks:
//!
//! ```text
//! watch ImageRepositories ─┬─> reflector store ──> webhooks (cross-namespace checks)
//!                          ├─> ImageRepository controller ──> scanner ──> tag store
//!                          └─> ImagePolicy controller (revision changes) <── tag store
//! watch Namespaces (metadata) ──> store ──> webhooks, ImagePolicy controller
//! watch Secrets (metadata)    ──> store ──> ImageRepository controller (rescan on change;
//!                                          with the tag store: who read which pull secret)
//! watch ImagePolicies         ──> ImagePolicy controller
//! ```
//!
//! The watches run on every replica (the webhooks need the caches); the reconcilers run
//! only on the leader when leader election is on.

mod conditions;
mod credentials;
pub mod events;
pub mod image_policy;
pub mod image_repository;
pub mod leader;
mod metrics;
pub mod ratelimit;
pub mod rest_metrics;
pub mod runtime_metrics;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::api::{ImagePolicy, ImageRepository};
use crate::scanner::Scanner;
use crate::store::{ObjectKey, TagStore};

pub use credentials::CloudOptions;
pub use metrics::Metrics;
pub use view::CacheView;

/// Settings of the controllers (flags of `serve`).
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Watch only this namespace (`--watch-all-namespaces=false`); `None` watches all.
    pub namespace: Option<String>,
    /// Reconcile only objects with these labels (`--watch-label-selector`, for sharding).
    pub label_selector: Option<String>,
    /// Objects reconciled at once per kind (`--concurrent`).
    pub concurrency: u16,
    /// Requeues are delayed by up to this share of the interval (`--interval-jitter-percentage`).
    pub interval_jitter_percentage: u8,
    /// Service account whose pull secrets apply when an ImageRepository names none, and
    /// whose identity cloud logins use when it names no `serviceAccountName`.
    pub default_service_account: Option<String>,
    /// Cloud registry logins: autologin flags, object-level workload identity.
    pub cloud: CloudOptions,
    /// Refuse every cross-namespace ImagePolicy reference (`--no-cross-namespace-refs`).
    pub no_cross_namespace_refs: bool,
    /// How long an ImagePolicy waits before looking again at a repository without tags.
    pub requeue_dependency: Duration,
    /// First delay of the retry backoff after a failure (`--min-retry-delay`); it doubles
    /// with each consecutive failure.
    pub min_retry_backoff: Duration,
    /// Upper bound of the retry backoff (`--max-retry-delay`).
    pub max_retry_backoff: Duration,
    /// notification-controller's event receiver (`--events-addr`).
    pub events_addr: Option<url::Url>,
    /// The events' reporting controller and instance.
    pub reporter: String,
    pub instance: Option<String>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            namespace: None,
            label_selector: None,
            concurrency: 4,
            interval_jitter_percentage: 5,
            default_service_account: None,
            cloud: CloudOptions::default(),
            no_cross_namespace_refs: false,
            requeue_dependency: Duration::from_secs(30),
            min_retry_backoff: Duration::from_millis(750),
            max_retry_backoff: Duration::from_secs(15 * 60),
            events_addr: None,
            reporter: "image-reflector-controller".to_string(),
            instance: None,
        }
    }
}

/// Why a reconcile failed; the kube-runtime Controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Scan(#[from] crate::scanner::ScanError),
    #[error("{0}")]
    Credentials(String),
    #[error("tag store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("encoding status: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("background task failed: {0}")]
    Join(String),
    #[error("{0}")]
    Dependency(String),
}

impl ReconcileError {
    fn from_finalizer(e: kube::runtime::finalizer::Error<ReconcileError>) -> ReconcileError {
        use kube::runtime::finalizer::Error;
        match e {
            Error::ApplyFailed(inner) | Error::CleanupFailed(inner) => inner,
            other => ReconcileError::Finalizer(other.to_string()),
        }
    }

    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Scan(_) => "scan",
            ReconcileError::Credentials(_) => "credentials",
            ReconcileError::Store(_) => "store",
            ReconcileError::Kube(_) => "kube",
            ReconcileError::Encode(_) => "encode",
            ReconcileError::Finalizer(_) => "finalizer",
            ReconcileError::Join(_) => "join",
            ReconcileError::Dependency(_) => "dependency",
        }
    }
}

/// The watched caches, shared by the webhooks and the controllers.
#[derive(Clone)]
pub struct Caches {
    pub repositories: Store<ImageRepository>,
    pub policies: Store<ImagePolicy>,
    pub namespaces: Store<PartialObjectMetadata<Namespace>>,
    pub secrets: Store<PartialObjectMetadata<Secret>>,
}

impl Caches {
    /// Waits until every cache has its first full list.
    pub async fn wait_until_ready(&self) {
        let _ = future::join4(
            self.repositories.wait_until_ready(),
            self.policies.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.secrets.wait_until_ready(),
        )
        .await;
    }
}

/// Every change the watches see, broadcast to the controllers once they run. A replica
/// that is not the leader has no receivers, so its watches never wait for anyone.
#[derive(Clone)]
pub struct Changes {
    repositories: broadcast::Sender<ImageRepository>,
    policies: broadcast::Sender<ImagePolicy>,
    namespaces: broadcast::Sender<PartialObjectMetadata<Namespace>>,
    secrets: broadcast::Sender<PartialObjectMetadata<Secret>>,
}

impl Changes {
    /// Every ImageRepository the watch sees from now on (the push receiver notices with it
    /// when a scan it requested is recorded).
    pub fn subscribe_repositories(&self) -> broadcast::Receiver<ImageRepository> {
        self.repositories.subscribe()
    }
}

/// The watch loops that fill the caches; spawn `run` on every replica.
pub struct Drivers {
    futures: Vec<future::BoxFuture<'static, ()>>,
}

impl Drivers {
    pub async fn run(self) {
        future::join_all(self.futures).await;
    }
}

const CHANGE_BUFFER: usize = 4096;

/// Sets up the watches: the caches (for webhooks and controllers), the change broadcast
/// (for the controllers) and the loops that drive both.
pub fn start_watches(client: &Client, options: &ControllerOptions) -> (Caches, Changes, Drivers) {
    let ns = options.namespace.as_deref();
    let wc = watcher_config(options);
    let (repositories, repo_writer) = reflector::store();
    let (policies, policy_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let changes = Changes {
        repositories: broadcast::channel(CHANGE_BUFFER).0,
        policies: broadcast::channel(CHANGE_BUFFER).0,
        namespaces: broadcast::channel(CHANGE_BUFFER).0,
        secrets: broadcast::channel(CHANGE_BUFFER).0,
    };
    let repo_stream = forward(
        "ImageRepository",
        watcher(namespaced_or_all::<ImageRepository>(client, ns), wc.clone())
            .default_backoff()
            .reflect(repo_writer)
            .touched_objects(),
        changes.repositories.clone(),
    );
    let policy_stream = forward(
        "ImagePolicy",
        watcher(namespaced_or_all::<ImagePolicy>(client, ns), wc)
            .default_backoff()
            .reflect(policy_writer)
            .touched_objects(),
        changes.policies.clone(),
    );
    let namespace_stream = forward(
        "Namespace",
        watcher(
            Api::<PartialObjectMetadata<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip_metadata)
        .reflect(namespace_writer)
        .touched_objects(),
        changes.namespaces.clone(),
    );
    // Secrets' metadata only: enough to notice a change, without caching secret data.
    let secret_stream = forward(
        "Secret",
        watcher(
            namespaced_or_all::<PartialObjectMetadata<Secret>>(client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip_metadata)
        .reflect(secret_writer)
        .touched_objects(),
        changes.secrets.clone(),
    );
    let drivers = Drivers {
        futures: vec![repo_stream, policy_stream, namespace_stream, secret_stream],
    };
    (
        Caches {
            repositories,
            policies,
            namespaces,
            secrets,
        },
        changes,
        drivers,
    )
}

fn forward<K, S>(
    kind: &'static str,
    stream: S,
    tx: broadcast::Sender<K>,
) -> future::BoxFuture<'static, ()>
where
    K: Clone + Send + 'static,
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    Box::pin(stream.for_each(move |r| {
        match r {
            // No receivers (not the leader, or not started yet) is fine.
            Ok(obj) => drop(tx.send(obj)),
            Err(e) => warn!(kind, error = %e, "watch failed; retrying with backoff"),
        }
        future::ready(())
    }))
}

/// A receiver as a trigger stream. A receiver that fell behind (more than
/// `CHANGE_BUFFER` changes at once) asks for every object to be reconciled instead.
fn changes_of<K: Clone + Send + 'static>(
    rx: broadcast::Receiver<K>,
    lagged: mpsc::UnboundedSender<()>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    futures::stream::unfold((rx, lagged), |(mut rx, lagged)| async move {
        loop {
            match rx.recv().await {
                Ok(obj) => return Some((Ok(obj), (rx, lagged))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "controller fell behind the watch; reconciling everything"
                    );
                    let _ = lagged.send(());
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// `changes` with each object counted as queued in `queue` (see [`runtime_metrics`]).
fn queued<K>(
    changes: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    queue: runtime_metrics::WorkQueue,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + 'static,
{
    changes.inspect(move |change| {
        if let Ok(obj) = change {
            queue.add(ObjectRef::from_obj(obj).erase());
        }
    })
}

/// A reconciler whose runs are counted in `queue`'s controller-runtime series.
fn instrumented<K, F, Fut>(
    queue: runtime_metrics::WorkQueue,
    reconcile: F,
) -> impl FnMut(
    Arc<K>,
    Arc<ReconcileContext>,
) -> future::BoxFuture<'static, Result<Action, ReconcileError>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<ReconcileContext>) -> Fut + Clone + Send + 'static,
    Fut: future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    move |obj, ctx| {
        let work = queue.start(ObjectRef::from_obj(&*obj).erase());
        let run = reconcile(obj, ctx);
        Box::pin(async move {
            let result = run.await;
            work.finish(&result);
            result
        })
    }
}

fn unit_stream(
    rx: mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
    )
}

/// Everything a reconcile needs, shared by both controllers (handed to every reconcile
/// and error policy by kube-runtime).
pub struct ReconcileContext {
    pub client: Client,
    pub scanner: Scanner,
    pub store: TagStore,
    pub secrets: Store<PartialObjectMetadata<Secret>>,
    pub caches: Caches,
    pub recorder: events::EventRecorder,
    /// notification-controller, when `--events-addr` is set.
    pub flux_events: Option<events::flux::FluxEventSink>,
    pub metrics: Metrics,
    pub options: ControllerOptions,
    failures: Mutex<HashMap<ObjectRef<kube::api::DynamicObject>, u32>>,
}

impl ReconcileContext {
    /// A random delay of up to `--interval-jitter-percentage` of the interval, so objects
    /// created together do not scan together.
    pub fn jitter(&self, interval: Duration) -> Duration {
        let pct = u32::from(self.options.interval_jitter_percentage.min(100));
        if pct == 0 {
            return Duration::ZERO;
        }
        let max = interval.mul_f64(f64::from(pct) / 100.0);
        max.mul_f64(rand::rng().random::<f64>())
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_revision(obj, type_, reason, message, None)
            .await
    }

    /// Publishes an event about `obj` as a Kubernetes Event and, with `--events-addr`,
    /// to notification-controller, with `revision` in the metadata.
    pub async fn publish_revision<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: &str,
        revision: Option<&str>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if let Some(sink) = &self.flux_events {
            sink.send(events::flux::FluxEvent {
                involved_object: obj.object_ref(&()),
                severity: events::flux::severity(type_),
                timestamp: jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
                message: message.to_string(),
                reason: reason.to_string(),
                metadata: events::flux::metadata(obj.meta().annotations.iter().flatten(), revision),
                reporting_controller: self.options.reporter.clone(),
                reporting_instance: self.options.instance.clone().unwrap_or_default(),
            });
        }
        let event = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(message.chars().take(1024).collect()),
            action: match type_ {
                EventType::Normal => "Reconcile".to_string(),
                EventType::Warning => "ReconcileFailed".to_string(),
            },
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }

    /// Backoff after the `n`th consecutive failure of an object: `min_retry_backoff`
    /// doubling, capped at `max_retry_backoff` (controller-runtime's exponential failure
    /// rate limiter, which Flux's flags configure), plus up to 10% jitter.
    fn backoff(&self, key: ObjectRef<kube::api::DynamicObject>) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.options.max_retry_backoff;
        };
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let exp = n.saturating_sub(1).min(20);
        let base = self.options.min_retry_backoff.saturating_mul(1u32 << exp);
        let capped = base.min(self.options.max_retry_backoff);
        // Up to 10% jitter so failing objects spread out.
        capped + capped.mul_f64(0.1 * rand::rng().random::<f64>())
    }

    fn clear_failures(&self, key: &ObjectRef<kube::api::DynamicObject>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

fn watcher_config(options: &ControllerOptions) -> watcher::Config {
    let mut config = watcher::Config::default();
    if let Some(selector) = &options.label_selector {
        config = config.labels(selector);
    }
    config
}

fn namespaced_or_all<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Annotations (kubectl's last-applied copy of a Secret holds its data) and managed fields
/// are dropped before caching.
fn strip_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.annotations = None;
    meta.managed_fields = None;
}

/// Runs both controllers until `shutdown` resolves. Call once the caches are ready (on
/// the leader): entries of objects deleted while the process was down leave the store
/// first, then every object is reconciled once and again on every change.
#[allow(clippy::too_many_arguments)]
pub async fn run_controllers(
    client: Client,
    event_client: Client,
    caches: Caches,
    changes: Changes,
    scanner: Scanner,
    store: TagStore,
    metrics: Metrics,
    options: ControllerOptions,
    shutdown: impl future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Result<(), ReconcileError> {
    // Subscribe before the initial full reconcile, so no change is missed in between.
    let (lag_repo_tx, lag_repo_rx) = mpsc::unbounded_channel();
    let (lag_policy_tx, lag_policy_rx) = mpsc::unbounded_channel();
    let repos_for_repos = changes_of(changes.repositories.subscribe(), lag_repo_tx.clone());
    let secrets_for_repos = changes_of(changes.secrets.subscribe(), lag_repo_tx);
    let policies = changes_of(changes.policies.subscribe(), lag_policy_tx.clone());
    let repos_for_policies = changes_of(changes.repositories.subscribe(), lag_policy_tx.clone());
    let namespaces_for_policies = changes_of(changes.namespaces.subscribe(), lag_policy_tx);

    prune_store(&store, &caches.repositories, &options).await?;
    let recorder = events::EventRecorder::new(
        event_client,
        Reporter {
            controller: options.reporter.clone(),
            instance: options.instance.clone(),
        },
    );
    let flux_events = options
        .events_addr
        .clone()
        .map(events::flux::FluxEventSink::start);
    let ctx = Arc::new(ReconcileContext {
        flux_events,
        client: client.clone(),
        scanner,
        store,
        secrets: caches.secrets.clone(),
        caches: caches.clone(),
        recorder,
        metrics,
        options: options.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    let config = kube::runtime::Config::default().concurrency(options.concurrency);
    let initial = || futures::stream::once(future::ready(()));
    let repo_queue = ctx
        .metrics
        .runtime
        .queue("imagerepository", options.concurrency);
    let policy_queue = ctx
        .metrics
        .runtime
        .queue("imagepolicy", options.concurrency);
    let repos_for_repos = queued(repos_for_repos, repo_queue.clone());
    let policies = queued(policies, policy_queue.clone());

    // ImageRepository: reconcile on its own changes and on changes of the Secrets it
    // uses: those its spec names, and the pull secrets its last scan read through a
    // service account (recorded in its store entry).
    let repo_reader = caches.repositories.clone();
    let secret_reader = caches.secrets.clone();
    let store_reader = ctx.store.clone();
    let secret_queue = repo_queue.clone();
    let repo_controller = Controller::for_stream(repos_for_repos, caches.repositories.clone())
        .with_config(config.clone())
        .watches_stream(
            secrets_for_repos,
            move |secret: PartialObjectMetadata<Secret>| {
                secret_queue.add_all(image_repository::repositories_using_secret(
                    &repo_reader,
                    &secret_reader,
                    &store_reader,
                    &secret.namespace().unwrap_or_default(),
                    &secret.name_any(),
                ))
            },
        )
        .reconcile_all_on(initial())
        .reconcile_all_on(unit_stream(lag_repo_rx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            instrumented(repo_queue, image_repository::reconcile),
            error_policy::<ImageRepository>,
            ctx.clone(),
        )
        .for_each(|r| log_reconcile_result("ImageRepository", r));

    // ImagePolicy: reconcile on its own changes, on changes of the repository it uses
    // (a new scan result, a new accessFrom) and of namespaces' labels.
    let policies_by_repo = caches.policies.clone();
    let policies_by_ns = caches.policies.clone();
    let (repo_changes_queue, ns_changes_queue) = (policy_queue.clone(), policy_queue.clone());
    let policy_controller = Controller::for_stream(policies, caches.policies.clone())
        .with_config(config)
        .watches_stream(repos_for_policies, move |repo: ImageRepository| {
            repo_changes_queue.add_all(image_policy::policies_using(&policies_by_repo, &repo))
        })
        .watches_stream(
            namespaces_for_policies,
            move |ns: PartialObjectMetadata<Namespace>| {
                ns_changes_queue.add_all(image_policy::policies_in_namespace(
                    &policies_by_ns,
                    &ns.name_any(),
                ))
            },
        )
        .reconcile_all_on(initial())
        .reconcile_all_on(unit_stream(lag_policy_rx))
        .graceful_shutdown_on(shutdown)
        .run(
            instrumented(policy_queue, image_policy::reconcile),
            error_policy::<ImagePolicy>,
            ctx,
        )
        .for_each(|r| log_reconcile_result("ImagePolicy", r));

    info!("controllers started");
    future::join(repo_controller, policy_controller).await;
    info!("controllers stopped");
    Ok(())
}

/// Removes store entries of objects that no longer exist (deleted while the process was
/// down). Only safe when the cache lists every object the store may hold, i.e. without a
/// label selector or namespace restriction.
async fn prune_store(
    store: &TagStore,
    repositories: &Store<ImageRepository>,
    options: &ControllerOptions,
) -> Result<(), ReconcileError> {
    let live: BTreeMap<ObjectKey, String> = repositories
        .state()
        .iter()
        .map(|r| {
            (
                ObjectKey::new(r.namespace().unwrap_or_default(), r.name_any()),
                r.uid().unwrap_or_default(),
            )
        })
        .collect();
    let selective = options.label_selector.is_some();
    let namespace = options.namespace.clone();
    let in_scope =
        move |k: &ObjectKey| !selective && namespace.as_deref().is_none_or(|ns| ns == k.namespace);
    let store = store.clone();
    let removed =
        tokio::task::spawn_blocking(move || store.retain(|k| !in_scope(k) || live.contains_key(k)))
            .await
            .map_err(|e| ReconcileError::Join(e.to_string()))??;
    if removed > 0 {
        info!(
            removed,
            "removed stored tags of ImageRepositories deleted while stopped"
        );
    }
    Ok(())
}

fn error_policy<K>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<ReconcileContext>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let key = ObjectRef::from_obj(&*obj).erase();
    let wait = ctx.backoff(key);
    warn!(
        kind = %K::kind(&()),
        object = %format!("{}/{}", obj.meta().namespace.as_deref().unwrap_or_default(), obj.meta().name.as_deref().unwrap_or_default()),
        error = %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

async fn log_reconcile_result<T, E: std::fmt::Display>(kind: &str, r: Result<T, E>) {
    if let Err(e) = r {
        tracing::debug!(kind, error = %e, "controller");
    }
}
