//! What every reconcile is handed: the options from the command line, the shared
//! clients and caches ([`ReconcileContext`]), and the one error type of both controllers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use rand::Rng;
use tracing::warn;

use super::{Caches, CloudOptions, Metrics, events};
use crate::scanner::Scanner;
use crate::store::TagStore;

/// Settings of the controllers (flags of `serve`).
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Watch only this namespace (`--watch-all-namespaces=false`); `None` watches all.
    pub namespace: Option<String>,
    /// Reconcile only objects with these labels (`--watch-label-selector`, for sharding).
    pub label_selector: Option<String>,
    /// Objects reconciled at once per kind (`--concurrent`).
    pub concurrency: u16,
    /// Requeues are delayed by up to this share of the interval (`--interval-jitter-percentage`).
    pub interval_jitter_percentage: u8,
    /// Service account whose pull secrets apply when an ImageRepository names none, and
    /// whose identity cloud logins use when it names no `serviceAccountName`.
    pub default_service_account: Option<String>,
    /// Cloud registry logins: autologin flags, object-level workload identity.
    pub cloud: CloudOptions,
    /// Refuse every cross-namespace ImagePolicy reference (`--no-cross-namespace-refs`).
    pub no_cross_namespace_refs: bool,
    /// How long an ImagePolicy waits before looking again at a repository without tags.
    pub requeue_dependency: Duration,
    /// First delay of the retry backoff after a failure (`--min-retry-delay`); it doubles
    /// with each consecutive failure.
    pub min_retry_backoff: Duration,
    /// Upper bound of the retry backoff (`--max-retry-delay`).
    pub max_retry_backoff: Duration,
    /// notification-controller's event receiver (`--events-addr`).
    pub events_addr: Option<url::Url>,
    /// The events' reporting controller and instance.
    pub reporter: String,
    pub instance: Option<String>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            namespace: None,
            label_selector: None,
            concurrency: 4,
            interval_jitter_percentage: 5,
            default_service_account: None,
            cloud: CloudOptions::default(),
            no_cross_namespace_refs: false,
            requeue_dependency: Duration::from_secs(30),
            min_retry_backoff: Duration::from_millis(750),
            max_retry_backoff: Duration::from_secs(15 * 60),
            events_addr: None,
            reporter: "image-reflector-controller".to_string(),
            instance: None,
        }
    }
}

/// Why a reconcile failed; the kube-runtime Controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Scan(#[from] crate::scanner::ScanError),
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error("encoding status: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("background task failed: {0}")]
    Join(String),
    #[error("{0}")]
    Dependency(String),
}

impl ReconcileError {
    pub(super) fn from_finalizer(
        e: kube::runtime::finalizer::Error<ReconcileError>,
    ) -> ReconcileError {
        use kube::runtime::finalizer::Error;
        match e {
            Error::ApplyFailed(inner) | Error::CleanupFailed(inner) => inner,
            other => ReconcileError::Finalizer(other.to_string()),
        }
    }

    /// A stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Scan(_) => "scan",
            ReconcileError::Credentials(_) => "credentials",
            ReconcileError::Store(_) => "store",
            ReconcileError::Kube(_) => "kube",
            ReconcileError::Encode(_) => "encode",
            ReconcileError::Finalizer(_) => "finalizer",
            ReconcileError::Join(_) => "join",
            ReconcileError::Dependency(_) => "dependency",
        }
    }
}

/// Everything a reconcile needs, shared by both controllers (handed to every reconcile
/// and error policy by kube-runtime).
pub struct ReconcileContext {
    pub client: Client,
    pub scanner: Scanner,
    pub store: TagStore,
    pub secrets: Store<PartialObjectMetadata<Secret>>,
    pub caches: Caches,
    pub recorder: events::EventRecorder,
    /// notification-controller, when `--events-addr` is set.
    pub flux_events: Option<events::flux::FluxEventSink>,
    pub metrics: Metrics,
    pub options: ControllerOptions,
    pub(super) failures: Mutex<HashMap<ObjectRef<kube::api::DynamicObject>, u32>>,
}

impl ReconcileContext {
    /// A random delay of up to `--interval-jitter-percentage` of the interval, so objects
    /// created together do not scan together.
    pub fn jitter(&self, interval: Duration) -> Duration {
        let pct = u32::from(self.options.interval_jitter_percentage.min(100));
        if pct == 0 {
            return Duration::ZERO;
        }
        let max = interval.mul_f64(f64::from(pct) / 100.0);
        max.mul_f64(rand::rng().random::<f64>())
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn publish<K>(&self, obj: &K, type_: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_revision(obj, type_, reason, message, None)
            .await
    }

    /// Publishes an event about `obj` as a Kubernetes Event and, with `--events-addr`,
    /// to notification-controller, with `revision` in the metadata.
    pub async fn publish_revision<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        message: &str,
        revision: Option<&str>,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if let Some(sink) = &self.flux_events {
            sink.send(events::flux::FluxEvent {
                involved_object: obj.object_ref(&()),
                severity: events::flux::severity(type_),
                timestamp: jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
                message: message.to_string(),
                reason: reason.to_string(),
                metadata: events::flux::metadata(obj.meta().annotations.iter().flatten(), revision),
                reporting_controller: self.options.reporter.clone(),
                reporting_instance: self.options.instance.clone().unwrap_or_default(),
            });
        }
        let event = KubeEvent {
            type_,
            reason: reason.to_string(),
            note: Some(message.chars().take(1024).collect()),
            action: match type_ {
                EventType::Normal => "Reconcile".to_string(),
                EventType::Warning => "ReconcileFailed".to_string(),
            },
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }

    /// Backoff after the `n`th consecutive failure of an object: `min_retry_backoff`
    /// doubling, capped at `max_retry_backoff` (controller-runtime's exponential failure
    /// rate limiter, which Flux's flags configure), plus up to 10% jitter.
    pub(super) fn backoff(&self, key: ObjectRef<kube::api::DynamicObject>) -> Duration {
        let Ok(mut failures) = self.failures.lock() else {
            return self.options.max_retry_backoff;
        };
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let exp = n.saturating_sub(1).min(20);
        let base = self.options.min_retry_backoff.saturating_mul(1u32 << exp);
        let capped = base.min(self.options.max_retry_backoff);
        // Up to 10% jitter so failing objects spread out.
        capped + capped.mul_f64(0.1 * rand::rng().random::<f64>())
    }

    pub(super) fn clear_failures(&self, key: &ObjectRef<kube::api::DynamicObject>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}
