//! The watches: reflector caches shared by the webhooks and the controllers, and a
//! broadcast of every change the controllers subscribe to once they run.

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource};
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use super::ControllerOptions;
use crate::api::{ImagePolicy, ImageRepository};

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
    pub(super) repositories: broadcast::Sender<ImageRepository>,
    pub(super) policies: broadcast::Sender<ImagePolicy>,
    pub(super) namespaces: broadcast::Sender<PartialObjectMetadata<Namespace>>,
    pub(super) secrets: broadcast::Sender<PartialObjectMetadata<Secret>>,
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
        announced(
            watcher(namespaced_or_all::<ImageRepository>(client, ns), wc.clone())
                .default_backoff()
                .modify(slim_metadata)
                .reflect(repo_writer),
            repositories.clone(),
        ),
        changes.repositories.clone(),
    );
    let policy_stream = forward(
        "ImagePolicy",
        announced(
            watcher(namespaced_or_all::<ImagePolicy>(client, ns), wc)
                .default_backoff()
                .modify(slim_metadata)
                .reflect(policy_writer),
            policies.clone(),
        ),
        changes.policies.clone(),
    );
    let namespace_stream = forward(
        "Namespace",
        announced(
            watcher(
                Api::<PartialObjectMetadata<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(strip_metadata)
            .reflect(namespace_writer),
            namespaces.clone(),
        ),
        changes.namespaces.clone(),
    );
    // Secrets' metadata only: enough to notice a change, without caching secret data.
    let secret_stream = forward(
        "Secret",
        announced(
            watcher(
                namespaced_or_all::<PartialObjectMetadata<Secret>>(client, ns),
                watcher::Config::default(),
            )
            .default_backoff()
            .modify(strip_metadata)
            .reflect(secret_writer),
            secrets.clone(),
        ),
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

/// The objects a watch changes, each handed on only once `cache` holds it: an update or
/// deletion as it comes, and after a (re)list every object of the new list. kube's
/// reflector swaps a new list into its store only when the list ends, so an object handed
/// on while listing (`touched_objects`) can start a reconcile that reads the older copy
/// still cached; the change that triggered it then looks handled, and the predicate
/// filter of [`own_changes`] drops it for good. (Seen after an etcd restart: a requested
/// rescan listed while the store still held the object before the request never ran.)
fn announced<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    cache: Store<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    events.flat_map(move |event| {
        let (now, listed) = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => (Some(Ok(obj)), vec![]),
            Ok(watcher::Event::InitDone) => (None, cache.state()),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => (None, vec![]),
            Err(e) => (Some(Err(e)), vec![]),
        };
        futures::stream::iter(now)
            .chain(futures::stream::iter(listed).map(|obj| Ok(K::clone(&obj))))
    })
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
pub(super) fn changes_of<K: Clone + Send + 'static>(
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

pub(super) fn unit_stream(
    rx: mpsc::UnboundedReceiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
    )
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

/// kubectl's copy of the last applied object, an annotation nothing here reads.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Managed fields and kubectl's last-applied copy are dropped from the cached
/// ImageRepositories and ImagePolicies: nothing reads them (the webhooks see managed
/// fields in the review itself), and they were most of each cached object's size, and of
/// each copy the change broadcast holds.
fn slim_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// `changes` without the changes a reconcile of the object itself has nothing to act on:
/// only a new generation (the spec), annotations (`reconcile.fluxcd.io/requestedAt`),
/// finalizers (kube's finalizer helper waits for its own patch), labels (an object
/// leaving and re-entering a `--watch-label-selector` shard) or a deletion pass.
/// Status writes, nearly all of them our own, are left out: reconciling on them woke an
/// object at once after a failed attempt wrote a new message, bypassing the retry
/// backoff (a scan that failed with a different message each time rescanned in a loop).
pub(super) fn own_changes<K>(
    changes: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
{
    let deletion = |obj: &K| {
        obj.meta().deletion_timestamp.as_ref().map(|t| {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            t.0.as_second().hash(&mut hasher);
            hasher.finish()
        })
    };
    changes.predicate_filter(
        predicates::generation
            .combine(predicates::annotations)
            .combine(predicates::finalizers)
            .combine(predicates::labels)
            .combine(deletion),
        PredicateConfig::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use serde_json::json;

    fn repository(generation: i64, status_message: &str, requested_at: &str) -> ImageRepository {
        serde_json::from_value(json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1",
            "kind": "ImageRepository",
            "metadata": {
                "name": "app", "namespace": "default", "uid": "u1",
                "generation": generation,
                "annotations": {"reconcile.fluxcd.io/requestedAt": requested_at},
            },
            "spec": {"image": "ghcr.io/org/app", "interval": "5m"},
            "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "Failure",
                "message": status_message, "lastTransitionTime": "2026-12-07T00:00:00Z",
            }]},
        }))
        .expect("a valid ImageRepository")
    }

    #[tokio::test]
    async fn a_status_write_alone_does_not_reconcile_the_object_again() {
        let seen = [
            repository(1, "first failure", "a"),
            repository(1, "second failure, another message", "a"),
            repository(2, "second failure, another message", "a"),
            repository(2, "third failure", "b"),
            repository(2, "fourth failure", "b"),
        ];
        let passed: Vec<(Option<i64>, String)> = own_changes(futures::stream::iter(seen.map(Ok)))
            .filter_map(|r| async move { r.ok() })
            .map(|r| {
                let message = r.status.and_then(|s| s.conditions.into_iter().next());
                (
                    r.metadata.generation,
                    message.map(|c| c.message).unwrap_or_default(),
                )
            })
            .collect()
            .await;
        assert_eq!(
            passed,
            [
                (Some(1), "first failure".to_string()),
                (Some(2), "second failure, another message".to_string()),
                (Some(2), "third failure".to_string()),
            ]
        );
    }

    fn requested_at(obj: &ImageRepository) -> String {
        obj.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.values().next().cloned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_relisted_object_is_handed_on_only_once_the_cache_holds_it() {
        let (cache, writer) = reflector::store::<ImageRepository>();
        let events = futures::stream::iter([
            Ok(watcher::Event::Apply(repository(1, "ready", "before"))),
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(repository(1, "ready", "after"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(repository(2, "ready", "later"))),
        ])
        .reflect(writer);
        let reader = cache.clone();
        // Each object handed on, beside the copy the cache holds at that moment.
        let seen: Vec<(String, String)> = announced(events, cache)
            .filter_map(|r| async move { r.ok() })
            .map(|obj| {
                let cached = reader
                    .get(&reflector::ObjectRef::from_obj(&obj))
                    .map(|c| requested_at(&c))
                    .unwrap_or_default();
                (requested_at(&obj), cached)
            })
            .collect()
            .await;
        let pair = |a: &str| (a.to_string(), a.to_string());
        assert_eq!(seen, [pair("before"), pair("after"), pair("later")]);
    }

    #[test]
    fn the_cache_keeps_the_requested_at_annotation_but_not_managed_fields_or_the_last_applied_copy()
    {
        let mut obj = repository(1, "ready", "now");
        obj.metadata.managed_fields = Some(vec![Default::default()]);
        obj.metadata
            .annotations
            .get_or_insert_default()
            .insert(LAST_APPLIED.to_string(), "{\"spec\":{}}".to_string());
        slim_metadata(&mut obj);
        assert_eq!(obj.metadata.managed_fields, None);
        assert_eq!(requested_at(&obj), "now");
        assert_eq!(obj.metadata.annotations.map(|a| a.len()), Some(1));
    }
}
