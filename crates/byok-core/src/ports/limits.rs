//! The rate-limiter port: counts requests per key in clock-aligned windows (in process, or
//! in a shared store so a limit holds across replicas).

use std::time::Duration;

use async_trait::async_trait;

/// What a counter said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Within the limit.
    Allowed,
    /// Over the limit until the window ends (`retry_after` ≥ 1 s).
    Limited { retry_after: Duration },
}

/// Counts requests per key in clock-aligned windows.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request against `key` and answers whether it is within `limit` per
    /// `window`. MUST NOT fail the request: an implementation that cannot reach its store
    /// answers from a local count instead (and says so in its logs and metrics).
    async fn hit(&self, key: &str, limit: u64, window: Duration) -> RateDecision;
}
