//! The provider-key ports: the key repository (per request), its rotation side, and the
//! key prober.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApiKey, NewStoredKey, ProviderId, StoredKey, TestStatus, UserId};
use crate::error::{CoreError, StoreError};

/// One page of stored ciphertexts, for key rotation.
#[derive(Debug, Clone)]
pub struct CiphertextRow {
    /// The row id.
    pub id: Uuid,
    /// The stored Fernet token.
    pub ciphertext: String,
}

/// Users' provider keys (`user_provider_keys`). The repository never sees a plaintext key.
#[async_trait]
pub trait KeyRepository: Send + Sync + 'static {
    /// Inserts the key, or atomically replaces the user's existing key for the provider
    /// (new ciphertext, preview and metadata, `enabled = true`). Concurrent calls for the same
    /// (user, provider) MUST leave exactly one row, holding one of the written values whole.
    async fn upsert(&self, key: NewStoredKey) -> Result<(), StoreError>;
    /// The user's keys, ordered by provider id.
    async fn list(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError>;
    /// The user's key for `provider`, if stored.
    async fn get(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> Result<Option<StoredKey>, StoreError>;
    /// Deletes the row. `false` if there was none.
    async fn delete(&self, user: UserId, provider: ProviderId) -> Result<bool, StoreError>;
    /// Stores a test result, only if the key is still the one tested (`ciphertext` matches),
    /// without touching other metadata fields. `false` if the key changed or vanished.
    async fn record_test(
        &self,
        user: UserId,
        provider: ProviderId,
        ciphertext: &str,
        at: DateTime<Utc>,
        status: TestStatus,
    ) -> Result<bool, StoreError>;
}

/// The rotation side of the key store: every stored ciphertext, page by page, and a
/// compare-and-swap per row (`rotate_all`, the start-up key check). Only the key-rotation and
/// maintenance paths need it; resolving or managing a user's keys needs [`KeyRepository`] only.
#[async_trait]
pub trait KeyRotationRepository: KeyRepository {
    /// Up to `limit` rows with `id > after`, ordered by id (keyset pagination over all users).
    async fn ciphertext_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CiphertextRow>, StoreError>;
    /// Compare-and-swap of one ciphertext: `false` if the row no longer holds `old`.
    async fn replace_ciphertext(&self, id: Uuid, old: &str, new: &str) -> Result<bool, StoreError>;
}

/// What a key probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    pub status: TestStatus,
    /// Safe to show the user: never contains the key or raw upstream bodies.
    pub message: String,
    /// Extra safe facts (HTTP status, latency, endpoint host).
    pub details: serde_json::Value,
}

/// Checks a key against its provider (implemented by `byok-providers` over HTTP).
#[async_trait]
pub trait KeyProber: Send + Sync + 'static {
    /// Probes the provider with the key. `endpoint` is the user-supplied base URL, if any;
    /// the adapter MUST pass it through the outbound target policy before connecting and
    /// return [`CoreError::TargetForbidden`] when the policy refuses it.
    /// Outcomes: 2xx → valid, 401/403 → invalid, anything else → error.
    async fn probe(
        &self,
        provider: ProviderId,
        key: &ApiKey,
        endpoint: Option<&str>,
    ) -> Result<ProbeOutcome, CoreError>;
}
