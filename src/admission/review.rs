//! AdmissionReview (`admission.k8s.io/v1`) in and out: the review read with kube's
//! admission types, dispatched on `request.kind` to the defaulting or the rules, and
//! answered with a patch, a denial or an admission.

use super::report::Verdict;
use super::{Admission, Kind, defaults, validate};
use base64::Engine;
use kube::core::admission::{
    AdmissionRequest, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::{DynamicObject, ObjectMeta, Status};
use serde::Serialize;

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// `/mutate`: defaulting.
    Mutate,
    /// `/validate`: validation.
    Validate,
}

impl Webhook {
    /// `mutate` or `validate`, as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Mutate => "mutate",
            Webhook::Validate => "validate",
        }
    }
}

/// Why a body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    /// Not JSON, or not shaped like an AdmissionReview.
    #[error("the body is not a valid AdmissionReview: {0}")]
    Json(#[from] serde_json::Error),
    /// `apiVersion`/`kind` are not `admission.k8s.io/v1`/`AdmissionReview`.
    #[error(
        "expected apiVersion \"admission.k8s.io/v1\" and kind \"AdmissionReview\", got apiVersion {api_version:?} and kind {kind:?}"
    )]
    WrongType {
        /// The body's apiVersion.
        api_version: String,
        /// The body's kind.
        kind: String,
    },
    /// No `request`.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// CREATE/UPDATE without `request.object`.
    #[error("request.object is missing for operation {0}")]
    MissingObject(&'static str),
}

/// An answer, with the labels the metrics need.
#[derive(Debug)]
pub struct Outcome {
    /// The AdmissionReview JSON to send back.
    pub body: Vec<u8>,
    /// The object kind, if it is one of ours.
    pub kind: Option<Kind>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'static str,
    /// `allowed`, `patched` or `denied`.
    pub result: &'static str,
}

/// Answers one AdmissionReview body sent to `webhook`.
pub fn handle(body: &[u8], webhook: Webhook, admission: &Admission) -> Result<Outcome, BadRequest> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != META_KIND {
        return Err(BadRequest::WrongType {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| BadRequest::MissingRequest)?;
    let operation = operation_name(&request.operation);
    let outcome = |kind, response: Response<'_>, result| Outcome {
        body: response.into_body(),
        kind,
        operation,
        result,
    };
    let uid = request.uid.as_str();

    // A kind the webhook configuration should not have sent (its rules are too wide):
    // let it through untouched rather than block it.
    let Some(kind) = Kind::from_group_kind(&request.kind.group, &request.kind.kind) else {
        return Ok(outcome(None, Response::allowed(uid), "allowed"));
    };
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(outcome(Some(kind), Response::allowed(uid), "allowed"));
    }
    let object = request
        .object
        .as_ref()
        .ok_or(BadRequest::MissingObject(operation))?;
    let spec = object.data.get("spec").cloned();

    match webhook {
        Webhook::Mutate => {
            let patch = defaults::patch(kind, &object.metadata, spec);
            if patch.0.is_empty() {
                return Ok(outcome(Some(kind), Response::allowed(uid), "allowed"));
            }
            Ok(outcome(
                Some(kind),
                Response::patched(uid, &patch)?,
                "patched",
            ))
        }
        Webhook::Validate => {
            // An update that leaves the spec alone (finalizers, labels, deletion) is never
            // refused: objects stored before a rule existed must stay manageable.
            if request.operation == Operation::Update {
                let deleting = object.metadata.deletion_timestamp.is_some();
                let old_spec = request.old_object.as_ref().and_then(|o| o.data.get("spec"));
                let same_spec = old_spec.is_some() && old_spec == spec.as_ref();
                if deleting || same_spec {
                    return Ok(outcome(Some(kind), Response::allowed(uid), "allowed"));
                }
            }
            let namespace = request.namespace.as_deref().unwrap_or_default();
            let verdict = validate::verdict(kind, namespace, spec, admission);
            let result = if verdict.allowed() {
                "allowed"
            } else {
                "denied"
            };
            let name = name_of(&request.name, &object.metadata);
            let response = Response::verdict(uid, kind, &name, verdict);
            Ok(outcome(Some(kind), response, result))
        }
    }
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The object's name for a denial: the request's, else the metadata's name or
/// generateName (a CREATE with generateName has no name yet).
fn name_of(request_name: &str, metadata: &ObjectMeta) -> String {
    [
        Some(request_name),
        metadata.name.as_deref(),
        metadata.generate_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find(|name| !name.is_empty())
    .unwrap_or_default()
    .to_string()
}

/// The answer's `response`. kube-core 5's `AdmissionResponse` is not used to write it: it
/// writes `patch` (a `Vec<u8>`) as a JSON array of numbers, where the API type (Go's
/// `[]byte`) is base64 text, and an empty `status` into every admission. Its `Status`
/// carries the denials.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// The JSON Patch, in base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl<'a> Response<'a> {
    /// Allowed, nothing else to say.
    fn allowed(uid: &'a str) -> Self {
        Response {
            uid,
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }

    /// Allowed, with the defaulting patch.
    fn patched(uid: &'a str, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_vec(patch)?;
        Ok(Response {
            patch_type: Some("JSONPatch"),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(json)),
            ..Response::allowed(uid)
        })
    }

    /// The verdict's warnings and, when anything failed, a 422 `Invalid` status with one
    /// cause per failed field, as the API server answers a schema violation.
    fn verdict(uid: &'a str, kind: Kind, name: &str, verdict: Verdict) -> Self {
        let status = (!verdict.allowed()).then(|| Status {
            status: Some(StatusSummary::Failure),
            code: 422,
            message: verdict.denial_message(kind, name),
            metadata: None,
            reason: "Invalid".into(),
            details: Some(StatusDetails {
                name: name.to_string(),
                group: crate::api::GROUP.into(),
                kind: kind.as_str().into(),
                uid: String::new(),
                causes: verdict
                    .errors
                    .iter()
                    .map(|e| StatusCause {
                        reason: e.cause_reason().into(),
                        message: e.body(),
                        field: e.path.clone(),
                    })
                    .collect(),
                retry_after_seconds: 0,
            }),
        });
        Response {
            allowed: status.is_none(),
            status,
            warnings: verdict.warnings,
            ..Response::allowed(uid)
        }
    }

    /// The whole AdmissionReview answer, as JSON.
    fn into_body(self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut<'a> {
            api_version: &'static str,
            kind: &'static str,
            response: Response<'a>,
        }
        let review = ReviewOut {
            api_version: META_API_VERSION_V1,
            kind: META_KIND,
            response: self,
        };
        // Strings, booleans and kube's Status: serialising them into a Vec cannot fail.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(operation: &str, object: Value, old: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "image.toolkit.fluxcd.io", "version": "v1", "kind": "ImageRepository"},
                "resource": {"group": "image.toolkit.fluxcd.io", "version": "v1", "resource": "imagerepositories"},
                "operation": operation,
                "userInfo": {"username": "alice"},
                "namespace": "ns",
                "object": object,
                "oldObject": old,
            }
        }))
        .unwrap()
    }

    /// `/validate` with no cluster view.
    fn validate(body: &[u8]) -> Result<Outcome, BadRequest> {
        handle(body, Webhook::Validate, &Admission::default())
    }

    fn response(outcome: &Outcome) -> Value {
        let v: Value = serde_json::from_slice(&outcome.body).unwrap();
        v["response"].clone()
    }

    #[test]
    fn patches_are_base64_json_patches() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"image": "alpine", "interval": "5m"}});
        let out = handle(
            &body("CREATE", obj, Value::Null),
            Webhook::Mutate,
            &Admission::default(),
        )
        .unwrap();
        assert_eq!(out.result, "patched");
        let r = response(&out);
        assert_eq!(r["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/spec/timeout", "value": "5m"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/image-reflector~1defaulted-timeout", "value": "5m"},
            ])
        );
    }

    #[test]
    fn an_admission_says_only_uid_and_allowed() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"image": "alpine", "interval": "5m"}});
        let out = validate(&body("CREATE", obj, Value::Null)).unwrap();
        assert_eq!(
            String::from_utf8(out.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true}}"#
        );
    }

    #[test]
    fn a_denial_is_422_invalid_with_a_cause_per_field() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"image": "Alpine", "interval": "0s"}});
        let out = validate(&body("CREATE", obj, Value::Null)).unwrap();
        assert_eq!(
            (out.kind, out.result),
            (Some(Kind::ImageRepository), "denied")
        );
        let status = &response(&out)["status"];
        assert_eq!(
            (&status["code"], &status["reason"], &status["status"]),
            (&json!(422), &json!("Invalid"), &json!("Failure"))
        );
        assert_eq!(
            status["details"]["causes"],
            json!([
                {"reason": "FieldValueInvalid", "field": "spec.image",
                 "message": "Invalid value: \"Alpine\" has upper-case letters in the repository path; use \"alpine\""},
                {"reason": "FieldValueInvalid", "field": "spec.interval",
                 "message": "Invalid value: \"0s\": must be greater than zero, e.g. \"5m\""},
            ])
        );
        assert_eq!(
            (&status["details"]["name"], &status["details"]["kind"]),
            (&json!("a"), &json!("ImageRepository"))
        );
    }

    #[test]
    fn a_spec_of_the_wrong_type_is_denied_naming_the_field() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"image": "alpine", "interval": 5}});
        let out = validate(&body("CREATE", obj, Value::Null)).unwrap();
        let causes = &response(&out)["status"]["details"]["causes"];
        assert_eq!(
            causes,
            &json!([{"reason": "FieldValueTypeInvalid", "field": "spec.interval",
                     "message": "invalid type: integer 5, expected a string"}])
        );
    }

    #[test]
    fn an_object_being_deleted_is_never_refused() {
        let obj = json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"image": "BAD"}});
        let old = json!({"metadata": {"name": "a"}, "spec": {"image": "BAD", "interval": "1m"}});
        let out = validate(&body("UPDATE", obj, old)).unwrap();
        assert_eq!(response(&out)["allowed"], true);
    }

    #[test]
    fn denials_take_the_name_from_metadata_when_the_request_has_none() {
        let obj = json!({"metadata": {"generateName": "repo-"}, "spec": {"image": "alpine"}});
        let out = validate(&body("CREATE", obj, Value::Null)).unwrap();
        assert_eq!(out.result, "denied");
        let msg = response(&out)["status"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("\"repo-\" is invalid: spec.interval: Required value"),
            "{msg}"
        );
    }

    #[test]
    fn the_outcome_names_the_operation() {
        let out = validate(&body("DELETE", Value::Null, Value::Null)).unwrap();
        assert_eq!((out.operation, out.result), ("DELETE", "allowed"));
    }

    #[test]
    fn a_foreign_kind_is_allowed_untouched() {
        let mut review: Value = serde_json::from_slice(&body(
            "CREATE",
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 1}}),
            Value::Null,
        ))
        .unwrap();
        review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let bytes = serde_json::to_vec(&review).unwrap();
        for webhook in [Webhook::Mutate, Webhook::Validate] {
            let out = handle(&bytes, webhook, &Admission::default()).unwrap();
            assert_eq!((out.kind, out.result), (None, "allowed"));
            let r = response(&out);
            assert_eq!(r, json!({"uid": "u-1", "allowed": true}));
        }
    }

    #[test]
    fn create_without_an_object_is_a_bad_request() {
        let err = validate(&body("CREATE", Value::Null, Value::Null)).unwrap_err();
        assert!(
            err.to_string()
                .contains("request.object is missing for operation CREATE"),
            "{err}"
        );
    }
}
