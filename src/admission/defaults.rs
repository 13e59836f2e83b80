//! The mutating webhook's patch: only what the CRD schema cannot default, because it
//! follows another field (see [`crate::api::defaults`]). The API server has applied the
//! schema's defaults before this webhook sees the object.

use super::{Kind, spec};
use crate::api::ImageRepositorySpec;
use crate::api::defaults::timeout_for_interval;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::Value;

/// The defaulting patch for `spec` (None when the object has none) of an object of
/// `kind`: RFC 6902 operations that only add absent fields, empty for an object already
/// defaulted. A spec that does not read as the typed spec is left as it is: the schema
/// check and the validating webhook that come next report why.
pub fn patch(kind: Kind, spec: Option<Value>) -> Patch {
    let mut ops = Vec::new();
    match kind {
        Kind::ImageRepository => {
            if let Ok(spec) = spec::read::<ImageRepositorySpec>(kind, spec) {
                image_repository(&spec, &mut ops);
            }
        }
        Kind::ImagePolicy => {}
    }
    Patch(ops)
}

/// `spec.timeout` := the interval (see [`timeout_for_interval`]).
fn image_repository(spec: &ImageRepositorySpec, ops: &mut Vec<PatchOperation>) {
    if spec.timeout.is_none()
        && let Some(timeout) = timeout_for_interval(&spec.interval)
    {
        ops.push(add(&["spec", "timeout"], Value::String(timeout)));
    }
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(spec: Value, kind: Kind) -> Value {
        let mut object = json!({ "spec": spec });
        let ops = patch(kind, object.get("spec").cloned()).0;
        json_patch::patch(&mut object, &ops).unwrap();
        object["spec"].take()
    }

    #[test]
    fn defaults_the_timeout_to_the_interval_in_minutes_when_it_has_hours() {
        for (interval, timeout) in [("10m", "10m"), ("2h", "120m")] {
            let spec = apply(
                json!({"image": "a", "interval": interval}),
                Kind::ImageRepository,
            );
            assert_eq!(spec["timeout"], timeout);
        }
    }

    #[test]
    fn defaulting_never_changes_what_the_user_set_and_is_idempotent() {
        let spec = json!({"image": "a", "interval": "10m", "timeout": "30s"});
        assert!(patch(Kind::ImageRepository, Some(spec)).0.is_empty());
        let once = apply(
            json!({"image": "a", "interval": "10m"}),
            Kind::ImageRepository,
        );
        assert!(patch(Kind::ImageRepository, Some(once)).0.is_empty());
    }

    #[test]
    fn leaves_alone_what_it_cannot_read_and_image_policies() {
        for spec in [
            json!({"image": "a", "interval": "ten minutes"}),
            json!({"image": "a", "interval": 10}),
            json!({"image": "a"}),
        ] {
            assert!(
                patch(Kind::ImageRepository, Some(spec.clone()))
                    .0
                    .is_empty(),
                "{spec}"
            );
        }
        assert!(patch(Kind::ImageRepository, None).0.is_empty());
        let policy = json!({"imageRepositoryRef": {"name": "a"}, "policy": {"numerical": {}}});
        assert!(patch(Kind::ImagePolicy, Some(policy)).0.is_empty());
    }
}
