//! SQLite specifics: the connection type, its per-connection settings, the blocking-call
//! runner and the private database file.

use diesel::sqlite::SqliteConnection;
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;

/// Per-connection SQLite settings. `busy_timeout` first, so switching to WAL waits for locks.
/// `secure_delete` zeroes deleted rows (a deleted key's ciphertext does not linger in free pages).
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;";

pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection, Detached>;

/// Runs SQLite's blocking calls on tokio's blocking pool, like diesel-async's default, except
/// that a caller that goes away (a client disconnecting, an extractor of the same request
/// failing) detaches from the call instead of waiting for it with `block_in_place`, which
/// panics on a current-thread runtime — every actix worker is one. The call finishes in the
/// background; its connection never goes back to the pool
/// ([`SqliteHeld`](crate::pool::SqliteHeld)).
pub(crate) struct Detached(Option<tokio::runtime::Handle>);

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

#[cfg(unix)]
pub(crate) fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
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
pub(crate) fn create_private_file(_: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}
