//! `TokenRepository`: gateway tokens (stored as hashes), looked up with their user.

use async_trait::async_trait;
use byok_core::ports::TokenRepository;
use byok_core::{GatewayToken, NewGatewayToken, StoreError, User, UserId};
use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::users::{UserRow, user_from_row};
use super::{now_micros, with_conn};
use crate::database::Database;
use crate::error::db_err;
use crate::types::DbUuid;

pub(super) type TokenRow = (
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

pub(super) fn token_from_row(r: TokenRow) -> GatewayToken {
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
