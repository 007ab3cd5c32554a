//! Authentication by the legacy front end's `session_token` cookie.
//!
//! The legacy pages call `/api/v1/byok/*` with the browser's cookie only; the legacy backend
//! stored, at sign-in, `session:{token}` → `{user (the email), access_token,
//! subscription_tier, …}` (2 h). [`LegacySessionAuthenticator`] reads that session through the
//! [`LegacySessions`] port (read-only) and finds the user by the session's email:
//!
//! 1. With an [`IdentityDirectory`] (Keycloak's admin API), the provider's accounts with that
//!    email are read first: more than one, a disabled one, or one whose email the provider
//!    does not vouch for (`emailVerified` false) is refused. (Otherwise someone who typed
//!    another person's address into an unverified account could reach that person's keys.)
//! 2. A user stored here with that email is the caller. A user a Keycloak token created here
//!    must be that very account when a directory is configured (else its account was deleted
//!    or its email moved: refused).
//! 3. No such user: with a directory, the account's user is created as a token of it would
//!    create it (id from the subject, origin the issuer, the verified email); without one, the
//!    session is refused.
//!
//! The tier: the provider's tier for the account (its `subscription_tier` attribute), when
//! known; else, for a user a Keycloak token created, its stored tier (what Keycloak last said,
//! by claim, role or attribute); else the session's `subscription_tier` (the legacy backend's
//! word, as the legacy pages saw it); else the stored tier (`free` for a new user). A session
//! never raises a Keycloak user above what Keycloak says.
//!
//! Answers are cached by the token's SHA-256 (the token itself is kept nowhere): acceptances for
//! the configured time (30 s by default), refusals for at most 5 s. A session signed out or
//! expired in the legacy backend is therefore refused here at the latest that long after. A
//! store that cannot be asked is [`CoreError::Unavailable`] (503), never a refusal.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{Principal, Tier, User, UserId, UserOrigin, normalize_email};
use crate::error::{CoreError, StoreError};
use crate::ports::{
    Authenticator, DirectoryAccount, IdentityDirectory, LegacySession, LegacySessions,
    UserRepository,
};
use crate::services::cache::TtlCache;
use crate::services::{external_user_id, hash_token};

/// Default and longest time an accepted session is trusted without reading it again.
pub const DEFAULT_LEGACY_SESSION_TTL: Duration = Duration::from_secs(30);
/// Refusals (unknown or expired sessions) are remembered at most this long.
const REFUSED_TTL: Duration = Duration::from_secs(5);
const MAX_ACCEPTED: usize = 100_000;
/// Smaller than the acceptances: a flood of made-up cookies cannot push sessions out.
const MAX_REFUSED: usize = 10_000;

/// Whether `token` can be a legacy session token (`secrets.token_urlsafe`: URL-safe base64)
/// worth a look-up: anything else is refused without asking the store.
fn plausible(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Authenticates the legacy `session_token` cookie (see the module documentation).
pub struct LegacySessionAuthenticator {
    sessions: Arc<dyn LegacySessions>,
    users: Arc<dyn UserRepository>,
    directory: Option<Arc<dyn IdentityDirectory>>,
    accepted: TtlCache<String, Principal>,
    refused: TtlCache<String, ()>,
    ttl: Duration,
}

impl std::fmt::Debug for LegacySessionAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySessionAuthenticator")
            .field("ttl", &self.ttl)
            .field("directory", &self.directory.is_some())
            .finish_non_exhaustive()
    }
}

impl LegacySessionAuthenticator {
    /// Sessions read from `sessions`, users from `users`; an accepted session is trusted for
    /// `ttl` (zero: read on every request), refusals for at most 5 s.
    pub fn new(
        sessions: Arc<dyn LegacySessions>,
        users: Arc<dyn UserRepository>,
        ttl: Duration,
    ) -> Self {
        Self {
            sessions,
            users,
            directory: None,
            accepted: TtlCache::new(ttl, Duration::ZERO, MAX_ACCEPTED),
            refused: TtlCache::new(ttl.min(REFUSED_TTL), Duration::ZERO, MAX_REFUSED),
            ttl,
        }
    }

    /// Matches sessions' emails against the identity provider's accounts too (see the module
    /// documentation).
    pub fn with_directory(mut self, directory: Arc<dyn IdentityDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Drops the cached sessions of `user` (their tier changed here or elsewhere).
    pub fn forget_user(&self, user: UserId) {
        let _ = self.accepted.invalidate_where(|_, p| p.user_id == user);
    }

    /// Drops every cached session.
    pub fn forget_all(&self) {
        self.accepted.clear();
        self.refused.clear();
    }

    /// The caller a session stands for, or `None` (refused; why is logged, without the email).
    async fn resolve(&self, session: &LegacySession) -> Result<Option<Principal>, CoreError> {
        let Ok(email) = normalize_email(&session.email) else {
            tracing::info!("legacy session refused: its user is not an email address");
            return Ok(None);
        };
        let account = match &self.directory {
            None => None,
            Some(d) => match d.accounts_by_email(&email).await?.as_slice() {
                [] => None,
                [one] => Some(one.clone()),
                _ => {
                    tracing::warn!(
                        "legacy session refused: several identity-provider accounts have its email"
                    );
                    return Ok(None);
                }
            },
        };
        if let Some(a) = &account {
            if !a.enabled {
                tracing::info!(subject = %a.subject, "legacy session refused: the account is disabled");
                return Ok(None);
            }
            if !a.email_verified {
                tracing::info!(subject = %a.subject,
                    "legacy session refused: the identity provider does not vouch for its email");
                return Ok(None);
            }
        }
        let found = self.users.find_by_email(&email).await?;
        let user = match found {
            Some(u) => {
                if matches!(u.origin, UserOrigin::External { .. })
                    && self.directory.is_some()
                    && account
                        .as_ref()
                        .is_none_or(|a| external_user_id(&a.issuer, &a.subject) != u.id)
                {
                    tracing::info!(user_id = %u.id,
                        "legacy session refused: the user's identity-provider account no longer has its email");
                    return Ok(None);
                }
                u
            }
            None => match &account {
                Some(a) => match self.provision(a, &email, session).await? {
                    Some(u) => u,
                    None => return Ok(None),
                },
                None => {
                    tracing::info!("legacy session refused: no user has its email");
                    return Ok(None);
                }
            },
        };
        if !user.is_active() {
            // Disabled here by an operator: refused like every other credential of theirs.
            tracing::info!(user_id = %user.id, "legacy session refused: the account is disabled");
            return Ok(None);
        }
        let tier = tier_of(&user, account.as_ref(), session);
        Ok(Some(Principal {
            user_id: user.id,
            email: user.email,
            tier,
            token_id: None,
        }))
    }

    /// The user of an identity-provider account seen for the first time (as a token of it
    /// would create it); `None` when its id belongs to another identity source.
    async fn provision(
        &self,
        account: &DirectoryAccount,
        email: &str,
        session: &LegacySession,
    ) -> Result<Option<User>, CoreError> {
        let id = external_user_id(&account.issuer, &account.subject);
        let tier = account.tier.or(session.tier).unwrap_or(Tier::Free);
        match self
            .users
            .ensure_external(id, &account.issuer, email, account.email_verified, tier)
            .await
        {
            Ok(u) => Ok(Some(u)),
            Err(StoreError::Conflict(_)) => {
                tracing::warn!(user_id = %id,
                    "legacy session refused: its account's subject belongs to another identity source");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The tier rule of the module documentation.
fn tier_of(user: &User, account: Option<&DirectoryAccount>, session: &LegacySession) -> Tier {
    if let Some(t) = account.and_then(|a| a.tier) {
        return t;
    }
    if matches!(user.origin, UserOrigin::External { .. }) {
        return user.tier;
    }
    session.tier.unwrap_or(user.tier)
}

#[async_trait]
impl Authenticator for LegacySessionAuthenticator {
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError> {
        let token = credential.expose_secret();
        if !plausible(token) {
            return Err(CoreError::Unauthenticated);
        }
        let key = hash_token(token);
        let accepted_gen = match self.accepted.lookup(&key) {
            Ok(p) => return Ok(p),
            Err(g) => g,
        };
        let refused_gen = match self.refused.lookup(&key) {
            Ok(()) => return Err(CoreError::Unauthenticated),
            Err(g) => g,
        };
        let answer = match self.sessions.session(credential).await? {
            Some(session) => self.resolve(&session).await?,
            None => None,
        };
        match answer {
            Some(p) => {
                self.accepted.store(key, p.clone(), accepted_gen);
                Ok(p)
            }
            None => {
                self.refused.store(key, (), refused_gen);
                Err(CoreError::Unauthenticated)
            }
        }
    }
}

#[cfg(test)]
mod tests;
