//! The abusers of `webhook_abuse`. Each runs until a deadline and returns what the
//! server did to it, in words.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const CASES: &[&str] = &[
    "slow-loris",
    "idle-tls",
    "stalled-handshakes",
    "big-headers",
    "rapid-reset",
    "stalled-bodies",
];

/// Slow-loris connections (more than the server's connection cap).
const LORIS: usize = 1000;
/// Idle connections, and stalled handshakes.
const IDLE: usize = 10_000;
/// Connections sending oversized heads, one request after another.
const BIG_HEADERS: usize = 16;
/// HTTP/2 connections opening and resetting streams in a loop.
const RAPID_RESET: usize = 4;
/// Connections whose request body stalls (more than the server's connection cap).
const STALLED_BODIES: usize = 1000;

/// The server under abuse.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    host: String,
    name: ServerName<'static>,
    http1: TlsConnector,
    http2: TlsConnector,
}

impl Target {
    pub fn new(url: &str, ca_pem: &[u8]) -> Result<Target, Box<dyn std::error::Error>> {
        let url = url::Url::parse(url)?;
        let host = url.host_str().ok_or("the URL has no host")?.to_string();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let addr: SocketAddr = format!("{host}:{port}").parse()?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(cert?)?;
        }
        let connector = |alpn: &[u8]| -> Result<TlsConnector, rustls::Error> {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Target {
            addr,
            name: ServerName::try_from(host.clone())?,
            host,
            http1: connector(b"http/1.1")?,
            http2: connector(b"h2")?,
        })
    }

    async fn tls(&self, h2: bool) -> io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let connector = if h2 { &self.http2 } else { &self.http1 };
        connector.connect(self.name.clone(), tcp).await
    }
}

/// Runs `case` until `deadline`; says what the server did.
pub async fn run(case: String, target: Target, deadline: Instant) -> String {
    let t = Arc::new(target);
    match case.as_str() {
        "slow-loris" => slow_loris(t, deadline).await,
        "idle-tls" => idle_tls(t, deadline).await,
        "stalled-handshakes" => stalled_handshakes(t, deadline).await,
        "big-headers" => big_headers(t, deadline).await,
        "rapid-reset" => rapid_reset(t, deadline).await,
        "stalled-bodies" => stalled_bodies(t, deadline).await,
        _ => {
            tokio::time::sleep_until(deadline.into()).await;
            "-".into()
        }
    }
}

/// Connections opened, and how long those the server closed had lived.
#[derive(Default)]
struct Tally {
    opened: AtomicUsize,
    failed: AtomicUsize,
    closed: Mutex<Vec<Duration>>,
    answers: Mutex<BTreeMap<String, usize>>,
}

impl Tally {
    fn closed_after(&self, lived: Duration) {
        self.closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lived);
    }

    fn answer(&self, what: String) {
        *self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    /// "N closed by the server after a median X s (max Y s), M still open at the end"
    fn lifetimes(&self) -> String {
        let mut closed = self
            .closed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        closed.sort();
        let opened = self.opened.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let median = closed.get(closed.len() / 2).copied().unwrap_or_default();
        let max = closed.last().copied().unwrap_or_default();
        let mut s = format!(
            "{} closed by the server after a median {:.1} s (max {:.1} s), {} still connected when the case ended (served, or waiting in the backlog)",
            closed.len(),
            median.as_secs_f64(),
            max.as_secs_f64(),
            opened.saturating_sub(closed.len())
        );
        if failed > 0 {
            s.push_str(&format!(
                "; {failed} connects failed or waited past the end"
            ));
        }
        s
    }

    /// "431: N, no answer: M"
    fn answers(&self) -> String {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Runs `n` tasks of `attempt` until `deadline`, each again and again if `repeat`;
/// an attempt still running at the deadline is dropped (its connection closed).
async fn swarm<F, Fut>(n: usize, deadline: Instant, repeat: bool, attempt: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let attempt = attempt.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                if tokio::time::timeout_at(deadline.into(), attempt(i))
                    .await
                    .is_err()
                    || !repeat
                {
                    break;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reads until the server closes the stream (or fails it).
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// The status code of the response the server sends first, or why there is none.
async fn status_of<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) if head.is_empty() => return "closed without an answer".into(),
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .map(|code| format!("HTTP {code}"))
        .unwrap_or_else(|| "an unreadable answer".into())
}

/// HTTP/1.1 requests whose head arrives one header a second, never finished.
async fn slow_loris(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let tl = tally.clone();
    swarm(LORIS, deadline, true, move |_| {
        let (t, tally) = (t.clone(), tl.clone());
        async move {
            let Ok(stream) = t.tls(false).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let opened = Instant::now();
            let (mut r, mut w) = tokio::io::split(stream);
            let head = format!(
                "POST /validate HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n",
                t.host
            );
            let trickle = async {
                if w.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0.. {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if w.write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = trickle => {}
                _ = until_closed(&mut r) => {}
            }
            tally.closed_after(opened.elapsed());
        }
    })
    .await;
    format!(
        "{} connections trickling a head: {}",
        tally.opened.load(Ordering::Relaxed),
        tally.lifetimes()
    )
}

/// TLS connections (half asking for HTTP/1.1, half for HTTP/2) that never send a request.
async fn idle_tls(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let tl = tally.clone();
    swarm(IDLE, deadline, false, move |i| {
        let (t, tally) = (t.clone(), tl.clone());
        async move {
            let Ok(mut stream) = t.tls(i % 2 == 1).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let opened = Instant::now();
            until_closed(&mut stream).await;
            tally.closed_after(opened.elapsed());
        }
    })
    .await;
    format!(
        "{} of {IDLE} TLS connections established, then idle: {}",
        tally.opened.load(Ordering::Relaxed),
        tally.lifetimes()
    )
}

/// TCP connections that send the first bytes of a ClientHello and stall.
async fn stalled_handshakes(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let tl = tally.clone();
    swarm(IDLE, deadline, false, move |_| {
        let (t, tally) = (t.clone(), tl.clone());
        async move {
            let Ok(mut tcp) = TcpStream::connect(t.addr).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let opened = Instant::now();
            // A handshake record announcing 256 bytes, a ClientHello header, 2 bytes.
            let partial = [
                0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
            ];
            if tcp.write_all(&partial).await.is_ok() {
                until_closed(&mut tcp).await;
            }
            tally.closed_after(opened.elapsed());
        }
    })
    .await;
    format!(
        "{} of {IDLE} handshakes stalled after 11 bytes: {}",
        tally.opened.load(Ordering::Relaxed),
        tally.lifetimes()
    )
}

/// HTTP/1.1 requests with a 64 KiB header, or with 1,000 headers, one after another.
async fn big_headers(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let tl = tally.clone();
    swarm(BIG_HEADERS, deadline, true, move |i| {
        let (t, tally) = (t.clone(), tl.clone());
        async move {
            let Ok(stream) = t.tls(false).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let mut head = format!("POST /validate HTTP/1.1\r\nhost: {}\r\n", t.host);
            if i % 2 == 0 {
                head.push_str(&format!("x-big: {}\r\n", "a".repeat(64 * 1024)));
            } else {
                for h in 0..1000 {
                    head.push_str(&format!("x-many-{h}: 1\r\n"));
                }
            }
            head.push_str("content-length: 0\r\n\r\n");
            let (mut r, mut w) = tokio::io::split(stream);
            let write = async {
                // The server may answer and close before the head is all sent.
                let _ = w.write_all(head.as_bytes()).await;
                std::future::pending::<()>().await
            };
            let status = tokio::select! {
                status = status_of(&mut r) => status,
                _ = write => unreachable!("pending"),
            };
            tally.answer(status);
        }
    })
    .await;
    format!(
        "{} requests with a 64 KiB header or 1,000 headers: {}",
        tally.opened.load(Ordering::Relaxed),
        tally.answers()
    )
}

/// HTTP/2 streams opened (HEADERS) and reset (RST_STREAM) at once, in a loop.
async fn rapid_reset(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let resets = Arc::new(AtomicUsize::new(0));
    let (tl, rs) = (tally.clone(), resets.clone());
    swarm(RAPID_RESET, deadline, true, move |_| {
        let (t, tally, resets) = (t.clone(), tl.clone(), rs.clone());
        async move {
            let Ok(stream) = t.tls(true).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            let Ok((client, connection)) = h2::client::handshake(stream).await else {
                tally.answer("HTTP/2 handshake refused".into());
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let driver = tokio::spawn(connection);
            let uri = format!("https://{}/validate", t.host);
            // The block owns the client: when it ends, the connection may close.
            {
                let mut client = client;
                let mut sent = 0usize;
                loop {
                    client = match client.ready().await {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                    let Ok(request) = http::Request::post(uri.as_str()).body(()) else {
                        break;
                    };
                    match client.send_request(request, false) {
                        Ok((_, mut stream)) => {
                            stream.send_reset(h2::Reason::CANCEL);
                            sent += 1;
                            resets.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                    if sent.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            }
            let ended = match driver.await {
                Ok(Err(e)) if e.is_go_away() => match e.reason() {
                    Some(reason) => format!("GOAWAY {reason:?}"),
                    None => "GOAWAY".into(),
                },
                Ok(Err(e)) => format!("connection error ({e})"),
                Ok(Ok(())) => "connection closed".into(),
                Err(e) => format!("driver failed ({e})"),
            };
            tally.answer(ended);
        }
    })
    .await;
    format!(
        "{} streams opened and reset on {} connections, which ended: {}",
        resets.load(Ordering::Relaxed),
        tally.opened.load(Ordering::Relaxed),
        tally.answers()
    )
}

/// HTTP/1.1 requests announcing a 1 MiB body that stalls after 32 KiB.
async fn stalled_bodies(t: Arc<Target>, deadline: Instant) -> String {
    let tally = Arc::new(Tally::default());
    let tl = tally.clone();
    swarm(STALLED_BODIES, deadline, true, move |_| {
        let (t, tally) = (t.clone(), tl.clone());
        async move {
            let Ok(mut stream) = t.tls(false).await else {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            tally.opened.fetch_add(1, Ordering::Relaxed);
            let head = format!(
                "POST /validate HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n",
                t.host
            );
            let sent = Instant::now();
            if stream.write_all(head.as_bytes()).await.is_err()
                || stream.write_all(&[b' '; 32 * 1024]).await.is_err()
            {
                tally.answer("closed while sending".into());
                return;
            }
            let status = status_of(&mut stream).await;
            tally.closed_after(sent.elapsed());
            tally.answer(status);
        }
    })
    .await;
    let mut answered = tally
        .closed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    answered.sort();
    let median = answered
        .get(answered.len() / 2)
        .copied()
        .unwrap_or_default();
    format!(
        "{} bodies stalled after 32 KiB of 1 MiB: {} (a median {:.1} s after the head)",
        tally.opened.load(Ordering::Relaxed),
        tally.answers(),
        median.as_secs_f64()
    )
}
