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
use crate::ports::{Authenticator, TokenRepository, UserRepository};
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

/// A cached accepted token: its owner, id and expiry.
type Hit = (Principal, Uuid, Option<DateTime<Utc>>);

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
        }
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
            cache.hits.retain(|_, (_, (_, tid, _))| *tid != id);
        }
    }

    /// Drops the cached checks of a user's tokens (their tier changed here or elsewhere).
    pub fn forget_user(&self, user: UserId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.generation += 1;
            cache.hits.retain(|_, (_, (p, _, _))| p.user_id != user);
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

    /// Issues a token for `user`. `name` is 1–100 characters; `expires_in_days` 1–3650.
    pub async fn issue(
        &self,
        user: UserId,
        name: &str,
        expires_in_days: Option<u32>,
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
            None => None,
            Some(d @ 1..=3650) => Some(Utc::now() + chrono::Duration::days(i64::from(d))),
            Some(_) => {
                return Err(CoreError::InvalidInput {
                    code: "invalid_expiry",
                    message: "expires_in_days must be between 1 and 3650".into(),
                });
            }
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
                        let mut principal = Principal::from(u);
                        principal.token_id = Some(t.id);
                        Some((principal, t.id, t.expires_at))
                    }
                    _ => None,
                };
                self.remember(hash, hit.clone(), generation);
                hit
            }
        };
        match hit {
            Some((principal, id, expires)) if expires.is_none_or(|e| e > now) => {
                if self.should_touch(id)
                    && let Err(e) = self.tokens.touch(id, now).await
                {
                    tracing::warn!(error = %e, "could not record token use");
                }
                Ok(principal)
            }
            _ => Err(CoreError::Unauthenticated),
        }
    }
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
