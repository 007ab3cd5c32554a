//! Rate-limit counters shared by every replica, in Redis.
//!
//! One `INCR` + `PEXPIRE` (a MULTI/EXEC pipeline, one round trip) per counted request on the key
//! `byok:rl:<scope>:<id>:<window>`, windows aligned to the clock so replicas agree without
//! talking to each other. A key found over its limit is remembered locally until its window
//! ends, so a client hammering past its limit costs no further round trips.
//!
//! When Redis does not answer (not reachable at start, down later, or slower than
//! `REDIS_TIMEOUT`), requests are counted by the process's own [`LocalRateLimiter`] instead: the
//! service keeps serving with per-replica limits rather than refusing everyone or letting
//! everyone through (the documented choice). After a failure Redis is left alone for
//! `PAUSE_AFTER_FAILURE`, so an unresponsive Redis costs one timeout per pause, not one per
//! request. It reconnects in the background.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use byok_core::ports::{RateDecision, RateLimiter};
use byok_core::services::{LocalRateLimiter, rate_decision, window_of};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest wait for Redis per request before counting locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After Redis failed or timed out, requests are counted locally for this long before Redis is
/// tried again: a Redis that stopped answering costs one timeout per pause, not one per request.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Counters in Redis, with the local fallback.
pub struct RedisRateLimiter {
    conn: tokio::sync::OnceCell<ConnectionManager>,
    client: redis::Client,
    local: LocalRateLimiter,
    /// Keys known to be over their limit: key → (window index, end of window).
    exhausted: Mutex<HashMap<String, (u64, Instant)>>,
    /// Requests counted locally because Redis did not answer.
    fallbacks: AtomicU64,
    /// Until when Redis is not asked (after a failure).
    paused_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter").finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// Parses `REDIS_URL` (`redis://` or `rediss://`) and starts connecting in the background;
    /// never waits for Redis.
    pub fn new(url: &str) -> Result<std::sync::Arc<Self>, String> {
        let client = redis::Client::open(url).map_err(|e| {
            // The URL may hold a password: only the kind of problem is reported.
            format!("REDIS_URL is not a valid Redis URL ({:?})", e.kind())
        })?;
        let me = std::sync::Arc::new(Self {
            conn: tokio::sync::OnceCell::new(),
            client,
            local: LocalRateLimiter::new(),
            exhausted: Mutex::new(HashMap::new()),
            fallbacks: AtomicU64::new(0),
            paused_until: Mutex::new(None),
            last_warning: Mutex::new(None),
        });
        let weak = std::sync::Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let Some(me) = weak.upgrade() else { return };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Duration::from_secs(2))
                    .set_response_timeout(REDIS_TIMEOUT);
                match ConnectionManager::new_with_config(me.client.clone(), config).await {
                    Ok(c) => {
                        let _ = me.conn.set(c);
                        tracing::info!("rate limits shared through Redis");
                        return;
                    }
                    Err(e) => me.warn(&format!("cannot connect to Redis ({:?})", e.kind())),
                }
                drop(me);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        Ok(me)
    }

    /// Requests counted locally because Redis did not answer, since start.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    fn warn(&self, what: &str) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                problem = what,
                "Redis unavailable: rate limits are counted per replica until it answers"
            );
        }
    }

    fn known_exhausted(&self, key: &str, index: u64) -> bool {
        self.exhausted
            .lock()
            .map(|m| m.get(key).is_some_and(|(w, _)| *w == index))
            .unwrap_or(false)
    }

    fn remember_exhausted(&self, key: &str, index: u64, left: Duration) {
        if let Ok(mut m) = self.exhausted.lock() {
            if m.len() >= 100_000 {
                let now = Instant::now();
                m.retain(|_, (_, end)| *end > now);
            }
            m.insert(key.to_string(), (index, Instant::now() + left));
        }
    }

    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .map(|p| p.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }

    fn pause(&self) {
        if let Ok(mut p) = self.paused_until.lock() {
            *p = Some(Instant::now() + PAUSE_AFTER_FAILURE);
        }
    }

    fn local(&self, key: &str, limit: u64, window: Duration, what: &str) -> RateDecision {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.warn(what);
        self.local.hit_now(key, limit, window)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn hit(&self, key: &str, limit: u64, window: Duration) -> RateDecision {
        let (index, left) = window_of(SystemTime::now(), window);
        if self.known_exhausted(key, index) {
            return rate_decision(limit + 1, limit, left);
        }
        let Some(conn) = self.conn.get() else {
            return self.local(key, limit, window, "not connected");
        };
        if self.paused() {
            return self.local(key, limit, window, "paused after a failure");
        }
        let mut conn = conn.clone();
        let redis_key = format!("byok:rl:{key}:{index}");
        // The key outlives its window a little, so late replicas' clocks still find it.
        let ttl_ms = window.as_millis() as i64 + 5_000;
        let counted = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::pipe()
                .atomic()
                .incr(&redis_key, 1u64)
                .pexpire(&redis_key, ttl_ms)
                .ignore()
                .query_async::<(u64,)>(&mut conn),
        )
        .await;
        match counted {
            Ok(Ok((count,))) => {
                let decision = rate_decision(count, limit, left);
                if decision != RateDecision::Allowed {
                    self.remember_exhausted(key, index, left);
                }
                decision
            }
            Ok(Err(e)) => {
                self.pause();
                self.local(key, limit, window, &format!("{:?}", e.kind()))
            }
            Err(_) => {
                self.pause();
                self.local(key, limit, window, "timeout")
            }
        }
    }
}
