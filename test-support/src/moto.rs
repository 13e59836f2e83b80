//! moto, the AWS emulator (PyPI `moto[server]`), for the AWS logins: STS
//! `AssumeRoleWithWebIdentity` and ECR `GetAuthorizationToken` for real, started on
//! 127.0.0.1 through `moto/moto_server.py`, which adds what moto leaves out (validation of
//! web identity tokens against an OIDC issuer and a role's trusted subjects, ECR Public's
//! `GetAuthorizationToken`, and call counts). Stopped on drop, and when this process dies
//! (it exits when its standard input closes).
//!
//! Its ECR token is `AWS:ACCOUNT-auth-token` (base64), whatever the caller, and its
//! `expiresAt` lies in 2015.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAUNCHER: &str = include_str!("../moto/moto_server.py");

/// moto's default account, and its ECR registry in us-east-1.
pub const ACCOUNT: &str = "123456789012";
pub const ECR_HOST: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// A role of that account for the tests' trust policies.
pub const ROLE: &str = "arn:aws:iam::123456789012:role/ecr-reader";

/// The password moto's ECR token decodes to for `account`.
pub fn ecr_password(account: &str) -> String {
    format!("{account}-auth-token")
}

/// The password of the ECR Public token the launcher issues.
pub const ECR_PUBLIC_PASSWORD: &str = "public-auth-token";

/// How STS checks web identity tokens, as an IAM OIDC provider and trust policies would.
#[derive(Clone, Debug)]
pub struct OidcTrust {
    /// The tokens' issuer (the API server's `--service-account-issuer`).
    pub issuer: String,
    /// PEM file of the RSA public key that signs them.
    pub key_file: PathBuf,
    /// Role ARN to the subjects (`system:serviceaccount:NS:NAME`) it trusts.
    pub trust: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, Default)]
pub struct MotoOptions {
    /// Validate web identity tokens (without it, moto accepts any).
    pub oidc: Option<OidcTrust>,
    /// moto's IAM enforcement (`INITIAL_NO_AUTH_ACTION_COUNT=0`): ECR refuses requests
    /// not signed with keys moto issued. STS web identity does not work in this mode.
    pub enforce_signatures: bool,
}

/// A running moto server.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Fails the test, saying how to install it, when moto is missing.
pub fn require_moto() {
    let ok = Command::new("python3")
        .args(["-c", "import moto, werkzeug, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "moto is not installed for python3: run scripts/install-test-deps.sh (make test-deps), which installs moto[server] with pip"
    );
}

impl Moto {
    pub fn start(options: MotoOptions) -> Moto {
        require_moto();
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("moto_server.py");
        std::fs::write(&script, LAUNCHER).expect("write the moto launcher");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("moto.log")).expect("moto log"),
            ));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("MOTO_") {
                cmd.env_remove(k);
            }
        }
        if let Some(oidc) = &options.oidc {
            cmd.env("MOTO_TEST_OIDC_ISSUER", &oidc.issuer)
                .env("MOTO_TEST_OIDC_KEY", &oidc.key_file)
                .env(
                    "MOTO_TEST_OIDC_TRUST",
                    serde_json::to_string(&oidc.trust).expect("trust JSON"),
                );
        }
        if options.enforce_signatures {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        cmd.env("MOTO_TEST_ECR_PUBLIC_PASSWORD", ECR_PUBLIC_PASSWORD);
        let mut child = cmd.spawn().expect("start moto");
        let stdout = child.stdout.take().expect("moto stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let started = Instant::now();
        let addr = loop {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(100)) {
                break a.parse().expect("moto's address");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto exited ({status}); its log:\n{}",
                    std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start within 30s; its log:\n{}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
        };
        Moto {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The calls counted so far: `sts:AssumeRoleWithWebIdentity` (and `...:refused`),
    /// `ecr:GetAuthorizationToken`, `ecr-public:GetAuthorizationToken`.
    pub async fn counts(&self) -> BTreeMap<String, u64> {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/_test/counts", self.endpoint()))
            .send()
            .await
            .expect("GET /_test/counts")
            .json()
            .await
            .expect("counts JSON")
    }

    /// One count (0 when never called).
    pub async fn count(&self, name: &str) -> u64 {
        self.counts().await.get(name).copied().unwrap_or(0)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
