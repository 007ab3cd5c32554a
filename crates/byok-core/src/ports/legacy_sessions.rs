//! The legacy front end's sessions: what the legacy backend stored when a user signed in,
//! read (never written) so the legacy pages keep working with their `session_token` cookie.

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;

use crate::domain::Tier;
use crate::error::CoreError;

/// A signed-in session of the legacy front end, as the legacy backend stored it.
#[derive(Clone, PartialEq, Eq)]
pub struct LegacySession {
    /// The email the legacy backend signed the user in with, as stored (not yet normalised).
    pub email: String,
    /// The session's `subscription_tier`, when it names a known tier.
    pub tier: Option<Tier>,
}

impl std::fmt::Debug for LegacySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No email in debug output (logs).
        f.debug_struct("LegacySession")
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
}

impl LegacySession {
    /// Reads the legacy backend's session document (JSON, written by its Redis session manager
    /// at sign-in). The email is `user` when it is a string, or `user.email` when `user` is an
    /// object (the Keycloak user info the legacy SSO callback stored); a session without one
    /// (`"user": null`, the pre-sign-in sessions that only carry a CSRF token) is no session.
    /// `subscription_tier` is read when it names a known tier. Everything else (the stored
    /// `access_token`, which may have expired, the org fields) is ignored.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        let doc: Value = serde_json::from_slice(bytes).ok()?;
        let email = match doc.get("user")? {
            Value::String(s) => s.as_str(),
            Value::Object(u) => u.get("email")?.as_str()?,
            _ => return None,
        }
        .trim();
        if email.is_empty() {
            return None;
        }
        let tier = doc
            .get("subscription_tier")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Tier>().ok());
        Some(Self {
            email: email.to_string(),
            tier,
        })
    }
}

/// Where the legacy backend keeps its sessions (Redis, `session:{token}`).
#[async_trait]
pub trait LegacySessions: Send + Sync + 'static {
    /// The session stored under `token`. MUST only read: never write, extend, rename or
    /// delete anything in the store. `Ok(None)` when there is no such session (unknown,
    /// expired, or a document [`LegacySession::from_json`] does not accept). MUST answer
    /// [`CoreError::Unavailable`] quickly (well under a second) when the store cannot be asked,
    /// rather than wait for it. Never logs the token or the session.
    async fn session(&self, token: &SecretString) -> Result<Option<LegacySession>, CoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_session_documents() {
        let s = LegacySession::from_json(
            br#"{"user": "dev@example.com", "access_token": "eyJ.expired", "subscription_tier": "starter", "created": 1.5}"#,
        )
        .unwrap();
        assert_eq!(s.email, "dev@example.com");
        assert_eq!(s.tier, Some(Tier::Starter));
        // The SSO callback stores Keycloak's user info as `user`.
        let s = LegacySession::from_json(
            br#"{"user": {"email": "Dev@Example.com", "sub": "x"}, "subscription_tier": "Trial"}"#,
        )
        .unwrap();
        assert_eq!(s.email, "Dev@Example.com");
        assert_eq!(s.tier, Some(Tier::Trial));
        let s =
            LegacySession::from_json(br#"{"user": "a@b.c", "subscription_tier": "gold"}"#).unwrap();
        assert_eq!(s.tier, None, "an unknown tier is no tier");
        for none in [
            &br#"{"user": null, "csrf_token": "t"}"#[..],
            br#"{"csrf_token": "t"}"#,
            br#"{"user": {"name": "x"}}"#,
            br#"{"user": "  "}"#,
            br#"{"user": 5}"#,
            br#"["user"]"#,
            b"not json",
        ] {
            assert!(
                LegacySession::from_json(none).is_none(),
                "{}",
                String::from_utf8_lossy(none)
            );
        }
        assert!(!format!("{s:?}").contains("a@b.c"), "no email in Debug");
    }
}
