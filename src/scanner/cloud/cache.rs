//! The cloud token cache: the cloud credentials of each identity (AWS keys, Entra ID and
//! Google access tokens) and the registry credentials made from them, until shortly
//! before they expire.
//!
//! - **Lifetime**: four fifths of the time the service gave, at most
//!   `--token-cache-max-duration` (itself at most an hour, as in Flux). A token whose
//!   expiry lies in the past (a skewed clock; moto's ECR tokens say 2015) or that came
//!   without one (static keys) is kept for [`SHORT_LIFETIME`], so it is neither fetched again in a
//!   loop nor trusted for long; a registry that refuses it drops it at once.
//! - **One fetch per key at a time**: a scan that misses waits for a fetch already under
//!   way for the same key instead of starting its own, so fifty repositories of one
//!   registry make one exchange, not fifty. Different keys never wait on each other.
//! - **Bounded**: at most `--token-cache-max-size` keys; the least recently used goes
//!   first. A size of 0 turns caching off.

use super::metrics::CloudMetrics;
use super::{CloudError, InvolvedObject};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a token with an expiry in the past, or none, is kept.
pub const SHORT_LIFETIME: Duration = Duration::from_secs(60);
/// Flux's ceiling on `--token-cache-max-duration`.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A cached secret. `Debug` shows its kind only.
#[derive(Clone)]
pub(crate) enum Token {
    Aws(aws_credential_types::Credentials),
    /// An OAuth2 access token (Entra ID, Google).
    Bearer(String),
    /// A credential for the registry itself.
    Registry {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Token::Aws(_) => "Token::Aws(<redacted>)",
            Token::Bearer(_) => "Token::Bearer(<redacted>)",
            Token::Registry { .. } => "Token::Registry(<redacted>)",
        })
    }
}

struct Entry {
    token: Token,
    until: Instant,
}

struct Slot {
    entry: tokio::sync::Mutex<Option<Entry>>,
    used: Mutex<Instant>,
}

/// How long to keep a token that expires at `expires_at` (Unix seconds; `None`: the
/// service did not say), and whether that expiry lies in the past.
pub(crate) fn lifetime(expires_at: Option<i64>, now: i64, max: Duration) -> (Duration, bool) {
    let (life, past) = match expires_at.map(|e| e.saturating_sub(now)) {
        Some(left) if left > 0 => (Duration::from_secs(left as u64).mul_f64(0.8), false),
        Some(_) => (SHORT_LIFETIME, true),
        None => (SHORT_LIFETIME, false),
    };
    (life.min(max.min(MAX_DURATION)), past)
}

pub(crate) struct TokenCache {
    max_size: usize,
    max_duration: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    metrics: Arc<CloudMetrics>,
}

impl TokenCache {
    pub(crate) fn new(
        max_size: usize,
        max_duration: Duration,
        metrics: Arc<CloudMetrics>,
    ) -> TokenCache {
        TokenCache {
            max_size,
            max_duration,
            slots: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The token under `key`, or the one `fetch` returns (with its expiry, Unix seconds),
    /// kept for later. `what` names the token in the log line about an unusable expiry.
    pub(crate) async fn get_or_fetch<F, Fut>(
        &self,
        key: &str,
        what: &str,
        involved: Option<&InvolvedObject>,
        fetch: F,
    ) -> Result<Token, CloudError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Token, Option<i64>), CloudError>>,
    {
        if self.max_size == 0 {
            let result = fetch().await.map(|(t, _)| t);
            self.metrics.cache_request(result.is_ok(), false, involved);
            return result;
        }
        let slot = self.slot(key);
        let mut entry = slot.entry.lock().await;
        if let Some(e) = entry.as_ref().filter(|e| Instant::now() < e.until) {
            self.metrics.cache_request(true, true, involved);
            return Ok(e.token.clone());
        }
        let result = fetch().await;
        self.metrics.cache_request(result.is_ok(), false, involved);
        match result {
            Ok((token, expires_at)) => {
                let now = jiff::Timestamp::now().as_second();
                let (life, past) = lifetime(expires_at, now, self.max_duration);
                if past {
                    let expiry = expires_at
                        .and_then(|e| jiff::Timestamp::from_second(e).ok())
                        .map_or_else(String::new, |t| t.to_string());
                    tracing::warn!(
                        token = what,
                        expiry,
                        kept_for_secs = life.as_secs(),
                        "the token's expiry lies in the past (a skewed clock, or an emulator); it is kept briefly, and dropped as soon as the registry refuses it"
                    );
                }
                *entry = Some(Entry {
                    token: token.clone(),
                    until: Instant::now() + life,
                });
                drop(entry);
                self.update_gauge();
                Ok(token)
            }
            Err(e) => {
                *entry = None;
                drop(entry);
                self.remove_slot(key, &slot);
                Err(e)
            }
        }
    }

    /// Drops the token under `key` (the registry refused it).
    pub(crate) fn remove(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.remove(key);
        drop(slots);
        self.update_gauge();
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(s) = slots.get(key) {
            *s.used.lock().unwrap_or_else(|p| p.into_inner()) = now;
            return s.clone();
        }
        if slots.len() >= self.max_size {
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| *s.used.lock().unwrap_or_else(|p| p.into_inner()))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                slots.remove(&k);
                self.metrics.evicted();
            }
        }
        let slot = Arc::new(Slot {
            entry: tokio::sync::Mutex::new(None),
            used: Mutex::new(now),
        });
        slots.insert(key.to_string(), slot.clone());
        slot
    }

    fn remove_slot(&self, key: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    fn update_gauge(&self) {
        let n = self.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.metrics.set_cached_items(n);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cloud, Step};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn cache(size: usize, max: Duration) -> TokenCache {
        TokenCache::new(size, max, Arc::new(CloudMetrics::default()))
    }

    fn bearer(t: &Token) -> &str {
        match t {
            Token::Bearer(s) => s,
            _ => "",
        }
    }

    #[test]
    fn lifetimes_are_four_fifths_capped_and_short_for_past_or_missing_expiries() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            lifetime(Some(1100), 1000, hour),
            (Duration::from_secs(80), false)
        );
        assert_eq!(lifetime(Some(1000 + 12 * 3600), 1000, hour), (hour, false));
        assert_eq!(
            lifetime(Some(1000 + 12 * 3600), 1000, Duration::from_secs(5 * 3600)),
            (hour, false),
            "Flux's ceiling of one hour holds whatever the flag says"
        );
        // moto's ECR token expired in 2015.
        assert_eq!(
            lifetime(Some(1_420_070_400), 1_800_000_000, hour),
            (SHORT_LIFETIME, true)
        );
        assert_eq!(lifetime(Some(1000), 1000, hour), (SHORT_LIFETIME, true));
        assert_eq!(lifetime(None, 1000, hour), (SHORT_LIFETIME, false));
        assert_eq!(
            lifetime(None, 1000, Duration::from_secs(3)),
            (Duration::from_secs(3), false)
        );
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_fetch_once() {
        let c = Arc::new(cache(10, MAX_DURATION));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (c, fetches) = (c.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                c.get_or_fetch("k", "test token", None, || async {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok((
                        Token::Bearer("t".into()),
                        Some(jiff::Timestamp::now().as_second() + 600),
                    ))
                })
                .await
                .map(|t| bearer(&t).to_string())
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "t");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_fetched_again_after_its_lifetime_and_failures_are_not_kept() {
        let c = cache(10, Duration::from_secs(5));
        let n = AtomicUsize::new(0);
        let get = || {
            c.get_or_fetch("k", "test token", None, || async {
                let i = n.fetch_add(1, Ordering::SeqCst);
                Ok((Token::Bearer(format!("t{i}")), None))
            })
        };
        assert_eq!(bearer(&get().await.unwrap()), "t0");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(bearer(&get().await.unwrap()), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(bearer(&get().await.unwrap()), "t1");

        let failing = c
            .get_or_fetch("f", "test token", None, || async {
                Err(CloudError::new(Cloud::Aws, Step::TokenService, "refused"))
            })
            .await;
        assert!(failing.is_err());
        let ok = c
            .get_or_fetch("f", "test token", None, || async {
                Ok((Token::Bearer("ok".into()), None))
            })
            .await
            .unwrap();
        assert_eq!(bearer(&ok), "ok");
        c.remove("k");
        assert_eq!(bearer(&get().await.unwrap()), "t2");
    }

    #[tokio::test]
    async fn the_least_recently_used_key_leaves_first_and_size_zero_caches_nothing() {
        let c = cache(2, MAX_DURATION);
        let n = AtomicUsize::new(0);
        let get = |key: &'static str| {
            let n = &n;
            let c = &c;
            async move {
                c.get_or_fetch(key, "test token", None, || async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    Ok((Token::Bearer(key.into()), None))
                })
                .await
                .map(|t| bearer(&t).to_string())
            }
        };
        get("a").await.unwrap();
        get("b").await.unwrap();
        get("a").await.unwrap();
        get("c").await.unwrap(); // evicts b
        assert_eq!(n.load(Ordering::SeqCst), 3);
        get("a").await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3);
        get("b").await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 4);

        let off = cache(0, MAX_DURATION);
        for _ in 0..3 {
            off.get_or_fetch("k", "test token", None, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Ok((Token::Bearer("x".into()), None))
            })
            .await
            .unwrap();
        }
        assert_eq!(n.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let t = Token::Registry {
            username: "AWS".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
