//! Serves the repositories `make bench-scan` lists, until stdin closes or SIGTERM/SIGINT:
//! Debian's docker-registry with `bench/ten-thousand` (10,000 tags), and the paginating
//! stand-in with `bench/hundred-thousand` (100,000 tags) twice, answering pages of 100 and
//! of 1000 whatever `n` the client asks for (crane asks for 1000, skopeo for none), as
//! Docker Hub caps its pages. Prints one
//! `NAME=127.0.0.1:PORT` line per server, then `READY`.

#![forbid(unsafe_code)]

use test_support::fake_registry::{StandIn, StandInOptions};
use test_support::registry::{Registry, RegistryOptions};
use tokio::io::AsyncReadExt as _;

#[tokio::main]
async fn main() {
    let registry = Registry::start(RegistryOptions::default());
    let ten: Vec<String> = (0..10_000)
        .map(|i| format!("1.{}.{}", i / 100, i % 100))
        .collect();
    registry.push_tags("bench/ten-thousand", &ten).await;
    let hundred: Vec<String> = (0..100_000)
        .map(|i| format!("v{}.{}.{}", i / 10_000, (i / 100) % 100, i % 100))
        .collect();
    let mut stand_ins = Vec::new();
    for page in [100usize, 1000] {
        let s = StandIn::start(StandInOptions {
            repository: "bench/hundred-thousand".into(),
            tags: hundred.clone(),
            default_page_size: Some(page),
            page_size_cap: Some(page),
            ..Default::default()
        })
        .await;
        println!("STANDIN_{page}={}", s.host());
        stand_ins.push(s);
    }
    println!("REGISTRY={}", registry.host());
    println!("READY");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = async { while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
    }
    // Dropping the registry kills docker-registry.
    drop(stand_ins);
    drop(registry);
}
