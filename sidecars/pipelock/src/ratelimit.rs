//! Per-destination rate limit: a token bucket per host holding a minute's worth of requests,
//! refilled continuously. Survives config reloads (only the rate comes from the policy).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets are pruned when the map grows past this many hosts.
const PRUNE_AT: usize = 4096;

/// The limiter shared by every request.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Take one request for `host` at `per_minute`; `Err(seconds)` (a `Retry-After` hint) if
    /// its bucket is empty. `per_minute == 0` means unlimited.
    pub fn check(&self, host: &str, per_minute: u32) -> Result<(), u64> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = per_minute as f64;
        let per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= PRUNE_AT {
            // Full buckets carry no state worth keeping.
            map.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec < capacity
            });
        }
        let bucket = map.entry(host.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.updated).as_secs_f64() * per_sec)
            .min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_per_host() {
        let rl = RateLimiter::default();
        for _ in 0..3 {
            rl.check("a", 3).unwrap();
        }
        let retry = rl.check("a", 3).unwrap_err();
        assert!((1..=20).contains(&retry), "{retry}");
        rl.check("b", 3).unwrap();
        rl.check("a", 0).unwrap();
    }
}
