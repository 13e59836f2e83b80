//! The controllers' Prometheus metrics. `gotk_reconcile_duration_seconds` keeps Flux's name
//! and labels so Flux's dashboards work unchanged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    pub name: String,
    pub namespace: String,
}

/// Every controller metric, registered once.
#[derive(Clone)]
pub struct Metrics {
    pub reconcile_duration: Family<ObjectLabels, Histogram>,
    pub scans: Family<ResultLabels, Counter>,
    pub repository_tags: Family<RepositoryLabels, Gauge>,
    pub policy_evaluations: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            scans: Family::default(),
            repository_tags: Family::default(),
            policy_evaluations: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gotk_reconcile_duration_seconds",
            "The duration in seconds of a gitops toolkit resource reconciliation",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "image_reflector_scans",
            "Registry scans by result (succeeded, or the error kind)",
            self.scans.clone(),
        );
        registry.register(
            "image_reflector_repository_tags",
            "Tags stored for each ImageRepository after exclusions",
            self.repository_tags.clone(),
        );
        registry.register(
            "image_reflector_policy_evaluations",
            "ImagePolicy evaluations by result",
            self.policy_evaluations.clone(),
        );
    }

    pub fn observe_reconcile(&self, kind: &str, namespace: &str, name: &str, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&ObjectLabels {
                kind: kind.to_string(),
                name: name.to_string(),
                namespace: namespace.to_string(),
            })
            .observe(seconds);
    }

    pub fn count_scan(&self, result: &str) {
        self.scans
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn set_repository_tags(&self, namespace: &str, name: &str, tags: usize) {
        self.repository_tags
            .get_or_create(&RepositoryLabels {
                name: name.to_string(),
                namespace: namespace.to_string(),
            })
            .set(i64::try_from(tags).unwrap_or(i64::MAX));
    }

    pub fn forget_repository(&self, namespace: &str, name: &str) {
        self.repository_tags.remove(&RepositoryLabels {
            name: name.to_string(),
            namespace: namespace.to_string(),
        });
    }

    pub fn count_policy(&self, result: &str) {
        self.policy_evaluations
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}
