//! The console-session port: server-side browser sessions and single-use sign-in links.
//!
//! Only SHA-256 hashes (lower-case hex, [`crate::services::hash_token`]) of session ids and
//! link secrets reach a repository; the secrets themselves live in the browser's cookie and in
//! the printed link.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{GatewayToken, User, UserId};
use crate::error::StoreError;

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id_hash: String,
    pub user_id: UserId,
    /// The per-session CSRF token every form carries.
    pub csrf_token: String,
    /// The gateway token the person signed in with (revoking it ends the session).
    pub token_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The absolute end of the session.
    pub expires_at: DateTime<Utc>,
}

/// A stored session with its user and, when it was opened with a gateway token, that token.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub user: User,
    pub csrf_token: String,
    pub token: Option<GatewayToken>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A sign-in link to store.
#[derive(Debug, Clone)]
pub struct NewLoginLink {
    pub id_hash: String,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Console sessions and sign-in links.
#[async_trait]
pub trait SessionRepository: Send + Sync + 'static {
    /// Stores a session. MUST return [`StoreError::Conflict`] if the hash exists.
    async fn create_session(&self, session: NewSession) -> Result<(), StoreError>;
    /// The session with this hash, its user and bound token (revoked or not), if it exists.
    async fn find_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError>;
    /// Records activity (callers throttle it).
    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Deletes one session; `false` if there was none.
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError>;
    /// Deletes every session of `user`; returns how many.
    async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError>;
    /// Deletes sessions past their absolute end and links past theirs; returns how many rows.
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Stores a sign-in link. MUST return [`StoreError::Conflict`] if the hash exists.
    async fn create_login_link(&self, link: NewLoginLink) -> Result<(), StoreError>;
    /// Uses the link: when it exists, is unused and `expires_at > now`, marks it used and
    /// returns its user, atomically (of concurrent calls for one link, at most one gets
    /// `Some`). Otherwise `None`, changing nothing.
    async fn redeem_login_link(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError>;
}
