//! Aggregate counts for the BYOK adoption metrics.

use byok_core::StoreError;
use diesel::dsl::{count, count_star};
use diesel::{AggregateExpressionMethods, ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;

use super::with_conn;
use crate::database::Database;
use crate::error::db_err;

/// How many users bring their own keys, for metrics (aggregates only: no user ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptionStats {
    /// Users whose tier allows BYOK (`starter` and above).
    pub eligible_users: u64,
    /// Users with at least one enabled key.
    pub users_with_keys: u64,
    /// Enabled keys per provider id, ordered by provider.
    pub keys_by_provider: Vec<(String, u64)>,
}

impl Database {
    /// Counts for the BYOK adoption metrics (three aggregate queries).
    pub async fn adoption_stats(&self) -> Result<AdoptionStats, StoreError> {
        // The tier rule is core's: every tier that allows BYOK.
        let eligible: Vec<&str> = byok_core::Tier::ALL
            .into_iter()
            .filter(|t| t.allows(byok_core::Tier::BYOK_MINIMUM))
            .map(byok_core::Tier::as_str)
            .collect();
        let (eligible, with_keys, per) = with_conn!(self, self.bounds.slow, |conn, s| {
            use s::{user_provider_keys as k, users as u};
            let eligible: i64 = u::table
                .filter(u::tier.eq_any(&eligible))
                .select(count_star())
                .get_result(conn)
                .await
                .map_err(db_err)?;
            let with_keys: i64 = k::table
                .filter(k::enabled.eq(true))
                .select(count(k::user_id).aggregate_distinct())
                .get_result(conn)
                .await
                .map_err(db_err)?;
            let per: Vec<(String, i64)> = k::table
                .filter(k::enabled.eq(true))
                .group_by(k::provider)
                .select((k::provider, count_star()))
                .order(k::provider)
                .load(conn)
                .await
                .map_err(db_err)?;
            (eligible, with_keys, per)
        });
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(AdoptionStats {
            eligible_users: n(eligible),
            users_with_keys: n(with_keys),
            keys_by_provider: per.into_iter().map(|(p, c)| (p, n(c))).collect(),
        })
    }
}
