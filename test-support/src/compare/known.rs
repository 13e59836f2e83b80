//! The list of known differences (`tests/compare/known-differences.yaml`): each entry
//! names the case(s), object(s) and field it covers, the value each side shows, whether
//! it is deliberate or waits for a fix, and why. A difference no entry covers fails the
//! run.
//!
//! Patterns: `case`, `object` and `field` are globs (`*` matches any run of characters;
//! `field` may be a list);
//! `ours` and `flux` are exact values, `*`, or `re:REGEX` (anchored; `.` matches newlines).

use anyhow::{Context as _, bail};
use regex::Regex;
use serde::Deserialize;
use std::path::Path;

/// Whether a known difference stays or is waiting for a fix in image-reflector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Ours is better for users; the README's "Differences from Flux" says why.
    Deliberate,
    /// A gap in image-reflector to close; listed so the run passes until the fix lands
    /// (then the entry is removed and the field must match).
    ToFix,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    /// The Flux release the list was made against.
    flux_version: String,
    differences: Vec<EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    id: String,
    case: OneOrMany,
    #[serde(default)]
    object: Option<String>,
    field: OneOrMany,
    ours: String,
    flux: String,
    status: Status,
    reason: String,
}

/// A field glob, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn globs(&self) -> Vec<Glob> {
        match self {
            OneOrMany::One(p) => vec![Glob::new(p)],
            OneOrMany::Many(ps) => ps.iter().map(|p| Glob::new(p)).collect(),
        }
    }
}

/// One entry, compiled.
#[derive(Debug)]
pub struct Known {
    pub id: String,
    pub status: Status,
    pub reason: String,
    cases: Vec<Glob>,
    object: Option<Glob>,
    fields: Vec<Glob>,
    ours: ValuePattern,
    flux: ValuePattern,
}

/// The whole list.
#[derive(Debug)]
pub struct KnownList {
    pub flux_version: String,
    pub entries: Vec<Known>,
}

impl KnownList {
    pub fn load(path: &Path) -> anyhow::Result<KnownList> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the known differences {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("known differences {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<KnownList> {
        let file: File = serde_yaml_ng::from_str(text)?;
        let mut entries = Vec::with_capacity(file.differences.len());
        for e in file.differences {
            if e.reason.trim().is_empty() {
                bail!("entry {}: `reason` must say why", e.id);
            }
            if entries.iter().any(|k: &Known| k.id == e.id) {
                bail!("entry {}: the id is used twice", e.id);
            }
            entries.push(Known {
                cases: e.case.globs(),
                object: e.object.as_deref().map(Glob::new),
                fields: e.field.globs(),
                ours: ValuePattern::new(&e.ours)
                    .with_context(|| format!("entry {}: ours", e.id))?,
                flux: ValuePattern::new(&e.flux)
                    .with_context(|| format!("entry {}: flux", e.id))?,
                id: e.id,
                status: e.status,
                reason: e.reason,
            });
        }
        Ok(KnownList {
            flux_version: file.flux_version,
            entries,
        })
    }

    /// The entry covering this difference: the first that names the case exactly, else
    /// the first whose case pattern matches.
    pub fn find(
        &self,
        case: &str,
        object: &str,
        field: &str,
        ours: &str,
        flux: &str,
    ) -> Option<&Known> {
        let covering = || {
            self.entries
                .iter()
                .filter(|k| k.covers(case, object, field, ours, flux))
        };
        covering()
            .find(|k| k.cases.iter().any(|c| c.is_literal()))
            .or_else(|| covering().next())
    }
}

impl Known {
    pub fn covers(&self, case: &str, object: &str, field: &str, ours: &str, flux: &str) -> bool {
        self.is_about(case)
            && self.object.as_ref().is_none_or(|o| o.matches(object))
            && self.fields.iter().any(|f| f.matches(field))
            && self.ours.matches(ours)
            && self.flux.matches(flux)
    }

    /// Whether a run of `cases` should have seen this entry: it names one of them (a
    /// bare `*` counts only when `complete`, i.e. every shipped case ran).
    pub fn expected_in<'c>(
        &self,
        mut cases: impl Iterator<Item = &'c str>,
        complete: bool,
    ) -> bool {
        if complete && self.cases.iter().any(|c| c.0.iter().all(String::is_empty)) {
            return true;
        }
        cases.any(|case| {
            self.cases
                .iter()
                .any(|c| !c.0.iter().all(String::is_empty) && c.matches(case))
        })
    }

    /// Whether the entry is about this case.
    pub fn is_about(&self, case: &str) -> bool {
        self.cases.iter().any(|c| c.matches(case))
    }
}

/// `*` matches any run of characters; everything else is literal.
#[derive(Debug)]
struct Glob(Vec<String>);

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob(pattern.split('*').map(str::to_string).collect())
    }

    fn is_literal(&self) -> bool {
        self.0.len() == 1
    }

    fn matches(&self, text: &str) -> bool {
        let parts = &self.0;
        if parts.len() == 1 {
            return parts[0] == text;
        }
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        if !text.starts_with(first.as_str()) || text.len() < first.len() + last.len() {
            return false;
        }
        let mut rest = &text[first.len()..];
        for middle in &parts[1..parts.len() - 1] {
            match rest.find(middle.as_str()) {
                Some(i) => rest = &rest[i + middle.len()..],
                None => return false,
            }
        }
        rest.ends_with(last.as_str())
    }
}

#[derive(Debug)]
enum ValuePattern {
    Any,
    Exact(String),
    Regex(Regex),
}

impl ValuePattern {
    fn new(text: &str) -> anyhow::Result<ValuePattern> {
        Ok(if text == "*" {
            ValuePattern::Any
        } else if let Some(re) = text.strip_prefix("re:") {
            ValuePattern::Regex(
                Regex::new(&format!("^(?s:{re})$")).with_context(|| format!("regex {re:?}"))?,
            )
        } else {
            ValuePattern::Exact(text.to_string())
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValuePattern::Any => true,
            ValuePattern::Exact(v) => v == value,
            ValuePattern::Regex(re) => re.is_match(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"
fluxVersion: v1.2.0
differences:
  - id: numerical-skips
    case: numerical-*
    object: ImagePolicy/*
    field: latestRef.tag
    ours: "2"
    flux: absent
    status: deliberate
    reason: skipping non-numeric tags
  - id: messages
    case: "*"
    field: [conditions.Ready.message, conditions.Reconciling.message]
    ours: "re:scan failed: .*"
    flux: "*"
    status: to-fix
    reason: wording
"#;

    /// The id of the entry covering a `latestRef.tag` difference of `numerical-mixed`.
    fn tag_entry<'l>(list: &'l KnownList, ours: &str) -> Option<&'l str> {
        list.find(
            "numerical-mixed",
            "ImagePolicy/apps/app",
            "latestRef.tag",
            ours,
            "absent",
        )
        .map(|k| k.id.as_str())
    }

    #[test]
    fn entries_cover_by_glob_exact_value_and_regex() {
        let list = KnownList::parse(LIST).expect("parses");
        assert_eq!(list.flux_version, "v1.2.0");
        assert_eq!(tag_entry(&list, "2"), Some("numerical-skips"));
        assert_eq!(tag_entry(&list, "3"), None);
        assert!(
            list.find(
                "semver",
                "ImagePolicy/apps/app",
                "latestRef.tag",
                "2",
                "absent"
            )
            .is_none()
        );
        let hit = list.find(
            "any",
            "ImageRepository/apps/app",
            "conditions.Ready.message",
            "scan failed: x",
            "y",
        );
        assert_eq!(hit.map(|k| k.status), Some(Status::ToFix));
        assert!(
            list.find(
                "any",
                "X",
                "conditions.Ready.message",
                "prefix scan failed: x",
                "y"
            )
            .is_none()
        );
        assert!(
            list.find(
                "any",
                "X",
                "conditions.Reconciling.message",
                "scan failed: x",
                "y"
            )
            .is_some()
        );
        assert!(
            list.find(
                "any",
                "X",
                "conditions.Stalled.message",
                "scan failed: x",
                "y"
            )
            .is_none()
        );
    }

    #[test]
    fn an_entry_naming_the_case_wins_over_a_pattern() {
        let text = format!(
            "{LIST}  - id: exact\n    case: [other, numerical-mixed]\n    field: latestRef.tag\n    ours: \"2\"\n    flux: \"*\"\n    status: to-fix\n    reason: r\n"
        );
        let list = KnownList::parse(&text).expect("parses");
        assert_eq!(tag_entry(&list, "2"), Some("exact"));
    }

    #[test]
    fn an_entry_must_say_why_and_ids_are_unique() {
        assert!(KnownList::parse(&LIST.replace("reason: wording", "reason: \"\"")).is_err());
        assert!(KnownList::parse(&LIST.replace("id: messages", "id: numerical-skips")).is_err());
        assert!(KnownList::parse(&LIST.replace("status: to-fix", "status: later")).is_err());
    }

    #[test]
    fn entries_for_every_case_are_expected_only_in_complete_runs() {
        let list = KnownList::parse(LIST).expect("parses");
        let (specific, everywhere) = (&list.entries[0], &list.entries[1]);
        assert!(specific.expected_in(["numerical-x"].into_iter(), false));
        assert!(!specific.expected_in(["semver"].into_iter(), true));
        assert!(!everywhere.expected_in(["semver"].into_iter(), false));
        assert!(everywhere.expected_in(["semver"].into_iter(), true));
    }

    #[test]
    fn globs_match_whole_strings() {
        assert!(Glob::new("a*c").matches("abc"));
        assert!(Glob::new("a*c").matches("ac"));
        assert!(!Glob::new("a*c").matches("abcd"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("*-auth*").matches("basic-auth-wrong"));
        assert!(!Glob::new("aa*aa").matches("aaa"));
    }
}
