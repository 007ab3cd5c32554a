//! Users' settings.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::fail::lock;
use crate::domain::{UserId, UserSettings};
use crate::error::StoreError;
use crate::ports::SettingsRepository;

/// Users' settings in memory ([`SettingsRepository`]).
#[derive(Debug, Default)]
pub struct MemSettings {
    rows: Mutex<HashMap<UserId, UserSettings>>,
}

impl MemSettings {
    /// No one saved settings yet (everyone gets the defaults).
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl SettingsRepository for MemSettings {
    async fn get_settings(&self, user: UserId) -> Result<Option<UserSettings>, StoreError> {
        Ok(lock(&self.rows).get(&user).copied())
    }
    async fn put_settings(&self, user: UserId, settings: &UserSettings) -> Result<(), StoreError> {
        lock(&self.rows).insert(user, *settings);
        Ok(())
    }
}
