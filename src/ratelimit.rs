//! Rate limits at the edge (docs/security.md): fixed one-second windows counted in Redis, so
//! every replica shares one budget; while Redis is unreachable an in-process limiter
//! (governor) takes over, and the switch is logged once, not per request.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

use crate::cache::Cache;

/// After a Redis failure, go straight to the in-process limiter for this long instead of
/// paying a connection timeout on every request.
const REDIS_BACKOFF: Duration = Duration::from_secs(5);

/// In-process limiters by (bucket, limit).
type Fallback = HashMap<(String, u32), Arc<DefaultKeyedRateLimiter<String>>>;

/// At most this many client keys per in-process limiter. Keys come from client addresses:
/// without a bound, an outage of Redis plus many source addresses grows memory without
/// end. Over it, keys whose budget has fully recovered are dropped; if that is not enough
/// the limiter starts afresh (briefly lenient, never unbounded).
const MAX_KEYS: usize = 50_000;

pub struct RateLimiter {
    cache: Arc<Cache>,
    fallback: Mutex<Fallback>,
    degraded: AtomicBool,
    redis_retry_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

/// Keys hold a digest of the client identity: an IP address is personal data, and keys
/// are visible to anyone with Redis access.
fn key_id(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

impl RateLimiter {
    pub fn new(cache: Arc<Cache>) -> Self {
        Self {
            cache,
            fallback: Mutex::default(),
            degraded: AtomicBool::new(false),
            redis_retry_at: Mutex::default(),
        }
    }

    /// `Err(retry_after_secs)` when `id` has used its `limit` for this second in `bucket`.
    pub async fn check(&self, bucket: &str, id: &str, limit: u32) -> Result<(), u64> {
        let skip_redis = self
            .redis_retry_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t);
        if !skip_redis {
            match self.check_redis(bucket, id, limit).await {
                Ok(outcome) => {
                    if self.degraded.swap(false, Ordering::SeqCst) {
                        tracing::info!("rate limiting is back on Redis");
                    }
                    return outcome;
                }
                Err(e) => {
                    *self
                        .redis_retry_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + REDIS_BACKOFF);
                    if !self.degraded.swap(true, Ordering::SeqCst) {
                        tracing::warn!(error = %format!("{e:#}"), "Redis unreachable: rate limiting in-process until it returns");
                    }
                }
            }
        }
        self.check_in_process(bucket, id, limit)
    }

    async fn check_redis(
        &self,
        bucket: &str,
        id: &str,
        limit: u32,
    ) -> anyhow::Result<Result<(), u64>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let window = now.as_secs();
        let key = self
            .cache
            .key(&format!("rl:{bucket}:{}:{window}", key_id(id)));
        let mut connection = self.cache.connection().await?;
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1u64)
            .expire(&key, 2)
            .ignore()
            .query_async(&mut connection)
            .await?;
        Ok(if count > u64::from(limit) {
            Err(1)
        } else {
            Ok(())
        })
    }

    fn check_in_process(&self, bucket: &str, id: &str, limit: u32) -> Result<(), u64> {
        let limiter = {
            let mut limiters = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
            limiters
                .entry((bucket.to_owned(), limit))
                .or_insert_with(|| {
                    let per_second = NonZeroU32::new(limit.max(1)).unwrap_or(NonZeroU32::MIN);
                    Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(
                        per_second,
                    )))
                })
                .clone()
        };
        if limiter.len() >= MAX_KEYS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
            if limiter.len() >= MAX_KEYS {
                let mut limiters = self.fallback.lock().unwrap_or_else(|p| p.into_inner());
                limiters.remove(&(bucket.to_owned(), limit));
                drop(limiters);
                return self.check_in_process(bucket, id, limit);
            }
        }
        limiter.check_key(&key_id(id)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs().max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: the in-process fallback kept every key it ever saw.
    #[test]
    fn the_in_process_limiter_stays_bounded() {
        let cache = Arc::new(
            Cache::new(
                &serde_json::from_value(serde_json::json!(
                    {"url": "redis://127.0.0.1:1/0", "key_prefix": "t:", "timeout_ms": 10}
                ))
                .unwrap(),
            )
            .unwrap(),
        );
        let limiter = RateLimiter::new(cache);
        for i in 0..(MAX_KEYS * 3) {
            assert!(
                limiter
                    .check_in_process("b", &format!("10.0.{i}"), 5)
                    .is_ok()
            );
        }
        let limiters = limiter.fallback.lock().unwrap();
        let size = limiters[&("b".to_owned(), 5)].len();
        assert!(size <= MAX_KEYS, "{size} keys kept");
        drop(limiters);
        // Still limiting: a sixth call from one client in the same second is refused.
        for _ in 0..5 {
            let _ = limiter.check_in_process("b", "one-client", 5);
        }
        assert!(limiter.check_in_process("b", "one-client", 5).is_err());
    }
}
