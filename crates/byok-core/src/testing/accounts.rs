//! An identity provider's accounts by subject (the [`TierSource`] port), as an administrator
//! changes them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::fail::{Failing, lock};
use crate::domain::Tier;
use crate::error::CoreError;
use crate::ports::{ExternalAccount, TierSource};

/// Accounts by subject; an unknown subject has no account (deleted). While
/// [`MemAccounts::set_failing`] is on, the provider cannot be asked (`Unavailable`).
#[derive(Debug, Default)]
pub struct MemAccounts {
    accounts: Mutex<HashMap<String, ExternalAccount>>,
    reads: AtomicUsize,
    failing: Failing,
}

impl MemAccounts {
    /// No account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or changes the account of `subject`.
    pub fn set(&self, subject: &str, enabled: bool, tier: Option<Tier>) {
        lock(&self.accounts).insert(subject.into(), ExternalAccount { enabled, tier });
    }

    /// Deletes the account of `subject`.
    pub fn remove(&self, subject: &str) {
        lock(&self.accounts).remove(subject);
    }

    /// Makes every read fail like an unreachable provider, or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.set(failing);
    }

    /// How many times an account was read.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    fn read(&self, subject: &str) -> Result<Option<ExternalAccount>, CoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.failing.check().map_err(|e| CoreError::Unavailable {
            code: "identity_provider_unavailable",
            message: e.to_string(),
        })?;
        Ok(lock(&self.accounts).get(subject).copied())
    }
}

#[async_trait]
impl TierSource for MemAccounts {
    async fn tier(&self, subject: &str) -> Result<Option<Tier>, CoreError> {
        Ok(self.read(subject)?.and_then(|a| a.tier))
    }

    async fn account(&self, subject: &str) -> Result<Option<ExternalAccount>, CoreError> {
        self.read(subject)
    }
}
