//! `UsageRepository`: usage records (batched, stored once per record id) and per-user
//! summaries.

use async_trait::async_trait;
use byok_core::ports::UsageRepository;
use byok_core::{ProviderUsage, StoreError, UsageRecord, UsageSummary, UserId};
use diesel::ExpressionMethods;
use diesel_async::RunQueryDsl;

use crate::database::Database;
use crate::error::{db_err, pool_err};
use crate::options::bounded;
use crate::pool::{DbPool, SqliteHeld};
use crate::types::DbUuid;

#[derive(diesel::QueryableByName)]
struct UsageGroup {
    #[diesel(sql_type = diesel::sql_types::Text)]
    provider: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    credential: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    requests: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    errors: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    input_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    output_tokens: i64,
}

const USAGE_SUMMARY_SQL: &str = "SELECT provider, credential, \
     CAST(COUNT(*) AS BIGINT) AS requests, \
     CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens \
     FROM usage_records WHERE user_id = PARAM GROUP BY provider, credential \
     ORDER BY provider, credential";

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl UsageRepository for Database {
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        macro_rules! rows {
            ($s:ident, $records:expr) => {
                $records
                    .iter()
                    .map(|r| {
                        use $s::usage_records as t;
                        (
                            t::user_id.eq(r.user_id.to_string()),
                            t::provider.eq(r.provider.as_str()),
                            t::model.eq(r.model.as_str()),
                            t::credential.eq(r.credential.as_str()),
                            t::status.eq(i32::from(r.status)),
                            t::input_tokens.eq(clamp(r.input_tokens)),
                            t::output_tokens.eq(clamp(r.output_tokens)),
                            t::latency_ms.eq(clamp(r.latency_ms)),
                            t::created_at.eq(r.at),
                            t::record_id.eq(Some(DbUuid(r.id))),
                            t::fallback.eq(r.fallback),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        }
        match &self.pool {
            DbPool::Pg(pool) => {
                use crate::schema::pg as s;
                // Bounded: a hanging database must not hold the usage writer (its queue would
                // fill). A batch whose acknowledgement is lost this way is stored once anyway
                // (record ids, ON CONFLICT DO NOTHING).
                bounded(self.bounds.usage_write, async {
                    let mut conn = pool.get().await.map_err(pool_err)?;
                    diesel::insert_into(s::usage_records::table)
                        .values(rows!(s, records))
                        .on_conflict(s::usage_records::record_id)
                        .do_nothing()
                        .execute(&mut conn)
                        .await
                        .map_err(db_err)
                })
                .await?;
            }
            DbPool::Sqlite(pool) => {
                let mut held = SqliteHeld::get(pool).await?;
                let out = {
                    // One blocking task for the whole batch: through the async wrapper every
                    // statement would be its own hand-off to a blocking thread and back (measured:
                    // one cross-thread wake-up per usage row, i.e. per LLM request).
                    use crate::schema::sqlite as s;
                    let owned: Vec<UsageRecord> = records.to_vec();
                    let conn = held.conn()?;
                    conn.spawn_blocking(move |c| {
                        c.immediate_transaction(|c| {
                            diesel::RunQueryDsl::execute(
                                diesel::insert_into(s::usage_records::table)
                                    .values(rows!(s, owned))
                                    .on_conflict(s::usage_records::record_id)
                                    .do_nothing(),
                                c,
                            )
                            .map(|_| ())
                        })
                    })
                    .await
                    .map_err(db_err)?;
                };
                held.finish();
                out
            }
        }
        Ok(())
    }

    async fn usage_summary(&self, user: UserId) -> Result<UsageSummary, StoreError> {
        use diesel::sql_types::Text;
        let user = user.to_string();
        let groups: Vec<UsageGroup> = match &self.pool {
            DbPool::Pg(pool) => {
                bounded(self.bounds.slow, async {
                    let mut conn = pool.get().await.map_err(pool_err)?;
                    diesel::sql_query(USAGE_SUMMARY_SQL.replace("PARAM", "$1"))
                        .bind::<Text, _>(&user)
                        .load(&mut conn)
                        .await
                        .map_err(db_err)
                })
                .await?
            }
            DbPool::Sqlite(pool) => {
                let mut held = SqliteHeld::get(pool).await?;
                let out = {
                    let conn = held.conn()?;
                    diesel::sql_query(USAGE_SUMMARY_SQL.replace("PARAM", "?"))
                        .bind::<Text, _>(&user)
                        .load(&mut *conn)
                        .await
                        .map_err(db_err)?
                };
                held.finish();
                out
            }
        };
        let mut summary = UsageSummary::default();
        for g in groups {
            let (requests, errors) = (to_u64(g.requests), to_u64(g.errors));
            let (input, output) = (to_u64(g.input_tokens), to_u64(g.output_tokens));
            let byok = g.credential == "user";
            summary.requests += requests;
            summary.errors += errors;
            summary.input_tokens += input;
            summary.output_tokens += output;
            if byok {
                summary.byok_requests += requests;
            } else {
                summary.system_requests += requests;
            }
            let entry = match summary
                .by_provider
                .iter_mut()
                .find(|p| p.provider == g.provider)
            {
                Some(e) => e,
                None => {
                    summary.by_provider.push(ProviderUsage {
                        provider: g.provider.clone(),
                        ..ProviderUsage::default()
                    });
                    let last = summary.by_provider.len() - 1;
                    &mut summary.by_provider[last]
                }
            };
            entry.requests += requests;
            entry.errors += errors;
            entry.input_tokens += input;
            entry.output_tokens += output;
            if byok {
                entry.byok_requests += requests;
            }
        }
        Ok(summary)
    }
}
