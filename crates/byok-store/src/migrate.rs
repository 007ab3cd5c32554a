//! Embedded migrations, applied by [`Database::migrate`].

use byok_core::StoreError;
use diesel::Connection;
use diesel::sqlite::SqliteConnection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::database::{Database, Target};
use crate::error::{db_err, pool_err};
use crate::sqlite::SQLITE_PRAGMAS;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// Key for `pg_advisory_lock` around migrations ("byok" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x62796f6b;

impl Database {
    /// Applies pending embedded migrations; returns how many ran. On PostgreSQL this holds an
    /// advisory lock, so several replicas starting at once apply each migration exactly once.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let boxed = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Other(e);
        let migrated = match &self.target {
            Target::Pg(connector) => {
                // Connected here (with the URL's TLS settings), migrated on a blocking thread.
                let conn = connector.connect().await.map_err(pool_err)?;
                tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
                    let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
                    lock_pg(&mut conn, true)?;
                    let applied = conn
                        .run_pending_migrations(PG_MIGRATIONS)
                        .map(|v| v.len())
                        .map_err(boxed);
                    lock_pg(&mut conn, false)?;
                    applied
                })
                .await
            }
            Target::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
                    let mut conn = SqliteConnection::establish(&path).map_err(pool_err)?;
                    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
                        .map_err(pool_err)?;
                    let applied = conn
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(boxed)?;
                    Ok(applied.len())
                })
                .await
            }
        };
        migrated.map_err(|e| StoreError::Other(Box::new(e)))?
    }
}

fn lock_pg(
    conn: &mut AsyncConnectionWrapper<AsyncPgConnection>,
    lock: bool,
) -> Result<(), StoreError> {
    let sql = if lock {
        format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
    } else {
        format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    };
    diesel::connection::SimpleConnection::batch_execute(conn, &sql).map_err(db_err)
}
