//! The real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager built
//! by `make control-plane`), started through the same command other tools use:
//! `scripts/control-plane.sh up DIR`, with `STOP_ON_EOF=1` so that a test process that
//! dies takes its control plane with it. Dropping the handle stops it.
//!
//! ```ignore
//! let cp = ControlPlane::start().await;
//! cp.kubectl().ok(&["get", "namespaces"]).await;
//! let client = cp.client().await;             // admin (system:masters)
//! cp.restart("kube-apiserver").await;          // same ports, same data
//! let writes = cp.writes().await;              // apiserver_request_total, write verbs
//! ```

use crate::kubectl::Kubectl;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the control plane may take to answer `/readyz` ok.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running control plane.
pub struct ControlPlane {
    supervisor: Option<Child>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    apiserver_port: u16,
    etcd_port: u16,
    kubectl: Kubectl,
}

impl ControlPlane {
    /// Starts a control plane in a new temporary directory and waits until it is ready.
    pub async fn start() -> ControlPlane {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("control plane start")
    }

    fn start_blocking() -> ControlPlane {
        for tool in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kubectl",
        ] {
            crate::go_tool(tool);
        }
        let dir = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("control-plane.log")).expect("log file");
        let mut supervisor = Command::new(crate::repo_root().join("scripts/control-plane.sh"))
            .arg("up")
            .arg(dir.path())
            .env("STOP_ON_EOF", "1")
            .env("CONTROL_PLANE_BIN", crate::control_plane_bin())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start scripts/control-plane.sh");
        let stdout = supervisor.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(path) = line.strip_prefix("kubeconfig ") {
                    let _ = tx.send(PathBuf::from(path));
                }
            }
        });
        let started = Instant::now();
        let kubeconfig = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(path) => break path,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = supervisor.wait().ok();
                    panic!(
                        "scripts/control-plane.sh up exited ({status:?}) before it was ready:\n{}",
                        std::fs::read_to_string(dir.path().join("control-plane.log"))
                            .unwrap_or_default()
                    );
                }
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = supervisor.kill();
                panic!(
                    "the control plane was not ready within {START_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(dir.path().join("control-plane.log"))
                        .unwrap_or_default()
                );
            }
        };
        let ports = std::fs::read_to_string(dir.path().join("ports.env")).expect("ports.env");
        let port = |name: &str| -> u16 {
            ports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in ports.env:\n{ports}"))
        };
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("kubectl home");
        ControlPlane {
            kubectl: Kubectl::new(&kubeconfig, &home),
            apiserver_port: port("APISERVER_PORT"),
            etcd_port: port("ETCD_PORT"),
            supervisor: Some(supervisor),
            dir,
            kubeconfig,
        }
    }

    /// The admin kubeconfig (a client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory with the state, certificates and logs (`logs/COMPONENT.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// The issuer of ServiceAccount tokens (`--service-account-issuer`).
    pub fn service_account_issuer(&self) -> &'static str {
        "https://kubernetes.default.svc.cluster.local"
    }

    /// The PEM public key that verifies ServiceAccount tokens.
    pub fn service_account_public_key(&self) -> std::path::PathBuf {
        self.dir().join("pki/service-account.pub")
    }

    /// The cluster CA (PEM), which signed the API server's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir().join("ca.crt")).expect("ca.crt")
    }

    /// kubectl as the admin.
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    /// A kube client as the admin.
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// A kubeconfig for `system:serviceaccount:NAMESPACE:NAME` with a token from the
    /// TokenRequest API (`kubectl create token`), written to `path`.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        let token = self
            .kubectl
            .ok(&[
                "create",
                "token",
                name,
                "-n",
                namespace,
                "--duration",
                "24h",
            ])
            .await;
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: {namespace}-{name}
    user:
      token: {token}
contexts:
  - name: test
    context:
      cluster: test
      user: {namespace}-{name}
      namespace: {namespace}
current-context: test
",
            server = self.server(),
            ca = self.dir().join("ca.crt").display(),
            token = token.trim(),
        );
        std::fs::write(path, config).expect("write the service account's kubeconfig");
    }

    /// Runs `scripts/control-plane.sh COMMAND DIR COMPONENT`.
    async fn control(&self, command: &str, component: &str) {
        let out = tokio::process::Command::new(crate::repo_root().join("scripts/control-plane.sh"))
            .arg(command)
            .arg(self.dir())
            .arg(component)
            .output()
            .await
            .expect("run scripts/control-plane.sh");
        assert!(
            out.status.success(),
            "control-plane.sh {command} {component} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops one component (`etcd`, `kube-apiserver`, `kube-controller-manager`) until
    /// [`ControlPlane::start_component`].
    pub async fn stop_component(&self, component: &str) {
        self.control("stop", component).await
    }

    /// Starts a stopped component on the same ports and data; returns once the API
    /// server is ready.
    pub async fn start_component(&self, component: &str) {
        self.control("start", component).await
    }

    /// Stops and starts one component.
    pub async fn restart(&self, component: &str) {
        self.control("restart", component).await
    }

    /// Compacts etcd's history up to its current revision: watches that resume from an
    /// older resourceVersion then get 410 Gone (once the API server's watch cache no
    /// longer has them, e.g. after a restart).
    pub async fn compact_etcd(&self) {
        let endpoints = format!("http://127.0.0.1:{}", self.etcd_port);
        let status = tokio::process::Command::new(crate::go_tool("etcdctl"))
            .args([
                "--endpoints",
                &endpoints,
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .await
            .expect("etcdctl endpoint status");
        let json: serde_json::Value =
            serde_json::from_slice(&status.stdout).expect("etcdctl status JSON");
        let revision = json[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {json}"));
        let out = tokio::process::Command::new(crate::go_tool("etcdctl"))
            .args(["--endpoints", &endpoints, "compact", &revision.to_string()])
            .output()
            .await
            .expect("etcdctl compact");
        assert!(
            out.status.success(),
            "etcdctl compact {revision}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kube-apiserver's own `/metrics` text.
    pub async fn metrics(&self) -> String {
        let client = self.client().await;
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("metrics request");
        client
            .request_text(request)
            .await
            .expect("GET /metrics of kube-apiserver")
    }

    /// Write requests (POST, PUT, PATCH, APPLY, DELETE) the API server has answered so
    /// far, from its `apiserver_request_total`, per verb and `RESOURCE[.GROUP][/SUBRESOURCE]`
    /// (e.g. `imagerepositories.image.toolkit.fluxcd.io/status`, `events.events.k8s.io`).
    pub async fn writes(&self) -> WriteCounts {
        WriteCounts::parse(&self.metrics().await)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let Some(mut supervisor) = self.supervisor.take() else {
            return;
        };
        // Closing its standard input stops it (STOP_ON_EOF); it then stops its children.
        drop(supervisor.stdin.take());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = supervisor.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("scripts/control-plane.sh")
            .current_dir(crate::repo_root())
            .arg("down")
            .arg(self.dir.path())
            .status();
        let _ = supervisor.kill();
        let _ = supervisor.wait();
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config from kubeconfig");
    kube::Client::try_from(config).expect("kube client")
}

/// Write requests per resource and verb, as counted by kube-apiserver. Resources are
/// named `RESOURCE[.GROUP][/SUBRESOURCE]`, verbs as the metric names them (`POST`, `PUT`,
/// `PATCH`, `APPLY`, `DELETE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts(pub BTreeMap<(String, String), u64>);

impl WriteCounts {
    const WRITE_VERBS: [&'static str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

    /// Reads `apiserver_request_total` samples from Prometheus text.
    pub fn parse(metrics: &str) -> WriteCounts {
        let mut counts = BTreeMap::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| -> &str {
                labels
                    .split("\",")
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"'))
                    .unwrap_or("")
            };
            let verb = label("verb");
            if !Self::WRITE_VERBS.contains(&verb) || !label("dry_run").is_empty() {
                continue;
            }
            let mut key = label("resource").to_string();
            if !label("group").is_empty() {
                key = format!("{key}.{}", label("group"));
            }
            if !label("subresource").is_empty() {
                key = format!("{key}/{}", label("subresource"));
            }
            let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
            *counts.entry((key, verb.to_string())).or_insert(0) += n;
        }
        WriteCounts(counts)
    }

    /// The writes of `key` (`RESOURCE[.GROUP][/SUBRESOURCE]`), every verb.
    pub fn get(&self, key: &str) -> u64 {
        self.0
            .iter()
            .filter(|((resource, _), _)| resource == key)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every write counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Only the resources `keep` accepts.
    pub fn only(&self, keep: impl Fn(&str) -> bool) -> WriteCounts {
        WriteCounts(
            self.0
                .iter()
                .filter(|((resource, _), _)| keep(resource))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }

    /// The writes made after `earlier` was taken.
    pub fn since(&self, earlier: &WriteCounts) -> WriteCounts {
        WriteCounts(
            self.0
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(earlier.0.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect(),
        )
    }
}

/// `PATCH imagerepositories.image.toolkit.fluxcd.io/status 3, POST events 1`, or `none`.
impl std::fmt::Display for WriteCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, ((resource, verb), n)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{verb} {resource} {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_counts_count_write_verbs_per_resource_and_skip_reads_and_dry_runs() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="image.toolkit.fluxcd.io",resource="imagerepositories",scope="resource",subresource="status",verb="PATCH",version="v1"} 3
apiserver_request_total{code="409",component="apiserver",dry_run="",group="image.toolkit.fluxcd.io",resource="imagerepositories",scope="resource",subresource="status",verb="PUT",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="image.toolkit.fluxcd.io",resource="imagerepositories",scope="resource",subresource="status",verb="GET",version="v1"} 9
apiserver_request_total{code="201",component="apiserver",dry_run="All",group="image.toolkit.fluxcd.io",resource="imagerepositories",scope="resource",subresource="",verb="POST",version="v1"} 5
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="secrets",scope="resource",subresource="",verb="POST",version="v1"} 2
"#;
        let counts = WriteCounts::parse(text);
        assert_eq!(
            counts.get("imagerepositories.image.toolkit.fluxcd.io/status"),
            4
        );
        assert_eq!(counts.get("imagerepositories.image.toolkit.fluxcd.io"), 0);
        assert_eq!(counts.get("secrets"), 2);
        let later = WriteCounts::parse(&text.replace("} 3", "} 7"));
        assert_eq!(
            later.since(&counts).0,
            BTreeMap::from([(
                (
                    "imagerepositories.image.toolkit.fluxcd.io/status".to_string(),
                    "PATCH".to_string()
                ),
                4
            )])
        );
        assert_eq!(
            counts.to_string(),
            "PATCH imagerepositories.image.toolkit.fluxcd.io/status 3, \
             PUT imagerepositories.image.toolkit.fluxcd.io/status 1, POST secrets 2"
        );
        assert_eq!(counts.total(), 6);
        assert_eq!(counts.only(|r| r.starts_with("secrets")).total(), 2);
    }
}
