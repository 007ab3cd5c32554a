//! The cache-invalidation port: what changed, and how the other replicas hear of it.

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{ProviderId, UserId};

/// One cache entry (or all of them) to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A user's key for a provider was added, replaced, enabled, disabled or deleted.
    Credential { user: UserId, provider: ProviderId },
    /// A gateway token was revoked.
    Token { id: Uuid },
    /// A user's tier changed: cached token checks carry the old one.
    User { user: UserId },
    /// A user's settings changed.
    Settings { user: UserId },
    /// Drop everything (after the feed was interrupted and events may have been missed).
    Everything,
}

impl Invalidation {
    /// The wire form (short, no secrets): `cred:<user>:<provider>`, `token:<id>`,
    /// `user:<user>`, `settings:<user>`, `all`.
    pub fn encode(&self) -> String {
        match self {
            Self::Credential { user, provider } => format!("cred:{user}:{}", provider.as_str()),
            Self::Token { id } => format!("token:{id}"),
            Self::User { user } => format!("user:{user}"),
            Self::Settings { user } => format!("settings:{user}"),
            Self::Everything => "all".into(),
        }
    }

    /// Parses [`Invalidation::encode`]'s form; anything else is `None` (ignored).
    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(3, ':');
        match (parts.next()?, parts.next(), parts.next()) {
            ("cred", Some(user), Some(provider)) => Some(Self::Credential {
                user: UserId(Uuid::parse_str(user).ok()?),
                provider: provider.parse().ok()?,
            }),
            ("token", Some(id), None) => Some(Self::Token {
                id: Uuid::parse_str(id).ok()?,
            }),
            ("user", Some(user), None) => Some(Self::User {
                user: UserId(Uuid::parse_str(user).ok()?),
            }),
            ("settings", Some(user), None) => Some(Self::Settings {
                user: UserId(Uuid::parse_str(user).ok()?),
            }),
            ("all", None, None) => Some(Self::Everything),
            _ => None,
        }
    }
}

/// Tells the other replicas what changed. MUST NOT fail the change that was already made:
/// an implementation logs a publishing failure (the TTL then bounds the staleness).
#[async_trait]
pub trait ChangeNotifier: Send + Sync + 'static {
    /// Announces `change` to the other replicas (best effort, see above).
    async fn publish(&self, change: Invalidation);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let user = UserId::new_random();
        for inv in [
            Invalidation::Credential {
                user,
                provider: ProviderId::Openai,
            },
            Invalidation::Token { id: Uuid::new_v4() },
            Invalidation::Settings { user },
            Invalidation::User { user },
            Invalidation::Everything,
        ] {
            assert_eq!(Invalidation::decode(&inv.encode()), Some(inv));
        }
        for bad in ["", "cred:x:openai", "token:", "all:1", "nope:1", "cred:1"] {
            assert_eq!(Invalidation::decode(bad), None, "{bad}");
        }
    }
}
