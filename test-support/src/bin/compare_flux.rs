//! `compare-flux`: runs every comparison case against Flux's image-reflector-controller
//! and image-reflector on one control plane and prints, case by case and field by field,
//! where their statuses and events differ (`make compare-flux`; see
//! `tests/compare/README.md`). Exit status 0 when every difference is a known one, 1 when
//! a difference is unknown or a case could not run, 2 on a usage or setup error.

use clap::Parser;
use std::path::PathBuf;
use test_support::compare::{Options, run};

#[derive(Parser, Debug)]
#[command(
    name = "compare-flux",
    about = "The differential between image-reflector and Flux's image-reflector-controller"
)]
struct Args {
    /// Directory of case files.
    #[arg(long, env = "CASES")]
    cases: Option<PathBuf>,
    /// The known differences.
    #[arg(long)]
    known: Option<PathBuf>,
    /// Only the cases marked `fast: true` (the subset `make test` runs).
    #[arg(long)]
    fast: bool,
    /// Only cases whose names match this glob (repeatable).
    #[arg(long = "case")]
    only: Vec<String>,
    /// Cases run at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Print every compared field, not only differences.
    #[arg(long, short)]
    verbose: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut options = Options::default();
    if let Some(dir) = args.cases {
        options.cases_dir = dir;
    }
    if let Some(file) = args.known {
        options.known_file = file;
    }
    options.fast = args.fast;
    options.only = args.only;
    options.jobs = args.jobs;
    options.verbose = args.verbose;
    match run(&options).await {
        Ok(summary) => {
            print!("{}", summary.render());
            if summary.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("compare-flux: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
