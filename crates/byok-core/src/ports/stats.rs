//! The service-wide figures port: aggregates over every user, for operators (the console's
//! administration page) and the metrics endpoint. Never a user id, email or key.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::StoreError;

/// How many users bring their own keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptionStats {
    /// Users whose tier allows BYOK (`starter` and above).
    pub eligible_users: u64,
    /// Users with at least one enabled key.
    pub users_with_keys: u64,
    /// Enabled keys per provider id, ordered by provider.
    pub keys_by_provider: Vec<(String, u64)>,
}

/// Gateway requests of one provider over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderMix {
    /// The provider id as recorded.
    pub provider: String,
    /// Served with the users' own keys.
    pub own_requests: u64,
    /// Served with the platform's key (fallbacks included).
    pub platform_requests: u64,
    /// Answered with an error (status 400 or above).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl ProviderMix {
    /// Every request of this provider.
    pub fn requests(&self) -> u64 {
        self.own_requests + self.platform_requests
    }
}

/// Gateway usage of every user over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFigures {
    pub requests: u64,
    pub own_requests: u64,
    pub platform_requests: u64,
    /// Requests served on the platform's key after a user's own key was refused (401, 403,
    /// 429) and their policy was `user_then_system`.
    pub fallbacks: u64,
    pub errors: u64,
    /// Users who sent at least one request.
    pub active_users: u64,
    /// Users who sent at least one request served with their own key.
    pub byok_users: u64,
    /// Per provider, ordered by provider id.
    pub by_provider: Vec<ProviderMix>,
}

/// Aggregates over every user.
#[async_trait]
pub trait StatsRepository: Send + Sync + 'static {
    /// BYOK adoption now: eligible users, users with a key, enabled keys per provider.
    async fn adoption_stats(&self) -> Result<AdoptionStats, StoreError>;
    /// Usage from the UTC day of `since` on, summed: per provider and credential kind,
    /// fallbacks, errors, and distinct users. Counted by whole UTC days (the daily totals):
    /// every request served on or after `since`'s UTC date counts.
    async fn usage_figures(&self, since: DateTime<Utc>) -> Result<UsageFigures, StoreError>;
}
