//! `image-reflector serve`: the webhooks, probes and metrics (and, later, the controllers).

use crate::admission::Admission;
use crate::server::{AppState, Readiness, ServerConfig, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Parses a listen address; `:PORT` means every interface, as in Flux's flags.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse().map_err(|_| {
        format!("{s:?} is not a listen address; write HOST:PORT with an IP address (\"127.0.0.1:9443\", \"[::]:9443\") or \":PORT\"")
    })
}

fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    match crate::api::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Arguments of `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// HTTPS address of the admission webhooks (/mutate, /validate).
    #[arg(long, default_value = "0.0.0.0:9443", value_parser = parse_listen_addr)]
    pub webhook_addr: SocketAddr,
    /// HTTP address of /healthz and /readyz.
    #[arg(long, default_value = ":9440", value_parser = parse_listen_addr)]
    pub health_addr: SocketAddr,
    /// HTTP address of /metrics.
    #[arg(long, default_value = ":8080", value_parser = parse_listen_addr)]
    pub metrics_addr: SocketAddr,
    /// PEM certificate chain of the webhook server; reloaded when the file changes.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs/tls.crt")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the webhook server; reloaded when the file changes.
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs/tls.key")]
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration_flag)]
    pub tls_reload_interval: Duration,
    /// Serve only the webhooks, without controllers and without a cluster connection;
    /// checks that need cluster state (cross-namespace access) are skipped.
    #[arg(long)]
    pub webhook_only: bool,
    /// Refuse ImagePolicies that reference an ImageRepository in another namespace.
    #[arg(long)]
    pub no_cross_namespace_refs: bool,
}

impl ServeArgs {
    /// The server part of the configuration.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            webhook_addr: self.webhook_addr,
            health_addr: self.health_addr,
            metrics_addr: self.metrics_addr,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            tls_reload_interval: self.tls_reload_interval,
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Runs `serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !args.webhook_only {
        anyhow::bail!(
            "the controllers are not built into this binary yet; run `image-reflector serve --webhook-only` to serve the admission webhooks alone"
        );
    }
    let admission = Admission {
        cluster: None,
        no_cross_namespace_refs: args.no_cross_namespace_refs,
    };
    let state = AppState::new(
        admission,
        Readiness::new(false),
        prometheus_client::registry::Registry::default(),
    );
    serve(&args.server_config(), state, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_accept_flux_style_ports() {
        assert_eq!(
            parse_listen_addr(":9440").unwrap(),
            "0.0.0.0:9440".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:8080").unwrap(),
            "[::1]:8080".parse().unwrap()
        );
        assert!(
            parse_listen_addr("localhost")
                .unwrap_err()
                .contains("HOST:PORT")
        );
    }
}
