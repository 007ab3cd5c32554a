//! Provider keys in Keycloak user attributes, in the legacy service's layout.
//!
//! Keycloak's user update replaces the whole attribute map and has no version check. Within
//! this process every write for a user is serialised (one lock per user), reads the current
//! representation, changes only this service's attributes (`byok_{provider}_*`), writes it
//! back whole, and re-reads to verify. Across replicas two writers can still interleave
//! between read and write (the later write wins for the attributes both touched; attributes
//! of other providers survive only if the later writer had read them): the docs say so.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use byok_core::ports::{CiphertextRow, KeyRepository, KeyRotationRepository};
use byok_core::services::LegacyKey;
use byok_core::{
    KeyMetadata, KeyPreview, NewStoredKey, ProviderId, StoreError, StoredKey, TestStatus, UserId,
    parse_lenient_time,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{AdminClient, KeycloakError, UserRepresentation};

/// The attribute names of one provider, in the legacy layout (plus `_preview`, so listing
/// never decrypts).
pub fn legacy_attribute_names(provider: ProviderId) -> [String; 7] {
    let p = provider.as_str();
    [
        format!("byok_{p}_key"),
        format!("byok_{p}_label"),
        format!("byok_{p}_added_date"),
        format!("byok_{p}_endpoint"),
        format!("byok_{p}_last_tested"),
        format!("byok_{p}_test_status"),
        format!("byok_{p}_preview"),
    ]
}

fn store_err(e: KeycloakError) -> StoreError {
    match e {
        KeycloakError::Conflict(m) => StoreError::Conflict(m),
        other => StoreError::Unavailable(Box::new(other)),
    }
}

/// A stable id for (user, provider): the store has no row ids of its own.
fn key_id(user: UserId, provider: ProviderId) -> Uuid {
    Uuid::new_v5(&user.0, provider.as_str().as_bytes())
}

fn set(attrs: &mut BTreeMap<String, Vec<String>>, name: &str, value: Option<String>) {
    match value {
        Some(v) if !v.is_empty() => {
            attrs.insert(name.to_string(), vec![v]);
        }
        _ => {
            attrs.remove(name);
        }
    }
}

fn first(attrs: &BTreeMap<String, Vec<String>>, name: &str) -> Option<String> {
    attrs.get(name).and_then(|v| v.first()).cloned()
}

fn stored_key(
    user: UserId,
    provider: ProviderId,
    attrs: &BTreeMap<String, Vec<String>>,
) -> Option<StoredKey> {
    let [key, label, added, endpoint, tested, status, preview] = legacy_attribute_names(provider);
    let ciphertext = first(attrs, &key)?;
    let added_date = first(attrs, &added).and_then(|t| parse_lenient_time(&t));
    let at = added_date.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    Some(StoredKey {
        id: key_id(user, provider),
        user_id: user,
        provider,
        ciphertext,
        key_preview: KeyPreview::from_stored(
            first(attrs, &preview).unwrap_or_else(|| "****".into()),
        ),
        enabled: true,
        metadata: KeyMetadata {
            label: first(attrs, &label),
            added_date,
            endpoint: first(attrs, &endpoint),
            last_tested: first(attrs, &tested).and_then(|t| parse_lenient_time(&t)),
            test_status: first(attrs, &status).and_then(|s| s.parse::<TestStatus>().ok()),
        },
        created_at: at,
        updated_at: at,
    })
}

/// Every key stored in the realm's user attributes (users paged 200 at a time).
async fn realm_keys(admin: &AdminClient) -> Result<Vec<StoredKey>, KeycloakError> {
    let mut out = Vec::new();
    let mut first_index = 0;
    loop {
        let page = admin.list_users(first_index, 200).await?;
        let n = page.len();
        for rep in page {
            let Some(user) = rep.id().and_then(|i| Uuid::parse_str(i).ok()).map(UserId) else {
                continue;
            };
            let attrs = rep.attributes();
            out.extend(
                ProviderId::ALL
                    .into_iter()
                    .filter_map(|p| stored_key(user, p, &attrs)),
            );
        }
        if n < 200 {
            return Ok(out);
        }
        first_index += 200;
    }
}

/// The realm's keys as legacy rows, for `import-legacy`.
pub async fn legacy_keys_in_realm(admin: &AdminClient) -> Result<Vec<LegacyKey>, KeycloakError> {
    Ok(realm_keys(admin)
        .await?
        .into_iter()
        .map(|k| LegacyKey {
            user_ref: k.user_id.0.to_string(),
            provider: k.provider.as_str().to_string(),
            ciphertext: k.ciphertext,
            enabled: true,
            metadata: k.metadata,
        })
        .collect())
}

/// `KeyRepository` on Keycloak user attributes.
pub struct KeycloakKeyStore {
    admin: Arc<AdminClient>,
    locks: Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
    /// Filled by `ciphertext_page` for `replace_ciphertext` (rotation pages first).
    rows: Mutex<HashMap<Uuid, (UserId, ProviderId)>>,
}

impl std::fmt::Debug for KeycloakKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakKeyStore").finish_non_exhaustive()
    }
}

impl KeycloakKeyStore {
    pub fn new(admin: Arc<AdminClient>) -> Self {
        Self {
            admin,
            locks: Mutex::new(HashMap::new()),
            rows: Mutex::new(HashMap::new()),
        }
    }

    fn lock_for(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.len() > 10_000 {
            // Drop locks nobody holds.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(user).or_default().clone()
    }

    async fn read(&self, user: UserId) -> Result<Option<UserRepresentation>, StoreError> {
        match self.admin.get_user(&user.0.to_string()).await {
            Ok(u) => Ok(Some(u)),
            Err(KeycloakError::NotFound) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Read, change this service's attributes, write whole, re-read and check. `change`
    /// returns `false` to write nothing; `check` tells whether the re-read shows the write.
    async fn modify(
        &self,
        user: UserId,
        change: impl FnOnce(&mut BTreeMap<String, Vec<String>>) -> bool,
        check: impl FnOnce(&BTreeMap<String, Vec<String>>) -> bool,
    ) -> Result<bool, StoreError> {
        let lock = self.lock_for(user);
        let _held = lock.lock().await;
        let Some(mut rep) = self.read(user).await? else {
            return Err(StoreError::Conflict("no such Keycloak user".into()));
        };
        let mut attrs = rep.attributes();
        if !change(&mut attrs) {
            return Ok(false);
        }
        rep.set_attributes(attrs);
        let id = user.0.to_string();
        self.admin.put_user(&id, &rep).await.map_err(store_err)?;
        let after = self
            .read(user)
            .await?
            .map(|u| u.attributes())
            .unwrap_or_default();
        if !check(&after) {
            return Err(StoreError::Conflict(
                "the Keycloak user changed during the write; try again".into(),
            ));
        }
        Ok(true)
    }
}

#[async_trait]
impl KeyRepository for KeycloakKeyStore {
    async fn upsert(&self, key: NewStoredKey) -> Result<(), StoreError> {
        let [k, label, added, endpoint, tested, status, preview] =
            legacy_attribute_names(key.provider);
        let ciphertext = key.ciphertext.clone();
        let added_date = key.metadata.added_date.unwrap_or_else(Utc::now);
        let k2 = k.clone();
        self.modify(
            key.user_id,
            |attrs| {
                set(attrs, &k, Some(key.ciphertext.clone()));
                set(attrs, &label, key.metadata.label.clone());
                set(attrs, &added, Some(added_date.to_rfc3339()));
                set(attrs, &endpoint, key.metadata.endpoint.clone());
                set(
                    attrs,
                    &tested,
                    key.metadata.last_tested.map(|t| t.to_rfc3339()),
                );
                set(
                    attrs,
                    &status,
                    key.metadata.test_status.map(|s| s.as_str().to_string()),
                );
                set(attrs, &preview, Some(key.key_preview.as_str().to_string()));
                true
            },
            |after| first(after, &k2).as_deref() == Some(ciphertext.as_str()),
        )
        .await
        .map(|_| ())
    }

    async fn list(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let Some(rep) = self.read(user).await? else {
            return Ok(Vec::new());
        };
        let attrs = rep.attributes();
        let mut keys: Vec<StoredKey> = ProviderId::ALL
            .into_iter()
            .filter_map(|p| stored_key(user, p, &attrs))
            .collect();
        keys.sort_by(|a, b| a.provider.as_str().cmp(b.provider.as_str()));
        Ok(keys)
    }

    async fn get(
        &self,
        user: UserId,
        provider: ProviderId,
    ) -> Result<Option<StoredKey>, StoreError> {
        Ok(self
            .read(user)
            .await?
            .and_then(|rep| stored_key(user, provider, &rep.attributes())))
    }

    async fn delete(&self, user: UserId, provider: ProviderId) -> Result<bool, StoreError> {
        let names = legacy_attribute_names(provider);
        let key_name = names[0].clone();
        if self.read(user).await?.is_none() {
            return Ok(false);
        }
        self.modify(
            user,
            |attrs| {
                let had = attrs.contains_key(&names[0]);
                for n in &names {
                    attrs.remove(n);
                }
                had
            },
            |after| !after.contains_key(&key_name),
        )
        .await
    }

    async fn record_test(
        &self,
        user: UserId,
        provider: ProviderId,
        ciphertext: &str,
        at: DateTime<Utc>,
        status: TestStatus,
    ) -> Result<bool, StoreError> {
        let [k, _, _, _, tested, status_name, _] = legacy_attribute_names(provider);
        let expected = ciphertext.to_string();
        let k2 = k.clone();
        let expected2 = expected.clone();
        match self
            .modify(
                user,
                |attrs| {
                    if first(attrs, &k).as_deref() != Some(expected.as_str()) {
                        return false;
                    }
                    set(attrs, &tested, Some(at.to_rfc3339()));
                    set(attrs, &status_name, Some(status.as_str().to_string()));
                    true
                },
                |after| first(after, &k2).as_deref() == Some(expected2.as_str()),
            )
            .await
        {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }
}

#[async_trait]
impl KeyRotationRepository for KeycloakKeyStore {
    async fn ciphertext_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CiphertextRow>, StoreError> {
        // Keycloak has no order by our ids: one pass over the realm, sorted here. Fine for the
        // occasional rotation; the cost is one listing of the realm per page.
        let mut all: Vec<(Uuid, String, UserId, ProviderId)> = realm_keys(&self.admin)
            .await
            .map_err(store_err)?
            .into_iter()
            .map(|k| (k.id, k.ciphertext, k.user_id, k.provider))
            .collect();
        all.sort_by_key(|(id, ..)| *id);
        let mut rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(all
            .into_iter()
            .filter(|(id, ..)| after.is_none_or(|a| *id > a))
            .take(limit as usize)
            .map(|(id, ciphertext, user, p)| {
                rows.insert(id, (user, p));
                CiphertextRow { id, ciphertext }
            })
            .collect())
    }

    async fn replace_ciphertext(&self, id: Uuid, old: &str, new: &str) -> Result<bool, StoreError> {
        let Some((user, provider)) = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
        else {
            return Ok(false);
        };
        let k = legacy_attribute_names(provider)[0].clone();
        let (old, new) = (old.to_string(), new.to_string());
        let (k2, new2) = (k.clone(), new.clone());
        match self
            .modify(
                user,
                |attrs| {
                    if first(attrs, &k).as_deref() != Some(old.as_str()) {
                        return false;
                    }
                    set(attrs, &k, Some(new));
                    true
                },
                |after| first(after, &k2).as_deref() == Some(new2.as_str()),
            )
            .await
        {
            Err(StoreError::Conflict(_)) => Ok(false),
            other => other,
        }
    }
}
