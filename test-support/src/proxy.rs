//! Real proxies from Debian on 127.0.0.1, killed on drop: `tinyproxy` as an HTTP CONNECT
//! proxy with Basic auth, and `microsocks` as a SOCKS5 proxy, with or without a username
//! and password. Their logs tell which connections they made.

use super::registry::require_tool;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl Proxy {
    /// Starts tinyproxy requiring `username`/`password`.
    pub fn start(username: &str, password: &str) -> Proxy {
        require_tool("tinyproxy", "tinyproxy");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nLogFile \"{}\"\nLogLevel Info\nPidFile \"{}\"\nBasicAuth {username} {password}\nDisableViaHeader Yes\n",
            log.display(),
            dir.path().join("tinyproxy.pid").display()
        );
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("write tinyproxy.conf");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"))
            .spawn()
            .expect("start tinyproxy");
        wait_until_listening("tinyproxy", port, &dir.path().join("stderr.log"));
        Proxy {
            child,
            dir,
            port,
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// Log lines containing `needle` (e.g. `"CONNECT"`).
    pub fn log_lines_matching(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address microsocks's own connections come from (bound with `-b`), so a server on
/// 127.0.0.1 sees them come from there.
pub const SOCKS_OUTGOING_ADDRESS: &str = "127.0.0.2";

pub struct Socks5Proxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Socks5Proxy {
    /// Starts microsocks, requiring `credentials` (username, password) when given.
    pub fn start(credentials: Option<(&str, &str)>) -> Socks5Proxy {
        require_tool("microsocks", "microsocks");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut cmd = Command::new("microsocks");
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            SOCKS_OUTGOING_ADDRESS,
        ]);
        if let Some((user, password)) = credentials {
            cmd.args(["-u", user, "-P", password]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // microsocks logs each connection it makes to stderr.
            .stderr(std::fs::File::create(dir.path().join("microsocks.log")).expect("log"))
            .spawn()
            .expect("start microsocks");
        wait_until_listening("microsocks", port, &dir.path().join("microsocks.log"));
        Socks5Proxy { child, dir, port }
    }

    /// `127.0.0.1:PORT`, to put after `socks5://` or `socks5h://`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("microsocks.log")
    }

    /// How many connections the proxy made to `host:port`.
    pub fn connections_to(&self, host_port: &str) -> usize {
        let needle = format!("connected to {host_port}");
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim_end().ends_with(&needle))
            .count()
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1, from the kernel: neither proxy can bind port 0 and report it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until `what` accepts connections on `port`, showing `log` if it never does.
fn wait_until_listening(what: &str, port: u16, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
