//! `image-reflector validate -f FILE...`: the webhooks' defaulting and validation, offline,
//! on YAML or JSON files (multi-document; `-` reads stdin), for CI before `kubectl apply`.

use crate::admission::{self, Admission, Kind};
use crate::api::defaults::apply_schema_defaults;
use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Output of `validate`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// One line per object: its verdict, messages and warnings.
    Text,
    /// The defaulted objects as YAML on stdout (verdict lines go to stderr).
    Yaml,
}

/// Arguments of `validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// Files to check (YAML or JSON, several documents each; `-` for stdin).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// What to print.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

/// The verdict on one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// `FILE#N` (N counts documents from 1).
    pub location: String,
    /// `Kind namespace/name`, or what the document is.
    pub object: String,
    /// Denial messages; empty when allowed.
    pub errors: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// The defaulted object (None for documents that are not ours).
    pub defaulted: Option<Value>,
    /// Not one of our kinds: passed over.
    pub skipped: bool,
}

impl Checked {
    /// The one-line report.
    pub fn line(&self) -> String {
        let mut line = format!("{} {}: ", self.location, self.object);
        if self.skipped {
            line.push_str(
                "skipped (not an image.toolkit.fluxcd.io ImageRepository or ImagePolicy)",
            );
        } else if self.errors.is_empty() {
            line.push_str("allowed");
        } else {
            line.push_str("denied: ");
            line.push_str(&self.errors.join("; "));
        }
        for w in &self.warnings {
            line.push_str(" | warning: ");
            line.push_str(w);
        }
        line
    }
}

/// Checks every document of `text` (from `source`); Err when the text does not parse.
pub fn check_text(source: &str, text: &str) -> Result<Vec<Checked>, String> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value =
            Value::deserialize(doc).map_err(|e| format!("{source}: document {}: {e}", i + 1))?;
        match value {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = m
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (j, item) in items.into_iter().enumerate() {
                    docs.push((format!("{source}#{}.items[{j}]", i + 1), item));
                }
            }
            other => docs.push((format!("{source}#{}", i + 1), other)),
        }
    }
    Ok(docs
        .into_iter()
        .map(|(loc, v)| check_object(loc, v))
        .collect())
}

fn check_object(location: String, obj: Value) -> Checked {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<no name>");
    let object = format!("{kind_name} {namespace}/{name}");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let Some(kind) = Kind::from_group_kind(group, kind_name) else {
        let what = if kind_name.is_empty() {
            "document without kind".to_string()
        } else {
            format!("{api_version} {kind_name}")
        };
        return Checked {
            location,
            object: what,
            errors: vec![],
            warnings: vec![],
            defaulted: None,
            skipped: true,
        };
    };
    if !crate::api::SERVED_VERSIONS.contains(&version) {
        let error = format!(
            "apiVersion: Unsupported value: {api_version:?}: served versions are {}",
            crate::api::SERVED_VERSIONS
                .map(|v| format!("{}/{v}", crate::api::GROUP))
                .join(", ")
        );
        return Checked {
            location,
            object,
            errors: vec![error],
            warnings: vec![],
            defaulted: None,
            skipped: false,
        };
    }
    // As the API server does: the schema's defaults, the mutating webhook's patch, then
    // validation of the defaulted object.
    let mut defaulted = obj.clone();
    apply_schema_defaults(kind, version, &mut defaulted);
    let metadata = defaulted
        .get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    let patch = admission::defaults::patch(kind, &metadata, defaulted.get("spec").cloned());
    let mut patched = defaulted.clone();
    if json_patch::patch(&mut patched, &patch.0).is_ok() {
        defaulted = patched;
    }
    let spec = defaulted.get("spec").cloned();
    let verdict = admission::verdict(kind, &namespace, spec, &Admission::default());
    Checked {
        location,
        object,
        errors: verdict.errors.iter().map(|e| e.to_string()).collect(),
        warnings: verdict.warnings,
        defaulted: Some(defaulted),
        skipped: false,
    }
}

/// Runs `validate`.
pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut results = Vec::new();
    for file in &args.files {
        let (source, text) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
            ("<stdin>".to_string(), text)
        } else {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            (file.display().to_string(), text)
        };
        match check_text(&source, &text) {
            Ok(checked) => results.extend(checked),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    for r in &results {
        failed |= !r.errors.is_empty();
        match args.output {
            Output::Text => writeln!(stdout, "{}", r.line())?,
            Output::Yaml => {
                eprintln!("{}", r.line());
                if let Some(obj) = &r.defaulted {
                    write!(stdout, "---\n{}", serde_yaml_ng::to_string(obj)?)?;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
apiVersion: image.toolkit.fluxcd.io/v1beta1
kind: ImageRepository
metadata:
  name: podinfo
  namespace: flux-system
spec:
  interval: 10m
  image: ghcr.io/stefanprodan/podinfo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
---
apiVersion: image.toolkit.fluxcd.io/v1
kind: ImagePolicy
metadata:
  name: bad
spec:
  imageRepositoryRef:
    name: podinfo
  policy:
    semver:
      range: "not a range"
    numerical: {}
"#;

    #[test]
    fn reports_one_line_per_document_with_defaults_applied() {
        let checked = check_text("f.yaml", FILE).unwrap();
        assert_eq!(checked.len(), 3);
        assert_eq!(
            checked[0].line(),
            "f.yaml#1 ImageRepository flux-system/podinfo: allowed"
        );
        assert_eq!(
            checked[0].defaulted.as_ref().unwrap()["spec"]["timeout"],
            "10m"
        );
        assert!(checked[1].skipped);
        let line = checked[2].line();
        assert!(
            line.starts_with("f.yaml#3 ImagePolicy default/bad: denied: spec.policy: "),
            "{line}"
        );
        assert!(line.contains("spec.policy.semver.range"), "{line}");
        assert_eq!(checked[2].errors.len(), 2);
    }

    #[test]
    fn reads_json_and_lists() {
        let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "image.toolkit.fluxcd.io/v1beta2", "kind": "ImageRepository",
             "metadata": {"name": "a"}, "spec": {"image": "alpine", "interval": "30s"}}]}"#;
        let checked = check_text("l.json", json).unwrap();
        assert_eq!(checked.len(), 1);
        assert!(checked[0].errors.is_empty());
        assert!(
            checked[0].line().contains("warning: spec.interval"),
            "{}",
            checked[0].line()
        );
        assert_eq!(
            checked[0].defaulted.as_ref().unwrap()["spec"]["provider"],
            "generic"
        );
    }

    #[test]
    fn refuses_an_unserved_version() {
        let doc = "apiVersion: image.toolkit.fluxcd.io/v1alpha1\nkind: ImagePolicy\nmetadata: {name: x}\n";
        let checked = check_text("x", doc).unwrap();
        assert!(
            checked[0].errors[0].contains("served versions are"),
            "{:?}",
            checked[0]
        );
    }

    #[test]
    fn reports_a_file_that_does_not_parse() {
        let err = check_text("broken.yaml", "a: [unclosed").unwrap_err();
        assert!(err.starts_with("broken.yaml: document 1:"), "{err}");
    }
}
