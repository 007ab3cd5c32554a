//! The gateway-token repository port (tokens stored only as SHA-256 hashes).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{GatewayToken, NewGatewayToken, User, UserId};
use crate::error::StoreError;

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
