//! image-reflector's test harness, shared by the integration tests, the benchmarks' helper
//! binaries and the demo: the real Kubernetes control plane (`control_plane`, the
//! processes `scripts/control-plane.sh` runs), real registries (`registry`: Debian's
//! docker-registry; registry 3 from `make control-plane`), the whole stack for end-to-end
//! tests (`cluster`), and small stand-ins only for what nothing real plays: a registry
//! with the quirks of Quay, Nexus and rate limiters (`fake_registry`), a registry token
//! service (`token_server`), Azure's and Google's token services (`cloud_standins`); and
//! moto, the AWS emulator (`moto`), with an egress proxy that gives cloud host names to
//! local servers (`egress`). Everything a helper starts stops when its handle drops.
//! `compare` is the differential against Flux's own controller (`make compare-flux`).
#![forbid(unsafe_code)]

pub mod certs;
pub mod cloud_standins;
pub mod cluster;
pub mod compare;
pub mod control_plane;
pub mod crd_facts;
pub mod egress;
pub mod fake_registry;
pub mod flux;
pub mod http_sink;
pub mod kubectl;
pub mod moto;
pub mod proxy;
pub mod registry;
pub mod token_server;
pub mod webhook;

use std::path::{Path, PathBuf};

/// The repository's root (where manifests/, webhook/ and scripts/ are).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `image-reflector` binary cargo built for this test run: beside the test
/// executable's `deps/` directory (`IMAGE_REFLECTOR_BIN` overrides).
pub fn image_reflector_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("IMAGE_REFLECTOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| {
            if deps.ends_with("deps") {
                deps.parent()
            } else {
                Some(deps)
            }
        })
        .expect("the test executable lives in target/PROFILE/deps");
    let bin = profile_dir.join("image-reflector");
    assert!(
        bin.is_file(),
        "{} does not exist; build it with `cargo build` (cargo test builds it for integration tests)",
        bin.display()
    );
    bin
}

/// Where `make control-plane` put the Go-built components (`CONTROL_PLANE_BIN` overrides).
pub fn control_plane_bin() -> PathBuf {
    std::env::var_os("CONTROL_PLANE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/control-plane/bin"))
}

/// One of the Go-built components; fails saying how to build it when it is missing.
pub fn go_tool(name: &str) -> PathBuf {
    let path = control_plane_bin().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make control-plane` (make test does) to build it from the Go module proxy",
        path.display()
    );
    path
}

/// The `/metrics` text of a process serving it on `addr`.
pub async fn metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Sends SIGTERM to the process `pid` (through `kill(1)`, so that no `unsafe` is needed).
pub fn send_sigterm(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Stops a child as a kubelet stops a container: SIGTERM, then up to `grace` for it to
/// exit, then SIGKILL. Returns the exit status of a graceful exit, None if it was killed.
pub async fn stop_child(
    child: &mut tokio::process::Child,
    grace: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Some(pid) = child.id() {
        send_sigterm(pid);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            let _ = child.kill().await;
            None
        }
    }
}

/// The peak resident set size of a running process in KiB (`VmHWM` of
/// `/proc/PID/status`); None once the process is gone.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}
