//! The repository ports, implemented once for both backends with `with_conn!`.

use async_trait::async_trait;
use byok_core::ports::{
    CiphertextRow, KeyRepository, KeyRotationRepository, SettingsRepository, TokenRepository,
    UsageRepository, UserRepository,
};
use byok_core::*;
use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::upsert::excluded;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::types::{DbJson, DbUuid};
use crate::{Database, DbPool, SqliteConn, pool_err};

/// Runs `$body` with `$conn` bound to a pooled connection and `$s` to that backend's schema.
/// The body is compiled once per backend. On PostgreSQL the whole of it (pool wait, the
/// connection's check, the body) is bounded by `$bound` (default: the query bound), past which
/// it fails with `Unavailable`: a database that hangs costs at most that, not minutes of TCP
/// retransmissions. (SQLite has its `busy_timeout` and no network.)
macro_rules! with_conn {
    ($db:expr, |$conn:ident, $s:ident| $body:block) => {
        crate::repos::with_conn!($db, $db.bounds.query, |$conn, $s| $body)
    };
    ($db:expr, $bound:expr, |$conn:ident, $s:ident| $body:block) => {{
        match &$db.pool {
            DbPool::Pg(pool) => {
                crate::bounded($bound, async {
                    let mut guard = pool.get().await.map_err(pool_err)?;
                    let $conn: &mut AsyncPgConnection = &mut guard;
                    use crate::schema::pg as $s;
                    Ok::<_, StoreError>($body)
                })
                .await?
            }
            DbPool::Sqlite(pool) => {
                let mut held = crate::SqliteHeld::get(pool).await?;
                let $conn: &mut SqliteConn = held.conn()?;
                use crate::schema::sqlite as $s;
                let out = $body;
                held.finish();
                out
            }
        }
    }};
}

/// Now, at the precision both databases store (microseconds), so returned records equal
/// what a later read gives back.
fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

pub(crate) use with_conn;

pub(crate) fn db_err(e: DieselError) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            StoreError::Conflict(info.constraint_name().unwrap_or("unique").to_string())
        }
        // The connection broke (the server went away mid-query): transient, like a refused
        // connection.
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => StoreError::Unavailable(Box::new(e)),
        // The server is shutting down, starting up or in recovery (SQLSTATE class 57P).
        DieselError::DatabaseError(_, ref info)
            if info.message().starts_with("terminating connection due to")
                || info.message().starts_with("the database system is") =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        // SQLite lock contention that outlasted busy_timeout: a transient condition (503).
        DieselError::DatabaseError(_, ref info)
            if info.message().contains("database is locked")
                || info.message().contains("database table is locked") =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Other(Box::new(other)),
    }
}

type UserRow = (DbUuid, String, String, DateTime<Utc>, Option<String>);

fn user_from_row((id, email, tier, created_at, origin): UserRow) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(id.0),
        email,
        tier: tier
            .parse()
            .map_err(|_| StoreError::Corrupt("users.tier holds an unknown tier".into()))?,
        created_at,
        origin: UserOrigin::from_stored(origin),
    })
}

type TokenRow = (
    DbUuid,
    DbUuid,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn token_from_row(r: TokenRow) -> GatewayToken {
    GatewayToken {
        id: r.0.0,
        user_id: UserId(r.1.0),
        name: r.2,
        prefix: r.3,
        created_at: r.5,
        last_used_at: r.6,
        expires_at: r.7,
        revoked_at: r.8,
    }
}

type KeyRow = (
    DbUuid,
    String,
    String,
    String,
    String,
    bool,
    DbJson,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// `None` for rows this version cannot use (unknown provider, foreign user id format);
/// they are skipped with a warning rather than failing the whole listing.
fn key_from_row(r: KeyRow) -> Option<StoredKey> {
    let provider: ProviderId = match r.2.parse() {
        Ok(p) => p,
        Err(_) => {
            tracing::warn!(row = %r.0.0, "skipping provider key row with an unknown provider");
            return None;
        }
    };
    let user = match Uuid::parse_str(&r.1) {
        Ok(u) => UserId(u),
        Err(_) => {
            tracing::warn!(row = %r.0.0, "skipping provider key row with a non-UUID user id");
            return None;
        }
    };
    Some(StoredKey {
        id: r.0.0,
        user_id: user,
        provider,
        ciphertext: r.3,
        key_preview: KeyPreview::from_stored(r.4),
        enabled: r.5,
        metadata: KeyMetadata::from_json_lenient(&r.6.0),
        created_at: r.7,
        updated_at: r.8,
    })
}

#[async_trait]
impl UserRepository for Database {
    async fn create(&self, email: &str, tier: Tier) -> Result<User, StoreError> {
        let user = User {
            id: UserId::new_random(),
            email: email.to_string(),
            tier,
            created_at: now_micros(),
            origin: UserOrigin::Local,
        };
        with_conn!(self, |conn, s| {
            diesel::insert_into(s::users::table)
                .values((
                    s::users::id.eq(DbUuid(user.id.0)),
                    s::users::email.eq(&user.email),
                    s::users::tier.eq(tier.as_str()),
                    s::users::created_at.eq(user.created_at),
                    s::users::auth_source.eq(user.origin.as_stored()),
                ))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(user)
    }

    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_conn!(self, |conn, s| {
            s::users::table
                .filter(s::users::id.eq(DbUuid(id.0)))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        row.map(user_from_row).transpose()
    }

    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row: Option<UserRow> = with_conn!(self, |conn, s| {
            s::users::table
                .filter(s::users::email.eq(email))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        row.map(user_from_row).transpose()
    }

    async fn set_tier(&self, id: UserId, tier: Tier) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn, s| {
            diesel::update(s::users::table.filter(s::users::id.eq(DbUuid(id.0))))
                .set(s::users::tier.eq(tier.as_str()))
                .execute(conn)
                .await
                .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn ensure_external(
        &self,
        id: UserId,
        issuer: &str,
        email: &str,
        email_verified: bool,
        tier: Tier,
    ) -> Result<User, StoreError> {
        let placeholder = format!("{}@external.invalid", id.0);
        // An unverified email is never stored or compared: it links nothing.
        let wanted = if email_verified {
            email.trim().to_lowercase()
        } else {
            String::new()
        };
        let other_source =
            || StoreError::Conflict("the user id belongs to another identity source".into());
        let ours =
            |u: &User| matches!(&u.origin, UserOrigin::External { issuer: i } if i == issuer);
        if let Some(u) = UserRepository::get(self, id).await? {
            match &u.origin {
                UserOrigin::External { issuer: i } if i == issuer => {}
                UserOrigin::Local | UserOrigin::External { .. } => return Err(other_source()),
                UserOrigin::Unknown => {
                    // Stored before origins were recorded: claimed only by the same verified
                    // email (or the placeholder only this method writes), never by a bare id
                    // match.
                    let same = u.email == placeholder
                        || (!wanted.is_empty() && u.email.eq_ignore_ascii_case(&wanted));
                    if !same {
                        return Err(other_source());
                    }
                    let n = with_conn!(self, |conn, s| {
                        diesel::update(
                            s::users::table
                                .filter(s::users::id.eq(DbUuid(id.0)))
                                .filter(s::users::auth_source.is_null()),
                        )
                        .set(s::users::auth_source.eq(issuer))
                        .execute(conn)
                        .await
                        .map_err(db_err)?
                    });
                    // Nothing updated: a concurrent request claimed the row first. That is
                    // fine when it claimed it for this issuer.
                    if n != 1
                        && !UserRepository::get(self, id)
                            .await?
                            .is_some_and(|u| ours(&u))
                    {
                        return Err(other_source());
                    }
                }
            }
            if u.tier != tier {
                UserRepository::set_tier(self, id, tier).await?;
            }
            return Ok(User {
                tier,
                origin: UserOrigin::External {
                    issuer: issuer.to_string(),
                },
                ..u
            });
        }
        let candidates = [wanted.as_str(), placeholder.as_str()];
        for address in candidates.into_iter().filter(|a| !a.is_empty()) {
            let created_at = now_micros();
            // A concurrent first sight (same id) or an email held by someone else makes
            // this a no-op; the read below tells which.
            with_conn!(self, |conn, s| {
                diesel::insert_into(s::users::table)
                    .values((
                        s::users::id.eq(DbUuid(id.0)),
                        s::users::email.eq(address),
                        s::users::tier.eq(tier.as_str()),
                        s::users::created_at.eq(created_at),
                        s::users::auth_source.eq(issuer),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await
                    .map_err(db_err)?;
            });
            if let Some(u) = UserRepository::get(self, id).await? {
                // A concurrent first sight by another source may have won the race.
                return if ours(&u) { Ok(u) } else { Err(other_source()) };
            }
        }
        Err(StoreError::Conflict(
            "the external user could not be created".into(),
        ))
    }

    async fn rehome_issuer(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        let local = UserOrigin::Local;
        for issuer in [from, to] {
            if issuer.trim().is_empty() || Some(issuer) == local.as_stored() {
                return Err(StoreError::Conflict(
                    "an issuer must be a non-empty issuer URL, never `local`".into(),
                ));
            }
        }
        if from == to {
            return Ok(0);
        }
        let n = with_conn!(self, |conn, s| {
            diesel::update(s::users::table.filter(s::users::auth_source.eq(from)))
                .set(s::users::auth_source.eq(to))
                .execute(conn)
                .await
                .map_err(db_err)?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = with_conn!(self, |conn, s| {
            s::users::table
                .count()
                .get_result(conn)
                .await
                .map_err(db_err)?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[async_trait]
impl TokenRepository for Database {
    async fn create(&self, t: NewGatewayToken) -> Result<GatewayToken, StoreError> {
        use chrono::SubsecRound;
        let now = now_micros();
        let expires_at = t.expires_at.map(|e| e.trunc_subsecs(6));
        with_conn!(self, |conn, s| {
            diesel::insert_into(s::gateway_tokens::table)
                .values((
                    s::gateway_tokens::id.eq(DbUuid(t.id)),
                    s::gateway_tokens::user_id.eq(DbUuid(t.user_id.0)),
                    s::gateway_tokens::name.eq(&t.name),
                    s::gateway_tokens::prefix.eq(&t.prefix),
                    s::gateway_tokens::token_hash.eq(&t.hash),
                    s::gateway_tokens::created_at.eq(now),
                    s::gateway_tokens::expires_at.eq(expires_at),
                ))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(GatewayToken {
            id: t.id,
            user_id: t.user_id,
            name: t.name,
            prefix: t.prefix,
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
        })
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<(GatewayToken, User)>, StoreError> {
        let row: Option<(TokenRow, UserRow)> = with_conn!(self, |conn, s| {
            s::gateway_tokens::table
                .inner_join(s::users::table)
                .filter(s::gateway_tokens::token_hash.eq(hash))
                .select((s::gateway_tokens::all_columns, s::users::all_columns))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        match row {
            Some((t, u)) => Ok(Some((token_from_row(t), user_from_row(u)?))),
            None => Ok(None),
        }
    }

    async fn list(&self, user: UserId) -> Result<Vec<GatewayToken>, StoreError> {
        let rows: Vec<TokenRow> = with_conn!(self, |conn, s| {
            s::gateway_tokens::table
                .filter(s::gateway_tokens::user_id.eq(DbUuid(user.0)))
                .order(s::gateway_tokens::created_at.desc())
                .load(conn)
                .await
                .map_err(db_err)?
        });
        Ok(rows.into_iter().map(token_from_row).collect())
    }

    async fn revoke(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        let now = now_micros();
        let n = with_conn!(self, |conn, s| {
            diesel::update(
                s::gateway_tokens::table
                    .filter(s::gateway_tokens::id.eq(DbUuid(id)))
                    .filter(s::gateway_tokens::user_id.eq(DbUuid(user.0)))
                    .filter(s::gateway_tokens::revoked_at.is_null()),
            )
            .set(s::gateway_tokens::revoked_at.eq(Some(now)))
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn touch(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        with_conn!(self, |conn, s| {
            diesel::update(s::gateway_tokens::table.filter(s::gateway_tokens::id.eq(DbUuid(id))))
                .set(s::gateway_tokens::last_used_at.eq(Some(at)))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }
}

#[async_trait]
impl KeyRepository for Database {
    async fn upsert(&self, k: NewStoredKey) -> Result<(), StoreError> {
        let now = now_micros();
        let user = k.user_id.to_string();
        let metadata = DbJson(k.metadata.to_json());
        with_conn!(self, |conn, s| {
            use s::user_provider_keys as t;
            diesel::insert_into(t::table)
                .values((
                    t::id.eq(DbUuid(Uuid::new_v4())),
                    t::user_id.eq(&user),
                    t::provider.eq(k.provider.as_str()),
                    t::api_key_encrypted.eq(&k.ciphertext),
                    t::key_preview.eq(k.key_preview.as_str()),
                    t::enabled.eq(true),
                    t::metadata.eq(&metadata),
                    t::created_at.eq(now),
                    t::updated_at.eq(now),
                ))
                .on_conflict((t::user_id, t::provider))
                .do_update()
                .set((
                    t::api_key_encrypted.eq(excluded(t::api_key_encrypted)),
                    t::key_preview.eq(excluded(t::key_preview)),
                    t::enabled.eq(true),
                    t::metadata.eq(excluded(t::metadata)),
                    t::updated_at.eq(excluded(t::updated_at)),
                ))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn list(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let user = user.to_string();
        let rows: Vec<KeyRow> = with_conn!(self, |conn, s| {
            use s::user_provider_keys as t;
            t::table
                .filter(t::user_id.eq(&user))
                .order(t::provider.asc())
                .load(conn)
                .await
                .map_err(db_err)?
        });
        Ok(rows.into_iter().filter_map(key_from_row).collect())
    }

    async fn get(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> Result<Option<StoredKey>, StoreError> {
        let user = user.to_string();
        let row: Option<KeyRow> = with_conn!(self, |conn, s| {
            use s::user_provider_keys as t;
            t::table
                .filter(t::user_id.eq(&user))
                .filter(t::provider.eq(provider.as_str()))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        Ok(row.and_then(key_from_row))
    }

    async fn delete(&self, user: UserId, provider: ProviderId) -> Result<bool, StoreError> {
        let user = user.to_string();
        let n = with_conn!(self, |conn, s| {
            use s::user_provider_keys as t;
            diesel::delete(
                t::table
                    .filter(t::user_id.eq(&user))
                    .filter(t::provider.eq(provider.as_str())),
            )
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n > 0)
    }

    async fn record_test(
        &self,
        user: UserId,
        provider: ProviderId,
        ciphertext: &str,
        at: DateTime<Utc>,
        status: TestStatus,
    ) -> Result<bool, StoreError> {
        use diesel::sql_types::Text;
        let user = user.to_string();
        let at = at.to_rfc3339();
        let n = match &self.pool {
            DbPool::Pg(pool) => {
                let mut conn = pool.get().await.map_err(pool_err)?;
                diesel::sql_query(
                    "UPDATE user_provider_keys SET metadata = metadata || \
                     jsonb_build_object('last_tested', $1::text, 'test_status', $2::text) \
                     WHERE user_id = $3 AND provider = $4 AND api_key_encrypted = $5",
                )
                .bind::<Text, _>(&at)
                .bind::<Text, _>(status.as_str())
                .bind::<Text, _>(&user)
                .bind::<Text, _>(provider.as_str())
                .bind::<Text, _>(ciphertext)
                .execute(&mut conn)
                .await
                .map_err(db_err)?
            }
            DbPool::Sqlite(pool) => {
                let mut held = crate::SqliteHeld::get(pool).await?;
                let out = {
                    let conn = held.conn()?;
                    diesel::sql_query(
                        "UPDATE user_provider_keys SET metadata = \
                     json_set(metadata, '$.last_tested', ?, '$.test_status', ?) \
                     WHERE user_id = ? AND provider = ? AND api_key_encrypted = ?",
                    )
                    .bind::<Text, _>(&at)
                    .bind::<Text, _>(status.as_str())
                    .bind::<Text, _>(&user)
                    .bind::<Text, _>(provider.as_str())
                    .bind::<Text, _>(ciphertext)
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?
                };
                held.finish();
                out
            }
        };
        Ok(n == 1)
    }
}

#[async_trait]
impl KeyRotationRepository for Database {
    async fn ciphertext_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CiphertextRow>, StoreError> {
        let rows: Vec<(DbUuid, String)> = with_conn!(self, self.bounds.slow, |conn, s| {
            use s::user_provider_keys as t;
            let mut q = t::table
                .select((t::id, t::api_key_encrypted))
                .order(t::id.asc())
                .limit(i64::from(limit))
                .into_boxed();
            if let Some(after) = after {
                q = q.filter(t::id.gt(DbUuid(after)));
            }
            q.load(conn).await.map_err(db_err)?
        });
        Ok(rows
            .into_iter()
            .map(|(id, ciphertext)| CiphertextRow {
                id: id.0,
                ciphertext,
            })
            .collect())
    }

    async fn replace_ciphertext(&self, id: Uuid, old: &str, new: &str) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn, s| {
            use s::user_provider_keys as t;
            diesel::update(
                t::table
                    .filter(t::id.eq(DbUuid(id)))
                    .filter(t::api_key_encrypted.eq(old)),
            )
            .set(t::api_key_encrypted.eq(new))
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n == 1)
    }
}

#[async_trait]
impl SettingsRepository for Database {
    async fn get_settings(&self, user: UserId) -> Result<Option<UserSettings>, StoreError> {
        let user = user.to_string();
        let policy: Option<String> = with_conn!(self, |conn, s| {
            s::user_settings::table
                .filter(s::user_settings::user_id.eq(&user))
                .select(s::user_settings::fallback_policy)
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        policy
            .map(|p| {
                p.parse()
                    .map(|fallback_policy| UserSettings { fallback_policy })
                    .map_err(|_| StoreError::Corrupt("user_settings.fallback_policy".into()))
            })
            .transpose()
    }

    async fn put_settings(&self, user: UserId, settings: &UserSettings) -> Result<(), StoreError> {
        let user = user.to_string();
        let now = now_micros();
        let policy = settings.fallback_policy.as_str();
        with_conn!(self, |conn, s| {
            use s::user_settings as t;
            diesel::insert_into(t::table)
                .values((
                    t::user_id.eq(&user),
                    t::fallback_policy.eq(policy),
                    t::updated_at.eq(now),
                ))
                .on_conflict(t::user_id)
                .do_update()
                .set((t::fallback_policy.eq(policy), t::updated_at.eq(now)))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }
}

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
                crate::bounded(self.bounds.usage_write, async {
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
                let mut held = crate::SqliteHeld::get(pool).await?;
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
                crate::bounded(self.bounds.slow, async {
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
                let mut held = crate::SqliteHeld::get(pool).await?;
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
