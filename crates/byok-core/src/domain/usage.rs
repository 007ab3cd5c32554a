//! Usage records and totals.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::providers::ProviderId;
use super::users::UserId;

/// Whose credential served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// The user's own key (BYOK).
    User,
    /// The system default.
    System,
}

impl CredentialKind {
    /// The lowercase name (`user`, `system`), as recorded in usage.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::User => "user",
            CredentialKind::System => "system",
        }
    }
}

/// One gateway request, as recorded for usage statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unique per served request, made when it is served: a record written twice (a retried
    /// batch whose commit was not acknowledged, a replayed spool) is stored once.
    pub id: Uuid,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub model: String,
    pub credential: CredentialKind,
    /// HTTP status returned to the client (200 for a stream that completed).
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
    pub at: DateTime<Utc>,
    /// Served on the platform's key after the user's own key failed (the fallback of policy
    /// `user_then_system`).
    pub fallback: bool,
}

/// Usage per provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderUsage {
    pub provider: String,
    pub requests: u64,
    pub byok_requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A user's usage totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    pub requests: u64,
    pub byok_requests: u64,
    pub system_requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub by_provider: Vec<ProviderUsage>,
}

/// A user's usage on one UTC calendar day, for one provider and one kind of credential
/// (see [`crate::ports::UsageRepository::usage_daily`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyUsage {
    /// The UTC date of the requests.
    pub day: NaiveDate,
    /// The provider id as recorded (`openai`, …).
    pub provider: String,
    pub credential: CredentialKind,
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}
