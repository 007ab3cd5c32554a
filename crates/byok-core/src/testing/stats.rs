//! Service-wide figures over records held in memory.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::fail::lock;
use crate::domain::{CredentialKind, UsageRecord};
use crate::error::StoreError;
use crate::ports::{AdoptionStats, ProviderMix, StatsRepository, UsageFigures};

/// [`StatsRepository`] over usage records given with [`MemStats::record`]; the adoption
/// figures are whatever [`MemStats::set_adoption`] last set.
#[derive(Debug, Default)]
pub struct MemStats {
    records: Mutex<Vec<UsageRecord>>,
    adoption: Mutex<AdoptionStats>,
}

impl MemStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a usage record to the figures.
    pub fn record(&self, r: UsageRecord) {
        lock(&self.records).push(r);
    }

    /// Sets the adoption figures.
    pub fn set_adoption(&self, a: AdoptionStats) {
        *lock(&self.adoption) = a;
    }
}

#[async_trait]
impl StatsRepository for MemStats {
    async fn adoption_stats(&self) -> Result<AdoptionStats, StoreError> {
        Ok(lock(&self.adoption).clone())
    }

    async fn usage_figures(&self, since: DateTime<Utc>) -> Result<UsageFigures, StoreError> {
        let mut records: Vec<UsageRecord> = lock(&self.records)
            .iter()
            .filter(|r| r.at.date_naive() >= since.date_naive())
            .cloned()
            .collect();
        records.sort_by(|a, b| a.provider.as_str().cmp(b.provider.as_str()));
        let mut out = UsageFigures::default();
        let mut users = std::collections::HashSet::new();
        let mut byok_users = std::collections::HashSet::new();
        for r in &records {
            let own = r.credential == CredentialKind::User;
            users.insert(r.user_id);
            if own {
                byok_users.insert(r.user_id);
                out.own_requests += 1;
            } else {
                out.platform_requests += 1;
            }
            out.requests += 1;
            out.errors += u64::from(r.status >= 400);
            out.fallbacks += u64::from(r.fallback);
            if out
                .by_provider
                .last()
                .is_none_or(|p| p.provider != r.provider.as_str())
            {
                out.by_provider.push(ProviderMix {
                    provider: r.provider.as_str().to_string(),
                    ..ProviderMix::default()
                });
            }
            if let Some(p) = out.by_provider.last_mut() {
                if own {
                    p.own_requests += 1;
                } else {
                    p.platform_requests += 1;
                }
                p.errors += u64::from(r.status >= 400);
                p.input_tokens += r.input_tokens;
                p.output_tokens += r.output_tokens;
            }
        }
        out.active_users = users.len() as u64;
        out.byok_users = byok_users.len() as u64;
        Ok(out)
    }
}
