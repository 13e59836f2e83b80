//! `bench_registry --tags 1000`: the project's paginating registry stand-in
//! (`test_support::fake_registry`) as a process, for `make bench-scale`.
//!
//! Serves the same `--tags` tags under every repository name (`GET /v2/NAME/tags/list`,
//! `n`/`last` pagination with a `Link` header; pages of `--default-page-size` when the
//! client gives no `n`; `n` above `--max-page-size` refused with Quay's 413) and counts
//! the requests it receives. Prints two lines on standard output, then serves until
//! SIGTERM or Ctrl-C:
//!
//! ```text
//! registry 127.0.0.1:PORT
//! counters http://127.0.0.1:PORT2/requests
//! ```
//!
//! `GET /requests` on the second port answers `{"requests": N, "tag_requests": M}`
//! (every `/v2/` request, and the `tags/list` ones), counted since start.
//! Test infrastructure: not part of the image-reflector binary.

use clap::Parser;
use std::io::Write;
use std::sync::Arc;
use test_support::fake_registry::{StandIn, StandInOptions};

#[derive(Parser, Debug)]
#[command(
    name = "bench_registry",
    about = "A paginating registry stand-in that counts requests"
)]
struct Args {
    /// Tags served under every repository name (`1.T.U` semver-style names).
    #[arg(long, default_value_t = 1000)]
    tags: usize,
    /// Page size when the client sends no `n` (0: everything in one page).
    #[arg(long, default_value_t = 100)]
    default_page_size: usize,
    /// Refuse `n` above this with 413 TOO_MANY_TAGS_REQUESTED (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_page_size: usize,
}

fn tag_name(i: usize) -> String {
    format!("1.{}.{}", i / 100, i % 100)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let counter_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let counter_addr = counter_listener.local_addr()?;
    let registry = Arc::new(StandIn::serve_on(
        registry_listener,
        StandInOptions {
            repository: "*".to_string(),
            tags: (0..args.tags).map(tag_name).collect(),
            default_page_size: (args.default_page_size > 0).then_some(args.default_page_size),
            max_page_size: (args.max_page_size > 0).then_some((args.max_page_size, 413)),
            ..Default::default()
        },
    ));
    let counted = registry.clone();
    let counters = axum::Router::new().route(
        "/requests",
        axum::routing::get(move || {
            let r = counted.clone();
            async move {
                axum::Json(serde_json::json!({
                    "requests": r.requests(),
                    "tag_requests": r.tag_requests(),
                }))
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(counter_listener, counters).await;
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "registry {}", registry.host())?;
        writeln!(out, "counters http://{counter_addr}/requests")?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
