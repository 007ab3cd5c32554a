//! Request rate limits per user (by tier) and per gateway token.
//!
//! The policy ([`RateLimits`]) lives here; the counting is behind the [`RateLimiter`] port: an
//! in-process counter ([`LocalRateLimiter`], the default and the fallback) or a shared store
//! (Redis, `byok-store`) so the limit holds across replicas.
//!
//! Windows are fixed and aligned to the clock (`floor(now / window)`), so every replica counts
//! into the same window without coordination; a client can at most send `2 × limit` across a
//! window boundary, never more than `limit` inside one window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::domain::{Principal, Tier, UserId};
use crate::error::CoreError;
use crate::ports::{RateDecision, RateLimiter};

/// The window a moment falls in, and the time left in it.
pub fn window_of(now: SystemTime, window: Duration) -> (u64, Duration) {
    let w = window.as_millis().max(1) as u64;
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let index = ms / w;
    let left = Duration::from_millis(w - ms % w);
    (index, left)
}

/// The decision for a count reached in a window.
pub fn decide(count: u64, limit: u64, left: Duration) -> RateDecision {
    if count <= limit {
        RateDecision::Allowed
    } else {
        RateDecision::Limited {
            retry_after: left.max(Duration::from_secs(1)),
        }
    }
}

const MAX_LOCAL_KEYS: usize = 200_000;

/// In-process counters (one replica's view).
#[derive(Debug, Default)]
pub struct LocalRateLimiter {
    windows: Mutex<HashMap<String, (u64, u64)>>,
}

impl LocalRateLimiter {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The synchronous count, for callers (such as a shared limiter's fallback) that are
    /// not async.
    pub fn hit_now(&self, key: &str, limit: u64, window: Duration) -> RateDecision {
        let (index, left) = window_of(SystemTime::now(), window);
        let Ok(mut map) = self.windows.lock() else {
            return RateDecision::Allowed;
        };
        if map.len() >= MAX_LOCAL_KEYS {
            map.retain(|_, (w, _)| *w == index);
        }
        let slot = map.entry(key.to_string()).or_insert((index, 0));
        if slot.0 != index {
            *slot = (index, 0);
        }
        slot.1 += 1;
        decide(slot.1, limit, left)
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn hit(&self, key: &str, limit: u64, window: Duration) -> RateDecision {
        self.hit_now(key, limit, window)
    }
}

/// The configured limits: requests per window per user by tier, and per gateway token.
/// `None` (or 0 in the configuration) means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub window: Duration,
    pub per_tier: [Option<u64>; 5],
    pub per_token: Option<u64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            per_tier: [None; 5],
            per_token: None,
        }
    }
}

fn tier_index(t: Tier) -> usize {
    match t {
        Tier::Trial => 0,
        Tier::Free => 1,
        Tier::Starter => 2,
        Tier::Professional => 3,
        Tier::Enterprise => 4,
    }
}

impl RateLimits {
    /// Parses `tier=N,…` (e.g. `free=60,starter=600,enterprise=0`); unnamed tiers stay
    /// unlimited, 0 is unlimited.
    pub fn parse_tiers(&mut self, raw: &str) -> Result<(), String> {
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tier, n) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected tier=requests"))?;
            let tier: Tier = tier
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a tier", tier.trim()))?;
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a number", n.trim()))?;
            self.per_tier[tier_index(tier)] = (n > 0).then_some(n);
        }
        Ok(())
    }

    /// Whether any limit is set (when none is, the limiter is never called).
    pub fn any(&self) -> bool {
        self.per_token.is_some() || self.per_tier.iter().any(Option::is_some)
    }

    /// Counts the request against the caller's limits; the first one exceeded refuses it with
    /// the scope (`user` or `token`).
    pub async fn admit(
        &self,
        limiter: &dyn RateLimiter,
        who: &Principal,
    ) -> Result<(), (&'static str, CoreError)> {
        if let Some(limit) = self.per_tier[tier_index(who.tier)] {
            let key = format!("u:{}", who.user_id);
            if let RateDecision::Limited { retry_after } =
                limiter.hit(&key, limit, self.window).await
            {
                return Err(("user", limited(retry_after)));
            }
        }
        if let (Some(limit), Some(token)) = (self.per_token, who.token_id) {
            let key = format!("t:{token}");
            if let RateDecision::Limited { retry_after } =
                limiter.hit(&key, limit, self.window).await
            {
                return Err(("token", limited(retry_after)));
            }
        }
        Ok(())
    }
}

/// Concurrent operations per user (LLM requests; execution-server operations), counted in this
/// process: a replica admits up to `max` of one user at a time (so a cluster of N replicas up to
/// N × `max`). A slot is held by an [`InFlight`] guard until the operation ends, streams and
/// client disconnects included; a user's entry goes away when their last one ends. Clones share
/// the counts.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    max: Option<usize>,
    counts: Counts,
}

/// Requests in flight per user (users with none have no entry).
type Counts = Arc<Mutex<HashMap<UserId, usize>>>;

impl ConcurrencyLimit {
    /// `max` concurrent requests per user; 0 means unlimited.
    pub fn new(max: usize) -> Self {
        Self {
            max: (max > 0).then_some(max),
            counts: Arc::default(),
        }
    }

    /// The limit (`None`: unlimited).
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// A slot for one more request of `user`, or `None` when they already have `max` in
    /// flight.
    pub fn try_acquire(&self, user: UserId) -> Option<InFlight> {
        let Some(max) = self.max else {
            return Some(InFlight { slot: None });
        };
        // A poisoned lock only means another request panicked while counting: keep counting.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(user).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(InFlight {
            slot: Some((self.counts.clone(), user)),
        })
    }

    /// Users with at least one request in flight.
    pub fn users(&self) -> usize {
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// One request's slot; given back when dropped.
#[derive(Debug)]
pub struct InFlight {
    slot: Option<(Counts, UserId)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((counts, user)) = self.slot.take() {
            let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&user);
                }
            }
        }
    }
}

/// The refusal for a limited request: retry after the rest of the window, in whole seconds.
pub(crate) fn limited(retry_after: Duration) -> CoreError {
    CoreError::RateLimited {
        retry_after_secs: retry_after.as_secs_f64().ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_capped_per_user_and_entries_go_away() {
        let limit = ConcurrencyLimit::new(2);
        let (a, b) = (UserId(uuid::Uuid::new_v4()), UserId(uuid::Uuid::new_v4()));
        let a1 = limit.try_acquire(a).unwrap();
        let a2 = limit.try_acquire(a).unwrap();
        assert!(limit.try_acquire(a).is_none(), "a third is refused");
        let b1 = limit.try_acquire(b).unwrap();
        assert_eq!(limit.users(), 2);
        drop(a1);
        let a3 = limit.try_acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(limit.users(), 0, "no entry is left behind");
        let unlimited = ConcurrencyLimit::new(0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.try_acquire(a).unwrap())
            .collect();
        assert_eq!(held.len(), 100);
        assert_eq!(unlimited.users(), 0);
    }

    #[test]
    fn windows_align_to_the_clock() {
        let t = UNIX_EPOCH + Duration::from_millis(125_500);
        assert_eq!(
            window_of(t, Duration::from_secs(60)),
            (2, Duration::from_millis(54_500))
        );
    }

    #[test]
    fn local_counts_up_to_the_limit() {
        let l = LocalRateLimiter::new();
        let w = Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.hit_now("k", 3, w), RateDecision::Allowed);
        }
        assert!(matches!(
            l.hit_now("k", 3, w),
            RateDecision::Limited { retry_after } if retry_after >= Duration::from_secs(1)
        ));
        assert_eq!(l.hit_now("other", 3, w), RateDecision::Allowed);
    }

    #[test]
    fn tiers_parse() {
        let mut r = RateLimits::default();
        r.parse_tiers("free=60, starter=600,enterprise=0").unwrap();
        assert_eq!(r.per_tier[tier_index(Tier::Free)], Some(60));
        assert_eq!(r.per_tier[tier_index(Tier::Starter)], Some(600));
        assert_eq!(r.per_tier[tier_index(Tier::Enterprise)], None);
        assert!(r.any());
        assert!(r.parse_tiers("gold=1").is_err());
        assert!(r.parse_tiers("free=x").is_err());
        assert!(r.parse_tiers("free").is_err());
    }
}
