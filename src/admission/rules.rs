//! The pure admission rules: defaulting (as an RFC 6902 JSON Patch) and validation of
//! ImageRepository and ImagePolicy objects, on their JSON as the API server sends it (any
//! served version). No HTTP and no Kubernetes client here; `validate` consults a
//! [`ClusterView`] only when one is given.

use super::ClusterView;
use super::json::{Json, Object};
use super::names::{dns1123_label, dns1123_subdomain, label_key, label_value};
use crate::api::{
    self, DEFAULT_EXCLUSION_LIST, MAX_EXCLUSION_LIST, format_duration_without_hours,
    parse_duration, uses_hours,
};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;

/// The kinds this webhook handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `image.toolkit.fluxcd.io/*, Kind=ImageRepository`
    ImageRepository,
    /// `image.toolkit.fluxcd.io/*, Kind=ImagePolicy`
    ImagePolicy,
}

impl Kind {
    /// The kind for an API group and kind name, if it is one of ours.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        if group != api::GROUP {
            return None;
        }
        match kind {
            "ImageRepository" => Some(Kind::ImageRepository),
            "ImagePolicy" => Some(Kind::ImagePolicy),
            _ => None,
        }
    }

    /// The kind name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::ImageRepository => "ImageRepository",
            Kind::ImagePolicy => "ImagePolicy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule failure: the field path, the value (absent for a missing field), and what is
/// wrong together with how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.exclusionList[3]`.
    pub path: String,
    /// The offending value; `None` when the field is missing.
    pub value: Option<Value>,
    /// What is wrong and the fix.
    pub detail: String,
    /// The detail already quotes the value (messages of the shared parsers).
    detail_names_value: bool,
}

/// A value a [`FieldError`] can quote: converted to a `serde_json::Value` only when a
/// failure is reported.
trait Reported {
    fn to_value(self) -> Value;
}

impl Reported for &Value {
    fn to_value(self) -> Value {
        self.clone()
    }
}

impl Reported for &Json<'_> {
    fn to_value(self) -> Value {
        Value::from(self)
    }
}

impl FieldError {
    fn invalid(path: impl Into<String>, value: impl Reported, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            value: Some(value.to_value()),
            detail: detail.into(),
            detail_names_value: false,
        }
    }

    /// An invalid value whose `detail` already quotes it.
    fn described(path: impl Into<String>, value: impl Reported, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            value: Some(value.to_value()),
            detail: detail.into(),
            detail_names_value: true,
        }
    }

    fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            value: None,
            detail: detail.into(),
            detail_names_value: false,
        }
    }

    /// The Kubernetes `StatusCause.reason` for this failure.
    pub fn cause_reason(&self) -> &'static str {
        if self.value.is_some() {
            "FieldValueInvalid"
        } else {
            "FieldValueRequired"
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(_) if self.detail_names_value => {
                write!(f, "{}: Invalid value: {}", self.path, self.detail)
            }
            Some(v) => write!(f, "{}: Invalid value: {}: {}", self.path, v, self.detail),
            None => write!(f, "{}: Required value: {}", self.path, self.detail),
        }
    }
}

/// The outcome of validating one object: every failure and every warning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Failures; the object is denied when there is any.
    pub errors: Vec<FieldError>,
    /// Warnings, shown by kubectl as `Warning: ...`; they never deny.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// True when nothing failed.
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }

    /// The denial message in the API server's style:
    /// `ImageRepository.image.toolkit.fluxcd.io "name" is invalid: [a, b]`.
    pub fn denial_message(&self, kind: Kind, name: &str) -> String {
        let list: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
        let body = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        format!("{kind}.{} {name:?} is invalid: {body}", api::GROUP)
    }
}

/// What validation may consult besides the object.
#[derive(Clone, Copy, Default)]
pub struct Context<'a> {
    /// The controllers' caches, when controllers run (None with `--webhook-only`).
    pub cluster: Option<&'a dyn ClusterView>,
    /// `--no-cross-namespace-refs`: ImagePolicies may only use repositories in their own
    /// namespace.
    pub no_cross_namespace_refs: bool,
}

/// True for versions that have Flux's v1beta2 defaults (exclusionList, provider,
/// digestReflectionPolicy, order).
fn has_v1beta2_defaults(version: &str) -> bool {
    version != "v1beta1"
}

/// Below this, an interval earns a warning about registry rate limits.
pub const SHORT_INTERVAL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Defaulting

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn absent(obj: &Object<'_>, key: &str) -> bool {
    matches!(obj.get(key), None | Some(Json::Null))
}

/// The defaulting patch for `obj` of `kind` in API `version`: fills in only fields that
/// are absent, never touches `status`, and yields an empty patch on an already-defaulted
/// object.
pub fn defaults(kind: Kind, version: &str, obj: &Value) -> Patch {
    let arena = bumpalo::Bump::new();
    let spec = obj.get("spec").map(|spec| Json::from_value(spec, &arena));
    defaults_spec(kind, version, spec.as_ref())
}

/// [`defaults`] given only the object's `spec` (None when absent): what the webhook calls,
/// as the rules read nothing else of the object.
pub fn defaults_spec(kind: Kind, version: &str, spec: Option<&Json<'_>>) -> Patch {
    let mut ops = Vec::new();
    let Some(spec) = spec.and_then(Json::as_object) else {
        return Patch(ops);
    };
    match kind {
        Kind::ImageRepository => {
            if absent(spec, "timeout")
                && let Some(timeout) = spec
                    .get("interval")
                    .and_then(Json::as_str)
                    .and_then(timeout_from_interval)
            {
                ops.push(add(&["spec", "timeout"], json!(timeout)));
            }
            if has_v1beta2_defaults(version) {
                if absent(spec, "exclusionList") {
                    ops.push(add(
                        &["spec", "exclusionList"],
                        json!(DEFAULT_EXCLUSION_LIST),
                    ));
                }
                if absent(spec, "provider") {
                    ops.push(add(&["spec", "provider"], json!("generic")));
                }
            }
        }
        Kind::ImagePolicy => {
            if has_v1beta2_defaults(version) {
                if absent(spec, "digestReflectionPolicy") {
                    ops.push(add(&["spec", "digestReflectionPolicy"], json!("Never")));
                }
                if let Some(policy) = spec.get("policy").and_then(Json::as_object) {
                    for ordering in ["alphabetical", "numerical"] {
                        if let Some(rule) = policy.get(ordering).and_then(Json::as_object)
                            && absent(rule, "order")
                        {
                            ops.push(add(&["spec", "policy", ordering, "order"], json!("asc")));
                        }
                    }
                }
            }
        }
    }
    Patch(ops)
}

/// The timeout the seed derives from an interval, in a form the timeout pattern accepts
/// (no `h`): the interval as written when it has no hours, else minutes. None when the
/// interval does not parse (validation reports it).
fn timeout_from_interval(interval: &str) -> Option<String> {
    let d = parse_duration(interval).ok()?;
    if uses_hours(interval) {
        Some(format_duration_without_hours(d))
    } else {
        Some(interval.to_string())
    }
}

// ---------------------------------------------------------------------------------------
// Validation

/// Validates `obj` (the whole object JSON) of `kind` in API `version`, created or updated
/// in `namespace`.
pub fn validate(
    kind: Kind,
    version: &str,
    namespace: &str,
    obj: &Value,
    ctx: Context<'_>,
) -> Verdict {
    let arena = bumpalo::Bump::new();
    let spec = obj.get("spec").map(|spec| Json::from_value(spec, &arena));
    validate_spec(kind, version, namespace, spec.as_ref(), ctx)
}

/// [`validate`] given only the object's `spec` (None when absent): what the webhook calls,
/// as the rules read nothing else of the object.
pub fn validate_spec(
    kind: Kind,
    version: &str,
    namespace: &str,
    spec: Option<&Json<'_>>,
    ctx: Context<'_>,
) -> Verdict {
    let _ = version; // one superset schema: the rules are the same in every version
    let mut c = Checker::default();
    match spec {
        Some(Json::Object(spec)) => match kind {
            Kind::ImageRepository => c.image_repository(spec),
            Kind::ImagePolicy => c.image_policy(spec, namespace, ctx),
        },
        Some(other) => c.fail(|| FieldError::invalid("spec", other, "must be an object")),
        None => c.fail(|| FieldError::required("spec", format!("a {kind} needs a spec"))),
    }
    Verdict {
        errors: c.errors,
        warnings: c.warnings,
    }
}

/// The Secret references of an ImageRepository, with their field paths spelled out once
/// (not formatted per request).
#[derive(Clone, Copy)]
enum SecretRef {
    Secret,
    CertSecret,
    ProxySecret,
}

impl SecretRef {
    /// (key, path, path of its name)
    fn paths(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SecretRef::Secret => ("secretRef", "spec.secretRef", "spec.secretRef.name"),
            SecretRef::CertSecret => (
                "certSecretRef",
                "spec.certSecretRef",
                "spec.certSecretRef.name",
            ),
            SecretRef::ProxySecret => (
                "proxySecretRef",
                "spec.proxySecretRef",
                "spec.proxySecretRef.name",
            ),
        }
    }
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

/// Tags an exclusion regex is tried on: one that matches all of them excludes everything.
const SAMPLE_TAGS: [&str; 7] = [
    "latest",
    "v1.2.3",
    "1.0.0",
    "1.0.0-rc.1",
    "main-0a1b2c3-1700000000",
    "sha256-0a1b2c3d.sig",
    "20240101",
];

impl Checker {
    /// Records a failure. Cold and out of line, as is building the report (path, quoted
    /// value, message) in `error`: the code a valid review runs through stays small and
    /// contiguous, which is what decides its speed once TLS and HTTP have run between two
    /// reviews and the instruction cache holds none of it.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, error: impl FnOnce() -> FieldError) {
        self.errors.push(error());
    }

    /// Records a warning (cold and out of line, as [`Checker::fail`]).
    #[cold]
    #[inline(never)]
    fn warn(&mut self, warning: impl FnOnce() -> String) {
        self.warnings.push(warning());
    }

    /// The string at `key`, or None when absent/null; a non-string is reported.
    fn string<'v>(&mut self, obj: &'v Object<'_>, key: &str, path: &str) -> Option<&'v str> {
        match obj.get(key) {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s),
            Some(other) => {
                self.fail(|| FieldError::invalid(path, other, "must be a string"));
                None
            }
        }
    }

    fn object<'v, 'j>(
        &mut self,
        obj: &'v Object<'j>,
        key: &str,
        path: &str,
    ) -> Option<&'v Object<'j>> {
        match obj.get(key) {
            None | Some(Json::Null) => None,
            Some(Json::Object(m)) => Some(m),
            Some(other) => {
                self.fail(|| FieldError::invalid(path, other, "must be an object"));
                None
            }
        }
    }

    fn boolean(&mut self, obj: &Object<'_>, key: &str, path: &str) -> Option<bool> {
        match obj.get(key) {
            None | Some(Json::Null) => None,
            Some(Json::Bool(b)) => Some(*b),
            Some(other) => {
                self.fail(|| FieldError::invalid(path, other, "must be true or false"));
                None
            }
        }
    }

    /// A duration field; `allow_hours` false for timeouts. Returns the parsed value.
    fn duration(&mut self, value: &str, path: &str, allow_hours: bool) -> Option<Duration> {
        // The JSON value is built only for a report: the valid path allocates nothing.
        let v = || json!(value);
        match parse_duration(value) {
            Err(e) => {
                self.fail(|| FieldError::invalid(path, &v(), e.explanation()));
                None
            }
            Ok(d) if !allow_hours && uses_hours(value) => {
                self.fail(|| {
                    FieldError::invalid(
                        path,
                        &v(),
                        format!(
                            "the timeout may not use hours (Flux's schema has no 'h' unit); write {:?}",
                            format_duration_without_hours(d)
                        ),
                    )
                });
                None
            }
            Ok(d) if d.is_zero() => {
                self.fail(|| {
                    FieldError::invalid(path, &v(), "must be greater than zero, e.g. \"5m\"")
                });
                None
            }
            Ok(d) => Some(d),
        }
    }

    fn short_interval_warning(&mut self, path: &str, value: &str, d: Duration) {
        if d < SHORT_INTERVAL {
            self.warn(|| format!(
                "{path}: {value:?} is under one minute; registries rate-limit frequent scans, consider \"1m\" or more"
            ));
        }
    }

    fn secret_name_ref(&mut self, spec: &Object<'_>, key: SecretRef) -> bool {
        let (key, path, name_path) = key.paths();
        let Some(obj) = self.object(spec, key, path) else {
            return false;
        };
        match self.string(obj, "name", name_path) {
            None => self.fail(|| {
                FieldError::required(name_path, "name the Secret in the object's namespace")
            }),
            Some(name) => {
                if let Err(e) = dns1123_subdomain(name) {
                    self.fail(|| {
                        FieldError::invalid(
                            name_path,
                            &json!(name),
                            format!("{e}; a Secret name is a DNS subdomain, e.g. \"regcred\""),
                        )
                    });
                }
            }
        }
        true
    }

    /// Checks an exclusion regex: Err(message) when it does not compile, else whether it
    /// matches every sample tag. Compiling is by far the costliest step of validation, and
    /// the same few lists arrive again and again, so verdicts are cached.
    fn exclusion_regex(&mut self, pattern: &str, path: impl FnOnce() -> String) -> Option<bool> {
        let verdict = cached(&EXCLUSION_CACHE, pattern, || {
            match regex::Regex::new(pattern) {
                Ok(re) => Ok(SAMPLE_TAGS.iter().all(|t| re.is_match(t))),
                Err(e) => Err(regex_error(&e)),
            }
        });
        match verdict {
            Ok(matches_all) => Some(matches_all),
            Err(msg) => {
                self.fail(|| {
                    FieldError::invalid(
                        path(),
                        &json!(pattern),
                        format!("is not a valid regular expression: {msg}"),
                    )
                });
                None
            }
        }
    }

    fn image_repository(&mut self, spec: &Object<'_>) {
        // spec.image
        match self.string(spec, "image", "spec.image") {
            None if !absent(spec, "image") => {}
            None => self.fail(|| {
                FieldError::required(
                    "spec.image",
                    "name the image repository to scan, e.g. \"ghcr.io/org/app\"",
                )
            }),
            Some(image) => self.image(image),
        }

        // spec.interval and spec.timeout
        let interval = match self.string(spec, "interval", "spec.interval") {
            None if !absent(spec, "interval") => None,
            None => {
                self.fail(|| {
                    FieldError::required("spec.interval", "set how often to scan, e.g. \"5m\"")
                });
                None
            }
            Some(s) => {
                let d = self.duration(s, "spec.interval", true);
                if let Some(d) = d {
                    self.short_interval_warning("spec.interval", s, d);
                }
                d
            }
        };
        // The defaulting webhook copies the interval into an absent timeout, so an invalid
        // interval arrives twice; a timeout written exactly as the invalid interval is not
        // reported again (a timeout invalid on its own still is).
        let interval_text = spec.get("interval").and_then(Json::as_str);
        if let Some(timeout_str) = self.string(spec, "timeout", "spec.timeout")
            && !(interval.is_none() && interval_text == Some(timeout_str))
            && let (Some(timeout), Some(interval)) =
                (self.duration(timeout_str, "spec.timeout", false), interval)
            && timeout > interval
        {
            self.warn(|| format!(
                        "spec.timeout: {timeout_str:?} is longer than spec.interval; a scan may still run when the next is due"
                    ));
        }

        // spec.exclusionList
        match spec.get("exclusionList") {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) => {
                if items.len() > MAX_EXCLUSION_LIST {
                    self.fail(|| FieldError {
                        path: "spec.exclusionList".into(),
                        value: Some(json!(format!("{} entries", items.len()))),
                        detail: format!("at most {MAX_EXCLUSION_LIST} entries are allowed; combine regexes with '|'"),
                        detail_names_value: false,
                    });
                }
                for (i, item) in items.iter().enumerate() {
                    // Formatted only when something is reported.
                    let path = || format!("spec.exclusionList[{i}]");
                    match item {
                        Json::String(p) => {
                            if self.exclusion_regex(p, path) == Some(true) {
                                let path = path();
                                self.warn(|| format!(
                                        "{path}: {p:?} matches every tag, so no tag will be stored; anchor it, e.g. \"^.*\\\\.sig$\""
                                    ));
                            }
                        }
                        other => self.fail(|| {
                            FieldError::invalid(
                                path(),
                                other,
                                "must be a string (a regular expression)",
                            )
                        }),
                    }
                }
            }
            Some(other) => self.fail(|| {
                FieldError::invalid(
                    "spec.exclusionList",
                    other,
                    "must be a list of regular expressions",
                )
            }),
        }

        // References and names
        let has_secret_ref = self.secret_name_ref(spec, SecretRef::Secret);
        self.secret_name_ref(spec, SecretRef::CertSecret);
        self.secret_name_ref(spec, SecretRef::ProxySecret);
        if let Some(sa) = self.string(spec, "serviceAccountName", "spec.serviceAccountName")
            && let Err(e) = dns1123_subdomain(sa)
        {
            self.fail(|| {
                FieldError::invalid(
                    "spec.serviceAccountName",
                    &json!(sa),
                    format!("{e}; name a ServiceAccount in the object's namespace"),
                )
            });
        }

        // spec.accessFrom
        if let Some(access) = self.object(spec, "accessFrom", "spec.accessFrom") {
            self.access_from(access);
        }

        // spec.provider
        let provider = self.string(spec, "provider", "spec.provider");
        if let Some(p) = provider
            && !["generic", "aws", "azure", "gcp"].contains(&p)
        {
            self.fail(|| {
                FieldError::invalid(
                    "spec.provider",
                    &json!(p),
                    "must be one of \"generic\", \"aws\", \"azure\", \"gcp\"",
                )
            });
        }
        if has_secret_ref && let Some(p) = provider.filter(|p| *p != "generic") {
            self.warn(|| format!(
                    "spec.secretRef is ignored with spec.provider {p:?}: credentials come from the cloud provider; remove secretRef or use provider \"generic\""
                ));
        }

        if self.boolean(spec, "insecure", "spec.insecure") == Some(true) {
            self.warn(|| {
                "spec.insecure: true makes the controller talk plain HTTP to the registry; credentials and tags travel unencrypted".into()
            });
        }
        self.boolean(spec, "suspend", "spec.suspend");
    }

    fn image(&mut self, image: &str) {
        if image.is_empty() {
            self.fail(|| {
                FieldError::invalid(
                    "spec.image",
                    &json!(image),
                    "must not be empty; name the image repository, e.g. \"ghcr.io/org/app\"",
                )
            });
        }
        self.image_reference(image);
    }

    fn access_from(&mut self, access: &Object<'_>) {
        match access.get("namespaceSelectors") {
            None | Some(Json::Null) => self.fail(|| FieldError::required(
                "spec.accessFrom.namespaceSelectors",
                "list namespace selectors, e.g. [{matchLabels: {kubernetes.io/metadata.name: flux-system}}], or [{matchLabels: {}}] for every namespace",
            )),
            Some(Json::Array(selectors)) => {
                for (i, selector) in selectors.iter().enumerate() {
                    // Paths are formatted only when something is reported.
                    let path = || format!("spec.accessFrom.namespaceSelectors[{i}]");
                    let Json::Object(selector) = selector else {
                        self.fail(|| FieldError::invalid(path(), selector, "must be an object with matchLabels"));
                        continue;
                    };
                    let labels_path = || format!("{}.matchLabels", path());
                    let labels = match selector.get("matchLabels") {
                        None | Some(Json::Null) => continue,
                        Some(Json::Object(labels)) => labels,
                        Some(other) => {
                            self.fail(|| FieldError::invalid(labels_path(), other, "must be an object"));
                            continue;
                        }
                    };
                    for (key, value) in labels.iter() {
                        let key_path = || format!("{}[{key:?}]", labels_path());
                        if let Err(e) = label_key(key) {
                            self.fail(|| FieldError::invalid(key_path(), &json!(key), format!("is not a valid label key: {e}")));
                        }
                        match value {
                            Json::String(s) => {
                                if let Err(e) = label_value(s) {
                                    self.fail(|| FieldError::invalid(key_path(), value, format!("is not a valid label value: {e}")));
                                }
                            }
                            other => self.fail(|| FieldError::invalid(key_path(), other, "a label value must be a string")),
                        }
                    }
                }
            }
            Some(other) => self.fail(|| FieldError::invalid("spec.accessFrom.namespaceSelectors", other, "must be a list of selectors")),
        }
    }

    fn image_policy(&mut self, spec: &Object<'_>, namespace: &str, ctx: Context<'_>) {
        // spec.imageRepositoryRef
        let mut reference = None;
        match self.object(spec, "imageRepositoryRef", "spec.imageRepositoryRef") {
            None => self.fail(|| {
                FieldError::required(
                    "spec.imageRepositoryRef",
                    "name the ImageRepository whose tags this policy selects from: {name: NAME}",
                )
            }),
            Some(r) => {
                let name = match self.string(r, "name", "spec.imageRepositoryRef.name") {
                    None => {
                        self.fail(|| {
                            FieldError::required(
                                "spec.imageRepositoryRef.name",
                                "name the ImageRepository",
                            )
                        });
                        None
                    }
                    Some(n) => match dns1123_subdomain(n) {
                        Ok(()) => Some(n),
                        Err(e) => {
                            self.fail(|| {
                                FieldError::invalid(
                                    "spec.imageRepositoryRef.name",
                                    &json!(n),
                                    format!("{e}; ImageRepository names are DNS subdomains"),
                                )
                            });
                            None
                        }
                    },
                };
                let ns = match self.string(r, "namespace", "spec.imageRepositoryRef.namespace") {
                    None => Some(namespace),
                    Some(ns) => match dns1123_label(ns) {
                        Ok(()) => Some(ns),
                        Err(e) => {
                            self.fail(|| FieldError::invalid("spec.imageRepositoryRef.namespace", &json!(ns), format!("{e}; namespace names are DNS labels, or leave it out for the policy's own namespace")));
                            None
                        }
                    },
                };
                if let (Some(name), Some(ns)) = (name, ns) {
                    reference = Some((ns, name));
                }
            }
        }

        // spec.policy
        match self.object(spec, "policy", "spec.policy") {
            None => self.fail(|| FieldError::required(
                "spec.policy",
                "choose one ordering: semver: {range: \">=1.0.0\"}, alphabetical: {order: asc} or numerical: {order: asc}",
            )),
            Some(policy) => self.policy_choice(policy),
        }

        // spec.filterTags
        if let Some(filter) = self.object(spec, "filterTags", "spec.filterTags") {
            let pattern = self.string(filter, "pattern", "spec.filterTags.pattern");
            let extract = self.string(filter, "extract", "spec.filterTags.extract");
            self.filter_tags(pattern, extract);
        }

        // spec.digestReflectionPolicy and spec.interval
        let drp = self.string(
            spec,
            "digestReflectionPolicy",
            "spec.digestReflectionPolicy",
        );
        if let Some(p) = drp
            && !["Always", "IfNotPresent", "Never"].contains(&p)
        {
            self.fail(|| {
                FieldError::invalid(
                    "spec.digestReflectionPolicy",
                    &json!(p),
                    "must be one of \"Always\", \"IfNotPresent\", \"Never\"",
                )
            });
        }
        match (self.string(spec, "interval", "spec.interval"), drp) {
            (Some(interval), Some("Always")) => {
                if let Some(d) = self.duration(interval, "spec.interval", true) {
                    self.short_interval_warning("spec.interval", interval, d);
                }
            }
            (Some(interval), other) => self.fail(|| {
                FieldError::invalid(
                    "spec.interval",
                    &json!(interval),
                    format!(
                        "is only used with spec.digestReflectionPolicy \"Always\" (it is {}); remove spec.interval or set the policy to \"Always\"",
                        other.map(|o| format!("{o:?}")).unwrap_or_else(|| "unset".into())
                    ),
                )
            }),
            (None, Some("Always")) => self.fail(|| FieldError::required(
                "spec.interval",
                "spec.digestReflectionPolicy \"Always\" refreshes the digest every spec.interval; set it, e.g. \"10m\"",
            )),
            (None, _) => {}
        }
        self.boolean(spec, "suspend", "spec.suspend");

        // Cross-namespace access, when the controllers' caches are available.
        if let (Some(cluster), Some((repo_ns, repo_name))) = (ctx.cluster, reference) {
            match cluster.image_repository(repo_ns, repo_name) {
                None => self.warn(|| format!(
                    "spec.imageRepositoryRef: ImageRepository {repo_ns}/{repo_name} does not exist (yet); the policy stays not ready until it does"
                )),
                Some(repo) => {
                    let labels = cluster.namespace_labels(namespace).unwrap_or_default();
                    if let Err(denied) = api::access_allowed(&repo, namespace, &labels, ctx.no_cross_namespace_refs) {
                        self.fail(|| {
                            FieldError::invalid(
                                "spec.imageRepositoryRef",
                                &json!({"name": repo_name, "namespace": repo_ns}),
                                denied.to_string(),
                            )
                        });
                    }
                }
            }
        }
    }

    fn policy_choice(&mut self, policy: &Object<'_>) {
        let chosen: Vec<&str> = ["semver", "alphabetical", "numerical"]
            .into_iter()
            .filter(|k| !absent(policy, k))
            .collect();
        if chosen.len() != 1 {
            let present = Value::from(policy);
            self.fail(|| {
                FieldError::invalid(
                    "spec.policy",
                    &present,
                    if chosen.is_empty() {
                        "sets none of semver, alphabetical, numerical; set exactly one".to_string()
                    } else {
                        format!(
                            "sets {}; set exactly one of semver, alphabetical, numerical",
                            chosen.join(" and ")
                        )
                    },
                )
            });
        }
        if let Some(semver) = self.object(policy, "semver", "spec.policy.semver") {
            match self.string(semver, "range", "spec.policy.semver.range") {
                None => self.fail(|| {
                    FieldError::required(
                        "spec.policy.semver.range",
                        "give a semver range, e.g. \">=1.0.0 <2.0.0\" or \"^1.2\"",
                    )
                }),
                Some(range) => self.semver_range(range),
            }
        }
        for ordering in ["alphabetical", "numerical"] {
            let path = format!("spec.policy.{ordering}");
            if let Some(rule) = self.object(policy, ordering, &path) {
                let order_path = format!("{path}.order");
                if let Some(order) = self.string(rule, "order", &order_path)
                    && order != "asc"
                    && order != "desc"
                {
                    self.fail(|| {
                        FieldError::invalid(
                            order_path,
                            &json!(order),
                            "must be \"asc\" or \"desc\"",
                        )
                    });
                }
            }
        }
    }
}

// Checks built on the shared parsers (crate::reference, crate::policy), whose messages
// already name the value.
impl Checker {
    fn image_reference(&mut self, image: &str) {
        if image.is_empty() {
            return; // reported by `image`
        }
        if let Err(e) = crate::reference::ImageRef::check(image) {
            self.fail(|| FieldError::described("spec.image", &json!(image), e.to_string()));
        }
    }

    fn semver_range(&mut self, range: &str) {
        if let Err(e) = crate::policy::semver::Range::parse(range) {
            self.fail(|| FieldError::described(e.field(), &json!(range), e.to_string()));
        }
    }

    fn filter_tags(&mut self, pattern: Option<&str>, extract: Option<&str>) {
        let key = format!("{}\u{0}{}", pattern.unwrap_or(""), extract.unwrap_or(""));
        let verdict = cached(&FILTER_CACHE, &key, || {
            crate::policy::FilterTags::new(pattern.unwrap_or(""), extract).map(|_| ())
        });
        if let Err(e) = verdict {
            self.fail(|| {
                let value = match &e {
                    crate::policy::PolicyError::InvalidExtract { extract, .. } => json!(extract),
                    _ => json!(pattern.unwrap_or("")),
                };
                FieldError::described(e.field(), &value, e.to_string())
            });
        }
    }
}

/// The regex crate's message draws a caret diagram; keep its last line.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(&text)
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// A bounded memo of pure verdicts keyed by their input text, emptied when full. One per
/// thread: reviews run on every worker, and a shared map's lock would move between cores
/// on every review; each thread computes a verdict once. Keys are hashed with foldhash
/// seeded at random per map: a fraction of SipHash's code and time per lookup, and still
/// no collisions an author of regexes could plan without knowing the seed.
type VerdictCache<T> =
    std::cell::RefCell<std::collections::HashMap<String, T, foldhash::quality::RandomState>>;

/// Entries kept per cache (and thread) before it is emptied.
const CACHE_LIMIT: usize = 4096;

thread_local! {
    static EXCLUSION_CACHE: VerdictCache<Result<bool, String>> = Default::default();
    static FILTER_CACHE: VerdictCache<Result<(), crate::policy::PolicyError>> = Default::default();
}

/// The verdict for `key` from this thread's `cache`, computed and kept on a miss.
fn cached<T: Clone>(
    cache: &'static std::thread::LocalKey<VerdictCache<T>>,
    key: &str,
    compute: impl FnOnce() -> T,
) -> T {
    if let Some(v) = cache.with_borrow(|map| map.get(key).cloned()) {
        return v;
    }
    let v = compute();
    cache.with_borrow_mut(|map| {
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(key.to_string(), v.clone());
    });
    v
}

#[cfg(test)]
mod tests;
