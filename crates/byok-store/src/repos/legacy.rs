//! Reading the legacy service's `user_provider_keys` table (for `import-legacy`).

use byok_core::services::LegacyKey;
use byok_core::{KeyMetadata, StoreError};
use diesel_async::RunQueryDsl;

use super::with_conn;
use crate::database::Database;
use crate::error::db_err;

#[derive(diesel::QueryableByName)]
struct LegacyRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    provider: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    api_key_encrypted: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    enabled: bool,
    #[diesel(sql_type = diesel::sql_types::Text)]
    metadata: String,
}

/// Portable across PostgreSQL (where `metadata` is `jsonb`) and SQLite (text).
const LEGACY_SQL: &str = "SELECT CAST(user_id AS TEXT) AS user_id, CAST(provider AS TEXT) AS provider, \
     api_key_encrypted, enabled, CAST(COALESCE(metadata, '{}') AS TEXT) AS metadata \
     FROM user_provider_keys ORDER BY user_id, provider";

impl Database {
    /// Every row of a legacy `user_provider_keys` table in this database (the legacy layout:
    /// `user_id`, `provider`, `api_key_encrypted`, `enabled`, `metadata`). Metadata is read
    /// leniently (naive timestamps, unknown fields).
    pub async fn legacy_keys(&self) -> Result<Vec<LegacyKey>, StoreError> {
        // The whole table in one read: bounded like the other long reads.
        let rows: Vec<LegacyRow> = with_conn!(self, self.bounds.slow, |conn, _s| {
            diesel::sql_query(LEGACY_SQL)
                .load(conn)
                .await
                .map_err(db_err)?
        });
        Ok(rows
            .into_iter()
            .map(|r| LegacyKey {
                user_ref: r.user_id,
                provider: r.provider,
                ciphertext: r.api_key_encrypted,
                enabled: r.enabled,
                metadata: serde_json::from_str(&r.metadata)
                    .map(|v| KeyMetadata::from_json_lenient(&v))
                    .unwrap_or_default(),
            })
            .collect())
    }
}
