//! The execution-server repository port.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::UserId;
use crate::error::StoreError;
use crate::execution::server::{ExecutionServer, ServerType};

/// A new execution server (config already sealed).
#[derive(Debug, Clone)]
pub struct NewServer {
    pub user_id: UserId,
    pub name: String,
    pub server_type: ServerType,
    pub connection_config: serde_json::Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
}

/// Changes to an execution server; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ServerChanges {
    pub name: Option<String>,
    pub connection_config: Option<serde_json::Value>,
    pub workspace_path: Option<Option<String>>,
    pub is_active: Option<bool>,
}

/// Users' execution servers (`execution_servers`).
#[async_trait]
pub trait ServerRepository: Send + Sync + 'static {
    /// Inserts the server; when `is_default`, clears the user's other default in the same
    /// transaction. MUST return [`StoreError::Conflict`] when the user has a server of that name.
    async fn create_server(&self, server: NewServer) -> Result<ExecutionServer, StoreError>;
    /// How many servers the user has (one cheap count, for the per-user cap).
    async fn count_servers(&self, user: UserId) -> Result<u64, StoreError>;
    /// The user's servers, the default first, then newest first.
    async fn list_servers(&self, user: UserId) -> Result<Vec<ExecutionServer>, StoreError>;
    /// The user's server `id`; `None` when it does not exist for this user.
    async fn get_server(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<Option<ExecutionServer>, StoreError>;
    /// Applies `changes`; `None` when the server does not exist for this user. MUST return
    /// [`StoreError::Conflict`] on a duplicate name.
    async fn update_server(
        &self,
        user: UserId,
        id: Uuid,
        changes: ServerChanges,
    ) -> Result<Option<ExecutionServer>, StoreError>;
    /// Makes the server the user's only default (or clears its flag), in one transaction;
    /// the database guarantees at most one default per user. `false` if it does not exist.
    async fn set_default(&self, user: UserId, id: Uuid, default: bool) -> Result<bool, StoreError>;
    /// Deletes the user's server `id`. `false` if it does not exist for this user.
    async fn delete_server(&self, user: UserId, id: Uuid) -> Result<bool, StoreError>;
    /// Up to `limit` servers of every user with `id > after`, ordered by id (keyset
    /// pagination, for key rotation).
    async fn server_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ExecutionServer>, StoreError>;
    /// Replaces the stored connection config only if the server was not updated since
    /// `seen_updated_at` (compare-and-swap; `updated_at` is left as it was). `false` if it
    /// changed or vanished.
    async fn replace_sealed_config(
        &self,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
        config: &serde_json::Value,
    ) -> Result<bool, StoreError>;
    /// Stores a connection-test result. `false` if the server does not exist for this user.
    async fn record_server_test(
        &self,
        user: UserId,
        id: Uuid,
        at: DateTime<Utc>,
        status: &str,
    ) -> Result<bool, StoreError>;
}
