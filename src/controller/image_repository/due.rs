//! When an ImageRepository is due for a scan, and what a scan depends on: the
//! fingerprint of its inputs (the scan-relevant spec and the versions of the Secrets it
//! reads), and which repositories a changed Secret concerns. Reads only the object, its
//! store entry and the watched caches.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::super::{conditions, credentials};
use crate::api::{ImageRepository, ImageRepositorySpec, ImageRepositoryStatus, READY};
use crate::reference::ImageRef;
use crate::store::{EntryMeta, SecretVersion, TagStore};

/// What the reconciler decided about scanning.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    Now(&'static str),
    In(Duration),
}

/// Why a scan is due: a routine rescan.
pub(super) const INTERVAL_ELAPSED: &str = "the interval has elapsed";
/// Why a scan is due: `reconcile.fluxcd.io/requestedAt` is new.
pub(super) const RECONCILE_REQUESTED: &str = "reconcile requested";
/// Why a scan is due: what the scan reads changed.
pub(super) const INPUTS_CHANGED: &str =
    "the scan-relevant spec, a Secret it names or a pull secret of its service account changed";

/// What the scan decision looks at besides the status and the store entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct Observed<'a> {
    pub(super) uid: &'a str,
    /// What the entry's fingerprint would be for a scan now
    /// ([`ScanInputs::current_fingerprint`]).
    pub(super) fingerprint: &'a str,
    pub(super) requested_at: Option<&'a str>,
    pub(super) interval: Duration,
    pub(super) now: jiff::Timestamp,
}

/// Decides whether a scan is due now, or how long until it is.
pub(super) fn scan_due(
    status: &ImageRepositoryStatus,
    meta: Option<&EntryMeta>,
    o: Observed<'_>,
) -> Due {
    let Observed {
        uid,
        fingerprint,
        requested_at,
        interval,
        now,
    } = o;
    let Some(meta) = meta.filter(|m| m.uid == uid) else {
        return Due::Now("never scanned");
    };
    if meta.spec_fingerprint != fingerprint {
        return Due::Now(INPUTS_CHANGED);
    }
    let Some(result) = &status.last_scan_result else {
        return Due::Now("the status has no scan result");
    };
    if result.revision.as_deref() != Some(meta.revision.as_str()) {
        return Due::Now("the status does not match the stored tags");
    }
    if let Some(at) = requested_at
        && status.last_handled_reconcile_at.as_deref() != Some(at)
    {
        return Due::Now(RECONCILE_REQUESTED);
    }
    if !conditions::is_true(&status.conditions, READY) {
        return Due::Now("the last attempt failed");
    }
    let last = result
        .scan_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(meta.scan_time);
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    if elapsed >= interval {
        Due::Now(INTERVAL_ELAPSED)
    } else {
        Due::In(interval - elapsed)
    }
}

/// What a scan's fingerprint covers besides the pull secrets it reads: everything in the
/// spec that changes what a scan returns (the image, the exclusion list, provider and
/// insecure, the credential references) and the resourceVersions the Secret cache has for
/// the Secrets the spec names, taken before the scan reads them.
#[derive(Debug)]
pub(super) struct ScanInputs {
    spec: serde_json::Map<String, serde_json::Value>,
    /// Whether the scan reads a service account's image pull secrets: then those it read,
    /// with their versions, are part of the fingerprint too.
    pub(super) reads_pull_secrets: bool,
}

impl ScanInputs {
    pub(super) fn of(
        spec: &ImageRepositorySpec,
        image: &ImageRef,
        default_service_account: Option<&str>,
        version_of: &dyn Fn(&str) -> String,
    ) -> ScanInputs {
        let secret = |name: Option<&str>| match name {
            None => serde_json::Value::Null,
            Some(name) => json!([name, version_of(name)]),
        };
        let material = json!({
            "image": image.canonical(),
            "exclusionList": spec.effective_exclusion_list(),
            "provider": spec.effective_provider().as_str(),
            "insecure": spec.insecure,
            "serviceAccountName": spec.service_account_name,
            "secretRef": secret(spec.secret_ref.as_ref().map(|r| r.name.as_str())),
            "certSecretRef": secret(spec.cert_secret_ref.as_ref().map(|r| r.name.as_str())),
            "proxySecretRef": secret(spec.proxy_secret_ref.as_ref().map(|r| r.name.as_str())),
        });
        ScanInputs {
            spec: match material {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
            reads_pull_secrets: credentials::pull_secret_account(spec, default_service_account)
                .is_some(),
        }
    }

    /// The fingerprint of a scan that read `pull_secrets` (ignored when the spec reads
    /// none). A spec without a service account's pull secrets has the fingerprint it had
    /// before pull secrets joined it, so such entries are not rescanned on upgrade.
    pub(super) fn fingerprint(&self, pull_secrets: &[SecretVersion]) -> String {
        let mut material = self.spec.clone();
        if self.reads_pull_secrets {
            let read: Vec<serde_json::Value> = pull_secrets
                .iter()
                .map(|p| json!([p.name, p.resource_version]))
                .collect();
            material.insert("pullSecrets".into(), read.into());
        }
        let digest = Sha256::digest(serde_json::Value::Object(material).to_string().as_bytes());
        format!("sha256:{}", hex::encode(digest))
    }

    /// The fingerprint a scan now would store: the pull secrets the last scan read (from
    /// its store entry), at the versions the cache has for them now. Equal to the entry's
    /// fingerprint exactly when nothing the scan depends on has changed since.
    pub(super) fn current_fingerprint(
        &self,
        last: Option<&EntryMeta>,
        version_of: &dyn Fn(&str) -> String,
    ) -> String {
        let now: Vec<SecretVersion> = last
            .map(|m| m.pull_secrets.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|p| SecretVersion {
                name: p.name.clone(),
                resource_version: version_of(&p.name),
            })
            .collect();
        self.fingerprint(&now)
    }
}

/// The repositories a change to Secret `namespace/name` concerns: those whose spec names
/// it, and those whose last scan read it as a pull secret at another version than the
/// cache has now (a relist replays unchanged Secrets: those trigger nothing; a deleted
/// one has no version). Reads only the caches and the store.
pub fn repositories_using_secret(
    repositories: &Store<ImageRepository>,
    secrets: &Store<PartialObjectMetadata<Secret>>,
    store: &TagStore,
    namespace: &str,
    name: &str,
) -> Vec<ObjectRef<ImageRepository>> {
    let mut refs: Vec<ObjectRef<ImageRepository>> = repositories
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(namespace) && referenced_secrets(r).any(|s| s == name)
        })
        .map(|r| ObjectRef::from_obj(&*r))
        .collect();
    let version = credentials::cached_version(secrets, namespace, name);
    refs.extend(
        store
            .keys_where(|key, meta| {
                key.namespace == namespace
                    && meta
                        .pull_secrets
                        .iter()
                        .any(|p| p.name == name && p.resource_version != version)
            })
            .into_iter()
            .map(|k| ObjectRef::new(&k.name).within(&k.namespace)),
    );
    refs
}

/// The names of the Secrets an ImageRepository references (for mapping Secret changes
/// back to the repositories that use them).
pub fn referenced_secrets(repo: &ImageRepository) -> impl Iterator<Item = &str> {
    [
        repo.spec.secret_ref.as_ref(),
        repo.spec.cert_secret_ref.as_ref(),
        repo.spec.proxy_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.as_str())
}
