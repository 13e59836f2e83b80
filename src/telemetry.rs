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

/// Crates whose debug lines can carry a secret, and so log at info at most unless the
/// filter names them: oci-client logs a token service's refusal body verbatim, and token
/// services may quote the credentials they refused (the end-to-end secret scan found it).
const QUIET_CRATES: [&str; 1] = ["oci_client"];

/// The filter of `spec` (a level or tracing filter directives), with [`QUIET_CRATES`]
/// kept at info when it would let their debug lines through.
fn filter(spec: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    let mut filter = EnvFilter::try_new(spec)?;
    let verbose = filter
        .max_level_hint()
        .is_none_or(|level| level > tracing_subscriber::filter::LevelFilter::INFO);
    for krate in QUIET_CRATES {
        if verbose && !spec.contains(krate) {
            filter = filter.add_directive(format!("{krate}=info").parse()?);
        }
    }
    Ok(filter)
}

/// Installs the global subscriber, writing to stderr. Fails on a filter that does not parse.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => filter(&v),
        _ => filter(&args.log_level),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with the filter of `spec` writes for one debug line of
    /// oci-client and one of ours.
    fn logged(spec: &str) -> String {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(spec).expect("filter"))
            .with_writer(move || SinkWriter(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "oci_client::client", "refusal body: echoed-password");
            tracing::debug!(target: "image_reflector::scanner", "ours");
        });
        let bytes = out.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    struct SinkWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SinkWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_level_keeps_oci_clients_debug_lines_out_unless_asked_for() {
        for spec in ["debug", "trace", "info,image_reflector=debug"] {
            let out = logged(spec);
            assert!(out.contains("ours"), "{spec}: {out}");
            assert!(!out.contains("echoed-password"), "{spec}: {out}");
        }
        assert!(logged("debug,oci_client=debug").contains("echoed-password"));
        assert!(!logged("info").contains("ours"));
    }
}
