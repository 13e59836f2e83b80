//! Metrics of cloud logins: Flux's token cache metrics, under Flux's names and labels
//! (`gotk_token_cache_events_total`, `gotk_token_cached_items`,
//! `gotk_token_cache_requests_total`, `gotk_token_cache_evictions_total`), so Flux's
//! dashboards work, and the exchanges with cloud services by step and result
//! (`image_reflector_cloud_exchanges_total`).

use super::{Cloud, InvolvedObject, Step};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Flux's operation label for cache events of a reconcile.
const OPERATION_RECONCILE: &str = "reconcile";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event_type: String,
    kind: String,
    name: String,
    namespace: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExchangeLabels {
    cloud: String,
    step: String,
    result: String,
}

#[derive(Default)]
pub(crate) struct CloudMetrics {
    events: Family<EventLabels, Counter>,
    items: Gauge,
    requests: Family<StatusLabels, Counter>,
    evictions: Counter,
    exchanges: Family<ExchangeLabels, Counter>,
}

impl CloudMetrics {
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "gotk_token_cache_events",
            "Token cache lookups of a reconciliation, by hit or miss and object (Flux's metric)",
            self.events.clone(),
        );
        registry.register(
            "gotk_token_cached_items",
            "Cloud tokens and registry credentials in the token cache",
            self.items.clone(),
        );
        registry.register(
            "gotk_token_cache_requests",
            "Token cache lookups by success or failure",
            self.requests.clone(),
        );
        registry.register(
            "gotk_token_cache_evictions",
            "Tokens evicted from the token cache to keep it within --token-cache-max-size",
            self.evictions.clone(),
        );
        registry.register(
            "image_reflector_cloud_exchanges",
            "Requests to cloud token services and registry exchanges, by cloud, step and result",
            self.exchanges.clone(),
        );
    }

    pub(crate) fn cache_request(&self, ok: bool, hit: bool, involved: Option<&InvolvedObject>) {
        let status = if ok { "success" } else { "failure" };
        self.requests
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
        if let Some(o) = involved {
            self.events
                .get_or_create(&event_labels(
                    if hit { "cache_hit" } else { "cache_miss" },
                    o,
                ))
                .inc();
        }
    }

    pub(crate) fn evicted(&self) {
        self.evictions.inc();
    }

    pub(crate) fn set_cached_items(&self, n: usize) {
        self.items.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// One request to a cloud service (or the registry's exchange) and how it ended.
    pub(crate) fn exchange(&self, cloud: Cloud, step: Step, ok: bool) {
        self.exchanges
            .get_or_create(&ExchangeLabels {
                cloud: cloud.as_str().to_string(),
                step: step.as_str().to_string(),
                result: if ok { "success" } else { "failure" }.to_string(),
            })
            .inc();
    }

    /// Drops the cache event series of a deleted object, as Flux does.
    pub(crate) fn forget(&self, o: &InvolvedObject) {
        for event in ["cache_hit", "cache_miss"] {
            self.events.remove(&event_labels(event, o));
        }
    }
}

fn event_labels(event: &str, o: &InvolvedObject) -> EventLabels {
    EventLabels {
        event_type: event.to_string(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        namespace: o.namespace.clone(),
        operation: OPERATION_RECONCILE.to_string(),
    }
}
