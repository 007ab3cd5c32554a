//! The store's errors: diesel's, the pool's and a bound's, mapped onto core's `StoreError`.

use std::time::Duration;

use byok_core::StoreError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

pub(crate) fn db_err(e: DieselError) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
            StoreError::Conflict(info.constraint_name().unwrap_or("unique").to_string())
        }
        // The connection broke (the server went away mid-query): transient, like a refused
        // connection.
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => StoreError::Unavailable(Box::new(e)),
        // The server is shutting down, starting up or in recovery (SQLSTATE class 57P).
        DieselError::DatabaseError(_, ref info)
            if info.message().starts_with("terminating connection due to")
                || info.message().starts_with("the database system is") =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        // SQLite lock contention that outlasted busy_timeout: a transient condition (503).
        DieselError::DatabaseError(_, ref info)
            if info.message().contains("database is locked")
                || info.message().contains("database table is locked") =>
        {
            StoreError::Unavailable(Box::new(e))
        }
        other => StoreError::Other(Box::new(other)),
    }
}

pub(crate) fn pool_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

pub(crate) fn build_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("could not build the connection pool: {e}").into())
}

pub(crate) fn timed_out(bound: Duration) -> StoreError {
    StoreError::Unavailable(
        format!(
            "the database did not answer within {} ms",
            bound.as_millis()
        )
        .into(),
    )
}
