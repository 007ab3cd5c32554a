//! The usage ports: the repository of usage records and the sink the gateway hands them to.

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::domain::{DailyUsage, UsageRecord, UsageSummary, UserId};
use crate::error::StoreError;

/// Usage records, written in batches off the hot path.
#[async_trait]
pub trait UsageRepository: Send + Sync + 'static {
    /// Inserts all records in one transaction. A record whose `id` is already
    /// stored is skipped, so a batch whose outcome is unknown may be written again. The daily
    /// totals [`Self::usage_daily`] reads count each inserted record once, in the same
    /// transaction (never a skipped one).
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;
    /// The user's totals, and per provider ordered by provider id.
    async fn usage_summary(&self, user: UserId) -> Result<UsageSummary, StoreError>;
    /// The user's daily totals from the UTC day `since` on: one entry per UTC calendar day of
    /// the records' times, provider and credential kind that has at least one record, ordered
    /// by day, then provider id, then credential name (`system` before `user`). `errors` counts
    /// statuses of 400 and above. A provider id the store holds but this version does not know
    /// is returned as stored. Kept as totals when records are inserted, so the cost of this
    /// read does not grow with the number of requests.
    async fn usage_daily(
        &self,
        user: UserId,
        since: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StoreError>;
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
