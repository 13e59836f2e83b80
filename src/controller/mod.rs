//! The controllers: ImageRepository (scan registries, keep tags in the store) and
//! ImagePolicy (select the newest tag). Both share one scanner, one tag store and one set
//! of watched caches with the admission webhooks:
//!
//! ```text
//! watch ImageRepositories ─┬─> reflector store ──> webhooks (cross-namespace checks)
//!                          ├─> ImageRepository controller ──> scanner ──> tag store
//!                          └─> ImagePolicy controller (revision changes) <── tag store
//! watch Namespaces (metadata) ──> store ──> webhooks, ImagePolicy controller
//! watch Secrets (metadata)    ──> store ──> ImageRepository controller (rescan on change)
//! watch ImagePolicies         ──> ImagePolicy controller
//! ```
//!
//! The watches run on every replica (the webhooks need the caches); the reconcilers run
//! only on the leader when leader election is on.

mod conditions;
mod credentials;
mod events;
pub mod image_policy;
pub mod image_repository;
pub mod leader;
mod metrics;
pub mod ratelimit;
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
    /// Service account whose pull secrets apply when an ImageRepository names none.
    pub default_service_account: Option<String>,
    /// Refuse every cross-namespace ImagePolicy reference (`--no-cross-namespace-refs`).
    pub no_cross_namespace_refs: bool,
    /// How long an ImagePolicy waits before looking again at a repository without tags.
    pub requeue_dependency: Duration,
    /// Upper bound of the retry backoff after failures.
    pub max_retry_backoff: Duration,
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
            no_cross_namespace_refs: false,
            requeue_dependency: Duration::from_secs(5),
            max_retry_backoff: Duration::from_secs(300),
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

fn unit_stream(
    rx: mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
    )
}

/// Which Secrets each ImageRepository's last scan read through its service account's
/// image pull secrets (not named in its spec), and which repositories must rescan because
/// one of those changed. Kept in memory: after a restart the interval decides.
#[derive(Clone, Default)]
pub struct SecretUses {
    inner: Arc<Mutex<SecretUsesInner>>,
}

#[derive(Default)]
struct SecretUsesInner {
    /// Per repository: (secret name, its resourceVersion when the scan read it).
    pull_secrets: HashMap<ObjectKey, Vec<(String, String)>>,
    rescan: std::collections::HashSet<ObjectKey>,
}

impl SecretUses {
    fn record(&self, key: &ObjectKey, secrets: Vec<(String, String)>) {
        if let Ok(mut i) = self.inner.lock() {
            if secrets.is_empty() {
                i.pull_secrets.remove(key);
            } else {
                i.pull_secrets.insert(key.clone(), secrets);
            }
        }
    }

    fn forget(&self, key: &ObjectKey) {
        if let Ok(mut i) = self.inner.lock() {
            i.pull_secrets.remove(key);
            i.rescan.remove(key);
        }
    }

    /// The repositories in `namespace` whose last scan read the pull secret `name` at
    /// another resourceVersion than `version`; they are marked to rescan. (A relist of the
    /// Secret watch replays unchanged Secrets: those trigger nothing.)
    fn users_of(&self, namespace: &str, name: &str, version: &str) -> Vec<ObjectKey> {
        let Ok(mut i) = self.inner.lock() else {
            return Vec::new();
        };
        let users: Vec<ObjectKey> = i
            .pull_secrets
            .iter()
            .filter(|(k, used)| {
                k.namespace == namespace && used.iter().any(|(n, v)| n == name && v != version)
            })
            .map(|(k, _)| k.clone())
            .collect();
        i.rescan.extend(users.iter().cloned());
        users
    }

    fn take_rescan(&self, key: &ObjectKey) -> bool {
        self.inner
            .lock()
            .map(|mut i| i.rescan.remove(key))
            .unwrap_or(false)
    }
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub scanner: Scanner,
    pub store: TagStore,
    pub secrets: Store<PartialObjectMetadata<Secret>>,
    pub caches: Caches,
    pub recorder: events::EventRecorder,
    pub metrics: Metrics,
    pub options: ControllerOptions,
    pub secret_uses: SecretUses,
    failures: Mutex<HashMap<ObjectRef<kube::api::DynamicObject>, u32>>,
}

impl Context {
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

    /// Backoff after the `n`th consecutive failure of an object: 1 s doubling, capped.
    fn backoff(&self, key: ObjectRef<kube::api::DynamicObject>) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.options.max_retry_backoff;
        };
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let exp = n.saturating_sub(1).min(20);
        let base = Duration::from_secs(1).saturating_mul(1u32 << exp);
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
    let secret_uses = SecretUses::default();
    let recorder = events::EventRecorder::new(
        event_client,
        Reporter {
            controller: options.reporter.clone(),
            instance: options.instance.clone(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        scanner,
        store,
        secrets: caches.secrets.clone(),
        caches: caches.clone(),
        recorder,
        metrics,
        options: options.clone(),
        secret_uses: secret_uses.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    let config = kube::runtime::Config::default().concurrency(options.concurrency);
    let initial = || futures::stream::once(future::ready(()));

    // ImageRepository: reconcile on its own changes and on changes of the Secrets it
    // references.
    let repo_reader = caches.repositories.clone();
    let mapper_uses = secret_uses.clone();
    let repo_controller = Controller::for_stream(repos_for_repos, caches.repositories.clone())
        .with_config(config.clone())
        .watches_stream(
            secrets_for_repos,
            move |secret: PartialObjectMetadata<Secret>| {
                let ns = secret.namespace().unwrap_or_default();
                let name = secret.name_any();
                let version = secret.resource_version().unwrap_or_default();
                let mut refs: Vec<ObjectRef<ImageRepository>> = repo_reader
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace().as_deref() == Some(ns.as_str())
                            && image_repository::referenced_secrets(r).any(|s| s == name)
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect();
                // Pull secrets of a service account are not in the spec: the last scan
                // recorded which it read, and those repositories rescan.
                refs.extend(
                    mapper_uses
                        .users_of(&ns, &name, &version)
                        .into_iter()
                        .map(|k| ObjectRef::new(&k.name).within(&k.namespace)),
                );
                refs
            },
        )
        .reconcile_all_on(initial())
        .reconcile_all_on(unit_stream(lag_repo_rx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            image_repository::reconcile,
            error_policy::<ImageRepository>,
            ctx.clone(),
        )
        .for_each(|r| log_reconcile_result("ImageRepository", r));

    // ImagePolicy: reconcile on its own changes, on changes of the repository it uses
    // (a new scan result, a new accessFrom) and of namespaces' labels.
    let policies_by_repo = caches.policies.clone();
    let policies_by_ns = caches.policies.clone();
    let policy_controller = Controller::for_stream(policies, caches.policies.clone())
        .with_config(config)
        .watches_stream(repos_for_policies, move |repo: ImageRepository| {
            image_policy::policies_using(&policies_by_repo, &repo)
        })
        .watches_stream(
            namespaces_for_policies,
            move |ns: PartialObjectMetadata<Namespace>| {
                image_policy::policies_in_namespace(&policies_by_ns, &ns.name_any())
            },
        )
        .reconcile_all_on(initial())
        .reconcile_all_on(unit_stream(lag_policy_rx))
        .graceful_shutdown_on(shutdown)
        .run(image_policy::reconcile, error_policy::<ImagePolicy>, ctx)
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

fn error_policy<K>(obj: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action
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

#[cfg(test)]
mod secret_uses_tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("apps", name)
    }

    #[test]
    fn a_changed_pull_secret_marks_its_users_for_a_rescan_once() {
        let uses = SecretUses::default();
        uses.record(&key("a"), vec![("regcred".into(), "7".into())]);
        uses.record(&key("b"), vec![("other".into(), "3".into())]);
        assert_eq!(uses.users_of("apps", "regcred", "8"), vec![key("a")]);
        assert!(uses.take_rescan(&key("a")));
        assert!(!uses.take_rescan(&key("a")), "the mark is taken once");
        assert!(!uses.take_rescan(&key("b")));
    }

    #[test]
    fn an_unchanged_or_foreign_secret_marks_nothing() {
        let uses = SecretUses::default();
        uses.record(&key("a"), vec![("regcred".into(), "7".into())]);
        assert!(
            uses.users_of("apps", "regcred", "7").is_empty(),
            "a relist replays version 7"
        );
        assert!(uses.users_of("other-ns", "regcred", "9").is_empty());
        uses.forget(&key("a"));
        assert!(uses.users_of("apps", "regcred", "9").is_empty());
    }
}
