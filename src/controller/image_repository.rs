//! The ImageRepository reconciler: decide whether a scan is due, scan with the shared
//! scanner, keep the tags in the store, and write status only when it changes.
//!
//! A scan is due when the object was never scanned (no store entry for its uid), a
//! scan-relevant part of the spec or a Secret the scan reads changed (the entry's
//! fingerprint differs), the `reconcile.fluxcd.io/requestedAt` annotation is new, the last
//! attempt failed, or `spec.interval` has passed since `lastScanResult.scanTime`.
//! Otherwise the object is requeued for the time left, plus a small jitter, and nothing is
//! written: after a restart, objects scanned recently are not scanned again.
//!
//! The Secrets a scan reads are those the spec names and, through `serviceAccountName`
//! (or `--default-service-account`), the service account's image pull secrets, which the
//! spec does not name: the store entry records those ([`EntryMeta::pull_secrets`]), so
//! the decision reads only the entry and the watched Secret cache, one way:
//!
//! ```text
//! Secret watch ──> cache ──> mapper (cache + store: who uses it?) ──> reconcile
//! reconcile: fingerprint(spec, cached versions of its Secrets) == entry's? ──> scan
//! scan ──> store entry (tags, fingerprint, pull secrets read) ──> status
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta as PartialObjectMetadata;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::conditions;
use super::credentials::{self, CredentialsError};
use super::{ReconcileContext, ReconcileError};
use crate::api::{
    self, AUTHENTICATION_FAILED, FAILURE, IMAGE_URL_INVALID, ImageRepository, ImageRepositorySpec,
    ImageRepositoryStatus, PROGRESSING_WITH_RETRY, READY, RECONCILING, STALLED, SUCCEEDED,
    ScanResult,
};
use crate::reference::ImageRef;
use crate::scanner::ScanOutcome;
use crate::store::{Entry, EntryMeta, ObjectKey, SecretVersion, TagStore};
use kube::runtime::reflector::Store;

/// The kind label of metrics and logs.
pub const KIND: &str = "ImageRepository";

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(
    obj: Arc<ImageRepository>,
    ctx: Arc<ReconcileContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<ImageRepository> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = obj.metadata.deletion_timestamp.is_some();
    let result = finalizer(&api, api::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => apply(obj, &ctx, &api).await,
            Finalizer::Cleanup(obj) => cleanup(obj, &ctx).await,
        }
    })
    .await
    .map_err(ReconcileError::from_finalizer);
    if deleting && result.is_ok() {
        ctx.metrics.forget_reconcile(KIND, &namespace, &name);
    } else {
        ctx.metrics
            .observe_reconcile(KIND, &namespace, &name, started.elapsed().as_secs_f64());
    }
    let key = ObjectRef::<ImageRepository>::new(&name).within(&namespace);
    if result.is_ok() {
        ctx.clear_failures(&key.erase());
    }
    result
}

/// The object is being deleted: its tags leave the store.
async fn cleanup(
    obj: Arc<ImageRepository>,
    ctx: &ReconcileContext,
) -> Result<Action, ReconcileError> {
    let key = store_key(&obj);
    let store = ctx.store.clone();
    let k = key.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(&k))
        .await
        .map_err(|e| ReconcileError::Join(e.to_string()))??;
    ctx.metrics.forget_repository(&key.namespace, &key.name);
    ctx.scanner
        .forget_object(&crate::scanner::cloud::InvolvedObject {
            kind: KIND.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
    info!(repository = %key, removed, "ImageRepository deleted; its tags left the store");
    Ok(Action::await_change())
}

/// The time one registry operation may take: `spec.timeout`, or `spec.interval` when the
/// timeout is absent or unusable (the seed's default); `None` when neither parses.
pub(super) fn scan_timeout(spec: &ImageRepositorySpec) -> Option<Duration> {
    let positive = |s: &str| api::parse_duration(s).ok().filter(|d| !d.is_zero());
    spec.timeout
        .as_deref()
        .and_then(positive)
        .or_else(|| positive(&spec.interval))
}

/// What the reconciler decided about scanning.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Now(&'static str),
    In(Duration),
}

async fn apply(
    obj: Arc<ImageRepository>,
    ctx: &ReconcileContext,
    api: &Api<ImageRepository>,
) -> Result<Action, ReconcileError> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let spec = &obj.spec;
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = jiff::Timestamp::now();

    if spec.suspend {
        debug!(repository = %format!("{namespace}/{name}"), "suspended; not scanning");
        let mut status = old.clone();
        conditions::record_while_suspended(
            &old.conditions,
            &mut status.observed_generation,
            &mut status.last_handled_reconcile_at,
            generation,
            obj.annotations()
                .get(api::RECONCILE_REQUESTED_AT_ANNOTATION)
                .map(String::as_str),
        );
        write_status(api, &name, &old, &status).await?;
        return Ok(Action::await_change());
    }

    let interval = match api::parse_duration(&spec.interval) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            let message = format!(
                "spec.interval: {:?} is not a positive duration such as \"5m\" or \"1h\"",
                spec.interval
            );
            return stall(ctx, api, &obj, FAILURE, &message, now).await;
        }
    };
    let timeout = scan_timeout(spec).unwrap_or(interval);

    let image = match ImageRef::parse(&spec.image) {
        Ok(image) => image,
        Err(e) => {
            let message = format!("spec.image: {e}");
            return stall(ctx, api, &obj, IMAGE_URL_INVALID, &message, now).await;
        }
    };

    let key = store_key(&obj);
    let version_of = |name: &str| credentials::cached_version(&ctx.secrets, &namespace, name);
    let inputs = ScanInputs::of(
        spec,
        &image,
        ctx.options.default_service_account.as_deref(),
        &version_of,
    );
    let meta = ctx.store.meta(&key);
    let fingerprint = inputs.current_fingerprint(meta.as_ref(), &version_of);
    let requested_at = obj
        .annotations()
        .get(api::RECONCILE_REQUESTED_AT_ANNOTATION)
        .cloned();
    let uid = obj.uid().unwrap_or_default();
    let due = scan_due(
        &old,
        meta.as_ref(),
        Observed {
            uid: &uid,
            fingerprint: &fingerprint,
            requested_at: requested_at.as_deref(),
            interval,
            now,
        },
    );

    let wait = match due {
        Due::In(wait) => wait,
        Due::Now(why) => {
            debug!(repository = %key, why, "scanning");
            // A scan someone asked for (a requested reconcile, a changed spec or Secret)
            // shows Reconciling=True while it runs, as Flux's does. Routine rescans at the
            // interval, first scans and retries do not: the extra write would double the
            // API writes of every unchanged rescan and of a thousand new objects, and a
            // retry already says Reconciling=True (ProgressingWithRetry).
            let obj = if !matches!(why, RECONCILE_REQUESTED | INPUTS_CHANGED) {
                obj
            } else {
                let mut status = old.clone();
                conditions::progressing(
                    &mut status.conditions,
                    &format!("scanning: {why}"),
                    generation,
                    now,
                );
                write_status(api, &name, &old, &status).await?;
                let mut obj = (*obj).clone();
                obj.status = Some(status);
                Arc::new(obj)
            };
            return scan(
                ctx,
                api,
                &obj,
                image,
                key,
                inputs,
                requested_at,
                interval,
                timeout,
            )
            .await;
        }
    };

    // Nothing to scan. Only a new generation that changed nothing scan-relevant (e.g.
    // spec.interval) needs a status write, to record the generation as observed.
    let mut status = old.clone();
    if status.observed_generation != generation && conditions::is_true(&old.conditions, READY) {
        status.observed_generation = generation;
        if let Some(ready) = conditions::get(&old.conditions, READY).cloned() {
            conditions::set(
                &mut status.conditions,
                READY,
                true,
                &ready.reason,
                &ready.message,
                generation,
                now,
            );
        }
    }
    write_status(api, &name, &old, &status).await?;
    Ok(Action::requeue(wait + ctx.jitter(interval)))
}

/// Why a scan is due: a routine rescan.
const INTERVAL_ELAPSED: &str = "the interval has elapsed";
/// Why a scan is due: `reconcile.fluxcd.io/requestedAt` is new.
const RECONCILE_REQUESTED: &str = "reconcile requested";
/// Why a scan is due: what the scan reads changed.
const INPUTS_CHANGED: &str =
    "the scan-relevant spec, a Secret it names or a pull secret of its service account changed";

/// What the scan decision looks at besides the status and the store entry.
#[derive(Clone, Copy, Debug)]
struct Observed<'a> {
    uid: &'a str,
    /// What the entry's fingerprint would be for a scan now
    /// ([`ScanInputs::current_fingerprint`]).
    fingerprint: &'a str,
    requested_at: Option<&'a str>,
    interval: Duration,
    now: jiff::Timestamp,
}

/// Decides whether a scan is due now, or how long until it is.
fn scan_due(status: &ImageRepositoryStatus, meta: Option<&EntryMeta>, o: Observed<'_>) -> Due {
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

#[allow(clippy::too_many_arguments)]
async fn scan(
    ctx: &ReconcileContext,
    api: &Api<ImageRepository>,
    obj: &ImageRepository,
    image: ImageRef,
    key: ObjectKey,
    inputs: ScanInputs,
    requested_at: Option<String>,
    interval: Duration,
    timeout: Duration,
) -> Result<Action, ReconcileError> {
    let namespace = key.namespace.clone();
    let old = obj.status.clone().unwrap_or_default();
    let request = credentials::scan_request(
        &ctx.client,
        &ctx.secrets,
        &namespace,
        &key.name,
        &obj.spec,
        image,
        ctx.options.default_service_account.as_deref(),
        &ctx.options.cloud,
        timeout,
    )
    .await;
    let (request, pull_secrets) = match request {
        Ok(read) => read,
        Err(e) => {
            let reason = if e.is_configuration() {
                AUTHENTICATION_FAILED
            } else {
                FAILURE
            };
            ctx.metrics.count_scan("credentials_error");
            fail(
                ctx,
                api,
                obj,
                reason,
                &e.to_string(),
                requested_at.as_deref(),
            )
            .await?;
            return Err(match e {
                CredentialsError::Api { source, .. } => ReconcileError::Kube(source),
                other => ReconcileError::Credentials(other.to_string()),
            });
        }
    };
    let outcome = match ctx.scanner.scan(&request).await {
        Ok(o) => o,
        Err(e) => {
            ctx.metrics.count_scan(e.kind().as_str());
            let reason = e.kind().condition_reason();
            fail(
                ctx,
                api,
                obj,
                reason,
                &e.to_string(),
                requested_at.as_deref(),
            )
            .await?;
            return Err(ReconcileError::Scan(e));
        }
    };
    ctx.metrics.count_scan("succeeded");
    ctx.metrics
        .set_repository_tags(&key.namespace, &key.name, outcome.tag_count);

    let entry = Entry {
        meta: EntryMeta {
            uid: obj.uid().unwrap_or_default(),
            canonical_image_name: outcome.canonical_image_name.clone(),
            revision: outcome.revision.clone(),
            scan_time: outcome.scan_time,
            tag_count: outcome.tags.len() as u64,
            spec_fingerprint: inputs.fingerprint(&pull_secrets),
            pull_secrets,
        },
        tags: outcome.tags.clone(),
    };
    let store = ctx.store.clone();
    let k = key.clone();
    let stored = tokio::task::spawn_blocking(move || store.put(&k, &entry))
        .await
        .map_err(|e| ReconcileError::Join(e.to_string()))?;
    if let Err(e) = stored {
        let message = format!("storing the scanned tags failed: {e}");
        fail(ctx, api, obj, FAILURE, &message, requested_at.as_deref()).await?;
        return Err(ReconcileError::Store(e));
    }

    let status = succeeded_status(obj, &old, &outcome, requested_at);
    write_status(api, &key.name, &old, &status).await?;

    let previous = conditions::get(&old.conditions, READY);
    let old_revision = old
        .last_scan_result
        .as_ref()
        .and_then(|r| r.revision.as_deref());
    let message = success_message(&outcome);
    let newsworthy = match previous {
        None => true,
        Some(c) if c.status != "True" => true,
        Some(_) => old_revision != Some(outcome.revision.as_str()),
    };
    if newsworthy {
        ctx.publish_revision(
            obj,
            EventType::Normal,
            SUCCEEDED,
            &message,
            Some(&outcome.revision),
        )
        .await;
    }
    info!(repository = %key, tags = outcome.tag_count, revision = %outcome.revision, "scan succeeded");
    Ok(Action::requeue(interval + ctx.jitter(interval)))
}

/// Flux's Ready message (and event) of a successful scan.
fn success_message(outcome: &ScanOutcome) -> String {
    format!(
        "successful scan: found {} tags with checksum {}",
        outcome.tag_count, outcome.revision
    )
}

fn succeeded_status(
    obj: &ImageRepository,
    old: &ImageRepositoryStatus,
    outcome: &ScanOutcome,
    requested_at: Option<String>,
) -> ImageRepositoryStatus {
    let generation = obj.metadata.generation;
    let mut status = old.clone();
    status.canonical_image_name = Some(outcome.canonical_image_name.clone());
    status.last_scan_result = Some(ScanResult {
        tag_count: i64::try_from(outcome.tag_count).unwrap_or(i64::MAX),
        scan_time: Some(Time(outcome.scan_time)),
        latest_tags: outcome.latest_tags.clone(),
        revision: Some(outcome.revision.clone()),
    });
    status.observed_exclusion_list = Some(obj.spec.effective_exclusion_list());
    status.observed_generation = generation;
    if requested_at.is_some() {
        status.last_handled_reconcile_at = requested_at;
    }
    conditions::ready(
        &mut status.conditions,
        SUCCEEDED,
        &success_message(outcome),
        generation,
        outcome.scan_time,
    );
    status
}

/// Records a failed attempt that will be retried with backoff: Ready=False with the
/// reason, Reconciling=True (ProgressingWithRetry). A Warning event only on the way into
/// failure (or into another reason), not on every retry.
async fn fail(
    ctx: &ReconcileContext,
    api: &Api<ImageRepository>,
    obj: &ImageRepository,
    reason: &str,
    message: &str,
    requested_at: Option<&str>,
) -> Result<(), ReconcileError> {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = jiff::Timestamp::now();
    let mut status = old.clone();
    conditions::not_ready(&mut status.conditions, reason, message, generation, now);
    conditions::set(
        &mut status.conditions,
        RECONCILING,
        true,
        PROGRESSING_WITH_RETRY,
        message,
        generation,
        now,
    );
    if let Some(at) = requested_at {
        status.last_handled_reconcile_at = Some(at.to_string());
    }
    write_status(api, &obj.name_any(), &old, &status).await?;
    let previous = conditions::get(&old.conditions, READY);
    let transition = previous.is_none_or(|c| c.status == "True" || c.reason != reason);
    if transition {
        ctx.publish(obj, EventType::Warning, reason, message).await;
    }
    warn!(
        repository = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        reason, error = message, "scan failed; retrying with backoff"
    );
    Ok(())
}

/// The spec can never work as written: Stalled=True and Ready=False with the reason, no
/// retry until the spec changes.
async fn stall(
    ctx: &ReconcileContext,
    api: &Api<ImageRepository>,
    obj: &ImageRepository,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Result<Action, ReconcileError> {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let mut status = old.clone();
    conditions::stalled(&mut status.conditions, reason, message, generation, now);
    status.observed_generation = generation;
    status.observed_exclusion_list = Some(obj.spec.effective_exclusion_list());
    let changed = write_status(api, &obj.name_any(), &old, &status).await?;
    if changed && !conditions::is_true(&old.conditions, STALLED) {
        ctx.publish(obj, EventType::Warning, reason, message).await;
    }
    ctx.metrics.count_scan("stalled");
    Ok(Action::await_change())
}

/// Writes `status` with a merge patch on the status subresource when it differs from
/// `old`; fields present before and absent now are removed explicitly. Returns whether a
/// write happened.
pub(super) async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    old: &impl serde::Serialize,
    status: &impl serde::Serialize,
) -> Result<bool, ReconcileError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let old = serde_json::to_value(old).map_err(ReconcileError::Encode)?;
    let mut new = serde_json::to_value(status).map_err(ReconcileError::Encode)?;
    if old == new {
        return Ok(false);
    }
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) {
        for k in old.keys() {
            if !new.contains_key(k) {
                new.insert(k.clone(), serde_json::Value::Null);
            }
        }
    }
    let patch = json!({ "status": new });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(ReconcileError::Kube)?;
    Ok(true)
}

fn store_key(obj: &ImageRepository) -> ObjectKey {
    ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What a scan's fingerprint covers besides the pull secrets it reads: everything in the
/// spec that changes what a scan returns (the image, the exclusion list, provider and
/// insecure, the credential references) and the resourceVersions the Secret cache has for
/// the Secrets the spec names, taken before the scan reads them.
#[derive(Debug)]
struct ScanInputs {
    spec: serde_json::Map<String, serde_json::Value>,
    /// Whether the scan reads a service account's image pull secrets: then those it read,
    /// with their versions, are part of the fingerprint too.
    reads_pull_secrets: bool,
}

impl ScanInputs {
    fn of(
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
    fn fingerprint(&self, pull_secrets: &[SecretVersion]) -> String {
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
    fn current_fingerprint(
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

#[cfg(test)]
mod tests;
