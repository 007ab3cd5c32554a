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
use crate::services::invalidation::{CacheStats, ChangeNotifier, Invalidation, NoNotifier};

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

/// A cached accepted token: its owner, id and expiry, and whether an identity provider
/// vouches for the owner (whose account is then re-read, see
/// [`TokenService::with_identity_refresh`]).
#[derive(Debug, Clone)]
struct Hit {
    principal: Principal,
    token: Uuid,
    expires: Option<DateTime<Utc>>,
    external: bool,
}

/// What was last read of an external account: `None` when the provider could not be asked.
type AccountSnapshot = (Instant, Option<ExternalAccount>);

/// Refusals are cached apart from hits, in a smaller map, so a flood of made-up tokens cannot
/// push valid tokens out of the cache.
const MAX_REFUSED_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
struct Cache {
    hits: HashMap<String, (Instant, Hit)>,
    refused: HashMap<String, Instant>,
    /// Bumped by every revocation; a lookup that started before a revocation does not cache
    /// its (possibly stale) answer.
    generation: u64,
}

/// Issues and checks gateway tokens.
///
/// Authentication is cached for `cache_ttl` per token hash (refusals too), so the steady
/// state does no database round trip; a revocation made through this service takes effect
/// at once in this process and, in others, when the [`ChangeNotifier`] reaches them (at the
/// latest within `cache_ttl`).
pub struct TokenService {
    tokens: Arc<dyn TokenRepository>,
    users: Arc<dyn UserRepository>,
    cache: Mutex<Cache>,
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
    pub fn new(
        tokens: Arc<dyn TokenRepository>,
        users: Arc<dyn UserRepository>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            tokens,
            users,
            cache: Mutex::new(Cache::default()),
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

    /// Re-reads the account of every externally authenticated token owner from `source` at
    /// most every `every` (per user): a disabled or deleted account's tokens are refused, a
    /// changed tier applies, at the latest `every` after the change. While the provider cannot
    /// be asked, the last answer (or the stored snapshot) stands.
    pub fn with_identity_refresh(mut self, source: Arc<dyn TierSource>, every: Duration) -> Self {
        self.accounts = Some((source, every));
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
    pub fn forget_token(&self, id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.generation += 1;
            cache.hits.retain(|_, (_, hit)| hit.token != id);
        }
    }

    /// Drops the cached checks of a user's tokens (their tier changed here or elsewhere).
    pub fn forget_user(&self, user: UserId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.generation += 1;
            cache
                .hits
                .retain(|_, (_, hit)| hit.principal.user_id != user);
        }
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

    /// Drops every cached token check.
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.generation += 1;
            cache.hits.clear();
            cache.refused.clear();
        }
    }

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

    /// `Some(Some(hit))`, `Some(None)` (a cached refusal) or `None` (not cached), plus the
    /// cache generation the answer belongs to.
    fn cached(&self, hash: &str) -> (Option<Option<Hit>>, u64) {
        let Ok(cache) = self.cache.lock() else {
            return (None, 0);
        };
        let fresh = |at: &Instant| at.elapsed() < self.cache_ttl;
        if let Some((at, hit)) = cache.hits.get(hash)
            && fresh(at)
        {
            return (Some(Some(hit.clone())), cache.generation);
        }
        if cache.refused.get(hash).is_some_and(fresh) {
            return (Some(None), cache.generation);
        }
        (None, cache.generation)
    }

    fn remember(&self, hash: String, hit: Option<Hit>, generation: u64) {
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.generation != generation {
            return;
        }
        let now = Instant::now();
        match hit {
            Some(hit) => {
                if cache.hits.len() >= MAX_CACHE_ENTRIES {
                    cache.hits.clear();
                }
                cache.hits.insert(hash, (now, hit));
            }
            None => {
                if cache.refused.len() >= MAX_REFUSED_ENTRIES {
                    cache.refused.clear();
                }
                cache.refused.insert(hash, now);
            }
        }
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
            (Some(hit), _) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            (None, generation) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let hit = match self.tokens.find_by_hash(&hash).await? {
                    Some((t, u)) if t.is_active(now) => {
                        let external = !matches!(u.origin, UserOrigin::Local);
                        let mut principal = Principal::from(u);
                        principal.token_id = Some(t.id);
                        Some(Hit {
                            principal,
                            token: t.id,
                            expires: t.expires_at,
                            external,
                        })
                    }
                    _ => None,
                };
                self.remember(hash, hit.clone(), generation);
                hit
            }
        };
        match hit {
            Some(hit) if hit.expires.is_none_or(|e| e > now) => {
                let mut principal = hit.principal;
                if hit.external
                    && let Some(account) = self.account(&principal).await
                {
                    if !account.enabled {
                        return Err(CoreError::Unauthenticated);
                    }
                    if let Some(tier) = account.tier {
                        principal.tier = tier;
                    }
                }
                if self.should_touch(hit.token)
                    && let Err(e) = self.tokens.touch(hit.token, now).await
                {
                    tracing::warn!(error = %e, "could not record token use");
                }
                Ok(principal)
            }
            _ => Err(CoreError::Unauthenticated),
        }
    }
}

impl TokenService {
    /// The owner's account at the identity provider, re-read at most every refresh interval.
    /// `None`: no refresh configured, or the provider has never answered (the stored snapshot
    /// stands). A changed tier is stored and announced.
    async fn account(&self, who: &Principal) -> Option<ExternalAccount> {
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
            Ok(None) => Some(ExternalAccount {
                enabled: false,
                tier: None,
            }),
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
            tracing::info!(user_id = %who.user_id, "refused a token of a disabled account");
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
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
