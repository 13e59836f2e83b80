//! Semver ranges as Flux users write them: the Masterminds/semver v3 constraint syntax,
//! with its own parser here (the `semver` crate's Cargo requirement syntax differs), and
//! the `semver` crate only for versions and their precedence.
//!
//! # Syntax
//!
//! A range is one or more AND groups separated by `||` (OR). An AND group is one or more
//! comparators separated by whitespace or a comma (optionally surrounded by whitespace). A
//! comparator is an optional operator, optional whitespace, and a version:
//!
//! - operators `=` (also no operator), `!=`, `>`, `<`, `>=` (or `=>`), `<=` (or `=<`),
//!   `~` (or `~>`) and `^`;
//! - versions with an optional leading `v`, one to three numeric parts (`1`, `1.2`,
//!   `1.2.3`), any of which may be a wildcard `x`, `X` or `*` (parts after a wildcard are
//!   ignored), then an optional `-pre.release` and `+build` (build is ignored);
//! - a hyphen range `A - B` (whitespace on both sides of the `-`, no operators) means
//!   `>= A, <= B`; without the whitespace `1.2-1.4` is version `1.2` with pre-release
//!   `1.4`.
//!
//! Partial versions and wildcards behave as in Masterminds: `1.2.x` and `=1.2` mean
//! `>=1.2.0 <1.3.0`, `1` and `1.x` mean `>=1.0.0 <2.0.0`, `*` matches every release,
//! `>1.2` means "minor above 1.2" (`>=1.3.0`), `<=1.2` means `<1.3.0`, `~1.2.3` means
//! `>=1.2.3 <1.3.0`, `~1` means `>=1.0.0 <2.0.0`, `^1.2.3` means `>=1.2.3 <2.0.0`,
//! `^0.2.3` means `>=0.2.3 <0.3.0` and `^0.0.3` means `>=0.0.3 <0.0.4`.
//!
//! # Pre-releases
//!
//! The rule of Masterminds/semver v3 (since v3.4.0): a version with a pre-release
//! (`1.2.3-rc.1`) can match an AND group only if at least one comparator of that group has
//! a pre-release itself (`>=1.2.3-0`, `^1.x-0`); within such a group every comparator
//! then compares pre-releases by ordinary semver precedence (so `>=1.0.0-0 <2.0.0` admits
//! `1.5.0-rc.1`, and so does `^1.x-0`). Unlike npm, the pre-release need not be on the same
//! `major.minor.patch` as the comparator. Groups without a pre-release comparator only
//! ever match releases. (Masterminds before v3.4.0 required every comparator of the group
//! to carry a pre-release; the ranges Flux documents, such as `^1.x-0`, behave the same
//! under both rules.)
//!
//! # Tags
//!
//! A tag is a version if it is strict semver 2.0 after removing one optional leading `v`
//! ([`parse_tag`]): `1.2.3`, `v1.2.3-rc.1+build.5`; not `1.2`, `01.2.3`, `V1.2.3`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use semver::{Prerelease, Version};

use super::PolicyError;

/// Parses a tag as a version: strict semver 2.0 with one optional leading `v`. `None` for
/// tags that are not versions (a semver policy skips them).
pub fn parse_tag(tag: &str) -> Option<Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    // Cheap rejections before the full parser: a version starts with a digit.
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Version::parse(text).ok()
}

/// A parsed semver range (Masterminds/semver v3 constraint syntax); see the module docs for
/// the syntax and the pre-release rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    source: String,
    groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    comparators: Vec<Comparator>,
    /// At least one comparator has a pre-release: pre-release versions may match.
    admits_prereleases: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// Which part of the comparator's version was a wildcard or missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wild {
    /// `1.2.3`: fully specified.
    None,
    /// `*`, `x`: the major part is a wildcard.
    Major,
    /// `1`, `1.x`: the minor part is missing or a wildcard.
    Minor,
    /// `1.2`, `1.2.x`: the patch part is missing or a wildcard.
    Patch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    /// The comparator's version, wildcard parts as 0, build metadata dropped.
    version: Version,
    wild: Wild,
}

impl Range {
    /// Parses a range written in the Masterminds/semver v3 constraint syntax.
    pub fn parse(s: &str) -> Result<Range, PolicyError> {
        let invalid = |problem: String| PolicyError::InvalidRange {
            range: s.to_owned(),
            problem,
        };
        let mut groups = Vec::new();
        for (index, text) in s.split("||").enumerate() {
            let comparators = parse_group(text).map_err(|problem| {
                if s.contains("||") {
                    invalid(format!(
                        "in OR group {} ({:?}): {problem}",
                        index + 1,
                        text.trim()
                    ))
                } else {
                    invalid(problem)
                }
            })?;
            let admits_prereleases = comparators.iter().any(|c| !c.version.pre.is_empty());
            groups.push(Group {
                comparators,
                admits_prereleases,
            });
        }
        Ok(Range {
            source: s.to_owned(),
            groups,
        })
    }

    /// Whether `v` satisfies the range: some OR group has every comparator satisfied, and
    /// `v` is a release or the group admits pre-releases.
    pub fn matches(&self, v: &Version) -> bool {
        self.groups.iter().any(|g| g.matches(v))
    }

    /// The range as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Range {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

impl Group {
    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && !self.admits_prereleases {
            return false;
        }
        self.comparators.iter().all(|c| c.matches(v))
    }
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let ord = v.cmp_precedence(c);
        match self.op {
            Op::Eq => {
                if self.wild == Wild::None {
                    ord == Ordering::Equal
                } else {
                    self.tilde(v, ord)
                }
            }
            Op::Ne => {
                if self.wild != Wild::None {
                    if v.major != c.major {
                        return true;
                    }
                    if self.wild == Wild::Minor {
                        return false;
                    }
                    if v.minor != c.minor {
                        return true;
                    }
                    if self.wild == Wild::Patch {
                        return v.pre != c.pre;
                    }
                    if v.patch != c.patch {
                        return true;
                    }
                }
                ord != Ordering::Equal
            }
            Op::Gt => {
                if self.wild == Wild::None {
                    return ord == Ordering::Greater;
                }
                if v.major != c.major {
                    return v.major > c.major;
                }
                match self.wild {
                    // `>1`: a higher major; `>1.2`: a higher minor.
                    Wild::Minor => false,
                    Wild::Patch => v.minor > c.minor,
                    Wild::Major | Wild::None => ord == Ordering::Greater,
                }
            }
            Op::Lt => ord == Ordering::Less,
            Op::Ge => ord != Ordering::Less,
            Op::Le => match self.wild {
                Wild::None => ord != Ordering::Greater,
                Wild::Minor => v.major <= c.major,
                Wild::Major | Wild::Patch => {
                    v.major < c.major || (v.major == c.major && v.minor <= c.minor)
                }
            },
            Op::Tilde => self.tilde(v, ord),
            Op::Caret => {
                if ord == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.wild == Wild::Minor {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.wild == Wild::Patch {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                v.patch == c.patch
            }
        }
    }

    /// `~`: at least the comparator's version, same major, and same minor unless the minor
    /// was a wildcard; `~0.0.0` (and `~*`) admits everything.
    fn tilde(&self, v: &Version, ord: Ordering) -> bool {
        let c = &self.version;
        if ord == Ordering::Less {
            return false;
        }
        if c.major == 0
            && c.minor == 0
            && c.patch == 0
            && matches!(self.wild, Wild::None | Wild::Major)
        {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.wild == Wild::Minor
    }
}

/// Whitespace as Masterminds sees it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

fn skip_space(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8))
}

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'x' | b'X' | b'*')
}

fn is_identifier_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// One AND group: comparators separated by whitespace or a comma.
fn parse_group(text: &str) -> Result<Vec<Comparator>, String> {
    let mut rest = skip_space(text);
    if rest.is_empty() {
        return Err(if text.is_empty() {
            "empty constraint".to_owned()
        } else {
            "blank constraint".to_owned()
        });
    }
    let mut out = Vec::with_capacity(2);
    loop {
        let (op, after_op) = scan_op(rest);
        let after_op = skip_space(after_op);
        let start = rest;
        let (version, after) = scan_version(after_op).map_err(|p| {
            format!(
                "{p} in {:?}",
                start.split([',']).next().unwrap_or(start).trim()
            )
        })?;

        // A hyphen range: a bare version, whitespace, `-`, whitespace, a bare version.
        let trimmed = skip_space(after);
        let mut after = after;
        if op.is_none() && trimmed.len() < after.len() && trimmed.starts_with('-') {
            let past_hyphen = &trimmed[1..];
            let upper_text = skip_space(past_hyphen);
            if upper_text.len() < past_hyphen.len() {
                let (upper, after_upper) = scan_version(upper_text)
                    .map_err(|p| format!("{p} after the \"-\" of a hyphen range"))?;
                out.push(version.with_op(Op::Ge));
                out.push(upper.with_op(Op::Le));
                after = after_upper;
                let trimmed = skip_space(after);
                if trimmed.is_empty() {
                    return Ok(out);
                }
                rest = next_comparator(after, trimmed)?;
                continue;
            }
        }
        out.push(version.with_op(op.unwrap_or(Op::Eq)));
        let trimmed = skip_space(after);
        if trimmed.is_empty() {
            return Ok(out);
        }
        rest = next_comparator(after, trimmed)?;
    }
}

/// After a comparator: a comma or whitespace must separate it from the next one.
fn next_comparator<'a>(after: &'a str, trimmed: &'a str) -> Result<&'a str, String> {
    let next = if let Some(past_comma) = trimmed.strip_prefix(',') {
        skip_space(past_comma)
    } else if trimmed.len() < after.len() {
        trimmed
    } else {
        return Err(format!(
            "unexpected {:?} after a version",
            trimmed.chars().take(12).collect::<String>()
        ));
    };
    if next.is_empty() {
        return Err("a comma must be followed by another comparator".to_owned());
    }
    Ok(next)
}

fn scan_op(s: &str) -> (Option<Op>, &str) {
    let two = |op| (Some(op), &s[2..]);
    let one = |op| (Some(op), &s[1..]);
    match s.as_bytes() {
        [b'!', b'=', ..] => two(Op::Ne),
        [b'>', b'=', ..] | [b'=', b'>', ..] => two(Op::Ge),
        [b'<', b'=', ..] | [b'=', b'<', ..] => two(Op::Le),
        [b'~', b'>', ..] => two(Op::Tilde),
        [b'=', ..] => one(Op::Eq),
        [b'>', ..] => one(Op::Gt),
        [b'<', ..] => one(Op::Lt),
        [b'~', ..] => one(Op::Tilde),
        [b'^', ..] => one(Op::Caret),
        _ => (None, s),
    }
}

/// A comparator's version before its operator is known.
struct Partial {
    version: Version,
    wild: Wild,
}

impl Partial {
    fn with_op(self, op: Op) -> Comparator {
        Comparator {
            op,
            version: self.version,
            wild: self.wild,
        }
    }
}

/// Scans `v?SEG(.SEG(.SEG)?)?(-PRE)?(+BUILD)?` from the front of `s`; returns the version
/// and the unread rest.
fn scan_version(s: &str) -> Result<(Partial, &str), String> {
    let bytes = s.as_bytes();
    let mut i = usize::from(bytes.first() == Some(&b'v'));
    let mut segments: [&str; 3] = ["", "", ""];
    let mut n = 0;
    loop {
        let start = i;
        while i < bytes.len() && is_segment_char(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(if s.is_empty() {
                "missing version".to_owned()
            } else {
                format!(
                    "expected a version (like 1.2.3, 1.2.x or *) at {:?}",
                    s.chars().take(12).collect::<String>()
                )
            });
        }
        segments[n] = &s[start..i];
        n += 1;
        if n == 3 || i + 1 >= bytes.len() || bytes[i] != b'.' || !is_segment_char(bytes[i + 1]) {
            break;
        }
        i += 1;
    }
    let mut pre = "";
    if bytes.get(i) == Some(&b'-') {
        let end = scan_identifiers(bytes, i + 1);
        if end > i + 1 {
            pre = &s[i + 1..end];
            i = end;
        }
    }
    if bytes.get(i) == Some(&b'+') {
        let end = scan_identifiers(bytes, i + 1);
        if end > i + 1 {
            i = end;
        }
    }

    let is_wild = |seg: &str| matches!(seg, "x" | "X" | "*");
    let number = |seg: &str| -> Result<u64, String> {
        if !seg.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "version part {seg:?} is neither a number nor a wildcard (x, X, *)"
            ));
        }
        seg.parse::<u64>()
            .map_err(|_| format!("version part {seg:?} is too large"))
    };
    let (wild, major, minor, patch) = if is_wild(segments[0]) {
        (Wild::Major, 0, 0, 0)
    } else if n < 2 || is_wild(segments[1]) {
        (Wild::Minor, number(segments[0])?, 0, 0)
    } else if n < 3 || is_wild(segments[2]) {
        (Wild::Patch, number(segments[0])?, number(segments[1])?, 0)
    } else {
        (
            Wild::None,
            number(segments[0])?,
            number(segments[1])?,
            number(segments[2])?,
        )
    };
    let pre = if pre.is_empty() {
        Prerelease::EMPTY
    } else {
        Prerelease::new(pre).map_err(|e| format!("pre-release {pre:?}: {e}"))?
    };
    let version = Version {
        major,
        minor,
        patch,
        pre,
        build: semver::BuildMetadata::EMPTY,
    };
    Ok((Partial { version, wild }, &s[i..]))
}

/// The index just past dot-separated identifiers (`[0-9A-Za-z-]+`) starting at `i`, or `i`
/// when there is none.
fn scan_identifiers(bytes: &[u8], i: usize) -> usize {
    let mut end = i;
    loop {
        let start = end;
        while end < bytes.len() && is_identifier_char(bytes[end]) {
            end += 1;
        }
        if end == start {
            return start;
        }
        if end + 1 < bytes.len() && bytes[end] == b'.' && is_identifier_char(bytes[end + 1]) {
            end += 1;
            continue;
        }
        return end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn admits(range: &str, version: &str) -> bool {
        Range::parse(range)
            .unwrap_or_else(|e| panic!("{range:?} should parse: {e}"))
            .matches(&v(version))
    }

    fn check(range: &str, yes: &[&str], no: &[&str]) {
        for version in yes {
            assert!(admits(range, version), "{range:?} should admit {version}");
        }
        for version in no {
            assert!(!admits(range, version), "{range:?} should refuse {version}");
        }
    }

    #[test]
    fn wildcard_patch_selects_one_minor_line() {
        check(
            "1.0.x",
            &["1.0.0", "1.0.1", "1.0.99"],
            &["0.9.9", "1.1.0", "2.0.0"],
        );
        check("1.2", &["1.2.0", "1.2.9"], &["1.3.0", "1.1.9"]);
        check("=1.2", &["1.2.0", "1.2.9"], &["1.3.0"]);
        check("v1.0.x", &["1.0.3"], &["1.1.0"]);
    }

    #[test]
    fn wildcard_minor_selects_one_major_line() {
        check("1.x", &["1.0.0", "1.9.9"], &["2.0.0", "0.9.0"]);
        check("1", &["1.0.0", "1.9.9"], &["2.0.0"]);
        check("1.X.x", &["1.5.0"], &["2.0.0"]);
    }

    #[test]
    fn star_matches_every_release_but_no_prerelease() {
        check("*", &["0.0.0", "1.2.3", "99.0.0"], &["1.2.3-rc.1"]);
        check("x", &["3.0.0"], &["3.0.0-alpha"]);
    }

    #[test]
    fn explicit_comparisons() {
        check(">=1.2.0 <2.0.0", &["1.2.0", "1.9.9"], &["1.1.9", "2.0.0"]);
        check(">=1.2.0, <2.0.0", &["1.5.0"], &["2.0.0"]);
        check(">= 1.2.0 , < 2.0.0", &["1.5.0"], &["2.0.0"]);
        check("=1.2.3", &["1.2.3"], &["1.2.4"]);
        check("1.2.3", &["1.2.3"], &["1.2.4"]);
        check("!=1.2.3", &["1.2.4", "1.2.2"], &["1.2.3"]);
        check(">1.2.3", &["1.2.4"], &["1.2.3"]);
        check("<1.2.3", &["1.2.2"], &["1.2.3"]);
        check("<=1.2.3", &["1.2.3"], &["1.2.4"]);
        check("=>1.2.3", &["1.2.3"], &["1.2.2"]);
        check("=<1.2.3", &["1.2.3"], &["1.2.4"]);
        check(">0,<2.0", &["1.0.0", "1.9.9"], &["0.5.0", "2.0.0"]);
    }

    #[test]
    fn partial_versions_in_comparisons_follow_masterminds() {
        // `>1.2` means a higher minor, `>1` a higher major.
        check(">1.2", &["1.3.0", "2.0.0"], &["1.2.9"]);
        check(">1", &["2.0.0"], &["1.9.9"]);
        // `<=1.2` includes all of 1.2.x; `<=2.x` all of 2.
        check("<=1.2", &["1.2.9", "0.1.0"], &["1.3.0"]);
        check("<=2.x", &["2.9.9"], &["3.0.0"]);
        check(">=1.2.x", &["1.2.0"], &["1.1.9"]);
        check("<1.2", &["1.1.9"], &["1.2.0"]);
        check("!=1.2.x", &["1.3.0", "2.2.0"], &["1.2.0", "1.2.7"]);
        check("!=1.x", &["2.0.0"], &["1.5.0"]);
    }

    #[test]
    fn caret_ranges() {
        check("^1.2.3", &["1.2.3", "1.9.0"], &["1.2.2", "2.0.0"]);
        check("^1.2", &["1.2.0", "1.9.9"], &["1.1.0", "2.0.0"]);
        check("^1.2.x", &["1.2.0", "1.9.9"], &["2.0.0"]);
        check("^2.x", &["2.0.0", "2.5.0"], &["3.0.0"]);
        check("^0.2.3", &["0.2.3", "0.2.9"], &["0.3.0", "0.2.2"]);
        check("^0.2", &["0.2.0", "0.2.9"], &["0.3.0"]);
        check("^0.0.3", &["0.0.3"], &["0.0.4"]);
        check("^0.0", &["0.0.3"], &["0.1.0"]);
        check("^0", &["0.2.3"], &["1.0.0"]);
    }

    #[test]
    fn tilde_ranges() {
        check("~1.2.3", &["1.2.3", "1.2.9"], &["1.3.0", "1.2.2"]);
        check("~>1.2.3", &["1.2.4"], &["1.3.0"]);
        check("~1", &["1.0.0", "1.9.0"], &["2.0.0"]);
        check("~2.3", &["2.3.0", "2.3.9"], &["2.4.0"]);
        check("~1.2.x", &["1.2.0"], &["1.3.0"]);
        check("~1.x", &["1.5.0"], &["2.0.0"]);
    }

    #[test]
    fn hyphen_ranges_are_inclusive() {
        check(
            "1.2 - 1.4",
            &["1.2.0", "1.4.0", "1.4.9"],
            &["1.1.9", "1.5.0"],
        );
        check("1.2.3 - 2.3.4", &["1.2.3", "2.3.4"], &["2.3.5", "1.2.2"]);
        check("v1.2 - v1.4.5", &["1.4.5"], &["1.4.6"]);
        check("1.2 - 1.4, !=1.3.1", &["1.3.0"], &["1.3.1"]);
    }

    #[test]
    fn hyphen_without_spaces_is_a_prerelease() {
        // Masterminds: `1.2-1.4.5` is 1.2 with pre-release 1.4.5.
        check("1.2-1.4.5", &["1.2.0-1.4.5", "1.2.3"], &["1.3.0"]);
    }

    #[test]
    fn or_groups() {
        check(
            ">= 1.2, < 3.0.0 || >= 4.2.3",
            &["1.2.0", "2.9.9", "4.2.3"],
            &["3.0.0", "4.2.2"],
        );
        check("1.0.x || 2.0.x", &["1.0.1", "2.0.1"], &["1.1.0"]);
    }

    #[test]
    fn prereleases_only_when_a_comparator_in_the_group_has_one() {
        check(">=1.2.3", &["1.2.3"], &["1.2.4-rc.1", "2.0.0-alpha"]);
        check(
            ">=1.2.3-0",
            &["1.2.3-rc.1", "1.2.4-beta", "1.2.3"],
            &["1.2.2"],
        );
        // One comparator with a pre-release opens the whole group (Masterminds v3.4).
        // 2.0.0-rc.1 sorts before 2.0.0, so `<2.0.0` admits it here (as in Masterminds).
        check(
            ">=1.0.0-0 <2.0.0",
            &["1.5.0-rc.1", "2.0.0-rc.1"],
            &["2.0.0", "0.9.0-rc.1"],
        );
        // Flux's documented release-candidate example.
        check(
            "^1.x-0",
            &["1.0.0-rc.1", "1.9.0-rc.2", "1.9.0"],
            &["2.0.0-rc.1", "0.9.0"],
        );
        // The other OR group does not admit pre-releases.
        check(
            "1.0.x || >=2.0.0-0",
            &["2.1.0-rc.1", "1.0.3"],
            &["1.0.4-rc.1"],
        );
        check(
            "^0.2.3-beta.2",
            &["0.2.3-beta.4", "0.2.4-beta.2"],
            &["0.3.4-beta.2"],
        );
        check("=1.2.3-rc.1", &["1.2.3-rc.1"], &["1.2.3-rc.2", "1.2.3"]);
    }

    #[test]
    fn prerelease_precedence_is_ascii_by_spec() {
        // A-Z sort before a-z, so `>=1.2.3-BETA` admits 1.2.3-alpha.
        check(">=1.2.3-BETA", &["1.2.3-alpha"], &[]);
        check(
            ">=1.2.3-alpha.2",
            &["1.2.3-alpha.10", "1.2.3-beta"],
            &["1.2.3-alpha.1"],
        );
    }

    #[test]
    fn build_metadata_is_ignored_in_ranges_and_versions() {
        check("=1.2.3+abc", &["1.2.3", "1.2.3+zzz"], &["1.2.4"]);
    }

    /// Facts about Masterminds v3.4's `Check`: (range, version, admitted).
    #[test]
    fn agrees_with_masterminds_on_its_documented_cases() {
        let cases = [
            ("~0.0.0", "1.2.3", true),
            ("0.x.x", "1.2.3", false),
            ("0.0.x", "1.2.3", false),
            ("0.0.0", "1.2.3", false),
            ("^0.0.0", "1.2.3", false),
            ("= 2.0", "1.2.3", false),
            ("= 2.0", "2.0.0", true),
            ("4.1", "4.1.0", true),
            ("4.1.x", "4.1.3", true),
            ("1.x", "1.4.0", true),
            ("!=4.1", "4.1.0", false),
            ("!=4.1-alpha", "4.1.0-alpha", false),
            ("!=4.1-alpha", "4.1.1-alpha", false),
            ("!=4.1-alpha", "4.1.0", true),
            ("!=4.1", "5.1.0", true),
            ("!=4.x", "5.1.0", true),
            ("!=4.x", "4.1.0", false),
            ("!=4.1.x", "4.2.0", true),
            ("!=4.2.x", "4.2.3", false),
            (">1.1", "4.1.0", true),
            (">1.1", "1.1.0", false),
            ("<1.1", "0.1.0", true),
            ("<1.1", "1.1.0", false),
            ("<1.1", "1.1.1", false),
            ("<1.x", "1.1.1", false),
            ("<1.x", "0.1.1", true),
            ("<1.x", "2.0.0", false),
            ("<1.1.x", "1.2.1", false),
            ("<1.1.x", "1.1.500", false),
            ("<1.1.x", "1.0.500", true),
            ("<1.2.x", "1.1.1", true),
            (">=1.1", "4.1.0", true),
            (">=1.1", "4.1.0-beta", false),
            (">=1.1", "1.1.0", true),
            (">=1.1", "0.0.9", false),
            ("<=1.1", "0.1.0", true),
            ("<=1.1", "0.1.0-alpha", false),
            ("<=1.1-a", "0.1.0-alpha", true),
            ("<=1.1", "1.1.0", true),
            ("<=1.x", "1.1.0", true),
            ("<=2.x", "3.0.0", false),
            ("<=1.1", "1.1.1", true),
            ("<=1.1.x", "1.2.500", false),
            ("<=4.5", "3.4.0", true),
            ("<=4.5", "3.7.0", true),
            ("<=4.5", "4.6.3", false),
            (">1.1, <2", "1.1.1", false),
            (">1.1, <2", "1.2.1", true),
            (">1.1, <3", "4.3.2", false),
            (">=1.1, <2, !=1.2.3", "1.2.3", false),
            (">1.1    <3", "4.3.2", false),
            (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", false),
            (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", true),
            (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", false),
            ("> 1.1, <     2", "1.1.1", false),
            (">=1.1    < 2    != 1.2.3", "1.2.3", false),
            (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", true),
            (">= 1.0.0  <= 2.0.0-beta", "1.0.1", true),
            (">= 1.0.0  <= 2.0.0-beta", "3.0.0", false),
            (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", true),
            (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", false),
            (
                ">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3",
                "1.0.1-beta",
                true,
            ),
            (
                ">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3",
                "1.0.1-beta",
                false,
            ),
            (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", true),
            ("1.1 - 2", "1.1.1", true),
            ("1.5.0 - 4.5", "3.7.0", true),
            ("1.1-3", "4.3.2", false),
            ("^1.1", "1.1.1", true),
            ("^1.1", "4.3.2", false),
            ("^1.x", "1.1.1", true),
            ("^2.x", "1.1.1", false),
            ("^1.x", "2.1.1", false),
            ("^1.x", "1.1.1-beta1", false),
            ("^1.1.2-alpha", "1.2.1-beta1", true),
            ("^1.2.x-alpha", "1.1.1-beta1", false),
            ("^0.0.1", "0.0.1", true),
            ("^0.0.1", "0.3.1", false),
            ("~*", "2.1.1", true),
            ("~1", "2.1.1", false),
            ("~1", "1.3.5", true),
            ("~1.x", "2.1.1", false),
            ("~1.x", "1.3.5", true),
            ("~1.1", "1.1.1", true),
            ("~1.1", "1.1.1-alpha", false),
            ("~1.1-alpha", "1.1.1-beta", true),
            ("~1.1.1-beta", "1.1.1-alpha", false),
            ("~1.1.1-beta", "1.1.1", true),
            ("~1.2.3", "1.2.5", true),
            ("~1.2.3", "1.2.2", false),
            ("~1.2.3", "1.3.2", false),
            ("~1.1", "1.2.3", false),
            ("~1.3", "2.4.5", false),
            ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
            ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", true),
            ("^1.1.1-alpha", "1.1.1-beta", true),
            ("^1.1.1-beta", "1.1.1-alpha", false),
            ("~1.3.6-alpha", "1.3.5-beta", false),
            ("~1.3.5-alpha", "1.3.5-beta", true),
        ];
        for (range, version, expected) in cases {
            assert_eq!(admits(range, version), expected, "{range:?} on {version}");
        }
    }

    #[test]
    fn refuses_ranges_masterminds_refuses() {
        for bad in [
            "",
            " ",
            "1.0.0p",
            "1x",
            "x1",
            "-1",
            "a",
            ">= bar",
            "BAR >= 1.2.3",
            "1.2.3.4",
            "1.0 ||",
            "|| 1.0",
            ">=1.0,",
            ">=1.0,,<2",
            "~1.2 - 1.4",
            "1.0 - >2.0",
            "1.",
            "1.2.3-",
            "1.2.3-01",
            "> = 1.2",
            "18446744073709551616",
        ] {
            let err = Range::parse(bad).expect_err(bad);
            assert!(
                matches!(err, PolicyError::InvalidRange { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn accepts_flux_documented_ranges() {
        for good in [
            "1.0.x",
            "^1.0",
            "=1.0.0",
            "~1.0",
            ">=1.0",
            ">0,<2.0",
            "5.1.x",
            ">=1.0.0",
            "^1.x-0",
            "v2.3.5-20161202202307-sha.e8fc5e5",
            ">= 1.2.3 < 2.0 || => 3.0 < 4",
            "3 - 4 || => 3.0, < 4",
            "01.2.3",
        ] {
            Range::parse(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn error_points_at_the_bad_part() {
        let msg = Range::parse(">=1.0 <2.0 || 1.0.0p")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("OR group 2"), "{msg}");
        assert!(msg.contains("\"p\""), "{msg}");
        let msg = Range::parse("1x").unwrap_err().to_string();
        assert!(
            msg.contains("\"1x\" is neither a number nor a wildcard"),
            "{msg}"
        );
    }

    #[test]
    fn tags_are_strict_semver_with_an_optional_v() {
        assert_eq!(parse_tag("1.2.3"), Some(v("1.2.3")));
        assert_eq!(parse_tag("v1.2.3-rc.1+b5"), Some(v("1.2.3-rc.1+b5")));
        for not_a_version in [
            "1.2", "1.0.0.1", "1.0.0p", "01.2.3", "V1.2.3", "vv1.2.3", "b1.2.3", "latest",
            "1.2.3-01", "", "v",
        ] {
            assert_eq!(parse_tag(not_a_version), None, "{not_a_version:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn version() -> impl Strategy<Value = Version> {
            (
                0u64..4,
                0u64..4,
                0u64..4,
                prop::option::of("(alpha|beta|rc)(\\.[0-9])?"),
            )
                .prop_map(|(major, minor, patch, pre)| Version {
                    major,
                    minor,
                    patch,
                    pre: pre.map_or(Prerelease::EMPTY, |p| Prerelease::new(&p).unwrap()),
                    build: semver::BuildMetadata::EMPTY,
                })
        }

        fn partial() -> impl Strategy<Value = String> {
            prop_oneof![
                (0u64..4).prop_map(|a| a.to_string()),
                (0u64..4, 0u64..4).prop_map(|(a, b)| format!("{a}.{b}")),
                (0u64..4, 0u64..4, 0u64..4).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
                (0u64..4).prop_map(|a| format!("{a}.x")),
            ]
        }

        proptest! {
            #[test]
            fn parsing_never_panics(s in "\\PC{0,24}") {
                let _ = Range::parse(&s);
            }

            #[test]
            fn parsing_operator_soup_never_panics(s in "[0-9xv*.\\-+ ,|<>=!~^a-c]{0,20}") {
                let _ = Range::parse(&s);
            }

            #[test]
            fn a_hyphen_range_is_ge_and_le(a in partial(), b in partial(), v in version()) {
                let hyphen = Range::parse(&format!("{a} - {b}")).unwrap();
                let explicit = Range::parse(&format!(">={a}, <={b}")).unwrap();
                prop_assert_eq!(hyphen.matches(&v), explicit.matches(&v));
            }

            #[test]
            fn or_is_the_union_of_its_groups(a in partial(), b in partial(), v in version()) {
                let either = Range::parse(&format!("^{a} || ~{b}")).unwrap();
                let left = Range::parse(&format!("^{a}")).unwrap();
                let right = Range::parse(&format!("~{b}")).unwrap();
                prop_assert_eq!(either.matches(&v), left.matches(&v) || right.matches(&v));
            }

            #[test]
            fn a_release_range_never_admits_a_prerelease(a in partial(), v in version()) {
                for op in ["", "=", "!=", ">", "<", ">=", "<=", "~", "^"] {
                    let range = Range::parse(&format!("{op}{a}")).unwrap();
                    if !v.pre.is_empty() {
                        prop_assert!(!range.matches(&v), "{op}{a} admitted {v}");
                    }
                }
            }

            #[test]
            fn exact_version_matches_only_itself_by_precedence(v in version(), w in version()) {
                let range = Range::parse(&format!("={v}")).unwrap();
                prop_assert_eq!(range.matches(&w), w.cmp_precedence(&v) == Ordering::Equal);
            }
        }
    }
}
