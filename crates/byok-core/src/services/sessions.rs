//! Console sessions: single-use sign-in links, server-side sessions with idle and absolute
//! timeouts, and the per-session CSRF token.
//!
//! A session id and a link secret are 32 random bytes (URL-safe base64); only their SHA-256
//! is stored, so a database dump opens no session. A session ends at its absolute end, after
//! the idle timeout, at sign-out, when its user is disabled, and — when it was opened with a
//! gateway token — when that token is revoked or expires. A session of a user of an identity
//! provider also follows their account there (see [`SessionService::with_accounts`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::domain::{Principal, User, UserId};
use crate::error::{CoreError, StoreError};
use crate::ports::{NewLoginLink, NewSession, SessionRepository, UserRepository};
use crate::services::tokens::{TokenService, hash_token};

/// Activity is written at most this often per session.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// Longest accepted cookie or link secret (ours are 43 characters).
const MAX_SECRET_CHARS: usize = 128;

/// How long sessions and links last.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub absolute: Duration,
    /// A sign-in link is accepted this long after it was made.
    pub link_lifetime: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(2 * 3600),
            absolute: Duration::from_secs(12 * 3600),
            link_lifetime: Duration::from_secs(15 * 60),
        }
    }
}

/// A session just opened: the cookie value (shown to the browser once) and its CSRF token.
#[derive(Debug)]
pub struct OpenedSession {
    pub cookie: SecretString,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A sign-in link just made: its secret (printed once) and when it stops working.
#[derive(Debug)]
pub struct IssuedLink {
    pub secret: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// The signed-in person behind a valid session.
#[derive(Debug, Clone)]
pub struct ConsoleUser {
    pub user: User,
    /// The CSRF token every form of this session must carry.
    pub csrf_token: String,
    /// The gateway token the session was opened with, if any.
    pub token_id: Option<Uuid>,
}

impl ConsoleUser {
    /// The principal the core services take (the session's user, with their tier).
    pub fn principal(&self) -> Principal {
        let mut p = Principal::from(self.user.clone());
        p.token_id = self.token_id;
        p
    }
}

/// Opens, checks and ends console sessions.
#[derive(Clone)]
pub struct SessionService {
    repo: Arc<dyn SessionRepository>,
    users: Arc<dyn UserRepository>,
    policy: SessionPolicy,
    /// Where the accounts of identity-provider users are re-read (the gateway tokens' refresh).
    accounts: Option<Arc<TokenService>>,
}

impl std::fmt::Debug for SessionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Compares two strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SessionService {
    pub fn new(
        repo: Arc<dyn SessionRepository>,
        users: Arc<dyn UserRepository>,
        policy: SessionPolicy,
    ) -> Self {
        Self {
            repo,
            users,
            policy,
            accounts: None,
        }
    }

    /// Sessions of users of an identity provider follow their account there, exactly as their
    /// gateway tokens do ([`TokenService::account_tier`], re-read at most every identity
    /// refresh interval per user): disabled or deleted there, the session ends at its next use
    /// (deleted); a changed tier applies (and is stored). While the provider cannot be asked,
    /// the last answer read (or the stored tier) stands and the session goes on.
    pub fn with_accounts(mut self, tokens: Arc<TokenService>) -> Self {
        self.accounts = Some(tokens);
        self
    }

    /// The timeouts in force.
    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    /// Makes a single-use sign-in link for an active user.
    pub async fn issue_link(&self, user: UserId) -> Result<IssuedLink, CoreError> {
        match self.users.get(user).await? {
            Some(u) if u.is_active() => {}
            Some(_) => {
                return Err(CoreError::Conflict {
                    code: "user_disabled",
                    message: "the account is disabled; enable it first".into(),
                });
            }
            None => {
                return Err(CoreError::NotFound {
                    code: "user_not_found",
                    message: "no such user".into(),
                });
            }
        }
        let secret = random_secret();
        let now = Utc::now();
        let expires_at = now + delta(self.policy.link_lifetime);
        self.repo
            .create_login_link(NewLoginLink {
                id_hash: hash_token(&secret),
                user_id: user,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(IssuedLink {
            secret: SecretString::from(secret),
            expires_at,
        })
    }

    /// Uses a sign-in link and opens a session for its user. Unknown, used and expired links,
    /// and links of disabled users, are all refused alike.
    pub async fn redeem_link(&self, secret: &SecretString) -> Result<OpenedSession, CoreError> {
        let secret = secret.expose_secret();
        if secret.is_empty() || secret.len() > MAX_SECRET_CHARS {
            return Err(CoreError::Unauthenticated);
        }
        let user = self
            .repo
            .redeem_login_link(&hash_token(secret), Utc::now())
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        let user = self
            .users
            .get(user)
            .await?
            .filter(User::is_active)
            .ok_or(CoreError::Unauthenticated)?;
        self.open(&user, None).await
    }

    /// Opens a new session for `user` (already authenticated some other way: a gateway token,
    /// whose id is given, or the identity provider).
    pub async fn open(
        &self,
        user: &User,
        token_id: Option<Uuid>,
    ) -> Result<OpenedSession, CoreError> {
        if !user.is_active() {
            return Err(CoreError::Unauthenticated);
        }
        let cookie = random_secret();
        let csrf_token = random_secret();
        let now = Utc::now();
        let expires_at = now + delta(self.policy.absolute);
        self.repo
            .create_session(NewSession {
                id_hash: hash_token(&cookie),
                user_id: user.id,
                csrf_token: csrf_token.clone(),
                token_id,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(OpenedSession {
            cookie: SecretString::from(cookie),
            csrf_token,
            expires_at,
        })
    }

    /// The person behind a session cookie, or `Unauthenticated` (and the session deleted)
    /// when it has ended for any reason.
    pub async fn authenticate(&self, cookie: &SecretString) -> Result<ConsoleUser, CoreError> {
        let cookie = cookie.expose_secret();
        if cookie.is_empty() || cookie.len() > MAX_SECRET_CHARS {
            return Err(CoreError::Unauthenticated);
        }
        let hash = hash_token(cookie);
        let Some(s) = self.repo.find_session(&hash).await? else {
            return Err(CoreError::Unauthenticated);
        };
        let now = Utc::now();
        let token_ok = s
            .token
            .as_ref()
            .is_none_or(|t| t.is_active(now) && t.user_id == s.user.id);
        let mut ended = now >= s.expires_at
            || now >= s.last_seen_at + delta(self.policy.idle)
            || !s.user.is_active()
            || !token_ok;
        let mut user = s.user;
        if !ended && let Some(accounts) = &self.accounts {
            match accounts.account_tier(&user).await {
                Ok(tier) => user.tier = tier,
                Err(CoreError::Unauthenticated) => {
                    tracing::info!(user_id = %user.id,
                        "console session ended: the account is disabled or deleted at the identity provider");
                    ended = true;
                }
                Err(e) => return Err(e),
            }
        }
        if ended {
            // Best effort: an ended session is refused whether or not it could be deleted.
            if let Err(e) = self.repo.delete_session(&hash).await {
                tracing::warn!(error = %e, "could not delete an ended console session");
            }
            return Err(CoreError::Unauthenticated);
        }
        if now - s.last_seen_at >= TOUCH_EVERY
            && let Err(e) = self.repo.touch_session(&hash, now).await
        {
            tracing::warn!(error = %e, "could not record console session activity");
        }
        Ok(ConsoleUser {
            token_id: s.token.map(|t| t.id),
            user,
            csrf_token: s.csrf_token,
        })
    }

    /// Ends the session with this cookie (signing out); fine if it had already ended.
    pub async fn sign_out(&self, cookie: &SecretString) -> Result<(), CoreError> {
        let cookie = cookie.expose_secret();
        if cookie.is_empty() || cookie.len() > MAX_SECRET_CHARS {
            return Ok(());
        }
        self.repo.delete_session(&hash_token(cookie)).await?;
        Ok(())
    }

    /// Ends every session of `user` (disabled, or signed out everywhere).
    pub async fn end_all(&self, user: UserId) -> Result<u64, CoreError> {
        Ok(self.repo.delete_user_sessions(user).await?)
    }

    /// Deletes ended sessions and links (housekeeping; sessions are also checked when used).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.repo.delete_expired(Utc::now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{NewGatewayToken, Role, Tier};
    use crate::ports::{Authenticator, TokenRepository};
    use crate::testing::MemUsers;

    fn service(mem: &Arc<MemUsers>, policy: SessionPolicy) -> SessionService {
        SessionService::new(mem.clone(), mem.clone(), policy)
    }

    #[tokio::test]
    async fn a_link_opens_one_session_once() {
        let mem = Arc::new(MemUsers::new());
        let user = UserRepository::create(&*mem, "a@example.com", Tier::Starter)
            .await
            .unwrap();
        let svc = service(&mem, SessionPolicy::default());
        let link = svc.issue_link(user.id).await.unwrap();
        let opened = svc.redeem_link(&link.secret).await.unwrap();
        let who = svc.authenticate(&opened.cookie).await.unwrap();
        assert_eq!(who.user.id, user.id);
        assert_eq!(who.csrf_token, opened.csrf_token);
        assert_eq!(who.user.role, Role::User);
        assert!(matches!(
            svc.redeem_link(&link.secret).await,
            Err(CoreError::Unauthenticated)
        ));
        svc.sign_out(&opened.cookie).await.unwrap();
        assert!(svc.authenticate(&opened.cookie).await.is_err());
    }

    #[tokio::test]
    async fn expired_links_and_idle_sessions_are_refused() {
        let mem = Arc::new(MemUsers::new());
        let user = UserRepository::create(&*mem, "b@example.com", Tier::Free)
            .await
            .unwrap();
        let svc = service(
            &mem,
            SessionPolicy {
                idle: Duration::ZERO,
                absolute: Duration::from_secs(60),
                link_lifetime: Duration::ZERO,
            },
        );
        let link = svc.issue_link(user.id).await.unwrap();
        assert!(svc.redeem_link(&link.secret).await.is_err());
        let opened = svc.open(&user, None).await.unwrap();
        assert!(svc.authenticate(&opened.cookie).await.is_err());
    }

    #[tokio::test]
    async fn disabling_the_user_or_revoking_the_token_ends_the_session() {
        let mem = Arc::new(MemUsers::new());
        let user = UserRepository::create(&*mem, "c@example.com", Tier::Starter)
            .await
            .unwrap();
        let svc = service(&mem, SessionPolicy::default());
        let token = TokenRepository::create(
            &*mem,
            NewGatewayToken {
                id: Uuid::new_v4(),
                user_id: user.id,
                name: "t".into(),
                prefix: "byok_xxxxxxxx".into(),
                hash: "h".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
        let by_token = svc.open(&user, Some(token.id)).await.unwrap();
        let other = svc.open(&user, None).await.unwrap();
        assert_eq!(
            svc.authenticate(&by_token.cookie).await.unwrap().token_id,
            Some(token.id)
        );
        TokenRepository::revoke(&*mem, user.id, token.id)
            .await
            .unwrap();
        assert!(svc.authenticate(&by_token.cookie).await.is_err());
        assert!(svc.authenticate(&other.cookie).await.is_ok());
        mem.set_disabled(user.id, Some(Utc::now())).await.unwrap();
        assert!(svc.authenticate(&other.cookie).await.is_err());
        assert!(svc.issue_link(user.id).await.is_err());
    }

    /// Review finding: a user disabled (or deleted) at the identity provider kept an open
    /// console session until its idle or absolute end. Now the session follows the account,
    /// through the same refresh as the user's gateway tokens.
    #[tokio::test]
    async fn a_session_follows_the_account_at_the_identity_provider() {
        use crate::domain::UserOrigin;
        use crate::testing::MemAccounts;

        let mem = Arc::new(MemUsers::new());
        let idp = Arc::new(MemAccounts::new());
        // Interval zero: every use reads the account again.
        let tokens = Arc::new(
            TokenService::new(mem.clone(), mem.clone(), Duration::ZERO)
                .with_identity_refresh(idp.clone(), Duration::ZERO),
        );
        let svc = service(&mem, SessionPolicy::default()).with_accounts(tokens);
        let external = |email: &str| {
            let id = UserId(Uuid::new_v4());
            let user = User {
                id,
                email: email.into(),
                tier: Tier::Starter,
                created_at: Utc::now(),
                origin: UserOrigin::External {
                    issuer: "https://kc/realms/r".into(),
                },
                role: Role::User,
                disabled_at: None,
            };
            mem.insert(user.clone());
            user
        };

        // Enabled, with another tier there: the tier applies and is stored.
        let kc = external("kc@example.com");
        idp.set(&kc.id.0.to_string(), true, Some(Tier::Professional));
        let session = svc.open(&kc, None).await.unwrap();
        let who = svc.authenticate(&session.cookie).await.unwrap();
        assert_eq!(who.user.tier, Tier::Professional);
        assert_eq!(who.principal().tier, Tier::Professional);
        assert_eq!(
            mem.get(kc.id).await.unwrap().unwrap().tier,
            Tier::Professional
        );

        // The provider cannot be asked: the last answer stands, the session goes on.
        idp.set_failing(true);
        let who = svc.authenticate(&session.cookie).await.unwrap();
        assert_eq!(who.user.tier, Tier::Professional);
        idp.set_failing(false);

        // Disabled there: the session ends, and stays ended when the account comes back.
        idp.set(&kc.id.0.to_string(), false, None);
        assert!(matches!(
            svc.authenticate(&session.cookie).await,
            Err(CoreError::Unauthenticated)
        ));
        idp.set(&kc.id.0.to_string(), true, None);
        assert!(
            svc.authenticate(&session.cookie).await.is_err(),
            "the ended session was deleted"
        );

        // Deleted there: the session ends too.
        let gone = external("gone@example.com");
        idp.set(&gone.id.0.to_string(), true, None);
        let session = svc.open(&gone, None).await.unwrap();
        assert!(svc.authenticate(&session.cookie).await.is_ok());
        idp.remove(&gone.id.0.to_string());
        assert!(matches!(
            svc.authenticate(&session.cookie).await,
            Err(CoreError::Unauthenticated)
        ));

        // A local user has no account there and is never asked about.
        let local = UserRepository::create(&*mem, "local@example.com", Tier::Starter)
            .await
            .unwrap();
        let reads = idp.reads();
        let session = svc.open(&local, None).await.unwrap();
        assert!(svc.authenticate(&session.cookie).await.is_ok());
        assert_eq!(idp.reads(), reads);
    }

    #[tokio::test]
    async fn the_account_is_read_once_per_interval_for_sessions_and_tokens_together() {
        use crate::domain::UserOrigin;
        use crate::testing::MemAccounts;

        let mem = Arc::new(MemUsers::new());
        let idp = Arc::new(MemAccounts::new());
        let tokens = Arc::new(
            TokenService::new(mem.clone(), mem.clone(), Duration::ZERO)
                .with_identity_refresh(idp.clone(), Duration::from_secs(3600)),
        );
        let svc = service(&mem, SessionPolicy::default()).with_accounts(tokens.clone());
        let user = User {
            id: UserId(Uuid::new_v4()),
            email: "kc@example.com".into(),
            tier: Tier::Starter,
            created_at: Utc::now(),
            origin: UserOrigin::External {
                issuer: "https://kc/realms/r".into(),
            },
            role: Role::User,
            disabled_at: None,
        };
        mem.insert(user.clone());
        idp.set(&user.id.0.to_string(), true, None);
        let token = tokens.issue(user.id, "t", None).await.unwrap();
        let session = svc.open(&user, None).await.unwrap();
        for _ in 0..3 {
            svc.authenticate(&session.cookie).await.unwrap();
            tokens.authenticate(&token.token).await.unwrap();
        }
        assert_eq!(idp.reads(), 1, "one reading per user and interval");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
