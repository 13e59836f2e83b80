//! Calls admission webhooks as kube-apiserver does: matching by rules and selectors,
//! AdmissionReview v1 over HTTPS trusting only the `caBundle`, mutations applied as JSON
//! Patch, warnings collected, denials and failures worded as the API server words them.

use crate::error::{ApiError, ApiResult};
use crate::select::LabelSelector;
use crate::store::{ResourceType, Shared, new_uid};
use base64::Engine;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

pub const MUTATING: &str = "mutatingwebhookconfigurations.admissionregistration.k8s.io";
pub const VALIDATING: &str = "validatingwebhookconfigurations.admissionregistration.k8s.io";

/// What is being admitted.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub rt: std::sync::Arc<ResourceType>,
    /// The version the client used.
    pub version: String,
    pub subresource: String,
    pub operation: &'static str,
    pub name: String,
    pub namespace: String,
    pub old_object: Option<Value>,
    pub dry_run: bool,
    pub options: Value,
    pub user: Value,
}

/// One webhook, resolved from its configuration.
#[derive(Clone, Debug)]
struct Hook {
    name: String,
    config: Value,
    /// The version the webhook asked for (matchPolicy Equivalent may pick another served
    /// version of the same resource).
    version: String,
}

fn list_matches(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x.as_str() == Some(want)))
}

fn resource_matches(list: &Value, plural: &str, sub: &str) -> bool {
    list.as_array().is_some_and(|l| {
        l.iter().filter_map(Value::as_str).any(|r| {
            let (rp, rs) = r.split_once('/').unwrap_or((r, ""));
            (rp == "*" || rp == plural) && (rs == "*" || rs == sub)
        })
    })
}

/// The version a webhook's rules accept for this request, if any.
fn rules_match(hook: &Value, a: &Attributes) -> Option<String> {
    let scope_ok = |rule: &Value| match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => !a.rt.namespaced,
        "Namespaced" => a.rt.namespaced,
        _ => true,
    };
    let equivalent = hook["matchPolicy"].as_str() != Some("Exact");
    let mut candidates = vec![a.version.clone()];
    if equivalent {
        candidates.extend(a.rt.versions.iter().filter(|v| **v != a.version).cloned());
    }
    for version in candidates {
        let hit = hook["rules"].as_array().into_iter().flatten().any(|rule| {
            list_matches(&rule["operations"], a.operation)
                && list_matches(&rule["apiGroups"], &a.rt.group)
                && list_matches(&rule["apiVersions"], &version)
                && resource_matches(&rule["resources"], &a.rt.plural, &a.subresource)
                && scope_ok(rule)
        });
        if hit {
            return Some(version);
        }
    }
    None
}

fn selector_matches(sel: &Value, labels: &Value) -> Result<bool, String> {
    if sel.is_null() {
        return Ok(true);
    }
    Ok(LabelSelector::from_object(sel)?.matches(labels))
}

fn hooks_for(
    shared: &Shared,
    store: &str,
    a: &Attributes,
    object: Option<&Value>,
) -> ApiResult<Vec<Hook>> {
    let state = shared.lock();
    let ns_labels = if a.rt.group.is_empty() && a.rt.plural == "namespaces" {
        object
            .or(a.old_object.as_ref())
            .map(|o| o["metadata"]["labels"].clone())
    } else if a.rt.namespaced {
        Some(
            state
                .get("namespaces", "", &a.namespace)
                .map(|n| n["metadata"]["labels"].clone())
                .unwrap_or(Value::Null),
        )
    } else {
        None
    };
    let mut hooks = vec![];
    let Some(s) = state.stores.get(store) else {
        return Ok(hooks);
    };
    // Configurations in name order, webhooks in their order.
    for config in s.objects.values() {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let name = hook["name"].as_str().unwrap_or("").to_string();
            let Some(version) = rules_match(hook, a) else {
                continue;
            };
            let bad =
                |e: String| ApiError::internal(format!("failed calling webhook \"{name}\": {e}"));
            if let Some(labels) = &ns_labels
                && !selector_matches(&hook["namespaceSelector"], labels).map_err(bad)?
            {
                continue;
            }
            let sel = &hook["objectSelector"];
            let new_ok = object
                .map(|o| selector_matches(sel, &o["metadata"]["labels"]))
                .transpose()
                .map_err(bad)?;
            let old_ok = a
                .old_object
                .as_ref()
                .map(|o| selector_matches(sel, &o["metadata"]["labels"]))
                .transpose()
                .map_err(bad)?;
            if new_ok != Some(true) && old_ok != Some(true) {
                continue;
            }
            hooks.push(Hook {
                name,
                config: hook.clone(),
                version,
            });
        }
    }
    Ok(hooks)
}

fn with_version(a: &Attributes, obj: Option<&Value>, version: &str) -> Value {
    match obj {
        Some(o) => {
            let mut o = o.clone();
            o["apiVersion"] = json!(a.rt.api_version(version));
            o
        }
        None => Value::Null,
    }
}

fn review(a: &Attributes, hook: &Hook, object: Option<&Value>, uid: &str) -> Value {
    let gvk = |v: &str| json!({"group": a.rt.group, "version": v, "kind": a.rt.kind});
    let gvr = |v: &str| json!({"group": a.rt.group, "version": v, "resource": a.rt.plural});
    let mut req = json!({
        "uid": uid,
        "kind": gvk(&hook.version),
        "resource": gvr(&hook.version),
        "requestKind": gvk(&a.version),
        "requestResource": gvr(&a.version),
        "name": a.name,
        "operation": a.operation,
        "userInfo": a.user,
        "object": with_version(a, object, &hook.version),
        "oldObject": with_version(a, a.old_object.as_ref(), &hook.version),
        "dryRun": a.dry_run,
        "options": a.options,
    });
    if !a.subresource.is_empty() {
        req["subResource"] = json!(a.subresource);
        req["requestSubResource"] = json!(a.subresource);
    }
    if !a.namespace.is_empty() {
        req["namespace"] = json!(a.namespace);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// Why a call failed; subject to `failurePolicy`.
struct CallFailure(String);

fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        // kube-apiserver's wording for a webhook that did not answer in timeoutSeconds.
        return "context deadline exceeded".to_string();
    }
    let mut parts = vec![];
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Whether the call failed because nothing listens at the address (ECONNREFUSED).
fn connection_refused(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        src = s.source();
    }
    false
}

async fn call(shared: &Shared, hook: &Hook, body: &Value, uid: &str) -> Result<Value, CallFailure> {
    let cc = &hook.config["clientConfig"];
    let timeout = hook.config["timeoutSeconds"]
        .as_u64()
        .unwrap_or(10)
        .clamp(1, 30);
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout))
        .no_proxy();
    let (url, shown, route) = if let Some(u) = cc["url"].as_str() {
        (u.to_string(), u.to_string(), None)
    } else {
        let svc = &cc["service"];
        let ns = svc["namespace"].as_str().unwrap_or("");
        let name = svc["name"].as_str().unwrap_or("");
        let port = svc["port"].as_u64().unwrap_or(443);
        let path = svc["path"].as_str().unwrap_or("");
        let host = format!("{name}.{ns}.svc");
        let shown = format!("https://{host}:{port}{path}");
        let routed: Option<SocketAddr> = shared
            .lock()
            .services
            .get(&(ns.to_string(), name.to_string()))
            .copied();
        let Some(addr) = routed else {
            let shown = format!("{shown}?timeout={timeout}s");
            return Err(CallFailure(format!(
                "Post \"{shown}\": dial tcp: lookup {host}: no such host (kube-standin has no --service route for {ns}/{name})"
            )));
        };
        // No port in the URL: the resolver override's port is used, while TLS checks
        // the certificate against NAME.NAMESPACE.svc.
        builder = builder.resolve(&host, addr);
        (format!("https://{host}{path}"), shown, Some(addr))
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}timeout={timeout}s");
    let shown = format!("{shown}{sep}timeout={timeout}s");
    let fail = |e: String| CallFailure(format!("Post \"{shown}\": {e}"));
    let ca = match cc["caBundle"].as_str() {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| fail(format!("clientConfig.caBundle is not base64: {e}")))?,
        None => vec![],
    };
    let certs = if ca.is_empty() {
        vec![]
    } else {
        reqwest::Certificate::from_pem_bundle(&ca).map_err(|e| {
            fail(format!(
                "clientConfig.caBundle holds no PEM certificate: {e}"
            ))
        })?
    };
    let client = builder
        .tls_certs_only(certs)
        .build()
        .map_err(|e| fail(error_chain(&e)))?;
    let resp = client.post(&url).json(body).send().await.map_err(|e| {
        let chain = error_chain(&e);
        if connection_refused(&e) {
            // Go's wording, as kube-apiserver reports it.
            let target = route.map(|a| a.to_string()).or_else(|| {
                let u = url::Url::parse(&url).ok()?;
                Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
            });
            return fail(format!(
                "dial tcp {}: connect: connection refused",
                target.unwrap_or_default()
            ));
        }
        fail(chain)
    })?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| fail(error_chain(&e)))?;
    if !status.is_success() {
        return Err(CallFailure(format!(
            "received invalid webhook response: the server responded with status {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&bytes)
        )));
    }
    let review: Value = serde_json::from_slice(&bytes)
        .map_err(|e| CallFailure(format!("received invalid webhook response: {e}")))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(CallFailure(format!(
            "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            review["apiVersion"].as_str().unwrap_or(""),
            review["kind"].as_str().unwrap_or("")
        )));
    }
    let response = review["response"].clone();
    if response["uid"].as_str() != Some(uid) {
        return Err(CallFailure(format!(
            "received invalid webhook response: expected response.uid=\"{uid}\", got \"{}\"",
            response["uid"].as_str().unwrap_or("")
        )));
    }
    Ok(response)
}

fn denial(hook: &Hook, response: &Value) -> ApiError {
    let status = &response["status"];
    let code = status["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400) as u16;
    let reason = status["reason"].as_str().unwrap_or("");
    let message = match status["message"].as_str().filter(|m| !m.is_empty()) {
        Some(m) => format!(
            "admission webhook \"{}\" denied the request: {m}",
            hook.name
        ),
        None => format!(
            "admission webhook \"{}\" denied the request without explanation",
            hook.name
        ),
    };
    ApiError::new(code, reason, message)
}

fn decode_patch(response: &Value) -> Result<Value, String> {
    let bytes = match &response["patch"] {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("patch is not base64: {e}"))?,
        Value::Array(a) => a
            .iter()
            .map(|b| b.as_u64().filter(|x| *x < 256).map(|x| x as u8))
            .collect::<Option<Vec<u8>>>()
            .ok_or("patch is an array but not of bytes")?,
        Value::Null => return Ok(json!([])),
        other => return Err(format!("patch has an unexpected type: {other}")),
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON Patch: {e}"))
}

fn check_dry_run(hook: &Hook, a: &Attributes) -> ApiResult<()> {
    let side = hook.config["sideEffects"].as_str().unwrap_or("Unknown");
    if a.dry_run && !matches!(side, "None" | "NoneOnDryRun") {
        return Err(ApiError::bad_request(format!(
            "admission webhook \"{}\" does not support dry run",
            hook.name
        )));
    }
    Ok(())
}

fn fails_open(hook: &Hook) -> bool {
    hook.config["failurePolicy"].as_str() == Some("Ignore")
}

/// Runs the mutating webhooks in order on `object` (CREATE/UPDATE; for DELETE, `object` is
/// None and patches are not applied). `fixup` re-applies schema defaults after each patch.
/// Returns the warnings to pass on.
pub async fn mutate(
    shared: &Shared,
    a: &Attributes,
    object: &mut Option<Value>,
    fixup: &(dyn Fn(&mut Value) + Send + Sync),
) -> ApiResult<Vec<String>> {
    let mut warnings = vec![];
    for hook in hooks_for(shared, MUTATING, a, object.as_ref())? {
        check_dry_run(&hook, a)?;
        let uid = new_uid();
        let body = review(a, &hook, object.as_ref(), &uid);
        let response = match call(shared, &hook, &body, &uid).await {
            Ok(r) => r,
            Err(CallFailure(e)) if fails_open(&hook) => {
                tracing::warn!(webhook = %hook.name, error = %e, "webhook failed; failurePolicy Ignore");
                continue;
            }
            Err(CallFailure(e)) => {
                return Err(ApiError::internal(format!(
                    "failed calling webhook \"{}\": failed to call webhook: {e}",
                    hook.name
                )));
            }
        };
        collect_warnings(&response, &mut warnings);
        if response["allowed"].as_bool() != Some(true) {
            return Err(denial(&hook, &response));
        }
        if let Some(obj) = object.as_mut()
            && (response["patchType"].as_str() == Some("JSONPatch") || !response["patch"].is_null())
        {
            let applied = decode_patch(&response).and_then(|p| {
                let mut patched = with_version(a, Some(obj), &hook.version);
                crate::patch::json_patch(&mut patched, &p)?;
                Ok(patched)
            });
            match applied {
                Ok(mut patched) => {
                    patched["apiVersion"] = json!(a.rt.api_version(&a.version));
                    fixup(&mut patched);
                    *obj = patched;
                }
                Err(e) if fails_open(&hook) => {
                    tracing::warn!(webhook = %hook.name, error = %e, "bad patch ignored");
                }
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{}\": {e}",
                        hook.name
                    )));
                }
            }
        }
    }
    Ok(warnings)
}

fn collect_warnings(response: &Value, warnings: &mut Vec<String>) {
    for w in response["warnings"].as_array().into_iter().flatten() {
        if let Some(s) = w.as_str() {
            warnings.push(s.to_string());
        }
    }
}

/// Runs the validating webhooks in parallel; the first error (in configuration order) wins.
pub async fn validate(
    shared: &Shared,
    a: &Attributes,
    object: Option<&Value>,
) -> ApiResult<Vec<String>> {
    let hooks = hooks_for(shared, VALIDATING, a, object)?;
    for hook in &hooks {
        check_dry_run(hook, a)?;
    }
    let calls = hooks.iter().map(|hook| async move {
        let uid = new_uid();
        let body = review(a, hook, object, &uid);
        (hook, call(shared, hook, &body, &uid).await)
    });
    let results = futures::future::join_all(calls).await;
    let mut warnings = vec![];
    let mut first_error = None;
    for (hook, result) in results {
        let err = match result {
            Ok(response) => {
                collect_warnings(&response, &mut warnings);
                if response["allowed"].as_bool() == Some(true) {
                    None
                } else {
                    Some(denial(hook, &response))
                }
            }
            Err(CallFailure(e)) if fails_open(hook) => {
                tracing::warn!(webhook = %hook.name, error = %e, "webhook failed; failurePolicy Ignore");
                None
            }
            Err(CallFailure(e)) => Some(ApiError::internal(format!(
                "failed calling webhook \"{}\": failed to call webhook: {e}",
                hook.name
            ))),
        };
        if first_error.is_none() {
            first_error = err;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(warnings),
    }
}
