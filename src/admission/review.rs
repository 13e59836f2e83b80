//! AdmissionReview (`admission.k8s.io/v1`) in and out: parse the request, dispatch on
//! `request.kind` to the rules, and answer with a patch, a denial or an admission.

use super::ClusterView;
use super::json::{Json, borrowed_opt_str};
use super::reader::{Fast, Reader};
use super::rules::{self, Context, Kind};
use base64::Engine;
use bumpalo::Bump;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::sync::Arc;

/// What the admission handlers share: the cluster view (when controllers run) and flags.
#[derive(Clone, Default)]
pub struct Admission {
    /// The controllers' caches; None with `--webhook-only`.
    pub cluster: Option<Arc<dyn ClusterView>>,
    /// `--no-cross-namespace-refs`.
    pub no_cross_namespace_refs: bool,
}

/// Which webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/mutate`: defaulting.
    Mutate,
    /// `/validate`: validation.
    Validate,
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
    MissingObject(String),
}

/// An answer, with the labels the metrics need.
#[derive(Debug)]
pub struct Outcome {
    /// The AdmissionReview JSON to send back.
    pub body: Vec<u8>,
    /// The object kind, if it is one of ours.
    pub kind: Option<Kind>,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` (static, no allocation), or whatever else
    /// the request said.
    pub operation: Cow<'static, str>,
    /// `allowed`, `patched` or `denied`.
    pub result: &'static str,
}

// The envelope borrows its strings from the body, or (read by the fast reader) from the
// request's arena when a string has escapes; serde_json, on the unusual reviews left to
// it, copies only those. A review read by the fast reader allocates only its answer.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    #[serde(borrow)]
    operation: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt_str")]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt_str")]
    namespace: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object: Option<ObjectIn<'a>>,
    #[serde(default, borrow)]
    old_object: Option<ObjectIn<'a>>,
}

/// The parts of an object the rules read. Everything else (managedFields, labels,
/// status...) is skipped while parsing, without being built in memory.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct ObjectIn<'a> {
    #[serde(default, borrow)]
    metadata: MetadataIn<'a>,
    #[serde(default)]
    spec: Option<SpecIn<'a>>,
}

/// An object's spec as parsed: built in the request's arena by the fast reader, or a
/// `Value` when serde_json read the review (the unusual case), copied into the arena
/// before the rules see it.
#[cfg_attr(test, derive(Debug))]
enum SpecIn<'a> {
    Read(Json<'a>),
    Parsed(Value),
}

impl<'de> Deserialize<'de> for SpecIn<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(SpecIn::Parsed)
    }
}

impl<'a> SpecIn<'a> {
    fn into_json(self, arena: &'a Bump) -> Json<'a> {
        match self {
            SpecIn::Read(json) => json,
            SpecIn::Parsed(value) => Json::from_value(&value, arena),
        }
    }
}

/// Both paths must read the same spec: compared as values.
#[cfg(test)]
impl PartialEq for SpecIn<'_> {
    fn eq(&self, other: &Self) -> bool {
        let value = |spec: &SpecIn<'_>| match spec {
            SpecIn::Read(json) => Value::from(json),
            SpecIn::Parsed(value) => value.clone(),
        };
        value(self) == value(other)
    }
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(rename_all = "camelCase")]
struct MetadataIn<'a> {
    #[serde(default, borrow, deserialize_with = "borrowed_opt_str")]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "borrowed_opt_str")]
    generate_name: Option<Cow<'a, str>>,
    /// Only whether it is set (null reads as None) matters.
    #[serde(default)]
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct GroupVersionKind<'a> {
    #[serde(default, borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl<'a> ResponseOut<'a> {
    /// An answer that carries nothing but the verdict.
    fn new(uid: &'a str, allowed: bool) -> Self {
        ResponseOut {
            uid,
            allowed,
            status: None,
            patch_type: None,
            patch: None,
            warnings: Vec::new(),
        }
    }
}

fn respond(response: ResponseOut<'_>) -> Vec<u8> {
    let plain = response.status.is_none()
        && response.patch_type.is_none()
        && response.patch.is_none()
        && response.warnings.is_empty();
    if plain {
        return respond_plain(response.uid, response.allowed);
    }
    respond_serialized(response)
}

/// The usual answer (only uid and allowed), written directly: the same bytes as
/// [`respond_serialized`] gives it, without walking the structs field by field.
fn respond_plain(uid: &str, allowed: bool) -> Vec<u8> {
    const HEAD: &[u8] =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#;
    let tail: &[u8] = if allowed {
        br#","allowed":true}}"#
    } else {
        br#","allowed":false}}"#
    };
    // Exactly the size of the answer when the uid needs no escapes (a UUID never does):
    // the HTTP layer then takes the Vec over as its body without allocating again.
    let mut out = Vec::with_capacity(HEAD.len() + uid.len() + 2 + tail.len());
    out.extend_from_slice(HEAD);
    // Writing a string into a Vec cannot fail; it is escaped as any JSON string.
    let _ = serde_json::to_writer(&mut out, uid);
    out.extend_from_slice(tail);
    out
}

fn respond_serialized(response: ResponseOut<'_>) -> Vec<u8> {
    let review = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response,
    };
    // An admission is about 140 bytes: one allocation, no regrowth.
    let mut out = Vec::with_capacity(256);
    // Serialising these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &review);
    out
}

// The answers other than the usual one are built out of line: `handle` stays the short
// path every valid review takes (its code is fetched afresh for most reviews, since TLS
// and HTTP run in between).

/// A kind this webhook does not handle: denied, naming the fix.
#[cold]
#[inline(never)]
fn not_our_kind(uid: &str, gvk: &GroupVersionKind<'_>, operation: Cow<'static, str>) -> Outcome {
    let message = format!(
        "this webhook handles ImageRepository and ImagePolicy in group {}, not {}/{} {}; fix the webhook configuration's rules",
        crate::api::GROUP,
        gvk.group,
        gvk.version,
        gvk.kind
    );
    let body = respond(ResponseOut {
        status: Some(json!({"code": 400, "reason": "BadRequest", "message": message})),
        ..ResponseOut::new(uid, false)
    });
    Outcome {
        body,
        kind: None,
        operation,
        result: "denied",
    }
}

/// An allowed answer carrying the defaulting patch.
#[inline(never)]
fn respond_patched(uid: &str, patch: &json_patch::Patch) -> Result<Vec<u8>, BadRequest> {
    let json = serde_json::to_vec(patch)?;
    Ok(respond(ResponseOut {
        patch_type: Some("JSONPatch"),
        patch: Some(base64::engine::general_purpose::STANDARD.encode(json)),
        ..ResponseOut::new(uid, true)
    }))
}

/// The answer to a validation with failures or warnings: a 422 `Invalid` status naming
/// every failure when there is one, and the warnings.
#[cold]
#[inline(never)]
fn respond_verdict(
    uid: &str,
    kind: Kind,
    name: impl FnOnce() -> String,
    verdict: rules::Verdict,
) -> Vec<u8> {
    let allowed = verdict.allowed();
    let status = (!allowed).then(|| {
        let name = name();
        let causes: Vec<Value> = verdict
            .errors
            .iter()
            .map(|e| json!({"reason": e.cause_reason(), "field": e.path, "message": e.to_string()}))
            .collect();
        json!({
            "code": 422,
            "reason": "Invalid",
            "status": "Failure",
            "message": verdict.denial_message(kind, &name),
            "details": {"name": name, "group": crate::api::GROUP, "kind": kind.as_str(), "causes": causes},
        })
    });
    respond(ResponseOut {
        status,
        warnings: verdict.warnings,
        ..ResponseOut::new(uid, allowed)
    })
}

/// The usual answer: allowed, nothing else to say.
fn allowed(uid: &str, kind: Kind, operation: Cow<'static, str>) -> Outcome {
    Outcome {
        body: respond_plain(uid, true),
        kind: Some(kind),
        operation,
        result: "allowed",
    }
}

fn name_of(name: Option<&str>, meta: &MetadataIn<'_>) -> String {
    name.filter(|n| !n.is_empty())
        .or(meta.name.as_deref())
        .or(meta.generate_name.as_deref())
        .unwrap_or_default()
        .to_string()
}

/// The operations an API server sends in an AdmissionReview.
pub const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "CONNECT"];

/// The operation as one of [`OPERATIONS`], as a static string (for [`Outcome`] without a
/// copy, and as a metric label from a fixed set); None for any other.
pub fn known_operation(operation: &str) -> Option<&'static str> {
    OPERATIONS.into_iter().find(|known| *known == operation)
}

/// The request's operation for [`Outcome`]: copied only when it is not a known one.
fn operation_of(operation: &str) -> Cow<'static, str> {
    match known_operation(operation) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(operation.to_string()),
    }
}

/// Parses the envelope. A body that is UTF-8 as a whole (always, from an API server) is
/// checked once and parsed as text, which spares serde_json validating every string it
/// borrows one by one; any other body goes through the byte parser, so its answer (an
/// error naming the bad string, or a review whose bad bytes sit in skipped fields) stays
/// what it was.
fn parse<'a>(body: &'a [u8], arena: &'a Bump) -> Result<ReviewIn<'a>, serde_json::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => match read_review(text, arena) {
            Some(review) => Ok(review),
            None => serde_json::from_str(text),
        },
        Err(_) => serde_json::from_slice(body),
    }
}

/// The fast path of [`parse`] (see [`super::reader`]): the same [`ReviewIn`] serde_json
/// would build, or `None` to let serde_json read the text (and name what is wrong with it).
/// Field by field it follows the derived `Deserialize` impls above: the same names,
/// defaults and null handling; anything else gives up.
fn read_review<'a>(text: &'a str, arena: &'a Bump) -> Fast<ReviewIn<'a>> {
    let mut r = Reader::new(text, arena);
    let (mut api_version, mut kind, mut request) = (None, None, None);
    r.object(&mut |r, key| match key {
        "apiVersion" => set(&mut api_version, Cow::Borrowed(r.string()?)),
        "kind" => set(&mut kind, Cow::Borrowed(r.string()?)),
        "request" => {
            let request_in = if r.null() {
                None
            } else {
                Some(read_request(r)?)
            };
            set(&mut request, request_in)
        }
        _ => r.skip(),
    })?;
    if !r.at_end() {
        return None;
    }
    Some(ReviewIn {
        api_version: api_version.unwrap_or_default(),
        kind: kind.unwrap_or_default(),
        request: request.flatten(),
    })
}

/// Stores a struct field read once; a repeated field gives up (the derived impls refuse it).
fn set<T>(field: &mut Option<T>, value: T) -> Fast<()> {
    if field.is_some() {
        return None;
    }
    *field = Some(value);
    Some(())
}

fn read_request<'a>(r: &mut Reader<'a>) -> Fast<RequestIn<'a>> {
    let (mut uid, mut kind, mut operation) = (None, None, None);
    let (mut name, mut namespace, mut object, mut old_object) = (None, None, None, None);
    r.object(&mut |r, key| match key {
        "uid" => set(&mut uid, Cow::Borrowed(r.string()?)),
        "kind" => set(&mut kind, read_gvk(r)?),
        "operation" => set(&mut operation, Cow::Borrowed(r.string()?)),
        "name" => set(&mut name, r.opt_string()?.map(Cow::Borrowed)),
        "namespace" => set(&mut namespace, r.opt_string()?.map(Cow::Borrowed)),
        "object" => set(&mut object, read_opt_object(r)?),
        "oldObject" => set(&mut old_object, read_opt_object(r)?),
        _ => r.skip(),
    })?;
    Some(RequestIn {
        uid: uid?,
        kind: kind?,
        operation: operation?,
        name: name.flatten(),
        namespace: namespace.flatten(),
        object: object.flatten(),
        old_object: old_object.flatten(),
    })
}

fn read_gvk<'a>(r: &mut Reader<'a>) -> Fast<GroupVersionKind<'a>> {
    let (mut group, mut version, mut kind) = (None, None, None);
    r.object(&mut |r, key| match key {
        "group" => set(&mut group, Cow::Borrowed(r.string()?)),
        "version" => set(&mut version, Cow::Borrowed(r.string()?)),
        "kind" => set(&mut kind, Cow::Borrowed(r.string()?)),
        _ => r.skip(),
    })?;
    Some(GroupVersionKind {
        group: group.unwrap_or_default(),
        version: version?,
        kind: kind?,
    })
}

fn read_opt_object<'a>(r: &mut Reader<'a>) -> Fast<Option<ObjectIn<'a>>> {
    if r.null() {
        return Some(None);
    }
    let (mut metadata, mut spec) = (None, None);
    r.object(&mut |r, key| match key {
        "metadata" => set(&mut metadata, read_metadata(r)?),
        "spec" => {
            let value = if r.null() {
                None
            } else {
                Some(SpecIn::Read(r.value()?))
            };
            set(&mut spec, value)
        }
        _ => r.skip(),
    })?;
    Some(Some(ObjectIn {
        metadata: metadata.unwrap_or_default(),
        spec: spec.flatten(),
    }))
}

fn read_metadata<'a>(r: &mut Reader<'a>) -> Fast<MetadataIn<'a>> {
    let (mut name, mut generate_name, mut deletion_timestamp) = (None, None, None);
    r.object(&mut |r, key| match key {
        "name" => set(&mut name, r.opt_string()?.map(Cow::Borrowed)),
        "generateName" => set(&mut generate_name, r.opt_string()?.map(Cow::Borrowed)),
        "deletionTimestamp" => {
            let value = if r.null() {
                None
            } else {
                r.skip()?;
                Some(serde::de::IgnoredAny)
            };
            set(&mut deletion_timestamp, value)
        }
        _ => r.skip(),
    })?;
    Some(MetadataIn {
        name: name.flatten(),
        generate_name: generate_name.flatten(),
        deletion_timestamp: deletion_timestamp.flatten(),
    })
}

thread_local! {
    /// Each thread's arena for the spec of the review it is answering (see
    /// [`super::json`]): emptied before each review, so a review allocates nothing for it
    /// once the arena has grown to a review's size.
    static ARENA: std::cell::RefCell<Bump> = std::cell::RefCell::new(Bump::new());
}

/// An arena that grew past this for an unusually large review is freed, not kept.
const ARENA_KEEP_BYTES: usize = 64 * 1024;

/// Answers one AdmissionReview body for `endpoint`.
pub fn handle(
    body: &[u8],
    endpoint: Endpoint,
    admission: &Admission,
) -> Result<Outcome, BadRequest> {
    ARENA.with_borrow_mut(|arena| {
        arena.reset();
        let outcome = handle_in(body, endpoint, admission, arena);
        if arena.allocated_bytes() > ARENA_KEEP_BYTES {
            *arena = Bump::new();
        }
        outcome
    })
}

fn handle_in(
    body: &[u8],
    endpoint: Endpoint,
    admission: &Admission,
    arena: &Bump,
) -> Result<Outcome, BadRequest> {
    let review: ReviewIn<'_> = parse(body, arena)?;
    if review.api_version != "admission.k8s.io/v1" || review.kind != "AdmissionReview" {
        return Err(BadRequest::WrongType {
            api_version: review.api_version.into_owned(),
            kind: review.kind.into_owned(),
        });
    }
    let mut req = review.request.ok_or(BadRequest::MissingRequest)?;
    let operation = operation_of(&req.operation);

    let Some(kind) = Kind::from_group_kind(&req.kind.group, &req.kind.kind) else {
        return Ok(not_our_kind(&req.uid, &req.kind, operation));
    };

    if operation != "CREATE" && operation != "UPDATE" {
        return Ok(allowed(&req.uid, kind, operation));
    }
    let mut object = req
        .object
        .take()
        .ok_or_else(|| BadRequest::MissingObject(operation.to_string()))?;
    // The rules read only the spec; they get it directly, without building a
    // `{"spec": ...}` wrapper object per request.
    let spec = object.spec.take().map(|s| s.into_json(arena));
    let spec = spec.as_ref();
    let version = &*req.kind.version;

    match endpoint {
        Endpoint::Mutate => {
            let patch = rules::defaults_spec(kind, version, spec);
            if patch.0.is_empty() {
                return Ok(allowed(&req.uid, kind, operation));
            }
            Ok(Outcome {
                body: respond_patched(&req.uid, &patch)?,
                kind: Some(kind),
                operation,
                result: "patched",
            })
        }
        Endpoint::Validate => {
            // An update that leaves the spec alone (finalizers, labels, deletion) is never
            // refused: objects stored before a rule existed must stay manageable.
            if operation == "UPDATE" {
                let deleting = object.metadata.deletion_timestamp.is_some();
                let old_spec = req
                    .old_object
                    .take()
                    .and_then(|o| o.spec)
                    .map(|s| s.into_json(arena));
                let same_spec = old_spec.is_some() && old_spec.as_ref() == spec;
                if deleting || same_spec {
                    return Ok(allowed(&req.uid, kind, operation));
                }
            }
            let namespace = req.namespace.as_deref().unwrap_or_default();
            let ctx = Context {
                cluster: admission.cluster.as_deref(),
                no_cross_namespace_refs: admission.no_cross_namespace_refs,
            };
            let verdict = rules::validate_spec(kind, version, namespace, spec, ctx);
            if verdict.errors.is_empty() && verdict.warnings.is_empty() {
                return Ok(allowed(&req.uid, kind, operation));
            }
            let name = || name_of(req.name.as_deref(), &object.metadata);
            let allowed = verdict.allowed();
            Ok(Outcome {
                body: respond_verdict(&req.uid, kind, name, verdict),
                kind: Some(kind),
                operation,
                result: if allowed { "allowed" } else { "denied" },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(operation: &str, object: Value, old: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "image.toolkit.fluxcd.io", "version": "v1", "kind": "ImageRepository"},
                "operation": operation,
                "namespace": "ns",
                "object": object,
                "oldObject": old,
            }
        }))
        .unwrap()
    }

    /// `/validate` with no cluster view.
    fn validate(body: &[u8]) -> Result<Outcome, BadRequest> {
        handle(body, Endpoint::Validate, &Admission::default())
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
            Endpoint::Mutate,
            &Admission::default(),
        )
        .unwrap();
        assert_eq!(out.result, "patched");
        let r = response(&out);
        let patch = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(
            patch[0],
            json!({"op": "add", "path": "/spec/timeout", "value": "5m"})
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
    fn the_arena_is_reused_for_usual_reviews_and_freed_after_a_large_one() {
        let arena_bytes = || ARENA.with_borrow(|arena| arena.allocated_bytes());
        let usual = body(
            "CREATE",
            json!({"spec": {"image": "alpine", "interval": "5m"}}),
            Value::Null,
        );
        validate(&usual).unwrap();
        let kept = arena_bytes();
        for _ in 0..100 {
            validate(&usual).unwrap();
        }
        assert_eq!(arena_bytes(), kept, "the arena grows with every review");
        // 50,000 array elements take far more than the arena keeps.
        let large = body(
            "CREATE",
            json!({"spec": {"image": "alpine", "interval": "5m", "x": vec![0; 50_000]}}),
            Value::Null,
        );
        validate(&large).unwrap();
        assert!(
            arena_bytes() <= ARENA_KEEP_BYTES,
            "{} bytes kept",
            arena_bytes()
        );
    }

    #[test]
    fn the_envelope_and_the_spec_borrow_their_strings_from_the_body() {
        let obj = json!({"metadata": {"name": "a", "generateName": "a-"}, "spec": {"image": "alpine", "exclusionList": ["^.*\\.sig$"]}});
        let mut bytes = body("CREATE", obj, Value::Null);
        // The request's own name, with an escape: unescaped into a copy.
        let at = bytes.windows(5).position(|w| w == b"\"uid\"").unwrap();
        bytes.splice(at..at, br#""name":"p\u0061","#.iter().copied());
        let review: ReviewIn<'_> = serde_json::from_slice(&bytes).unwrap();
        let req = review.request.unwrap();
        assert!(matches!(req.name, Some(Cow::Owned(ref n)) if n == "pa"));
        assert!(matches!(req.namespace, Some(Cow::Borrowed("ns"))));
        let object = req.object.unwrap();
        assert!(matches!(object.metadata.name, Some(Cow::Borrowed("a"))));
        assert!(matches!(
            object.metadata.generate_name,
            Some(Cow::Borrowed("a-"))
        ));
        assert!(req.old_object.is_none());
        // The fast reader builds the spec: strings without escapes point into the body,
        // unescaped ones into the arena.
        let arena = Bump::new();
        let review = parse(&bytes, &arena).unwrap();
        let Some(SpecIn::Read(spec)) = review.request.unwrap().object.unwrap().spec else {
            panic!("the fast reader did not read the spec");
        };
        let in_body = |s: &str| bytes.as_ptr_range().contains(&s.as_ptr());
        let image = spec.get("image").and_then(Json::as_str).unwrap();
        assert!(image == "alpine" && in_body(image));
        let list = spec.get("exclusionList").and_then(Json::as_array).unwrap();
        let pattern = list[0].as_str().unwrap();
        assert!(pattern == "^.*\\.sig$" && !in_body(pattern));
    }

    #[test]
    fn a_null_name_or_namespace_reads_as_absent() {
        let mut v: Value = serde_json::from_slice(&body(
            "CREATE",
            json!({"metadata": {"name": null}}),
            Value::Null,
        ))
        .unwrap();
        v["request"]["namespace"] = Value::Null;
        v["request"]["name"] = Value::Null;
        let bytes = serde_json::to_vec(&v).unwrap();
        let review: ReviewIn<'_> = serde_json::from_slice(&bytes).unwrap();
        let req = review.request.unwrap();
        assert!(req.name.is_none() && req.namespace.is_none());
        assert!(req.object.unwrap().metadata.name.is_none());
        v["request"]["namespace"] = json!(5);
        let err = serde_json::from_slice::<ReviewIn<'_>>(&serde_json::to_vec(&v).unwrap())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("invalid type: integer `5`"),
            "{err}"
        );
    }

    #[test]
    fn the_outcome_names_the_operation_without_copying_the_usual_ones() {
        for op in ["CREATE", "UPDATE", "DELETE", "CONNECT"] {
            assert!(matches!(operation_of(op), Cow::Borrowed(o) if o == op));
        }
        assert!(matches!(operation_of("PATCH"), Cow::Owned(ref o) if o == "PATCH"));
        let out = validate(&body("DELETE", Value::Null, Value::Null)).unwrap();
        assert_eq!((out.operation.as_ref(), out.result), ("DELETE", "allowed"));
    }

    #[test]
    fn the_plain_answer_has_the_same_bytes_as_the_serialised_one() {
        for uid in [
            "705ab4f5-6393-11e8-b7cc-42010a800002",
            "",
            "q\"uote\\back\nline\u{1}é",
        ] {
            for allowed in [true, false] {
                let general = respond_serialized(ResponseOut::new(uid, allowed));
                assert_eq!(
                    String::from_utf8(respond_plain(uid, allowed)).unwrap(),
                    String::from_utf8(general).unwrap()
                );
            }
        }
        // Without escapes the answer fills its allocation exactly, so `Bytes::from` takes
        // it over without allocating a header for the spare capacity.
        for allowed in [true, false] {
            let plain = respond_plain("705ab4f5-6393-11e8-b7cc-42010a800002", allowed);
            assert_eq!(plain.len(), plain.capacity());
        }
    }

    /// The body with the first `marker` replaced by bytes that are not UTF-8.
    fn with_bad_utf8(marker: &str) -> Vec<u8> {
        let obj = json!({"metadata": {"name": "a", "annotations": {"note": "qq"}},
                         "spec": {"image": "alpinezz", "interval": "5m"}});
        let mut bytes = body("CREATE", obj, Value::Null);
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .unwrap();
        bytes.splice(at..at + marker.len(), [0xff, 0xfe]);
        assert!(std::str::from_utf8(&bytes).is_err());
        bytes
    }

    #[test]
    fn bytes_that_are_not_utf8_in_a_skipped_field_do_not_matter() {
        let out = validate(&with_bad_utf8("qq")).unwrap();
        assert_eq!(
            out.result,
            "allowed",
            "{}",
            String::from_utf8_lossy(&out.body)
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_in_a_string_the_rules_read_are_a_bad_request() {
        let err = validate(&with_bad_utf8("zz")).unwrap_err();
        assert!(
            err.to_string().contains("invalid unicode code point"),
            "{err}"
        );
    }

    #[test]
    fn create_without_an_object_is_a_bad_request() {
        let err = validate(&body("CREATE", Value::Null, Value::Null)).unwrap_err();
        assert!(
            err.to_string()
                .contains("request.object is missing for operation CREATE")
        );
    }

    // ---- The fast reader against serde_json -------------------------------------------

    /// Whatever the fast reader accepts, serde_json accepts with the same envelope. Returns
    /// whether the reader accepted.
    fn reader_agrees(text: &str) -> bool {
        let arena = Bump::new();
        let fast = read_review(text, &arena);
        let slow = serde_json::from_str::<ReviewIn<'_>>(text);
        match (&fast, &slow) {
            (Some(f), Ok(s)) => assert_eq!(f, s, "{text}"),
            (Some(f), Err(e)) => {
                panic!("the reader accepted what serde_json refuses ({e}): {text}\n{f:?}")
            }
            (None, _) => {}
        }
        fast.is_some()
    }

    /// Reviews as API servers send them, and some less usual but valid ones.
    fn valid_reviews() -> Vec<String> {
        let update = body(
            "UPDATE",
            json!({"metadata": {"name": "a", "deletionTimestamp": "2024-05-01T10:00:00Z",
                                "finalizers": ["x"], "generation": 3},
                   "spec": {"image": "ghcr.io/org/app", "interval": "5m", "insecure": true,
                            "exclusionList": ["^.*\\.sig$", "caf\u{e9} \"quoted\""],
                            "n": [1, -2, 2.5, 1e3, 18446744073709551615u64, null]}}),
            json!({"metadata": {"name": "a"}, "spec": {"image": "ghcr.io/org/app"}}),
        );
        let delete = body(
            "DELETE",
            Value::Null,
            json!({"metadata": {"name": "a"}, "spec": null}),
        );
        // Pretty-printed, with escapes in skipped strings and keys, and without a group.
        let policy = serde_json::to_vec_pretty(&json!({
            "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
            "request": {"uid": "u\u{2603}", "kind": {"version": "v1beta2", "kind": "ImagePolicy"},
                        "operation": "CREATE", "name": null,
                        "userInfo": {"user\"name": "a\\b\n", "extra": {"k": [[], {}, 0.5e-3]}},
                        "object": {"metadata": {"generateName": "p-", "labels": {"a/b": "c"}},
                                   "spec": {"imageRepositoryRef": {"name": "r"},
                                            "policy": {"semver": {"range": ">=1.0"}}}}},
        }))
        .unwrap();
        [
            include_bytes!("../../bench/review.json")
                .trim_ascii_end()
                .to_vec(),
            update,
            delete,
            policy,
        ]
        .into_iter()
        .map(|b| String::from_utf8(b).unwrap())
        .collect()
    }

    #[test]
    fn the_reader_reads_usual_reviews_as_serde_json_does() {
        for text in valid_reviews() {
            assert!(
                reader_agrees(&text),
                "the reader gave up on a valid review: {text}"
            );
        }
        // Escapes are written by hand here (serde_json writes é and ☃ as they are).
        let escaped = valid_reviews()[0].replace("podinfo", r"pod\u0069nfo\/x");
        assert!(reader_agrees(&escaped), "{escaped}");
    }

    #[test]
    fn the_reader_never_accepts_a_broken_review_nor_reads_one_differently() {
        const BYTES: &[u8] = b"\"\\{}[],:0-n \x01a";
        let (mut accepted, mut tried) = (0usize, 0usize);
        for text in valid_reviews() {
            let bytes = text.as_bytes();
            for at in 0..bytes.len() {
                let mut variants = vec![bytes[..at].to_vec()];
                let mut without = bytes.to_vec();
                without.remove(at);
                variants.push(without);
                for &b in BYTES {
                    let mut replaced = bytes.to_vec();
                    replaced[at] = b;
                    variants.push(replaced);
                    let mut inserted = bytes.to_vec();
                    inserted.insert(at, b);
                    variants.push(inserted);
                }
                for variant in variants {
                    if let Ok(text) = String::from_utf8(variant) {
                        tried += 1;
                        accepted += usize::from(reader_agrees(&text));
                    }
                }
            }
        }
        // Many variants stay valid (a changed letter inside a string): the reader must
        // have read those, not given up on everything.
        assert!(accepted > tried / 20, "accepted {accepted} of {tried}");
    }

    #[test]
    fn the_reader_leaves_unusual_shapes_to_serde_json() {
        let base = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":REQ}"#;
        let req = |body: &str| base.replace("REQ", body);
        let gvk =
            r#""kind":{"group":"image.toolkit.fluxcd.io","version":"v1","kind":"ImageRepository"}"#;
        let with = |rest: &str| {
            req(&format!(
                r#"{{"uid":"a",{gvk},"operation":"CREATE",{rest}}}"#
            ))
        };
        for text in [
            // A repeated field: the derived impls refuse it.
            with(r#""uid":"b""#),
            r#"{"kind":"AdmissionReview","kind":"AdmissionReview","request":null}"#.to_string(),
            with(r#""object":{"spec":{},"spec":{}}"#),
            with(r#""object":{"metadata":{"name":"a","name":"b"}}"#),
            // A field name written with an escape is still that field for serde.
            req(&format!(r#"{{"ui\u0064":"a",{gvk},"operation":"CREATE"}}"#)),
            // A struct written as an array (serde accepts it), wrong types, missing fields.
            req(r#"{"uid":"a","kind":["g","v","ImageRepository"],"operation":"CREATE"}"#),
            req(&format!(r#"{{"uid":1,{gvk},"operation":"CREATE"}}"#)),
            req(&format!(r#"{{{gvk},"operation":"CREATE"}}"#)),
            req(r#"{"uid":"a","kind":{"group":"g","kind":"K"},"operation":"CREATE"}"#),
            with(r#""object":{"metadata":null}"#),
            with(r#""name":7"#),
            with(r#""object":[]"#),
            // Nesting beyond serde_json's limit in a skipped field; a number out of range.
            with(&format!(r#""x":{}{}"#, "[".repeat(200), "]".repeat(200))),
            with(r#""object":{"spec":{"n":1e400}}"#),
            // A lone surrogate in a string the rules read.
            with(r#""object":{"spec":{"image":"\ud800"}}"#),
        ] {
            assert!(
                !reader_agrees(&text),
                "the reader should have given up on {text}"
            );
        }
        // The answer is then serde_json's, with its message.
        let err = parse(with(r#""uid":"b""#).as_bytes(), &Bump::new())
            .err()
            .unwrap();
        assert!(err.to_string().contains("duplicate field `uid`"), "{err}");
    }

    #[test]
    fn the_reader_counts_depth_from_the_whole_review() {
        // A member of `request` is two levels down: k nested arrays there reach depth
        // k + 1, read up to the reader's limit and left to serde_json one level beyond.
        let nested = |k: usize| {
            format!(
                r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"a","kind":{{"version":"v1","kind":"K"}},"operation":"CREATE","x":{}{}}}}}"#,
                "[".repeat(k),
                "]".repeat(k)
            )
        };
        assert!(reader_agrees(&nested(99)));
        assert!(!reader_agrees(&nested(100)));
        assert!(parse(nested(100).as_bytes(), &Bump::new()).is_ok());
    }

    #[test]
    fn the_reader_reads_null_and_absent_fields_as_the_derived_impls_do() {
        for text in [
            r#"{"request":null}"#,
            r#"{}"#,
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"a","kind":{"version":"v1","kind":"K"},"operation":"DELETE","name":null,"namespace":null,"object":null,"oldObject":{"spec":null,"metadata":{"deletionTimestamp":null}}}}"#,
            r#"{"request":{"uid":"a","kind":{"version":"v1","kind":"K"},"operation":"CREATE","object":{"metadata":{"deletionTimestamp":{"x":[1]}},"spec":"not an object"}}}"#,
        ] {
            assert!(reader_agrees(text), "the reader gave up on {text}");
        }
    }
}
