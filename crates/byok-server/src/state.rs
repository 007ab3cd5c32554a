//! Application state: the adapters wired into the core services.

use std::sync::Arc;

use byok_core::ports::{Authenticator, KeyRotationRepository, UsageSink};
use byok_core::routing::ModelRouter;
use byok_core::services::{
    ChainAuthenticator, ExternalAuthenticator, KeyVault, LegacySessionAuthenticator, RouteResolver,
    ServerRegistry, StaleIfError, TokenService,
};
use byok_providers::upstream::{UpstreamClient, UpstreamOptions};
use byok_providers::{HttpKeyProber, ProbeOptions};
use byok_store::{Database, DbOptions};
use secrecy::ExposeSecret;

use crate::config::{AuthMode, ConfigError, KeyStoreKind, Settings};
use crate::error::error_chain;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub vault: KeyVault,
    /// Where provider keys live (the database, or Keycloak attributes).
    pub keys: Arc<dyn KeyRotationRepository>,
    pub tokens: Arc<TokenService>,
    /// Checks bearer credentials; gateway tokens today, a JWT verifier can sit beside it.
    pub authenticator: Arc<dyn Authenticator>,
    /// The identity provider's token checks (Keycloak mode), to forget a changed user.
    pub external: Option<Arc<ExternalAuthenticator>>,
    /// The legacy front end's `session_token` cookie, when `BYOK_LEGACY_SESSION_REDIS_URL`
    /// is set (used on `/api/v1/*` only, and only without `Authorization`/`x-api-key`).
    pub legacy_sessions: Option<Arc<LegacySessionAuthenticator>>,
    /// Model → route and credential, per request (with the settings and credential caches).
    pub routes: Arc<RouteResolver>,
    pub servers: ServerRegistry,
    pub upstream: Arc<UpstreamClient>,
    pub usage: Arc<dyn UsageSink>,
    /// The orchestrator, when `BRIGADE_URL` is set.
    pub orchestrator: Option<Arc<dyn byok_core::ports::Orchestrator>>,
    /// Largest accepted request body on `/v1/*`.
    pub max_body_bytes: usize,
    /// Concurrent LLM requests per user, in this process.
    pub in_flight: Arc<byok_core::services::ConcurrencyLimit>,
    /// Answers buffered to be translated: the cap of one, the budget of all.
    pub response_budget: Arc<crate::gateway::ResponseBudget>,
    /// The usage writer, flushed at shutdown.
    pub usage_writer: Arc<crate::usage::UsageWriter>,
    /// Set when a shutdown signal arrived: `/readyz` answers 503 so load balancers drain.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the database answers (reported by `/readyz` and metrics; never fails readiness).
    pub db_health: Arc<crate::db_health::DbHealth>,
    /// Stale-if-error: the bound and counters shared by every cache of the hot path.
    pub stale: Arc<byok_core::services::StaleIfError>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `BYOK_METRICS_TOKEN`: required on `/metrics` when set.
    pub metrics_token: Option<secrecy::SecretString>,
    /// Request limits (policy) and their counters (Redis when `REDIS_URL` is set).
    pub rate_limits: Arc<byok_core::services::RateLimits>,
    pub limiter: Arc<dyn byok_core::ports::RateLimiter>,
    /// The shared counters, when configured (their fallback count is exported in metrics).
    pub redis: Option<Arc<byok_store::RedisRateLimiter>>,
    /// Console sessions and sign-in links.
    pub sessions: byok_core::services::SessionService,
    /// Account administration and the service figures (the console and the CLI).
    pub admin: byok_core::services::Administration,
    /// The web console's state (mounted at `/`).
    pub console: byok_console::Console,
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
            let local = byok_exec::LocalBackend::new(settings.local_sandbox.clone());
            // Never a silent fallback: no working sandbox, no start.
            local.check().await.map_err(|why| {
                ConfigError(format!(
                    "BYOK_ALLOW_LOCAL_EXECUTION is on, but {why}; fix the sandbox or turn local \
                     execution off"
                ))
            })?;
            tracing::warn!(
                uid = settings.local_sandbox.uid,
                "BYOK_ALLOW_LOCAL_EXECUTION is on: enterprise users can run commands on this host, \
                 sandboxed with bubblewrap"
            );
            backends.push(Arc::new(local));
        }
        let redis = match &settings.redis_url {
            Some(url) => {
                Some(byok_store::RedisRateLimiter::new(url.expose_secret()).map_err(ConfigError)?)
            }
            None => None,
        };
        let limiter: Arc<dyn byok_core::ports::RateLimiter> = match &redis {
            Some(r) => r.clone(),
            None => Arc::new(byok_core::services::LocalRateLimiter::new()),
        };
        // Execution-server operations are counted by the same limiter as requests: shared
        // across replicas when Redis is configured.
        let servers = ServerRegistry::new(shared.clone(), cipher.clone(), backends)
            .with_rate_limiter(limiter.clone())
            .with_max_servers_per_user(settings.max_servers_per_user);
        let admin = match &settings.keycloak {
            Some(k) => byok_keycloak::AdminClient::new(k.clone())
                .map_err(|e| ConfigError(e.to_string()))?
                .map(Arc::new),
            None => None,
        };
        let keys: Arc<dyn KeyRotationRepository> = match (settings.key_store, &admin) {
            (KeyStoreKind::Keycloak, Some(admin)) => {
                Arc::new(byok_keycloak::KeycloakKeyStore::new(admin.clone()))
            }
            (KeyStoreKind::Keycloak, None) => {
                return Err(ConfigError(
                    "BYOK_KEY_STORE=keycloak needs KEYCLOAK_CLIENT_SECRET".into(),
                ));
            }
            (KeyStoreKind::Database, _) => shared.clone(),
        };
        // Changes made here are announced to the other replicas (PostgreSQL NOTIFY; a no-op
        // on SQLite); `listen_invalidations` applies theirs.
        let notifier: Arc<dyn byok_core::ports::ChangeNotifier> = shared.clone();
        // While the database cannot be read, the caches below answer with what they last read,
        // up to this age (invalidated entries excepted).
        let stale = Arc::new(StaleIfError::new(settings.stale_if_error));
        let vault = KeyVault::new(keys.clone(), cipher, Arc::new(prober))
            .with_stale_if_error(stale.clone())
            .with_credential_ttl(settings.credential_ttl)
            .with_notifier(notifier.clone());
        let mut token_service =
            TokenService::new(shared.clone(), shared.clone(), settings.auth_cache_ttl)
                .with_stale_if_error(stale.clone())
                .with_notifier(notifier.clone())
                .with_default_lifetime(settings.token_lifetime);
        if let (Some(admin), AuthMode::Keycloak | AuthMode::Both) = (&admin, settings.auth_mode) {
            // Tokens of Keycloak users follow their account (disabled, deleted, tier changed).
            token_service = token_service.with_identity_refresh(
                admin.clone() as Arc<dyn byok_core::ports::TierSource>,
                settings.identity_refresh,
            );
        }
        let tokens = Arc::new(token_service);
        let mut browser_login: Option<Arc<dyn byok_core::ports::BrowserLogin>> = None;
        let external: Option<Arc<ExternalAuthenticator>> =
            match (&settings.keycloak, settings.auth_mode) {
                (Some(k), AuthMode::Keycloak | AuthMode::Both) => {
                    let verifier = Arc::new(
                        byok_keycloak::OidcVerifier::new(k.clone())
                            .map_err(|e| ConfigError(e.to_string()))?,
                    );
                    // The console's "Sign in with your account" (authorization code + PKCE).
                    browser_login = Some(Arc::new(
                        byok_keycloak::KeycloakLogin::new(
                            k.clone(),
                            verifier.clone(),
                            settings.keycloak_operator_role.clone(),
                        )
                        .map_err(|e| ConfigError(e.to_string()))?,
                    ));
                    let tiers = admin
                        .clone()
                        .map(|a| a as Arc<dyn byok_core::ports::TierSource>);
                    Some(Arc::new(
                        ExternalAuthenticator::new(
                            verifier,
                            tiers,
                            shared.clone(),
                            settings
                                .auth_cache_ttl
                                .max(std::time::Duration::from_secs(1)),
                            settings.tier_cache_ttl,
                        )
                        .with_stale_if_error(stale.clone()),
                    ))
                }
                _ => None,
            };
        let authenticator: Arc<dyn Authenticator> = Arc::new(ChainAuthenticator::new(
            tokens.clone(),
            external.clone().map(|e| e as Arc<dyn Authenticator>),
        ));
        let legacy_sessions = match &settings.legacy_session_redis_url {
            Some(url) => {
                let store = byok_store::RedisLegacySessions::new(url.expose_secret())
                    .map_err(ConfigError)?;
                let mut auth = LegacySessionAuthenticator::new(
                    Arc::new(store),
                    shared.clone(),
                    settings.legacy_session_cache,
                );
                if let Some(admin) = &admin {
                    // Sessions' emails are checked against Keycloak's accounts (enabled,
                    // verified), and a Keycloak user seen first here is created.
                    auth = auth.with_directory(
                        admin.clone() as Arc<dyn byok_core::ports::IdentityDirectory>
                    );
                }
                tracing::info!(
                    public_url = %settings.public_url,
                    allowed_origins = settings.allowed_origins.len(),
                    keycloak_accounts = admin.is_some(),
                    "the legacy front end's session cookie is accepted on /api/v1 (sessions read \
                     from BYOK_LEGACY_SESSION_REDIS_URL); writes with it only from public_url's \
                     origin and BYOK_ALLOWED_ORIGINS"
                );
                Some(Arc::new(auth))
            }
            None => None,
        };
        let routes = Arc::new(
            RouteResolver::new(
                vault.clone(),
                ModelRouter::new(settings.model_aliases.clone()),
                settings.system.clone(),
                shared.clone(),
                settings.credential_ttl,
            )
            .with_stale_if_error(stale.clone())
            .with_notifier(notifier),
        );
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
        let orchestrator: Option<Arc<dyn byok_core::ports::Orchestrator>> = match &settings.brigade
        {
            Some(b) => {
                if b.allow_http && b.url.starts_with("http://") {
                    tracing::warn!(
                        "BRIGADE_ALLOW_HTTP is on: tasks with decrypted provider keys and \
                             server credentials go to the orchestrator over plain http"
                    );
                }
                Some(Arc::new(
                    byok_brigade::BrigadeClient::new(b.clone())
                        .map_err(|e| ConfigError(e.to_string()))?,
                ))
            }
            None => None,
        };
        let db_health = Arc::new(crate::db_health::DbHealth::new());
        let (usage, usage_writer) = crate::usage::start(
            shared,
            crate::usage::UsageOptions {
                memory_records: settings.usage_memory_records,
                spool_path: crate::usage::spool::path_in(&settings.data_dir),
                spool_max_bytes: settings.usage_spool_max_bytes,
            },
            db_health.clone(),
        );
        let metrics =
            crate::metrics::Metrics::new().map_err(|e| ConfigError(format!("metrics: {e}")))?;
        // Sessions of Keycloak users follow their account like their gateway tokens do.
        let sessions = byok_core::services::SessionService::new(
            Arc::new(db.clone()),
            Arc::new(db.clone()),
            settings.session_policy,
        )
        .with_accounts(tokens.clone());
        let admin = byok_core::services::Administration::new(
            tokens.clone(),
            sessions.clone(),
            Arc::new(db.clone()),
        );
        let console = byok_console::Console {
            sessions: sessions.clone(),
            tokens: tokens.clone(),
            vault: vault.clone(),
            servers: servers.clone(),
            routes: routes.clone(),
            users: Arc::new(db.clone()),
            usage: Arc::new(db.clone()),
            limiter: limiter.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            authenticator: authenticator.clone(),
            public_url: Arc::new(byok_console::PublicUrl::new(settings.public_url.clone())),
            allowed_origins: settings.allowed_origins.clone(),
            upgrade_url: settings.upgrade_url.clone(),
            errors: crate::error::console_view,
            // Set where the app is assembled (`app::build`): the runner is the gateway.
            prompts: None,
            oidc: browser_login,
            admin: admin.clone(),
        };
        Ok(Self {
            db,
            vault,
            authenticator,
            legacy_sessions,
            external,
            keys,
            tokens,
            routes,
            servers,
            upstream: Arc::new(upstream),
            usage,
            orchestrator,
            max_body_bytes: settings.max_body_bytes,
            in_flight: Arc::new(byok_core::services::ConcurrencyLimit::new(
                settings.max_concurrent_per_user,
            )),
            response_budget: Arc::new(crate::gateway::ResponseBudget::new(
                settings.max_translated_body_bytes,
                settings.response_buffer_budget,
            )),
            usage_writer,
            draining: Arc::default(),
            db_health,
            stale,
            metrics: Arc::new(metrics),
            metrics_token: settings.metrics_token.clone(),
            rate_limits: Arc::new(settings.rate_limits.clone()),
            limiter,
            redis,
            sessions,
            admin,
            console,
        })
    }

    /// Applies another replica's change to this process's caches.
    pub fn invalidate(&self, change: byok_core::ports::Invalidation) {
        use byok_core::ports::Invalidation;
        match change {
            Invalidation::Credential { user, provider } => {
                self.vault.forget_credential(user, provider);
            }
            Invalidation::Token { id } => self.tokens.forget_token(id),
            Invalidation::User { user } => {
                self.tokens.forget_user(user);
                if let Some(e) = &self.external {
                    e.forget_user(user);
                }
                if let Some(l) = &self.legacy_sessions {
                    l.forget_user(user);
                }
            }
            Invalidation::Settings { user } => self.routes.forget_settings(user),
            Invalidation::Everything => {
                self.vault.forget_all();
                self.tokens.forget_all();
                self.routes.forget_all();
                if let Some(l) = &self.legacy_sessions {
                    l.forget_all();
                }
            }
        }
    }
}

impl AppState {
    /// What a metrics scrape reads from the running service.
    pub fn readings(&self) -> crate::metrics::Readings<'_> {
        crate::metrics::Readings {
            pool: self.db.pool_status(),
            token_cache: self.tokens.cache_stats(),
            credential_cache: self.vault.cache_stats(),
            database_up: self.db_health.is_up(),
            stale_served: self.stale.served(),
            usage: self.usage_writer.stats(),
            usage_dropped: self.usage.dropped(),
            rate_limit_fallbacks: self.redis.as_ref().map(|r| r.fallbacks()),
            db: &self.db,
        }
    }
}
