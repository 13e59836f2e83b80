//! The whole stack for end-to-end tests, with no cluster: the real OCI registry
//! (`docker-registry`), the Kubernetes API stand-in (embedded, with the project's CRDs and
//! webhook configurations whose caBundle is a CA made now), and the real
//! `image-reflector serve` as a child process (webhooks over HTTPS, controllers, tag store
//! in a temporary directory), driven with the real `kubectl`.
//!
//! ```ignore
//! let c = Cluster::start(RegistryOptions::default()).await;
//! c.registry.push_tags("org/app", &["1.0.0"]).await;
//! c.apply(&format!("... image: {}/org/app ...", c.registry.host())).await;
//! c.wait_for_repository("default", "app", "Ready=True", |r| ready_is(r, "True")).await;
//! ```
//!
//! Everything it starts stops when it drops (the child is killed).

use super::certs::TestCa;
use super::registry::{Registry, RegistryOptions};
use kube_standin::{Options, ServiceRoute, StandIn};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Service the webhook configurations name (as `make certs` renders them).
pub const WEBHOOK_NAMESPACE: &str = "flux-system";
pub const WEBHOOK_SERVICE: &str = "image-reflector-webhook";
pub const GROUP: &str = "image.toolkit.fluxcd.io";

/// How long a wait may take before the test fails (with what it last saw).
pub const WAIT: Duration = Duration::from_secs(30);

/// The running stack.
pub struct Cluster {
    pub registry: Registry,
    pub api: StandIn,
    reflector: Option<Reflector>,
    dir: tempfile::TempDir,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// A running `image-reflector serve`.
pub struct Reflector {
    child: tokio::process::Child,
    pub webhook: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// What a kubectl run returned.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

fn require_tool(name: &str, how: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "`{name}` is not on PATH: {how}");
}

impl Cluster {
    /// Starts the registry (with `registry` options), the API stand-in and image-reflector,
    /// and waits until image-reflector is ready (caches synced).
    pub async fn start(registry: RegistryOptions) -> Cluster {
        require_tool(
            "kubectl",
            "install kubectl v1.32 (see scripts/install-test-deps.sh)",
        );
        let registry = Registry::start(registry);
        let dir = tempfile::tempdir().expect("temp dir");

        // The webhook's serving certificate names the Service, as in a cluster; the
        // stand-in checks it against the caBundle rendered into the configurations.
        let ca = TestCa::new("image-reflector e2e CA");
        let leaf = ca.server(&[
            &format!("{WEBHOOK_SERVICE}.{WEBHOOK_NAMESPACE}.svc"),
            &format!("{WEBHOOK_SERVICE}.{WEBHOOK_NAMESPACE}.svc.cluster.local"),
        ]);
        let (cert_file, key_file) = leaf.write(dir.path(), "tls");
        let webhooks = dir.path().join("webhooks");
        std::fs::create_dir_all(&webhooks).expect("webhooks dir");
        let template = std::fs::read_to_string(
            repo_root().join("webhook/ca-bundle/webhook-configurations.yaml.in"),
        )
        .expect("read webhook/ca-bundle/webhook-configurations.yaml.in");
        use base64::Engine as _;
        let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
        let rendered = template
            .replace("${CA_BUNDLE}", &bundle)
            .replace("${SERVICE}", WEBHOOK_SERVICE)
            .replace("${NAMESPACE}", WEBHOOK_NAMESPACE);
        std::fs::write(webhooks.join("webhook-configurations.yaml"), rendered)
            .expect("write webhook configurations");
        std::fs::create_dir_all(dir.path().join("storage")).expect("storage dir");

        let api = StandIn::start(Options {
            crds_dir: Some(repo_root().join("manifests/crds")),
            webhooks_dir: Some(webhooks),
            ..Default::default()
        })
        .await
        .expect("start the API stand-in");

        let mut cluster = Cluster {
            registry,
            api,
            reflector: None,
            dir,
            cert_file,
            key_file,
        };
        cluster.start_reflector().await;
        cluster
    }

    /// The tag store's directory (`--storage-path`).
    pub fn storage_path(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The running image-reflector.
    pub fn reflector(&self) -> &Reflector {
        self.reflector.as_ref().expect("image-reflector is running")
    }

    /// Starts `image-reflector serve` on port 0 everywhere, routes the webhook Service to
    /// it and waits until /readyz answers 200.
    pub async fn start_reflector(&mut self) {
        assert!(self.reflector.is_none(), "image-reflector already runs");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_image-reflector"));
        cmd.args(["serve", "--log-encoding", "json", "--log-level", "info"])
            .args(["--webhook-addr", "127.0.0.1:0"])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--tls-cert-file")
            .arg(&self.cert_file)
            .arg("--tls-key-file")
            .arg(&self.key_file)
            .arg("--storage-path")
            .arg(self.storage_path())
            .args(["--requeue-dependency", "1s"])
            .env("KUBECONFIG", self.api.kubeconfig_path())
            .env("RUNTIME_NAMESPACE", WEBHOOK_NAMESPACE);
        for proxy in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            cmd.env_remove(proxy);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start image-reflector serve");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt as _;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });

        let started = Instant::now();
        let listening = loop {
            let found = log.lock().unwrap().iter().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v["message"] == "listening")
            });
            if let Some(v) = found {
                break v;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "image-reflector exited ({status}) before listening; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            assert!(
                started.elapsed() < WAIT,
                "image-reflector did not log its addresses within {WAIT:?}; log:\n{}",
                log.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let addr = |k: &str| -> SocketAddr {
            listening[k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} address in {listening}"))
        };
        let reflector = Reflector {
            child,
            webhook: addr("webhook"),
            health: addr("health"),
            metrics: addr("metrics"),
            log,
        };
        self.api.set_service(ServiceRoute {
            namespace: WEBHOOK_NAMESPACE.into(),
            name: WEBHOOK_SERVICE.into(),
            addr: reflector.webhook,
        });
        let readyz = format!("http://{}/readyz", reflector.health);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(&readyz).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "image-reflector was not ready within {WAIT:?}; log:\n{}",
                reflector.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.reflector = Some(reflector);
    }

    /// Kills image-reflector (SIGKILL: no chance to flush anything) and waits for it.
    pub async fn kill_reflector(&mut self) {
        if let Some(mut r) = self.reflector.take() {
            let _ = r.child.kill().await;
        }
    }

    /// kubectl with the stand-in's kubeconfig and a cache directory of this cluster's own.
    pub async fn kubectl(&self, args: &[&str]) -> Ran {
        self.kubectl_with_stdin(args, None).await
    }

    async fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        use tokio::io::AsyncWriteExt as _;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.api.kubeconfig_path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin piped");
            pipe.write_all(text.as_bytes())
                .await
                .expect("write kubectl stdin");
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish within 60 s"))
            .expect("kubectl output");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// kubectl that must succeed; returns its standard output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let ran = self.kubectl(args).await;
        assert!(
            ran.success(),
            "kubectl {args:?} failed ({:?}):\n{}\n{}",
            ran.code,
            ran.stderr,
            self.reflector_log_tail()
        );
        ran.stdout
    }

    /// `kubectl apply -f -` of `yaml` (as the user would, not through a client library).
    pub async fn apply_result(&self, yaml: &str) -> Ran {
        self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
            .await
    }

    /// `kubectl apply -f -` that must succeed.
    pub async fn apply(&self, yaml: &str) -> String {
        let ran = self.apply_result(yaml).await;
        assert!(
            ran.success(),
            "kubectl apply failed ({:?}):\n{}\nof:\n{yaml}\n{}",
            ran.code,
            ran.stderr,
            self.reflector_log_tail()
        );
        ran.stdout
    }

    /// The ImageRepository as the stand-in stores it.
    pub fn repository(&self, namespace: &str, name: &str) -> Option<Value> {
        self.api.object(GROUP, "imagerepositories", namespace, name)
    }

    /// The ImagePolicy as the stand-in stores it.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<Value> {
        self.api.object(GROUP, "imagepolicies", namespace, name)
    }

    /// Waits until `check` accepts the ImageRepository; fails after `WAIT` with the object
    /// and the end of image-reflector's log.
    pub async fn wait_for_repository(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_object("ImageRepository", namespace, name, what, WAIT, check)
            .await
    }

    /// Waits until `check` accepts the ImagePolicy.
    pub async fn wait_for_policy(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_object("ImagePolicy", namespace, name, what, WAIT, check)
            .await
    }

    pub async fn wait_for_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let obj = match kind {
                "ImageRepository" => self.repository(namespace, name),
                _ => self.policy(namespace, name),
            };
            if let Some(obj) = &obj
                && check(obj)
            {
                return obj.clone();
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {kind} {namespace}/{name}: {what}; it is now:\n{}\n{}",
                    obj.map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                        .unwrap_or_else(|| "(absent)".into()),
                    self.reflector_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines image-reflector logged (for failure messages).
    pub fn reflector_log_tail(&self) -> String {
        match &self.reflector {
            Some(r) => {
                let log = r.log.lock().unwrap();
                let start = log.len().saturating_sub(40);
                format!(
                    "image-reflector log (last {} lines):\n{}",
                    log.len() - start,
                    log[start..].join("\n")
                )
            }
            None => "image-reflector is not running".into(),
        }
    }

    /// How many reconciles of the object image-reflector has finished (from
    /// `gotk_reconcile_duration_seconds_count`).
    pub async fn reconcile_count(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let url = format!("http://{}/metrics", self.reflector().metrics);
        let text = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(&url)
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        let labels = [
            format!("kind=\"{kind}\""),
            format!("name=\"{name}\""),
            format!("namespace=\"{namespace}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with("gotk_reconcile_duration_seconds_count{"))
            .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Waits until image-reflector has finished more than `after` reconciles of the object.
    pub async fn wait_for_reconcile(&self, kind: &str, namespace: &str, name: &str, after: u64) {
        let started = Instant::now();
        loop {
            let n = self.reconcile_count(kind, namespace, name).await;
            if n > after {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for a reconcile of {kind} {namespace}/{name} (still {n}); {}",
                self.reflector_log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The events.k8s.io/v1 Events about one object (kind and name), as kubectl reads them.
    pub async fn events_about(&self, namespace: &str, kind: &str, name: &str) -> Vec<Value> {
        let out = self
            .kubectl_ok(&[
                "get",
                "events.v1.events.k8s.io",
                "-n",
                namespace,
                "-o",
                "json",
            ])
            .await;
        let list: Value = serde_json::from_str(&out).expect("event list JSON");
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
            .collect()
    }

    /// The store files (`*.tags`) under --storage-path.
    pub fn store_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.storage_path())
            .expect("read storage dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tags"))
            .collect();
        files.sort();
        files
    }

    /// The store file of one ImageRepository (the store names files by a SHA-256 of the
    /// length-prefixed namespace and name).
    pub fn store_file(&self, namespace: &str, name: &str) -> PathBuf {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for part in [namespace, name] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        self.storage_path()
            .join(format!("{}.tags", hex::encode(hasher.finalize())))
    }
}

impl Reflector {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut r) = self.reflector.take() {
            let _ = r.child.start_kill();
        }
    }
}

/// The repository's root (where manifests/ and webhook/ are).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The condition of `type_` in `.status.conditions`.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether Ready has this status ("True"/"False") and, if given, this reason.
pub fn ready_is(obj: &Value, status: &str, reason: Option<&str>) -> bool {
    condition(obj, "Ready")
        .is_some_and(|c| c["status"] == status && reason.is_none_or(|r| c["reason"] == r))
}

/// A `kubernetes.io/dockerconfigjson` Secret for `registry` (YAML for kubectl apply:
/// `kubectl create secret` sends protobuf, which the stand-in refuses).
pub fn docker_config_secret(
    namespace: &str,
    name: &str,
    registry: &str,
    username: &str,
    password: &str,
) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let config = serde_json::json!({
        "auths": { registry: {
            "username": username,
            "password": password,
            "auth": b64(&format!("{username}:{password}")),
        }}
    });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        b64(&config.to_string())
    )
}
