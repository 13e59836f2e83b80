//! kube-standin: an in-memory Kubernetes API server for image-reflector's tests and demo.
//!
//! It serves plain HTTP on 127.0.0.1, keeps every resource as JSON in memory, and honours
//! the behaviours kube-rs 5 and kubectl v1.32 depend on (see README.md). Embed it:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut api = kube_standin::StandIn::start(kube_standin::Options {
//!     crds_dir: Some("manifests/crds".into()),
//!     ..Default::default()
//! })
//! .await?;
//! let client = kube::Client::try_from(api.kube_config()?)?;
//! api.force_watch_expiry(); // watches get 410 Expired and relist
//! api.stop().await; // the port closes; the data stays
//! api.restart().await?; // same port, same data
//! # drop(client); Ok(()) }
//! ```

pub mod admission;
pub mod builtin;
pub mod discovery;
pub mod error;
pub mod patch;
pub mod schema;
pub mod select;
pub mod server;
pub mod store;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use server::App;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use store::Shared;
pub use store::WriteCount;

/// `--service NAMESPACE/NAME=127.0.0.1:PORT`: where a webhook's `clientConfig.service`
/// is reached. TLS still checks the certificate against `NAME.NAMESPACE.svc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    pub addr: SocketAddr,
}

impl FromStr for ServiceRoute {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "--service {s:?}: expected NAMESPACE/NAME=IP:PORT, e.g. flux-system/image-reflector-webhook=127.0.0.1:9443"
            )
        };
        let (svc, addr) = s.split_once('=').ok_or_else(bad)?;
        let (namespace, name) = svc.split_once('/').ok_or_else(bad)?;
        if namespace.is_empty() || name.is_empty() {
            return Err(bad());
        }
        let addr = addr.parse().map_err(|e| format!("{}: {e}", bad()))?;
        Ok(ServiceRoute {
            namespace: namespace.to_string(),
            name: name.to_string(),
            addr,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Listen address; port 0 picks a free one.
    pub addr: SocketAddr,
    /// CustomResourceDefinitions to load (YAML files under it, recursively).
    pub crds_dir: Option<PathBuf>,
    /// Mutating/ValidatingWebhookConfigurations to load (YAML files under it).
    pub webhooks_dir: Option<PathBuf>,
    pub services: Vec<ServiceRoute>,
    /// Where to write the kubeconfig; by default a temporary file the handle owns.
    pub kubeconfig_out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            crds_dir: None,
            webhooks_dir: None,
            services: vec![],
            kubeconfig_out: None,
        }
    }
}

/// A running (or stopped) stand-in. Dropping it stops the server.
pub struct StandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl StandIn {
    /// Loads the CRDs and webhook configurations, binds, writes the kubeconfig, serves.
    pub async fn start(opts: Options) -> anyhow::Result<StandIn> {
        let services: HashMap<(String, String), SocketAddr> = opts
            .services
            .iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s.addr))
            .collect();
        let shared = Arc::new(Shared::new(services));
        for dir in [&opts.crds_dir, &opts.webhooks_dir].into_iter().flatten() {
            let docs = server::read_yaml_dir(dir)?;
            server::load_objects(&shared, docs)?;
        }
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("binding {}", opts.addr))?;
        let addr = listener.local_addr()?;
        let (kubeconfig, tempdir) = match opts.kubeconfig_out {
            Some(p) => (p, None),
            None => {
                let dir = tempfile::tempdir()?;
                (dir.path().join("kubeconfig"), Some(dir))
            }
        };
        std::fs::write(&kubeconfig, kubeconfig_yaml(addr))
            .with_context(|| format!("writing kubeconfig {}", kubeconfig.display()))?;
        let mut s = StandIn {
            shared,
            addr,
            kubeconfig,
            _tempdir: tempdir,
            server: None,
        };
        s.serve(listener);
        Ok(s)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Arc::new(App {
            shared: self.shared.clone(),
            addr: self.addr,
        });
        let router =
            axum::Router::new().fallback(move |method, uri, headers, body: bytes::Bytes| {
                let app = app.clone();
                async move { server::handle(app, method, uri, headers, body).await }
            });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let svc = TowerToHyperService::new(router.clone());
                        conns.spawn(async move {
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Dropping the set aborts every connection, open watches included.
            conns.abort_all();
        });
        self.server = Some((stop_tx, task));
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig that works for kubectl and kube-rs (`KUBECONFIG=...`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube-rs client configuration for this server (namespace `default`).
    pub fn kube_config(&self) -> anyhow::Result<kube::Config> {
        let uri: http::Uri = self.url().parse()?;
        let mut c = kube::Config::new(uri);
        c.default_namespace = "default".into();
        Ok(c)
    }

    /// A kube-rs client for this server (call inside a Tokio runtime).
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config()?)?)
    }

    /// Adds or replaces a `--service` route while running (e.g. once a webhook server
    /// started on port 0 knows its port).
    pub fn set_service(&self, route: ServiceRoute) {
        self.shared
            .lock()
            .services
            .insert((route.namespace, route.name), route.addr);
    }

    /// Loads (creates or replaces) the CRDs and webhook configurations in the YAML files
    /// under `dir`, as `--crds`/`--webhooks` do at start; returns how many were loaded.
    pub fn load_dir(&self, dir: &Path) -> anyhow::Result<usize> {
        server::load_objects(&self.shared, server::read_yaml_dir(dir)?)
    }

    /// Stops serving: the port closes and open connections (watches) drop. Data stays.
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.server.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }

    /// Serves again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.serve(l);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(anyhow::anyhow!(
            "rebinding {}: {}",
            self.addr,
            last.map(|e| e.to_string()).unwrap_or_default()
        ))
    }

    /// Makes every resourceVersion issued so far too old: open watches receive a 410
    /// Expired ERROR event and end; watches from an older resourceVersion get the same.
    pub fn force_watch_expiry(&self) {
        self.shared.lock().force_expiry();
        self.shared.notify();
    }

    /// Write requests and persisted changes per resource, keyed `plural.group` (or
    /// `plural` for the core group), with `/status` for the status subresource.
    pub fn write_counts(&self) -> BTreeMap<String, WriteCount> {
        self.shared.lock().writes.clone()
    }

    pub fn reset_write_counts(&self) {
        self.shared.lock().writes.clear();
    }

    /// The stored object (as the storage version shows it), for assertions.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.shared.lock();
        let rt = state
            .types
            .get(&(group.to_string(), plural.to_string()))?
            .clone();
        let stored = state.get(&rt.store, namespace, name)?;
        Some(server::present(&rt, rt.preferred_version(), stored))
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.server.take() {
            let _ = tx.send(());
            task.abort();
        }
    }
}

pub fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-standin
  cluster:
    server: http://{addr}
contexts:
- name: kube-standin
  context:
    cluster: kube-standin
    user: kube-standin
    namespace: default
current-context: kube-standin
users:
- name: kube-standin
  user: {{}}
preferences: {{}}
"
    )
}
