//! What is compared of an object, and how each side's values are normalised so that only
//! real differences remain: namespace names back to the case's logical names, registry
//! hosts and the case's repository prefix back to `{{REGISTRY}}`, timestamps and revision
//! values to placeholders; `revision` and `scanTime` compared by form, not value.

use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The compared fields of one object on one side: field path -> displayed value.
pub type Fields = BTreeMap<String, String>;

/// How an absent field is shown.
pub const ABSENT: &str = "(absent)";
const PRESENT: &str = "(present)";

/// Rewrites one side's text into the case's own terms.
#[derive(Clone, Debug, Default)]
pub struct Normaliser {
    /// (from, to), longest first.
    replacements: Vec<(String, String)>,
}

static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)").expect("timestamp regex")
});
static LOOPBACK_PORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"127\.0\.0\.1:\d+").expect("loopback regex"));

impl Normaliser {
    pub fn new() -> Normaliser {
        Normaliser::default()
    }

    /// Replace `from` by `to` (applied longest `from` first).
    pub fn replace(&mut self, from: impl Into<String>, to: impl Into<String>) {
        let from = from.into();
        if from.is_empty() {
            return;
        }
        self.replacements.push((from, to.into()));
        self.replacements
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// The text in the case's terms.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.replacements {
            if out.contains(from.as_str()) {
                out = out.replace(from.as_str(), to);
            }
        }
        let out = TIMESTAMP.replace_all(&out, "<time>");
        // Any other loopback address (a client's ephemeral port in a Go error).
        LOOPBACK_PORT
            .replace_all(&out, "127.0.0.1:<port>")
            .into_owned()
    }
}

/// The form of a scan revision: Flux's Badger store writes a decimal adler32, other
/// stores a hex digest.
pub fn revision_form(v: &Value) -> String {
    let Some(s) = v.as_str() else {
        return ABSENT.into();
    };
    let hex = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if s.is_empty() {
        ABSENT.into()
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        "decimal".into()
    } else if let Some(h) = s.strip_prefix("sha256:").filter(|h| hex(h)) {
        format!("sha256:<{} hex>", h.len())
    } else if hex(s) {
        format!("<{} hex>", s.len())
    } else {
        "other".into()
    }
}

fn timestamp_form(v: &Value) -> String {
    match v.as_str() {
        Some(s) if TIMESTAMP.is_match(s) => "<time>".into(),
        Some(_) => "other".into(),
        None => ABSENT.into(),
    }
}

fn show(v: &Value, norm: &Normaliser) -> String {
    match v {
        Value::Null => ABSENT.into(),
        Value::String(s) => norm.text(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|i| show(i, norm)).collect();
            format!("[{}]", parts.join(", "))
        }
        other => norm.text(&other.to_string()),
    }
}

/// `status.observedGeneration`: 0 and absent are the same to a reader (Go's omitempty).
fn generation(v: &Value) -> String {
    match v.as_i64() {
        None | Some(0) => ABSENT.into(),
        Some(n) => n.to_string(),
    }
}

/// The compared fields of `obj` (a kind of this API group, or None when it does not
/// exist). `events` are the `TYPE/REASON` pairs of the Events about it.
pub fn fields(kind: &str, obj: Option<&Value>, events: &[String], norm: &Normaliser) -> Fields {
    let mut f = Fields::new();
    let Some(obj) = obj else {
        f.insert("exists".into(), "no".into());
        f.insert("events".into(), events_shown(events));
        return f;
    };
    f.insert("exists".into(), "yes".into());
    let status = &obj["status"];
    f.insert(
        "metadata.generation".into(),
        obj["metadata"]["generation"].to_string(),
    );
    f.insert(
        "observedGeneration".into(),
        generation(&status["observedGeneration"]),
    );
    f.insert(
        "lastHandledReconcileAt".into(),
        show(&status["lastHandledReconcileAt"], norm),
    );
    if kind == super::case::IMAGE_REPOSITORY {
        f.insert(
            "canonicalImageName".into(),
            show(&status["canonicalImageName"], norm),
        );
        let scan = &status["lastScanResult"];
        if scan.is_object() {
            f.insert("lastScanResult".into(), PRESENT.into());
            f.insert(
                "lastScanResult.tagCount".into(),
                show(&scan["tagCount"], norm),
            );
            f.insert(
                "lastScanResult.latestTags".into(),
                show(&scan["latestTags"], norm),
            );
            f.insert(
                "lastScanResult.revision".into(),
                revision_form(&scan["revision"]),
            );
            f.insert(
                "lastScanResult.scanTime".into(),
                timestamp_form(&scan["scanTime"]),
            );
        } else {
            f.insert("lastScanResult".into(), ABSENT.into());
        }
        f.insert(
            "observedExclusionList".into(),
            show(&status["observedExclusionList"], norm),
        );
    } else {
        for field in ["latestRef", "observedPreviousRef"] {
            let r = &status[field];
            if r.is_object() {
                f.insert(field.into(), PRESENT.into());
                for sub in ["name", "tag", "digest"] {
                    f.insert(format!("{field}.{sub}"), show(&r[sub], norm));
                }
            } else {
                f.insert(field.into(), ABSENT.into());
            }
        }
    }
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    // Flux's three, present or not, then any other type either side writes.
    let mut types: Vec<String> = ["Ready", "Reconciling", "Stalled"]
        .map(String::from)
        .to_vec();
    for c in &conditions {
        if let Some(t) = c["type"].as_str()
            && !types.iter().any(|x| x == t)
        {
            types.push(t.to_string());
        }
    }
    for t in types {
        let key = format!("conditions.{t}");
        match conditions.iter().find(|c| c["type"] == t.as_str()) {
            Some(c) => {
                f.insert(key.clone(), PRESENT.into());
                for sub in ["status", "reason", "message"] {
                    f.insert(format!("{key}.{sub}"), show(&c[sub], norm));
                }
            }
            None => {
                f.insert(key, ABSENT.into());
            }
        }
    }
    f.insert("events".into(), events_shown(events));
    f
}

fn events_shown(events: &[String]) -> String {
    if events.is_empty() {
        "(none)".into()
    } else {
        events.join(", ")
    }
}

/// One difference between the sides' fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub ours: String,
    pub flux: String,
}

/// Compares two sides' fields; returns the differences and how many fields were
/// compared. When a group (`latestRef`, `conditions.Ready`, `lastScanResult`, `exists`)
/// is absent on one side, its members are not compared one by one.
pub fn compare(ours: &Fields, flux: &Fields) -> (Vec<FieldDiff>, usize) {
    let mut keys: Vec<&String> = ours.keys().chain(flux.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut skipped_groups: Vec<String> = Vec::new();
    let mut diffs = Vec::new();
    let mut compared = 0;
    let missing = |m: &Fields, k: &str| m.get(k).cloned().unwrap_or_else(|| ABSENT.into());
    // Groups first, so their members can be skipped.
    for k in &keys {
        let (o, x) = (missing(ours, k), missing(flux, k));
        let is_group = o == PRESENT || x == PRESENT || k.as_str() == "exists";
        if is_group && o != x {
            skipped_groups.push(if k.as_str() == "exists" {
                String::new()
            } else {
                format!("{k}.")
            });
        }
    }
    for k in keys {
        let in_skipped = skipped_groups.iter().any(|g| {
            (g.is_empty() && k != "exists" && k != "events")
                || (!g.is_empty() && k.starts_with(g.as_str()))
        });
        if in_skipped {
            continue;
        }
        compared += 1;
        let (o, x) = (missing(ours, k), missing(flux, k));
        if o != x {
            diffs.push(FieldDiff {
                field: k.clone(),
                ours: o,
                flux: x,
            });
        }
    }
    (diffs, compared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm() -> Normaliser {
        let mut n = Normaliser::new();
        n.replace("flux-semver-apps", "apps");
        n.replace("127.0.0.1:5000/semver", "{{anonymous}}");
        n.replace("127.0.0.1:5000", "{{anonymous.host}}");
        n
    }

    #[test]
    fn normalising_restores_the_case_terms() {
        let n = norm();
        assert_eq!(
            n.text("Latest image tag for 127.0.0.1:5000/semver/app resolved to 1.0.0"),
            "Latest image tag for {{anonymous}}/app resolved to 1.0.0"
        );
        assert_eq!(
            n.text("GET http://127.0.0.1:5000/v2/: dial tcp 127.0.0.1:41234: refused at 2026-12-02T05:19:30Z"),
            "GET http://{{anonymous.host}}/v2/: dial tcp 127.0.0.1:<port>: refused at <time>"
        );
        assert_eq!(
            n.text("ImageRepository flux-semver-apps/app"),
            "ImageRepository apps/app"
        );
    }

    #[test]
    fn revisions_compare_by_form() {
        assert_eq!(revision_form(&json!("1943865137")), "decimal");
        assert_eq!(
            revision_form(&json!(format!("sha256:{}", "a".repeat(64)))),
            "sha256:<64 hex>"
        );
        assert_eq!(revision_form(&json!("ab12")), "<4 hex>");
        assert_eq!(revision_form(&Value::Null), ABSENT);
    }

    #[test]
    fn a_group_absent_on_one_side_is_one_difference() {
        let policy = |latest: Value| {
            json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "latestRef": latest,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "m"}]}})
        };
        let n = norm();
        let a = fields(
            "ImagePolicy",
            Some(&policy(json!({"name": "x", "tag": "1"}))),
            &[],
            &n,
        );
        let b = fields("ImagePolicy", Some(&policy(Value::Null)), &[], &n);
        let (diffs, compared) = compare(&a, &b);
        assert_eq!(
            diffs,
            vec![FieldDiff {
                field: "latestRef".into(),
                ours: PRESENT.into(),
                flux: ABSENT.into()
            }]
        );
        assert!(compared > 10, "{compared}");
        let gone = fields("ImagePolicy", None, &["Normal/Succeeded".into()], &n);
        let (diffs, _) = compare(&a, &gone);
        let names: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(names, vec!["events", "exists"]);
    }

    #[test]
    fn zero_and_absent_observed_generations_are_the_same() {
        assert_eq!(generation(&json!(0)), ABSENT);
        assert_eq!(generation(&Value::Null), ABSENT);
        assert_eq!(generation(&json!(-1)), "-1");
    }
}
