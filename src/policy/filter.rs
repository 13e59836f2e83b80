//! `filterTags`: keep the tags a regular expression matches and, optionally, hand the
//! policy a value extracted from each instead of the tag.

use std::borrow::Cow;

use regex::{CaptureLocations, Regex};

use super::PolicyError;

/// A compiled `filterTags` (`pattern` and optional `extract`).
///
/// The pattern is a regular expression in Go's RE2 syntax, compiled by the `regex` crate,
/// which shares RE2's syntax and leftmost-first semantics. Tags are ASCII, so the crate's
/// Unicode-aware `\d`, `\w` and `\s` match what Go's ASCII ones do. Known differences:
/// the crate also accepts a few patterns Go refuses (a doubled repetition such as `x**`)
/// and refuses Go's `\Q...\E` quoting and `\C`. The pattern is unanchored: write `^...$`
/// to match whole tags.
///
/// The extract template refers to the pattern's capture groups as in Go's
/// `Regexp.Expand`: `$1`, `${1}`, `$name`, `${name}` (`$0` is the whole match), `$$` for a
/// literal `$`; a name after a bare `$` is as long as letters, digits and `_` allow, so
/// `$1x` names group `1x` (write `${1}x`). Unlike Go, a reference to a group the pattern
/// does not have, or a `$` that starts no reference, is refused when the filter is built
/// rather than expanding to nothing. A group that did not take part in the match expands
/// to the empty string. An empty extract is the same as none: the value is the whole tag.
#[derive(Debug, Clone)]
pub struct FilterTags {
    regex: Regex,
    extract: Option<Template>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
}

#[derive(Debug, Clone)]
struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl FilterTags {
    /// Compiles `pattern` and checks `extract` against its capture groups.
    pub fn new(pattern: &str, extract: Option<&str>) -> Result<FilterTags, PolicyError> {
        let regex = Regex::new(pattern).map_err(|e| PolicyError::InvalidPattern {
            pattern: pattern.to_owned(),
            problem: regex_problem(&e),
        })?;
        let extract = match extract {
            None | Some("") => None,
            Some(source) => Some(Template::parse(source, &regex)?),
        };
        Ok(FilterTags { regex, extract })
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// The extract template as written, if any.
    pub fn extract(&self) -> Option<&str> {
        self.extract.as_ref().map(|t| t.source.as_str())
    }

    /// The value the policy sees for `tag`: `None` when the pattern does not match it;
    /// otherwise the expanded extract template, or the whole tag when there is none.
    pub fn apply<'t>(&self, tag: &'t str) -> Option<Cow<'t, str>> {
        let mut locations = self.regex.capture_locations();
        self.apply_with(tag, &mut locations)
    }

    /// Scratch space for [`FilterTags::apply_with`], to reuse across many tags.
    pub fn scratch(&self) -> CaptureLocations {
        self.regex.capture_locations()
    }

    /// [`FilterTags::apply`] with caller-provided scratch space (no allocation for tags
    /// that do not match, nor when the template is a single group reference).
    pub fn apply_with<'t>(
        &self,
        tag: &'t str,
        locations: &mut CaptureLocations,
    ) -> Option<Cow<'t, str>> {
        let Some(template) = &self.extract else {
            return self.regex.is_match(tag).then_some(Cow::Borrowed(tag));
        };
        self.regex.captures_read(locations, tag)?;
        let group = |i: usize| locations.get(i).map_or("", |(start, end)| &tag[start..end]);
        match template.pieces.as_slice() {
            [] => Some(Cow::Borrowed("")),
            [Piece::Group(i)] => Some(Cow::Borrowed(group(*i))),
            [Piece::Literal(text)] => Some(Cow::Owned(text.clone())),
            pieces => {
                let mut out = String::with_capacity(tag.len());
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.push_str(text),
                        Piece::Group(i) => out.push_str(group(*i)),
                    }
                }
                Some(Cow::Owned(out))
            }
        }
    }
}

/// The regex crate's error on one line: its complaint, and where in the pattern when the
/// pattern is a single line (the crate draws carets under it, indented by 4).
pub(crate) fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let Some(problem) = lines.iter().rev().find_map(|l| l.strip_prefix("error: ")) else {
        return text.trim().to_owned();
    };
    match lines.as_slice() {
        [_, _, carets, _] if carets.trim_start().starts_with('^') => {
            let column = carets.find('^').unwrap_or(4).saturating_sub(4);
            format!("{problem} (at character {column})")
        }
        _ => problem.to_owned(),
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Template {
    fn parse(source: &str, regex: &Regex) -> Result<Template, PolicyError> {
        let invalid = |problem: String| PolicyError::InvalidExtract {
            extract: source.to_owned(),
            problem,
        };
        let bytes = source.as_bytes();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let Some(offset) = source[i..].find('$') else {
                literal.push_str(&source[i..]);
                break;
            };
            literal.push_str(&source[i..i + offset]);
            let dollar = i + offset;
            i = dollar + 1;
            if bytes.get(i) == Some(&b'$') {
                literal.push('$');
                i += 1;
                continue;
            }
            let braced = bytes.get(i) == Some(&b'{');
            let name_start = if braced { i + 1 } else { i };
            let mut name_end = name_start;
            while name_end < bytes.len() && is_name_byte(bytes[name_end]) {
                name_end += 1;
            }
            let name = &source[name_start..name_end];
            if name.is_empty() {
                return Err(invalid(format!(
                    "the \"$\" at byte {dollar} starts no group reference; write $1, ${{1}}, \
                     $name or ${{name}} to insert a capture group, or $$ for a literal \"$\""
                )));
            }
            if braced {
                if bytes.get(name_end) != Some(&b'}') {
                    return Err(invalid(format!(
                        "the \"${{\" at byte {dollar} is not closed by \"}}\" right after the \
                         group name {name:?}"
                    )));
                }
                i = name_end + 1;
            } else {
                i = name_end;
            }
            let index = resolve_group(name, braced, regex).map_err(invalid)?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Group(index));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template {
            source: source.to_owned(),
            pieces,
        })
    }
}

/// The capture group index a reference names, or why it names none.
fn resolve_group(name: &str, braced: bool, regex: &Regex) -> Result<usize, String> {
    let count = regex.captures_len(); // including group 0, the whole match
    let describe = || {
        let named: Vec<String> = regex
            .capture_names()
            .flatten()
            .map(|n| format!("{n:?}"))
            .collect();
        let numbered = match count - 1 {
            0 => "no capture groups".to_owned(),
            1 => "1 capture group".to_owned(),
            n => format!("{n} capture groups"),
        };
        if named.is_empty() {
            format!("the pattern has {numbered} (0 is the whole match)")
        } else {
            format!(
                "the pattern has {numbered} (0 is the whole match), named {}",
                named.join(", ")
            )
        }
    };
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return match name.parse::<usize>() {
            Ok(index) if index < count => Ok(index),
            _ => Err(format!(
                "${name} refers to group {name}, but {}",
                describe()
            )),
        };
    }
    if let Some(index) = regex.capture_names().position(|n| n == Some(name)) {
        return Ok(index);
    }
    let mut problem = format!("${name} names group {name:?}, but {}", describe());
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    if !braced && digits > 0 {
        let (number, rest) = name.split_at(digits);
        problem.push_str(&format!(
            "; a name after \"$\" runs on through letters, digits and \"_\", so to follow \
             group {number} with {rest:?} write ${{{number}}}{rest}"
        ));
    }
    Err(problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(pattern: &str, extract: Option<&str>) -> FilterTags {
        FilterTags::new(pattern, extract).unwrap_or_else(|e| panic!("{e}"))
    }

    fn applied(f: &FilterTags, tag: &str) -> Option<String> {
        f.apply(tag).map(Cow::into_owned)
    }

    #[test]
    fn without_extract_the_value_is_the_whole_tag() {
        let f = filter("^ver", None);
        assert_eq!(applied(&f, "ver1"), Some("ver1".into()));
        assert_eq!(applied(&f, "rel1"), None);
        assert!(matches!(f.apply("ver1"), Some(Cow::Borrowed("ver1"))));
    }

    #[test]
    fn the_pattern_is_unanchored_as_in_go() {
        let f = filter("rc", None);
        assert_eq!(applied(&f, "1.0.0-rc.1"), Some("1.0.0-rc.1".into()));
    }

    #[test]
    fn extracts_numbered_groups() {
        let f = filter(r"ver(\d+)", Some("$1"));
        assert_eq!(applied(&f, "ver12"), Some("12".into()));
        assert_eq!(applied(&f, "rel1"), None);
        let f = filter(r"^(\w+)-(\d+)$", Some("${2}.${1}"));
        assert_eq!(applied(&f, "main-42"), Some("42.main".into()));
        let f = filter(r"^main-(\d+)$", Some("$0"));
        assert_eq!(applied(&f, "main-42"), Some("main-42".into()));
    }

    #[test]
    fn extracts_named_groups() {
        let f = filter(r"^RELEASE\.(?P<timestamp>.*)Z$", Some("$timestamp"));
        assert_eq!(
            applied(&f, "RELEASE.2021-09-09T21-37-07Z"),
            Some("2021-09-09T21-37-07".into())
        );
        let f = filter(r"^main-[a-f0-9]+-(?P<ts>[0-9]+)", Some("build-${ts}"));
        assert_eq!(applied(&f, "main-abc123-1611"), Some("build-1611".into()));
    }

    #[test]
    fn a_single_group_reference_borrows_from_the_tag() {
        let f = filter(r"^v(.*)$", Some("$1"));
        assert!(matches!(f.apply("v1.2"), Some(Cow::Borrowed("1.2"))));
    }

    #[test]
    fn a_group_that_did_not_match_expands_to_nothing() {
        let f = filter(r"^(a)?(b)$", Some("[$1$2]"));
        assert_eq!(applied(&f, "b"), Some("[b]".into()));
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let f = filter(r"^(\d+)$", Some("$$$1"));
        assert_eq!(applied(&f, "7"), Some("$7".into()));
    }

    #[test]
    fn empty_extract_means_the_whole_tag() {
        let f = filter(r"^(\d+)-x$", Some(""));
        assert_eq!(applied(&f, "7-x"), Some("7-x".into()));
        assert_eq!(f.extract(), None);
    }

    #[test]
    fn refuses_an_invalid_pattern_naming_it() {
        let err = FilterTags::new("^(v", None).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidPattern { .. }));
        let msg = err.to_string();
        assert!(msg.contains("\"^(v\""), "{msg}");
        assert!(msg.contains("unclosed group (at character 1)"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn refuses_a_named_group_the_pattern_does_not_have() {
        let err = FilterTags::new(r"^RELEASE\.(?P<timestamp>.*)Z$", Some("$ts")).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidExtract { .. }));
        let msg = err.to_string();
        assert!(msg.contains("\"$ts\""), "{msg}");
        assert!(msg.contains("named \"timestamp\""), "{msg}");
        let err = FilterTags::new(r"^(?P<a>.)$", Some("${b}")).unwrap_err();
        assert!(err.to_string().contains("names group \"b\""), "{err}");
    }

    #[test]
    fn refuses_a_group_number_beyond_the_pattern() {
        let msg = FilterTags::new(r"ver(\d+)", Some("$2"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1 capture group"), "{msg}");
        let msg = FilterTags::new("^ver", Some("${1}"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no capture groups"), "{msg}");
    }

    #[test]
    fn explains_that_a_bare_name_runs_on() {
        let msg = FilterTags::new(r"^(\d+)x$", Some("$1x"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("write ${1}x"), "{msg}");
    }

    #[test]
    fn refuses_a_dollar_that_starts_no_reference() {
        for bad in ["$", "v$-", "${1", "${}", "${1 }"] {
            let err = FilterTags::new(r"^(\d+)$", Some(bad)).unwrap_err();
            assert!(
                matches!(err, PolicyError::InvalidExtract { .. }),
                "{bad:?}: {err}"
            );
        }
    }
}
