#![doc = include_str!("../README.md")]

mod legacy;
mod notify;
mod pg_tls;
mod rate;
mod repos;
mod schema;
mod servers;
mod types;

use std::sync::Arc;
use std::time::Duration;

use byok_core::StoreError;
use diesel::Connection;
use diesel::sqlite::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use pg_tls::PgConnector;

pub use notify::listen_invalidations;
pub use rate::RedisRateLimiter;
pub use types::{DbJson, DbUuid};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// Per-connection SQLite settings. `busy_timeout` first, so switching to WAL waits for locks.
/// `secure_delete` zeroes deleted rows (a deleted key's ciphertext does not linger in free pages).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;";

/// Key for `pg_advisory_lock` around migrations ("byok" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x62796f6b;

pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection, Detached>;

/// Runs SQLite's blocking calls on tokio's blocking pool, like diesel-async's default, except
/// that a caller that goes away (a client disconnecting, an extractor of the same request
/// failing) detaches from the call instead of waiting for it with `block_in_place`, which
/// panics on a current-thread runtime — every actix worker is one. The call finishes in the
/// background; its connection never goes back to the pool ([`SqliteHeld`]).
pub(crate) struct Detached(Option<tokio::runtime::Handle>);

type PooledObject<C> = deadpool::managed::Object<AsyncDieselConnectionManager<C>>;

/// A pooled SQLite connection that goes back to the pool only when the operation that used it
/// finished ([`SqliteHeld::finish`]). Dropped before (its caller went away mid-call, or an
/// error returned early), it is taken out of the pool: a call detached by [`Detached`] may
/// still be running on it, and the pool's recycle check would panic on it, or the next
/// user's call would wait for it on an async worker thread.
///
/// PostgreSQL transactions use it too: a transaction left open by a caller that went away
/// (holding its advisory lock) must not go back to the pool; a connection taken out of it is
/// closed, and the server rolls the transaction back.
pub(crate) struct Held<C>
where
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    obj: Option<PooledObject<C>>,
    finished: bool,
}

pub(crate) type SqliteHeld = Held<SqliteConn>;

impl<C> Held<C>
where
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    pub(crate) async fn get(pool: &Pool<C>) -> Result<Self, StoreError> {
        Ok(Self {
            obj: Some(pool.get().await.map_err(pool_err)?),
            finished: false,
        })
    }

    pub(crate) fn conn(&mut self) -> Result<&mut C, StoreError> {
        match self.obj.as_mut() {
            Some(o) => Ok(o),
            None => Err(StoreError::Unavailable(
                "the SQLite connection was released".into(),
            )),
        }
    }

    /// Every call on the connection completed: it may go back to the pool.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl<C> Drop for Held<C>
where
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    fn drop(&mut self) {
        if !self.finished
            && let Some(obj) = self.obj.take()
        {
            drop(PooledObject::<C>::take(obj));
        }
    }
}

impl diesel_async::sync_connection_wrapper::SpawnBlocking for Detached {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> futures_util::future::BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync>>>
    where
        R: Send + 'static,
    {
        use futures_util::FutureExt;
        match &self.0 {
            Some(handle) => handle
                .spawn_blocking(task)
                .map(|r| r.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
                .boxed(),
            None => {
                futures_util::future::ready(Err("SQLite is used outside a tokio runtime".into()))
                    .boxed()
            }
        }
    }

    fn get_runtime() -> Self {
        Self(tokio::runtime::Handle::try_current().ok())
    }
}

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Connection pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Largest number of pooled connections.
    pub max_connections: usize,
    /// How long a request waits for a free connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
    /// PostgreSQL: the longest one repository operation (waiting for a connection, checking
    /// it, the query) may take before it fails with `Unavailable`. This bounds the token,
    /// credential and settings reads that stale-if-error covers, `last_used_at` writes, and
    /// management reads and writes: a database that hangs (a failover, a partition dropping
    /// packets) answers like one that refuses, after this long.
    pub query_timeout: Duration,
    /// PostgreSQL: the same bound for one usage batch insert.
    pub usage_write_timeout: Duration,
    /// PostgreSQL: the same bound for the few reads that may legitimately take long (usage
    /// summaries, adoption metrics, a key rotation's pages).
    pub slow_query_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(2),
            usage_write_timeout: Duration::from_secs(10),
            slow_query_timeout: Duration::from_secs(60),
        }
    }
}

/// The bounds of [`DbOptions`], kept by [`Database`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) query: Duration,
    pub(crate) usage_write: Duration,
    pub(crate) slow: Duration,
}

/// How long a pooled connection's check (`SELECT 1`, run by every `get`) may take before the
/// connection is dropped and another one is tried.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `op` (a PostgreSQL operation, pool wait included) for at most `bound`; past it, the
/// operation is dropped (its connection is then checked again, or discarded, before reuse) and
/// the answer is `Unavailable`, as for a database that refuses connections. No allocation:
/// one timer entry.
#[inline]
pub(crate) async fn bounded<T>(
    bound: Duration,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(bound, op).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(bound)),
    }
}

fn timed_out(bound: Duration) -> StoreError {
    StoreError::Unavailable(
        format!(
            "the database did not answer within {} ms",
            bound.as_millis()
        )
        .into(),
    )
}

#[derive(Clone)]
pub(crate) enum DbPool {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// A pooled database; implements every repository port of `byok-core`.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: DbPool,
    /// Where to open a connection outside the pool (migrations).
    target: Target,
    backend: Backend,
    pub(crate) bounds: Bounds,
}

/// A parsed `DATABASE_URL` (may hold a password: never logged, never in `Debug`).
#[derive(Clone)]
enum Target {
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

/// Splits a `DATABASE_URL` into its backend and the driver's connection string.
pub fn parse_url(url: &str) -> Result<(Backend, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_string()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(StoreError::Unavailable(
                "DATABASE_URL sqlite:// needs a file path, e.g. sqlite://./data/byok.db".into(),
            ));
        }
        return Ok((Backend::Sqlite, path.to_string()));
    }
    Err(StoreError::Unavailable(
        "DATABASE_URL must start with postgres://, postgresql:// or sqlite://".into(),
    ))
}

pub(crate) fn pool_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn build_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("could not build the connection pool: {e}").into())
}

#[cfg(unix)]
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private_file(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    opts: &DbOptions,
) -> Result<Pool<C>, StoreError>
where
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    Pool::builder(manager)
        .max_size(opts.max_connections)
        .wait_timeout(Some(opts.acquire_timeout))
        .create_timeout(Some(opts.acquire_timeout))
        .recycle_timeout(Some(RECYCLE_TIMEOUT.min(opts.acquire_timeout)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(build_err)
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
            bounds: Bounds {
                query: opts.query_timeout,
                usage_write: opts.usage_write_timeout,
                slow: opts.slow_query_timeout,
            },
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

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

    /// One trivial query: is the database reachable? (`/readyz`)
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.pool {
            DbPool::Pg(p) => {
                bounded(self.bounds.query, async {
                    let mut c = p.get().await.map_err(pool_err)?;
                    c.batch_execute("SELECT 1").await.map_err(repos::db_err)
                })
                .await
            }
            DbPool::Sqlite(p) => {
                let mut held = SqliteHeld::get(p).await?;
                let r = held
                    .conn()?
                    .batch_execute("SELECT 1")
                    .await
                    .map_err(repos::db_err);
                held.finish();
                r
            }
        }
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
    diesel::connection::SimpleConnection::batch_execute(conn, &sql).map_err(repos::db_err)
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

/// How many users bring their own keys, for metrics (aggregates only: no user ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdoptionStats {
    /// Users whose tier allows BYOK (`starter` and above).
    pub eligible_users: u64,
    /// Users with at least one enabled key.
    pub users_with_keys: u64,
    /// Enabled keys per provider id, ordered by provider.
    pub keys_by_provider: Vec<(String, u64)>,
}

impl Database {
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

    /// Counts for the BYOK adoption metrics (three aggregate queries).
    pub async fn adoption_stats(&self) -> Result<AdoptionStats, StoreError> {
        use diesel::dsl::{count, count_star};
        use diesel::{AggregateExpressionMethods, ExpressionMethods, QueryDsl};
        use diesel_async::RunQueryDsl;
        // The tier rule is core's: every tier that allows BYOK.
        let eligible: Vec<&str> = byok_core::Tier::ALL
            .into_iter()
            .filter(|t| t.allows(byok_core::Tier::BYOK_MINIMUM))
            .map(byok_core::Tier::as_str)
            .collect();
        macro_rules! stats {
            ($s:ident, $conn:expr) => {{
                use crate::schema::$s::{user_provider_keys as k, users as u};
                let conn = $conn;
                let eligible: i64 = u::table
                    .filter(u::tier.eq_any(&eligible))
                    .select(count_star())
                    .get_result(conn)
                    .await
                    .map_err(repos::db_err)?;
                let with_keys: i64 = k::table
                    .filter(k::enabled.eq(true))
                    .select(count(k::user_id).aggregate_distinct())
                    .get_result(conn)
                    .await
                    .map_err(repos::db_err)?;
                let per: Vec<(String, i64)> = k::table
                    .filter(k::enabled.eq(true))
                    .group_by(k::provider)
                    .select((k::provider, count_star()))
                    .order(k::provider)
                    .load(conn)
                    .await
                    .map_err(repos::db_err)?;
                (eligible, with_keys, per)
            }};
        }
        let (eligible, with_keys, per) = match &self.pool {
            DbPool::Pg(p) => {
                bounded(self.bounds.slow, async {
                    let mut c = p.get().await.map_err(pool_err)?;
                    Ok::<_, StoreError>(stats!(pg, &mut c))
                })
                .await?
            }
            DbPool::Sqlite(p) => {
                let mut held = SqliteHeld::get(p).await?;
                let r = stats!(sqlite, held.conn()?);
                held.finish();
                r
            }
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(AdoptionStats {
            eligible_users: n(eligible),
            users_with_keys: n(with_keys),
            keys_by_provider: per.into_iter().map(|(p, c)| (p, n(c))).collect(),
        })
    }
}
