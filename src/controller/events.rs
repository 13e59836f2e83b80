//! Publishing `events.k8s.io/v1` Events about our objects.
//!
//! kube-runtime's `Recorder` folds a repeated event into an `EventSeries`, but its key
//! leaves out the note: a second `Succeeded` event with a new message ("resolved to 1.0.2")
//! only bumps the count of the first one, whose note still says "resolved to 1.0.1", so
//! `kubectl describe` shows the old tag "(x2)" and the news is lost. This recorder keys a
//! series as client-go's events/v1 recorder does: type, action, reason, note, reporting
//! controller and instance, and the object (kind, namespace, name, uid). Repeats of the
//! same event within six minutes patch the series; anything else is a new Event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, ResourceExt};

/// How long a published event can still grow a series.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Bound on remembered events (oldest dropped first when exceeded).
const MAX_CACHED: usize = 10_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    type_: &'static str,
    action: String,
    reason: String,
    note: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

struct Published {
    event: K8sEvent,
    at: Instant,
}

/// Publishes events, folding exact repeats into a series.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    cache: tokio::sync::Mutex<HashMap<Key, Published>>,
}

fn type_name(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

impl EventRecorder {
    pub fn new(client: Client, reporter: Reporter) -> EventRecorder {
        EventRecorder {
            client,
            reporter,
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    fn key(ev: &Event, regarding: &ObjectReference) -> Key {
        Key {
            type_: type_name(ev.type_),
            action: ev.action.clone(),
            reason: ev.reason.clone(),
            note: ev.note.clone(),
            kind: regarding.kind.clone(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
        }
    }

    fn new_event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = jiff::Timestamp::now();
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(type_name(ev.type_).to_string()),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }

    /// Creates the Event, or, for a repeat of one published within the last six minutes,
    /// patches its series (count and last observed time).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = Self::key(ev, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let mut cache = self.cache.lock().await;
        cache.retain(|_, p| p.at.elapsed() < SERIES_WINDOW);
        if cache.len() >= MAX_CACHED
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, p)| p.at)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        if let Some(previous) = cache.get(&key) {
            let mut event = previous.event.clone();
            let count = event.series.as_ref().map_or(2, |s| s.count + 1);
            event.series = Some(EventSeries {
                count,
                last_observed_time: MicroTime(jiff::Timestamp::now()),
            });
            let patch = serde_json::json!({ "series": event.series });
            match api
                .patch(
                    &event.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    cache.insert(
                        key,
                        Published {
                            event,
                            at: Instant::now(),
                        },
                    );
                    return Ok(());
                }
                // The Event expired or was deleted: start a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding);
        api.create(&PostParams::default(), &event).await?;
        cache.insert(
            key,
            Published {
                event,
                at: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> ObjectReference {
        ObjectReference {
            kind: Some("ImagePolicy".into()),
            namespace: Some("apps".into()),
            name: Some("app".into()),
            uid: Some("u1".into()),
            ..Default::default()
        }
    }

    fn event(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Succeeded".into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    #[test]
    fn events_with_another_note_are_not_folded_into_one_series() {
        let r = reference();
        let a = EventRecorder::key(&event("resolved to 1.0.1"), &r);
        let b = EventRecorder::key(&event("resolved to 1.0.2"), &r);
        assert_ne!(a, b);
        assert_eq!(a, EventRecorder::key(&event("resolved to 1.0.1"), &r));
    }

    #[test]
    fn the_same_event_about_another_object_is_another_series() {
        let r = reference();
        let other = ObjectReference {
            uid: Some("u2".into()),
            ..reference()
        };
        assert_ne!(
            EventRecorder::key(&event("x"), &r),
            EventRecorder::key(&event("x"), &other)
        );
    }
}

/// Events for notification-controller (`--events-addr`), in Flux's event format
/// (`event.toolkit.fluxcd.io/v1beta1` Event), posted as Flux's recorder posts them: Normal
/// as severity `info`, Warning as `error`, with the object's
/// `event.toolkit.fluxcd.io/`-prefixed annotations as metadata. Posting happens on a
/// background task with a bounded queue, so a slow or absent receiver never holds up a
/// reconcile; like Flux's retrying client it retries a failed POST (connection errors and
/// 5xx) four times with growing waits, and never retries a 429 (notification-controller's
/// answer to a duplicate).
pub mod flux {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::ObjectReference;
    use serde::Serialize;
    use tokio::sync::mpsc;
    use tracing::{debug, warn};

    /// The annotation prefix whose annotations travel as event metadata.
    pub const METADATA_ANNOTATION_PREFIX: &str = "event.toolkit.fluxcd.io/";
    /// The revision's metadata key. notification-controller keeps only keys under
    /// `event.toolkit.fluxcd.io/` or the involved object's API group, so the revision is
    /// prefixed with the group, as Flux's other controllers prefix theirs.
    pub const REVISION_KEY: &str = "image.toolkit.fluxcd.io/revision";

    /// One event, as notification-controller's `/` endpoint reads it.
    #[derive(Clone, Debug, Serialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct FluxEvent {
        pub involved_object: ObjectReference,
        /// `info` or `error`.
        pub severity: &'static str,
        /// RFC 3339, seconds.
        pub timestamp: String,
        pub message: String,
        pub reason: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        pub metadata: BTreeMap<String, String>,
        pub reporting_controller: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub reporting_instance: String,
    }

    /// The severity Flux gives an event type.
    pub fn severity(type_: kube::runtime::events::EventType) -> &'static str {
        match type_ {
            kube::runtime::events::EventType::Warning => "error",
            kube::runtime::events::EventType::Normal => "info",
        }
    }

    /// The metadata of an event about an object with these annotations.
    pub fn metadata<'a>(
        annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
        revision: Option<&str>,
    ) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = annotations
            .into_iter()
            .filter(|(k, _)| k.starts_with(METADATA_ANNOTATION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(revision) = revision {
            out.insert(REVISION_KEY.to_string(), revision.to_string());
        }
        out
    }

    /// Parses `--events-addr`: an http or https URL.
    pub fn events_addr(address: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(address).map_err(|e| format!("{address:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{address:?}: the scheme must be http or https, e.g. http://notification-controller.flux-system.svc.cluster.local./"
            ));
        }
        Ok(url)
    }

    const QUEUE: usize = 1024;
    const ATTEMPTS: u32 = 5;

    /// Where events go: a queue drained by one background task.
    #[derive(Clone)]
    pub struct FluxEventSink {
        tx: mpsc::Sender<FluxEvent>,
    }

    impl FluxEventSink {
        /// Starts the task that posts to `url` (checked by [`events_addr`]).
        pub fn start(url: url::Url) -> FluxEventSink {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default();
            let (tx, mut rx) = mpsc::channel::<FluxEvent>(QUEUE);
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    post(&http, &url, &event).await;
                }
            });
            FluxEventSink { tx }
        }

        /// Queues an event; when the queue is full (the receiver is far behind) the
        /// event is dropped with a log line rather than waiting.
        pub fn send(&self, event: FluxEvent) {
            if let Err(e) = self.tx.try_send(event) {
                warn!(error = %e, "notification-controller is not keeping up; an event was dropped");
            }
        }
    }

    async fn post(http: &reqwest::Client, url: &url::Url, event: &FluxEvent) {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let outcome = http.post(url.clone()).json(event).send().await;
            let retry = match &outcome {
                Ok(r) if r.status().is_success() => {
                    debug!(reason = %event.reason, "event posted to notification-controller");
                    return;
                }
                // A duplicate within notification-controller's rate limit window.
                Ok(r) if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS => return,
                Ok(r) => r.status().is_server_error(),
                Err(_) => true,
            };
            if !retry || attempt == ATTEMPTS {
                let why = match outcome {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.without_url().to_string(),
                };
                warn!(reason = %event.reason, error = %why, attempts = attempt, "posting an event to notification-controller failed");
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_event_serialises_in_fluxs_shape() {
            let event = FluxEvent {
                involved_object: ObjectReference {
                    kind: Some("ImagePolicy".into()),
                    namespace: Some("apps".into()),
                    name: Some("app".into()),
                    api_version: Some("image.toolkit.fluxcd.io/v1".into()),
                    ..Default::default()
                },
                severity: severity(kube::runtime::events::EventType::Normal),
                timestamp: "2026-12-02T10:00:00Z".into(),
                message: "Latest image tag for r/app resolved to 1.0.1".into(),
                reason: "Succeeded".into(),
                metadata: metadata(
                    [
                        (
                            &"event.toolkit.fluxcd.io/team".to_string(),
                            &"a".to_string(),
                        ),
                        (&"other/x".to_string(), &"y".to_string()),
                    ],
                    Some("r/app:1.0.1"),
                ),
                reporting_controller: "image-reflector-controller".into(),
                reporting_instance: "pod-1".into(),
            };
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(
                json,
                serde_json::json!({
                    "involvedObject": {"kind": "ImagePolicy", "namespace": "apps", "name": "app",
                                        "apiVersion": "image.toolkit.fluxcd.io/v1"},
                    "severity": "info",
                    "timestamp": "2026-12-02T10:00:00Z",
                    "message": "Latest image tag for r/app resolved to 1.0.1",
                    "reason": "Succeeded",
                    "metadata": {"event.toolkit.fluxcd.io/team": "a", "image.toolkit.fluxcd.io/revision": "r/app:1.0.1"},
                    "reportingController": "image-reflector-controller",
                    "reportingInstance": "pod-1",
                })
            );
            assert_eq!(severity(kube::runtime::events::EventType::Warning), "error");
        }

        #[test]
        fn an_events_address_must_be_an_http_url() {
            assert!(events_addr("http://nc.flux-system.svc.cluster.local./").is_ok());
            assert!(
                events_addr("nc:9090")
                    .unwrap_err()
                    .contains("http or https")
            );
            assert!(events_addr("not a url").is_err());
        }
    }
}
