//! Admission: the pure defaulting and validation rules ([`rules`]) and the AdmissionReview
//! glue ([`review`]) that the HTTPS server calls for `/mutate` and `/validate`.

pub mod json;
pub mod names;
mod reader;
pub mod review;
pub mod rules;

pub use review::{Admission, BadRequest, Endpoint, OPERATIONS, Outcome, handle, known_operation};
pub use rules::{Context, FieldError, Kind, Verdict, defaults, validate};

use crate::api::ImageRepository;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the validating webhook may read of the cluster: the controllers' caches. With
/// `--webhook-only` there is none and checks that need cluster state are skipped.
pub trait ClusterView: Send + Sync {
    /// The ImageRepository `namespace/name`, if the cache holds it.
    fn image_repository(&self, namespace: &str, name: &str) -> Option<Arc<ImageRepository>>;
    /// The labels of a namespace, if the cache holds it.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}
