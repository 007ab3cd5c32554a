//! Users: ids, origins, the authenticated principal, emails, and the tier rules that answer
//! with a [`CoreError`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CoreError;
use crate::tier::Tier;

/// Identifier of a user (a UUID; with Keycloak, the token's `sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A fresh random (v4) id.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Tier rules that answer with a [`CoreError`] (the type itself is in its own leaf module).
impl Tier {
    /// `Ok` when this tier reaches `required`, else [`CoreError::UpgradeRequired`].
    pub fn require(self, required: Tier) -> Result<(), CoreError> {
        if self.allows(required) {
            Ok(())
        } else {
            Err(CoreError::UpgradeRequired {
                current: self,
                required,
            })
        }
    }
}

impl FromStr for Tier {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                CoreError::invalid(
                    "invalid_tier",
                    "tier must be one of trial, free, starter, professional, enterprise",
                )
            })
    }
}

/// A local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub tier: Tier,
    pub created_at: DateTime<Utc>,
    /// Who authenticates this user.
    pub origin: UserOrigin,
    /// What the user may administer (separate from the tier, which is what they pay for).
    pub role: Role,
    /// Set when an operator disabled the account: no token, session or link is accepted.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl User {
    /// Whether the account may sign in and use its tokens.
    pub fn is_active(&self) -> bool {
        self.disabled_at.is_none()
    }
}

/// What a user may administer, apart from their tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Their own keys, servers, tokens and usage.
    #[default]
    User,
    /// Also every user's account (create, disable, tier, role) and the service's figures.
    Operator,
}

impl Role {
    /// The stored and displayed name (`user`, `operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "operator" => Ok(Role::Operator),
            _ => Err(CoreError::invalid(
                "invalid_role",
                "role must be one of user, operator",
            )),
        }
    }
}

/// Who vouches for a user: this service (gateway tokens only) or an identity provider.
/// External subjects live in their own namespace: a provider's subject never becomes a local
/// user, nor a user of another provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserOrigin {
    /// Created by this service (CLI, bootstrap).
    Local,
    /// Created on first sight of a token from this issuer.
    External { issuer: String },
    /// Stored before the origin was recorded (see `UserRepository::ensure_external`).
    Unknown,
}

impl UserOrigin {
    /// The stored form: `local`, the issuer URL, or nothing.
    pub fn as_stored(&self) -> Option<&str> {
        match self {
            UserOrigin::Local => Some("local"),
            UserOrigin::External { issuer } => Some(issuer),
            UserOrigin::Unknown => None,
        }
    }

    /// The origin as stored (`local`, an issuer URL, or NULL for rows older than origins).
    pub fn from_stored(s: Option<String>) -> Self {
        match s {
            None => UserOrigin::Unknown,
            Some(s) if s == "local" => UserOrigin::Local,
            Some(issuer) => UserOrigin::External { issuer },
        }
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub email: String,
    pub tier: Tier,
    /// The gateway token the request came with (`None` for a Keycloak JWT); per-token
    /// rate limits count against it.
    pub token_id: Option<Uuid>,
}

impl From<User> for Principal {
    fn from(u: User) -> Self {
        Self {
            user_id: u.id,
            email: u.email,
            tier: u.tier,
            token_id: None,
        }
    }
}

/// Validates and normalises an email address (lower-cased, trimmed, `local@domain`).
pub fn normalize_email(raw: &str) -> Result<String, CoreError> {
    let email = raw.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(CoreError::invalid(
            "invalid_email",
            "email must look like name@domain",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered() {
        assert!(!Tier::Free.allows(Tier::Starter));
        assert!(!Tier::Trial.allows(Tier::Starter));
        assert!(Tier::Starter.allows(Tier::Starter));
        assert!(Tier::Enterprise.allows(Tier::Professional));
        assert_eq!("Professional".parse::<Tier>().unwrap(), Tier::Professional);
        assert!("gold".parse::<Tier>().is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@B.io ").unwrap(), "a@b.io");
        assert!(normalize_email("nope").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("@b").is_err());
    }
}
