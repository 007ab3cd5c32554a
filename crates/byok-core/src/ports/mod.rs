//! Ports: the traits adapters implement. Each documents the contract an adapter MUST keep.

mod crypto;
mod execution;
mod orchestration;

pub use crypto::SecretCipher;
pub use execution::ExecutionBackend;
pub use orchestration::{
    Orchestrator, OrchestratorError, OrchestratorEvent, OrchestratorReply, OrchestratorStream,
    OrchestratorTask, ReplyBlock,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use uuid::Uuid;

use crate::domain::*;
use crate::error::{CoreError, StoreError};

/// Local users.
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// MUST return [`StoreError::Conflict`] if a user with this (normalised) email exists.
    async fn create(&self, email: &str, tier: Tier) -> Result<User, StoreError>;
    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError>;
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Returns `false` when no such user exists.
    async fn set_tier(&self, id: UserId, tier: Tier) -> Result<bool, StoreError>;
    async fn count(&self) -> Result<u64, StoreError>;
    /// Makes sure the user `id` authenticated by `issuer` exists, with `tier` as its snapshot,
    /// and returns it.
    ///
    /// - First sight: creates it, recording `issuer` as its origin, with `email` when
    ///   `email_verified` and no other user holds that email, else with the placeholder
    ///   `{id}@external.invalid` (identities are never linked by email, and an unverified
    ///   email is never stored where it could be looked up). Concurrent first sights MUST
    ///   leave one row and all succeed when they name the same issuer.
    /// - `id` is a local user or a user of another issuer: MUST return
    ///   [`StoreError::Conflict`], changing nothing.
    /// - `id` is a user of `issuer`: its tier snapshot becomes `tier`.
    /// - `id` was stored before origins were recorded ([`UserOrigin::Unknown`]): claimed for
    ///   `issuer` (its origin becomes `issuer`) only when its email is the placeholder, or is
    ///   `email` (case-insensitive) and `email_verified`; else `Conflict`. Concurrent claims
    ///   by the same issuer MUST all succeed.
    async fn ensure_external(
        &self,
        id: UserId,
        issuer: &str,
        email: &str,
        email_verified: bool,
        tier: Tier,
    ) -> Result<User, StoreError>;
    /// Moves every user whose origin is the issuer `from` to the issuer `to` (the identity
    /// provider's issuer URL changed, its subjects did not) and returns how many moved.
    /// Local users and users stored before origins were recorded are never touched, nor are
    /// users of any other issuer. Neither issuer may be empty or `local` (the marker of local
    /// users): MUST return [`StoreError::Conflict`] then, changing nothing.
    async fn rehome_issuer(&self, from: &str, to: &str) -> Result<u64, StoreError>;
}

/// Gateway tokens, stored only as SHA-256 hashes.
#[async_trait]
pub trait TokenRepository: Send + Sync + 'static {
    /// MUST return [`StoreError::Conflict`] if the hash already exists.
    async fn create(&self, token: NewGatewayToken) -> Result<GatewayToken, StoreError>;
    /// The token with this hash and its owner, if the token exists (active or not).
    async fn find_by_hash(&self, hash: &str) -> Result<Option<(GatewayToken, User)>, StoreError>;
    /// The user's tokens, newest first.
    async fn list(&self, user: UserId) -> Result<Vec<GatewayToken>, StoreError>;
    /// Marks the token revoked. `false` if it does not exist for this user or is already revoked.
    async fn revoke(&self, user: UserId, id: Uuid) -> Result<bool, StoreError>;
    /// Records a use (best effort; callers throttle it).
    async fn touch(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError>;
}

/// One page of stored ciphertexts, for key rotation.
#[derive(Debug, Clone)]
pub struct CiphertextRow {
    pub id: Uuid,
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

/// Turns a presented bearer credential into a principal. Implemented by
/// [`crate::services::TokenAuthenticator`] for gateway tokens; a JWT verifier plugs in beside it.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// MUST return [`CoreError::Unauthenticated`] for any credential it does not accept,
    /// without saying why (unknown, revoked and expired look the same to the caller).
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError>;
}

/// What an identity provider vouches for about a bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's subject, as a user id (see [`crate::services::external_user_id`]).
    pub user_id: UserId,
    /// The provider's subject, as sent.
    pub subject: String,
    /// The issuer that signed the token (the user's origin).
    pub issuer: String,
    /// The `email` claim, empty when absent.
    pub email: String,
    /// Whether the provider vouches for `email` (the `email_verified` claim is `true`); false
    /// when the claim is absent or anything else. An unverified email never links identities.
    pub email_verified: bool,
    /// The tier the token states (a claim or a role mapping), if any.
    pub tier: Option<Tier>,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Verifies bearer tokens issued by an identity provider (OIDC JWTs).
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    /// MUST return [`CoreError::Unauthenticated`] for any token it does not accept (bad
    /// signature, algorithm, issuer, audience, expiry), without saying why to the caller.
    /// Transient failures of the provider (its keys cannot be fetched) are
    /// [`CoreError::Unavailable`].
    async fn verify(&self, token: &str) -> Result<ExternalIdentity, CoreError>;
}

/// Reads a user's tier where the identity provider keeps it (e.g. a Keycloak attribute).
#[async_trait]
pub trait TierSource: Send + Sync + 'static {
    /// `None` when the provider has no tier for this subject.
    async fn tier(&self, subject: &str) -> Result<Option<Tier>, CoreError>;
    /// The account as the provider holds it now: enabled, and its tier. `Ok(None)` when the
    /// provider has no such account (deleted). Errors when the provider cannot be asked.
    /// The default knows only tiers and reports every account enabled.
    async fn account(&self, subject: &str) -> Result<Option<ExternalAccount>, CoreError> {
        Ok(Some(ExternalAccount {
            enabled: true,
            tier: self.tier(subject).await?,
        }))
    }
}

/// An account at the identity provider, as [`TierSource::account`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalAccount {
    pub enabled: bool,
    /// `None` when the provider keeps no tier for it.
    pub tier: Option<Tier>,
}

/// Per-user gateway settings.
#[async_trait]
pub trait SettingsRepository: Send + Sync + 'static {
    /// `None` when the user never saved settings (defaults apply).
    async fn get_settings(&self, user: UserId) -> Result<Option<UserSettings>, StoreError>;
    /// Inserts or replaces the user's settings.
    async fn put_settings(&self, user: UserId, settings: &UserSettings) -> Result<(), StoreError>;
}

/// Usage records, written in batches off the hot path.
#[async_trait]
pub trait UsageRepository: Send + Sync + 'static {
    /// Inserts all records (one statement or one transaction). A record whose `id` is already
    /// stored is skipped, so a batch whose outcome is unknown may be written again.
    async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError>;
    /// The user's totals, and per provider ordered by provider id.
    async fn usage_summary(&self, user: UserId) -> Result<UsageSummary, StoreError>;
}

/// Where the gateway hands usage records. MUST NOT block or fail the request: an
/// implementation drops (and counts) records it cannot take.
pub trait UsageSink: Send + Sync + 'static {
    fn record(&self, record: UsageRecord);
    /// Records dropped so far (for metrics).
    fn dropped(&self) -> u64 {
        0
    }
}

/// A new execution server (config already sealed).
#[derive(Debug, Clone)]
pub struct NewServer {
    pub user_id: UserId,
    pub name: String,
    pub server_type: crate::execution::ServerType,
    pub connection_config: serde_json::Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
}

/// Changes to an execution server; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ServerChanges {
    pub name: Option<String>,
    pub connection_config: Option<serde_json::Value>,
    pub workspace_path: Option<Option<String>>,
    pub is_active: Option<bool>,
}

/// Users' execution servers (`execution_servers`).
#[async_trait]
pub trait ServerRepository: Send + Sync + 'static {
    /// Inserts the server; when `is_default`, clears the user's other default in the same
    /// transaction. MUST return [`StoreError::Conflict`] when the user has a server of that name.
    async fn create_server(
        &self,
        server: NewServer,
    ) -> Result<crate::execution::ExecutionServer, StoreError>;
    /// The user's servers, the default first, then newest first.
    async fn list_servers(
        &self,
        user: UserId,
    ) -> Result<Vec<crate::execution::ExecutionServer>, StoreError>;
    async fn get_server(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<Option<crate::execution::ExecutionServer>, StoreError>;
    /// Applies `changes`; `None` when the server does not exist for this user. MUST return
    /// [`StoreError::Conflict`] on a duplicate name.
    async fn update_server(
        &self,
        user: UserId,
        id: Uuid,
        changes: ServerChanges,
    ) -> Result<Option<crate::execution::ExecutionServer>, StoreError>;
    /// Makes the server the user's only default (or clears its flag), in one transaction;
    /// the database guarantees at most one default per user. `false` if it does not exist.
    async fn set_default(&self, user: UserId, id: Uuid, default: bool) -> Result<bool, StoreError>;
    async fn delete_server(&self, user: UserId, id: Uuid) -> Result<bool, StoreError>;
    /// Up to `limit` servers of every user with `id > after`, ordered by id (keyset
    /// pagination, for key rotation).
    async fn server_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<crate::execution::ExecutionServer>, StoreError>;
    /// Replaces the stored connection config only if the server was not updated since
    /// `seen_updated_at` (compare-and-swap; `updated_at` is left as it was). `false` if it
    /// changed or vanished.
    async fn replace_sealed_config(
        &self,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
        config: &serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// Stores a connection-test result. `false` if the server does not exist for this user.
    async fn record_server_test(
        &self,
        user: UserId,
        id: Uuid,
        at: DateTime<Utc>,
        status: &str,
    ) -> Result<bool, StoreError>;
}
