//! The webhook's HTTPS listener: TLS handshakes, HTTP/1.1 and HTTP/2 connections (chosen
//! by ALPN), the graceful drain at shutdown, and the limits that keep clients that
//! misbehave (slowly, idly or in great numbers) from holding the server's memory or its
//! connections:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; more wait in the kernel's backlog
//!   until one closes;
//! - a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`];
//! - HTTP/1.1: a request's head must arrive within [`HEADER_READ_TIMEOUT`] (the time a
//!   kept-alive connection may wait for its next request, too) and fit in
//!   [`MAX_HEADER_BYTES`], else 431;
//! - HTTP/2: [`H2_MAX_STREAMS`] streams at once, flow-control windows of
//!   [`H2_STREAM_WINDOW`] and [`H2_CONNECTION_WINDOW`], header lists of
//!   [`MAX_HEADER_BYTES`] (431 above); hyper's rapid-reset guard (a GOAWAY after 20
//!   streams reset before they were accepted) stays on, and a connection whose client
//!   abandoned [`MAX_ABANDONED`] request bodies (streams reset after they were accepted)
//!   is closed;
//! - a connection that sends nothing within [`HEADER_READ_TIMEOUT`] of its handshake, or
//!   nothing for [`IDLE_TIMEOUT`] later, is shut down gracefully (an HTTP/2 GOAWAY) and
//!   closed [`CLOSE_GRACE`] after;
//! - request bodies are bounded in size, time and total memory by the routes
//!   ([`super::routes`]).

use super::ServerError;
use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Connections served at once. kube-apiserver keeps a handful per replica; the cap
/// bounds what many idle or slow clients can hold (see README, Robustness).
const MAX_CONNECTIONS: usize = 512;
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1: time allowed for a request's head, from when the connection waits for it.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (HTTP/1.1: request line and headers; HTTP/2: the decoded header
/// list); larger ones get 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a connection may stay open without the client sending a byte.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 streams open at once per connection.
const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 flow-control window of a stream: request bytes the client may send ahead.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window of a connection.
const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
/// Request bodies the client of one connection may abandon (an HTTP/2 stream reset after
/// the server accepted it) before the connection is closed. kube-apiserver abandons a
/// review only when the webhook takes longer than its timeout.
const MAX_ABANDONED: usize = 100;
/// Time in-flight requests get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Time an idle connection gets to close after it was told to.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

fn builders() -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // The buffer holds the head while it is parsed: a head that does not fit is 431.
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    (builder.clone().http1_only(), builder.http2_only())
}

pub(super) async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    token: CancellationToken,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (http1, http2) = builders();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = token.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    warn!(error = %e, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = token.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (http1, http2) = (http1.clone(), http2.clone());
        let abandoned = Abandoned::default();
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .map_request({
                    let abandoned = abandoned.clone();
                    move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(abandoned.clone());
                        request
                    }
                })
                .service(router.clone()),
        );
        let token = token.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                http2
            } else {
                http1
            };
            let (stream, activity) = Watched::new(stream);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // Once closing, what is in flight gets DRAIN_TIMEOUT (at shutdown) or
            // CLOSE_GRACE (when idle) to finish.
            let far = Duration::from_secs(365 * 24 * 3600);
            let deadline = tokio::time::sleep(far);
            tokio::pin!(deadline);
            let mut closing = false;
            loop {
                let grace = tokio::select! {
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            debug!(%peer, error = %e, "webhook connection ended with an error");
                        }
                        break;
                    }
                    _ = token.cancelled(), if !closing => DRAIN_TIMEOUT,
                    _ = activity.idle(), if !closing => {
                        debug!(%peer, "closing an idle webhook connection");
                        CLOSE_GRACE
                    }
                    _ = abandoned.too_many.cancelled(), if !closing => {
                        warn!(%peer, "closing a webhook connection whose client abandoned {MAX_ABANDONED} requests");
                        CLOSE_GRACE
                    }
                    _ = &mut deadline => {
                        debug!(%peer, "dropping a webhook connection that did not close in time");
                        break;
                    }
                };
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(Instant::now() + grace);
            }
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all drained.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!("in-flight webhook requests did not finish within {DRAIN_TIMEOUT:?}");
    }
    Ok(())
}

/// Handed to every request of a connection (as a request extension): the routes count
/// the requests whose body the client abandoned (an HTTP/2 stream reset after the server
/// accepted it), and [`Abandoned::too_many`] is cancelled at [`MAX_ABANDONED`].
#[derive(Clone, Default)]
pub(super) struct Abandoned {
    count: Arc<AtomicUsize>,
    too_many: CancellationToken,
}

impl Abandoned {
    /// One more request abandoned.
    pub(super) fn one_more(&self) {
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_ABANDONED {
            self.too_many.cancel();
        }
    }
}

/// When a connection last read a byte from its client.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start`, or [`NEVER`].
    last_read: Arc<AtomicU64>,
}

/// `Activity::last_read` of a connection that has read nothing yet.
const NEVER: u64 = 0;

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read.store(ms.max(1), Ordering::Relaxed);
    }

    /// Resolves once nothing has been read for [`HEADER_READ_TIMEOUT`] since the start,
    /// or for [`IDLE_TIMEOUT`] since the last byte.
    async fn idle(&self) {
        loop {
            let last_read = self.last_read.load(Ordering::Relaxed);
            let limit = if last_read == NEVER {
                HEADER_READ_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            let deadline = self.start + Duration::from_millis(last_read) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records when it last read something into an [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S> Watched<S> {
    fn new(inner: S) -> (Watched<S>, Activity) {
        let activity = Activity {
            start: Instant::now(),
            last_read: Arc::new(AtomicU64::new(NEVER)),
        };
        (
            Watched {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
