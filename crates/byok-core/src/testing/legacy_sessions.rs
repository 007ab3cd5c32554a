//! The legacy front end's session store and an identity provider's directory, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::fail::lock;
use crate::error::CoreError;
use crate::ports::{DirectoryAccount, IdentityDirectory, LegacySession, LegacySessions};

fn unavailable(what: &str) -> CoreError {
    CoreError::Unavailable {
        code: "unavailable",
        message: format!("{what} is down"),
    }
}

/// Session documents by token ([`LegacySessions`]), read as the Redis adapter reads them
/// (through [`LegacySession::from_json`]); counts reads. While [`Self::set_failing`] is on,
/// every read is [`CoreError::Unavailable`].
#[derive(Debug, Default)]
pub struct MemLegacySessions {
    docs: Mutex<HashMap<String, Vec<u8>>>,
    reads: AtomicU64,
    failing: AtomicBool,
}

impl MemLegacySessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `doc` (the legacy backend's JSON) under `token`.
    pub fn put(&self, token: &str, doc: &str) {
        lock(&self.docs).insert(token.to_string(), doc.as_bytes().to_vec());
    }

    /// Removes the session (signed out, or expired).
    pub fn remove(&self, token: &str) {
        lock(&self.docs).remove(token);
    }

    /// How many times the store was read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

#[async_trait]
impl LegacySessions for MemLegacySessions {
    async fn session(&self, token: &SecretString) -> Result<Option<LegacySession>, CoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(unavailable("the session store"));
        }
        Ok(lock(&self.docs)
            .get(token.expose_secret())
            .and_then(|d| LegacySession::from_json(d)))
    }
}

/// An identity provider's accounts by email ([`IdentityDirectory`]); counts look-ups. While
/// [`Self::set_failing`] is on, every look-up is [`CoreError::Unavailable`].
#[derive(Debug, Default)]
pub struct MemDirectory {
    accounts: Mutex<Vec<(String, DirectoryAccount)>>,
    lookups: AtomicU64,
    failing: AtomicBool,
}

impl MemDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an account with `email`.
    pub fn add(&self, email: &str, account: DirectoryAccount) {
        lock(&self.accounts).push((email.to_string(), account));
    }

    /// Replaces what is known of the account with `subject` (enabled, tier, …).
    pub fn update(&self, subject: &str, f: impl FnOnce(&mut DirectoryAccount)) {
        if let Some((_, a)) = lock(&self.accounts)
            .iter_mut()
            .find(|(_, a)| a.subject == subject)
        {
            f(a);
        }
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

#[async_trait]
impl IdentityDirectory for MemDirectory {
    async fn accounts_by_email(&self, email: &str) -> Result<Vec<DirectoryAccount>, CoreError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(unavailable("the identity provider"));
        }
        Ok(lock(&self.accounts)
            .iter()
            .filter(|(e, _)| e.eq_ignore_ascii_case(email))
            .map(|(_, a)| a.clone())
            .collect())
    }
}
