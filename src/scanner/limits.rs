//! Per-registry-host limits shared by every scan in the process: a cap on concurrent
//! requests and a request rate (GCRA, with a burst of one second's worth).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub(crate) struct HostLimits {
    concurrency: usize,
    interval: Option<Duration>,
    burst: u32,
    hosts: Mutex<HashMap<String, Arc<HostLimiter>>>,
}

struct HostLimiter {
    semaphore: Arc<Semaphore>,
    /// GCRA theoretical arrival time.
    tat: Mutex<Option<Instant>>,
}

impl HostLimits {
    /// `requests_per_second` 0 means no rate limit; concurrency 0 is treated as 1.
    pub(crate) fn new(concurrency: usize, requests_per_second: f64) -> HostLimits {
        let interval = (requests_per_second > 0.0 && requests_per_second.is_finite())
            .then(|| Duration::from_secs_f64(1.0 / requests_per_second));
        HostLimits {
            concurrency: concurrency.max(1),
            interval,
            burst: (requests_per_second.ceil() as u32).max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn limiter(&self, host: &str) -> Arc<HostLimiter> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(HostLimiter {
                    semaphore: Arc::new(Semaphore::new(self.concurrency)),
                    tat: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Waits for a request slot on `host`; the permit bounds concurrency until dropped.
    pub(crate) async fn acquire(&self, host: &str) -> OwnedSemaphorePermit {
        let limiter = self.limiter(host);
        let permit = match limiter.semaphore.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore is never closed; if it were, fall back to a fresh permit.
            Err(_) => Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .unwrap_or_else(|_| unreachable!("a new semaphore is open")),
        };
        if let Some(interval) = self.interval {
            let wait_until = {
                let mut tat = limiter.tat.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let tolerance = interval * self.burst.saturating_sub(1);
                let t = tat.map_or(now, |t| t.max(now));
                *tat = Some(t + interval);
                t.checked_sub(tolerance).filter(|w| *w > now)
            };
            if let Some(w) = wait_until {
                tokio::time::sleep_until(w).await;
            }
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_wait_for_the_rate() {
        let limits = HostLimits::new(100, 10.0);
        let start = Instant::now();
        for _ in 0..30 {
            drop(limits.acquire("r.example").await);
        }
        // 10 in the burst, then 20 more at 10/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
        // Another host has its own budget.
        let start = Instant::now();
        drop(limits.acquire("other.example").await);
        assert!(start.elapsed() < Duration::from_millis(1));
    }

    #[tokio::test]
    async fn concurrency_is_capped_per_host() {
        let limits = HostLimits::new(2, 0.0);
        let a = limits.acquire("h").await;
        let _b = limits.acquire("h").await;
        let third = tokio::time::timeout(Duration::from_millis(50), limits.acquire("h")).await;
        assert!(third.is_err(), "a third concurrent request must wait");
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(500), limits.acquire("h")).await;
        assert!(third.is_ok());
    }
}
