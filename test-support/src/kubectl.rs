//! The real `kubectl` (the one `make control-plane` builds, matching the API server's
//! version), run as a user would: with a kubeconfig, its own cache directory and HOME.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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

/// kubectl bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    /// kubectl with `kubeconfig`; its cache and HOME live under `home`.
    pub fn new(kubeconfig: &Path, home: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl with `args` (and `stdin`, if any); fails the test after 60 s.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Ran {
        self.run_with_env(args, stdin, &[]).await
    }

    /// `kubectl ARGS` (e.g. `edit ...`) with `sed -i -e SCRIPT` as its editor.
    pub async fn editing(&self, args: &[&str], script: &str) -> Ran {
        let editor = format!("sed -i -e '{}'", script.replace('\'', "'\\''"));
        self.run_with_env(args, None, &[("KUBE_EDITOR", &editor)])
            .await
    }

    async fn run_with_env(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Ran {
        use tokio::io::AsyncWriteExt as _;
        let mut cmd = tokio::process::Command::new(crate::go_tool("kubectl"));
        cmd.envs(env.iter().copied());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join(".kube-cache"))
            .args(args)
            .env("HOME", &self.home)
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
    pub async fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args, None).await;
        assert!(
            ran.success(),
            "kubectl {args:?} failed ({:?}):\n{}",
            ran.code,
            ran.stderr
        );
        ran.stdout
    }

    /// `kubectl apply -f -` of `yaml`.
    pub async fn apply_result(&self, yaml: &str) -> Ran {
        self.run(&["apply", "-f", "-"], Some(yaml)).await
    }

    /// `kubectl apply -f -` that must succeed.
    pub async fn apply(&self, yaml: &str) -> String {
        let ran = self.apply_result(yaml).await;
        assert!(
            ran.success(),
            "kubectl apply failed ({:?}):\n{}\nof:\n{yaml}",
            ran.code,
            ran.stderr
        );
        ran.stdout
    }
}
