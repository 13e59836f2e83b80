//! A comparison case: a YAML file naming the objects to apply (Flux v1 API) and the steps
//! to take, written once and run twice, once per controller (see `tests/compare/README.md`).
//!
//! ```yaml
//! description: a semver range selects the highest version in range
//! fast: true                      # part of the subset `make test` runs
//! namespaces:                     # optional: labels of the case's namespaces
//!   apps: {team: apps}
//! steps:
//!   - push: {registry: anonymous, repository: app, tags: ["1.0.0", "1.2.0"]}
//!   - apply: |
//!       apiVersion: image.toolkit.fluxcd.io/v1
//!       kind: ImageRepository
//!       metadata: {name: app, namespace: apps}
//!       spec: {image: "{{anonymous}}/app", interval: 1h}
//!   - settle                      # wait until both settle, then compare
//!   - annotate: {kind: ImageRepository, name: app, namespace: apps}
//! ```
//!
//! Nothing here panics on what a case file says: every mistake is an error naming the
//! file, the step and the fix.

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The registries the runner provides, by the name a case uses.
pub const REGISTRIES: &[&str] = &[
    "anonymous",
    "basic",
    "token",
    "token-ip-realm",
    "tls",
    "mtls",
    "by-name",
    "unreachable",
];

/// The kinds a case may apply.
pub const IMAGE_REPOSITORY: &str = "ImageRepository";
pub const IMAGE_POLICY: &str = "ImagePolicy";

/// A parsed case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The file's stem: the case's name, part of namespaces and repository paths.
    pub name: String,
    pub description: String,
    pub fast: bool,
    /// Labels per logical namespace.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub steps: Vec<Step>,
}

/// One step of a case.
#[derive(Clone, Debug)]
pub enum Step {
    /// `kubectl apply` of these objects (after templating), one at a time.
    Apply(Apply),
    /// Push one image under these tags to a repository of a named registry.
    Push(Push),
    /// Create or replace a `kubernetes.io/dockerconfigjson` Secret for a registry.
    DockerSecret(DockerSecret),
    /// Create or replace a Secret with the TLS material of a registry.
    TlsSecret(TlsSecret),
    /// Set `reconcile.fluxcd.io/requestedAt` to a new value.
    Annotate(ObjectRef),
    /// `kubectl patch --type merge`.
    Patch(Patch),
    /// `kubectl delete --wait=false`.
    Delete(ObjectRef),
    /// Wait until both controllers settle, then compare.
    Settle(Settle),
}

impl Step {
    pub fn label(&self) -> &'static str {
        match self {
            Step::Apply(_) => "apply",
            Step::Push(_) => "push",
            Step::DockerSecret(_) => "dockerSecret",
            Step::TlsSecret(_) => "tlsSecret",
            Step::Annotate(_) => "annotate",
            Step::Patch(_) => "patch",
            Step::Delete(_) => "delete",
            Step::Settle(_) => "settle",
        }
    }
}

/// Objects to apply: the text as written (templates are expanded per side) and its
/// documents parsed with placeholders, for the checks made before running.
#[derive(Clone, Debug)]
pub struct Apply {
    pub text: String,
    pub docs: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    pub registry: String,
    pub repository: String,
    pub tags: Vec<String>,
    /// Any text: images pushed with different `variant`s have different digests.
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSecret {
    pub name: String,
    pub namespace: String,
    pub registry: String,
    /// Write a password the registry refuses.
    #[serde(default)]
    pub wrong_password: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsSecret {
    pub name: String,
    pub namespace: String,
    pub registry: String,
    /// Include `ca.crt` (the CA that signed the registry's certificate).
    #[serde(default = "yes")]
    pub ca: bool,
    /// Include `tls.crt` and `tls.key` (a client certificate; registry `mtls`).
    #[serde(default)]
    pub client: bool,
    /// The Secret's type: `Opaque` (default) or `kubernetes.io/tls`.
    #[serde(default = "opaque", rename = "type")]
    pub type_: String,
}

fn yes() -> bool {
    true
}

fn opaque() -> String {
    "Opaque".into()
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

impl ObjectRef {
    /// `KIND/NAMESPACE/NAME` with the logical namespace.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    /// A JSON merge patch.
    pub merge: Value,
}

impl Patch {
    pub fn target(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// How to wait before a comparison.
#[derive(Clone, Debug, Default)]
pub struct Settle {
    /// Give up waiting after this long and compare what is there (default 60 s).
    pub timeout: Option<Duration>,
    /// Nothing may change for this long (default 3 s).
    pub quiet: Option<Duration>,
    /// Also wait until these hold on both sides: `KIND NAMESPACE/NAME TYPE=STATUS`.
    pub until: Vec<Until>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Until {
    pub object: ObjectRef,
    pub condition: String,
    pub status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    #[serde(default)]
    fast: bool,
    #[serde(default)]
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    steps: Vec<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SettleFile {
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    quiet: Option<String>,
    #[serde(default)]
    until: Vec<String>,
}

/// Reads every `*.yaml` case in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Case>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the cases directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} holds no *.yaml case", dir.display());
    }
    paths.iter().map(|p| load(p)).collect()
}

/// Reads one case file.
pub fn load(path: &Path) -> anyhow::Result<Case> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("{}: the file name is not UTF-8", path.display()))?
        .to_string();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the case {}", path.display()))?;
    parse(&name, &text).with_context(|| format!("case {}", path.display()))
}

/// The longest case name: namespaces are `SIDE-CASE-NAMESPACE`, at most 63 characters.
const MAX_NAME: usize = 40;

/// Parses a case from its text; `name` is the file's stem.
pub fn parse(name: &str, text: &str) -> anyhow::Result<Case> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        bail!(
            "the file name {name:?} must be a case name: lower-case letters, digits and '-', at most {MAX_NAME} characters (it becomes part of namespace names and repository paths)"
        );
    }
    let file: CaseFile =
        serde_yaml_ng::from_str(text).context("not a case (see tests/compare/README.md)")?;
    for (ns, _) in file.namespaces.iter() {
        check_namespace(name, ns)?;
    }
    let mut steps = Vec::with_capacity(file.steps.len());
    for (i, raw) in file.steps.into_iter().enumerate() {
        let step = parse_step(raw).with_context(|| format!("step {}", i + 1))?;
        steps.push(step);
    }
    if !steps.iter().any(|s| matches!(s, Step::Apply(_))) {
        bail!("no `apply` step: a case must apply at least one object");
    }
    // Every case ends with a comparison.
    if !matches!(steps.last(), Some(Step::Settle(_))) {
        steps.push(Step::Settle(Settle::default()));
    }
    let case = Case {
        name: name.to_string(),
        description: file.description,
        fast: file.fast,
        namespaces: file.namespaces,
        steps,
    };
    case.check()?;
    Ok(case)
}

fn parse_step(raw: serde_yaml_ng::Value) -> anyhow::Result<Step> {
    use serde_yaml_ng::Value as Y;
    let (key, body) = match raw {
        Y::String(s) => (s, Y::Null),
        Y::Mapping(m) if m.len() == 1 => {
            let Some((k, v)) = m.into_iter().next() else {
                bail!("a step is a map with one key");
            };
            let Y::String(k) = k else {
                bail!("a step's key must be a string");
            };
            (k, v)
        }
        _ => bail!(
            "a step is `settle` or a map with one key: apply, push, dockerSecret, tlsSecret, annotate, patch, delete, settle"
        ),
    };
    let typed = |what: &str| format!("`{key}` expects {what}");
    Ok(match key.as_str() {
        "apply" => {
            let Y::String(text) = body else {
                bail!("{}", typed("YAML text (a block scalar: `apply: |`)"));
            };
            // Templates are expanded per side at run time; here only the shape is checked.
            let docs = split_documents(&text)?;
            if docs.is_empty() {
                bail!("`apply` holds no object");
            }
            Step::Apply(Apply { text, docs })
        }
        "push" => Step::Push(
            serde_yaml_ng::from_value(body)
                .context(typed("{registry, repository, tags, variant?}"))?,
        ),
        "dockerSecret" => Step::DockerSecret(
            serde_yaml_ng::from_value(body)
                .context(typed("{name, namespace, registry, wrongPassword?}"))?,
        ),
        "tlsSecret" => Step::TlsSecret(
            serde_yaml_ng::from_value(body)
                .context(typed("{name, namespace, registry, ca?, client?, type?}"))?,
        ),
        "annotate" => Step::Annotate(
            serde_yaml_ng::from_value(body).context(typed("{kind, name, namespace}"))?,
        ),
        "delete" => {
            Step::Delete(serde_yaml_ng::from_value(body).context(typed("{kind, name, namespace}"))?)
        }
        "patch" => {
            let p: Patch =
                serde_yaml_ng::from_value(body).context(typed("{kind, name, namespace, merge}"))?;
            if !p.merge.is_object() {
                bail!("`patch.merge` must be a map (a JSON merge patch)");
            }
            Step::Patch(p)
        }
        "settle" => {
            let f: SettleFile = if body.is_null() {
                SettleFile::default()
            } else {
                serde_yaml_ng::from_value(body).context(typed("{timeout?, quiet?, until?}"))?
            };
            let duration = |s: Option<String>, field: &str| -> anyhow::Result<Option<Duration>> {
                s.map(|s| parse_duration(&s).with_context(|| format!("settle.{field}")))
                    .transpose()
            };
            Step::Settle(Settle {
                timeout: duration(f.timeout, "timeout")?,
                quiet: duration(f.quiet, "quiet")?,
                until: f
                    .until
                    .iter()
                    .map(|u| parse_until(u))
                    .collect::<anyhow::Result<_>>()?,
            })
        }
        other => bail!(
            "unknown step {other:?}: use apply, push, dockerSecret, tlsSecret, annotate, patch, delete or settle"
        ),
    })
}

/// The YAML documents of an `apply` text, as JSON values. `{{...}}` templates are left
/// in strings; a template outside quotes is parsed after expansion, so this parse
/// replaces each template with a placeholder first.
fn split_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let placeholder = replace_templates(text, |_| Ok("template.invalid".to_string()))?;
    parse_documents(&placeholder)
}

/// Parses multi-document YAML into JSON values, skipping empty documents.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("`apply` is not valid YAML")?;
        if v.is_null() {
            continue;
        }
        if !v.is_object() {
            bail!("every document of `apply` must be an object");
        }
        docs.push(v);
    }
    Ok(docs)
}

/// Replaces every `{{NAME}}` in `text` with `resolve(NAME)`.
pub fn replace_templates(
    text: &str,
    mut resolve: impl FnMut(&str) -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("`{{{{` without `}}}}` in {text:?}");
        };
        out.push_str(&resolve(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What a template `{{NAME}}` or `{{NAME.host}}` names: a registry and whether the
/// case's repository prefix follows the host.
pub fn template_target(name: &str) -> anyhow::Result<(&str, bool)> {
    let (registry, host_only) = match name.strip_suffix(".host") {
        Some(r) => (r, true),
        None => (name, false),
    };
    if !REGISTRIES.contains(&registry) {
        bail!(
            "unknown template {{{{{name}}}}}: use {{{{REGISTRY}}}} (host and the case's prefix) or {{{{REGISTRY.host}}}}, REGISTRY one of {}",
            REGISTRIES.join(", ")
        );
    }
    Ok((registry, !host_only))
}

fn parse_until(text: &str) -> anyhow::Result<Until> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let shape = || {
        anyhow!(
            "settle.until entry {text:?} must read `KIND NAMESPACE/NAME TYPE=STATUS`, e.g. `ImagePolicy apps/app Ready=True`"
        )
    };
    let [kind, path, cond] = parts.as_slice() else {
        return Err(shape());
    };
    let (namespace, name) = path.split_once('/').ok_or_else(shape)?;
    let (condition, status) = cond.split_once('=').ok_or_else(shape)?;
    Ok(Until {
        object: ObjectRef {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        },
        condition: condition.to_string(),
        status: status.to_string(),
    })
}

/// `300ms`, `3s`, `2m`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .ok_or_else(|| anyhow!("{text:?} needs a unit (ms, s or m)"))?;
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a duration such as 500ms, 3s or 2m"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => bail!("{text:?}: the unit must be ms, s or m"),
    })
}

fn check_namespace(case: &str, ns: &str) -> anyhow::Result<()> {
    let longest = format!("flux-{case}-{ns}");
    if ns.is_empty()
        || longest.len() > 63
        || !ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!(
            "namespace {ns:?}: lower-case letters, digits and '-', and `flux-{case}-{ns}` must fit 63 characters"
        );
    }
    Ok(())
}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    if kind != IMAGE_REPOSITORY && kind != IMAGE_POLICY {
        bail!("kind {kind:?}: steps address ImageRepository or ImagePolicy objects");
    }
    Ok(())
}

fn check_registry(name: &str) -> anyhow::Result<()> {
    if !REGISTRIES.contains(&name) {
        bail!(
            "unknown registry {name:?}: use one of {}",
            REGISTRIES.join(", ")
        );
    }
    Ok(())
}

impl Case {
    /// Checks what can be checked before running: kinds, namespaces, registries, that an
    /// annotated, patched or deleted object was applied before.
    fn check(&self) -> anyhow::Result<()> {
        let mut applied: Vec<ObjectRef> = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = || format!("step {} ({})", i + 1, step.label());
            let known = |r: &ObjectRef, applied: &[ObjectRef]| -> anyhow::Result<()> {
                check_kind(&r.kind)?;
                if !applied.contains(r) {
                    bail!("{} was not applied by an earlier step", r.id());
                }
                Ok(())
            };
            match step {
                Step::Apply(apply) => {
                    for doc in &apply.docs {
                        let r = object_ref(doc).with_context(at)?;
                        check_namespace(&self.name, &r.namespace).with_context(at)?;
                        if r.kind == IMAGE_REPOSITORY || r.kind == IMAGE_POLICY {
                            if doc["apiVersion"] != "image.toolkit.fluxcd.io/v1" {
                                bail!(
                                    "{}: {} must be written in apiVersion image.toolkit.fluxcd.io/v1",
                                    at(),
                                    r.id()
                                );
                            }
                            if let Some(ns) =
                                doc["spec"]["imageRepositoryRef"]["namespace"].as_str()
                            {
                                check_namespace(&self.name, ns).with_context(at)?;
                            }
                        } else if r.kind != "Secret" && r.kind != "ServiceAccount" {
                            bail!(
                                "{}: kind {} is not one a case applies (ImageRepository, ImagePolicy, Secret, ServiceAccount; namespaces come from `namespaces:`)",
                                at(),
                                r.kind
                            );
                        }
                        if !applied.contains(&r) {
                            applied.push(r);
                        }
                    }
                }
                Step::Push(p) => check_registry(&p.registry).with_context(at)?,
                Step::DockerSecret(s) => {
                    check_registry(&s.registry).with_context(at)?;
                    check_namespace(&self.name, &s.namespace).with_context(at)?;
                }
                Step::TlsSecret(s) => {
                    check_registry(&s.registry).with_context(at)?;
                    check_namespace(&self.name, &s.namespace).with_context(at)?;
                    if s.client && s.registry != "mtls" {
                        bail!("{}: only the registry `mtls` has client certificates", at());
                    }
                    if s.registry != "tls" && s.registry != "mtls" {
                        bail!(
                            "{}: registry {} has no TLS material; use tls or mtls",
                            at(),
                            s.registry
                        );
                    }
                }
                Step::Annotate(r) | Step::Delete(r) => known(r, &applied).with_context(at)?,
                Step::Patch(p) => known(&p.target(), &applied).with_context(at)?,
                Step::Settle(s) => {
                    for u in &s.until {
                        known(&u.object, &applied).with_context(at)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every logical namespace the case uses.
    pub fn all_namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.namespaces.keys().cloned().collect();
        for step in &self.steps {
            let mut add = |ns: &str| {
                if !names.iter().any(|n| n == ns) {
                    names.push(ns.to_string());
                }
            };
            match step {
                Step::Apply(apply) => {
                    for doc in &apply.docs {
                        if let Ok(r) = object_ref(doc) {
                            add(&r.namespace);
                        }
                        if let Some(ns) = doc["spec"]["imageRepositoryRef"]["namespace"].as_str() {
                            add(ns);
                        }
                    }
                }
                Step::DockerSecret(s) => add(&s.namespace),
                Step::TlsSecret(s) => add(&s.namespace),
                _ => {}
            }
        }
        names
    }
}

/// Kind, namespace and name of a document (namespace defaults to `default`).
pub fn object_ref(doc: &Value) -> anyhow::Result<ObjectRef> {
    let kind = doc["kind"]
        .as_str()
        .ok_or_else(|| anyhow!("an object without `kind`"))?;
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow!("a {kind} without `metadata.name`"))?;
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    Ok(ObjectRef {
        kind: kind.to_string(),
        name: name.to_string(),
        namespace: namespace.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = r#"
description: d
fast: true
namespaces:
  apps: {team: a}
steps:
  - push: {registry: anonymous, repository: app, tags: ["1.0.0"]}
  - apply: |
      apiVersion: image.toolkit.fluxcd.io/v1
      kind: ImageRepository
      metadata: {name: app, namespace: apps}
      spec: {image: {{anonymous}}/app, interval: 1h}
  - settle
  - annotate: {kind: ImageRepository, name: app, namespace: apps}
  - settle: {timeout: 20s, until: ["ImageRepository apps/app Ready=True"]}
"#;

    #[test]
    fn a_case_reads_with_its_steps_and_templates_outside_quotes() {
        let case = parse("semver-basic", CASE).expect("parses");
        assert!(case.fast);
        assert_eq!(case.steps.len(), 5);
        assert!(
            matches!(&case.steps[4], Step::Settle(s) if s.timeout == Some(Duration::from_secs(20)) && s.until.len() == 1)
        );
        assert_eq!(case.all_namespaces(), vec!["apps".to_string()]);
    }

    #[test]
    fn a_case_without_a_final_settle_gets_one() {
        let text = CASE
            .rsplit_once("  - settle: {timeout")
            .map(|(a, _)| a)
            .unwrap_or(CASE);
        let case = parse(
            "c",
            &text.replace(
                "  - annotate: {kind: ImageRepository, name: app, namespace: apps}\n",
                "",
            ),
        )
        .expect("parses");
        assert!(matches!(case.steps.last(), Some(Step::Settle(_))));
    }

    #[test]
    fn mistakes_are_errors_that_name_the_fix() {
        let err = |name: &str, text: &str| {
            format!(
                "{:#}",
                parse(name, text)
                    .err()
                    .map(|e| e.to_string() + &format!("{e:#}"))
                    .unwrap_or_default()
            )
        };
        assert!(err("Bad_Name", CASE).contains("lower-case"));
        assert!(
            err(
                "c",
                &CASE.replace("registry: anonymous", "registry: dockerhub")
            )
            .contains("unknown registry")
        );
        assert!(
            err(
                "c",
                &CASE.replace(
                    "kind: ImageRepository, name: app",
                    "kind: ImageRepository, name: other"
                )
            )
            .contains("not applied")
        );
        assert!(err("c", &CASE.replace("- settle\n", "- wait\n")).contains("unknown step"));
        assert!(
            err(
                "c",
                &CASE.replace(
                    "image.toolkit.fluxcd.io/v1",
                    "image.toolkit.fluxcd.io/v1beta2"
                )
            )
            .contains("apiVersion")
        );
        assert!(err("c", "description: x\nsteps: []\n").contains("no `apply`"));
    }

    #[test]
    fn templates_name_registries_and_hosts() {
        assert_eq!(template_target("basic").ok(), Some(("basic", true)));
        assert_eq!(template_target("tls.host").ok(), Some(("tls", false)));
        assert!(template_target("quay").is_err());
        let out = replace_templates("a {{x}} b {{ y }}", |n| Ok(format!("<{n}>"))).ok();
        assert_eq!(out.as_deref(), Some("a <x> b <y>"));
        assert!(replace_templates("a {{x", |n| Ok(n.to_string())).is_err());
        // Go-style extract templates pass through.
        let out = replace_templates("extract: ${1}x $ts", |n| Ok(n.to_string())).ok();
        assert_eq!(out.as_deref(), Some("extract: ${1}x $ts"));
    }

    #[test]
    fn durations_take_ms_s_and_m() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("3s").ok(), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
