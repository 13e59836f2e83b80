//! The receiver's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Labels of `image_reflector_receiver_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// A provider's name, or `unknown` for a path that names none.
    pub provider: &'static str,
    /// What became of the delivery, see [`Outcome`].
    pub result: &'static str,
}

/// Labels of `image_reflector_receiver_scan_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    /// `requested` (the annotation was written), `gone` (the object was deleted
    /// meanwhile) or `failed` (the API refused, after retries).
    pub result: &'static str,
}

/// What became of one delivery (the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// At least one ImageRepository was scheduled for a scan.
    Triggered,
    /// Valid pushes, but no ImageRepository watches the image (or every one excludes the
    /// tag, or is suspended): a logged no-op.
    Unwatched,
    /// Nothing that changes a tag list (pulls, blobs, pings, other events).
    Ignored,
    /// Every push of the delivery was seen before (a redelivery).
    Duplicate,
    Unauthorized,
    BadRequest,
    TooLarge,
    UnknownProvider,
    /// The caches have not synced yet (503; the sender retries).
    Unavailable,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::Unwatched => "unwatched",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
            Outcome::Unauthorized => "unauthorized",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::UnknownProvider => "unknown_provider",
            Outcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone)]
pub struct ReceiverMetrics {
    events: Family<EventLabels, Counter>,
    scan_requests: Family<ScanLabels, Counter>,
    push_to_scan: Histogram,
}

impl Default for ReceiverMetrics {
    fn default() -> Self {
        ReceiverMetrics {
            events: Family::default(),
            scan_requests: Family::default(),
            push_to_scan: Histogram::new([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
        }
    }
}

impl ReceiverMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "image_reflector_receiver_events",
            "Push notifications received, by provider and result",
            self.events.clone(),
        );
        registry.register(
            "image_reflector_receiver_scan_requests",
            "Scans the receiver requested (one per ImageRepository per burst of pushes), by result",
            self.scan_requests.clone(),
        );
        registry.register(
            "image_reflector_receiver_push_to_scan_seconds",
            "Seconds from the first push of a burst to the ImageRepository's status recording the scan it requested",
            self.push_to_scan.clone(),
        );
    }

    pub fn event(&self, provider: &'static str, outcome: Outcome) {
        self.events
            .get_or_create(&EventLabels {
                provider,
                result: outcome.as_str(),
            })
            .inc();
    }

    pub fn scan_request(&self, result: &'static str) {
        self.scan_requests
            .get_or_create(&ScanLabels { result })
            .inc();
    }

    pub fn push_to_scan(&self, elapsed: Duration) {
        self.push_to_scan.observe(elapsed.as_secs_f64());
    }
}
