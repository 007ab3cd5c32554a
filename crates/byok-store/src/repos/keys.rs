//! `KeyRepository`: users' encrypted provider keys, with the compare-and-swap and keyset
//! pages that key rotation uses.

use async_trait::async_trait;
use byok_core::ports::{CiphertextRow, KeyRepository, KeyRotationRepository};
use byok_core::{
    KeyMetadata, KeyPreview, NewStoredKey, ProviderId, StoreError, StoredKey, TestStatus, UserId,
};
use chrono::{DateTime, Utc};
use diesel::upsert::excluded;
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::{now_micros, with_conn};
use crate::database::Database;
use crate::error::{db_err, pool_err};
use crate::options::bounded;
use crate::pool::{DbPool, SqliteHeld};
use crate::types::{DbJson, DbUuid};

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
            // Bounded like every other PostgreSQL call (`with_conn!` cannot hold the two
            // dialects' statements).
            DbPool::Pg(pool) => {
                bounded(self.bounds.query, async {
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
                    .map_err(db_err)
                })
                .await?
            }
            DbPool::Sqlite(pool) => {
                let mut held = SqliteHeld::get(pool).await?;
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
