//! Users and their gateway tokens, in one store as in the database (a token is found with its
//! user).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fail::{Failing, lock};
use crate::domain::{GatewayToken, NewGatewayToken, Role, Tier, User, UserId, UserOrigin};
use crate::error::StoreError;
use crate::ports::{
    NewLoginLink, NewSession, SessionRepository, StoredSession, TokenRepository, UserRepository,
};

/// A sign-in link, with when it was used.
type UsedLink = (NewLoginLink, Option<DateTime<Utc>>);

/// Users and gateway tokens in memory ([`UserRepository`] and [`TokenRepository`]). Emails are
/// unique; an external user is stored under the issuer that first vouched for it, with its
/// email only when verified (else `<id>@external.invalid`), as the database does. While
/// [`MemUsers::set_failing`] is on, every call fails like a lost database.
#[derive(Debug, Default)]
pub struct MemUsers {
    users: Mutex<HashMap<UserId, User>>,
    /// (SHA-256 of the token, record), in creation order.
    tokens: Mutex<Vec<(String, GatewayToken)>>,
    /// Console sessions by id hash.
    sessions: Mutex<HashMap<String, NewSession>>,
    /// Last activity of each session.
    seen: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Sign-in links by hash, with when they were used.
    links: Mutex<HashMap<String, UsedLink>>,
    failing: Failing,
}

fn conflict(rule: &str) -> StoreError {
    StoreError::Conflict(rule.into())
}

impl MemUsers {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`StoreError::Unavailable`), or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.set(failing);
    }

    /// Stores `user` as is, replacing the user with its id (to set up an origin or a tier).
    pub fn insert(&self, user: User) {
        lock(&self.users).insert(user.id, user);
    }

    fn email_taken(&self, email: &str, by_other_than: UserId) -> bool {
        lock(&self.users)
            .values()
            .any(|u| u.id != by_other_than && u.email.eq_ignore_ascii_case(email))
    }
}

#[async_trait]
impl UserRepository for MemUsers {
    async fn create(&self, email: &str, tier: Tier) -> Result<User, StoreError> {
        self.failing.check()?;
        let user = User {
            id: UserId::new_random(),
            email: email.into(),
            tier,
            created_at: Utc::now(),
            origin: UserOrigin::Local,
            role: Role::User,
            disabled_at: None,
        };
        if self.email_taken(email, user.id) {
            return Err(conflict("users.email is unique"));
        }
        self.insert(user.clone());
        Ok(user)
    }
    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.users).get(&id).cloned())
    }
    async fn find_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.failing.check()?;
        let users = lock(&self.users);
        Ok(users.values().find(|u| u.email == email).cloned())
    }
    async fn set_tier(&self, id: UserId, tier: Tier) -> Result<bool, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.users)
            .get_mut(&id)
            .map(|u| u.tier = tier)
            .is_some())
    }
    async fn set_role(&self, id: UserId, role: Role) -> Result<bool, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.users)
            .get_mut(&id)
            .map(|u| u.role = role)
            .is_some())
    }
    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.users)
            .get_mut(&id)
            .map(|u| u.disabled_at = at)
            .is_some())
    }
    async fn list_users(&self, offset: u64, limit: u64) -> Result<Vec<User>, StoreError> {
        self.failing.check()?;
        let mut all: Vec<User> = lock(&self.users).values().cloned().collect();
        all.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(all
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.users).len() as u64)
    }
    async fn ensure_external(
        &self,
        id: UserId,
        issuer: &str,
        email: &str,
        email_verified: bool,
        tier: Tier,
    ) -> Result<User, StoreError> {
        self.failing.check()?;
        let placeholder = format!("{}@external.invalid", id.0);
        let wanted = email_verified
            .then(|| email.trim().to_lowercase())
            .filter(|e| !e.is_empty());
        let origin = UserOrigin::External {
            issuer: issuer.into(),
        };
        let existing = lock(&self.users).get(&id).cloned();
        let user = match existing {
            Some(u) if u.origin == origin => User { tier, ..u },
            // Stored before origins: claimed only by its verified email (or the placeholder).
            Some(u)
                if u.origin == UserOrigin::Unknown
                    && (u.email == placeholder
                        || wanted
                            .as_deref()
                            .is_some_and(|w| u.email.eq_ignore_ascii_case(w))) =>
            {
                User { tier, origin, ..u }
            }
            Some(_) => return Err(conflict("the user id belongs to another identity source")),
            None => User {
                id,
                email: wanted
                    .filter(|e| !self.email_taken(e, id))
                    .unwrap_or(placeholder),
                tier,
                created_at: Utc::now(),
                origin,
                role: Role::User,
                disabled_at: None,
            },
        };
        self.insert(user.clone());
        Ok(user)
    }
    async fn rehome_issuer(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.failing.check()?;
        let local = UserOrigin::Local;
        for issuer in [from, to] {
            if issuer.trim().is_empty() || Some(issuer) == local.as_stored() {
                return Err(conflict(
                    "an issuer must be a non-empty issuer URL, never `local`",
                ));
            }
        }
        if from == to {
            return Ok(0);
        }
        let mut n = 0;
        for u in lock(&self.users).values_mut() {
            if matches!(&u.origin, UserOrigin::External { issuer } if issuer == from) {
                u.origin = UserOrigin::External { issuer: to.into() };
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl TokenRepository for MemUsers {
    async fn create(&self, t: NewGatewayToken) -> Result<GatewayToken, StoreError> {
        self.failing.check()?;
        if lock(&self.tokens).iter().any(|(hash, _)| *hash == t.hash) {
            return Err(conflict("gateway_tokens_token_hash_key"));
        }
        let token = GatewayToken {
            id: t.id,
            user_id: t.user_id,
            name: t.name,
            prefix: t.prefix,
            created_at: Utc::now(),
            last_used_at: None,
            expires_at: t.expires_at,
            revoked_at: None,
        };
        lock(&self.tokens).push((t.hash, token.clone()));
        Ok(token)
    }
    async fn find_by_hash(&self, hash: &str) -> Result<Option<(GatewayToken, User)>, StoreError> {
        self.failing.check()?;
        let token = lock(&self.tokens)
            .iter()
            .find(|(h, _)| h == hash)
            .map(|(_, t)| t.clone());
        let users = lock(&self.users);
        Ok(token.and_then(|t| Some((t.clone(), users.get(&t.user_id)?.clone()))))
    }
    async fn list(&self, user: UserId) -> Result<Vec<GatewayToken>, StoreError> {
        self.failing.check()?;
        let tokens = lock(&self.tokens);
        // Newest first, as the database lists them.
        Ok(tokens
            .iter()
            .rev()
            .filter(|(_, t)| t.user_id == user)
            .map(|(_, t)| t.clone())
            .collect())
    }
    async fn revoke(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        self.failing.check()?;
        let mut tokens = lock(&self.tokens);
        let live = tokens
            .iter_mut()
            .find(|(_, t)| t.id == id && t.user_id == user && t.revoked_at.is_none());
        Ok(live.map(|(_, t)| t.revoked_at = Some(Utc::now())).is_some())
    }
    async fn touch(&self, id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.failing.check()?;
        if let Some((_, t)) = lock(&self.tokens).iter_mut().find(|(_, t)| t.id == id) {
            t.last_used_at = Some(at);
        }
        Ok(())
    }
}

#[async_trait]
impl SessionRepository for MemUsers {
    async fn create_session(&self, session: NewSession) -> Result<(), StoreError> {
        self.failing.check()?;
        let mut sessions = lock(&self.sessions);
        if sessions.contains_key(&session.id_hash) {
            return Err(conflict("console_sessions_pkey"));
        }
        lock(&self.seen).insert(session.id_hash.clone(), session.created_at);
        sessions.insert(session.id_hash.clone(), session);
        Ok(())
    }
    async fn find_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        self.failing.check()?;
        let Some(s) = lock(&self.sessions).get(id_hash).cloned() else {
            return Ok(None);
        };
        let Some(user) = lock(&self.users).get(&s.user_id).cloned() else {
            return Ok(None);
        };
        let token = s.token_id.and_then(|id| {
            lock(&self.tokens)
                .iter()
                .find(|(_, t)| t.id == id)
                .map(|(_, t)| t.clone())
        });
        let last_seen_at = lock(&self.seen)
            .get(id_hash)
            .copied()
            .unwrap_or(s.created_at);
        Ok(Some(StoredSession {
            user,
            csrf_token: s.csrf_token,
            token,
            created_at: s.created_at,
            last_seen_at,
            expires_at: s.expires_at,
        }))
    }
    async fn touch_session(&self, id_hash: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.failing.check()?;
        if lock(&self.sessions).contains_key(id_hash) {
            lock(&self.seen).insert(id_hash.into(), at);
        }
        Ok(())
    }
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        self.failing.check()?;
        Ok(lock(&self.sessions).remove(id_hash).is_some())
    }
    async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError> {
        self.failing.check()?;
        let mut sessions = lock(&self.sessions);
        let before = sessions.len();
        sessions.retain(|_, s| s.user_id != user);
        Ok((before - sessions.len()) as u64)
    }
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.failing.check()?;
        let mut sessions = lock(&self.sessions);
        let mut links = lock(&self.links);
        let before = sessions.len() + links.len();
        sessions.retain(|_, s| s.expires_at > now);
        links.retain(|_, (l, _)| l.expires_at > now);
        Ok((before - sessions.len() - links.len()) as u64)
    }
    async fn create_login_link(&self, link: NewLoginLink) -> Result<(), StoreError> {
        self.failing.check()?;
        let mut links = lock(&self.links);
        if links.contains_key(&link.id_hash) {
            return Err(conflict("login_links_pkey"));
        }
        links.insert(link.id_hash.clone(), (link, None));
        Ok(())
    }
    async fn redeem_login_link(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        self.failing.check()?;
        let mut links = lock(&self.links);
        match links.get_mut(id_hash) {
            Some((link, used @ None)) if link.expires_at > now => {
                *used = Some(now);
                Ok(Some(link.user_id))
            }
            _ => Ok(None),
        }
    }
}
