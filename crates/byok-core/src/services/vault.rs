//! The key vault: users' provider keys, encrypted at rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::*;
use crate::error::CoreError;
use crate::ports::{ChangeNotifier, Invalidation};
use crate::ports::{KeyProber, KeyRepository, KeyRotationRepository, ProbeOutcome, SecretCipher};
use crate::services::cache::{StaleIfError, StaleKind, TtlCache};
use crate::services::invalidation::{CacheStats, NoNotifier};

/// Longest label accepted.
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest endpoint URL accepted.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// A request to store a key.
#[derive(Debug)]
pub struct AddKey {
    pub provider: ProviderId,
    /// The key as sent (validated and trimmed by [`ApiKey::parse`]).
    pub key: SecretString,
    pub label: Option<String>,
    pub endpoint: Option<String>,
}

/// A stored key as listed: never the key, only its stored preview.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary {
    pub provider: ProviderId,
    pub key_preview: KeyPreview,
    pub label: Option<String>,
    pub endpoint: Option<String>,
    pub enabled: bool,
    pub added_date: Option<chrono::DateTime<Utc>>,
    pub last_tested: Option<chrono::DateTime<Utc>>,
    pub test_status: Option<TestStatus>,
}

/// One catalogue entry with the caller's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSummary {
    pub id: ProviderId,
    pub configured: bool,
}

/// Counts for `GET /api/v1/byok/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyVaultStats {
    pub total_providers: usize,
    pub configured_providers: usize,
    pub tested_providers: usize,
    pub valid_providers: usize,
    pub user_tier: Tier,
}

/// A user's own credential for a provider, decrypted, for an outbound call.
#[derive(Debug, Clone)]
pub struct UserCredential {
    pub provider: ProviderId,
    pub key: ApiKey,
    pub endpoint: Option<String>,
}

/// Validates a user-supplied endpoint's syntax: an absolute http(s) URL with a host, no
/// credentials, no fragment. Where it may connect is decided later by the target policy,
/// at connect time.
pub fn validate_endpoint(raw: &str) -> Result<String, CoreError> {
    let e = raw.trim();
    let bad = |m: &str| CoreError::invalid("invalid_endpoint", m.to_string());
    if e.len() > MAX_ENDPOINT_LEN {
        return Err(bad("endpoint is too long"));
    }
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"))
        .ok_or_else(|| bad("endpoint must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(bad("endpoint must name a host"));
    }
    if authority.contains('@') {
        return Err(bad("endpoint must not contain credentials"));
    }
    if e.contains(['#', '?']) || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "endpoint must not contain whitespace, a query string or a fragment",
        ));
    }
    Ok(e.trim_end_matches('/').to_string())
}

/// Decrypted credentials by (user, provider), `None` meaning "no usable key". Bounded; cleared
/// when full. A change invalidates the entry (and a lookup that started before it does not
/// store its answer).
type CredentialCache = TtlCache<(UserId, ProviderId), Option<UserCredential>>;

const MAX_CACHED_CREDENTIALS: usize = 100_000;

/// Default lifetime of a cached credential lookup.
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(30);

/// The key vault service.
///
/// [`KeyVault::resolve`] is on the gateway's hot path: it answers from an in-memory cache
/// (decrypted keys held as secrets, and "no key" answers too) for `credential_ttl`; adding or
/// deleting a key through this vault drops the entry at once. While the key store cannot be
/// read, the last answer stands (stale-if-error, see [`StaleIfError`]); a key deleted or
/// replaced before is not used.
#[derive(Clone)]
pub struct KeyVault {
    keys: Arc<dyn KeyRepository>,
    cipher: Arc<dyn SecretCipher>,
    prober: Arc<dyn KeyProber>,
    cache: Arc<CredentialCache>,
    credential_ttl: Duration,
    stale: Arc<StaleIfError>,
    notifier: Arc<dyn ChangeNotifier>,
    stats: Arc<(AtomicU64, AtomicU64)>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault").finish_non_exhaustive()
    }
}

impl KeyVault {
    /// A vault over `keys`, encrypting with `cipher` and testing keys with `prober`.
    pub fn new(
        keys: Arc<dyn KeyRepository>,
        cipher: Arc<dyn SecretCipher>,
        prober: Arc<dyn KeyProber>,
    ) -> Self {
        let stale = Arc::new(StaleIfError::default());
        Self {
            keys,
            cipher,
            prober,
            cache: Arc::new(CredentialCache::new(
                DEFAULT_CREDENTIAL_TTL,
                stale.max_age(),
                MAX_CACHED_CREDENTIALS,
            )),
            credential_ttl: DEFAULT_CREDENTIAL_TTL,
            stale,
            notifier: Arc::new(NoNotifier),
            stats: Arc::default(),
        }
    }

    /// Tells other replicas about key changes (see [`ChangeNotifier`]).
    pub fn with_notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Credential cache hits and misses since start.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.stats.0.load(Ordering::Relaxed),
            misses: self.stats.1.load(Ordering::Relaxed),
        }
    }

    /// Drops every cached credential.
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Drops the local entry and tells the other replicas.
    async fn changed(&self, user: UserId, provider: ProviderId) {
        self.forget_credential(user, provider);
        self.notifier
            .publish(Invalidation::Credential { user, provider })
            .await;
    }

    /// Sets how long resolved credentials are cached (0 disables the cache).
    pub fn with_credential_ttl(mut self, ttl: Duration) -> Self {
        self.credential_ttl = ttl;
        self.cache = Arc::new(CredentialCache::new(
            ttl,
            self.stale.max_age(),
            MAX_CACHED_CREDENTIALS,
        ));
        self
    }

    /// How old a cached credential may be when it is used because the key store cannot be
    /// read (shared with the other caches of the process).
    pub fn with_stale_if_error(mut self, stale: Arc<StaleIfError>) -> Self {
        self.cache = Arc::new(CredentialCache::new(
            self.credential_ttl,
            stale.max_age(),
            MAX_CACHED_CREDENTIALS,
        ));
        self.stale = stale;
        self
    }

    /// Drops the cached credential of (user, provider): a change made here or by another
    /// replica.
    pub fn forget_credential(&self, user: UserId, provider: ProviderId) {
        self.cache.invalidate(&(user, provider));
    }

    /// Decrypts up to `sample` keys stored in `keys` (any users'; the rotation side of this
    /// vault's store); returns (sampled, readable). A ring that reads none of a non-empty
    /// sample is the wrong `ENCRYPTION_KEY`.
    pub async fn check_cipher(
        &self,
        keys: &dyn KeyRotationRepository,
        sample: u32,
    ) -> Result<(usize, usize), CoreError> {
        let rows = keys.ciphertext_page(None, sample).await?;
        let readable = rows
            .iter()
            .filter(|r| self.cipher.decrypt(&r.ciphertext).is_ok())
            .count();
        Ok((rows.len(), readable))
    }

    /// The providers the caller stored an enabled key for (not cached: not on the hot path).
    pub async fn stored_providers(&self, who: &Principal) -> Result<Vec<ProviderId>, CoreError> {
        Ok(self
            .keys
            .list(who.user_id)
            .await?
            .into_iter()
            .filter(|k| k.enabled)
            .map(|k| k.provider)
            .collect())
    }

    /// The catalogue, each provider marked `configured` if the caller stored a key for it.
    pub async fn providers(&self, who: &Principal) -> Result<Vec<ProviderSummary>, CoreError> {
        let stored = self.keys.list(who.user_id).await?;
        Ok(ProviderId::ALL
            .into_iter()
            .map(|id| ProviderSummary {
                id,
                configured: stored.iter().any(|k| k.provider == id && k.enabled),
            })
            .collect())
    }

    /// Stores (or replaces) the caller's key for a provider. Needs tier `starter`+.
    /// Validation: the provider's key format, label length, endpoint syntax (required
    /// for `custom`).
    pub async fn add(&self, who: &Principal, req: AddKey) -> Result<(), CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        let key = ApiKey::parse(req.provider, req.key.expose_secret())?;
        let label = match req.label.map(|l| l.trim().to_string()) {
            Some(l) if l.chars().count() > MAX_LABEL_CHARS => {
                return Err(CoreError::invalid(
                    "invalid_label",
                    format!("label must be at most {MAX_LABEL_CHARS} characters"),
                ));
            }
            Some(l) if l.chars().any(char::is_control) => {
                return Err(CoreError::invalid(
                    "invalid_label",
                    "label must not contain control characters",
                ));
            }
            Some(l) if l.is_empty() => None,
            other => other,
        };
        let endpoint = match req.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => Some(validate_endpoint(e)?),
        };
        if req.provider.requires_endpoint() && endpoint.is_none() {
            return Err(CoreError::invalid(
                "endpoint_required",
                "the custom provider needs an endpoint (an OpenAI-compatible base URL)",
            ));
        }
        let ciphertext = self.cipher.encrypt(key.secret())?;
        let metadata = KeyMetadata {
            label,
            added_date: Some(Utc::now()),
            endpoint,
            last_tested: None,
            test_status: None,
        };
        self.keys
            .upsert(NewStoredKey {
                user_id: who.user_id,
                provider: req.provider,
                ciphertext,
                key_preview: key.preview(),
                metadata,
            })
            .await?;
        self.changed(who.user_id, req.provider).await;
        tracing::info!(provider = %req.provider, user_id = %who.user_id, "provider key stored");
        Ok(())
    }

    /// The caller's keys, from stored previews only (never decrypts).
    pub async fn list(&self, who: &Principal) -> Result<Vec<KeySummary>, CoreError> {
        Ok(self
            .keys
            .list(who.user_id)
            .await?
            .into_iter()
            .map(|k| KeySummary {
                provider: k.provider,
                key_preview: k.key_preview,
                label: k.metadata.label,
                endpoint: k.metadata.endpoint,
                enabled: k.enabled,
                added_date: k.metadata.added_date,
                last_tested: k.metadata.last_tested,
                test_status: k.metadata.test_status,
            })
            .collect())
    }

    /// Deletes the caller's key: the row is gone, the key can no longer be used.
    /// Allowed on any tier, so a downgraded user can still remove a key.
    pub async fn delete(&self, who: &Principal, provider: ProviderId) -> Result<(), CoreError> {
        let deleted = self.keys.delete(who.user_id, provider).await?;
        self.changed(who.user_id, provider).await;
        if deleted {
            tracing::info!(provider = %provider, user_id = %who.user_id, "provider key deleted");
            Ok(())
        } else {
            Err(key_not_found(provider))
        }
    }

    /// Tests the caller's stored key against the provider and records the outcome.
    pub async fn test(
        &self,
        who: &Principal,
        provider: ProviderId,
    ) -> Result<ProbeOutcome, CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        let stored = self
            .keys
            .get(who.user_id, provider)
            .await?
            .ok_or_else(|| key_not_found(provider))?;
        let key = ApiKey::from_secret(self.cipher.decrypt(&stored.ciphertext)?);
        let outcome = self
            .prober
            .probe(provider, &key, stored.metadata.endpoint.as_deref())
            .await?;
        self.keys
            .record_test(
                who.user_id,
                provider,
                &stored.ciphertext,
                Utc::now(),
                outcome.status,
            )
            .await?;
        tracing::info!(provider = %provider, status = outcome.status.as_str(), "provider key tested");
        Ok(outcome)
    }

    /// The caller's key counts: providers offered, configured, tested and valid, and the tier.
    pub async fn stats(&self, who: &Principal) -> Result<KeyVaultStats, CoreError> {
        let keys = self.keys.list(who.user_id).await?;
        Ok(KeyVaultStats {
            total_providers: ProviderId::ALL.len(),
            configured_providers: keys.iter().filter(|k| k.enabled).count(),
            tested_providers: keys
                .iter()
                .filter(|k| k.metadata.last_tested.is_some())
                .count(),
            valid_providers: keys
                .iter()
                .filter(|k| k.metadata.test_status == Some(TestStatus::Valid))
                .count(),
            user_tier: who.tier,
        })
    }

    /// The caller's own credential for `provider`, decrypted, if their tier allows BYOK and
    /// they stored an enabled key. `Ok(None)` means "use the system default". Cached (see the
    /// type's documentation, stale-if-error included); the tier is checked on every call.
    pub async fn resolve(
        &self,
        who: &Principal,
        provider: ProviderId,
    ) -> Result<Option<UserCredential>, CoreError> {
        if !who.tier.allows(Tier::BYOK_MINIMUM) {
            return Ok(None);
        }
        let slot = (who.user_id, provider);
        let generation = match self.cache.lookup(&slot) {
            Ok(cred) => {
                self.stats.0.fetch_add(1, Ordering::Relaxed);
                return Ok(cred);
            }
            Err(generation) => generation,
        };
        self.stats.1.fetch_add(1, Ordering::Relaxed);
        let stored = match self.keys.get(who.user_id, provider).await {
            Ok(stored) => {
                self.stale.answered();
                stored
            }
            Err(e) => {
                return match self.cache.stale(&slot) {
                    Some(cred) => {
                        self.stale.serving(StaleKind::Credential, &e);
                        Ok(cred)
                    }
                    None => Err(e.into()),
                };
            }
        };
        let cred = match stored {
            Some(stored) if stored.enabled => {
                let secret: SecretString = self.cipher.decrypt(&stored.ciphertext)?;
                Some(UserCredential {
                    provider,
                    key: ApiKey::from_secret(secret),
                    endpoint: stored.metadata.endpoint,
                })
            }
            _ => None,
        };
        self.cache.store(slot, cred.clone(), generation);
        Ok(cred)
    }
}

fn key_not_found(provider: ProviderId) -> CoreError {
    CoreError::NotFound {
        code: "key_not_found",
        message: format!("no {} key is stored", provider.display_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;

    use crate::testing::{AlwaysValid, MemKeys, ToyCipher as Rot};

    fn vault() -> KeyVault {
        KeyVault::new(
            Arc::new(MemKeys::default()),
            Arc::new(Rot),
            Arc::new(AlwaysValid),
        )
    }

    fn user(tier: Tier) -> Principal {
        Principal {
            user_id: UserId::new_random(),
            email: "u@example.com".into(),
            tier,
            token_id: None,
        }
    }

    fn add(p: ProviderId, key: &str) -> AddKey {
        AddKey {
            provider: p,
            key: key.into(),
            label: Some("mine".into()),
            endpoint: None,
        }
    }

    const OPENAI: &str = "sk-proj-0123456789abcdefghij";

    #[tokio::test]
    async fn free_tier_cannot_add_and_resolves_to_system() {
        let v = vault();
        let free = user(Tier::Free);
        let err = v
            .add(&free, add(ProviderId::Openai, OPENAI))
            .await
            .unwrap_err();
        assert!(matches!(err, CoreError::UpgradeRequired { .. }));
        assert!(
            v.resolve(&free, ProviderId::Openai)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn add_list_test_resolve_delete() {
        let v = vault();
        let u = user(Tier::Starter);
        v.add(&u, add(ProviderId::Openai, OPENAI)).await.unwrap();
        let listed = v.list(&u).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key_preview.as_str(), "sk-p...ghij");
        assert_eq!(listed[0].label.as_deref(), Some("mine"));
        let out = v.test(&u, ProviderId::Openai).await.unwrap();
        assert_eq!(out.status, TestStatus::Valid);
        let stats = v.stats(&u).await.unwrap();
        assert_eq!((stats.configured_providers, stats.valid_providers), (1, 1));
        let cred = v.resolve(&u, ProviderId::Openai).await.unwrap().unwrap();
        assert_eq!(cred.key.expose(), OPENAI);
        let other = user(Tier::Enterprise);
        assert!(v.list(&other).await.unwrap().is_empty());
        assert!(v.delete(&other, ProviderId::Openai).await.is_err());
        v.delete(&u, ProviderId::Openai).await.unwrap();
        assert!(
            v.resolve(&u, ProviderId::Openai).await.unwrap().is_none(),
            "a delete drops the cached credential at once"
        );
        assert!(matches!(
            v.delete(&u, ProviderId::Openai).await,
            Err(CoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn an_outage_uses_the_last_credential_but_never_a_deleted_one() {
        let keys = Arc::new(MemKeys::default());
        let stale = Arc::new(StaleIfError::new(Duration::from_secs(60)));
        // TTL zero: every resolution asks the store.
        let v = KeyVault::new(keys.clone(), Arc::new(Rot), Arc::new(AlwaysValid))
            .with_stale_if_error(stale.clone())
            .with_credential_ttl(Duration::ZERO);
        let (kept, deleted) = (user(Tier::Starter), user(Tier::Starter));
        for u in [&kept, &deleted] {
            v.add(u, add(ProviderId::Openai, OPENAI)).await.unwrap();
            assert!(v.resolve(u, ProviderId::Openai).await.unwrap().is_some());
        }
        v.delete(&deleted, ProviderId::Openai).await.unwrap();
        keys.set_failing(true);
        let cred = v.resolve(&kept, ProviderId::Openai).await.unwrap().unwrap();
        assert_eq!(cred.key.expose(), OPENAI);
        assert!(
            v.resolve(&deleted, ProviderId::Openai).await.is_err(),
            "a deleted key does not come back as a stale answer"
        );
        assert!(
            matches!(
                v.add(&kept, add(ProviderId::Openai, OPENAI)).await,
                Err(CoreError::Store(StoreError::Unavailable(_)))
            ),
            "writes fail"
        );
        assert_eq!(stale.served()[1].1, 1);
        let off = KeyVault::new(keys.clone(), Arc::new(Rot), Arc::new(AlwaysValid))
            .with_stale_if_error(Arc::new(StaleIfError::disabled()))
            .with_credential_ttl(Duration::ZERO);
        assert!(off.resolve(&kept, ProviderId::Openai).await.is_err());
    }

    #[tokio::test]
    async fn custom_needs_a_valid_endpoint() {
        let v = vault();
        let u = user(Tier::Professional);
        let mut req = add(ProviderId::Custom, "custom-key-123");
        assert!(v.add(&u, req_clone(&req)).await.is_err());
        req.endpoint = Some("ftp://x".into());
        assert!(v.add(&u, req_clone(&req)).await.is_err());
        req.endpoint = Some("https://user:pw@x.example".into());
        assert!(v.add(&u, req_clone(&req)).await.is_err());
        req.endpoint = Some("https://llm.example.com/v1/".into());
        v.add(&u, req).await.unwrap();
        let l = v.list(&u).await.unwrap();
        assert_eq!(l[0].endpoint.as_deref(), Some("https://llm.example.com/v1"));
    }

    fn req_clone(r: &AddKey) -> AddKey {
        AddKey {
            provider: r.provider,
            key: SecretString::from(r.key.expose_secret().to_owned()),
            label: r.label.clone(),
            endpoint: r.endpoint.clone(),
        }
    }

    #[tokio::test]
    async fn label_rules() {
        let v = vault();
        let u = user(Tier::Starter);
        let mut r = add(ProviderId::Openai, OPENAI);
        r.label = Some("x".repeat(101));
        assert!(v.add(&u, r).await.is_err());
    }
}
