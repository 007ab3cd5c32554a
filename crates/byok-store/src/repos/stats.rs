//! `StatsRepository`: aggregates over every user for the BYOK adoption metrics and the
//! operators' figures (aggregates only: no user ids leave the database).

use async_trait::async_trait;
use byok_core::StoreError;
use byok_core::ports::{AdoptionStats, ProviderMix, StatsRepository, UsageFigures};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::dsl::{count, count_star};
use diesel::{AggregateExpressionMethods, ExpressionMethods, QueryDsl};
use diesel_async::RunQueryDsl;

use super::with_conn;
use crate::database::Database;
use crate::error::{db_err, pool_err};
use crate::options::bounded;
use crate::pool::{DbPool, SqliteHeld};

#[derive(diesel::QueryableByName)]
struct MixRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    provider: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    credential: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    requests: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    errors: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    fallbacks: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    output_tokens: i64,
}

#[derive(diesel::QueryableByName)]
struct UsersRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    active_users: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    byok_users: i64,
}

/// The window is read from the service-wide daily totals (`usage_daily_service`: days ×
/// providers × 2 rows) and the days' active users (`usage_daily_users`: active users × days
/// rows), never from the requests themselves.
const MIX_SQL: &str = "SELECT provider, credential, \
     CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
     CAST(COALESCE(SUM(errors), 0) AS BIGINT) AS errors, \
     CAST(COALESCE(SUM(fallbacks), 0) AS BIGINT) AS fallbacks, \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens \
     FROM usage_daily_service WHERE day >= PARAM GROUP BY provider, credential \
     ORDER BY provider, credential";

const USERS_SQL: &str = "SELECT \
     CAST(COUNT(DISTINCT user_id) AS BIGINT) AS active_users, \
     CAST(COUNT(DISTINCT CASE WHEN byok THEN user_id END) AS BIGINT) AS byok_users \
     FROM usage_daily_users WHERE day >= PARAM";

fn n(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Database {
    /// The two aggregate queries of [`StatsRepository::usage_figures`], written once with the
    /// bind of each backend.
    async fn usage_rows(
        &self,
        since: NaiveDate,
    ) -> Result<(Vec<MixRow>, Option<UsersRow>), StoreError> {
        match &self.pool {
            DbPool::Pg(pool) => {
                use diesel::sql_types::Date;
                bounded(self.bounds.slow, async {
                    let mut conn = pool.get().await.map_err(pool_err)?;
                    let mix: Vec<MixRow> = diesel::sql_query(MIX_SQL.replace("PARAM", "$1"))
                        .bind::<Date, _>(since)
                        .load(&mut conn)
                        .await
                        .map_err(db_err)?;
                    let users: Vec<UsersRow> = diesel::sql_query(USERS_SQL.replace("PARAM", "$1"))
                        .bind::<Date, _>(since)
                        .load(&mut conn)
                        .await
                        .map_err(db_err)?;
                    Ok((mix, users.into_iter().next()))
                })
                .await
            }
            DbPool::Sqlite(pool) => {
                use diesel::sql_types::Date;
                let mut held = SqliteHeld::get(pool).await?;
                let out = {
                    let conn = held.conn()?;
                    let mix: Vec<MixRow> = diesel::sql_query(MIX_SQL.replace("PARAM", "?"))
                        .bind::<Date, _>(since)
                        .load(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    let users: Vec<UsersRow> = diesel::sql_query(USERS_SQL.replace("PARAM", "?"))
                        .bind::<Date, _>(since)
                        .load(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    (mix, users.into_iter().next())
                };
                held.finish();
                Ok(out)
            }
        }
    }
}

#[async_trait]
impl StatsRepository for Database {
    /// Three aggregate queries (the metrics endpoint reads them at most every 30 s).
    async fn adoption_stats(&self) -> Result<AdoptionStats, StoreError> {
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
        Ok(AdoptionStats {
            eligible_users: n(eligible),
            users_with_keys: n(with_keys),
            keys_by_provider: per.into_iter().map(|(p, c)| (p, n(c))).collect(),
        })
    }

    async fn usage_figures(&self, since: DateTime<Utc>) -> Result<UsageFigures, StoreError> {
        let (rows, users) = self.usage_rows(since.date_naive()).await?;
        let mut out = UsageFigures::default();
        if let Some(u) = users {
            out.active_users = n(u.active_users);
            out.byok_users = n(u.byok_users);
        }
        for r in rows {
            let requests = n(r.requests);
            let own = r.credential == "user";
            out.requests += requests;
            out.errors += n(r.errors);
            out.fallbacks += n(r.fallbacks);
            if own {
                out.own_requests += requests;
            } else {
                out.platform_requests += requests;
            }
            // Rows come ordered by provider: a provider's second row follows its first.
            if out
                .by_provider
                .last()
                .is_none_or(|last| last.provider != r.provider)
            {
                out.by_provider.push(ProviderMix {
                    provider: r.provider.clone(),
                    ..ProviderMix::default()
                });
            }
            let Some(entry) = out.by_provider.last_mut() else {
                continue;
            };
            if own {
                entry.own_requests += requests;
            } else {
                entry.platform_requests += requests;
            }
            entry.errors += n(r.errors);
            entry.input_tokens += n(r.input_tokens);
            entry.output_tokens += n(r.output_tokens);
        }
        Ok(out)
    }
}
