//! The whole stack for end-to-end tests: the real control plane (`ControlPlane`), the
//! real OCI registry (`docker-registry`), and the real `image-reflector serve` as a child
//! process, running as its ServiceAccount with a token from the TokenRequest API, driven
//! with the real `kubectl`.
//!
//! The project's manifests are applied as a user applies them: `kubectl apply -k
//! manifests/crds`, `manifests/namespace.yaml`, `manifests/rbac/rbac.yaml`, and the webhook
//! configurations of `webhook/ca-bundle/` with the test CA as `caBundle`. Only the route
//! from the webhook Service to this process differs from a cluster: the Service
//! `flux-system/image-reflector-webhook` is an ExternalName Service for `localhost`
//! (kube-apiserver resolves it itself, there being no kube-proxy), and the configurations'
//! `clientConfig.service.port` is the port the process listens on instead of 443. The TLS
//! server name stays `image-reflector-webhook.flux-system.svc`, which the serving
//! certificate made here carries.
//!
//! ```ignore
//! let c = Cluster::start(RegistryOptions::default()).await;
//! c.registry.push_tags("org/app", &["1.0.0"]).await;
//! c.apply(&format!("... image: {}/org/app ...", c.registry.host())).await;
//! c.wait_for_repository("default", "app", "Ready=True", |r| ready_is(r, "True", None)).await;
//! ```
//!
//! Everything it starts stops when it drops.

use crate::certs::TestCa;
use crate::control_plane::{ControlPlane, WriteCounts};
use crate::kubectl::{Kubectl, Ran};
use crate::registry::{Registry, RegistryNotifications, RegistryOptions};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Service the webhook configurations name (as `make certs` renders them).
pub const WEBHOOK_NAMESPACE: &str = "flux-system";
pub const WEBHOOK_SERVICE: &str = "image-reflector-webhook";
/// The ServiceAccount of `manifests/rbac/rbac.yaml`, which image-reflector runs as.
pub const SERVICE_ACCOUNT: &str = "image-reflector-controller";
pub const GROUP: &str = "image.toolkit.fluxcd.io";

/// How long a wait may take before the test fails (with what it last saw).
pub const WAIT: Duration = Duration::from_secs(30);

/// The running stack.
pub struct Cluster {
    pub registry: Registry,
    pub control_plane: ControlPlane,
    client: kube::Client,
    kubectl: Kubectl,
    reflector: Option<Reflector>,
    dir: tempfile::TempDir,
    cert_file: PathBuf,
    key_file: PathBuf,
    webhook_port: u16,
    reflector_kubeconfig: PathBuf,
}

/// A running `image-reflector serve` (killed when dropped).
pub struct Reflector {
    child: tokio::process::Child,
    pub webhook: SocketAddr,
    pub health: SocketAddr,
    pub metrics: SocketAddr,
    /// The push receiver, when started with `--receiver-addr`.
    pub receiver: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Cluster {
    /// Starts the control plane and the registry (with `registry` options), installs the
    /// project's manifests, and starts image-reflector; returns once it is ready (caches
    /// synced, webhooks answering through the API server).
    pub async fn start(registry: RegistryOptions) -> Cluster {
        let mut cluster = Self::install(registry).await;
        cluster.start_reflector().await;
        cluster
    }

    /// Like `start`, without starting image-reflector.
    pub async fn install(registry: RegistryOptions) -> Cluster {
        Self::install_notifying(registry, None).await
    }

    /// Like `install`, with a registry that sends push notifications to `notifications`.
    pub async fn install_notifying(
        registry: RegistryOptions,
        notifications: Option<RegistryNotifications>,
    ) -> Cluster {
        Self::install_with_registry(move || Registry::start_notifying(registry, notifications))
            .await
    }

    /// Like `install`, with the registry `start_registry` starts (e.g.
    /// [`Registry::start_on_disk`], which can be stopped and started again).
    pub async fn install_with_registry(
        start_registry: impl FnOnce() -> Registry + Send + 'static,
    ) -> Cluster {
        let (control_plane, registry) = tokio::join!(ControlPlane::start(), async move {
            tokio::task::spawn_blocking(start_registry)
                .await
                .expect("registry start")
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let kubectl = Kubectl::new(control_plane.kubeconfig(), dir.path());
        let root = crate::repo_root();

        let manifest = |path: &str| root.join(path).to_string_lossy().into_owned();
        kubectl
            .ok(&["apply", "-k", &manifest("manifests/crds")])
            .await;
        kubectl
            .ok(&["apply", "-f", &manifest("manifests/namespace.yaml")])
            .await;
        kubectl
            .ok(&["apply", "-f", &manifest("manifests/rbac/rbac.yaml")])
            .await;
        kubectl
            .ok(&[
                "wait",
                "--for",
                "condition=Established",
                "--timeout",
                "60s",
                "crd/imagerepositories.image.toolkit.fluxcd.io",
                "crd/imagepolicies.image.toolkit.fluxcd.io",
            ])
            .await;

        // The webhook's serving certificate names the Service, as in a cluster.
        let ca = TestCa::new("image-reflector e2e CA");
        let leaf = ca.server(&[
            &format!("{WEBHOOK_SERVICE}.{WEBHOOK_NAMESPACE}.svc"),
            &format!("{WEBHOOK_SERVICE}.{WEBHOOK_NAMESPACE}.svc.cluster.local"),
        ]);
        let (cert_file, key_file) = leaf.write(dir.path(), "tls");
        let webhook_port = crate::free_port();
        let template =
            std::fs::read_to_string(root.join("webhook/ca-bundle/webhook-configurations.yaml.in"))
                .expect("read webhook/ca-bundle/webhook-configurations.yaml.in");
        use base64::Engine as _;
        let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
        let rendered = template
            .replace("${CA_BUNDLE}", &bundle)
            .replace("${SERVICE}", WEBHOOK_SERVICE)
            .replace("${NAMESPACE}", WEBHOOK_NAMESPACE)
            .replace("port: 443", &format!("port: {webhook_port}"));
        assert!(
            rendered.contains(&format!("port: {webhook_port}")),
            "the webhook template names port 443"
        );
        kubectl.apply(&webhook_service()).await;
        kubectl.apply(&rendered).await;

        std::fs::create_dir_all(dir.path().join("storage")).expect("storage dir");
        let reflector_kubeconfig = dir.path().join("reflector.kubeconfig");
        control_plane
            .service_account_kubeconfig(WEBHOOK_NAMESPACE, SERVICE_ACCOUNT, &reflector_kubeconfig)
            .await;

        Cluster {
            client: control_plane.client().await,
            registry,
            control_plane,
            kubectl,
            reflector: None,
            dir,
            cert_file,
            key_file,
            webhook_port,
            reflector_kubeconfig,
        }
    }

    /// The tag store's directory (`--storage-path`).
    pub fn storage_path(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The admin's kube client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The kubeconfig image-reflector runs with (its ServiceAccount's token).
    pub fn reflector_kubeconfig(&self) -> &std::path::Path {
        &self.reflector_kubeconfig
    }

    /// The running image-reflector.
    pub fn reflector(&self) -> &Reflector {
        self.reflector.as_ref().expect("image-reflector is running")
    }

    /// Starts `image-reflector serve` (webhook on the port the configurations name, the
    /// rest on port 0) as its ServiceAccount and waits until /readyz answers 200.
    pub async fn start_reflector(&mut self) {
        self.start_reflector_with(&[]).await
    }

    /// `start_reflector` with extra flags for `serve`.
    pub async fn start_reflector_with(&mut self, extra: &[&str]) {
        self.start_reflector_with_env(extra, &[]).await
    }

    /// `start_reflector` with extra flags for `serve` and extra environment variables
    /// (a cloud's, as a pod would have them). Every `AWS_*`, `AZURE_*`, `GOOGLE_*` and
    /// `GCE_*` variable of the test's own environment is removed first.
    pub async fn start_reflector_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.reflector.is_none(), "image-reflector already runs");
        let webhook = format!("127.0.0.1:{}", self.webhook_port);
        let reflector = self
            .spawn_reflector(&webhook, self.storage_path(), extra, env)
            .await;
        self.reflector = Some(reflector);
    }

    /// Another replica of image-reflector beside the one `start_reflector` runs: the same
    /// ServiceAccount and certificate, its own tag store and ports (its webhook is not the
    /// one the API server calls). Waits until it is ready; stops when dropped.
    pub async fn start_replica_with(&self, name: &str, extra: &[&str]) -> Reflector {
        let storage = self.dir.path().join(format!("storage-{name}"));
        std::fs::create_dir_all(&storage).expect("replica storage dir");
        self.spawn_reflector("127.0.0.1:0", storage, extra, &[])
            .await
    }

    async fn spawn_reflector(
        &self,
        webhook_addr: &str,
        storage: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Reflector {
        let mut cmd = tokio::process::Command::new(crate::image_reflector_bin());
        cmd.args(["serve", "--log-encoding", "json", "--log-level", "info"])
            .args(["--webhook-addr", webhook_addr])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--tls-cert-file")
            .arg(&self.cert_file)
            .arg("--tls-key-file")
            .arg(&self.key_file)
            .arg("--storage-path")
            .arg(storage)
            .args(["--requeue-dependency", "1s"])
            .args(extra)
            .env("KUBECONFIG", &self.reflector_kubeconfig)
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
        for (k, _) in std::env::vars() {
            if ["AWS_", "AZURE_", "GOOGLE_", "GCE_"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
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
                sink.lock().expect("log lock").push(line);
            }
        });

        let started = Instant::now();
        let listening = loop {
            let found = log
                .lock()
                .expect("log lock")
                .iter()
                .find_map(|l| listening_line(l));
            if let Some(v) = found {
                break v;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "image-reflector exited ({status}) before listening; log:\n{}",
                    log.lock().expect("log lock").join("\n")
                );
            }
            assert!(
                started.elapsed() < WAIT,
                "image-reflector did not log its addresses within {WAIT:?}; log:\n{}",
                log.lock().expect("log lock").join("\n")
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
            receiver: listening["receiver"].as_str().and_then(|s| s.parse().ok()),
            log,
        };
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
        reflector
    }

    /// Stops image-reflector as a kubelet would (SIGTERM, SIGKILL after 30 s); returns its
    /// exit status, None if it had to be killed.
    pub async fn stop_reflector(&mut self) -> Option<std::process::ExitStatus> {
        let mut r = self.reflector.take()?;
        crate::stop_child(&mut r.child, Duration::from_secs(30)).await
    }

    /// How image-reflector exited, if it did (a crash), without waiting; None while it
    /// runs (or when it was not started).
    pub fn reflector_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.reflector.as_mut()?.child.try_wait().ok().flatten()
    }

    /// Kills image-reflector (SIGKILL: no chance to flush anything) and waits for it.
    pub async fn kill_reflector(&mut self) {
        if let Some(mut r) = self.reflector.take() {
            let _ = r.child.kill().await;
        }
    }

    /// kubectl as the admin.
    pub async fn kubectl(&self, args: &[&str]) -> Ran {
        self.kubectl.run(args, None).await
    }

    /// kubectl as the admin, with `stdin`.
    pub async fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Ran {
        self.kubectl.run(args, Some(stdin)).await
    }

    /// `kubectl ARGS` with `sed -i -e SCRIPT` as the editor (`kubectl edit`).
    pub async fn kubectl_editing(&self, args: &[&str], script: &str) -> Ran {
        self.kubectl.editing(args, script).await
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

    /// Asks for a rescan of an ImageRepository as a user would: `kubectl annotate
    /// --overwrite` of `reconcile.fluxcd.io/requestedAt=AT`.
    pub async fn request_scan(&self, namespace: &str, name: &str, at: &str) {
        self.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "-n",
            namespace,
            "imagerepository",
            name,
            &format!("reconcile.fluxcd.io/requestedAt={at}"),
        ])
        .await;
    }

    /// `kubectl apply -f -` of `yaml` (as the user would, not through a client library).
    pub async fn apply_result(&self, yaml: &str) -> Ran {
        self.kubectl.apply_result(yaml).await
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

    /// An object as the API server returns it (`GET /apis/GROUP/v1/...`), or None.
    pub async fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        get_object(&self.client, GROUP, "v1", plural, namespace, name).await
    }

    /// The ImageRepository (v1), or None.
    pub async fn repository(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object("imagerepositories", namespace, name).await
    }

    /// The ImagePolicy (v1), or None.
    pub async fn policy(&self, namespace: &str, name: &str) -> Option<Value> {
        self.object("imagepolicies", namespace, name).await
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
        self.wait_for_object("imagerepositories", namespace, name, what, WAIT, check)
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
        self.wait_for_object("imagepolicies", namespace, name, what, WAIT, check)
            .await
    }

    /// Waits until `check` accepts the object `plural` (of this API group).
    pub async fn wait_for_object(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let obj = self.object(plural, namespace, name).await;
            if let Some(obj) = &obj
                && check(obj)
            {
                return obj.clone();
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {plural} {namespace}/{name}: {what}; it is now:\n{}\n{}",
                    obj.map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                        .unwrap_or_else(|| "(absent)".into()),
                    self.reflector_log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The webhook's serving certificate and key (PEM files), valid for the webhook
    /// Service's name.
    pub fn webhook_tls_files(&self) -> (&std::path::Path, &std::path::Path) {
        (&self.cert_file, &self.key_file)
    }

    /// A cluster-scoped object as `kubectl get -o json` shows it, without the fields the
    /// API server sets, so that it can be created again after it is deleted.
    pub async fn saved_object(&self, kind: &str, name: &str) -> Value {
        let text = self.kubectl_ok(&["get", kind, name, "-o", "json"]).await;
        let mut obj: Value = serde_json::from_str(&text).expect("object JSON");
        if let Some(meta) = obj["metadata"].as_object_mut() {
            for field in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                meta.remove(field);
            }
        }
        obj
    }

    /// The write requests the API server has answered so far (see `WriteCounts`).
    pub async fn writes(&self) -> WriteCounts {
        self.control_plane.writes().await
    }

    /// The last lines image-reflector logged (for failure messages).
    pub fn reflector_log_tail(&self) -> String {
        match &self.reflector {
            Some(r) => {
                let log = r.log.lock().expect("log lock");
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

    /// image-reflector's `/metrics` text.
    pub async fn reflector_metrics(&self) -> String {
        self.reflector().metrics_text().await
    }

    /// How many reviews image-reflector's webhooks have denied (from
    /// `admission_requests_total{result="denied"}`): a refused `kubectl apply` whose
    /// count went up was refused by our webhook, not by the API server's schema.
    pub async fn admission_denials(&self) -> u64 {
        self.reflector_metrics()
            .await
            .lines()
            .filter(|l| {
                l.starts_with("admission_requests_total{") && l.contains("result=\"denied\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// How many reconciles of the object image-reflector has finished (from
    /// `gotk_reconcile_duration_seconds_count`).
    pub async fn reconcile_count(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let text = self.reflector_metrics().await;
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
    /// Its process id (for /proc/PID/status); None once it has exited.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Whether a log line's `message` is `message`.
    pub fn logged(&self, message: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["message"] == message))
    }

    /// This process's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        crate::metrics_text(self.metrics).await
    }
}

/// The sum of the samples of `metric` (its full name, e.g. `..._total`) whose labels
/// include every one of `labels` (`key="value"`), in a `/metrics` text.
pub fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut r) = self.reflector.take() {
            let _ = r.child.start_kill();
        }
    }
}

/// The fields of the `listening` line, in either log encoding: a JSON line as it is, a
/// console line's `key=value` fields (colours stripped) as a JSON object.
fn listening_line(line: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        return (v["message"] == "listening").then_some(v);
    }
    let plain = regex::Regex::new("\x1b\\[[0-9;]*m")
        .ok()?
        .replace_all(line, "");
    let (_, fields) = plain.split_once(" listening ")?;
    let fields: serde_json::Map<String, Value> = fields
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Some(Value::Object(fields))
}

/// The webhook Service, routed to this machine's loopback (see the module docs).
fn webhook_service() -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {WEBHOOK_SERVICE}
  namespace: {WEBHOOK_NAMESPACE}
spec:
  type: ExternalName
  externalName: localhost
"
    )
}

/// `GET /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME` as JSON; None on 404.
pub async fn get_object(
    client: &kube::Client,
    group: &str,
    version: &str,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Option<Value> {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let request = http::Request::get(format!("{prefix}/namespaces/{namespace}/{plural}/{name}"))
        .body(Vec::new())
        .expect("GET request");
    match client.request::<Value>(request).await {
        Ok(v) => Some(v),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => panic!("GET {plural} {namespace}/{name}: {e}"),
    }
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
