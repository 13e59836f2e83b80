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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
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
use crate::store::{Entry, EntryMeta, ObjectKey};
use due::{Due, INPUTS_CHANGED, Observed, RECONCILE_REQUESTED, ScanInputs, scan_due};
pub use due::{referenced_secrets, repositories_using_secret};

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

mod due;
#[cfg(test)]
mod tests;
