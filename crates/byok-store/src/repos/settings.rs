//! `SettingsRepository`: per-user settings (the fallback policy).

use async_trait::async_trait;
use byok_core::ports::SettingsRepository;
use byok_core::{StoreError, UserId, UserSettings};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;

use super::{now_micros, with_conn};
use crate::database::Database;
use crate::error::db_err;

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
