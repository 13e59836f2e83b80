//! `image-reflector policy`: evaluate an ImagePolicy's selection rule without a cluster,
//! on tags from a file (or stdin), or on the tags of a live repository.
//!
//! The live mode flattens `scan`'s registry flags ([`RegistryArgs`]: credentials, TLS,
//! proxy, exclusions, limits) and scans in this process with the same preparation
//! ([`scan::prepare`]) and scanner, so those flags are accepted, refused and explained
//! exactly as `scan` does; they may come before or after IMAGE and the policy flags.
//!
//! Exit codes: 0 a tag was selected (printed on stdout); 1 no tag matched; 2 the command
//! line is wrong (flags, or a range, order, pattern, extract, IMAGE or registry flag that
//! is invalid); 3 the tags could not be read (the file, or the registry scan failed for
//! any reason, authentication and not-found included: `scan`'s distinct codes 3 and 4
//! would clash with this command's 3, and the message says which it was).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::cli::scan::{self, RegistryArgs, UsageError};
use crate::policy::{Counts, Evaluation, FilterTags, Order, Policy, Selector, semver::Range};
use crate::scanner::{ScanErrorKind, ScanOutcome};

/// Exit code when no tag matched.
pub const EXIT_NO_MATCH: u8 = 1;
/// Exit code for a wrong command line (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the tags could not be read.
pub const EXIT_NO_TAGS: u8 = 3;

/// `asc` or `desc` on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderArg {
    /// Select the highest value.
    Asc,
    /// Select the lowest value.
    Desc,
}

impl From<OrderArg> for Order {
    fn from(o: OrderArg) -> Order {
        match o {
            OrderArg::Asc => Order::Asc,
            OrderArg::Desc => Order::Desc,
        }
    }
}

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The selected tag alone.
    #[default]
    Text,
    /// The selection, the candidates after filtering and counts, as JSON.
    Json,
}

/// Arguments of `policy`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("policy").required(true).multiple(false)
    .args(["semver", "alphabetical", "numerical"])))]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(false)
    .args(["tags_file", "image"])))]
pub struct PolicyArgs {
    /// Select the highest version within RANGE (Masterminds/semver syntax, e.g. "1.2.x",
    /// ">=1.2.0 <2.0.0", "^1.2", "~1.2.3", "1.2 - 1.4", "^1.x-0" for pre-releases).
    #[arg(long, value_name = "RANGE", value_parser = parse_range)]
    pub semver: Option<Range>,
    /// Select the last tag in alphabetical order: asc selects the highest, desc the lowest.
    #[arg(long, value_name = "ORDER", value_enum)]
    pub alphabetical: Option<OrderArg>,
    /// Select the last tag in numerical order: asc selects the highest, desc the lowest.
    #[arg(long, value_name = "ORDER", value_enum)]
    pub numerical: Option<OrderArg>,
    /// Consider only tags this regular expression (Go RE2 syntax) matches.
    #[arg(long, value_name = "RE")]
    pub filter_pattern: Option<String>,
    /// Compare this template of the pattern's groups ($1, ${1}, $name, ${name}) instead of
    /// the tag.
    #[arg(long, value_name = "TPL", requires = "filter_pattern")]
    pub filter_extract: Option<String>,
    /// Read the tags from FILE, one per line ("-" for stdin); blank lines are ignored.
    #[arg(long, value_name = "FILE", conflicts_with_all = scan::REGISTRY_ARG_IDS)]
    pub tags_file: Option<PathBuf>,
    /// Output format: the selected tag (text), or the selection with the candidates after
    /// filtering and counts (json).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Scan this repository for the tags instead (e.g. ghcr.io/org/app), as
    /// `image-reflector scan` does, with its registry flags below.
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn parse_range(s: &str) -> Result<Range, String> {
    Range::parse(s).map_err(|e| e.to_string())
}

impl PolicyArgs {
    /// The selector the flags describe, or the message for a usage error.
    pub fn selector(&self) -> Result<Selector, String> {
        let policy = match (&self.semver, self.alphabetical, self.numerical) {
            (Some(range), None, None) => Policy::Semver(range.clone()),
            (None, Some(order), None) => Policy::Alphabetical {
                order: order.into(),
            },
            (None, None, Some(order)) => Policy::Numerical {
                order: order.into(),
            },
            _ => {
                return Err("give exactly one of --semver, --alphabetical, --numerical".to_owned());
            }
        };
        let filter = match &self.filter_pattern {
            None => None,
            Some(pattern) => Some(
                FilterTags::new(pattern, self.filter_extract.as_deref()).map_err(|e| {
                    let flag = match e {
                        crate::policy::PolicyError::InvalidExtract { .. } => "--filter-extract",
                        _ => "--filter-pattern",
                    };
                    format!("{flag}: {e}")
                })?,
            ),
        };
        Ok(Selector::new(policy, filter))
    }
}

/// Runs `policy`; prints its own errors so that the exit codes stay distinct.
pub async fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let selector = match args.selector() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("image-reflector policy: {message}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let (text, scanned) = match &args.image {
        None => match read_tags(&args) {
            Ok(text) => (text, None),
            Err(e) => {
                eprintln!("image-reflector policy: {e:#}");
                return Ok(ExitCode::from(EXIT_NO_TAGS));
            }
        },
        Some(image) => match scan_image(image, &args.registry).await {
            Ok(scanned) => (String::new(), Some(scanned)),
            Err(code) => return Ok(ExitCode::from(code)),
        },
    };
    let tags: Vec<&str> = match &scanned {
        Some(scanned) => scanned.tags.iter().map(String::as_str).collect(),
        None => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect(),
    };
    report(&selector, tags.into_iter(), scanned.as_ref(), args.output)
}

fn read_tags(args: &PolicyArgs) -> anyhow::Result<String> {
    let Some(path) = &args.tags_file else {
        anyhow::bail!("no tags: give --tags-file FILE or an IMAGE to scan");
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading tags from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("reading tags file {}", path.display()))?;
    }
    Ok(text)
}

/// Scans IMAGE as `scan` would; on failure the message is printed and the result is the
/// exit code to use: 2 for a wrong IMAGE or registry flag, 3 when the scan itself failed.
async fn scan_image(image: &str, registry: &RegistryArgs) -> Result<ScanOutcome, u8> {
    let prepared = match scan::prepare(image, registry) {
        Ok(p) => p,
        Err(UsageError(msg)) => {
            eprintln!("image-reflector policy: {msg}");
            return Err(EXIT_USAGE);
        }
    };
    prepared.run().await.map_err(|e| {
        eprintln!("image-reflector policy: {e}");
        match e.kind() {
            ScanErrorKind::InvalidConfig => EXIT_USAGE,
            _ => EXIT_NO_TAGS,
        }
    })
}

/// Evaluates and prints; the exit code says whether a tag matched.
fn report<'a>(
    selector: &Selector,
    tags: impl Iterator<Item = &'a str>,
    scanned: Option<&ScanOutcome>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let evaluation = selector.evaluate(tags);
    let mut stdout = std::io::stdout().lock();
    match output {
        OutputFormat::Text => {
            if let Some(s) = &evaluation.selected {
                writeln!(stdout, "{}", s.tag)?;
            }
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut stdout, &to_json(selector, &evaluation, scanned))?;
            writeln!(stdout)?;
        }
    }
    stdout.flush()?;
    if evaluation.selected.is_some() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "image-reflector policy: no tag matched: {}",
            describe(selector, &evaluation.counts)
        );
        Ok(ExitCode::from(EXIT_NO_MATCH))
    }
}

/// Why nothing matched, stage by stage.
fn describe(selector: &Selector, c: &Counts) -> String {
    let mut parts = vec![format!("{} tags", c.tags)];
    if let Some(f) = &selector.filter {
        parts.push(format!(
            "{} matched --filter-pattern {:?}",
            c.filtered,
            f.pattern()
        ));
    }
    match &selector.policy {
        Policy::Semver(range) => {
            parts.push(format!("{} not semver", c.not_parsed));
            parts.push(format!(
                "{} outside range {:?}",
                c.out_of_range,
                range.as_str()
            ));
        }
        Policy::Numerical { .. } => parts.push(format!("{} not numbers", c.not_parsed)),
        Policy::Alphabetical { .. } => {}
    }
    parts.join(", ")
}

/// The JSON report (`-o json`): the selection first, then counts, the policy and filter in
/// Flux's spec shape, and the candidates after filtering in input order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'e> {
    /// The scanned repository (live mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'e str>,
    /// The scan's revision (live mode), as an ImageRepository reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<&'e str>,
    selected: Option<Chosen<'e>>,
    counts: ReportCounts,
    policy: Value,
    filter_tags: Option<Value>,
    candidates: Vec<ReportCandidate<'e>>,
}

#[derive(serde::Serialize)]
struct Chosen<'e> {
    tag: &'e str,
    value: &'e str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportCounts {
    tags: usize,
    filtered: usize,
    eligible: usize,
    not_parsed: usize,
    out_of_range: usize,
}

#[derive(serde::Serialize)]
struct ReportCandidate<'e> {
    tag: &'e str,
    value: &'e str,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<&'static str>,
}

fn to_json<'e>(
    selector: &Selector,
    e: &'e Evaluation<'_>,
    scanned: Option<&'e ScanOutcome>,
) -> Report<'e> {
    let policy = match &selector.policy {
        Policy::Semver(range) => json!({"semver": {"range": range.as_str()}}),
        Policy::Alphabetical { order } => json!({"alphabetical": {"order": order.as_str()}}),
        Policy::Numerical { order } => json!({"numerical": {"order": order.as_str()}}),
    };
    let filter_tags = selector.filter.as_ref().map(|f| match f.extract() {
        Some(extract) => json!({"pattern": f.pattern(), "extract": extract}),
        None => json!({"pattern": f.pattern()}),
    });
    Report {
        image: scanned.map(|s| s.canonical_image_name.as_str()),
        revision: scanned.map(|s| s.revision.as_str()),
        selected: e.selected.as_ref().map(|s| Chosen {
            tag: s.tag,
            value: &s.value,
        }),
        counts: ReportCounts {
            tags: e.counts.tags,
            filtered: e.counts.filtered,
            eligible: e.counts.eligible,
            not_parsed: e.counts.not_parsed,
            out_of_range: e.counts.out_of_range,
        },
        policy,
        filter_tags,
        candidates: e
            .candidates
            .iter()
            .map(|c| ReportCandidate {
                tag: c.tag,
                value: &c.value,
                skipped: c.skipped.map(|s| s.as_str()),
            })
            .collect(),
    }
}
