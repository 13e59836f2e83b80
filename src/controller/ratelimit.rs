//! Client-side rate limiting of Kubernetes API requests (`--kube-api-qps`,
//! `--kube-api-burst`), as client-go's token bucket does it: up to `burst` requests at
//! once, then `qps` per second. Applied as a tower layer on the kube client, so every
//! request of every controller shares the one bucket.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service};

/// A token bucket shared by clones.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    inner: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `qps` tokens per second, at most `burst` saved up. A `qps` of zero or less means
    /// no limit.
    pub fn new(qps: f32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            inner: Arc::new(Mutex::new(Bucket {
                qps: f64::from(qps),
                burst,
                tokens: burst,
                last: Instant::now(),
            })),
        }
    }

    /// Takes one token, returning how long to wait before the request may go.
    fn reserve(&self) -> Duration {
        let Ok(mut b) = self.inner.lock() else {
            return Duration::ZERO;
        };
        if b.qps <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * b.qps).min(b.burst);
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / b.qps)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The tower layer for the kube client.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: TokenBucket,
}

impl RateLimitLayer {
    pub fn new(qps: f32, burst: u32) -> RateLimitLayer {
        RateLimitLayer {
            bucket: TokenBucket::new(qps, burst),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            sleep: None,
            permitted: false,
        }
    }
}

/// The rate-limited service: `poll_ready` waits for a token, then for the inner service.
/// (The kube client drives it through a buffer, which calls `poll_ready` before each
/// request, so the inner service need not be `Clone`.)
pub struct RateLimited<S> {
    inner: S,
    bucket: TokenBucket,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    permitted: bool,
}

impl<S, Req> Service<Req> for RateLimited<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.permitted {
            if self.sleep.is_none() {
                let wait = self.bucket.reserve();
                if wait.is_zero() {
                    self.permitted = true;
                } else {
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
                self.permitted = true;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_passes_at_once_then_requests_are_paced_at_qps() {
        let bucket = TokenBucket::new(10.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is not delayed");
        for _ in 0..5 {
            bucket.acquire().await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(490) && paced <= Duration::from_millis(510),
            "five requests past the burst at 10 qps take half a second, took {paced:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_qps_means_unlimited() {
        let bucket = TokenBucket::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..100 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_layer_paces_requests_through_any_service() {
        use tower::ServiceExt;
        let svc =
            tower::service_fn(|n: u32| async move { Ok::<u32, std::convert::Infallible>(n * 2) });
        let mut limited = RateLimitLayer::new(4.0, 2).layer(svc);
        let start = Instant::now();
        for n in 0..6u32 {
            let out = limited
                .ready()
                .await
                .expect("ready")
                .call(n)
                .await
                .expect("call");
            assert_eq!(out, n * 2);
        }
        // Two at once, then four more at 4 per second.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
