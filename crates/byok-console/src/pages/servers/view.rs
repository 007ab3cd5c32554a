//! What the servers pages share: a server as a row (its target summary, never a secret), the
//! upgrade callout, the id in the path, the confirmation page.

use byok_core::execution::{ExecutionServer, MASK, ServerType, mask_config, pinned_host_key};
use byok_core::{CoreError, Tier};
use serde_json::Value;
use uuid::Uuid;

/// The server id in a path (`None`: not an id, so no such server).
pub fn server_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

/// `s` with its first letter upper-case (the core's messages start lower-case).
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// How a server type is named on the pages.
pub fn type_label(kind: ServerType) -> &'static str {
    match kind {
        ServerType::Ssh => "SSH",
        ServerType::Docker => "Docker",
        ServerType::Kubernetes => "Kubernetes",
        ServerType::Local => "Local sandbox",
    }
}

/// What a server type is, in a sentence.
pub fn type_description(kind: ServerType) -> &'static str {
    match kind {
        ServerType::Ssh => "A machine you reach over SSH, with a key or a password.",
        ServerType::Docker => "Containers on a Docker-API engine (Docker or Podman).",
        ServerType::Kubernetes => "Pods in a namespace of a Kubernetes cluster.",
        ServerType::Local => "A sandbox on this service's own host.",
    }
}

/// The callout shown when the plan does not include execution servers.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub tier: String,
    pub required: String,
    pub url: String,
}

/// The callout for a tier refusal of the core (`None` for any other error).
pub fn upgrade_of(e: &CoreError, url: &str) -> Option<Upgrade> {
    match e {
        CoreError::UpgradeRequired { current, required } => Some(Upgrade {
            tier: current.as_str().into(),
            required: required.as_str().into(),
            url: url.into(),
        }),
        _ => None,
    }
}

/// The callout for `tier` when it is below what servers need.
pub fn upgrade_for(tier: Tier, url: &str) -> Option<Upgrade> {
    tier.require(Tier::BYOK_MINIMUM)
        .err()
        .and_then(|e| upgrade_of(&e, url))
}

/// A stored server as the pages show it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub kind_label: &'static str,
    /// Where it runs (`agent@build.example.com:22`), never a secret.
    pub target: String,
    /// A second line (sign-in method, namespace…).
    pub detail: String,
    pub workspace: String,
    pub is_default: bool,
    pub is_active: bool,
    pub status_label: &'static str,
    pub status_class: &'static str,
    pub last_tested: String,
    /// SSH: the trusted host-key fingerprint, if any.
    pub host_key: Option<String>,
    pub ssh: bool,
}

/// A public (non-secret) string field of a masked config.
fn public<'a>(config: &'a Value, field: &str) -> Option<&'a str> {
    config
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != MASK)
}

pub use crate::frame::{ConfirmPage, when};

/// A test status (`success`, `failed`, `error`) as a label and a CSS class.
pub fn status_of(s: Option<&str>) -> (&'static str, &'static str) {
    match s {
        None => ("Not tested", "none"),
        Some("success") => ("Connected", "success"),
        Some("failed") => ("Failed", "failed"),
        Some(_) => ("Error", "error"),
    }
}

impl Summary {
    pub fn of(s: &ExecutionServer) -> Self {
        let c = mask_config(&s.connection_config);
        let (target, detail) = match s.server_type {
            ServerType::Ssh => {
                let host = public(&c, "host").unwrap_or("?");
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                let port = c.get("port").and_then(Value::as_u64).unwrap_or(22);
                let user = public(&c, "username").unwrap_or("?");
                let method = match public(&c, "auth_method") {
                    Some("password") => "signs in with a password",
                    _ => "signs in with a key",
                };
                (format!("{user}@{host}:{port}"), method.to_string())
            }
            ServerType::Docker => {
                let image = public(&c, "image").unwrap_or("python:3.11-slim");
                let engine = public(&c, "endpoint").unwrap_or("the service's default engine");
                (image.to_string(), format!("on {engine}"))
            }
            ServerType::Kubernetes => {
                let url = public(&c, "cluster_url").unwrap_or("?");
                let ns = public(&c, "namespace").unwrap_or("default");
                (url.to_string(), format!("namespace {ns}"))
            }
            ServerType::Local => (
                "This service's host".to_string(),
                "sandboxed with bubblewrap".to_string(),
            ),
        };
        let (status_label, status_class) = status_of(s.test_status.as_deref());
        Self {
            id: s.id.to_string(),
            name: s.name.clone(),
            kind: s.server_type.as_str(),
            kind_label: type_label(s.server_type),
            target,
            detail,
            workspace: s.workspace_path.clone().unwrap_or_default(),
            is_default: s.is_default,
            is_active: s.is_active,
            status_label,
            status_class,
            last_tested: when(s.last_tested_at),
            host_key: pinned_host_key(&s.connection_config).map(str::to_owned),
            ssh: s.server_type == ServerType::Ssh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use byok_core::UserId;
    use serde_json::json;

    #[test]
    fn a_summary_never_shows_a_secret() {
        let now = chrono::Utc::now();
        let s = ExecutionServer {
            id: Uuid::new_v4(),
            user_id: UserId::new_random(),
            name: "box".into(),
            server_type: ServerType::Ssh,
            connection_config: json!({"host": "2001:db8::1", "port": 2222, "username": "agent",
                "auth_method": "password", "password": {"$sealed": "CANARY"},
                "host_key_fingerprint": "SHA256:abc"}),
            workspace_path: None,
            is_default: true,
            is_active: true,
            last_tested_at: Some(now),
            test_status: Some("failed".into()),
            created_at: now,
            updated_at: now,
        };
        let sum = Summary::of(&s);
        assert_eq!(sum.target, "agent@[2001:db8::1]:2222");
        assert_eq!(sum.host_key.as_deref(), Some("SHA256:abc"));
        assert_eq!(sum.status_class, "failed");
        assert!(!format!("{sum:?}").contains("CANARY"));
    }
}
