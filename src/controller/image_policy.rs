//! The ImagePolicy reconciler: read the referenced repository's tags from the store, pick
//! the newest by the policy, reflect its digest when asked, and write status only when it
//! changes. Triggered by the policy's own changes, by a change of the repository (a new
//! scan revision, a new `accessFrom`) and by a change of namespace labels; never by
//! polling, except `digestReflectionPolicy: Always`, which re-checks every `spec.interval`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info};

use super::conditions;
use super::credentials;
use super::image_repository::{scan_timeout, write_status};
use super::{ReconcileContext, ReconcileError};
use crate::api::{
    self, ACCESS_DENIED, DEPENDENCY_NOT_READY, DigestReflectionPolicy, FAILURE, INVALID_POLICY,
    ImagePolicy, ImagePolicySpec, ImagePolicyStatus, ImageRef as LatestRef, ImageRepository, READY,
    SUCCEEDED, SortOrder,
};
use crate::policy::{Policy, PolicyError, Selector};
use crate::reference::ImageRef;
use crate::store::ObjectKey;

/// The kind label of metrics and logs.
pub const KIND: &str = "ImagePolicy";

/// Builds the selection rule of a policy's spec; the errors name the field and the fix.
pub fn selector(spec: &ImagePolicySpec) -> Result<Selector, String> {
    selector_inner(spec).map_err(|e| match e {
        Some(e) => format!("{}: {e}", e.field()),
        None => "spec.policy: give exactly one of semver, alphabetical or numerical".to_string(),
    })
}

fn selector_inner(spec: &ImagePolicySpec) -> Result<Selector, Option<PolicyError>> {
    let filter = spec.filter_tags.as_ref();
    let order = |o: Option<SortOrder>| match o.unwrap_or_default() {
        SortOrder::Asc => "asc",
        SortOrder::Desc => "desc",
    };
    let choice = &spec.policy;
    let policy = match (&choice.semver, &choice.alphabetical, &choice.numerical) {
        (Some(s), None, None) => Policy::semver(&s.range).map_err(Some)?,
        (None, Some(a), None) => Policy::alphabetical(order(a.order)).map_err(Some)?,
        (None, None, Some(n)) => Policy::numerical(order(n.order)).map_err(Some)?,
        _ => return Err(None),
    };
    Selector::from_spec(
        policy,
        filter.and_then(|f| f.pattern.as_deref()),
        filter.and_then(|f| f.extract.as_deref()),
    )
    .map_err(Some)
}

/// The ImagePolicies that reference `repo` (for mapping repository changes to policies).
pub fn policies_using(
    policies: &Store<ImagePolicy>,
    repo: &ImageRepository,
) -> Vec<ObjectRef<ImagePolicy>> {
    let repo_ns = repo.namespace().unwrap_or_default();
    let repo_name = repo.name_any();
    policies
        .state()
        .into_iter()
        .filter(|p| {
            let r = &p.spec.image_repository_ref;
            let ns = r
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| p.namespace())
                .unwrap_or_default();
            r.name == repo_name && ns == repo_ns
        })
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// The ImagePolicies in `namespace` that reference a repository in another namespace:
/// their access depends on the namespace's labels.
pub fn policies_in_namespace(
    policies: &Store<ImagePolicy>,
    namespace: &str,
) -> Vec<ObjectRef<ImagePolicy>> {
    policies
        .state()
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace)
                && p.spec
                    .image_repository_ref
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| !ns.is_empty() && ns != namespace)
        })
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(
    obj: Arc<ImagePolicy>,
    ctx: Arc<ReconcileContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<ImagePolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = apply(&obj, &ctx, &api).await;
    ctx.metrics
        .observe_reconcile(KIND, &namespace, &name, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.clear_failures(&ObjectRef::from_obj(&*obj).erase());
    }
    result
}

/// How a reconcile ended when it did not select a tag.
struct NotReady {
    reason: &'static str,
    message: String,
    stalled: bool,
    then: Action,
    error: Option<ReconcileError>,
    /// Leave a policy that has selected before as it is (nothing to say yet).
    quiet: bool,
}

async fn apply(
    obj: &ImagePolicy,
    ctx: &ReconcileContext,
    api: &Api<ImagePolicy>,
) -> Result<Action, ReconcileError> {
    if obj.spec.suspend {
        debug!(policy = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()), "suspended");
        let old = obj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        conditions::record_while_suspended(
            &old.conditions,
            &mut status.observed_generation,
            &mut status.last_handled_reconcile_at,
            obj.metadata.generation,
            obj.annotations()
                .get(api::RECONCILE_REQUESTED_AT_ANNOTATION)
                .map(String::as_str),
        );
        write_status(api, &obj.name_any(), &old, &status).await?;
        return Ok(Action::await_change());
    }
    match select(obj, ctx).await {
        Ok(selected) => succeed(obj, ctx, api, selected).await,
        Err(not_ready)
            if not_ready.quiet && obj.status.as_ref().is_some_and(|s| s.latest_ref.is_some()) =>
        {
            Ok(not_ready.then)
        }
        Err(not_ready) => {
            ctx.metrics.count_policy(not_ready.reason);
            record_failure(obj, ctx, api, &not_ready).await?;
            match not_ready.error {
                Some(e) => Err(e),
                None => Ok(not_ready.then),
            }
        }
    }
}

/// The outcome of a successful evaluation.
struct Selected {
    latest: LatestRef,
    repository: String,
    requeue: Option<Duration>,
}

async fn select(obj: &ImagePolicy, ctx: &ReconcileContext) -> Result<Selected, NotReady> {
    let namespace = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    let selector = selector(spec).map_err(|e| NotReady {
        reason: INVALID_POLICY,
        message: e,
        stalled: true,
        then: Action::await_change(),
        error: None,
        quiet: false,
    })?;
    let digest_policy = spec.effective_digest_reflection_policy();
    let interval = match (&spec.interval, digest_policy) {
        (Some(i), DigestReflectionPolicy::Always) => match api::parse_duration(i) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(NotReady {
                    reason: INVALID_POLICY,
                    message: format!(
                        "spec.interval: {i:?} is not a positive duration such as \"10m\""
                    ),
                    stalled: true,
                    then: Action::await_change(),
                    error: None,
                    quiet: false,
                });
            }
        },
        (None, DigestReflectionPolicy::Always) => {
            return Err(NotReady {
                reason: api::INTERVAL_NOT_CONFIGURED,
                message:
                    "spec.interval must be set when spec.digestReflectionPolicy is set to 'Always'"
                        .to_string(),
                stalled: true,
                then: Action::await_change(),
                error: None,
                quiet: false,
            });
        }
        _ => None,
    };

    let reference = &spec.image_repository_ref;
    let repo_ns = reference
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| namespace.clone());
    let repo_id = format!("{repo_ns}/{}", reference.name);
    let dependency_wait = Action::requeue(ctx.options.requeue_dependency);
    let Some(repo) = ctx
        .caches
        .repositories
        .get(&ObjectRef::new(&reference.name).within(&repo_ns))
    else {
        return Err(NotReady {
            reason: DEPENDENCY_NOT_READY,
            message: format!("referenced ImageRepository {repo_id} does not exist"),
            stalled: false,
            then: dependency_wait,
            error: None,
            quiet: false,
        });
    };

    if repo_ns != namespace {
        let labels = ctx
            .caches
            .namespaces
            .get(&ObjectRef::new(&namespace))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        if let Err(denied) = api::access_allowed(
            &repo,
            &namespace,
            &labels,
            ctx.options.no_cross_namespace_refs,
        ) {
            return Err(NotReady {
                reason: ACCESS_DENIED,
                message: denied.to_string(),
                stalled: false,
                then: Action::await_change(),
                error: None,
                quiet: false,
            });
        }
    }

    let key = ObjectKey::new(&repo_ns, &reference.name);
    let repo_uid = repo.uid().unwrap_or_default();
    let has_result = repo
        .status
        .as_ref()
        .is_some_and(|s| s.last_scan_result.is_some());
    let meta = ctx.store.meta(&key).filter(|m| m.uid == repo_uid);
    // Tags scanned for an image the repository no longer names (its spec.image changed
    // and the new scan has not landed yet) must not be named after the new image: a
    // policy that selected before keeps its status until the scan lands, as Flux's,
    // which reacts to new scan revisions only.
    let current_image = ImageRef::parse(&repo.spec.image)
        .ok()
        .map(|i| i.canonical());
    if let (Some(meta), Some(current)) = (&meta, &current_image)
        && &meta.canonical_image_name != current
    {
        return Err(NotReady {
            reason: DEPENDENCY_NOT_READY,
            message: format!(
                "ImageRepository {repo_id} has not been scanned for {} yet",
                repo.spec.image
            ),
            stalled: false,
            then: Action::await_change(),
            error: None,
            quiet: true,
        });
    }
    let (true, Some(_)) = (has_result, meta) else {
        return Err(NotReady {
            reason: DEPENDENCY_NOT_READY,
            message: format!("ImageRepository {repo_id} has not been scanned yet"),
            stalled: false,
            then: dependency_wait,
            error: None,
            quiet: false,
        });
    };
    let store = ctx.store.clone();
    let tags = tokio::task::spawn_blocking(move || store.tags(&key))
        .await
        .map_err(|e| NotReady {
            reason: FAILURE,
            message: format!("reading the tags of {repo_id}: {e}"),
            stalled: false,
            then: Action::await_change(),
            error: Some(ReconcileError::Join(e.to_string())),
            quiet: false,
        })?;
    let tags = match tags {
        Ok(Some(tags)) => tags,
        Ok(None) => {
            return Err(NotReady {
                reason: DEPENDENCY_NOT_READY,
                message: format!("ImageRepository {repo_id} has no stored tags yet"),
                stalled: false,
                then: dependency_wait,
                error: None,
                quiet: false,
            });
        }
        Err(e) => {
            return Err(NotReady {
                reason: FAILURE,
                message: format!("reading the tags of {repo_id}: {e}"),
                stalled: false,
                then: Action::await_change(),
                error: Some(ReconcileError::Store(e)),
                quiet: false,
            });
        }
    };
    let Some(selection) = selector.select(tags.iter().map(String::as_str)) else {
        return Err(NotReady {
            reason: FAILURE,
            message: format!(
                "no tag of ImageRepository {repo_id} ({} tags) matches the {} policy{}",
                tags.len(),
                selector.policy.kind(),
                if selector.filter.is_some() {
                    " after spec.filterTags"
                } else {
                    ""
                }
            ),
            stalled: false,
            // A new scan of the repository triggers a new evaluation.
            then: Action::await_change(),
            error: None,
            quiet: false,
        });
    };
    let tag = selection.tag.to_string();
    // `spec.image` exactly as written, as Flux writes it: image-automation-controller puts
    // `latestRef.name:tag` into Git, so `nginx` must stay `nginx`.
    let image_name = repo.spec.image.clone();

    let old = obj.status.as_ref().and_then(|s| s.latest_ref.clone());
    let digest = match digest_policy {
        DigestReflectionPolicy::Never => None,
        DigestReflectionPolicy::IfNotPresent => match old
            .as_ref()
            .filter(|o| o.name == image_name && o.tag == tag)
            .and_then(|o| o.digest.clone())
        {
            Some(d) => Some(d),
            None => Some(fetch_digest(ctx, &repo, &repo_ns, &tag).await?),
        },
        DigestReflectionPolicy::Always => Some(fetch_digest(ctx, &repo, &repo_ns, &tag).await?),
    };
    Ok(Selected {
        latest: LatestRef {
            name: image_name,
            tag,
            digest,
        },
        repository: repo_id,
        requeue: interval,
    })
}

/// The digest of `tag` from a manifest HEAD, with the repository's credentials, TLS and
/// proxy.
async fn fetch_digest(
    ctx: &ReconcileContext,
    repo: &ImageRepository,
    repo_ns: &str,
    tag: &str,
) -> Result<String, NotReady> {
    let failed = |reason: &'static str, message: String, error: ReconcileError| NotReady {
        reason,
        message,
        stalled: false,
        then: Action::await_change(),
        error: Some(error),
        quiet: false,
    };
    let image = ImageRef::parse(&repo.spec.image).map_err(|e| NotReady {
        reason: DEPENDENCY_NOT_READY,
        message: format!(
            "ImageRepository {repo_ns}/{}: spec.image: {e}",
            repo.name_any()
        ),
        stalled: false,
        then: Action::requeue(ctx.options.requeue_dependency),
        error: None,
        quiet: false,
    })?;
    let timeout = scan_timeout(&repo.spec).unwrap_or(Duration::from_secs(60));
    let request = credentials::scan_request(
        &ctx.client,
        &ctx.secrets,
        repo_ns,
        &repo.name_any(),
        &repo.spec,
        image,
        ctx.options.default_service_account.as_deref(),
        &ctx.options.cloud,
        timeout,
    )
    .await
    .map_err(|e| {
        let message = format!("digest of tag {tag:?}: {e}");
        failed(
            FAILURE,
            message.clone(),
            ReconcileError::Credentials(message),
        )
    })?;
    let (request, _) = request;
    ctx.scanner.digest(&request, tag).await.map_err(|e| {
        let reason = e.kind().condition_reason();
        failed(
            reason_static(reason),
            format!("digest of tag {tag:?}: {e}"),
            ReconcileError::Scan(e),
        )
    })
}

fn reason_static(reason: &str) -> &'static str {
    match reason {
        "AuthenticationFailed" => api::AUTHENTICATION_FAILED,
        "ReadOperationFailed" => api::READ_OPERATION_FAILED,
        _ => FAILURE,
    }
}

/// Flux's Ready message: `Latest image tag for NAME resolved to TAG[ with digest D]`, and
/// ` (previously NAME:TAG[@D])` while an observedPreviousRef differs from it.
fn ready_message(latest: &LatestRef, previous: Option<&LatestRef>) -> String {
    let mut message = format!(
        "Latest image tag for {} resolved to {}",
        latest.name, latest.tag
    );
    if let Some(d) = &latest.digest {
        message.push_str(&format!(" with digest {d}"));
    }
    if let Some(p) = previous.filter(|p| *p != latest) {
        message.push_str(&format!(" (previously {}:{}", p.name, p.tag));
        if let Some(d) = &p.digest {
            message.push_str(&format!("@{d}"));
        }
        message.push(')');
    }
    message
}

fn latest_image(r: &LatestRef) -> String {
    match &r.digest {
        Some(d) => format!("{}:{}@{}", r.name, r.tag, d),
        None => format!("{}:{}", r.name, r.tag),
    }
}

async fn succeed(
    obj: &ImagePolicy,
    ctx: &ReconcileContext,
    api: &Api<ImagePolicy>,
    selected: Selected,
) -> Result<Action, ReconcileError> {
    let old = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = jiff::Timestamp::now();
    let mut status = old.clone();
    let previous = old.latest_ref.clone();
    // As Flux: a new name, tag or digest moves latestRef, and the old one becomes
    // observedPreviousRef (a digest alone moving counts).
    let changed = previous.as_ref() != Some(&selected.latest);
    if changed {
        status.observed_previous_ref = previous.clone();
        status.observed_previous_image = previous.as_ref().map(latest_image);
        status.latest_image = Some(latest_image(&selected.latest));
        status.latest_ref = Some(selected.latest.clone());
    }
    status.observed_generation = generation;
    if let Some(at) = obj
        .annotations()
        .get(api::RECONCILE_REQUESTED_AT_ANNOTATION)
    {
        status.last_handled_reconcile_at = Some(at.clone());
    }
    let message = ready_message(&selected.latest, status.observed_previous_ref.as_ref());
    conditions::ready(&mut status.conditions, SUCCEEDED, &message, generation, now);
    write_status(api, &obj.name_any(), &old, &status).await?;
    ctx.metrics.count_policy("succeeded");

    // An event when the Ready message changes or the policy becomes Ready, as Flux.
    let old_ready = conditions::get(&old.conditions, READY);
    if old_ready.is_none_or(|c| c.status != "True" || c.message != message) {
        let revision = format!("{}:{}", selected.latest.name, selected.latest.tag);
        ctx.publish_revision(obj, EventType::Normal, SUCCEEDED, &message, Some(&revision))
            .await;
        info!(
            policy = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
            repository = %selected.repository,
            tag = %selected.latest.tag,
            "{message}"
        );
    }
    Ok(match selected.requeue {
        Some(interval) => Action::requeue(interval + ctx.jitter(interval)),
        None => Action::await_change(),
    })
}

async fn record_failure(
    obj: &ImagePolicy,
    ctx: &ReconcileContext,
    api: &Api<ImagePolicy>,
    not_ready: &NotReady,
) -> Result<(), ReconcileError> {
    let old: ImagePolicyStatus = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let now = jiff::Timestamp::now();
    let mut status = old.clone();
    let NotReady {
        reason,
        message,
        stalled,
        ..
    } = not_ready;
    if *stalled {
        conditions::stalled(&mut status.conditions, reason, message, generation, now);
        status.observed_generation = generation;
    } else {
        conditions::not_ready(&mut status.conditions, reason, message, generation, now);
        // Retried: Reconciling=True with ProgressingWithRetry, as Flux says it.
        conditions::set(
            &mut status.conditions,
            api::RECONCILING,
            true,
            api::PROGRESSING_WITH_RETRY,
            message,
            generation,
            now,
        );
    }
    if let Some(at) = obj
        .annotations()
        .get(api::RECONCILE_REQUESTED_AT_ANNOTATION)
    {
        status.last_handled_reconcile_at = Some(at.clone());
    }
    write_status(api, &obj.name_any(), &old, &status).await?;
    let previous = conditions::get(&old.conditions, READY);
    if previous.is_none_or(|c| c.status == "True" || c.reason != *reason) {
        ctx.publish(obj, EventType::Warning, reason, message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
