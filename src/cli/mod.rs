//! The command line: `image-reflector <command>`. Each subcommand lives in its own file.

pub mod crds;
pub mod flux_flags;
pub mod policy;
pub mod scan;
pub mod serve;
pub mod validate;

use clap::{Parser, Subcommand};

/// Flux's image-reflector-controller, reimplemented: admission webhooks and controllers for
/// ImageRepository and ImagePolicy.
#[derive(Parser, Debug)]
// A repeated flag overrides the earlier one, as Go's flag packages do (Flux's args and a
// kustomize patch may both set one).
#[command(name = "image-reflector", version, about, args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: crate::telemetry::LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admission webhooks, health probes and metrics (and the controllers).
    Serve(Box<serve::ServeArgs>),
    /// Check ImageRepository and ImagePolicy files offline with the webhooks' rules.
    Validate(validate::ValidateArgs),
    /// Print the CustomResourceDefinitions (all served versions) as YAML.
    Crds(crds::CrdsArgs),
    /// List every tag of an image repository, as an ImageRepository scan would.
    Scan(Box<scan::ScanArgs>),
    /// Evaluate an ImagePolicy rule (semver, alphabetical, numerical, filterTags) on a list
    /// of tags and print the selected one. Exit 1 when no tag matches.
    Policy(Box<policy::PolicyArgs>),
}

/// Runs the parsed command line; the process exit code is the result.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Validate(args) => validate::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Scan(args) => scan::run(*args).await,
        Command::Policy(args) => policy::run(*args).await,
    }
}
