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
mod context;
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
mod watches;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{ImagePolicy, ImageRepository};
use crate::scanner::Scanner;
use crate::store::{ObjectKey, TagStore};

pub use context::{ControllerOptions, ReconcileContext, ReconcileError};
pub use credentials::CloudOptions;
pub use metrics::Metrics;
pub use view::CacheView;
pub use watches::{Caches, Changes, Drivers, start_watches};
use watches::{changes_of, own_changes, unit_stream};

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
    let repos_for_repos = queued(own_changes(repos_for_repos), repo_queue.clone());
    let policies = queued(own_changes(policies), policy_queue.clone());

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
