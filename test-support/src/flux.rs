//! Flux's own controllers as processes, the reference image-reflector is compared with:
//! `image-reflector-controller` and `notification-controller` as `make control-plane`
//! builds them from their Go modules (target/control-plane/bin). Each runs on 127.0.0.1
//! with free ports, its own storage directory, the given kubeconfig, and is killed when
//! its handle drops.
//!
//! ```ignore
//! let flux = FluxController::start("image-reflector-controller", cp.kubeconfig(),
//!     &["--watch-label-selector=sharding.fluxcd.io/key=flux"]).await;
//! flux.metrics_text().await;
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running Flux controller.
pub struct FluxController {
    child: tokio::process::Child,
    /// `--metrics-addr`.
    pub metrics: SocketAddr,
    /// `--health-addr` (`/readyz`, `/healthz`).
    pub health: SocketAddr,
    /// notification-controller's `--events-addr` (None for other controllers).
    pub events: Option<SocketAddr>,
    /// notification-controller's `--receiverAddr` (None for other controllers).
    pub receiver: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl FluxController {
    /// Starts `binary` (`image-reflector-controller` or `notification-controller`) with
    /// `kubeconfig` and `extra` flags; returns once `/readyz` answers 200.
    pub async fn start(binary: &str, kubeconfig: &Path, extra: &[&str]) -> FluxController {
        let path = crate::go_tool(binary);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{binary}-"))
            .tempdir()
            .expect("temp dir");
        let addr = || SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let (metrics, health) = (addr(), addr());
        let mut cmd = tokio::process::Command::new(&path);
        cmd.arg(format!("--metrics-addr={metrics}"))
            .arg(format!("--health-addr={health}"))
            .arg("--log-encoding=json")
            .arg("--log-level=info");
        let (mut events, mut receiver) = (None, None);
        if binary == "notification-controller" {
            let (e, r) = (addr(), addr());
            cmd.arg(format!("--events-addr={e}"))
                .arg(format!("--receiverAddr={r}"));
            events = Some(e);
            receiver = Some(r);
        } else {
            cmd.arg(format!(
                "--storage-path={}",
                dir.path().join("data").display()
            ));
        }
        cmd.args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUNTIME_NAMESPACE", "flux-system")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut controller = FluxController {
            child,
            metrics,
            health,
            events,
            receiver,
            log,
            dir,
        };
        controller.wait_ready(binary).await;
        controller
    }

    async fn wait_ready(&mut self, binary: &str) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("http://{}/readyz", self.health);
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{binary} exited ({status}); log:\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{binary} was not ready within 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its process id (for /proc/PID/status).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its `--storage-path` (image-reflector-controller).
    pub fn storage_path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Its `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        crate::metrics_text(self.metrics).await
    }

    /// Stops it with SIGKILL and waits.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
