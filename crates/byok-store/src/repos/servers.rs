//! `ServerRepository`: execution servers, with the one-default rule held by a partial unique
//! index and changed in one transaction (serialised per user).

use async_trait::async_trait;
use byok_core::execution::{ExecutionServer, ServerType};
use byok_core::ports::{NewServer, ServerChanges, ServerRepository};
use byok_core::{StoreError, UserId};
use chrono::{DateTime, SubsecRound, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use uuid::Uuid;

use super::{now_micros, with_conn};
use crate::backend::Backend;
use crate::database::Database;
use crate::error::db_err;
use crate::options::bounded;
use crate::pool::{DbPool, Held, SqliteHeld};
use crate::sqlite::SqliteConn;
use crate::types::{DbJson, DbUuid};

type ServerRow = (
    DbUuid,
    String,
    String,
    String,
    DbJson,
    Option<String>,
    bool,
    bool,
    Option<DateTime<Utc>>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn from_row(r: ServerRow) -> Result<ExecutionServer, StoreError> {
    Ok(ExecutionServer {
        id: r.0.0,
        user_id: UserId(
            Uuid::parse_str(&r.1)
                .map_err(|_| StoreError::Corrupt("execution_servers.user_id".into()))?,
        ),
        name: r.2,
        server_type: r
            .3
            .parse::<ServerType>()
            .map_err(|_| StoreError::Corrupt("execution_servers.server_type".into()))?,
        connection_config: r.4.0,
        workspace_path: r.5,
        is_default: r.6,
        is_active: r.7,
        last_tested_at: r.8,
        test_status: r.9,
        created_at: r.10,
        updated_at: r.11,
    })
}

/// Runs `$body` inside a transaction on one pooled connection, serialised per `$user`
/// (PostgreSQL: an advisory transaction lock; SQLite: `BEGIN IMMEDIATE`). The body yields a
/// `Result<T, diesel::result::Error>`; an error rolls back.
macro_rules! in_tx {
    ($db:expr, $user:expr, |$conn:ident, $s:ident| $body:block) => {{
        let backend = $db.backend();
        match &$db.pool {
            // Bounded like every PostgreSQL call; a transaction cut short is not pooled again.
            DbPool::Pg(pool) => {
                bounded($db.bounds.query, async {
                    let mut held = Held::get(pool).await?;
                    let $conn: &mut AsyncPgConnection = held.conn()?;
                    use crate::schema::pg as $s;
                    $conn.batch_execute("BEGIN").await.map_err(db_err)?;
                    let locked = diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                        .bind::<diesel::sql_types::Text, _>($user)
                        .execute($conn)
                        .await;
                    let result = match locked {
                        Ok(_) => async { $body }.await,
                        Err(e) => Err(e),
                    };
                    let out = finish($conn, result, backend).await;
                    held.finish();
                    out
                })
                .await
            }
            DbPool::Sqlite(pool) => {
                let mut held = SqliteHeld::get(pool).await?;
                let out = {
                    let guard = held.conn()?;
                    let $conn: &mut SqliteConn = &mut *guard;
                    use crate::schema::sqlite as $s;
                    $conn
                        .batch_execute("BEGIN IMMEDIATE")
                        .await
                        .map_err(db_err)?;
                    let result = async { $body }.await;
                    finish($conn, result, backend).await
                };
                held.finish();
                out
            }
        }
    }};
}

async fn finish<C: SimpleAsyncConnection + Send, T>(
    conn: &mut C,
    result: Result<T, diesel::result::Error>,
    _backend: Backend,
) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            conn.batch_execute("COMMIT").await.map_err(db_err)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.batch_execute("ROLLBACK").await;
            Err(db_err(e))
        }
    }
}

#[async_trait]
impl ServerRepository for Database {
    async fn create_server(&self, s: NewServer) -> Result<ExecutionServer, StoreError> {
        let id = Uuid::new_v4();
        let user = s.user_id.to_string();
        let at = now_micros();
        let config = DbJson(s.connection_config.clone());
        in_tx!(self, &user, |conn, sc| {
            use sc::execution_servers as t;
            if s.is_default {
                diesel::update(
                    t::table
                        .filter(t::user_id.eq(&user))
                        .filter(t::is_default.eq(true)),
                )
                .set(t::is_default.eq(false))
                .execute(conn)
                .await?;
            }
            diesel::insert_into(t::table)
                .values((
                    t::id.eq(DbUuid(id)),
                    t::user_id.eq(&user),
                    t::name.eq(&s.name),
                    t::server_type.eq(s.server_type.as_str()),
                    t::connection_config.eq(&config),
                    t::workspace_path.eq(&s.workspace_path),
                    t::is_default.eq(s.is_default),
                    t::is_active.eq(true),
                    t::created_at.eq(at),
                    t::updated_at.eq(at),
                ))
                .execute(conn)
                .await
                .map(|_| ())
        })?;
        Ok(ExecutionServer {
            id,
            user_id: s.user_id,
            name: s.name,
            server_type: s.server_type,
            connection_config: s.connection_config,
            workspace_path: s.workspace_path,
            is_default: s.is_default,
            is_active: true,
            last_tested_at: None,
            test_status: None,
            created_at: at,
            updated_at: at,
        })
    }

    async fn count_servers(&self, user: UserId) -> Result<u64, StoreError> {
        let user = user.to_string();
        let n: i64 = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            t::table
                .filter(t::user_id.eq(&user))
                .count()
                .get_result(conn)
                .await
                .map_err(db_err)?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_servers(&self, user: UserId) -> Result<Vec<ExecutionServer>, StoreError> {
        let user = user.to_string();
        let rows: Vec<ServerRow> = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            t::table
                .filter(t::user_id.eq(&user))
                .order((t::is_default.desc(), t::created_at.desc()))
                .load(conn)
                .await
                .map_err(db_err)?
        });
        rows.into_iter().map(from_row).collect()
    }

    async fn get_server(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<Option<ExecutionServer>, StoreError> {
        let user = user.to_string();
        let row: Option<ServerRow> = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            t::table
                .filter(t::user_id.eq(&user))
                .filter(t::id.eq(DbUuid(id)))
                .first(conn)
                .await
                .optional()
                .map_err(db_err)?
        });
        row.map(from_row).transpose()
    }

    async fn update_server(
        &self,
        user: UserId,
        id: Uuid,
        changes: ServerChanges,
    ) -> Result<Option<ExecutionServer>, StoreError> {
        let user_s = user.to_string();
        let at = now_micros();
        let found = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            let target = t::table
                .filter(t::user_id.eq(&user_s))
                .filter(t::id.eq(DbUuid(id)));
            let mut n = diesel::update(target)
                .set(t::updated_at.eq(at))
                .execute(conn)
                .await
                .map_err(db_err)?;
            if n == 1 {
                if let Some(name) = &changes.name {
                    n = diesel::update(target)
                        .set(t::name.eq(name))
                        .execute(conn)
                        .await
                        .map_err(db_err)?;
                }
                if let Some(c) = &changes.connection_config {
                    diesel::update(target)
                        .set(t::connection_config.eq(DbJson(c.clone())))
                        .execute(conn)
                        .await
                        .map_err(db_err)?;
                }
                if let Some(w) = &changes.workspace_path {
                    diesel::update(target)
                        .set(t::workspace_path.eq(w))
                        .execute(conn)
                        .await
                        .map_err(db_err)?;
                }
                if let Some(a) = changes.is_active {
                    diesel::update(target)
                        .set(t::is_active.eq(a))
                        .execute(conn)
                        .await
                        .map_err(db_err)?;
                }
            }
            n == 1
        });
        if !found {
            return Ok(None);
        }
        self.get_server(user, id).await
    }

    async fn set_default(&self, user: UserId, id: Uuid, default: bool) -> Result<bool, StoreError> {
        let user = user.to_string();
        let at = now_micros();
        in_tx!(self, &user, |conn, sc| {
            use sc::execution_servers as t;
            let exists = t::table
                .filter(t::user_id.eq(&user))
                .filter(t::id.eq(DbUuid(id)))
                .count()
                .get_result::<i64>(conn)
                .await?;
            if exists == 0 {
                return Ok(false);
            }
            if default {
                diesel::update(
                    t::table
                        .filter(t::user_id.eq(&user))
                        .filter(t::is_default.eq(true))
                        .filter(t::id.ne(DbUuid(id))),
                )
                .set((t::is_default.eq(false), t::updated_at.eq(at)))
                .execute(conn)
                .await?;
            }
            diesel::update(
                t::table
                    .filter(t::user_id.eq(&user))
                    .filter(t::id.eq(DbUuid(id))),
            )
            .set((t::is_default.eq(default), t::updated_at.eq(at)))
            .execute(conn)
            .await?;
            Ok(true)
        })
    }

    async fn delete_server(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        let user = user.to_string();
        let n = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            diesel::delete(
                t::table
                    .filter(t::user_id.eq(&user))
                    .filter(t::id.eq(DbUuid(id))),
            )
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn server_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ExecutionServer>, StoreError> {
        let after = after.unwrap_or(Uuid::nil());
        let rows: Vec<ServerRow> = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            t::table
                .filter(t::id.gt(DbUuid(after)))
                .order(t::id.asc())
                .limit(i64::from(limit))
                .load(conn)
                .await
                .map_err(db_err)?
        });
        rows.into_iter().map(from_row).collect()
    }

    async fn replace_sealed_config(
        &self,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
        config: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let seen = seen_updated_at.trunc_subsecs(6);
        let n = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            diesel::update(
                t::table
                    .filter(t::id.eq(DbUuid(id)))
                    .filter(t::updated_at.eq(seen)),
            )
            .set(t::connection_config.eq(DbJson(config.clone())))
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n == 1)
    }

    async fn record_server_test(
        &self,
        user: UserId,
        id: Uuid,
        at: DateTime<Utc>,
        status: &str,
    ) -> Result<bool, StoreError> {
        let user = user.to_string();
        let at = at.trunc_subsecs(6);
        let n = with_conn!(self, |conn, sc| {
            use sc::execution_servers as t;
            diesel::update(
                t::table
                    .filter(t::user_id.eq(&user))
                    .filter(t::id.eq(DbUuid(id))),
            )
            .set((
                t::last_tested_at.eq(Some(at)),
                t::test_status.eq(Some(status)),
            ))
            .execute(conn)
            .await
            .map_err(db_err)?
        });
        Ok(n == 1)
    }
}
