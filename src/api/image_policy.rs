//! `ImagePolicy`: which tag of an ImageRepository is the latest, by semver, alphabetical
//! or numerical order, after an optional tag filter.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to choose the latest image from a repository's tags.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "image.toolkit.fluxcd.io",
    version = "v1",
    kind = "ImagePolicy",
    plural = "imagepolicies",
    singular = "imagepolicy",
    namespaced,
    status = "ImagePolicyStatus",
    shortname = "imgpol",
    shortname = "imagepol",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-images",
    doc = "ImagePolicy selects the latest image of an ImageRepository.",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.latestRef.name"}"#,
    printcolumn = r#"{"name":"Tag","type":"string","jsonPath":".status.latestRef.tag"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(
    rename_all = "camelCase",
    expecting = "an ImagePolicy spec: an object with imageRepositoryRef and policy"
)]
pub struct ImagePolicySpec {
    /// The ImageRepository whose tags are considered.
    pub image_repository_ref: NamespacedObjectReference,
    /// The ordering rule: exactly one of semver, alphabetical, numerical.
    pub policy: ImagePolicyChoice,
    /// Tag filter applied before ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_tags: Option<TagFilter>,
    /// When `.status.latestRef.digest` is set: `Always`, `IfNotPresent`, `Never` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_reflection_policy: Option<DigestReflectionPolicy>,
    /// With `Always`: how often the latest tag's digest is refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Stops further reconciles while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

impl ImagePolicySpec {
    /// The digest reflection policy in force (`Never` when absent).
    pub fn effective_digest_reflection_policy(&self) -> DigestReflectionPolicy {
        self.digest_reflection_policy.unwrap_or_default()
    }
}

/// A reference to an object by name, optionally in another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object naming the referent: {name: NAME}")]
pub struct NamespacedObjectReference {
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent; the referrer's namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Exactly one of the three orderings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object with one of semver, alphabetical, numerical")]
pub struct ImagePolicyChoice {
    /// Highest semantic version within a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<SemVerPolicy>,
    /// Alphabetical order of the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabetical: Option<AlphabeticalPolicy>,
    /// Numerical order of the tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerical: Option<NumericalPolicy>,
}

/// Semver ordering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object with a range, e.g. {range: \">=1.0.0\"}")]
pub struct SemVerPolicy {
    /// A Masterminds/semver v3 constraint (`>=1.0.0 <2`, `^1.2`, `1.0.x`).
    pub range: String,
}

/// Alphabetical ordering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object, with an optional order")]
pub struct AlphabeticalPolicy {
    /// `asc` (default) selects the last tag in alphabetical order, `desc` the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortOrder>,
}

/// Numerical ordering.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object, with an optional order")]
pub struct NumericalPolicy {
    /// `asc` (default) selects the largest number, `desc` the smallest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SortOrder>,
}

/// Sort direction.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Ascending: the greatest value wins.
    #[default]
    Asc,
    /// Descending: the least value wins.
    Desc,
}

/// When the digest of the latest image is reflected in the status.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DigestReflectionPolicy {
    /// Refresh the digest every `spec.interval`.
    Always,
    /// Look the digest up once, when the tag changes or the field is empty.
    IfNotPresent,
    /// Never set the digest.
    #[default]
    Never,
}

impl DigestReflectionPolicy {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestReflectionPolicy::Always => "Always",
            DigestReflectionPolicy::IfNotPresent => "IfNotPresent",
            DigestReflectionPolicy::Never => "Never",
        }
    }
}

/// Tag filter: a regex, and optionally a template of its capture groups to compare.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(expecting = "an object with a pattern and an optional extract")]
pub struct TagFilter {
    /// Regular expression tags must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Template of capture groups (`$ts`, `${1}`) whose expansion is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<String>,
}

/// What the controller last selected for an ImagePolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePolicyStatus {
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last generation reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The selected image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_ref: Option<ImageRef>,
    /// The image selected before `latestRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_previous_ref: Option<ImageRef>,
    /// `name:tag` of the selected image, for v1beta1/v1beta2 readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_image: Option<String>,
    /// `name:tag` of the previously selected image, for v1beta2 readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_previous_image: Option<String>,
    /// The `reconcile.fluxcd.io/requestedAt` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// One image: repository name, tag and optionally digest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ImageRef {
    /// Repository name, e.g. `ghcr.io/org/app`.
    pub name: String,
    /// Tag.
    pub tag: String,
    /// Digest (`sha256:...`), when reflected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl ImageRef {
    /// `name:tag`, as `latestImage` holds it.
    pub fn image_with_tag(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}
