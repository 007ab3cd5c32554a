//! Which database a `DATABASE_URL` selects.

use byok_core::StoreError;

/// Which database a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
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
