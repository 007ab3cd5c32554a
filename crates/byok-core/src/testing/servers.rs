//! Execution servers.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::fail::{Failing, lock};
use crate::domain::UserId;
use crate::error::StoreError;
use crate::execution::ExecutionServer;
use crate::ports::{NewServer, ServerChanges, ServerRepository};

/// Execution servers in memory ([`ServerRepository`]). Names are unique per user, a user has
/// at most one default, lists put the default first and then the newest, pages are ordered by
/// id and `replace_sealed_config` compares `updated_at` first, as the database does. While
/// [`MemServers::set_failing`] is on, every call fails like a lost database.
#[derive(Debug, Default)]
pub struct MemServers {
    rows: Mutex<Vec<ExecutionServer>>,
    failing: Failing,
}

impl MemServers {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (`StoreError::Unavailable`), or work again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.set(failing);
    }

    /// Every stored server, of every user, ordered by id.
    pub fn all(&self) -> Vec<ExecutionServer> {
        let mut v = lock(&self.rows).clone();
        v.sort_by_key(|s| s.id);
        v
    }
}

fn name_taken() -> StoreError {
    StoreError::Conflict("execution_servers (user_id, name) is unique".into())
}

/// Clears `user`'s default, but on `keep`.
fn clear_default(rows: &mut [ExecutionServer], user: UserId, keep: Uuid, at: DateTime<Utc>) {
    for s in rows
        .iter_mut()
        .filter(|s| s.user_id == user && s.is_default && s.id != keep)
    {
        s.is_default = false;
        s.updated_at = at;
    }
}

#[async_trait]
impl ServerRepository for MemServers {
    async fn create_server(&self, new: NewServer) -> Result<ExecutionServer, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        if rows
            .iter()
            .any(|s| s.user_id == new.user_id && s.name == new.name)
        {
            return Err(name_taken());
        }
        let now = Utc::now();
        let server = ExecutionServer {
            id: Uuid::new_v4(),
            user_id: new.user_id,
            name: new.name,
            server_type: new.server_type,
            connection_config: new.connection_config,
            workspace_path: new.workspace_path,
            is_default: new.is_default,
            is_active: true,
            last_tested_at: None,
            test_status: None,
            created_at: now,
            updated_at: now,
        };
        if server.is_default {
            clear_default(&mut rows, server.user_id, server.id, now);
        }
        rows.push(server.clone());
        Ok(server)
    }
    async fn count_servers(&self, user: UserId) -> Result<u64, StoreError> {
        self.failing.check()?;
        let n = lock(&self.rows)
            .iter()
            .filter(|s| s.user_id == user)
            .count();
        Ok(n as u64)
    }
    async fn list_servers(&self, user: UserId) -> Result<Vec<ExecutionServer>, StoreError> {
        self.failing.check()?;
        let mut v: Vec<_> = lock(&self.rows)
            .iter()
            .filter(|s| s.user_id == user)
            .cloned()
            .collect();
        v.sort_by_key(|s| (!s.is_default, std::cmp::Reverse(s.created_at)));
        Ok(v)
    }
    async fn get_server(
        &self,
        user: UserId,
        id: Uuid,
    ) -> Result<Option<ExecutionServer>, StoreError> {
        self.failing.check()?;
        let rows = lock(&self.rows);
        Ok(rows
            .iter()
            .find(|s| s.user_id == user && s.id == id)
            .cloned())
    }
    async fn update_server(
        &self,
        user: UserId,
        id: Uuid,
        changes: ServerChanges,
    ) -> Result<Option<ExecutionServer>, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        if let Some(name) = &changes.name
            && rows
                .iter()
                .any(|s| s.user_id == user && s.id != id && &s.name == name)
        {
            return Err(name_taken());
        }
        let Some(s) = rows.iter_mut().find(|s| s.user_id == user && s.id == id) else {
            return Ok(None);
        };
        if let Some(name) = changes.name {
            s.name = name;
        }
        if let Some(config) = changes.connection_config {
            s.connection_config = config;
        }
        if let Some(path) = changes.workspace_path {
            s.workspace_path = path;
        }
        if let Some(active) = changes.is_active {
            s.is_active = active;
        }
        s.updated_at = Utc::now();
        Ok(Some(s.clone()))
    }
    async fn set_default(&self, user: UserId, id: Uuid, default: bool) -> Result<bool, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        let now = Utc::now();
        if !rows.iter().any(|s| s.user_id == user && s.id == id) {
            return Ok(false);
        }
        if default {
            clear_default(&mut rows, user, id, now);
        }
        for s in rows.iter_mut().filter(|s| s.id == id) {
            s.is_default = default;
            s.updated_at = now;
        }
        Ok(true)
    }
    async fn delete_server(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        let before = rows.len();
        rows.retain(|s| !(s.user_id == user && s.id == id));
        Ok(rows.len() < before)
    }
    async fn server_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<ExecutionServer>, StoreError> {
        self.failing.check()?;
        Ok(self
            .all()
            .into_iter()
            .filter(|s| after.is_none_or(|a| s.id > a))
            .take(limit as usize)
            .collect())
    }
    async fn replace_sealed_config(
        &self,
        id: Uuid,
        seen_updated_at: DateTime<Utc>,
        config: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        match rows.iter_mut().find(|s| s.id == id) {
            Some(s) if s.updated_at == seen_updated_at => {
                s.connection_config = config.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn record_server_test(
        &self,
        user: UserId,
        id: Uuid,
        at: DateTime<Utc>,
        status: &str,
    ) -> Result<bool, StoreError> {
        self.failing.check()?;
        let mut rows = lock(&self.rows);
        match rows.iter_mut().find(|s| s.user_id == user && s.id == id) {
            Some(s) => {
                s.last_tested_at = Some(at);
                s.test_status = Some(status.into());
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
