//! The usage ports: the repository of usage records and the sink the gateway hands them to.

use async_trait::async_trait;

use crate::domain::{UsageRecord, UsageSummary, UserId};
use crate::error::StoreError;

/// Usage records, written in batches off the hot path.
#[async_trait]
pub trait UsageRepository: Send + Sync + 'static {
    /// Inserts all records (one statement or one transaction). A record whose `id` is already
    /// stored is skipped, so a batch whose outcome is unknown may be written again.
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;
    /// The user's totals, and per provider ordered by provider id.
    async fn usage_summary(&self, user: UserId) -> Result<UsageSummary, StoreError>;
}

/// Where the gateway hands usage records. MUST NOT block or fail the request: an
/// implementation drops (and counts) records it cannot take.
pub trait UsageSink: Send + Sync + 'static {
    /// Takes one record (queues it, or drops and counts it when full).
    fn record(&self, record: UsageRecord);
    /// Records dropped so far (for metrics).
    fn dropped(&self) -> u64 {
        0
    }
}
