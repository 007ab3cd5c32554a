//! Cache invalidation across replicas.
//!
//! Each process caches token checks, resolved credentials and user settings. A change made
//! through one process drops its own entries at once; it also publishes an [`Invalidation`]
//! through the [`ChangeNotifier`] port so the other replicas drop theirs (PostgreSQL
//! `LISTEN`/`NOTIFY` in `byok-store`). The cache TTLs stay the backstop when the feed is down.

use async_trait::async_trait;

use crate::ports::{ChangeNotifier, Invalidation};

/// A single process has no one to tell (SQLite, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotifier;

#[async_trait]
impl ChangeNotifier for NoNotifier {
    async fn publish(&self, _: Invalidation) {}
}

/// Hits and misses of a cache since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}
