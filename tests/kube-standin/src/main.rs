//! `kube-standin --addr 127.0.0.1:0 --crds DIR --webhooks DIR
//! --service NS/NAME=127.0.0.1:PORT --kubeconfig-out FILE`
//!
//! Prints `listening on http://127.0.0.1:PORT` as its first line of standard output, then
//! serves until SIGTERM or Ctrl-C.

use clap::Parser;
use kube_standin::{Options, ServiceRoute, StandIn};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-standin",
    about = "An in-memory Kubernetes API server for tests and demos"
)]
struct Args {
    /// Address to listen on (plain HTTP); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Load every CustomResourceDefinition in the YAML files under DIR (recursively).
    #[arg(long, value_name = "DIR")]
    crds: Option<PathBuf>,
    /// Load every Mutating/ValidatingWebhookConfiguration in the YAML files under DIR.
    #[arg(long, value_name = "DIR")]
    webhooks: Option<PathBuf>,
    /// Route webhook calls for Service NAMESPACE/NAME to ADDR (TLS name NAME.NAMESPACE.svc).
    #[arg(long, value_name = "NAMESPACE/NAME=IP:PORT")]
    service: Vec<ServiceRoute>,
    /// Write a kubeconfig for this server to FILE.
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Installed before the first line is printed, so a SIGTERM right after it is handled.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let api = StandIn::start(Options {
        addr: args.addr,
        crds_dir: args.crds,
        webhooks_dir: args.webhooks,
        services: args.service,
        kubeconfig_out: args.kubeconfig_out,
    })
    .await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", api.url())?;
        out.flush()?;
    }
    tracing::info!(kubeconfig = %api.kubeconfig_path().display(), "serving");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    drop(api);
    Ok(())
}
