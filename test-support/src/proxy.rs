//! `tinyproxy` (Debian) as an HTTP CONNECT proxy with Basic auth, on 127.0.0.1, killed on
//! drop. Its log tells which CONNECTs it made.

use std::path::PathBuf;
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
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("tinyproxy").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "`tinyproxy` is not on PATH: install the Debian package `tinyproxy` (make test-deps)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        // tinyproxy cannot bind port 0 and report it: take a free port from the kernel.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
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
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tinyproxy did not listen on {port}: {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
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
