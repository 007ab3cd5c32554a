//! The per-user settings repository port.

use async_trait::async_trait;

use crate::domain::{UserId, UserSettings};
use crate::error::StoreError;

/// Per-user gateway settings.
#[async_trait]
pub trait SettingsRepository: Send + Sync + 'static {
    /// `None` when the user never saved settings (defaults apply).
    async fn get_settings(&self, user: UserId) -> Result<Option<UserSettings>, StoreError>;
    /// Inserts or replaces the user's settings.
    async fn put_settings(&self, user: UserId, settings: &UserSettings) -> Result<(), StoreError>;
}
