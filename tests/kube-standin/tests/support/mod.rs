//! Shared by the stand-in's test binaries: the binary as a child process, kubectl with a
//! fresh cache, and the root crate's test-time certificate maker.
#![allow(dead_code)]

/// The root crate's test certificate maker (rcgen: CA, server and client leaves), shared
/// rather than copied.
#[path = "../../../common/certs.rs"]
pub mod certs;
pub mod webhooks;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `kube-standin` running as a child process; killed on drop.
pub struct Running {
    pub child: Child,
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
            .args(args)
            .arg("--kubeconfig-out")
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn kube-standin");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Running {
            child,
            url,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real kubectl with a fresh discovery cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    pub workdir: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Kubectl {
        assert!(
            Command::new("kubectl")
                .arg("version")
                .arg("--client")
                .output()
                .is_ok(),
            "kubectl is not on PATH: run `make test-deps` (scripts/install-test-deps.sh)"
        );
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().unwrap(),
            workdir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `text` to `NAME` in the working directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.workdir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let out: Output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .current_dir(self.workdir.path())
            .output()
            .expect("run kubectl");
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts a long-running kubectl (e.g. `get -w`); killed on drop.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned { child, lines: rx }
    }

    /// `kubectl apply -f file`, which must fail with exit code 1 (a refusal).
    pub fn apply_fails(&self, file: &Path) -> Ran {
        let r = self.run(&["apply", "-f", &file.to_string_lossy()]);
        assert_eq!(
            r.code,
            1,
            "kubectl apply -f {} should have been refused:\n{}\n{}",
            file.display(),
            r.stdout,
            r.stderr
        );
        r
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "kubectl {args:?} failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }
}

/// A kubectl left running; its stdout lines arrive on a channel.
pub struct Spawned {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Spawned {
    /// The next `n` lines, waiting up to `timeout` for them.
    pub fn lines_until(&mut self, n: usize, timeout: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut got = vec![];
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!(
                    "only {} of {n} lines within {timeout:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
