//! Registry request metrics (prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub host: String,
    /// The HTTP status code, or `error` when no response came back.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HostLabels {
    pub host: String,
}

#[derive(Clone, Default)]
pub(crate) struct ScannerMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub rate_limited: Family<HostLabels, Counter>,
}

impl ScannerMetrics {
    pub(crate) fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "image_reflector_registry_requests",
            "HTTP requests made to container registries, by registry host and status code",
            self.requests.clone(),
        );
        registry.register(
            "image_reflector_registry_rate_limited",
            "429 Too Many Requests answers received from container registries",
            self.rate_limited.clone(),
        );
    }

    pub(crate) fn observe(&self, host: &str, code: Option<u16>) {
        let code = code.map_or_else(|| "error".to_string(), |c| c.to_string());
        if code == "429" {
            self.rate_limited
                .get_or_create(&HostLabels {
                    host: host.to_string(),
                })
                .inc();
        }
        self.requests
            .get_or_create(&RequestLabels {
                host: host.to_string(),
                code,
            })
            .inc();
    }
}
