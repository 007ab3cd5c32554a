//! The execution server entity: its type, the stored record, and the rules for its name and
//! workspace path.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::UserId;
use crate::error::CoreError;

/// The kinds of execution server.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerType {
    Ssh,
    Local,
    Docker,
    Kubernetes,
}

impl ServerType {
    /// Every type, in the order pages offer them.
    pub const ALL: [ServerType; 4] = [
        ServerType::Ssh,
        ServerType::Docker,
        ServerType::Kubernetes,
        ServerType::Local,
    ];

    /// The lowercase name (`ssh`), as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerType::Ssh => "ssh",
            ServerType::Local => "local",
            ServerType::Docker => "docker",
            ServerType::Kubernetes => "kubernetes",
        }
    }

    /// The secret fields of this type's config (for `environment`, every value).
    pub(crate) fn secret_fields(self) -> &'static [&'static str] {
        match self {
            ServerType::Ssh => &["password", "private_key", "passphrase"],
            ServerType::Kubernetes => &["service_account_token", "kubeconfig"],
            ServerType::Docker => &["tls_ca", "tls_cert", "tls_key"],
            ServerType::Local => &[],
        }
    }
}

impl FromStr for ServerType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ssh" => Ok(Self::Ssh),
            "local" => Ok(Self::Local),
            "docker" => Ok(Self::Docker),
            "kubernetes" => Ok(Self::Kubernetes),
            _ => Err(CoreError::invalid(
                "invalid_server_type",
                "server_type must be ssh, local, docker or kubernetes",
            )),
        }
    }
}

/// A stored execution server (its config sealed).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionServer {
    pub id: Uuid,
    pub user_id: UserId,
    pub name: String,
    pub server_type: ServerType,
    /// Sealed: secret fields are `{"$sealed": token}`; never shown as is.
    pub connection_config: Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
    pub is_active: bool,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub test_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Validates a server name: 1–100 printable characters.
pub fn validate_name(name: &str) -> Result<String, CoreError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control) {
        return Err(CoreError::invalid(
            "invalid_name",
            "name must be 1 to 100 printable characters",
        ));
    }
    Ok(n.to_string())
}

/// Validates a workspace path: absolute, no NUL, at most 1024 bytes.
pub fn validate_workspace(path: &str) -> Result<String, CoreError> {
    let p = path.trim();
    if !p.starts_with('/')
        || p.len() > 1024
        || p.contains('\0')
        || p.contains("/../")
        || p.ends_with("/..")
    {
        return Err(CoreError::invalid(
            "invalid_workspace_path",
            "workspace_path must be an absolute path without '..'",
        ));
    }
    Ok(p.to_string())
}
