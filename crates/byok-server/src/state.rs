//! Application state: the adapters wired into the core services.

use std::sync::Arc;

use byok_core::ports::{Authenticator, UsageSink};
use byok_core::routing::ModelRouter;
use byok_core::services::{Gateway, KeyVault, ServerRegistry, TokenService};
use byok_providers::upstream::{UpstreamClient, UpstreamOptions};
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
    pub gateway: Arc<Gateway>,
    pub servers: ServerRegistry,
    pub upstream: Arc<UpstreamClient>,
    pub usage: Arc<dyn UsageSink>,
    /// Largest accepted request body on `/v1/*`.
    pub max_body_bytes: usize,
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
        let cipher: Arc<dyn byok_core::ports::SecretCipher> = Arc::new(settings.key_ring()?);
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
        let mut backends: Vec<Arc<dyn byok_core::execution::ExecutionBackend>> = vec![
            Arc::new(byok_exec::SshBackend::new(
                settings.target_policy.clone(),
                byok_exec::SshOptions::default(),
            )),
            Arc::new(byok_exec::KubernetesBackend::new(
                settings.target_policy.clone(),
            )),
            Arc::new(byok_exec::DockerBackend::new(
                settings.target_policy.clone(),
                byok_exec::DockerOptions {
                    allowed_sockets: settings.docker_sockets.clone(),
                    allow_plain_tcp: settings.docker_allow_plain_tcp,
                    ..byok_exec::DockerOptions::default()
                },
            )),
        ];
        if settings.allow_local_execution {
            tracing::warn!(
                "BYOK_ALLOW_LOCAL_EXECUTION is on: enterprise users can run commands on this host"
            );
            backends.push(Arc::new(byok_exec::LocalBackend));
        }
        let servers = ServerRegistry::new(shared.clone(), cipher.clone(), backends);
        let vault = KeyVault::new(shared.clone(), cipher, Arc::new(prober))
            .with_credential_ttl(settings.credential_ttl);
        let tokens = Arc::new(TokenService::new(
            shared.clone(),
            shared.clone(),
            settings.auth_cache_ttl,
        ));
        let gateway = Arc::new(Gateway::new(
            vault.clone(),
            ModelRouter::new(settings.model_aliases.clone()),
            settings.system.clone(),
            shared.clone(),
            settings.credential_ttl,
        ));
        let upstream = UpstreamClient::new(
            settings.catalogue.clone(),
            settings.target_policy.clone(),
            UpstreamOptions {
                connect_timeout: settings.upstream_connect_timeout,
                idle_timeout: settings.upstream_idle_timeout,
                request_timeout: settings.upstream_timeout,
                max_stream: settings.upstream_max_stream,
            },
            settings.system_base_url.clone(),
        )
        .map_err(|e| ConfigError(format!("HTTP client: {e}")))?;
        let (usage, _writer) = crate::usage::start(shared);
        Ok(Self {
            db,
            vault,
            authenticator: tokens.clone(),
            tokens,
            gateway,
            servers,
            upstream: Arc::new(upstream),
            usage,
            max_body_bytes: settings.max_body_bytes,
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
