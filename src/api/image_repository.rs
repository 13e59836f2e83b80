//! `ImageRepository`: which image repository to scan for tags, how often, and with which
//! credentials.

use super::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The exclusion list the API server fills in when `spec.exclusionList` is absent
/// (v1beta2 and v1): cosign signature tags.
/// The scanner applies the same list to a request that names none.
pub const DEFAULT_EXCLUSION_LIST: [&str; 1] = ["^.*\\.sig$"];

/// [`DEFAULT_EXCLUSION_LIST`] as owned strings, as specs and scan requests hold it.
pub fn default_exclusion_list() -> Vec<String> {
    DEFAULT_EXCLUSION_LIST
        .iter()
        .map(|s| s.to_string())
        .collect()
}
/// At most this many entries in `spec.exclusionList`.
pub const MAX_EXCLUSION_LIST: usize = 25;

/// How to scan one image repository, e.g. `ghcr.io/fluxcd/flux`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "image.toolkit.fluxcd.io",
    version = "v1",
    kind = "ImageRepository",
    plural = "imagerepositories",
    singular = "imagerepository",
    namespaced,
    status = "ImageRepositoryStatus",
    shortname = "imgrepo",
    shortname = "imagerepo",
    category = "all",
    category = "fluxcd",
    category = "fluxcd-images",
    doc = "ImageRepository scans an OCI image repository for tags.",
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Tags","type":"string","jsonPath":".status.lastScanResult.tagCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Last scan","type":"string","priority":1,"jsonPath":".status.lastScanResult.scanTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(
    rename_all = "camelCase",
    expecting = "an ImageRepository spec: an object with image and interval"
)]
pub struct ImageRepositorySpec {
    /// The image repository to scan, without tag or digest (`alpine`, `ghcr.io/org/app`).
    pub image: String,
    /// Time between scans, as a Flux duration (`5m`, `1h30m`).
    pub interval: String,
    /// Time allowed for one scan (no `h` unit); defaults to the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Secret holding registry credentials (`kubernetes.io/dockerconfigjson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret holding a client certificate/key and/or a CA certificate for the registry
    /// (`tls.crt`/`tls.key`/`ca.crt`, or the older `certFile`/`keyFile`/`caFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<LocalObjectReference>,
    /// Secret holding the proxy to use: `address` (`http://`, `https://`, `socks5://` or
    /// `socks5h://`; `http://` when it has no scheme), `username`, `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_secret_ref: Option<LocalObjectReference>,
    /// ServiceAccount whose image pull secrets are used for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Stops further scans while true. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Which other namespaces may point ImagePolicies at this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_from: Option<AccessFrom>,
    /// Regular expressions; tags matching any of them are not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusion_list: Option<Vec<String>>,
    /// Where credentials come from: `generic` (secretRef), `aws`, `azure`, `gcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// Talk plain HTTP to the registry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl ImageRepositorySpec {
    /// The exclusion list in force: the spec's, or the default when absent or empty.
    pub fn effective_exclusion_list(&self) -> Vec<String> {
        match &self.exclusion_list {
            // An empty list means the default, as Flux reads it: `exclusionList: []`
            // does not let signature tags in.
            Some(list) if !list.is_empty() => list.clone(),
            _ => default_exclusion_list(),
        }
    }

    /// The provider in force: the spec's, or `generic` when absent.
    pub fn effective_provider(&self) -> Provider {
        self.provider.unwrap_or_default()
    }
}

/// Source of registry credentials.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Credentials from `secretRef` / the service account, or anonymous.
    #[default]
    Generic,
    /// Amazon ECR.
    Aws,
    /// Azure Container Registry.
    Azure,
    /// Google Artifact/Container Registry.
    Gcp,
}

impl Provider {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Generic => "generic",
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Gcp => "gcp",
        }
    }
}

/// Access control list for cross-namespace references.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    expecting = "an object with namespaceSelectors"
)]
pub struct AccessFrom {
    /// Namespace selectors, ORed: a namespace matching any of them is admitted.
    pub namespace_selectors: Vec<NamespaceSelector>,
}

/// Selects namespaces by their labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", expecting = "an object with matchLabels")]
pub struct NamespaceSelector {
    /// Labels a namespace must all carry; empty selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// What the controller last observed for an ImageRepository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageRepositoryStatus {
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last generation reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `spec.image` with the implied parts written out (`docker.io/library/alpine`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_image_name: Option<String>,
    /// Summary of the last successful scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan_result: Option<ScanResult>,
    /// The exclusion list that produced `lastScanResult`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_exclusion_list: Option<Vec<String>>,
    /// The `reconcile.fluxcd.io/requestedAt` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// Summary of one scan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanResult {
    /// Number of tags stored (after exclusions).
    pub tag_count: i64,
    /// When the scan finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_time: Option<Time>,
    /// The first ten tags in descending alphabetical order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latest_tags: Vec<String>,
    /// A stable hash of the stored tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}
