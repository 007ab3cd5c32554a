//! The connection pools ([`DbPool`]) and a pooled connection that goes back only when its
//! operation finished ([`Held`]).

use byok_core::StoreError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;

use crate::error::{build_err, pool_err};
use crate::options::{DbOptions, RECYCLE_TIMEOUT};
use crate::sqlite::SqliteConn;

#[derive(Clone)]
pub(crate) enum DbPool {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

type PooledObject<C> = deadpool::managed::Object<AsyncDieselConnectionManager<C>>;

/// A pooled SQLite connection that goes back to the pool only when the operation that used it
/// finished ([`SqliteHeld::finish`]). Dropped before (its caller went away mid-call, or an
/// error returned early), it is taken out of the pool: a call detached by
/// [`Detached`](crate::sqlite::Detached) may still be running on it, and the pool's recycle
/// check would panic on it, or the next user's call would wait for it on an async worker
/// thread.
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

pub(crate) fn build_pool<C>(
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
