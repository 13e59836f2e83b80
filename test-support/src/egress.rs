//! A test egress proxy that gives cloud host names to local servers, so a scan of
//! `123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app` or a login at
//! `sts.googleapis.com` reaches a registry or stand-in on 127.0.0.1 by its real name, and
//! nothing leaves the machine.
//!
//! It is an HTTP proxy, as a cluster's egress proxy is (`proxySecretRef`, `--proxy`):
//! `CONNECT HOST:PORT` opens a tunnel to the local address routed for that name (TLS
//! stays end to end, so the server's certificate must carry the name: see
//! `TestCa::server`), and a plain-HTTP request in absolute form is relayed to the local
//! address routed for its `HOST:PORT`. Anything not routed is refused (403) and
//! recorded, never forwarded.
//!
//! ```ignore
//! let egress = Egress::start().await;
//! egress.route("123456789012.dkr.ecr.us-east-1.amazonaws.com:443", registry.addr());
//! egress.allow(moto.addr());          // plain HTTP to 127.0.0.1:PORT, relayed as is
//! // proxySecretRef address: egress.url()
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[derive(Default)]
struct State {
    routes: HashMap<String, SocketAddr>,
    connections: HashMap<String, usize>,
    refused: Vec<String>,
}

/// A running egress proxy (stopped on drop).
pub struct Egress {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Egress {
    pub async fn start() -> Egress {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind egress proxy");
        let addr = listener.local_addr().expect("egress address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state).await;
                });
            }
        });
        Egress { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`, for `proxySecretRef` and `--proxy`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends `host_port` (`NAME:443`) to `to`.
    pub fn route(&self, host_port: &str, to: SocketAddr) {
        self.lock()
            .routes
            .insert(host_port.to_ascii_lowercase(), to);
    }

    /// Lets requests to a local address through unchanged.
    pub fn allow(&self, to: SocketAddr) {
        self.route(&to.to_string(), to);
    }

    /// Tunnels and requests made to `host_port` so far.
    pub fn connections_to(&self, host_port: &str) -> usize {
        self.lock()
            .connections
            .get(&host_port.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The targets refused so far (not routed).
    pub fn refused(&self) -> Vec<String> {
        self.lock().refused.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A TLS docker-registry named `name` (its certificate carries the name) that takes
/// Basic `user`/`password`, with `tags` on team/app, routed as `name:443` here.
pub async fn named_registry(
    name: &'static str,
    user: &str,
    password: &str,
    tags: &[&str],
    egress: &Egress,
) -> crate::registry::Registry {
    use crate::registry::{Registry, RegistryAuth, RegistryOptions, RegistryTls};
    let (user, password) = (user.to_string(), password.to_string());
    let registry = tokio::task::spawn_blocking(move || {
        Registry::start_named(
            RegistryOptions {
                auth: RegistryAuth::Basic {
                    username: user,
                    password,
                },
                tls: RegistryTls::Server,
            },
            &[name],
        )
    })
    .await
    .expect("registry");
    registry.push_tags("team/app", tags).await;
    egress.route(&format!("{name}:443"), registry.addr());
    registry
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut conn: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    // The request head, up to 16 KiB.
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head[..head.iter().position(|b| *b == b'\r').unwrap_or(0)])
        .to_string();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (host_port, tunnel) = if method.eq_ignore_ascii_case("CONNECT") {
        (target.to_ascii_lowercase(), true)
    } else {
        // Absolute form: http://HOST:PORT/path.
        let rest = target.strip_prefix("http://").unwrap_or("");
        let authority = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        let with_port = if authority.contains(':') {
            authority
        } else {
            format!("{authority}:80")
        };
        (with_port, false)
    };
    let to = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        match s.routes.get(&host_port).copied() {
            Some(to) => {
                *s.connections.entry(host_port.clone()).or_default() += 1;
                Some(to)
            }
            None => {
                s.refused.push(host_port.clone());
                None
            }
        }
    };
    let Some(to) = to else {
        conn.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let mut upstream = match tokio::net::TcpStream::connect(to).await {
        Ok(u) => u,
        Err(_) => {
            conn.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
            return Ok(());
        }
    };
    if tunnel {
        conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        upstream.write_all(&head[end..]).await?;
    } else {
        // One request per connection: a client may send its next request, to another
        // host, on the same proxy connection, which this relay has pinned to `to`.
        upstream.write_all(&close_after_one(&head)).await?;
    }
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

/// The request head with `Connection: close` instead of any `Connection` header it had,
/// and whatever followed the head (the start of the body).
fn close_after_one(head: &[u8]) -> Vec<u8> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
    let text = String::from_utf8_lossy(&head[..end]);
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&head[end + 4..]);
    bytes
}
