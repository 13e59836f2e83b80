//! From pushes to scans.
//!
//! 1. **Match** (on the replica that received the delivery, from its watched cache: no
//!    API call): every ImageRepository, in any namespace, whose `spec.image` has the
//!    pushed repository's canonical name, that is not suspended or being deleted, and
//!    whose exclusion list does not exclude the pushed tag (a cosign `.sig` tag rescans
//!    nothing with the default list).
//! 2. **Deduplicate**: a push whose provider-given id (distribution's event id, GitHub's
//!    delivery id, Pub/Sub's message id, ...) was seen in the last hour is a redelivery
//!    and schedules nothing.
//! 3. **Coalesce**, per ImageRepository: a scan is requested once pushes have stopped for
//!    the quiet period (`--receiver-quiet-period`), and at the latest the maximum delay
//!    (`--receiver-max-delay`) after the first push of the burst, so a CI pushing 50 tags
//!    causes one scan per repository, and a steady stream of pushes at most one per
//!    maximum delay.
//! 4. **Request** the scan through the API: a merge patch of the annotation
//!    `reconcile.fluxcd.io/requestedAt` (the current time, RFC 3339), exactly what `flux
//!    reconcile` and notification-controller write. The leader's ImageRepository
//!    controller sees the new value in its watch and scans at once; so the replica that
//!    received the push need not be the leader, and a request survives a change of
//!    leader (the annotation is in the object, and the new leader's first reconcile sees
//!    it unhandled).
//! 5. **Measure**: when the object's `status.lastHandledReconcileAt` reaches the value
//!    written (seen in this replica's watch), the time since the first push of the burst
//!    is observed in `image_reflector_receiver_push_to_scan_seconds`.

use super::metrics::ReceiverMetrics;
use super::providers::{Provider, Push};
use crate::api::{ImageRepository, ImageRepositorySpec, RECONCILE_REQUESTED_AT_ANNOTATION};
use crate::reference::ImageRef;
use crate::store::ObjectKey;
use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a delivery id is remembered.
const SEEN_FOR: Duration = Duration::from_secs(3600);
/// At most this many ids are remembered (the oldest are forgotten first).
const SEEN_MAX: usize = 100_000;
/// A requested scan not recorded in the status within this time is no longer awaited.
const AWAIT_FOR: Duration = Duration::from_secs(600);
/// Scan requests written to the API at once.
const CONCURRENT_REQUESTS: usize = 8;
/// Attempts of one scan request when the API fails.
const ATTEMPTS: u32 = 3;

/// When a burst of pushes becomes a scan request.
#[derive(Clone, Copy, Debug)]
pub struct Coalescing {
    /// Request once no push has arrived for this long.
    pub quiet_period: Duration,
    /// ... but at the latest this long after the first push of the burst.
    pub max_delay: Duration,
}

/// What one delivery's pushes came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Pushes that were new (not redeliveries).
    pub new: usize,
    /// Pushes seen before.
    pub duplicates: usize,
    /// Pushes whose repository name is not a valid image name.
    pub invalid: usize,
    /// ImageRepositories scheduled for a scan.
    pub repositories: usize,
}

/// A burst of pushes for one ImageRepository, not yet requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    first: Instant,
    last: Instant,
    pushes: u32,
}

impl Pending {
    fn due_at(&self, c: &Coalescing) -> Instant {
        (self.last + c.quiet_period).min(self.first + c.max_delay)
    }
}

/// A requested scan, until the status records it.
#[derive(Clone, Copy, Debug)]
struct Awaiting {
    requested: jiff::Timestamp,
    first: Instant,
    since: Instant,
}

/// Shared by the handlers (which [`accept`](Dispatcher::accept) pushes) and the two
/// background tasks ([`run`](Dispatcher::run), [`track`](Dispatcher::track)).
pub struct Dispatcher {
    repositories: Store<ImageRepository>,
    coalescing: Coalescing,
    metrics: ReceiverMetrics,
    seen: Mutex<Seen>,
    pending: Mutex<HashMap<ObjectKey, Pending>>,
    wake: Notify,
    awaiting: Mutex<HashMap<ObjectKey, Awaiting>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Dispatcher {
    pub fn new(
        repositories: Store<ImageRepository>,
        coalescing: Coalescing,
        metrics: ReceiverMetrics,
    ) -> Dispatcher {
        Dispatcher {
            repositories,
            coalescing,
            metrics,
            seen: Mutex::new(Seen::default()),
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            awaiting: Mutex::new(HashMap::new()),
        }
    }

    /// Matches, deduplicates and schedules one delivery's pushes.
    pub fn accept(&self, provider: Provider, pushes: Vec<Push>) -> Accepted {
        let now = Instant::now();
        let mut accepted = Accepted::default();
        let mut scheduled = HashSet::new();
        let repositories = self.repositories.state();
        for push in pushes {
            if let Some(id) = &push.id
                && !lock(&self.seen).first_time(format!("{provider}/{id}"), now)
            {
                debug!(%provider, id, "redelivered push; already handled");
                accepted.duplicates += 1;
                continue;
            }
            accepted.new += 1;
            let canonical = match ImageRef::parse(&push.repository) {
                Ok(image) => image.canonical(),
                Err(e) => {
                    warn!(%provider, error = %e, "push for a repository that is not an image name; ignored");
                    accepted.invalid += 1;
                    continue;
                }
            };
            let keys = matching(&repositories, &canonical, push.tag.as_deref());
            if keys.is_empty() {
                info!(%provider, image = %canonical, tag = push.tag.as_deref().unwrap_or(""), "push for an image no ImageRepository watches (or every one excludes the tag); nothing to do");
            }
            for key in keys {
                let mut pending = lock(&self.pending);
                pending
                    .entry(key.clone())
                    .and_modify(|p| {
                        p.last = now;
                        p.pushes = p.pushes.saturating_add(1);
                    })
                    .or_insert(Pending {
                        first: now,
                        last: now,
                        pushes: 1,
                    });
                scheduled.insert(key);
            }
        }
        accepted.repositories = scheduled.len();
        if !scheduled.is_empty() {
            self.wake.notify_one();
        }
        accepted
    }

    /// Whether no burst waits for its scan request.
    #[cfg(test)]
    pub(crate) fn pending_is_empty(&self) -> bool {
        lock(&self.pending).is_empty()
    }

    /// Requests the scans as bursts end, until `shutdown`.
    pub async fn run(self: Arc<Self>, client: Client, shutdown: CancellationToken) {
        loop {
            let (due, next) = take_due(&mut lock(&self.pending), Instant::now(), &self.coalescing);
            if !due.is_empty() {
                futures::stream::iter(due)
                    .for_each_concurrent(CONCURRENT_REQUESTS, |(key, pending)| {
                        self.request_scan(&client, key, pending)
                    })
                    .await;
                continue;
            }
            let sleep = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn request_scan(&self, client: &Client, key: ObjectKey, pending: Pending) {
        let api: Api<ImageRepository> = Api::namespaced(client.clone(), &key.namespace);
        for attempt in 1..=ATTEMPTS {
            let requested = jiff::Timestamp::now();
            let patch = serde_json::json!({
                "metadata": {"annotations": {RECONCILE_REQUESTED_AT_ANNOTATION: requested.to_string()}}
            });
            match api
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.metrics.scan_request("requested");
                    info!(
                        repository = %key,
                        pushes = pending.pushes,
                        waited_ms = pending.first.elapsed().as_millis() as u64,
                        "scan requested after a push"
                    );
                    let mut awaiting = lock(&self.awaiting);
                    let first = awaiting
                        .get(&key)
                        .map_or(pending.first, |a| a.first.min(pending.first));
                    awaiting.insert(
                        key,
                        Awaiting {
                            requested,
                            first,
                            since: Instant::now(),
                        },
                    );
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.metrics.scan_request("gone");
                    debug!(repository = %key, "ImageRepository deleted before its scan was requested");
                    return;
                }
                Err(e) => {
                    warn!(repository = %key, attempt, error = %e, "requesting a scan failed");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    }
                }
            }
        }
        self.metrics.scan_request("failed");
    }

    /// Observes, from the watch, when requested scans reach the status.
    pub async fn track(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<ImageRepository>,
        shutdown: CancellationToken,
    ) {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                changed = changes.recv() => match changed {
                    Ok(obj) => self.observe(&obj),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = prune.tick() => {
                    let now = Instant::now();
                    lock(&self.awaiting).retain(|_, a| now.duration_since(a.since) < AWAIT_FOR);
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn observe(&self, obj: &ImageRepository) {
        let key = ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
        let mut awaiting = lock(&self.awaiting);
        let Some(waiting) = awaiting.get(&key) else {
            return;
        };
        let handled = obj
            .status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            .and_then(|s| s.parse::<jiff::Timestamp>().ok());
        if handled.is_some_and(|h| h >= waiting.requested) {
            self.metrics.push_to_scan(waiting.first.elapsed());
            awaiting.remove(&key);
        }
    }
}

/// The ImageRepositories a push of `canonical` (and `tag`) concerns.
fn matching(
    repositories: &[Arc<ImageRepository>],
    canonical: &str,
    tag: Option<&str>,
) -> Vec<ObjectKey> {
    // Most repositories are told apart by their last path component, without parsing.
    let last = canonical.rsplit('/').next().unwrap_or(canonical);
    repositories
        .iter()
        .filter(|r| !r.spec.suspend && r.metadata.deletion_timestamp.is_none())
        .filter(|r| r.spec.image.ends_with(last))
        .filter(|r| ImageRef::parse(&r.spec.image).is_ok_and(|i| i.canonical() == canonical))
        .filter(|r| tag.is_none_or(|t| !excluded(&r.spec, t)))
        .map(|r| ObjectKey::new(r.namespace().unwrap_or_default(), r.name_any()))
        .collect()
}

/// Whether the repository's exclusion list leaves `tag` out of its scans.
fn excluded(spec: &ImageRepositorySpec, tag: &str) -> bool {
    spec.effective_exclusion_list()
        .iter()
        .any(|pattern| regex::Regex::new(pattern).is_ok_and(|re| re.is_match(tag)))
}

/// Takes the bursts that are due at `now`; returns them and when the next one is due.
fn take_due(
    pending: &mut HashMap<ObjectKey, Pending>,
    now: Instant,
    c: &Coalescing,
) -> (Vec<(ObjectKey, Pending)>, Option<Instant>) {
    let due_keys: Vec<ObjectKey> = pending
        .iter()
        .filter(|(_, p)| p.due_at(c) <= now)
        .map(|(k, _)| k.clone())
        .collect();
    let due = due_keys
        .into_iter()
        .filter_map(|k| pending.remove_entry(&k))
        .collect();
    let next = pending.values().map(|p| p.due_at(c)).min();
    (due, next)
}

/// Delivery ids seen in the last [`SEEN_FOR`], at most [`SEEN_MAX`].
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

impl Seen {
    /// True the first time `id` is seen.
    fn first_time(&mut self, id: String, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < SEEN_FOR && self.order.len() < SEEN_MAX {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back((now, id));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ImageRepositoryStatus;
    use kube::api::ObjectMeta;

    fn repo(namespace: &str, name: &str, image: &str) -> ImageRepository {
        let mut r = ImageRepository::new(
            name,
            ImageRepositorySpec {
                image: image.to_string(),
                interval: "1h".to_string(),
                ..Default::default()
            },
        );
        r.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        };
        r
    }

    fn keys(repos: Vec<ImageRepository>, canonical: &str, tag: Option<&str>) -> Vec<String> {
        let repos: Vec<Arc<ImageRepository>> = repos.into_iter().map(Arc::new).collect();
        let mut keys: Vec<String> = matching(&repos, canonical, tag)
            .into_iter()
            .map(|k| k.to_string())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn a_push_matches_every_repository_of_that_canonical_name_in_every_namespace() {
        let repos = vec![
            repo("apps", "web", "ghcr.io/acme/web"),
            repo("staging", "web", "ghcr.io/acme/web"),
            repo("apps", "web-docker", "docker.io/acme/web"),
            repo("apps", "api", "ghcr.io/acme/api"),
            repo("apps", "webapp", "ghcr.io/acme/mywebapp"),
        ];
        assert_eq!(
            keys(repos, "ghcr.io/acme/web", Some("1.0")),
            ["apps/web", "staging/web"]
        );
    }

    #[test]
    fn docker_hub_names_match_in_every_spelling() {
        let repos = vec![
            repo("a", "short", "nginx"),
            repo("a", "library", "library/nginx"),
            repo("a", "full", "docker.io/library/nginx"),
            repo("a", "index", "index.docker.io/library/nginx"),
        ];
        assert_eq!(
            keys(repos, "docker.io/library/nginx", None),
            ["a/full", "a/index", "a/library", "a/short"]
        );
    }

    #[test]
    fn suspended_or_deleting_repositories_and_excluded_tags_are_left_out() {
        let mut suspended = repo("a", "suspended", "ghcr.io/acme/web");
        suspended.spec.suspend = true;
        let mut deleting = repo("a", "deleting", "ghcr.io/acme/web");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let mut no_rc = repo("a", "no-rc", "ghcr.io/acme/web");
        no_rc.spec.exclusion_list = Some(vec!["-rc".into(), "[".into()]);
        let plain = repo("a", "plain", "ghcr.io/acme/web");
        let all = vec![suspended, deleting, no_rc, plain];
        assert_eq!(
            keys(all.clone(), "ghcr.io/acme/web", Some("1.0")),
            ["a/no-rc", "a/plain"]
        );
        assert_eq!(
            keys(all.clone(), "ghcr.io/acme/web", Some("1.1-rc")),
            ["a/plain"]
        );
        // The default exclusion list leaves out cosign's signature tags; a list of one's
        // own replaces it.
        assert_eq!(
            keys(all.clone(), "ghcr.io/acme/web", Some("sha256-abc.sig")),
            ["a/no-rc"]
        );
        // A deletion by digest names no tag: it concerns every repository of the image.
        assert_eq!(keys(all, "ghcr.io/acme/web", None), ["a/no-rc", "a/plain"]);
    }

    fn c() -> Coalescing {
        Coalescing {
            quiet_period: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_burst_is_due_once_pushes_stop_for_the_quiet_period() {
        let t0 = Instant::now();
        let key = ObjectKey::new("a", "web");
        let mut pending = HashMap::new();
        pending.insert(
            key.clone(),
            Pending {
                first: t0,
                last: t0 + Duration::from_millis(300),
                pushes: 50,
            },
        );
        let (due, next) = take_due(&mut pending, t0 + Duration::from_millis(700), &c());
        assert!(due.is_empty());
        assert_eq!(next, Some(t0 + Duration::from_millis(800)));
        let (due, next) = take_due(&mut pending, t0 + Duration::from_millis(800), &c());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1.pushes, 50);
        assert_eq!(next, None);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_steady_stream_of_pushes_is_requested_at_the_maximum_delay() {
        let t0 = Instant::now();
        let mut pending = HashMap::new();
        pending.insert(
            ObjectKey::new("a", "web"),
            Pending {
                first: t0,
                last: t0 + Duration::from_millis(4900),
                pushes: 49,
            },
        );
        let (due, _) = take_due(&mut pending, t0 + Duration::from_secs(5), &c());
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_redelivered_id_is_seen_once_and_forgotten_after_an_hour() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        assert!(seen.first_time("distribution/e1".into(), t0));
        assert!(!seen.first_time("distribution/e1".into(), t0 + Duration::from_secs(5)));
        assert!(seen.first_time("github/e1".into(), t0));
        assert!(seen.first_time(
            "distribution/e1".into(),
            t0 + SEEN_FOR + Duration::from_secs(1)
        ));
    }

    #[tokio::test]
    async fn accept_schedules_each_repository_once_per_delivery_and_skips_redeliveries() {
        let (store, mut writer) = kube::runtime::reflector::store::<ImageRepository>();
        for r in [
            repo("apps", "web", "registry.example.com:5000/team/app"),
            repo("other", "web", "registry.example.com:5000/team/app"),
            repo("apps", "api", "registry.example.com:5000/team/api"),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(r));
        }
        let d = Dispatcher::new(store, c(), ReceiverMetrics::default());
        let push = |tag: &str, id: &str| Push {
            repository: "registry.example.com:5000/team/app".into(),
            tag: Some(tag.into()),
            id: Some(id.into()),
        };
        let a = d.accept(
            Provider::Distribution,
            vec![push("1", "e1"), push("2", "e2")],
        );
        assert_eq!(
            a,
            Accepted {
                new: 2,
                duplicates: 0,
                invalid: 0,
                repositories: 2
            }
        );
        assert_eq!(lock(&d.pending).len(), 2);
        assert!(lock(&d.pending).values().all(|p| p.pushes == 2));
        let again = d.accept(Provider::Distribution, vec![push("1", "e1")]);
        assert_eq!(again.duplicates, 1);
        assert_eq!(again.repositories, 0);
        let unwatched = d.accept(
            Provider::Generic,
            vec![Push {
                repository: "registry.example.com:5000/team/nobody".into(),
                tag: Some("1".into()),
                id: None,
            }],
        );
        assert_eq!(unwatched.repositories, 0);
        let invalid = d.accept(
            Provider::Generic,
            vec![Push {
                repository: "Not An Image".into(),
                tag: None,
                id: None,
            }],
        );
        assert_eq!(invalid.invalid, 1);
    }

    #[test]
    fn the_wait_is_observed_when_the_status_records_the_request() {
        let (store, _writer) = kube::runtime::reflector::store::<ImageRepository>();
        let metrics = ReceiverMetrics::default();
        let d = Dispatcher::new(store, c(), metrics);
        let key = ObjectKey::new("apps", "web");
        let requested: jiff::Timestamp = "2026-12-02T06:00:00.5Z".parse().unwrap();
        lock(&d.awaiting).insert(
            key.clone(),
            Awaiting {
                requested,
                first: Instant::now(),
                since: Instant::now(),
            },
        );
        let mut obj = repo("apps", "web", "ghcr.io/acme/web");
        obj.status = Some(ImageRepositoryStatus {
            last_handled_reconcile_at: Some("2026-12-02T06:00:00.4Z".into()),
            ..Default::default()
        });
        d.observe(&obj);
        assert!(
            lock(&d.awaiting).contains_key(&key),
            "an older request was handled"
        );
        obj.status = Some(ImageRepositoryStatus {
            last_handled_reconcile_at: Some("2026-12-02T06:00:00.500000000Z".into()),
            ..Default::default()
        });
        d.observe(&obj);
        assert!(lock(&d.awaiting).is_empty());
    }
}
