//! The database's reachability as this process sees it: for `/readyz` (reported, not failed),
//! the `byok_database_up` gauge, one log line when it goes and one when it is back, and the
//! usage writer (woken when it is back, so its records are written at once).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use byok_store::Database;

use crate::error::error_chain;

/// How often the database is pinged in the background.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait for one ping (within the readiness probe's 3 s timeout).
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Up or down, and since when.
#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
    down_since: Mutex<Option<Instant>>,
    back: tokio::sync::Notify,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl DbHealth {
    /// Up: the process starts only after migrating the database.
    pub fn new() -> Self {
        Self {
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            back: tokio::sync::Notify::new(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Pings the database (bounded by `PING_TIMEOUT`) and records the outcome.
    pub async fn check(&self, db: &Database) -> bool {
        let outcome = match tokio::time::timeout(PING_TIMEOUT, db.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {} s", PING_TIMEOUT.as_secs_f32())),
        };
        let ok = outcome.is_ok();
        self.observe(outcome);
        ok
    }

    fn observe(&self, outcome: Result<(), String>) {
        let mut since = self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (outcome, *since) {
            (Ok(()), Some(at)) => {
                *since = None;
                self.up.store(true, Ordering::Relaxed);
                tracing::info!(
                    down_secs = at.elapsed().as_secs(),
                    "the database answers again; unwritten usage records are being written"
                );
                self.back.notify_one();
            }
            (Err(error), None) => {
                *since = Some(Instant::now());
                self.up.store(false, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    "the database does not answer: LLM requests are served from cached \
                     identities and credentials (up to BYOK_STALE_IF_ERROR_SECS old), \
                     management writes answer 503, usage records are kept and written later"
                );
            }
            _ => {}
        }
    }

    /// Completes when the database is seen back after an outage (one waiter: the usage
    /// writer; a recovery seen while it was busy is kept for its next wait).
    pub async fn back(&self) {
        self.back.notified().await;
    }
}

/// Pings the database every `CHECK_EVERY` until the process ends.
pub async fn monitor(health: std::sync::Arc<DbHealth>, db: Database) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        health.check(&db).await;
    }
}
