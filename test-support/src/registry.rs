//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) started
//! on 127.0.0.1:0 with a temporary config, optionally with TLS (a CA made at test time),
//! mutual TLS, htpasswd Basic auth or token auth, and push notifications to an endpoint
//! (distribution's `notifications.endpoints`); or registry 3 (`Registry::start_v3`), which
//! pages `tags/list` as 2.8 does not. Killed on drop.
//!
//! ```ignore
//! let registry = Registry::start(RegistryOptions::default());
//! let paging = Registry::start_v3();       // target/control-plane/bin/registry
//! registry.push_tags("team/app", &["1.0", "1.1"]).await;
//! registry.host();                      // "127.0.0.1:PORT"
//! registry.requests_matching("/tags/list");
//! ```
//!
//! [`Registry::start_on_disk`] keeps the images in files, so that [`Registry::stop`] and
//! [`Registry::start_again`] (same port, same images) play a registry going away and
//! coming back.

use crate::certs::{Leaf, TestCa};
use crate::token_server::{TOKEN_ISSUER, TOKEN_SERVICE, TokenSigner};
use base64::Engine as _;
use futures::StreamExt as _;
use sha2::Digest as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the registry authenticates.
#[derive(Clone, Default)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    /// htpasswd (bcrypt) with one user.
    Basic { username: String, password: String },
    /// The distribution token flow against `realm` (see `TokenServer`), tokens signed by
    /// `signer`.
    Token {
        realm: String,
        signer: Arc<TokenSigner>,
    },
}

/// TLS for the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistryTls {
    /// Plain HTTP.
    #[default]
    None,
    /// HTTPS with a server certificate from a CA made at test time.
    Server,
    /// HTTPS that also requires a client certificate signed by that CA.
    Mutual,
}

#[derive(Clone, Default)]
pub struct RegistryOptions {
    pub auth: RegistryAuth,
    pub tls: RegistryTls,
}

/// One `notifications.endpoints` entry (see [`Registry::start_notifying`]): manifest pushes and deletions are sent to `url`
/// with `headers` (pulls and blob uploads are left out with `ignore`, as the README
/// advises), retried every 200 ms while the endpoint does not answer 2xx.
#[derive(Clone, Debug)]
pub struct RegistryNotifications {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// Which distribution serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    /// Debian's `docker-registry` 2.8: one page whatever `n` asks.
    Debian,
    /// Registry 3 from `make control-plane` (always on the filesystem): pages of `n` (at
    /// most 1000) with a `Link` to the next.
    V3,
}

/// A running `docker-registry` or registry 3.
pub struct Registry {
    /// None while stopped.
    child: Option<Child>,
    server: Server,
    dir: tempfile::TempDir,
    /// Whether the images live in files under `dir` (and so survive a restart).
    on_disk: bool,
    addr: SocketAddr,
    options: RegistryOptions,
    ca: Option<TestCa>,
    client_leaf: Option<Leaf>,
    http: reqwest::Client,
}

/// Fails the test, saying how to install it, when `name` (from the Debian package
/// `package`) is not on PATH.
pub fn require_tool(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not on PATH: install the Debian package `{package}` (make test-deps, or scripts/install-test-deps.sh)"
    );
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Registry {
        Registry::start_with(options, &[], None)
    }

    /// Registry 3 (distribution v3, `target/control-plane/bin/registry`), anonymous,
    /// plain HTTP, filesystem storage: it pages `tags/list` with `n`, `last` and a `Link`
    /// header, cuts `n` above 1000 to 1000, and returns every tag when no `n` is sent.
    pub fn start_v3() -> Registry {
        Registry::start_storing(Server::V3, RegistryOptions::default(), &[], None, true)
    }

    /// [`Registry::start`] with the images in files instead of memory, so that they
    /// survive [`Registry::stop`] and [`Registry::start_again`].
    pub fn start_on_disk(options: RegistryOptions) -> Registry {
        Registry::start_storing(Server::Debian, options, &[], None, true)
    }

    /// [`Registry::start`] that sends push notifications to `notifications`.
    pub fn start_notifying(
        options: RegistryOptions,
        notifications: Option<RegistryNotifications>,
    ) -> Registry {
        Registry::start_with(options, &[], notifications)
    }

    /// [`Registry::start`] whose TLS certificate also carries these DNS names (a cloud
    /// registry's host, reached through `Egress`).
    pub fn start_named(options: RegistryOptions, names: &[&str]) -> Registry {
        Registry::start_with(options, names, None)
    }

    fn start_with(
        options: RegistryOptions,
        names: &[&str],
        notifications: Option<RegistryNotifications>,
    ) -> Registry {
        Registry::start_storing(Server::Debian, options, names, notifications, false)
    }

    fn start_storing(
        server: Server,
        options: RegistryOptions,
        names: &[&str],
        notifications: Option<RegistryNotifications>,
        on_disk: bool,
    ) -> Registry {
        if server == Server::Debian {
            require_tool("docker-registry", "docker-registry");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = if on_disk {
            format!(
                "  filesystem:\n    rootdirectory: {}\n",
                dir.path().join("data").display()
            )
        } else {
            "  inmemory: {}\n".to_string()
        };
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n{storage}  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:0\n  secret: image-reflector-test\n",
        );
        let (mut ca, mut client_leaf) = (None, None);
        if options.tls != RegistryTls::None {
            let test_ca = TestCa::new("registry test CA");
            let mut sans = vec!["127.0.0.1", "localhost"];
            sans.extend_from_slice(names);
            let (cert, key) = test_ca.server(&sans).write(dir.path(), "server");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            if options.tls == RegistryTls::Mutual {
                let ca_path = test_ca.write_ca(dir.path());
                config.push_str(&format!("    clientcas:\n      - {}\n", ca_path.display()));
                client_leaf = Some(test_ca.client("registry test client"));
            }
            ca = Some(test_ca);
        }
        match &options.auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Basic { username, password } => {
                require_tool("htpasswd", "apache2-utils");
                let out = Command::new("htpasswd")
                    .args(["-Bbn", username, password])
                    .output()
                    .expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).expect("write htpasswd");
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: image-reflector-test\n    path: {}\n",
                    path.display()
                ));
            }
            RegistryAuth::Token { realm, signer } => {
                let path = dir.path().join("token-root.crt");
                std::fs::write(&path, &signer.cert_pem).expect("write token cert");
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    path.display()
                ));
            }
        }
        if let Some(n) = &notifications {
            config.push_str(&format!(
                "notifications:\n  endpoints:\n    - name: image-reflector\n      url: {}\n      timeout: 2s\n      threshold: 1\n      backoff: 200ms\n      ignore:\n        actions: [pull]\n        mediatypes: [application/octet-stream]\n",
                n.url
            ));
            if !n.headers.is_empty() {
                config.push_str("      headers:\n");
                for (name, value) in &n.headers {
                    config.push_str(&format!("        {name}: [{value:?}]\n"));
                }
            }
        }
        std::fs::write(dir.path().join("config.yml"), &config).expect("write registry config");
        let (child, addr) = spawn_registry(server, dir.path());

        let mut http = reqwest::Client::builder().pool_max_idle_per_host(64);
        if let Some(ca) = &ca {
            http = http.tls_certs_merge(
                reqwest::Certificate::from_pem_bundle(ca.cert_pem.as_bytes()).expect("CA"),
            );
        }
        if let Some(leaf) = &client_leaf {
            let pem = format!("{}\n{}", leaf.cert_pem, leaf.key_pem);
            http = http.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        Registry {
            child: Some(child),
            server,
            dir,
            on_disk,
            addr,
            options,
            ca,
            client_leaf,
            http: http.no_proxy().build().expect("client"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as in image names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.options.tls == RegistryTls::None {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA that signed the server (and client) certificates, PEM.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|c| c.cert_pem.as_str())
    }

    /// A client certificate the registry accepts (mutual TLS only).
    pub fn client_cert(&self) -> Option<&Leaf> {
        self.client_leaf.as_ref()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Stops the registry (SIGKILL); connections are refused until
    /// [`Registry::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped registry again on the same address, with the same images (a
    /// registry of [`Registry::start_on_disk`] only) and the same access log.
    pub fn start_again(&mut self) {
        assert!(
            self.on_disk,
            "only a registry started with Registry::start_on_disk keeps its images across a restart"
        );
        assert!(self.child.is_none(), "the registry is running");
        let path = self.dir.path().join("config.yml");
        let config = std::fs::read_to_string(&path).expect("read registry config");
        let config = config.replace("addr: 127.0.0.1:0\n", &format!("addr: {}\n", self.addr));
        std::fs::write(&path, config).expect("write registry config");
        let (child, addr) = spawn_registry(self.server, self.dir.path());
        assert_eq!(addr, self.addr, "the registry came back on another address");
        self.child = Some(child);
    }

    /// The repository's tags, as the registry lists them (`GET /v2/REPO/tags/list`;
    /// docker-registry 2.8 answers them all in one page), sorted.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("{}/v2/{repo}/tags/list", self.base_url());
        let mut request = self.http.get(url);
        if let Some(auth) = self.auth_header(repo) {
            request = request.header("authorization", auth);
        }
        let resp = request.send().await.expect("GET tags/list");
        assert_eq!(resp.status().as_u16(), 200, "tags/list of {repo}");
        let body: serde_json::Value = resp.json().await.expect("tags/list JSON");
        let mut tags: Vec<String> = body["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    /// Access-log lines containing `needle` (e.g. `"GET /v2/team/app/tags/list"`).
    pub fn requests_matching(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn auth_header(&self, repo: &str) -> Option<String> {
        match &self.options.auth {
            RegistryAuth::Anonymous => None,
            RegistryAuth::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            RegistryAuth::Token { signer, .. } => Some(format!(
                "Bearer {}",
                signer.token("pusher", repo, &["pull", "push"], 600)
            )),
        }
    }

    /// Pushes one small OCI image and tags it with every tag (one config blob, one
    /// manifest, then a manifest PUT per tag, 32 at a time). Returns the manifest digest.
    pub async fn push_tags<S: AsRef<str>>(&self, repo: &str, tags: &[S]) -> String {
        self.push_image(repo, b"{}", tags).await
    }

    /// [`Registry::push_tags`] with `config` as the image's config blob, so images pushed
    /// with different configs have different digests.
    pub async fn push_image<S: AsRef<str>>(&self, repo: &str, config: &[u8], tags: &[S]) -> String {
        let base = self.base_url();
        let auth = self.auth_header(repo);
        let with_auth = |rb: reqwest::RequestBuilder| match &auth {
            Some(a) => rb.header("authorization", a),
            None => rb,
        };
        let config = config.to_vec();
        let config_digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config)));
        let resp = with_auth(self.http.post(format!("{base}/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("start upload");
        assert_eq!(
            resp.status().as_u16(),
            202,
            "start upload: {:?}",
            resp.text().await
        );
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload location")
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{base}{location}")
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = with_auth(
            self.http
                .put(format!("{location}{sep}digest={config_digest}"))
                .header("content-type", "application/octet-stream")
                .body(config.clone()),
        )
        .send()
        .await
        .expect("finish upload");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "finish upload: {:?}",
            resp.text().await
        );

        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [],
        })
        .to_string();
        let manifest_digest = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(manifest.as_bytes()))
        );
        let puts = futures::stream::iter(tags.iter().map(|t| {
            let url = format!("{base}/v2/{repo}/manifests/{}", t.as_ref());
            with_auth(
                self.http
                    .put(url)
                    .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest.clone()),
            )
            .send()
        }))
        .buffer_unordered(32);
        let results: Vec<_> = puts.collect().await;
        for r in results {
            let r = r.expect("manifest PUT");
            assert_eq!(
                r.status().as_u16(),
                201,
                "manifest PUT: {:?}",
                r.text().await
            );
        }
        manifest_digest
    }
}

/// Starts `docker-registry serve DIR/config.yml`, appending to `DIR/access.log` and
/// logging to a fresh `DIR/registry.log`; returns once it listens.
fn spawn_registry(server: Server, dir: &std::path::Path) -> (Child, SocketAddr) {
    let binary = match server {
        Server::Debian => PathBuf::from("docker-registry"),
        Server::V3 => crate::go_tool("registry"),
    };
    let log_path = dir.join("registry.log");
    let access = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("access.log"))
        .expect("access log");
    let child = Command::new(&binary)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(access)
        .stderr(std::fs::File::create(&log_path).expect("registry log"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    (child, wait_for_listen(&log_path, Duration::from_secs(10)))
}

fn wait_for_listen(log: &std::path::Path, timeout: Duration) -> SocketAddr {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(pos) = text.find("listening on ") {
            let rest = &text[pos + "listening on ".len()..];
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            if let Ok(a) = addr.parse() {
                return a;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "the registry did not start within {timeout:?}; its log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
