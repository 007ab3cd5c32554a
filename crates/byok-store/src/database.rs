//! [`Database`]: the pooled database every repository port is implemented on.

use std::sync::Arc;

use byok_core::StoreError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use crate::backend::{Backend, parse_url};
use crate::error::{db_err, pool_err};
use crate::options::{Bounds, DbOptions, bounded};
use crate::pg_tls::PgConnector;
use crate::pool::{DbPool, SqliteHeld, build_pool};
use crate::sqlite::{SQLITE_PRAGMAS, SqliteConn, create_private_file};

/// A pooled database; implements every repository port of `byok-core`.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: DbPool,
    /// Where to open a connection outside the pool (migrations).
    pub(crate) target: Target,
    backend: Backend,
    pub(crate) bounds: Bounds,
}

/// A parsed `DATABASE_URL` (may hold a password: never logged, never in `Debug`).
#[derive(Clone)]
pub(crate) enum Target {
    Pg(Arc<PgConnector>),
    Sqlite(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The connection pool's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: usize,
    /// Of those, idle.
    pub available: usize,
    /// Upper bound (`BYOK_DB_MAX_CONNECTIONS`).
    pub max_size: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl Database {
    /// Opens a pool for `url` (`postgres://…` or `sqlite://path`). Nothing is queried yet.
    /// A new SQLite file is created with mode 0600 (its directory too, if missing).
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Self, StoreError> {
        let (backend, target) = parse_url(url)?;
        let (pool, target) = match backend {
            Backend::Postgres => {
                // Parsed once here, so a bad sslmode or sslrootcert fails at start.
                let connector = Arc::new(PgConnector::parse(&target)?);
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                let setup = Arc::clone(&connector);
                config.custom_setup = Box::new(move |_| {
                    let setup = Arc::clone(&setup);
                    Box::pin(async move { setup.connect().await })
                });
                // The URL is in `connector`; the manager never sees it.
                let manager =
                    AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config("", config);
                (
                    DbPool::Pg(build_pool(manager, opts)?),
                    Target::Pg(connector),
                )
            }
            Backend::Sqlite => {
                let path = std::path::Path::new(&target);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(pool_err)?;
                }
                create_private_file(path).map_err(pool_err)?;
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.custom_setup = Box::new(|url| {
                    let url = url.to_owned();
                    Box::pin(async move {
                        let mut conn = SqliteConn::establish(&url).await?;
                        conn.batch_execute(SQLITE_PRAGMAS)
                            .await
                            .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                        Ok(conn)
                    })
                });
                let manager =
                    AsyncDieselConnectionManager::<SqliteConn>::new_with_config(&target, config);
                (
                    DbPool::Sqlite(build_pool(manager, opts)?),
                    Target::Sqlite(target),
                )
            }
        };
        Ok(Self {
            pool,
            target,
            backend,
            bounds: Bounds::of(opts),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One trivial query: is the database reachable? (`/readyz`)
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.pool {
            DbPool::Pg(p) => {
                bounded(self.bounds.query, async {
                    let mut c = p.get().await.map_err(pool_err)?;
                    c.batch_execute("SELECT 1").await.map_err(db_err)
                })
                .await
            }
            DbPool::Sqlite(p) => {
                let mut held = SqliteHeld::get(p).await?;
                let r = held.conn()?.batch_execute("SELECT 1").await.map_err(db_err);
                held.finish();
                r
            }
        }
    }

    pub fn pool_status(&self) -> PoolStatus {
        let s = match &self.pool {
            DbPool::Pg(p) => p.status(),
            DbPool::Sqlite(p) => p.status(),
        };
        PoolStatus {
            size: s.size,
            available: s.available,
            max_size: s.max_size,
            waiting: s.waiting,
        }
    }
}
