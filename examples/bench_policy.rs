//! Benchmark of tag selection, run by `make bench-policy` (bench/policy.sh) in a release
//! build: each policy kind over the same N tags (default 100,000), without and with
//! filterTags. Prints the median time per evaluation over several runs, and, as a
//! baseline measured in the same run on the same tags, the median time of a plain sort of
//! the tags (what a sort-then-take-last implementation pays before any parsing).
//!
//! Usage: bench_policy [TAGS] [RUNS]

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use image_reflector::policy::{FilterTags, Policy, Selector};

/// A deterministic generator (64-bit LCG), so every run sees the same tags.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A registry's worth of mixed tags: semver (with and without `v`, pre-releases, build
/// metadata), RFC 3339 release stamps, branch builds with numbers, plain numbers, words.
fn tags(n: usize) -> Vec<String> {
    let mut rng = Lcg(0x5eed);
    let words = [
        "latest", "stable", "edge", "nightly", "dev", "main", "canary",
    ];
    (0..n)
        .map(|i| match rng.below(10) {
            0..=3 => {
                let v = if rng.below(2) == 0 { "v" } else { "" };
                let (a, b, c) = (rng.below(4), rng.below(30), rng.below(100));
                match rng.below(6) {
                    0 => format!("{v}{a}.{b}.{c}-rc.{}", rng.below(5)),
                    1 => format!("{v}{a}.{b}.{c}+build.{i}"),
                    _ => format!("{v}{a}.{b}.{c}"),
                }
            }
            4 | 5 => format!(
                "RELEASE.20{:02}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
                15 + rng.below(10),
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            6 | 7 => format!(
                "main-{:07x}-{}",
                rng.next() & 0xfff_ffff,
                rng.below(1_000_000)
            ),
            8 => format!("{}", rng.below(10_000_000)),
            _ => format!("{}-{}", words[rng.below(words.len() as u64) as usize], i),
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    f(); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(15), |a| a.parse())?;
    let tags = tags(n);
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();

    let baseline = time(runs, || {
        let mut copy = refs.clone();
        copy.sort_unstable();
        black_box(copy.last().copied());
    });

    let filter = |p: &str, e: &str| FilterTags::new(p, Some(e));
    let cases: Vec<(&str, Selector)> = vec![
        ("semver ^1.x", Selector::new(Policy::semver("^1.x")?, None)),
        (
            "semver ^1.x + filterTags",
            Selector::new(
                Policy::semver("^1.x")?,
                Some(filter(r"^v?(?P<v>\d+\.\d+\.\d+.*)$", "$v")?),
            ),
        ),
        (
            "alphabetical asc",
            Selector::new(Policy::alphabetical("asc")?, None),
        ),
        (
            "alphabetical asc + filterTags",
            Selector::new(
                Policy::alphabetical("asc")?,
                Some(filter(r"^RELEASE\.(?P<timestamp>.*)Z$", "$timestamp")?),
            ),
        ),
        (
            "numerical asc",
            Selector::new(Policy::numerical("asc")?, None),
        ),
        (
            "numerical asc + filterTags",
            Selector::new(
                Policy::numerical("asc")?,
                Some(filter(r"^main-[a-f0-9]+-(?P<ts>\d+)$", "$ts")?),
            ),
        ),
    ];

    println!(
        "policy selection over {n} tags, median of {runs} runs ({} build); \
         baseline: plain sort of the same tags = {:.2} ms",
        if cfg!(debug_assertions) {
            "DEBUG: figures not meaningful"
        } else {
            "release"
        },
        ms(baseline)
    );
    println!(
        "{:<32} {:>10} {:>14} {:>8}  selected",
        "case", "ms/eval", "ours/baseline", "target"
    );
    for (name, selector) in &cases {
        let took = time(runs, || {
            black_box(selector.select(refs.iter().copied()));
        });
        let selected = selector
            .select(refs.iter().copied())
            .map_or("(none)".to_owned(), |s| s.tag.to_owned());
        let verdict = if took < Duration::from_millis(20) {
            "ok"
        } else {
            "SLOW"
        };
        println!(
            "{name:<32} {:>10.2} {:>14.2} {:>8}  {selected}",
            ms(took),
            took.as_secs_f64() / baseline.as_secs_f64(),
            verdict
        );
    }
    Ok(())
}
