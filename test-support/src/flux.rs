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
//! flux.restart().await;       // SIGTERM, then the same flags, ports and storage
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
    binary: String,
    /// Every flag it was started with, kept for a restart.
    args: Vec<String>,
    kubeconfig: PathBuf,
}

impl FluxController {
    /// Starts `binary` (`image-reflector-controller` or `notification-controller`) with
    /// `kubeconfig` and `extra` flags; returns once `/readyz` answers 200.
    pub async fn start(binary: &str, kubeconfig: &Path, extra: &[&str]) -> FluxController {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{binary}-"))
            .tempdir()
            .expect("temp dir");
        let addr = || SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let (metrics, health) = (addr(), addr());
        let mut args = vec![
            format!("--metrics-addr={metrics}"),
            format!("--health-addr={health}"),
            "--log-encoding=json".to_string(),
            "--log-level=info".to_string(),
        ];
        let (mut events, mut receiver) = (None, None);
        if binary == "notification-controller" {
            let (e, r) = (addr(), addr());
            args.push(format!("--events-addr={e}"));
            args.push(format!("--receiverAddr={r}"));
            events = Some(e);
            receiver = Some(r);
        } else {
            args.push(format!(
                "--storage-path={}",
                dir.path().join("data").display()
            ));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(binary, &args, kubeconfig, &log);
        let mut controller = FluxController {
            child,
            metrics,
            health,
            events,
            receiver,
            log,
            dir,
            binary: binary.to_string(),
            args,
            kubeconfig: kubeconfig.to_path_buf(),
        };
        controller.wait_ready().await;
        controller
    }

    /// Stops it as a kubelet would (SIGTERM, SIGKILL after 30 s) and starts it again with
    /// the same flags, ports and storage; returns once it is ready.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.child = spawn(&self.binary, &self.args, &self.kubeconfig, &self.log);
        self.wait_ready().await;
    }

    /// Stops it as a kubelet would (SIGTERM, SIGKILL after 30 s); returns its exit status,
    /// None if it had to be killed.
    pub async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        crate::stop_child(&mut self.child, Duration::from_secs(30)).await
    }

    async fn wait_ready(&mut self) {
        let binary = &self.binary;
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

/// Starts the process; its standard error goes to `log`, line by line.
fn spawn(
    binary: &str,
    args: &[String],
    kubeconfig: &Path,
    log: &Arc<Mutex<Vec<String>>>,
) -> tokio::process::Child {
    let path = crate::go_tool(binary);
    let mut child = tokio::process::Command::new(&path)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUNTIME_NAMESPACE", "flux-system")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = log.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("log lock").push(line);
        }
    });
    child
}
