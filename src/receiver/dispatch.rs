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
mod tests;
