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
