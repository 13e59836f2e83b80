//! The controllers' Prometheus metrics. `gotk_reconcile_duration_seconds` keeps Flux's name
//! and labels so Flux's dashboards work unchanged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
    /// controller-runtime's series (see [`super::runtime_metrics`]).
    pub runtime: super::runtime_metrics::RuntimeMetrics,
    pub scans: Family<ResultLabels, Counter>,
    pub repository_tags: Family<RepositoryLabels, Gauge>,
    pub policy_evaluations: Family<ResultLabels, Counter>,
}

/// Flux's `gotk_reconcile_duration_seconds` buckets: ten, exponentially spaced from 10 ms
/// to 30 min (Prometheus' `ExponentialBucketsRange(0.01, 1800, 10)`).
fn flux_reconcile_buckets() -> impl Iterator<Item = f64> {
    let (min, max, count) = (0.01_f64, 1800.0_f64, 10);
    let factor = (max / min).powf(1.0 / f64::from(count - 1));
    // The last bound is exactly the maximum, not the product's rounding of it.
    (0..count).map(move |i| {
        if i == count - 1 {
            max
        } else {
            min * factor.powi(i)
        }
    })
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(flux_reconcile_buckets())
            }),
            runtime: Default::default(),
            scans: Family::default(),
            repository_tags: Family::default(),
            policy_evaluations: Family::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        self.runtime.register(registry);
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

    /// Drops an object's duration series once it is gone, as Flux's recorder does.
    pub fn forget_reconcile(&self, kind: &str, namespace: &str, name: &str) {
        self.reconcile_duration.remove(&ObjectLabels {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        });
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
