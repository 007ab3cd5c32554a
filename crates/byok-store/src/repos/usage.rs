//! `UsageRepository`: usage records (batched, stored once per record id), per-user
//! summaries, and the daily totals (`usage_daily`) kept in the same transaction as the
//! records they count.

use async_trait::async_trait;
use byok_core::ports::UsageRepository;
use std::collections::{BTreeMap, HashSet};

use byok_core::{
    CredentialKind, DailyUsage, ProviderUsage, StoreError, UsageRecord, UsageSummary, UserId,
};
use chrono::NaiveDate;
use diesel::upsert::excluded;
use diesel::{BoolExpressionMethods, ExpressionMethods, QueryDsl};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::with_conn;
use crate::database::Database;
use crate::error::{db_err, pool_err};
use crate::options::bounded;
use crate::pool::{DbPool, Held, SqliteHeld};
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

/// One (user, UTC day, provider, credential) group of a batch: what it adds to `usage_daily`.
type DailyKey = (String, NaiveDate, &'static str, &'static str);

/// Requests, errors, input and output tokens, fallbacks (the last kept service-wide only).
type DailyCounts = [i64; 5];

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What the records of a batch that were actually inserted (`inserted`: the ids the insert
/// reported; a record id given twice in the batch counts once) add to the daily totals, in
/// key order, so that writers on several replicas lock the same rows in the same order.
fn daily_deltas(
    records: &[UsageRecord],
    inserted: impl IntoIterator<Item = uuid::Uuid>,
) -> Vec<(DailyKey, DailyCounts)> {
    let mut new: HashSet<uuid::Uuid> = inserted.into_iter().collect();
    let mut groups: BTreeMap<DailyKey, DailyCounts> = BTreeMap::new();
    for r in records {
        if !new.remove(&r.id) {
            continue;
        }
        let key = (
            r.user_id.to_string(),
            r.at.date_naive(),
            r.provider.as_str(),
            r.credential.as_str(),
        );
        let c = groups.entry(key).or_default();
        c[0] = c[0].saturating_add(1);
        c[1] = c[1].saturating_add(i64::from(r.status >= 400));
        c[2] = c[2].saturating_add(clamp(r.input_tokens));
        c[3] = c[3].saturating_add(clamp(r.output_tokens));
        c[4] = c[4].saturating_add(i64::from(r.fallback));
    }
    groups.into_iter().collect()
}

/// One (UTC day, provider, credential) group over every user: what a batch adds to
/// `usage_daily_service`.
type ServiceKey = (NaiveDate, &'static str, &'static str);

/// The service-wide totals and the active users (per UTC day and user: whether one request
/// was served with their own key) of a batch's daily deltas, in key order.
#[allow(clippy::type_complexity)]
fn service_deltas(
    daily: &[(DailyKey, DailyCounts)],
) -> (
    Vec<(ServiceKey, DailyCounts)>,
    Vec<((NaiveDate, String), bool)>,
) {
    let mut service: BTreeMap<ServiceKey, DailyCounts> = BTreeMap::new();
    let mut users: BTreeMap<(NaiveDate, String), bool> = BTreeMap::new();
    for ((user, day, provider, credential), c) in daily {
        let t = service.entry((*day, provider, credential)).or_default();
        for (sum, add) in t.iter_mut().zip(c) {
            *sum = sum.saturating_add(*add);
        }
        *users.entry((*day, user.clone())).or_default() |= *credential == "user";
    }
    (service.into_iter().collect(), users.into_iter().collect())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl UsageRepository for Database {
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
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
        // The records (those already stored skipped, the others' ids returned), then what
        // they add to the daily totals.
        macro_rules! insert_records {
            ($s:ident, $records:expr) => {
                diesel::insert_into($s::usage_records::table)
                    .values(rows!($s, $records))
                    .on_conflict($s::usage_records::record_id)
                    .do_nothing()
                    .returning($s::usage_records::record_id)
            };
        }
        macro_rules! add_daily {
            ($s:ident, $deltas:expr) => {{
                use $s::usage_daily as d;
                diesel::insert_into(d::table)
                    .values(
                        $deltas
                            .iter()
                            .map(|((user, day, provider, credential), c)| {
                                (
                                    d::user_id.eq(user.as_str()),
                                    d::day.eq(*day),
                                    d::provider.eq(*provider),
                                    d::credential.eq(*credential),
                                    d::requests.eq(c[0]),
                                    d::errors.eq(c[1]),
                                    d::input_tokens.eq(c[2]),
                                    d::output_tokens.eq(c[3]),
                                )
                            })
                            .collect::<Vec<_>>(),
                    )
                    .on_conflict((d::user_id, d::day, d::provider, d::credential))
                    .do_update()
                    .set((
                        d::requests.eq(d::requests + excluded(d::requests)),
                        d::errors.eq(d::errors + excluded(d::errors)),
                        d::input_tokens.eq(d::input_tokens + excluded(d::input_tokens)),
                        d::output_tokens.eq(d::output_tokens + excluded(d::output_tokens)),
                    ))
            }};
        }
        macro_rules! add_service {
            ($s:ident, $deltas:expr) => {{
                use $s::usage_daily_service as t;
                diesel::insert_into(t::table)
                    .values(
                        $deltas
                            .iter()
                            .map(|((day, provider, credential), c)| {
                                (
                                    t::day.eq(*day),
                                    t::provider.eq(*provider),
                                    t::credential.eq(*credential),
                                    t::requests.eq(c[0]),
                                    t::errors.eq(c[1]),
                                    t::input_tokens.eq(c[2]),
                                    t::output_tokens.eq(c[3]),
                                    t::fallbacks.eq(c[4]),
                                )
                            })
                            .collect::<Vec<_>>(),
                    )
                    .on_conflict((t::day, t::provider, t::credential))
                    .do_update()
                    .set((
                        t::requests.eq(t::requests + excluded(t::requests)),
                        t::errors.eq(t::errors + excluded(t::errors)),
                        t::input_tokens.eq(t::input_tokens + excluded(t::input_tokens)),
                        t::output_tokens.eq(t::output_tokens + excluded(t::output_tokens)),
                        t::fallbacks.eq(t::fallbacks + excluded(t::fallbacks)),
                    ))
            }};
        }
        macro_rules! add_users {
            ($s:ident, $deltas:expr) => {{
                use $s::usage_daily_users as t;
                diesel::insert_into(t::table)
                    .values(
                        $deltas
                            .iter()
                            .map(|((day, user), byok)| {
                                (
                                    t::day.eq(*day),
                                    t::user_id.eq(user.as_str()),
                                    t::byok.eq(*byok),
                                )
                            })
                            .collect::<Vec<_>>(),
                    )
                    .on_conflict((t::day, t::user_id))
                    .do_update()
                    .set(t::byok.eq(t::byok.or(excluded(t::byok))))
            }};
        }
        match &self.pool {
            DbPool::Pg(pool) => {
                use crate::schema::pg as s;
                // Bounded: a hanging database must not hold the usage writer (its queue would
                // fill). A batch whose acknowledgement is lost this way is stored once anyway
                // (record ids, ON CONFLICT DO NOTHING; the totals count what was inserted).
                bounded(self.bounds.usage_write, async {
                    // Held: a transaction cut short is not pooled again (the server rolls it
                    // back when the connection closes).
                    let mut held = Held::get(pool).await?;
                    let conn = held.conn()?;
                    conn.batch_execute("BEGIN").await.map_err(db_err)?;
                    let result = async {
                        let ids: Vec<Option<DbUuid>> =
                            insert_records!(s, records).get_results(conn).await?;
                        let deltas = daily_deltas(records, ids.into_iter().flatten().map(|u| u.0));
                        if !deltas.is_empty() {
                            add_daily!(s, deltas).execute(conn).await?;
                            let (service, users) = service_deltas(&deltas);
                            add_service!(s, service).execute(conn).await?;
                            add_users!(s, users).execute(conn).await?;
                        }
                        Ok::<_, diesel::result::Error>(())
                    }
                    .await;
                    let out = match result {
                        Ok(()) => conn.batch_execute("COMMIT").await.map_err(db_err),
                        Err(e) => {
                            let _ = conn.batch_execute("ROLLBACK").await;
                            Err(db_err(e))
                        }
                    };
                    held.finish();
                    out
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
                            let ids: Vec<Option<DbUuid>> =
                                diesel::RunQueryDsl::get_results(insert_records!(s, owned), c)?;
                            let deltas =
                                daily_deltas(&owned, ids.into_iter().flatten().map(|u| u.0));
                            if !deltas.is_empty() {
                                diesel::RunQueryDsl::execute(add_daily!(s, deltas), c)?;
                                let (service, users) = service_deltas(&deltas);
                                diesel::RunQueryDsl::execute(add_service!(s, service), c)?;
                                diesel::RunQueryDsl::execute(add_users!(s, users), c)?;
                            }
                            Ok::<_, diesel::result::Error>(())
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
    async fn usage_daily(
        &self,
        user: UserId,
        since: NaiveDate,
    ) -> Result<Vec<DailyUsage>, StoreError> {
        let user = user.to_string();
        let rows: Vec<(NaiveDate, String, String, i64, i64, i64, i64)> =
            with_conn!(self, |conn, s| {
                use s::usage_daily as d;
                d::table
                    .filter(d::user_id.eq(&user))
                    .filter(d::day.ge(since))
                    .order((d::day, d::provider, d::credential))
                    .select((
                        d::day,
                        d::provider,
                        d::credential,
                        d::requests,
                        d::errors,
                        d::input_tokens,
                        d::output_tokens,
                    ))
                    .load(conn)
                    .await
                    .map_err(db_err)?
            });
        Ok(rows
            .into_iter()
            .map(
                |(day, provider, credential, requests, errors, input, output)| DailyUsage {
                    day,
                    provider,
                    credential: if credential == "user" {
                        CredentialKind::User
                    } else {
                        CredentialKind::System
                    },
                    requests: to_u64(requests),
                    errors: to_u64(errors),
                    input_tokens: to_u64(input),
                    output_tokens: to_u64(output),
                },
            )
            .collect())
    }
}
