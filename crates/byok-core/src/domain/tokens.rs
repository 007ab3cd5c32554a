//! Gateway tokens as stored (never the token itself).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::users::UserId;

/// A gateway token's stored record (never the token itself: only its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayToken {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    /// The visible start of the token, e.g. `byok_Ab3dE6gH`.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl GatewayToken {
    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// A gateway token to store.
#[derive(Debug, Clone)]
pub struct NewGatewayToken {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole token.
    pub hash: String,
    pub expires_at: Option<DateTime<Utc>>,
}
