//! `SessionRepository`: console sessions (with their user and bound gateway token) and
//! single-use sign-in links. Only hashes are stored.

use async_trait::async_trait;
use byok_core::ports::{NewLoginLink, NewSession, SessionRepository, StoredSession};
use byok_core::{StoreError, UserId};
use chrono::{DateTime, SubsecRound, Utc};
use diesel::{
    ExpressionMethods, JoinOnDsl, NullableExpressionMethods, OptionalExtension, QueryDsl,
};
use diesel_async::RunQueryDsl;

use super::tokens::{TokenRow, token_from_row};
use super::users::{UserRow, user_from_row};
use super::with_conn;
use crate::database::Database;
use crate::error::db_err;
use crate::types::DbUuid;

type SessionRow = (
    String,
    Option<DbUuid>,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
);

#[async_trait]
impl SessionRepository for Database {
    async fn create_session(&self, n: NewSession) -> Result<(), StoreError> {
        let created_at = n.created_at.trunc_subsecs(6);
        let expires_at = n.expires_at.trunc_subsecs(6);
        with_conn!(self, |conn, s| {
            diesel::insert_into(s::console_sessions::table)
                .values((
                    s::console_sessions::id_hash.eq(&n.id_hash),
                    s::console_sessions::user_id.eq(DbUuid(n.user_id.0)),
                    s::console_sessions::csrf_token.eq(&n.csrf_token),
                    s::console_sessions::token_id.eq(n.token_id.map(DbUuid)),
                    s::console_sessions::created_at.eq(created_at),
                    s::console_sessions::last_seen_at.eq(created_at),
                    s::console_sessions::expires_at.eq(expires_at),
                ))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn find_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let row: Option<(SessionRow, UserRow, Option<TokenRow>)> = with_conn!(self, |conn, s| {
            s::console_sessions::table
                .inner_join(s::users::table)
                .left_join(
                    s::gateway_tokens::table
                        .on(s::console_sessions::token_id.eq(s::gateway_tokens::id.nullable())),
                )
                .filter(s::console_sessions::id_hash.eq(id_hash))
                .select((
                    (
                        s::console_sessions::csrf_token,
                        s::console_sessions::token_id,
                        s::console_sessions::created_at,
                        s::console_sessions::last_seen_at,
                        s::console_sessions::expires_at,
                    ),
                    s::users::all_columns,
                    s::gateway_tokens::all_columns.nullable(),
                ))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        let Some(((csrf_token, token_id, created_at, last_seen_at, expires_at), user, token)) = row
        else {
            return Ok(None);
        };
        let token = token.map(token_from_row);
        if token_id.is_some() && token.is_none() {
            // The bound token is gone (the foreign key cascades; a race at most).
            return Ok(None);
        }
        Ok(Some(StoredSession {
            user: user_from_row(user)?,
            csrf_token,
            token,
            created_at,
            last_seen_at,
            expires_at,
        }))
    }

    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let at = at.trunc_subsecs(6);
        with_conn!(self, |conn, s| {
            diesel::update(
                s::console_sessions::table.filter(s::console_sessions::id_hash.eq(id_hash)),
            )
            .set(s::console_sessions::last_seen_at.eq(at))
            .execute(conn)
            .await
            .map_err(db_err)?;
        });
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn, s| {
            diesel::delete(
                s::console_sessions::table.filter(s::console_sessions::id_hash.eq(id_hash)),
            )
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n > 0)
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError> {
        let n = with_conn!(self, |conn, s| {
            diesel::delete(
                s::console_sessions::table.filter(s::console_sessions::user_id.eq(DbUuid(user.0))),
            )
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = with_conn!(self, |conn, s| {
            let a = diesel::delete(
                s::console_sessions::table.filter(s::console_sessions::expires_at.le(now)),
            )
            .execute(conn)
            .await
            .map_err(db_err)?;
            let b =
                diesel::delete(s::login_links::table.filter(s::login_links::expires_at.le(now)))
                    .execute(conn)
                    .await
                    .map_err(db_err)?;
            a + b
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn create_login_link(&self, link: NewLoginLink) -> Result<(), StoreError> {
        let created_at = link.created_at.trunc_subsecs(6);
        let expires_at = link.expires_at.trunc_subsecs(6);
        with_conn!(self, |conn, s| {
            diesel::insert_into(s::login_links::table)
                .values((
                    s::login_links::id_hash.eq(&link.id_hash),
                    s::login_links::user_id.eq(DbUuid(link.user_id.0)),
                    s::login_links::created_at.eq(created_at),
                    s::login_links::expires_at.eq(expires_at),
                ))
                .execute(conn)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    async fn redeem_login_link(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        let now = now.trunc_subsecs(6);
        // One conditional UPDATE: of concurrent redemptions, one changes the row.
        let user: Option<DbUuid> = with_conn!(self, |conn, s| {
            diesel::update(
                s::login_links::table
                    .filter(s::login_links::id_hash.eq(id_hash))
                    .filter(s::login_links::used_at.is_null())
                    .filter(s::login_links::expires_at.gt(now)),
            )
            .set(s::login_links::used_at.eq(Some(now)))
            .returning(s::login_links::user_id)
            .get_result(conn)
            .await
            .optional()
            .map_err(db_err)?
        });
        Ok(user.map(|u| UserId(u.0)))
    }
}
