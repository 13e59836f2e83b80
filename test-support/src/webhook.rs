//! Starts the real `image-reflector serve --webhook-only` binary on loopback with
//! certificates made at test time, and gives a client that trusts only the test CA. The
//! process is killed when the handle drops.

use crate::certs::{Leaf, TestCa};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The path of the binary cargo built for this test run.
pub fn binary() -> std::path::PathBuf {
    crate::image_reflector_bin()
}

/// A running webhook server.
pub struct Webhook {
    child: Child,
    /// HTTPS address of /mutate and /validate.
    pub webhook: SocketAddr,
    /// HTTP address of /healthz and /readyz.
    pub health: SocketAddr,
    /// HTTP address of /metrics.
    pub metrics: SocketAddr,
    /// The CA that signed the serving certificate.
    pub ca: TestCa,
    /// Where the certificate files live.
    pub dir: tempfile::TempDir,
    /// Serving certificate and key paths.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Writes `contents` to `path` atomically (temp file + rename), as kubelet swaps Secrets.
pub fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

impl Webhook {
    /// Starts the server with `extra` flags added to
    /// `serve --webhook-only` on 127.0.0.1 port 0.
    pub fn start(extra: &[&str]) -> Webhook {
        let ca = TestCa::new("image-reflector test CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let leaf = ca.server(&["localhost", "127.0.0.1"]);
        let (cert_file, key_file) = leaf.write(dir.path(), "tls");
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--webhook-only",
                "--log-encoding",
                "json",
                "--log-level",
                "info",
            ])
            .args([
                "--webhook-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--tls-cert-file")
            .arg(&cert_file)
            .arg("--tls-key-file")
            .arg(&key_file)
            .args(["--tls-reload-interval", "100ms"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start image-reflector");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let listening = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not log its addresses; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let addr = |k: &str| -> SocketAddr {
            listening[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {listening}"))
                .parse()
                .unwrap()
        };
        Webhook {
            webhook: addr("webhook"),
            health: addr("health"),
            metrics: addr("metrics"),
            child,
            ca,
            dir,
            cert_file,
            key_file,
            log,
            reader: Some(reader),
        }
    }

    /// `https://127.0.0.1:PORT/PATH` of the webhook listener.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{}", self.webhook, path)
    }

    /// A client that trusts only the test CA (HTTP/1.1 or HTTP/2 by ALPN).
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client")
    }

    /// The builder behind [`Webhook::client`], for tests that tune it.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(self.ca.cert_pem.as_bytes()).expect("CA PEM");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
    }

    /// A raw TLS connection to the webhook listener that offers `alpn` (`b"h2"`,
    /// `b"http/1.1"`), for tests that speak HTTP by hand.
    pub async fn tls(
        &self,
        alpn: &[u8],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        use rustls_pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pki_types::CertificateDer::from_pem_slice(self.ca.cert_pem.as_bytes())
            .expect("CA PEM");
        roots.add(ca).expect("CA certificate");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.webhook).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// Replaces the serving certificate files (certificate first, then key, each atomically).
    pub fn rotate(&self, leaf: &Leaf) {
        write_atomically(&self.cert_file, &leaf.cert_pem);
        write_atomically(&self.key_file, &leaf.key_pem);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::send_sigterm(self.child.id());
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The process is gone: its stderr ends, so the reader finishes the log.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
