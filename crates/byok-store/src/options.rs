//! Pool settings ([`DbOptions`]) and the time bounds on PostgreSQL operations ([`bounded`]).

use std::time::Duration;

use byok_core::StoreError;

use crate::error::timed_out;

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Largest number of pooled connections.
    pub max_connections: usize,
    /// How long a request waits for a free connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// PostgreSQL: the longest one repository operation (waiting for a connection, checking
    /// it, the query) may take before it fails with `Unavailable`. This bounds the token,
    /// credential and settings reads that stale-if-error covers, `last_used_at` writes, and
    /// management reads and writes: a database that hangs (a failover, a partition dropping
    /// packets) answers like one that refuses, after this long.
    pub query_timeout: Duration,
    /// PostgreSQL: the same bound for one usage batch insert.
    pub usage_write_timeout: Duration,
    /// PostgreSQL: the same bound for the few reads that may legitimately take long (usage
    /// summaries, adoption metrics, a key rotation's pages).
    pub slow_query_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(2),
            usage_write_timeout: Duration::from_secs(10),
            slow_query_timeout: Duration::from_secs(60),
        }
    }
}

/// The bounds of [`DbOptions`], kept by [`Database`](crate::Database).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) query: Duration,
    pub(crate) usage_write: Duration,
    pub(crate) slow: Duration,
}

impl Bounds {
    pub(crate) fn of(opts: &DbOptions) -> Self {
        Self {
            query: opts.query_timeout,
            usage_write: opts.usage_write_timeout,
            slow: opts.slow_query_timeout,
        }
    }
}

/// How long a pooled connection's check (`SELECT 1`, run by every `get`) may take before the
/// connection is dropped and another one is tried.
pub(crate) const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `op` (a PostgreSQL operation, pool wait included) for at most `bound`; past it, the
/// operation is dropped (its connection is then checked again, or discarded, before reuse) and
/// the answer is `Unavailable`, as for a database that refuses connections. No allocation:
/// one timer entry.
#[inline]
pub(crate) async fn bounded<T>(
    bound: Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(bound, op).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(bound)),
    }
}
