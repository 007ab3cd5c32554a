//! Authentication by an external identity provider (OIDC JWTs), beside gateway tokens.
//!
//! [`ExternalAuthenticator`] turns a token a [`TokenVerifier`] accepts into a [`Principal`]:
//! the tier is the one the token states, else the provider's own record ([`TierSource`],
//! cached), else the last snapshot stored locally, else `free`. Users are created locally on
//! first sight (id, email when verified, tier snapshot, origin). Accepted tokens are cached
//! (never past their expiry) so the steady state does neither signature checks nor database
//! round trips.
//!
//! [`ChainAuthenticator`] sends `byok_…` gateway tokens to the token service and anything
//! else to the external authenticator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::domain::{Principal, Tier, UserId};
use crate::error::{CoreError, StoreError};
use crate::ports::{Authenticator, TierSource, TokenVerifier, UserRepository};
use crate::services::cache::{StaleIfError, StaleKind, TtlCache};
use crate::services::hash_token;

/// Upper bound on cached tokens, tiers and provisioned users; a full map is cleared.
const MAX_ENTRIES: usize = 100_000;
/// How long a user provisioned (or re-checked) here is not provisioned again.
const PROVISIONED_TTL: Duration = Duration::from_secs(60);

/// The local user id of an external subject: the subject itself when it is a UUID (Keycloak
/// user ids are), else a UUIDv5 of `issuer#subject` (stable, and distinct per issuer).
pub fn external_user_id(issuer: &str, subject: &str) -> UserId {
    match Uuid::parse_str(subject) {
        Ok(id) => UserId(id),
        Err(_) => UserId(Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("{issuer}#{subject}").as_bytes(),
        )),
    }
}

/// A small map with a time-to-live per entry, cleared when full.
#[derive(Debug)]
struct TtlMap<K, V> {
    entries: HashMap<K, (Instant, V)>,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlMap<K, V> {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, k: &K) -> Option<V> {
        match self.entries.get(k) {
            Some((until, v)) if Instant::now() < *until => Some(v.clone()),
            Some(_) => {
                self.entries.remove(k);
                None
            }
            None => None,
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.entries.retain(|_, (_, v)| keep(v));
    }

    fn insert(&mut self, k: K, v: V, ttl: Duration) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(k, (Instant::now() + ttl, v));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Authenticates provider-issued tokens and provisions their users.
pub struct ExternalAuthenticator {
    verifier: Arc<dyn TokenVerifier>,
    tiers: Option<Arc<dyn TierSource>>,
    users: Arc<dyn UserRepository>,
    cache_ttl: Duration,
    tier_ttl: Duration,
    accepted: Mutex<TtlMap<String, Principal>>,
    tier_cache: Mutex<TtlMap<String, Option<Tier>>>,
    /// Users provisioned here, with the tier stored; while the database cannot be written, a
    /// user provisioned within the stale-if-error bound is let in with a newly verified token.
    provisioned: TtlCache<UserId, Tier>,
    stale: Arc<StaleIfError>,
}

impl std::fmt::Debug for ExternalAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAuthenticator")
            .field("cache_ttl", &self.cache_ttl)
            .field("tier_ttl", &self.tier_ttl)
            .finish_non_exhaustive()
    }
}

impl ExternalAuthenticator {
    /// Drops what is cached about `user` (disabled, or changed elsewhere): their next token
    /// is checked and provisioned again, which refuses a disabled account at once.
    pub fn forget_user(&self, user: UserId) {
        lock(&self.accepted).retain(|p| p.user_id != user);
        self.provisioned.invalidate(&user);
    }

    /// `cache_ttl` bounds how long an accepted token is trusted without a new check (never
    /// past its `exp`); `tier_ttl` how long a tier read from `tiers` is reused.
    pub fn new(
        verifier: Arc<dyn TokenVerifier>,
        tiers: Option<Arc<dyn TierSource>>,
        users: Arc<dyn UserRepository>,
        cache_ttl: Duration,
        tier_ttl: Duration,
    ) -> Self {
        let stale = Arc::new(StaleIfError::default());
        Self {
            verifier,
            tiers,
            users,
            cache_ttl,
            tier_ttl,
            accepted: Mutex::new(TtlMap::new()),
            tier_cache: Mutex::new(TtlMap::new()),
            provisioned: TtlCache::new(PROVISIONED_TTL, stale.max_age(), MAX_ENTRIES),
            stale,
        }
    }

    /// How long ago a user may have been provisioned here to be let in while the database
    /// cannot be written (shared with the other caches of the process).
    pub fn with_stale_if_error(mut self, stale: Arc<StaleIfError>) -> Self {
        self.provisioned = TtlCache::new(PROVISIONED_TTL, stale.max_age(), MAX_ENTRIES);
        self.stale = stale;
        self
    }

    async fn tier_of(&self, user: UserId, subject: &str, stated: Option<Tier>) -> Tier {
        if let Some(t) = stated {
            return t;
        }
        let Some(source) = &self.tiers else {
            return Tier::Free;
        };
        if let Some(cached) = lock(&self.tier_cache).get(&subject.to_string()) {
            return cached.unwrap_or(Tier::Free);
        }
        match source.tier(subject).await {
            Ok(found) => {
                lock(&self.tier_cache).insert(subject.to_string(), found, self.tier_ttl);
                found.unwrap_or(Tier::Free)
            }
            Err(e) => {
                // The provider is unreachable: keep the last snapshot rather than downgrade.
                tracing::warn!(error = %e, "the tier could not be read; using the stored snapshot");
                match self.users.get(user).await {
                    Ok(Some(u)) => u.tier,
                    _ => Tier::Free,
                }
            }
        }
    }
}

#[async_trait]
impl Authenticator for ExternalAuthenticator {
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError> {
        let token = credential.expose_secret();
        let key = hash_token(token);
        if let Some(p) = lock(&self.accepted).get(&key) {
            return Ok(p);
        }
        let identity = self.verifier.verify(token).await?;
        let tier = self
            .tier_of(identity.user_id, &identity.subject, identity.tier)
            .await;
        let known = self.provisioned.lookup(&identity.user_id);
        if known != Ok(tier) {
            let generation = known.err();
            match self
                .users
                .ensure_external(
                    identity.user_id,
                    &identity.issuer,
                    &identity.email,
                    identity.email_verified,
                    tier,
                )
                .await
            {
                // Disabled here by an operator (Keycloak's own flag is read by the tier source).
                Ok(u) if !u.is_active() => return Err(CoreError::Unauthenticated),
                Ok(_) => {
                    self.stale.answered();
                    match generation {
                        Some(g) => self.provisioned.store(identity.user_id, tier, g),
                        None => self.provisioned.put(identity.user_id, tier),
                    }
                }
                Err(StoreError::Conflict(_)) => {
                    // The subject names a local user or one of another issuer: never that user.
                    tracing::warn!(
                        user_id = %identity.user_id,
                        "refused a token whose subject belongs to another identity source"
                    );
                    return Err(CoreError::Unauthenticated);
                }
                // The database cannot be written: a user provisioned here before (so known
                // not to belong to another identity source) is let in, within the bound.
                Err(e) => match self.provisioned.stale(&identity.user_id) {
                    Some(_) => self.stale.serving(StaleKind::Identity, &e),
                    None => return Err(e.into()),
                },
            }
        }
        let principal = Principal {
            user_id: identity.user_id,
            email: identity.email,
            tier,
            token_id: None,
        };
        let left = (identity.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default();
        let ttl = left.min(self.cache_ttl);
        if !ttl.is_zero() {
            lock(&self.accepted).insert(key, principal.clone(), ttl);
        }
        Ok(principal)
    }
}

/// Gateway tokens (`byok_…`) to one authenticator, anything else (a JWT) to another.
pub struct ChainAuthenticator {
    tokens: Arc<dyn Authenticator>,
    external: Option<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for ChainAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainAuthenticator")
            .field("external", &self.external.is_some())
            .finish_non_exhaustive()
    }
}

impl ChainAuthenticator {
    /// Gateway tokens go to `tokens`; anything else to `external` when configured, else refused.
    pub fn new(tokens: Arc<dyn Authenticator>, external: Option<Arc<dyn Authenticator>>) -> Self {
        Self { tokens, external }
    }
}

#[async_trait]
impl Authenticator for ChainAuthenticator {
    async fn authenticate(&self, credential: &SecretString) -> Result<Principal, CoreError> {
        if credential.expose_secret().starts_with("byok_") {
            return self.tokens.authenticate(credential).await;
        }
        match &self.external {
            Some(ext) => ext.authenticate(credential).await,
            None => Err(CoreError::Unauthenticated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ExternalIdentity;
    use crate::testing::MemUsers;

    /// Accepts any token `jwt:<subject>:<tier>[:unverified]` as that user with that tier, for
    /// an hour; the email, `<subject>@example.com`, is verified unless the token says
    /// `unverified`.
    struct AnyToken;

    #[async_trait]
    impl TokenVerifier for AnyToken {
        async fn verify(&self, token: &str) -> Result<ExternalIdentity, CoreError> {
            let mut parts = token.split(':').skip(1);
            let sub = parts.next().unwrap_or_default().to_string();
            let tier = parts.next().and_then(|t| t.parse().ok());
            let email_verified = parts.next() != Some("unverified");
            Ok(ExternalIdentity {
                user_id: external_user_id("https://idp", &sub),
                email: format!("{sub}@example.com"),
                subject: sub,
                issuer: "https://idp".into(),
                email_verified,
                tier,
                expires_at: Utc::now() + chrono::Duration::hours(1),
            })
        }
    }

    #[tokio::test]
    async fn a_user_disabled_here_is_refused_once_forgotten() {
        let users = Arc::new(MemUsers::new());
        let auth = ExternalAuthenticator::new(
            Arc::new(AnyToken),
            None,
            users.clone(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let sub = "8f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        let token: SecretString = format!("jwt:{sub}:starter").into();
        let who = auth.authenticate(&token).await.unwrap();
        users
            .set_disabled(who.user_id, Some(Utc::now()))
            .await
            .unwrap();
        assert!(
            auth.authenticate(&token).await.is_ok(),
            "cached until forgotten"
        );
        auth.forget_user(who.user_id);
        assert!(matches!(
            auth.authenticate(&token).await,
            Err(CoreError::Unauthenticated)
        ));
    }

    #[tokio::test]
    async fn an_outage_lets_in_users_provisioned_before_only() {
        let users = Arc::new(MemUsers::new());
        let stale = Arc::new(StaleIfError::new(Duration::from_secs(60)));
        // Accepted tokens are not cached (TTL zero): every call provisions or falls back.
        let auth = ExternalAuthenticator::new(
            Arc::new(AnyToken),
            None,
            users.clone(),
            Duration::ZERO,
            Duration::ZERO,
        )
        .with_stale_if_error(stale.clone());
        let known = "6f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        let new = "7f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        auth.authenticate(&format!("jwt:{known}:starter").into())
            .await
            .unwrap();
        users.set_failing(true);
        // A new token of the same user with another tier: the snapshot cannot be stored, the
        // user was provisioned before, so the verified token is accepted.
        let who = auth
            .authenticate(&format!("jwt:{known}:professional").into())
            .await
            .unwrap();
        assert_eq!(who.tier, Tier::Professional);
        assert_eq!(stale.served()[3].1, 1);
        assert!(
            matches!(
                auth.authenticate(&format!("jwt:{new}:starter").into())
                    .await,
                Err(CoreError::Store(StoreError::Unavailable(_)))
            ),
            "a user never provisioned cannot be checked against other identity sources"
        );
    }

    #[tokio::test]
    async fn whether_the_email_is_verified_reaches_the_repository() {
        let users = Arc::new(MemUsers::new());
        let auth = ExternalAuthenticator::new(
            Arc::new(AnyToken),
            None,
            users.clone(),
            Duration::ZERO,
            Duration::ZERO,
        );
        let a = "6f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        let b = "7f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        auth.authenticate(&format!("jwt:{a}:starter").into())
            .await
            .unwrap();
        auth.authenticate(&format!("jwt:{b}:starter:unverified").into())
            .await
            .unwrap();
        // Only a verified email is stored; an unverified one links nothing.
        for (sub, stored) in [
            (a, format!("{a}@example.com")),
            (b, format!("{b}@external.invalid")),
        ] {
            let id = external_user_id("https://idp", sub);
            assert_eq!(users.get(id).await.unwrap().unwrap().email, stored);
        }
    }

    #[test]
    fn uuid_subjects_are_kept_and_others_are_derived_per_issuer() {
        let id = "6f1c2a0e-8d3b-4e5f-9a7b-0c1d2e3f4a5b";
        assert_eq!(external_user_id("https://a", id).0.to_string(), id);
        let a = external_user_id("https://a", "johndoe");
        assert_eq!(a, external_user_id("https://a", "johndoe"));
        assert_ne!(a, external_user_id("https://b", "johndoe"));
    }
}
