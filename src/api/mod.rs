//! The Kubernetes API of image-reflector: Flux's `ImageRepository` and `ImagePolicy`
//! (group `image.toolkit.fluxcd.io`), their condition vocabulary, the cross-namespace
//! access rule, Flux durations, the defaults, and the multi-version CRDs.
//!
//! One superset schema is served for `v1beta1`, `v1beta2` and `v1` with conversion `None`
//! and `v1` stored: every field of every version exists in every version, so an object
//! written in any version reads back unchanged in every other. The Rust types are the `v1`
//! types plus the fields only older versions had (`ImagePolicy.status.latestImage`).

pub mod access;
pub mod conditions;
pub mod crd;
pub mod defaults;
pub mod duration;
mod image_policy;
mod image_repository;

pub use access::{AccessDenied, access_allowed};
pub use conditions::*;
pub use crd::{all_crds, crds_yaml};
pub use duration::{
    DurationError, format_duration, format_duration_without_hours, parse_duration, uses_hours,
};
pub use image_policy::*;
pub use image_repository::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of both kinds.
pub const GROUP: &str = "image.toolkit.fluxcd.io";
/// The version the API server stores.
pub const STORAGE_VERSION: &str = "v1";
/// Every served version, oldest first.
pub const SERVED_VERSIONS: [&str; 3] = ["v1beta1", "v1beta2", "v1"];

/// The finalizer the controllers put on objects they manage.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// Set (to any new value, usually a timestamp) to ask for an immediate reconcile.
pub const RECONCILE_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// The kinds of this API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `image.toolkit.fluxcd.io/*, Kind=ImageRepository`
    ImageRepository,
    /// `image.toolkit.fluxcd.io/*, Kind=ImagePolicy`
    ImagePolicy,
}

impl Kind {
    /// The kind for an API group and kind name, if it is one of ours.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        match (group, kind) {
            (GROUP, "ImageRepository") => Some(Kind::ImageRepository),
            (GROUP, "ImagePolicy") => Some(Kind::ImagePolicy),
            _ => None,
        }
    }

    /// The kind name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::ImageRepository => "ImageRepository",
            Kind::ImagePolicy => "ImagePolicy",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to an object in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object naming the referent: {name: NAME}")]
pub struct LocalObjectReference {
    /// Name of the referent.
    pub name: String,
}
