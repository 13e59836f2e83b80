//! The shared environment of a comparison run: one control plane with the project's
//! CRDs, RBAC and webhooks (`Cluster::install`), the registries cases name, Flux's
//! image-reflector-controller and image-reflector, each reconciling only its own shard.
//!
//! Isolation: every object of a case is applied twice, once per side, into the side's
//! own namespaces (`flux-CASE-NS`, `ours-CASE-NS`), labelled `sharding.fluxcd.io/key:
//! flux|ours`; each controller runs with `--watch-label-selector` for its key, as Flux's
//! sharding does. Our webhooks get an `objectSelector` for `ours`, so Flux's copies meet
//! only the API server's own schema, as in a cluster without image-reflector.

use crate::cluster::Cluster;
use crate::flux::FluxController;
use crate::kubectl::Ran;
use crate::registry::{Registry, RegistryAuth, RegistryOptions, RegistryTls};
use crate::token_server::TokenServer;
use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use std::net::ToSocketAddrs as _;
use std::time::Instant;

/// The label both controllers shard on.
pub const SHARD_LABEL: &str = "sharding.fluxcd.io/key";
const WEBHOOKS: [(&str, &str); 2] = [
    ("mutatingwebhookconfiguration", "image-reflector-defaulting"),
    (
        "validatingwebhookconfiguration",
        "image-reflector-validation",
    ),
];
/// How soon each controller looks again at a repository without tags (the same for both,
/// so that messages naming it match).
pub const REQUEUE_DEPENDENCY: &str = "1s";

/// Which controller a copy belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Flux,
    Ours,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Flux, Side::Ours];

    /// The shard key and namespace prefix.
    pub fn key(self) -> &'static str {
        match self {
            Side::Flux => "flux",
            Side::Ours => "ours",
        }
    }
}

/// The credentials the authenticated registries accept.
pub const USERNAME: &str = "flux";

/// Everything a run shares.
pub struct Env {
    pub cluster: Cluster,
    flux: FluxController,
    basic: Registry,
    token: Registry,
    token_ip_realm: Registry,
    _token_server: TokenServer,
    tls: Registry,
    mtls: Registry,
    password: String,
    unreachable: String,
    by_name: Option<String>,
    token_hosts: Vec<String>,
    /// How long the start took.
    pub started_in: std::time::Duration,
}

impl Env {
    /// Starts everything; returns once both controllers are ready.
    pub async fn start() -> anyhow::Result<Env> {
        let started = Instant::now();
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let token_server = TokenServer::start(Some((USERNAME, password.as_str())), 300).await;
        // go-containerregistry refuses a token realm whose host is a private IP literal
        // (127.0.0.1 included) unless it is the registry's own host:port; a host name is
        // accepted. So `token` names its realm by a local host name, and `token-ip-realm`
        // by 127.0.0.1, which shows that rule.
        let ip_realm = token_server.realm();
        let by_name_host = local_host_name();
        let realm = match &by_name_host {
            Some(name) => format!("http://{name}:{}/token", token_server.addr.port()),
            None => ip_realm.clone(),
        };
        let signer = token_server.signer.clone();
        let basic_password = password.clone();
        let registries = tokio::task::spawn_blocking(move || {
            let basic = Registry::start(RegistryOptions {
                auth: RegistryAuth::Basic {
                    username: USERNAME.into(),
                    password: basic_password,
                },
                tls: RegistryTls::None,
            });
            let token = Registry::start(RegistryOptions {
                auth: RegistryAuth::Token {
                    realm,
                    signer: signer.clone(),
                },
                tls: RegistryTls::None,
            });
            let token_ip_realm = Registry::start(RegistryOptions {
                auth: RegistryAuth::Token {
                    realm: ip_realm,
                    signer,
                },
                tls: RegistryTls::None,
            });
            let tls = Registry::start(RegistryOptions {
                auth: RegistryAuth::Anonymous,
                tls: RegistryTls::Server,
            });
            let mtls = Registry::start(RegistryOptions {
                auth: RegistryAuth::Anonymous,
                tls: RegistryTls::Mutual,
            });
            (basic, token, token_ip_realm, tls, mtls)
        });
        let mut cluster = Cluster::install(RegistryOptions::default()).await;
        let (basic, token, token_ip_realm, tls, mtls) =
            registries.await.context("starting the registries")?;

        // Our webhooks see only our copies.
        for (kind, name) in WEBHOOKS {
            let patch = json!([{
                "op": "add",
                "path": "/webhooks/0/objectSelector",
                "value": {"matchLabels": {SHARD_LABEL: Side::Ours.key()}},
            }])
            .to_string();
            let ran = cluster
                .kubectl(&["patch", kind, name, "--type", "json", "-p", &patch])
                .await;
            if !ran.success() {
                bail!("kubectl patch {kind} {name}: {}", ran.stderr);
            }
        }
        let ours_selector = format!("{SHARD_LABEL}={}", Side::Ours.key());
        cluster
            .start_reflector_with(&["--watch-label-selector", &ours_selector])
            .await;
        let flux = FluxController::start(
            "image-reflector-controller",
            cluster.control_plane.kubeconfig(),
            &[
                &format!("--watch-label-selector={SHARD_LABEL}={}", Side::Flux.key()),
                &format!("--requeue-dependency={REQUEUE_DEPENDENCY}"),
            ],
        )
        .await;
        let unreachable = format!("127.0.0.1:{}", crate::free_port());
        let anonymous_port = cluster.registry.addr().port();
        let by_name = by_name_host.map(|name| format!("{name}:{anonymous_port}"));
        Ok(Env {
            token_hosts: std::iter::once(token_server.addr.to_string())
                .chain(by_name.as_ref().and_then(|b| {
                    let name = b.split(':').next()?;
                    Some(format!("{name}:{}", token_server.addr.port()))
                }))
                .collect(),
            cluster,
            flux,
            basic,
            token,
            token_ip_realm,
            _token_server: token_server,
            tls,
            mtls,
            password,
            unreachable,
            by_name,
            started_in: started.elapsed(),
        })
    }

    /// `HOST:PORT` of a registry, as in image names.
    pub fn host(&self, registry: &str) -> anyhow::Result<String> {
        Ok(match registry {
            "anonymous" => self.cluster.registry.host(),
            "basic" => self.basic.host(),
            "token" => self.token.host(),
            "token-ip-realm" => self.token_ip_realm.host(),
            "tls" => self.tls.host(),
            "mtls" => self.mtls.host(),
            "unreachable" => self.unreachable.clone(),
            "by-name" => self.by_name.clone().ok_or_else(|| {
                anyhow!("registry `by-name` needs a host name other than localhost that resolves to 127.0.0.1 (none in /etc/hosts or the host name)")
            })?,
            other => bail!("unknown registry {other:?}"),
        })
    }

    /// Every (registry name, host) pair available, for normalising text.
    pub fn hosts(&self) -> Vec<(&'static str, String)> {
        super::case::REGISTRIES
            .iter()
            .filter_map(|r| self.host(r).ok().map(|h| (*r, h)))
            .collect()
    }

    /// The token service's `HOST:PORT`s (its realm appears in messages).
    pub fn token_hosts(&self) -> &[String] {
        &self.token_hosts
    }

    /// The registry a push to `registry` goes to.
    fn push_target(&self, registry: &str) -> anyhow::Result<&Registry> {
        Ok(match registry {
            "anonymous" | "by-name" => &self.cluster.registry,
            "basic" => &self.basic,
            "token" => &self.token,
            "token-ip-realm" => &self.token_ip_realm,
            "tls" => &self.tls,
            "mtls" => &self.mtls,
            other => bail!("nothing can be pushed to registry {other:?}"),
        })
    }

    /// Pushes one image (its config made from `variant`) under `tags` to `path`.
    pub async fn push(
        &self,
        registry: &str,
        path: &str,
        tags: &[String],
        variant: Option<&str>,
    ) -> anyhow::Result<String> {
        let target = self.push_target(registry)?;
        let config = match variant {
            Some(v) => json!({"variant": v}).to_string(),
            None => "{}".to_string(),
        };
        Ok(target.push_image(path, config.as_bytes(), tags).await)
    }

    /// A Docker config JSON with credentials for `registry` (wrong ones if asked).
    pub fn docker_config(&self, registry: &str, wrong: bool) -> anyhow::Result<String> {
        let host = self.host(registry)?;
        let password = if wrong {
            "not-the-password".to_string()
        } else {
            self.password.clone()
        };
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{password}"));
        Ok(
            json!({"auths": {host: {"username": USERNAME, "password": password, "auth": auth}}})
                .to_string(),
        )
    }

    /// `ca.crt` and, if asked, `tls.crt`/`tls.key` of a TLS registry.
    pub fn tls_material(
        &self,
        registry: &str,
        ca: bool,
        client: bool,
    ) -> anyhow::Result<serde_json::Map<String, Value>> {
        let r = match registry {
            "tls" => &self.tls,
            "mtls" => &self.mtls,
            other => bail!("registry {other:?} has no TLS material"),
        };
        let mut data = serde_json::Map::new();
        if ca {
            let pem = r
                .ca_pem()
                .ok_or_else(|| anyhow!("registry {registry} has no CA"))?;
            data.insert("ca.crt".into(), pem.into());
        }
        if client {
            let leaf = r
                .client_cert()
                .ok_or_else(|| anyhow!("registry {registry} has no client certificate"))?;
            data.insert("tls.crt".into(), leaf.cert_pem.clone().into());
            data.insert("tls.key".into(), leaf.key_pem.clone().into());
        }
        Ok(data)
    }

    /// kubectl as the admin (both copies are applied by the same user).
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        match stdin {
            Some(text) => self.cluster.kubectl_with_stdin(args, text).await,
            None => self.cluster.kubectl(args).await,
        }
    }

    /// The admin's kube client.
    pub fn client(&self) -> &kube::Client {
        self.cluster.client()
    }

    /// Both controllers' logs, for a failed run.
    pub fn log_tails(&self) -> String {
        let flux = self.flux.log();
        let lines: Vec<&str> = flux.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "Flux log (last {} lines):\n{}\n{}",
            lines.len() - start,
            lines[start..].join("\n"),
            self.cluster.reflector_log_tail()
        )
    }
}

/// A name other than `localhost` that resolves to 127.0.0.1: the machine's host name or
/// one of /etc/hosts' loopback aliases. Image names with it are not recognised as local
/// by go-containerregistry, so plain HTTP then needs `insecure: true`.
fn local_host_name() -> Option<String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        candidates.push(h.trim().to_string());
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        for line in hosts.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("127.0.0.1") {
                candidates.extend(words.map(str::to_string));
            }
        }
    }
    candidates.into_iter().find(|name| {
        !name.is_empty()
            && name != "localhost"
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && (name.as_str(), 80)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
    })
}
