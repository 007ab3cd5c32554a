//! Keys: a toy cipher, a key store with its rotation side, a prober that accepts every key.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::fail::{Failing, lock};
use crate::domain::{ApiKey, NewStoredKey, ProviderId, StoredKey, TestStatus, UserId};
use crate::error::{CoreError, CryptoError, StoreError};
use crate::ports::{
    CiphertextRow, KeyProber, KeyRepository, KeyRotationRepository, ProbeOutcome, SecretCipher,
};

/// A reversible toy cipher: `enc:` + the reversed text. It also reads `old:` + the reversed
/// text, written by a key that is no longer the primary one ([`ToyCipher::old_token`]), so
/// rotation has something to do. Never for real secrets.
#[derive(Debug, Default, Clone, Copy)]
pub struct ToyCipher;

impl ToyCipher {
    /// `plaintext` as a token of the retired key: readable, but not current.
    pub fn old_token(plaintext: &str) -> String {
        format!("old:{}", plaintext.chars().rev().collect::<String>())
    }
}

impl SecretCipher for ToyCipher {
    fn encrypt(&self, p: &SecretString) -> Result<String, CryptoError> {
        Ok(format!(
            "enc:{}",
            p.expose_secret().chars().rev().collect::<String>()
        ))
    }
    fn decrypt(&self, t: &str) -> Result<SecretString, CryptoError> {
        t.strip_prefix("enc:")
            .or_else(|| t.strip_prefix("old:"))
            .map(|s| SecretString::from(s.chars().rev().collect::<String>()))
            .ok_or(CryptoError::Malformed)
    }
    fn is_current(&self, t: &str) -> bool {
        t.starts_with("enc:")
    }
}

/// Provider keys in memory ([`KeyRepository`] and [`KeyRotationRepository`]). While
/// [`MemKeys::set_failing`] is on, `upsert`, `get` and `delete` fail like a lost database.
#[derive(Debug, Default)]
pub struct MemKeys {
    rows: Mutex<HashMap<(UserId, ProviderId), StoredKey>>,
    failing: Failing,
}

impl MemKeys {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes reads and writes fail (`StoreError::Unavailable`), or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.set(failing);
    }

    /// Every stored key, ordered by id.
    pub fn all(&self) -> Vec<StoredKey> {
        let mut v: Vec<StoredKey> = self.lock().values().cloned().collect();
        v.sort_by_key(|k| k.id);
        v
    }

    fn check(&self) -> Result<(), StoreError> {
        self.failing.check()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(UserId, ProviderId), StoredKey>> {
        lock(&self.rows)
    }
}

#[async_trait]
impl KeyRepository for MemKeys {
    async fn upsert(&self, k: NewStoredKey) -> Result<(), StoreError> {
        self.check()?;
        let now = Utc::now();
        let mut rows = self.lock();
        let (id, created_at) = rows
            .get(&(k.user_id, k.provider))
            .map_or((Uuid::new_v4(), now), |old| (old.id, old.created_at));
        rows.insert(
            (k.user_id, k.provider),
            StoredKey {
                id,
                user_id: k.user_id,
                provider: k.provider,
                ciphertext: k.ciphertext,
                key_preview: k.key_preview,
                enabled: true,
                metadata: k.metadata,
                created_at,
                updated_at: now,
            },
        );
        Ok(())
    }
    async fn list(&self, user: UserId) -> Result<Vec<StoredKey>, StoreError> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|k| k.user_id == user)
            .cloned()
            .collect();
        v.sort_by_key(|k| k.provider);
        Ok(v)
    }
    async fn get(&self, u: UserId, p: ProviderId) -> Result<Option<StoredKey>, StoreError> {
        self.check()?;
        Ok(self.lock().get(&(u, p)).cloned())
    }
    async fn delete(&self, u: UserId, p: ProviderId) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self.lock().remove(&(u, p)).is_some())
    }
    async fn record_test(
        &self,
        u: UserId,
        p: ProviderId,
        c: &str,
        at: DateTime<Utc>,
        s: TestStatus,
    ) -> Result<bool, StoreError> {
        let mut m = self.lock();
        match m.get_mut(&(u, p)) {
            Some(k) if k.ciphertext == c => {
                k.metadata.last_tested = Some(at);
                k.metadata.test_status = Some(s);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl KeyRotationRepository for MemKeys {
    async fn ciphertext_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CiphertextRow>, StoreError> {
        Ok(self
            .all()
            .into_iter()
            .filter(|k| after.is_none_or(|a| k.id > a))
            .take(limit as usize)
            .map(|k| CiphertextRow {
                id: k.id,
                ciphertext: k.ciphertext,
            })
            .collect())
    }
    async fn replace_ciphertext(&self, id: Uuid, old: &str, new: &str) -> Result<bool, StoreError> {
        let mut m = self.lock();
        match m.values_mut().find(|k| k.id == id) {
            Some(k) if k.ciphertext == old => {
                k.ciphertext = new.to_string();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A [`KeyProber`] that finds every key valid without calling anyone.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysValid;

#[async_trait]
impl KeyProber for AlwaysValid {
    async fn probe(
        &self,
        _: ProviderId,
        _: &ApiKey,
        _: Option<&str>,
    ) -> Result<ProbeOutcome, CoreError> {
        Ok(ProbeOutcome {
            status: TestStatus::Valid,
            message: "ok".into(),
            details: serde_json::Value::Null,
        })
    }
}
