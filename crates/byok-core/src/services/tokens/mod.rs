//! Gateway tokens: issue, list, revoke, and authenticate with a short-lived cache.
//!
//! A token is `byok_` followed by 43 URL-safe characters (32 random bytes). Only its SHA-256
//! is stored, with a visible prefix (`byok_` + 8 characters) for listing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::*;
use crate::error::{CoreError, StoreError};
use crate::ports::{Authenticator, ExternalAccount, TierSource, TokenRepository, UserRepository};
use crate::ports::{ChangeNotifier, Invalidation};
use crate::services::cache::{Generation, StaleIfError, StaleKind, TtlCache};
use crate::services::invalidation::{CacheStats, NoNotifier};

const TOKEN_PREFIX: &str = "byok_";
const VISIBLE_CHARS: usize = 8;
const MAX_NAME_CHARS: usize = 100;
/// Upper bound on cached credentials; the cache is cleared when it is reached.
const MAX_CACHE_ENTRIES: usize = 100_000;
/// A token's `last_used_at` is written at most this often.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Lower-case hex SHA-256 of a presented token.
pub fn hash_token(token: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        // Into the one buffer: this runs on every authenticated request.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A freshly issued token: the secret is shown once and never stored.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: SecretString,
    pub record: GatewayToken,
}

/// A cached accepted token: its owner, id and expiry, and whether the owner's account is
/// re-read at the identity provider (see [`TokenService::with_identity_refresh`]).
#[derive(Debug, Clone)]
struct Hit {
    principal: Principal,
    token: Uuid,
    expires: Option<DateTime<Utc>>,
    refresh: Refresh,
}

/// Whose accounts are re-read at the identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// Local users, and subjects that were not UUIDs (their id is derived, version 5, and
    /// cannot be looked up): never.
    No,
    /// Users an issuer created: the provider's answer stands, "no such account" included
    /// (deleted: refused).
    Owned,
    /// Users stored before origins were recorded (local or the provider's, unknown): re-read;
    /// an account the provider has applies, "no such account" means not the provider's user.
    IfFound,
}

impl Refresh {
    /// Whose account this is, by the user's origin.
    fn of(user: &User) -> Self {
        match user.origin {
            _ if user.id.0.get_version_num() == 5 => Refresh::No,
            UserOrigin::Local => Refresh::No,
            UserOrigin::External { .. } => Refresh::Owned,
            UserOrigin::Unknown => Refresh::IfFound,
        }
    }
}

/// What was last read of an external account: `None` when the provider could not be asked.
type AccountSnapshot = (Instant, Option<ExternalAccount>);

/// Refusals are cached apart from hits, in a smaller map, so a flood of made-up tokens cannot
/// push valid tokens out of the cache.
const MAX_REFUSED_ENTRIES: usize = 10_000;

/// Accepted and refused token checks by token hash. A revocation invalidates the acceptance
/// (and a lookup that started before it does not store its answer).
#[derive(Debug)]
struct Cache {
    hits: TtlCache<String, Hit>,
    refused: TtlCache<String, ()>,
}

impl Cache {
    fn new(ttl: Duration, stale: &StaleIfError) -> Self {
        Self {
            hits: TtlCache::new(ttl, stale.max_age(), MAX_CACHE_ENTRIES),
            refused: TtlCache::new(ttl, stale.max_age(), MAX_REFUSED_ENTRIES),
        }
    }
}

/// Issues and checks gateway tokens.
///
/// Authentication is cached for `cache_ttl` per token hash (refusals too), so the steady
/// state does no database round trip; a revocation made through this service takes effect
/// at once in this process and, in others, when the [`ChangeNotifier`] reaches them (at the
/// latest within `cache_ttl`). While the database cannot be read, the last answer for a token
/// stands (stale-if-error, see [`StaleIfError`]); a token revoked before is refused.
pub struct TokenService {
    tokens: Arc<dyn TokenRepository>,
    users: Arc<dyn UserRepository>,
    cache: Cache,
    stale: Arc<StaleIfError>,
    touched: Mutex<HashMap<Uuid, Instant>>,
    cache_ttl: Duration,
    notifier: Arc<dyn ChangeNotifier>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Lifetime of a token issued without one (`None`: tokens do not expire by default).
    default_lifetime: Option<chrono::Duration>,
    /// Where the accounts of externally authenticated users are re-read, and how often.
    accounts: Option<(Arc<dyn TierSource>, Duration)>,
    account_cache: Mutex<HashMap<UserId, AccountSnapshot>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService")
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// Gateway-token authentication is the [`TokenService`] seen through the [`Authenticator`] port.
pub type TokenAuthenticator = TokenService;

impl TokenService {
    /// A service over `tokens` and `users`, caching token checks for `cache_ttl`.
    pub fn new(
        tokens: Arc<dyn TokenRepository>,
        users: Arc<dyn UserRepository>,
        cache_ttl: Duration,
    ) -> Self {
        let stale = Arc::new(StaleIfError::default());
        Self {
            tokens,
            users,
            cache: Cache::new(cache_ttl, &stale),
            stale,
            touched: Mutex::new(HashMap::new()),
            cache_ttl,
            notifier: Arc::new(NoNotifier),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            default_lifetime: None,
            accounts: None,
            account_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Tokens issued without an expiry get this lifetime (`None`: no expiry).
    pub fn with_default_lifetime(mut self, lifetime: Option<chrono::Duration>) -> Self {
        self.default_lifetime = lifetime.filter(|d| *d > chrono::Duration::zero());
        self
    }

    /// The lifetime of a token issued without one (`None`: such tokens do not expire).
    pub fn default_lifetime(&self) -> Option<chrono::Duration> {
        self.default_lifetime
    }

    /// Re-reads the account of every externally authenticated token owner from `source` at
    /// most every `every` (per user): a disabled or deleted account's tokens are refused, a
    /// changed tier applies, at the latest `every` after the change. While the provider cannot
    /// be asked, the last answer (or the stored snapshot) stands. Console sessions take the same
    /// reading ([`Self::account_tier`], through `SessionService::with_accounts`).
    pub fn with_identity_refresh(mut self, source: Arc<dyn TierSource>, every: Duration) -> Self {
        self.accounts = Some((source, every));
        self
    }

    /// How old a cached token check may be when it is used because the database cannot be read
    /// (shared with the other caches of the process).
    pub fn with_stale_if_error(mut self, stale: Arc<StaleIfError>) -> Self {
        self.cache = Cache::new(self.cache_ttl, &stale);
        self.stale = stale;
        self
    }

    /// Tells other replicas about revocations (see [`ChangeNotifier`]).
    pub fn with_notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Token-check cache hits and misses since start.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// Drops a token's cached acceptance (a revocation made here or by another replica).
    /// A token seen here is then remembered as refused, so it is refused (not merely unchecked)
    /// while the database cannot be read.
    pub fn forget_token(&self, id: Uuid) {
        for hash in self.cache.hits.invalidate_where(|_, hit| hit.token == id) {
            self.cache.refused.put(hash, ());
        }
    }

    /// Drops the cached checks of a user's tokens (their tier changed here or elsewhere).
    pub fn forget_user(&self, user: UserId) {
        let _ = self
            .cache
            .hits
            .invalidate_where(|_, hit| hit.principal.user_id == user);
    }

    /// Changes a user's tier; effective at once here and, through the notifier, in the other
    /// replicas. `false` when there is no such user.
    pub async fn set_tier(&self, user: UserId, tier: Tier) -> Result<bool, CoreError> {
        let found = self.users.set_tier(user, tier).await?;
        if found {
            self.forget_user(user);
            self.notifier.publish(Invalidation::User { user }).await;
        }
        Ok(found)
    }

    /// Disables a user's account (`true`) or enables it again; their tokens are refused (or
    /// accepted) at once here and, through the notifier, in the other replicas. `false`
    /// when there is no such user. Console sessions are ended by the session service.
    pub async fn set_disabled(&self, user: UserId, disabled: bool) -> Result<bool, CoreError> {
        let at = disabled.then(Utc::now);
        let found = self.users.set_disabled(user, at).await?;
        if found {
            self.forget_user(user);
            if !disabled {
                // Tokens tried while the account was disabled are remembered as refused (by
                // hash, not by user): forget those refusals so it works again at once here.
                self.cache.refused.clear();
            }
            self.notifier.publish(Invalidation::User { user }).await;
        }
        Ok(found)
    }

    /// Drops every cached token check.
    pub fn forget_all(&self) {
        self.cache.hits.clear();
        self.cache.refused.clear();
    }

    /// The user repository (for callers that provision users alongside tokens).
    pub fn users(&self) -> &Arc<dyn UserRepository> {
        &self.users
    }

    /// Creates a user (CLI and bootstrap).
    pub async fn create_user(&self, email: &str, tier: Tier) -> Result<User, CoreError> {
        let email = normalize_email(email)?;
        self.users.create(&email, tier).await.map_err(|e| match e {
            StoreError::Conflict(_) => CoreError::Conflict {
                code: "user_exists",
                message: "a user with this email already exists".into(),
            },
            other => other.into(),
        })
    }

    /// Issues a token for the caller: as [`Self::issue`], and never outliving the gateway
    /// token the caller authenticated with (its expiry caps the new one's).
    pub async fn issue_for(
        &self,
        who: &Principal,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<IssuedToken, CoreError> {
        let cap = match who.token_id {
            None => None,
            Some(id) => self
                .tokens
                .list(who.user_id)
                .await?
                .into_iter()
                .find(|t| t.id == id)
                .and_then(|t| t.expires_at),
        };
        self.issue_capped(who.user_id, name, expires_in_days, cap)
            .await
    }

    /// Issues a token for `user`. `name` is 1–100 characters; `expires_in_days` 1–3650, or
    /// the default lifetime when absent.
    pub async fn issue(
        &self,
        user: UserId,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<IssuedToken, CoreError> {
        self.issue_capped(user, name, expires_in_days, None).await
    }

    async fn issue_capped(
        &self,
        user: UserId,
        name: &str,
        expires_in_days: Option<u32>,
        cap: Option<DateTime<Utc>>,
    ) -> Result<IssuedToken, CoreError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(CoreError::InvalidInput {
                code: "invalid_token_name",
                message: format!("token name must be 1 to {MAX_NAME_CHARS} printable characters"),
            });
        }
        let expires_at = match expires_in_days {
            None => self.default_lifetime.map(|d| Utc::now() + d),
            Some(d @ 1..=3650) => Some(Utc::now() + chrono::Duration::days(i64::from(d))),
            Some(_) => {
                return Err(CoreError::InvalidInput {
                    code: "invalid_expiry",
                    message: "expires_in_days must be between 1 and 3650".into(),
                });
            }
        };
        let expires_at = match (expires_at, cap) {
            (Some(e), Some(c)) => Some(e.min(c)),
            (None, c) => c,
            (e, None) => e,
        };
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let prefix = token[..TOKEN_PREFIX.len() + VISIBLE_CHARS].to_string();
        let record = self
            .tokens
            .create(NewGatewayToken {
                id: Uuid::new_v4(),
                user_id: user,
                name: name.to_string(),
                prefix,
                hash: hash_token(&token),
                expires_at,
            })
            .await?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            record,
        })
    }

    /// The user's tokens, newest first (hashes only; a token is shown once, when issued).
    pub async fn list(&self, user: UserId) -> Result<Vec<GatewayToken>, CoreError> {
        Ok(self.tokens.list(user).await?)
    }

    /// Revokes one of `user`'s tokens; effective in this process immediately and, through the
    /// notifier, in the other replicas as soon as they hear of it (else within `cache_ttl`).
    pub async fn revoke(&self, user: UserId, id: Uuid) -> Result<(), CoreError> {
        if !self.tokens.revoke(user, id).await? {
            return Err(CoreError::NotFound {
                code: "token_not_found",
                message: "no active token with this id".into(),
            });
        }
        self.forget_token(id);
        self.notifier.publish(Invalidation::Token { id }).await;
        Ok(())
    }

    /// `Ok(Some(hit))`, `Ok(None)` (a cached refusal) or, not cached, the generations of the
    /// two maps the answer must be stored under.
    fn cached(&self, hash: &String) -> Result<Option<Hit>, (Generation, Generation)> {
        let hits = match self.cache.hits.lookup(hash) {
            Ok(hit) => return Ok(Some(hit)),
            Err(g) => g,
        };
        match self.cache.refused.lookup(hash) {
            Ok(()) => Ok(None),
            Err(refused) => Err((hits, refused)),
        }
    }

    fn remember(&self, hash: String, hit: Option<Hit>, (hits, refused): (Generation, Generation)) {
        match hit {
            Some(hit) => self.cache.hits.store(hash, hit, hits),
            None => {
                // A refusal supersedes an acceptance read earlier (the token was revoked, or
                // expired): the acceptance must not come back as a stale answer later.
                self.cache.hits.discard(&hash);
                self.cache.refused.store(hash, (), refused);
            }
        }
    }

    /// Stale-if-error: the last answer for this token (acceptance or refusal), if read within
    /// the bound; `None` when there is none.
    fn stale(&self, hash: &String, error: &StoreError) -> Option<Option<Hit>> {
        let answer = if let Some(hit) = self.cache.hits.stale(hash) {
            Some(hit)
        } else if self.cache.refused.stale(hash).is_some() {
            None
        } else {
            return None;
        };
        self.stale.serving(StaleKind::Token, error);
        Some(answer)
    }

    fn should_touch(&self, id: Uuid) -> bool {
        let Ok(mut touched) = self.touched.lock() else {
            return false;
        };
        if touched.len() >= MAX_CACHE_ENTRIES {
            touched.clear();
        }
        match touched.get(&id) {
            Some(t) if t.elapsed() < TOUCH_INTERVAL => false,
            _ => {
                touched.insert(id, Instant::now());
                true
            }
        }
    }
}

#[async_trait]
impl Authenticator for TokenService {
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError> {
        let presented = credential.expose_secret();
        if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 256 {
            return Err(CoreError::Unauthenticated);
        }
        let hash = hash_token(presented);
        let now = Utc::now();
        let hit = match self.cached(&hash) {
            Ok(hit) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            Err(generations) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let found = match self.tokens.find_by_hash(&hash).await {
                    Ok(found) => {
                        self.stale.answered();
                        found
                    }
                    Err(e) => {
                        // The database cannot be read: the last answer for this token stands
                        // (within the bound); a token never seen cannot be checked (503).
                        return match self.stale(&hash, &e) {
                            Some(hit) => self.accept(hit, now).await,
                            None => Err(e.into()),
                        };
                    }
                };
                let hit = match found {
                    // A disabled account's tokens are refused like revoked ones.
                    Some((t, u)) if t.is_active(now) && u.is_active() => {
                        let refresh = Refresh::of(&u);
                        let mut principal = Principal::from(u);
                        principal.token_id = Some(t.id);
                        Some(Hit {
                            principal,
                            token: t.id,
                            expires: t.expires_at,
                            refresh,
                        })
                    }
                    _ => None,
                };
                self.remember(hash, hit.clone(), generations);
                hit
            }
        };
        self.accept(hit, now).await
    }
}

impl TokenService {
    /// The principal of an accepted (and unexpired) token, after the identity refresh of
    /// externally authenticated owners; records the token's use at most once a minute.
    async fn accept(&self, hit: Option<Hit>, now: DateTime<Utc>) -> Result<Principal, CoreError> {
        match hit {
            Some(hit) if hit.expires.is_none_or(|e| e > now) => {
                let mut principal = hit.principal;
                principal.tier = self.follow_account(&principal, hit.refresh).await?;
                // Never fails the request; skipped while the store is known to be failing.
                if !self.stale.failing()
                    && self.should_touch(hit.token)
                    && let Err(e) = self.tokens.touch(hit.token, now).await
                {
                    tracing::warn!(error = %e, "could not record token use");
                }
                Ok(principal)
            }
            _ => Err(CoreError::Unauthenticated),
        }
    }

    /// The tier `who` has after their account at the identity provider is consulted (see
    /// [`Self::account_tier`]); `Unauthenticated` when it is disabled or deleted there.
    async fn follow_account(&self, who: &Principal, refresh: Refresh) -> Result<Tier, CoreError> {
        if refresh == Refresh::No {
            return Ok(who.tier);
        }
        match self.account(who, refresh).await {
            Some(account) if !account.enabled => Err(CoreError::Unauthenticated),
            Some(ExternalAccount {
                tier: Some(tier), ..
            }) => Ok(tier),
            _ => Ok(who.tier),
        }
    }

    /// The identity refresh of gateway tokens, for the other ways a user is let in (a console
    /// session): `user`'s account at the identity provider, read at most every refresh
    /// interval per user (one reading shared with their tokens). `Err(Unauthenticated)` when
    /// the account is disabled or deleted there. Otherwise the tier to apply: the provider's
    /// (stored and announced when it changed), else the stored one — also when no refresh is
    /// configured, the user is not the provider's, or the provider cannot be asked (the last
    /// answer read, if any, stands meanwhile).
    pub async fn account_tier(&self, user: &User) -> Result<Tier, CoreError> {
        let who = Principal::from(user.clone());
        self.follow_account(&who, Refresh::of(user)).await
    }

    /// The owner's account at the identity provider, re-read at most every refresh interval.
    /// `None`: no refresh configured, or the provider has never answered (the stored snapshot
    /// stands). A changed tier is stored and announced.
    async fn account(&self, who: &Principal, refresh: Refresh) -> Option<ExternalAccount> {
        let (source, every) = self.accounts.as_ref()?;
        let cached = lock(&self.account_cache).get(&who.user_id).copied();
        if let Some((at, account)) = cached
            && at.elapsed() < *every
        {
            return account;
        }
        let read = match source.account(&who.user_id.0.to_string()).await {
            Ok(Some(a)) => Some(a),
            // Deleted at the provider: refused like a disabled account.
            Ok(None) if refresh == Refresh::Owned => Some(ExternalAccount {
                enabled: false,
                tier: None,
            }),
            // Not the provider's user (a local user stored before origins were recorded).
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, user_id = %who.user_id,
                    "the identity provider could not be asked; the last known account stands");
                // Asked again after the interval, not on every request meanwhile.
                let last = cached.and_then(|(_, a)| a);
                self.remember_account(who.user_id, last);
                return last;
            }
        };
        self.remember_account(who.user_id, read);
        if let Some(a) = read
            && let Some(tier) = a.tier
            && tier != who.tier
        {
            tracing::info!(user_id = %who.user_id, tier = tier.as_str(),
                "tier changed at the identity provider");
            if let Err(e) = self.set_tier(who.user_id, tier).await {
                tracing::warn!(error = %e, "could not store the new tier snapshot");
            }
        }
        if read.is_some_and(|a| !a.enabled) {
            tracing::info!(user_id = %who.user_id,
                "refused: the account is disabled or deleted at the identity provider");
        }
        read
    }

    fn remember_account(&self, user: UserId, account: Option<ExternalAccount>) {
        let mut cache = lock(&self.account_cache);
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(user, (Instant::now(), account));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
