//! Admission: the defaulting and validation webhooks of ImageRepository and ImagePolicy.
//!
//! [`review`] reads an AdmissionReview with kube's admission types and answers it; the
//! object's spec is read into the typed API structs (`spec`, serde with field paths);
//! [`validate`] holds one [`Validate`] per kind, checking meaning; [`defaults`] is the
//! mutating webhook's patch. The offline `validate` command runs the same functions.

pub mod defaults;
pub mod names;
mod report;
pub mod review;
mod spec;
pub mod validate;

pub use crate::api::Kind;
pub use report::{FieldError, Problem, Verdict};
pub use review::{BadRequest, Outcome, Webhook, handle};
pub use validate::{Validate, verdict};

use crate::api::ImageRepository;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the admission webhooks share: the cluster view (when controllers run) and flags.
#[derive(Clone, Default)]
pub struct Admission {
    /// The controllers' caches; None with `--webhook-only` (checks that need cluster
    /// state are then skipped).
    pub cluster: Option<Arc<dyn ClusterView>>,
    /// `--no-cross-namespace-refs`: ImagePolicies may only use repositories in their own
    /// namespace.
    pub no_cross_namespace_refs: bool,
}

/// What the validating webhook may read of the cluster: the controllers' caches.
pub trait ClusterView: Send + Sync {
    /// The ImageRepository `namespace/name`, if the cache holds it.
    fn image_repository(&self, namespace: &str, name: &str) -> Option<Arc<ImageRepository>>;
    /// The labels of a namespace, if the cache holds it.
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}
