//! `UserRepository`: local and external users.

use async_trait::async_trait;
use byok_core::ports::UserRepository;
use byok_core::{Role, StoreError, Tier, User, UserId, UserOrigin};
use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;

use super::{now_micros, with_conn};
use crate::database::Database;
use crate::error::db_err;
use crate::types::DbUuid;

pub(super) type UserRow = (
    DbUuid,
    String,
    String,
    DateTime<Utc>,
    Option<String>,
    String,
    Option<DateTime<Utc>>,
);

pub(super) fn user_from_row(
    (id, email, tier, created_at, origin, role, disabled_at): UserRow,
) -> Result<User, StoreError> {
    Ok(User {
        id: UserId(id.0),
        email,
        tier: tier
            .parse()
            .map_err(|_| StoreError::Corrupt("users.tier holds an unknown tier".into()))?,
        created_at,
        origin: UserOrigin::from_stored(origin),
        role: role
            .parse()
            .map_err(|_| StoreError::Corrupt("users.role holds an unknown role".into()))?,
        disabled_at,
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
            role: Role::User,
            disabled_at: None,
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

    async fn set_role(&self, id: UserId, role: Role) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn, s| {
            diesel::update(s::users::table.filter(s::users::id.eq(DbUuid(id.0))))
                .set(s::users::role.eq(role.as_str()))
                .execute(conn)
                .await
                .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let n = with_conn!(self, |conn, s| {
            diesel::update(s::users::table.filter(s::users::id.eq(DbUuid(id.0))))
                .set(s::users::disabled_at.eq(at))
                .execute(conn)
                .await
                .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn list_users(&self, offset: u64, limit: u64) -> Result<Vec<User>, StoreError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<UserRow> = with_conn!(self, |conn, s| {
            s::users::table
                .order((s::users::email.asc(), s::users::id.asc()))
                .offset(offset)
                .limit(limit)
                .load(conn)
                .await
                .map_err(db_err)?
        });
        rows.into_iter().map(user_from_row).collect()
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
