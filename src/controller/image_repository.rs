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
mod tests {
    use super::*;
    use crate::api::ImageRepositorySpec;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn meta(uid: &str, revision: &str, scanned: i64) -> EntryMeta {
        EntryMeta {
            uid: uid.into(),
            canonical_image_name: "docker.io/library/alpine".into(),
            revision: revision.into(),
            scan_time: at(scanned),
            tag_count: 1,
            spec_fingerprint: "fp".into(),
            pull_secrets: Vec::new(),
        }
    }

    fn ready_status(revision: &str, scanned: i64) -> ImageRepositoryStatus {
        let mut s = ImageRepositoryStatus {
            last_scan_result: Some(ScanResult {
                tag_count: 1,
                scan_time: Some(Time(at(scanned))),
                latest_tags: vec!["1.0".into()],
                revision: Some(revision.into()),
            }),
            ..Default::default()
        };
        conditions::set(
            &mut s.conditions,
            READY,
            true,
            SUCCEEDED,
            "ok",
            Some(1),
            at(scanned),
        );
        s
    }

    const MIN: Duration = Duration::from_secs(60);

    /// A repository with uid u1 and fingerprint fp, interval 1 min, looked at at t=1000.
    fn observed() -> Observed<'static> {
        Observed {
            uid: "u1",
            fingerprint: "fp",
            requested_at: None,
            interval: MIN,
            now: at(1000),
        }
    }

    #[test]
    fn the_scan_timeout_falls_back_to_the_interval() {
        let spec = |timeout: Option<&str>, interval: &str| ImageRepositorySpec {
            image: "alpine".into(),
            interval: interval.into(),
            timeout: timeout.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(
            scan_timeout(&spec(Some("30s"), "5m")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            scan_timeout(&spec(None, "5m")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            scan_timeout(&spec(Some("0s"), "5m")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(scan_timeout(&spec(None, "soon")), None);
    }

    #[test]
    fn a_repository_never_scanned_is_scanned_now() {
        let due = scan_due(&Default::default(), None, observed());
        assert_eq!(due, Due::Now("never scanned"));
    }

    #[test]
    fn a_recreated_object_does_not_inherit_the_old_tags() {
        let m = meta("old-uid", "sha256:a", 990);
        let due = scan_due(
            &ready_status("sha256:a", 990),
            Some(&m),
            Observed {
                uid: "new-uid",
                ..observed()
            },
        );
        assert_eq!(due, Due::Now("never scanned"));
    }

    #[test]
    fn a_recent_scan_waits_for_the_rest_of_the_interval() {
        let m = meta("u1", "sha256:a", 990);
        let due = scan_due(&ready_status("sha256:a", 990), Some(&m), observed());
        assert_eq!(due, Due::In(Duration::from_secs(50)));
    }

    #[test]
    fn an_elapsed_interval_scans() {
        let m = meta("u1", "sha256:a", 900);
        let due = scan_due(&ready_status("sha256:a", 900), Some(&m), observed());
        assert_eq!(due, Due::Now("the interval has elapsed"));
    }

    #[test]
    fn a_changed_fingerprint_scans_at_once() {
        let m = meta("u1", "sha256:a", 990);
        let due = scan_due(
            &ready_status("sha256:a", 990),
            Some(&m),
            Observed {
                fingerprint: "other",
                ..observed()
            },
        );
        assert!(matches!(due, Due::Now(_)));
    }

    #[test]
    fn a_new_requested_at_scans_at_once_and_an_handled_one_does_not() {
        let m = meta("u1", "sha256:a", 990);
        let mut status = ready_status("sha256:a", 990);
        let due = scan_due(
            &status,
            Some(&m),
            Observed {
                requested_at: Some("now"),
                ..observed()
            },
        );
        assert_eq!(due, Due::Now("reconcile requested"));
        status.last_handled_reconcile_at = Some("now".into());
        let due = scan_due(
            &status,
            Some(&m),
            Observed {
                requested_at: Some("now"),
                ..observed()
            },
        );
        assert!(matches!(due, Due::In(_)));
    }

    fn spec_with(f: impl FnOnce(&mut ImageRepositorySpec)) -> ImageRepositorySpec {
        let mut spec = ImageRepositorySpec {
            image: "ghcr.io/org/app".into(),
            interval: "1m".into(),
            ..Default::default()
        };
        f(&mut spec);
        spec
    }

    fn inputs(spec: &ImageRepositorySpec, default_sa: Option<&str>) -> ScanInputs {
        let image = ImageRef::parse(&spec.image).expect("image");
        ScanInputs::of(spec, &image, default_sa, &|name| format!("{name}-v1"))
    }

    fn regcred(version: &str) -> SecretVersion {
        SecretVersion {
            name: "regcred".into(),
            resource_version: version.into(),
        }
    }

    /// The entry a scan of `inputs` that read regcred at version 7 stores.
    fn scanned_with_regcred_7(inputs: &ScanInputs) -> EntryMeta {
        EntryMeta {
            spec_fingerprint: inputs.fingerprint(&[regcred("7")]),
            pull_secrets: vec![regcred("7")],
            ..meta("u1", "sha256:a", 990)
        }
    }

    #[test]
    fn a_changed_pull_secret_of_the_service_account_scans_at_once_from_the_entry_alone() {
        let spec = spec_with(|s| s.service_account_name = Some("puller".into()));
        let inputs = inputs(&spec, None);
        let entry = scanned_with_regcred_7(&inputs);
        let status = ready_status("sha256:a", 990);
        let decide = |cached: &str| {
            let cached = cached.to_string();
            let fingerprint = inputs.current_fingerprint(Some(&entry), &|_| cached.clone());
            scan_due(
                &status,
                Some(&entry),
                Observed {
                    fingerprint: &fingerprint,
                    ..observed()
                },
            )
        };
        assert_eq!(decide("7"), Due::In(Duration::from_secs(50)));
        assert!(matches!(decide("8"), Due::Now(_)), "{:?}", decide("8"));
        assert!(
            matches!(decide(""), Due::Now(_)),
            "a deleted pull secret changes what the scan finds too"
        );
    }

    #[test]
    fn pull_secrets_count_only_for_specs_that_read_a_service_account() {
        let via_default = inputs(&spec_with(|_| {}), Some("default"));
        assert!(via_default.reads_pull_secrets);
        assert_ne!(
            via_default.fingerprint(&[regcred("7")]),
            via_default.fingerprint(&[regcred("8")])
        );
        // secretRef and serviceAccountName make one keychain, as in Flux.
        let both = inputs(
            &spec_with(|s| {
                s.service_account_name = Some("puller".into());
                s.secret_ref = Some(api::LocalObjectReference {
                    name: "creds".into(),
                });
            }),
            Some("default"),
        );
        assert!(both.reads_pull_secrets);
        for spec in [
            spec_with(|s| {
                s.secret_ref = Some(api::LocalObjectReference {
                    name: "creds".into(),
                });
            }),
            spec_with(|s| {
                s.service_account_name = Some("puller".into());
                s.provider = Some(api::Provider::Aws);
            }),
            spec_with(|_| {}),
        ] {
            let i = inputs(&spec, None);
            assert!(!i.reads_pull_secrets, "{spec:?}");
            assert_eq!(i.fingerprint(&[regcred("7")]), i.fingerprint(&[]));
        }
    }

    /// The fingerprint as it was computed before pull secrets were recorded in the entry.
    fn fingerprint_before_pull_secrets(spec: &ImageRepositorySpec) -> String {
        let v = |name: Option<&api::LocalObjectReference>| {
            name.map_or(serde_json::Value::Null, |r| {
                json!([r.name, format!("{}-v1", r.name)])
            })
        };
        let material = json!({
            "image": ImageRef::parse(&spec.image).expect("image").canonical(),
            "exclusionList": spec.effective_exclusion_list(),
            "provider": spec.effective_provider().as_str(),
            "insecure": spec.insecure,
            "serviceAccountName": spec.service_account_name,
            "secretRef": v(spec.secret_ref.as_ref()),
            "certSecretRef": v(spec.cert_secret_ref.as_ref()),
            "proxySecretRef": v(spec.proxy_secret_ref.as_ref()),
        });
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(material.to_string().as_bytes()))
        )
    }

    #[test]
    fn entries_from_before_pull_secrets_were_recorded_rescan_only_if_they_read_some() {
        let named = spec_with(|s| {
            s.secret_ref = Some(api::LocalObjectReference {
                name: "creds".into(),
            });
            s.cert_secret_ref = Some(api::LocalObjectReference { name: "ca".into() });
        });
        let i = inputs(&named, None);
        assert_eq!(
            i.current_fingerprint(None, &|name| format!("{name}-v1")),
            fingerprint_before_pull_secrets(&named),
            "no rescan after the upgrade"
        );
        let via_account = spec_with(|s| s.service_account_name = Some("puller".into()));
        let old = EntryMeta {
            spec_fingerprint: fingerprint_before_pull_secrets(&via_account),
            ..meta("u1", "sha256:a", 990)
        };
        let i = inputs(&via_account, None);
        let fingerprint = i.current_fingerprint(Some(&old), &|name| format!("{name}-v1"));
        assert_ne!(
            fingerprint, old.spec_fingerprint,
            "one rescan records which pull secrets it read"
        );
    }

    #[test]
    fn a_secret_change_maps_to_the_repositories_that_name_it_or_last_read_it() {
        use kube::core::{ObjectMeta, PartialObjectMetaExt};
        use kube::runtime::{reflector, watcher};

        let (repositories, mut repo_writer) = reflector::store::<ImageRepository>();
        let mut named = ImageRepository::new(
            "names-it",
            spec_with(|s| {
                s.proxy_secret_ref = Some(api::LocalObjectReference {
                    name: "regcred".into(),
                })
            }),
        );
        named.metadata.namespace = Some("apps".into());
        repo_writer.apply_watcher_event(&watcher::Event::Apply(named));

        let (secrets, mut secret_writer) = reflector::store::<PartialObjectMetadata<Secret>>();
        let set_version = |writer: &mut reflector::store::Writer<_>, version: &str| {
            let secret = ObjectMeta {
                name: Some("regcred".into()),
                namespace: Some("apps".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            }
            .into_response_partial::<Secret>();
            writer.apply_watcher_event(&watcher::Event::Apply(secret));
        };
        set_version(&mut secret_writer, "7");

        let dir = tempfile::tempdir().expect("temp dir");
        let store = TagStore::open(dir.path()).expect("store");
        let put = |name: &str, namespace: &str, meta: EntryMeta| {
            let entry = Entry {
                meta: EntryMeta {
                    tag_count: 0,
                    ..meta
                },
                tags: Vec::new(),
            };
            store
                .put(&ObjectKey::new(namespace, name), &entry)
                .expect("put");
        };
        let read_7 = EntryMeta {
            pull_secrets: vec![regcred("7")],
            ..meta("u1", "sha256:a", 990)
        };
        put("read-it", "apps", read_7.clone());
        put("read-it-elsewhere", "other", read_7);
        put("read-none", "apps", meta("u2", "sha256:b", 990));

        let users = |secrets: &Store<PartialObjectMetadata<Secret>>| {
            let mut names: Vec<String> =
                repositories_using_secret(&repositories, secrets, &store, "apps", "regcred")
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
            names.sort();
            names
        };
        assert_eq!(
            users(&secrets),
            ["names-it"],
            "a relist at the version the scan read rescans nothing"
        );
        set_version(&mut secret_writer, "8");
        assert_eq!(users(&secrets), ["names-it", "read-it"]);
    }

    #[test]
    fn a_failed_last_attempt_scans_again() {
        let m = meta("u1", "sha256:a", 990);
        let mut status = ready_status("sha256:a", 990);
        conditions::set(
            &mut status.conditions,
            READY,
            false,
            "AuthenticationFailed",
            "401",
            Some(1),
            at(995),
        );
        let due = scan_due(&status, Some(&m), observed());
        assert_eq!(due, Due::Now("the last attempt failed"));
    }

    #[test]
    fn a_status_that_does_not_match_the_store_scans_again() {
        let m = meta("u1", "sha256:b", 990);
        let due = scan_due(&ready_status("sha256:a", 990), Some(&m), observed());
        assert_eq!(due, Due::Now("the status does not match the stored tags"));
    }

    #[test]
    fn referenced_secrets_lists_every_reference() {
        let repo = ImageRepository::new(
            "r",
            ImageRepositorySpec {
                image: "alpine".into(),
                interval: "1m".into(),
                secret_ref: Some(api::LocalObjectReference {
                    name: "creds".into(),
                }),
                proxy_secret_ref: Some(api::LocalObjectReference {
                    name: "proxy".into(),
                }),
                ..Default::default()
            },
        );
        let names: Vec<&str> = referenced_secrets(&repo).collect();
        assert_eq!(names, ["creds", "proxy"]);
    }
}
