//! The mutating webhook's patch: only what the CRD schema cannot default, because it
//! follows another field (see [`crate::api::defaults`]). The API server has applied the
//! schema's defaults before this webhook sees the object.
//!
//! `spec.timeout` follows `spec.interval` for as long as the user has not written a timeout
//! of their own. The webhook marks a timeout it wrote with [`DEFAULTED_TIMEOUT_ANNOTATION`]
//! (its value: the timeout written), so that on a later change of the interval (by
//! client-side apply, server-side apply, edit or patch: each leaves the stored timeout in
//! place) the timeout moves with it. A timeout is the user's once it differs from the
//! marked one, or once the user's own configuration names it (kubectl's last-applied copy,
//! or a server-side apply manager's field set): the mark is then dropped and the timeout
//! is never touched again.

use super::{Kind, spec};
use crate::api::ImageRepositorySpec;
use crate::api::defaults::timeout_for_interval;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use kube::core::ObjectMeta;
use serde_json::Value;

/// Marks a `spec.timeout` the webhook wrote; its value is that timeout.
pub const DEFAULTED_TIMEOUT_ANNOTATION: &str = "image-reflector/defaulted-timeout";

/// kubectl's copy of the configuration last applied client-side.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The defaulting patch for an object of `kind` with `metadata` and `spec` (None when it
/// has none): RFC 6902 operations, empty for an object already defaulted. A spec that does
/// not read as the typed spec is left as it is: the schema check and the validating
/// webhook that come next report why.
pub fn patch(kind: Kind, metadata: &ObjectMeta, spec: Option<Value>) -> Patch {
    let mut ops = Vec::new();
    match kind {
        Kind::ImageRepository => {
            if let Ok(spec) = spec::read::<ImageRepositorySpec>(kind, spec) {
                image_repository(metadata, &spec, &mut ops);
            }
        }
        Kind::ImagePolicy => {}
    }
    Patch(ops)
}

/// `spec.timeout` := the interval (see [`timeout_for_interval`]), unless the user wrote one.
fn image_repository(meta: &ObjectMeta, spec: &ImageRepositorySpec, ops: &mut Vec<PatchOperation>) {
    let mark = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULTED_TIMEOUT_ANNOTATION));
    let following = timeout_for_interval(&spec.interval);
    match (&spec.timeout, following) {
        (None, Some(following)) => {
            ops.push(add(&["spec", "timeout"], following.clone()));
            set_mark(meta, mark, following, ops);
        }
        (Some(timeout), following)
            if mark == Some(timeout) && !timeout_configured_by_user(meta) =>
        {
            // Ours: follow the interval (an invalid interval leaves it; validation says why).
            if let Some(following) = following
                && following != *timeout
            {
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer(&["spec", "timeout"]),
                    value: Value::String(following.clone()),
                }));
                set_mark(meta, mark, following, ops);
            }
        }
        (Some(_), _) if mark.is_some() => {
            // The user's now: forget that it was ever ours.
            ops.push(PatchOperation::Remove(RemoveOperation {
                path: pointer(&["metadata", "annotations", DEFAULTED_TIMEOUT_ANNOTATION]),
            }));
        }
        _ => {}
    }
}

/// Adds or replaces the mark with `timeout`.
fn set_mark(
    meta: &ObjectMeta,
    mark: Option<&String>,
    timeout: String,
    ops: &mut Vec<PatchOperation>,
) {
    if mark == Some(&timeout) {
        return;
    }
    if meta.annotations.is_none() {
        ops.push(add(
            &["metadata", "annotations"],
            Value::Object(Default::default()),
        ));
    }
    ops.push(add(
        &["metadata", "annotations", DEFAULTED_TIMEOUT_ANNOTATION],
        timeout,
    ));
}

/// Whether the user's own configuration names `spec.timeout`: kubectl's last-applied
/// copy (client-side apply), or the field set of a server-side apply manager.
fn timeout_configured_by_user(meta: &ObjectMeta) -> bool {
    let last_applied = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .is_some_and(|applied| applied.pointer("/spec/timeout").is_some());
    let applied_server_side = meta.managed_fields.iter().flatten().any(|entry| {
        entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:timeout").is_some())
    });
    last_applied || applied_server_side
}

fn pointer(path: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(path.iter().copied())
}

fn add(path: &[&str], value: impl Into<Value>) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value: value.into(),
    })
}

#[cfg(test)]
mod tests;
