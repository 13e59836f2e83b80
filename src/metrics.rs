//! Prometheus metrics of the admission webhooks. The controllers register theirs into the
//! same [`Registry`] before the server starts; `/metrics` encodes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of `admission_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate` or `validate`.
    pub webhook: &'static str,
    /// `ImageRepository`, `ImagePolicy`, or `unknown`.
    pub kind: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT`, or `none` for a bad request.
    pub operation: &'static str,
    /// `allowed`, `patched`, `denied`, `bad_request`, `too_large` or `timeout`.
    pub result: &'static str,
}

/// Labels of `admission_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `mutate` or `validate`.
    pub webhook: &'static str,
}

/// The webhook metrics.
#[derive(Clone)]
pub struct AdmissionMetrics {
    requests: Family<AdmissionLabels, Counter>,
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
        AdmissionMetrics { requests, duration }
    }

    /// Counts one answered request and its latency.
    pub fn observe(&self, labels: AdmissionLabels, elapsed: Duration) {
        self.duration
            .get_or_create(&WebhookLabels {
                webhook: labels.webhook,
            })
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
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
    fn counts_and_latencies_reach_the_registry() {
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
        let text = encode(&registry).unwrap();
        for line in [
            r#"admission_requests_total{webhook="validate",kind="ImageRepository",operation="CREATE",result="denied"} 3"#,
            r#"admission_requests_total{webhook="mutate",kind="ImageRepository",operation="CREATE",result="patched"} 1"#,
            r#"admission_request_duration_seconds_count{webhook="validate"} 3"#,
            r#"admission_request_duration_seconds_count{webhook="mutate"} 1"#,
            r#"admission_request_duration_seconds_bucket{le="0.0001",webhook="validate"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Label sets that never happened are not exported.
        assert!(!text.contains(r#"result="too_large""#), "{text}");
    }
}
