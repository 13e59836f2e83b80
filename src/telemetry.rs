//! Logging setup: `--log-level` and `--log-encoding` (json or console), as Flux has them.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEncoding {
    /// One JSON object per line (Flux's default).
    Json,
    /// Human-readable lines.
    Console,
}

/// Logging flags, global to every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Minimum level: trace, debug, info, warn, error (or a tracing filter directive;
    /// RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info", env = "LOG_LEVEL")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "json")]
    pub log_encoding: LogEncoding,
}

/// Installs the global subscriber, writing to stderr. Fails on a filter that does not parse.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(&args.log_level),
    }
    .map_err(|e| {
        anyhow::anyhow!(
            "--log-level {:?}: {e}; use trace, debug, info, warn or error",
            args.log_level
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.log_encoding {
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
        LogEncoding::Console => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
