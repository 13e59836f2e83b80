//! Prometheus metrics of the admission webhooks. The controllers register theirs into the
//! same [`Registry`] before the server starts; `/metrics` encodes it.

use crate::admission::{self, Kind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Labels of `admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate` or `validate`.
    pub webhook: &'static str,
    /// `ImageRepository`, `ImagePolicy`, or `unknown`.
    pub kind: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, `other`, or `none` for a bad request.
    pub operation: &'static str,
    /// `allowed`, `patched`, `denied`, `bad_request` or `too_large`.
    pub result: &'static str,
}

/// Labels of `admission_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `mutate` or `validate`.
    pub webhook: &'static str,
}

/// Label values known in advance, in the order of [`slot`]'s index.
const WEBHOOKS: [&str; 2] = ["mutate", "validate"];
const KINDS: [&str; 3] = [
    Kind::ImageRepository.as_str(),
    Kind::ImagePolicy.as_str(),
    "unknown",
];
const OPERATIONS: [&str; 6] = {
    let [create, update, delete, connect] = admission::OPERATIONS;
    [create, update, delete, connect, "other", "none"]
};
const RESULTS: [&str; 5] = ["allowed", "patched", "denied", "bad_request", "too_large"];
const SLOTS: usize = WEBHOOKS.len() * KINDS.len() * OPERATIONS.len() * RESULTS.len();

/// The index of a label set made of known values, or None.
fn slot(labels: &AdmissionLabels) -> Option<usize> {
    let at = |values: &[&str], value: &str| values.iter().position(|v| *v == value);
    let webhook = at(&WEBHOOKS, labels.webhook)?;
    let kind = at(&KINDS, labels.kind)?;
    let operation = at(&OPERATIONS, labels.operation)?;
    let result = at(&RESULTS, labels.result)?;
    Some(((webhook * KINDS.len() + kind) * OPERATIONS.len() + operation) * RESULTS.len() + result)
}

/// The webhook metrics. Every review updates them, from every worker thread, so the
/// series are looked up once and kept: the hot path skips the family's lock and label
/// hashing, which otherwise bounce between cores on every request.
#[derive(Clone)]
pub struct AdmissionMetrics {
    requests: Family<AdmissionLabels, Counter>,
    /// Counters of `requests` already created, by [`slot`]; created on first use so that
    /// only label sets that happened are exported.
    counters: Arc<[OnceLock<Counter>]>,
    /// `admission_request_duration_seconds` for `mutate` and `validate` (in [`WEBHOOKS`]
    /// order); other webhook names go through the family.
    durations: [Histogram; 2],
    duration: Family<WebhookLabels, Histogram>,
}

impl AdmissionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> AdmissionMetrics {
        let requests = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests answered, by webhook, kind, operation and result",
            requests.clone(),
        );
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~0.4 s
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 14,
            ))
        });
        registry.register(
            "admission_request_duration_seconds",
            "Time to answer one admission request, from body received to response built",
            duration.clone(),
        );
        let durations =
            WEBHOOKS.map(|webhook| duration.get_or_create(&WebhookLabels { webhook }).clone());
        AdmissionMetrics {
            requests,
            counters: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            durations,
            duration,
        }
    }

    /// Counts one answered request and its latency.
    pub fn observe(&self, labels: AdmissionLabels, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match WEBHOOKS.iter().position(|w| *w == labels.webhook) {
            Some(i) => self.durations[i].observe(seconds),
            None => self
                .duration
                .get_or_create(&WebhookLabels {
                    webhook: labels.webhook,
                })
                .observe(seconds),
        }
        match slot(&labels).and_then(|i| self.counters.get(i)) {
            Some(cell) => cell
                .get_or_init(|| self.requests.get_or_create(&labels).clone())
                .inc(),
            None => self.requests.get_or_create(&labels).inc(),
        };
    }
}

/// The registry in Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_label_set_has_its_own_slot() {
        let mut seen = [false; SLOTS];
        for webhook in WEBHOOKS {
            for kind in KINDS {
                for operation in OPERATIONS {
                    for result in RESULTS {
                        let labels = AdmissionLabels {
                            webhook,
                            kind,
                            operation,
                            result,
                        };
                        let i = slot(&labels).unwrap();
                        assert!(!std::mem::replace(&mut seen[i], true), "{labels:?}");
                    }
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
        let odd = AdmissionLabels {
            webhook: "convert",
            kind: "unknown",
            operation: "none",
            result: "allowed",
        };
        assert_eq!(slot(&odd), None);
    }

    #[test]
    fn counts_and_latencies_reach_the_registry_for_known_and_other_labels() {
        let mut registry = Registry::default();
        let metrics = AdmissionMetrics::register(&mut registry);
        let labels = |webhook, result| AdmissionLabels {
            webhook,
            kind: "ImageRepository",
            operation: "CREATE",
            result,
        };
        for _ in 0..3 {
            metrics.observe(labels("validate", "denied"), Duration::from_micros(60));
        }
        metrics.observe(labels("mutate", "patched"), Duration::from_micros(60));
        // A label value outside the known sets still counts, through the family.
        metrics.observe(labels("convert", "allowed"), Duration::from_micros(60));
        let text = encode(&registry).unwrap();
        for line in [
            r#"admission_requests_total{webhook="validate",kind="ImageRepository",operation="CREATE",result="denied"} 3"#,
            r#"admission_requests_total{webhook="mutate",kind="ImageRepository",operation="CREATE",result="patched"} 1"#,
            r#"admission_requests_total{webhook="convert",kind="ImageRepository",operation="CREATE",result="allowed"} 1"#,
            r#"admission_request_duration_seconds_count{webhook="validate"} 3"#,
            r#"admission_request_duration_seconds_count{webhook="mutate"} 1"#,
            r#"admission_request_duration_seconds_count{webhook="convert"} 1"#,
            r#"admission_request_duration_seconds_bucket{le="0.0001",webhook="validate"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Label sets that never happened are not exported.
        assert!(!text.contains(r#"result="too_large""#), "{text}");
    }
}
