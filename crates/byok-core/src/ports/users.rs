//! The user repository port: local users and the users of an identity provider.

use async_trait::async_trait;

use crate::domain::{Role, Tier, User, UserId};
use crate::error::StoreError;

/// Local users.
#[async_trait]
pub trait UserRepository: Send + Sync + 'static {
    /// MUST return [`StoreError::Conflict`] if a user with this (normalised) email exists.
    async fn create(&self, email: &str, tier: Tier) -> Result<User, StoreError>;
    /// The user with this id, if any.
    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The user with this (normalised) email, if any.
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError>;
    /// Returns `false` when no such user exists.
    async fn set_tier(&self, id: UserId, tier: Tier) -> Result<bool, StoreError>;
    /// Returns `false` when no such user exists.
    async fn set_role(&self, id: UserId, role: Role) -> Result<bool, StoreError>;
    /// Disables the account (`Some(at)`) or enables it again (`None`); `false` when no such
    /// user exists.
    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<bool, StoreError>;
    /// Users in email order, `limit` of them from `offset`.
    async fn list_users(&self, offset: u64, limit: u64) -> Result<Vec<User>, StoreError>;
    /// How many users exist.
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
    /// - `id` was stored before origins were recorded ([`UserOrigin::Unknown`](crate::domain::UserOrigin::Unknown)): claimed for
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
