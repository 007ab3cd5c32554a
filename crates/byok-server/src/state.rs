//! Application state: the adapters wired into the core services.

use std::sync::Arc;

use byok_core::ports::Authenticator;
use byok_core::services::{KeyVault, TokenService};
use byok_providers::{HttpKeyProber, ProbeOptions};
use byok_store::{Database, DbOptions};
use secrecy::ExposeSecret;

use crate::config::{ConfigError, Settings};

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub vault: KeyVault,
    pub tokens: Arc<TokenService>,
    /// Checks bearer credentials; gateway tokens today, a JWT verifier can sit beside it.
    pub authenticator: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    /// Connects to the database (without migrating) and wires the services.
    pub async fn build(settings: &Settings) -> Result<Self, ConfigError> {
        let db = Database::connect(
            settings.database_url.expose_secret(),
            &DbOptions {
                max_connections: settings.db_max_connections,
                ..DbOptions::default()
            },
        )
        .await
        .map_err(|e| ConfigError(format!("database: {}", error_chain(&e))))?;
        let cipher = Arc::new(settings.key_ring()?);
        let prober = HttpKeyProber::new(
            settings.catalogue.clone(),
            settings.target_policy.clone(),
            ProbeOptions {
                timeout: settings.probe_timeout,
                ..ProbeOptions::default()
            },
        )
        .map_err(|e| ConfigError(format!("HTTP client: {e}")))?;
        let shared = Arc::new(db.clone());
        let vault = KeyVault::new(shared.clone(), cipher, Arc::new(prober));
        let tokens = Arc::new(TokenService::new(
            shared.clone(),
            shared,
            settings.auth_cache_ttl,
        ));
        Ok(Self {
            db,
            vault,
            authenticator: tokens.clone(),
            tokens,
        })
    }
}

/// `error: cause: cause…`, for messages printed at start-up.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
