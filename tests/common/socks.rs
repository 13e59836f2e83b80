//! `microsocks` (Debian) as a SOCKS5 proxy on 127.0.0.1, optionally requiring a username
//! and password, killed on drop. Its outgoing connections are bound to 127.0.0.2, so a
//! server on 127.0.0.1 sees them come from there; its log tells which it made.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address the proxy's own connections come from.
pub const OUTGOING_ADDRESS: &str = "127.0.0.2";

pub struct Socks5Proxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Socks5Proxy {
    /// Starts microsocks, requiring `credentials` (username, password) when given.
    pub fn start(credentials: Option<(&str, &str)>) -> Socks5Proxy {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("microsocks").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`microsocks` is not on PATH: install the Debian package `microsocks` (make test-deps, or scripts/install-test-deps.sh)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        // microsocks cannot bind port 0 and report it: take a free port from the kernel.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut cmd = Command::new("microsocks");
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            OUTGOING_ADDRESS,
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
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "microsocks did not listen on {port}: {}",
                std::fs::read_to_string(dir.path().join("microsocks.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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
