//! Settings, read once from the environment.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BYOK_BIND` | `127.0.0.1:8080` | address `serve` listens on (port 0 picks a free port) |
//! | `BYOK_DATA_DIR` | `./data` | where the embedded defaults live (`byok.db`, `encryption.key`), and the usage spool file (`usage-spool.jsonl`) |
//! | `DATABASE_URL` | `sqlite://$BYOK_DATA_DIR/byok.db` | `postgres://…` or `sqlite://path` |
//! | `ENCRYPTION_KEY` | generated into `$BYOK_DATA_DIR/encryption.key` (0600) | comma-separated Fernet keys; the first encrypts |
//! | `BYOK_DB_MAX_CONNECTIONS` | `10` | database pool size |
//! | `BYOK_ALLOWED_TARGETS` | empty | comma-separated CIDRs/hosts user-supplied endpoints may reach despite being private/loopback |
//! | `BYOK_PROVIDER_<ID>_BASE_URL` | the provider's public API | override a provider's base URL (trusted) |
//! | `BYOK_PROBE_TIMEOUT_SECS` | `10` | key-test request timeout |
//! | `BYOK_AUTH_CACHE_TTL_SECS` | `5` | how long a token check is cached (bounds revocation delay across processes) |
//! | `BYOK_UPGRADE_URL` | `/pricing` | `upgrade_url` in tier refusals |
//! | `BYOK_PUBLIC_URL` | `http://$BYOK_BIND` | the URL people and clients reach this service at (sign-in links, the console's snippets, the origin form posts must come from; `https://…` makes the session cookie `Secure` with the `__Host-` prefix) |
//! | `BYOK_ALLOWED_ORIGINS` | empty | comma-separated extra origins (`https://app.example.com`) allowed to post to the console and, with a session cookie, to `/api/v1` |
//! | `BYOK_TRUSTED_PROXIES` | empty (trust none) | comma-separated addresses/CIDRs of reverse proxies whose `X-Forwarded-For` names the client (the right-most entry that is not itself a trusted proxy); the console's sign-in limit counts per client address. A bad entry refuses to start |
//! | `BYOK_CONSOLE_IDLE_MINUTES` | `120` | a console session unused this long ends |
//! | `BYOK_CONSOLE_SESSION_HOURS` | `12` | a console session ends this long after sign-in |
//! | `BYOK_LOGIN_LINK_MINUTES` | `15` | how long a sign-in link works (once) |
//! | `BYOK_BOOTSTRAP_ADMIN_EMAIL` | `admin@localhost` | the first user created on an empty database |
//! | `BYOK_BOOTSTRAP_ADMIN` | `true` | `false`: create no first user and print no token at start (clusters whose logs are collected: use `byok-gateway user create` instead) |
//! | `BYOK_WORKERS` | number of CPUs | HTTP worker threads |
//! | `BYOK_SHUTDOWN_DRAIN_SECS` | `0` | on SIGTERM/SIGINT: seconds `/readyz` answers 503 (`draining`) before the listener closes (set it to the load balancer's probe period; 5 in the Kubernetes manifests) |
//! | `BYOK_SHUTDOWN_TIMEOUT_SECS` | `30` | then: how long in-flight requests and streams may take to finish; usage records are flushed and the process exits 0 |
//! | `DEFAULT_LLM_PROVIDER` | `openrouter` | provider of the system default credential |
//! | `DEFAULT_LLM_API_KEY` | none | the system default credential (without it, only users' own keys work) |
//! | `DEFAULT_LLM_BASE_URL` | the provider's base URL | base URL for system-default calls |
//! | `BYOK_MODEL_ALIASES` | empty | `alias=provider/model,…` applied before routing |
//! | `BYOK_CREDENTIAL_CACHE_TTL_SECS` | `30` | how long a resolved key or setting is cached (other processes see changes within it) |
//! | `BYOK_STALE_IF_ERROR_SECS` | `900` | while the database cannot be read: how old (since its last successful read) a cached token check, credential or setting may be and still be used (`0`: never; requests then fail with 503) |
//! | `BYOK_USAGE_MEMORY_RECORDS` | `50000` | usage records kept in memory while they cannot be written; beyond, they go to the spool file |
//! | `BYOK_USAGE_SPOOL_MAX_MB` | `1024` | largest size of the usage spool file `$BYOK_DATA_DIR/usage-spool.jsonl`; records beyond are dropped (and counted) |
//! | `BYOK_UPSTREAM_CONNECT_TIMEOUT_SECS` | `10` | provider connect timeout |
//! | `BYOK_UPSTREAM_IDLE_TIMEOUT_SECS` | `300` | longest silence between two reads from a provider |
//! | `BYOK_UPSTREAM_TIMEOUT_SECS` | `600` | whole-request limit for non-streaming calls |
//! | `BYOK_UPSTREAM_MAX_STREAM_SECS` | `3600` | longest a stream may run in all |
//! | `BYOK_DOCKER_SOCKETS` | empty | comma-separated unix sockets (`/run/podman/podman.sock`) users may name as Docker endpoints |
//! | `BYOK_DOCKER_ALLOW_PLAIN_TCP` | `false` | `true` allows plain `tcp://` Docker endpoints (through the target policy) |
//! | `BYOK_MAX_SERVERS_PER_USER` | `100` | execution servers one user may register (at least 1); one more → 409 `server_limit` (creates of one user at the same moment may overshoot it by the number in flight) |
//! | `BYOK_ALLOW_LOCAL_EXECUTION` | `false` | `true` lets `enterprise` users run commands on this host (local servers) |
//! | `BYOK_TOKEN_LIFETIME_DAYS` | `90` | lifetime of gateway tokens created without one (`0`: no expiry) |
//! | `BYOK_IDENTITY_REFRESH_SECS` | `60` | how often the account (enabled, tier) of a Keycloak user is re-read for their gateway tokens and console sessions |
//! | `BYOK_LOCAL_SANDBOX_UID`, `BYOK_LOCAL_SANDBOX_GID` | `990000`, the uid | the first of the unprivileged ids local runs take (one each; never 0) |
//! | `BYOK_LOCAL_SANDBOXES` | `8` | local runs at once on this host (each with its own uid/gid; more wait) |
//! | `BYOK_LOCAL_MAX_PROCESSES`, `BYOK_LOCAL_MAX_MEMORY_MB` | `64`, `1024` | processes of one run; address space per process |
//! | `BYOK_LOCAL_BWRAP` | `/usr/bin/bwrap` | the bubblewrap binary |
//! | `BYOK_MAX_BODY_BYTES` | `16777216` | largest request body on `/v1/*` |
//! | `BYOK_MAX_CONCURRENT_PER_USER` | `32` | LLM requests one user may have in flight at once on this replica, streams included (`0`: unlimited); over it → 429 |
//! | `BYOK_MAX_TRANSLATED_BODY_BYTES` | `16777216` | largest non-streaming answer translated between API formats (it must be buffered whole); over it → 502. Same-format answers are streamed through, whatever their size |
//! | `BYOK_RESPONSE_BUFFER_BUDGET_MB` | `128` | memory (MiB) all requests together may hold for request bodies as they are read (and their rewritten, parsed or translated copies) and for answers being translated (their bytes, then their parsed form while translated); when spent → 503 |
//! | `AUTH_MODE` | `local` | `local` (gateway tokens), `keycloak` (Keycloak JWTs + gateway tokens, no bootstrap admin), `both` |
//! | `KEYCLOAK_URL` | none | e.g. `https://sso.example.com` (needed for `AUTH_MODE=keycloak\|both` and the keycloak key store) |
//! | `KEYCLOAK_REALM` | none | the realm |
//! | `KEYCLOAK_CLIENT_ID` | `byok-gateway` | the confidential client (admin API) and the default audience |
//! | `KEYCLOAK_CLIENT_SECRET` | none | its secret; without it no admin API (tiers from tokens only; no keycloak key store) |
//! | `KEYCLOAK_AUDIENCE` | `KEYCLOAK_CLIENT_ID` | what tokens must carry in `aud` or `azp` |
//! | `KEYCLOAK_TIER_CLAIM` | `subscription_tier` | the token claim holding the tier |
//! | `KEYCLOAK_TIER_FROM_ROLES` | `false` | `true` maps realm roles named like tiers (`starter`, …) |
//! | `KEYCLOAK_OPERATOR_ROLE` | none | a realm role that makes its holders operators (the console's Administration), read at each console sign-in; without it the stored role (`byok-gateway user set-role`) stands |
//! | `KEYCLOAK_TIER_CACHE_SECS` | `60` | how long a tier read from the admin API is reused |
//! | `KEYCLOAK_CA_FILE` | none | extra CA certificates (PEM) for Keycloak's TLS |
//! | `KEYCLOAK_ALLOW_HTTP` | `false` | allow `http://` Keycloak URLs (development only) |
//! | `KEYCLOAK_JWKS_MIN_REFRESH_SECS` | `30` | least time between key fetches caused by unknown `kid`s |
//! | `BYOK_KEY_STORE` | `database` | `database` or `keycloak` (keys in Keycloak user attributes, legacy layout) |
//! | `BRIGADE_URL` | none | the orchestrator (`https://…`); enables orchestrated `/v1/messages` |
//! | `BRIGADE_ALLOW_HTTP` | `false` | accept a plain `http://` `BRIGADE_URL` (keys then cross the network in clear; warned at start-up) |
//! | `BRIGADE_CA_FILE` | none | extra CA certificates (PEM) for Brigade's TLS |
//! | `BRIGADE_TIMEOUT_SECS` | `600` | whole-call limit of a non-streaming task |
//! | `BRIGADE_IDLE_TIMEOUT_SECS` | `300` | longest silence of a streaming task (and wait for its first byte) |
//! | `BYOK_RATE_LIMITS` | none (unlimited) | LLM requests per window per user, by tier: `free=20,starter=600,professional=3000` (0 or absent = unlimited) |
//! | `BYOK_TOKEN_RATE_LIMIT` | `0` (unlimited) | LLM requests per window per gateway token |
//! | `BYOK_RATE_LIMIT_WINDOW_SECS` | `60` | the window, aligned to the clock |
//! | `REDIS_URL` | none | `redis://…`: rate-limit counters shared by all replicas; without it (or while Redis does not answer) each replica counts alone |
//! | `BYOK_LEGACY_SESSION_REDIS_URL` | none | `redis://…` of the legacy backend's session store: when set, a request to `/api/v1/*` with neither `Authorization` nor `x-api-key` is authenticated by its `session_token` cookie (the legacy front end's pages), read-only (`GET session:{token}`); see docs/api.md "The legacy front end" |
//! | `BYOK_LEGACY_SESSION_CACHE_SECS` | `30` | how long an accepted session cookie is trusted before the session is read again (0–300; refusals are kept at most 5 s): a sign-out in the legacy backend takes effect here within it |
//! | `BYOK_METRICS_TOKEN` | none | when set, `GET /metrics` requires it as `Authorization: Bearer` |
//! | `BYOK_LOG_FORMAT` | `text` | `text` or `json` |
//! | `RUST_LOG` | `info` | log filter |

use std::path::{Path, PathBuf};
use std::time::Duration;

use byok_core::policy::TargetPolicy;
use byok_core::routing::ModelRouter;
use byok_core::services::SystemDefault;
use byok_core::{ApiKey, ProviderId};
use byok_crypto::FernetKeyRing;
use byok_providers::Catalogue;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;

/// A configuration problem; the message is safe to print (never contains a secret).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the encryption key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    /// Generated or read from this file (embedded default).
    File(PathBuf),
}

/// How callers authenticate (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Gateway tokens of local users (the embedded default).
    Local,
    /// Keycloak JWTs, and gateway tokens Keycloak users create; no bootstrap admin.
    Keycloak,
    /// Either.
    Both,
}

/// Where provider keys live (`BYOK_KEY_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreKind {
    Database,
    Keycloak,
}

/// `BYOK_PUBLIC_URL` (an http(s) URL without path, query or trailing slash), else the bind
/// address over http (a wildcard address becomes `127.0.0.1`).
fn public_url(bind: &str) -> Result<String, ConfigError> {
    match var("BYOK_PUBLIC_URL") {
        Some(u) => {
            let u = u.trim().trim_end_matches('/').to_string();
            let parsed = url::Url::parse(&u)
                .map_err(|_| ConfigError("BYOK_PUBLIC_URL must be an http(s) URL".into()))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.host_str().is_none()
                || parsed.query().is_some()
                || parsed.fragment().is_some()
                || !parsed.username().is_empty()
                || parsed.password().is_some()
                || !matches!(parsed.path(), "" | "/")
            {
                return Err(ConfigError(
                    "BYOK_PUBLIC_URL must be http(s)://host[:port], without a path or query".into(),
                ));
            }
            Ok(u)
        }
        None => Ok(derived_public_url(bind, 0)),
    }
}

/// `http://host:port` from the bind address: its host (a wildcard is reached on loopback)
/// and its port, or `port` when the configured one is 0 (picked at bind time).
pub fn derived_public_url(bind: &str, port: u16) -> String {
    let bind = bind.trim();
    let (host, configured) = match bind.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(0)),
        None => (bind, 0),
    };
    let host = match host {
        "" | "0.0.0.0" | "[::]" | "::" => "127.0.0.1",
        h => h,
    };
    let port = if configured == 0 { port } else { configured };
    format!("http://{host}:{port}")
}

fn flag(name: &str) -> bool {
    var(name)
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
}

/// Keycloak settings, when `KEYCLOAK_URL` is set.
fn keycloak_settings() -> Result<Option<byok_keycloak::KeycloakSettings>, ConfigError> {
    let Some(url) = var("KEYCLOAK_URL") else {
        return Ok(None);
    };
    let realm = var("KEYCLOAK_REALM")
        .ok_or_else(|| ConfigError("KEYCLOAK_REALM must be set with KEYCLOAK_URL".into()))?;
    let client_id = var("KEYCLOAK_CLIENT_ID").unwrap_or_else(|| "byok-gateway".into());
    let ca_pem = match var("KEYCLOAK_CA_FILE") {
        Some(path) => Some(
            std::fs::read(&path)
                .map_err(|e| ConfigError(format!("KEYCLOAK_CA_FILE {path}: {e}")))?,
        ),
        None => None,
    };
    let settings = byok_keycloak::KeycloakSettings {
        url: url.trim().trim_end_matches('/').to_string(),
        realm: realm.trim().to_string(),
        audience: var("KEYCLOAK_AUDIENCE").unwrap_or_else(|| client_id.clone()),
        client_id,
        client_secret: var("KEYCLOAK_CLIENT_SECRET").map(SecretString::from),
        ca_pem,
        allow_http: flag("KEYCLOAK_ALLOW_HTTP"),
        tier_claim: var("KEYCLOAK_TIER_CLAIM").unwrap_or_else(|| "subscription_tier".into()),
        tier_from_roles: flag("KEYCLOAK_TIER_FROM_ROLES"),
        leeway_secs: 30,
        jwks_min_refresh: Duration::from_secs(number("KEYCLOAK_JWKS_MIN_REFRESH_SECS", 30u64)?),
        timeout: Duration::from_secs(10),
    };
    settings
        .check_url(&settings.url)
        .map_err(|e| ConfigError(format!("KEYCLOAK_URL: {e}")))?;
    Ok(Some(settings))
}

/// Typed settings.
pub struct Settings {
    pub bind: String,
    pub data_dir: PathBuf,
    pub database_url: SecretString,
    pub db_max_connections: usize,
    pub encryption_key: SecretString,
    pub key_source: KeySource,
    pub target_policy: TargetPolicy,
    pub catalogue: Catalogue,
    pub probe_timeout: Duration,
    pub auth_cache_ttl: Duration,
    pub upgrade_url: String,
    /// `BYOK_PUBLIC_URL`, without a trailing slash (else derived from the bind address).
    pub public_url: String,
    /// Whether `BYOK_PUBLIC_URL` was set (else the bound address replaces it at start).
    pub public_url_explicit: bool,
    /// `KEYCLOAK_OPERATOR_ROLE`.
    pub keycloak_operator_role: Option<String>,
    /// `BYOK_ALLOWED_ORIGINS`.
    pub allowed_origins: Vec<String>,
    /// `BYOK_TRUSTED_PROXIES`: whose `X-Forwarded-For` names the client.
    pub trusted_proxies: byok_core::client_addr::TrustedProxies,
    /// Console session and sign-in link lifetimes.
    pub session_policy: byok_core::services::SessionPolicy,
    pub bootstrap_admin_email: String,
    /// `BYOK_BOOTSTRAP_ADMIN=false`: never create the first user at start (nor print a token).
    pub bootstrap_admin: bool,
    pub workers: Option<usize>,
    /// Request limits per user (by tier) and per gateway token.
    pub rate_limits: byok_core::services::RateLimits,
    /// `BYOK_METRICS_TOKEN`: bearer token `/metrics` requires, when set.
    pub metrics_token: Option<SecretString>,
    /// `REDIS_URL`: shared rate-limit counters (may hold a password).
    pub redis_url: Option<SecretString>,
    /// `BYOK_LEGACY_SESSION_REDIS_URL`: the legacy backend's session store; the
    /// `session_token` cookie is accepted on `/api/v1/*` only when set (may hold a password).
    pub legacy_session_redis_url: Option<SecretString>,
    /// `BYOK_LEGACY_SESSION_CACHE_SECS`: how long an accepted session cookie is trusted.
    pub legacy_session_cache: Duration,
    /// On SIGTERM: how long in-flight requests and streams may take to finish.
    pub shutdown_timeout: Duration,
    /// On SIGTERM: how long readiness fails before the listener closes.
    pub shutdown_drain_delay: Duration,
    pub system: SystemDefault,
    pub system_base_url: Option<String>,
    pub model_aliases: HashMap<String, String>,
    pub credential_ttl: Duration,
    /// `BYOK_STALE_IF_ERROR_SECS`: how old a cached value may be when the database fails.
    pub stale_if_error: Duration,
    /// `BYOK_USAGE_MEMORY_RECORDS`: unwritten usage records kept in memory.
    pub usage_memory_records: usize,
    /// `BYOK_USAGE_SPOOL_MAX_MB`, in bytes: the largest usage spool file.
    pub usage_spool_max_bytes: u64,
    pub upstream_connect_timeout: Duration,
    pub upstream_idle_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_max_stream: Duration,
    pub max_body_bytes: usize,
    /// `BYOK_MAX_CONCURRENT_PER_USER` (0: unlimited).
    pub max_concurrent_per_user: usize,
    /// `BYOK_MAX_TRANSLATED_BODY_BYTES`.
    pub max_translated_body_bytes: usize,
    /// `BYOK_RESPONSE_BUFFER_BUDGET_MB`, in bytes.
    pub response_buffer_budget: usize,
    pub allow_local_execution: bool,
    /// `BYOK_MAX_SERVERS_PER_USER`: execution servers one user may register (at least 1).
    pub max_servers_per_user: u64,
    /// `BYOK_TOKEN_LIFETIME_DAYS`: lifetime of tokens issued without one (`None`: no expiry).
    pub token_lifetime: Option<chrono::Duration>,
    /// `BYOK_IDENTITY_REFRESH_SECS`: how often the accounts of Keycloak users are re-read.
    pub identity_refresh: Duration,
    /// `BYOK_LOCAL_SANDBOX_*`: the sandbox local commands run in.
    pub local_sandbox: byok_exec::LocalSandbox,
    pub docker_sockets: Vec<String>,
    pub docker_allow_plain_tcp: bool,
    pub auth_mode: AuthMode,
    pub keycloak: Option<byok_keycloak::KeycloakSettings>,
    pub tier_cache_ttl: Duration,
    pub key_store: KeyStoreKind,
    pub brigade: Option<byok_brigade::BrigadeSettings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("key_source", &self.key_source)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The variables [`Settings::from_vars`] reads instead of the process environment, while
    /// it runs on this thread.
    static VARS: std::cell::RefCell<Option<std::collections::HashMap<String, String>>> =
        const { std::cell::RefCell::new(None) };
}

/// A variable as set (possibly empty), from [`VARS`] or the environment.
fn raw_var(name: &str) -> Option<String> {
    VARS.with_borrow(|vars| match vars {
        Some(vars) => vars.get(name).cloned(),
        None => std::env::var(name).ok(),
    })
}

/// A variable that is set and not blank.
fn var(name: &str) -> Option<String> {
    raw_var(name).filter(|v| !v.trim().is_empty())
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name} must be a number"))),
    }
}

impl Settings {
    /// [`Settings::from_env`] with these variables in place of the process environment (tests
    /// and embedders that configure the service in code; nothing else of the environment is
    /// read).
    pub fn from_vars<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        VARS.set(Some(vars));
        let settings = Self::from_env();
        VARS.set(None);
        settings
    }

    /// Reads the environment. Creates `BYOK_DATA_DIR` and, when `ENCRYPTION_KEY` is unset,
    /// the generated key file.
    pub fn from_env() -> Result<Self, ConfigError> {
        let auth_mode = match var("AUTH_MODE").as_deref().map(str::trim) {
            None | Some("local") => AuthMode::Local,
            Some("keycloak") => AuthMode::Keycloak,
            Some("both") => AuthMode::Both,
            Some(_) => {
                return Err(ConfigError(
                    "AUTH_MODE must be local, keycloak or both".into(),
                ));
            }
        };
        let key_store = match var("BYOK_KEY_STORE").as_deref().map(str::trim) {
            None | Some("database") => KeyStoreKind::Database,
            Some("keycloak") => KeyStoreKind::Keycloak,
            Some(_) => {
                return Err(ConfigError(
                    "BYOK_KEY_STORE must be database or keycloak".into(),
                ));
            }
        };
        let keycloak = keycloak_settings()?;
        if auth_mode != AuthMode::Local && keycloak.is_none() {
            return Err(ConfigError(
                "AUTH_MODE=keycloak|both needs KEYCLOAK_URL and KEYCLOAK_REALM".into(),
            ));
        }
        if key_store == KeyStoreKind::Keycloak
            && keycloak.as_ref().is_none_or(|k| k.client_secret.is_none())
        {
            return Err(ConfigError(
                "BYOK_KEY_STORE=keycloak needs KEYCLOAK_URL, KEYCLOAK_REALM and KEYCLOAK_CLIENT_SECRET"
                    .into(),
            ));
        }
        let data_dir = PathBuf::from(var("BYOK_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = SecretString::from(
            var("DATABASE_URL")
                .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("byok.db").display())),
        );
        // Set but empty is an error, not "use the embedded default": an empty secret in a
        // deployment must not silently become a freshly generated key.
        let (encryption_key, key_source) = match raw_var("ENCRYPTION_KEY") {
            Some(k) if k.trim().is_empty() => {
                return Err(ConfigError(
                    "invalid ENCRYPTION_KEY: it is set but empty (unset it to use the generated \
                     key file of the embedded mode)"
                        .into(),
                ));
            }
            Some(k) => (SecretString::from(k), KeySource::Environment),
            None => {
                let path = data_dir.join("encryption.key");
                (load_or_create_key(&path)?, KeySource::File(path))
            }
        };
        FernetKeyRing::parse(&encryption_key).map_err(|e| ConfigError(e.to_string()))?;
        let target_policy = TargetPolicy::parse(&var("BYOK_ALLOWED_TARGETS").unwrap_or_default())
            .map_err(|e| ConfigError(format!("BYOK_ALLOWED_TARGETS: {e}")))?;
        let catalogue = Catalogue::from_env(var).map_err(ConfigError)?;
        let workers = match var("BYOK_WORKERS") {
            None => None,
            Some(_) => Some(number("BYOK_WORKERS", 1usize)?.max(1)),
        };
        let system_provider: ProviderId = var("DEFAULT_LLM_PROVIDER")
            .unwrap_or_else(|| "openrouter".into())
            .trim()
            .to_ascii_lowercase()
            .parse()
            .map_err(|_| ConfigError("DEFAULT_LLM_PROVIDER must be a provider id".into()))?;
        let system_key = var("DEFAULT_LLM_API_KEY")
            .map(|k| ApiKey::from_secret(SecretString::from(k.trim().to_string())));
        let system_base_url =
            var("DEFAULT_LLM_BASE_URL").map(|u| u.trim().trim_end_matches('/').to_string());
        if let Some(u) = &system_base_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError(
                "DEFAULT_LLM_BASE_URL must be an http(s) URL".into(),
            ));
        }
        let model_aliases =
            ModelRouter::parse_aliases(&var("BYOK_MODEL_ALIASES").unwrap_or_default())
                .map_err(|e| ConfigError(format!("BYOK_MODEL_ALIASES: {e}")))?;
        let bind = var("BYOK_BIND").unwrap_or_else(|| "127.0.0.1:8080".into());
        let public_url = public_url(&bind)?;
        let allowed_origins: Vec<String> = var("BYOK_ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if let Some(bad) = allowed_origins
            .iter()
            .position(|o| !byok_core::origin::is_valid_origin(o))
        {
            return Err(ConfigError(format!(
                "BYOK_ALLOWED_ORIGINS: entry {} is not an origin (scheme://host[:port], http or https)",
                bad + 1
            )));
        }
        let trusted_proxies = byok_core::client_addr::TrustedProxies::parse(
            &var("BYOK_TRUSTED_PROXIES").unwrap_or_default(),
        )
        .map_err(|e| ConfigError(format!("BYOK_TRUSTED_PROXIES: {e}")))?;
        let legacy_session_cache = number(
            "BYOK_LEGACY_SESSION_CACHE_SECS",
            byok_core::services::DEFAULT_LEGACY_SESSION_TTL.as_secs(),
        )?;
        if legacy_session_cache > 300 {
            return Err(ConfigError(
                "BYOK_LEGACY_SESSION_CACHE_SECS must be between 0 and 300".into(),
            ));
        }
        Ok(Self {
            legacy_session_redis_url: var("BYOK_LEGACY_SESSION_REDIS_URL").map(SecretString::from),
            legacy_session_cache: Duration::from_secs(legacy_session_cache),
            public_url,
            allowed_origins,
            trusted_proxies,
            system: SystemDefault {
                provider: system_provider,
                api_key: system_key,
            },
            system_base_url,
            model_aliases,
            credential_ttl: Duration::from_secs(number("BYOK_CREDENTIAL_CACHE_TTL_SECS", 30u64)?),
            stale_if_error: Duration::from_secs(number(
                "BYOK_STALE_IF_ERROR_SECS",
                byok_core::services::DEFAULT_STALE_IF_ERROR.as_secs(),
            )?),
            usage_memory_records: number("BYOK_USAGE_MEMORY_RECORDS", 50_000usize)?,
            usage_spool_max_bytes: number("BYOK_USAGE_SPOOL_MAX_MB", 1024u64)?
                .saturating_mul(1 << 20),
            upstream_connect_timeout: Duration::from_secs(
                number("BYOK_UPSTREAM_CONNECT_TIMEOUT_SECS", 10u64)?.max(1),
            ),
            upstream_idle_timeout: Duration::from_secs(
                number("BYOK_UPSTREAM_IDLE_TIMEOUT_SECS", 300u64)?.max(1),
            ),
            upstream_timeout: Duration::from_secs(
                number("BYOK_UPSTREAM_TIMEOUT_SECS", 600u64)?.max(1),
            ),
            upstream_max_stream: Duration::from_secs(
                number("BYOK_UPSTREAM_MAX_STREAM_SECS", 3600u64)?.max(1),
            ),
            docker_sockets: var("BYOK_DOCKER_SOCKETS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().trim_start_matches("unix://").to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            docker_allow_plain_tcp: var("BYOK_DOCKER_ALLOW_PLAIN_TCP").is_some_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
            }),
            allow_local_execution: var("BYOK_ALLOW_LOCAL_EXECUTION").is_some_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
            }),
            token_lifetime: match number("BYOK_TOKEN_LIFETIME_DAYS", 90u32)? {
                0 => None,
                d @ 1..=3650 => Some(chrono::Duration::days(i64::from(d))),
                _ => {
                    return Err(ConfigError(
                        "BYOK_TOKEN_LIFETIME_DAYS must be between 0 (no expiry) and 3650".into(),
                    ));
                }
            },
            identity_refresh: Duration::from_secs(
                number("BYOK_IDENTITY_REFRESH_SECS", 60u64)?.max(1),
            ),
            local_sandbox: {
                let d = byok_exec::LocalSandbox::default();
                let uid = number("BYOK_LOCAL_SANDBOX_UID", d.uid)?;
                if uid == 0 {
                    return Err(ConfigError(
                        "BYOK_LOCAL_SANDBOX_UID must not be 0 (root)".into(),
                    ));
                }
                let gid = number("BYOK_LOCAL_SANDBOX_GID", uid)?;
                if gid == 0 {
                    return Err(ConfigError(
                        "BYOK_LOCAL_SANDBOX_GID must not be 0 (root)".into(),
                    ));
                }
                let sandboxes = number("BYOK_LOCAL_SANDBOXES", d.sandboxes)?.clamp(1, 1024);
                // The ranges must fit below u32::MAX, which is no valid id.
                if uid.checked_add(sandboxes).is_none_or(|end| end == u32::MAX)
                    || gid.checked_add(sandboxes).is_none_or(|end| end == u32::MAX)
                {
                    return Err(ConfigError(
                        "BYOK_LOCAL_SANDBOX_UID/GID + BYOK_LOCAL_SANDBOXES must stay below 4294967295"
                            .into(),
                    ));
                }
                byok_exec::LocalSandbox {
                    uid,
                    gid,
                    sandboxes,
                    max_processes: number("BYOK_LOCAL_MAX_PROCESSES", d.max_processes)?.max(1),
                    max_memory_bytes: number("BYOK_LOCAL_MAX_MEMORY_MB", d.max_memory_bytes >> 20)?
                        .max(16)
                        << 20,
                    bwrap: var("BYOK_LOCAL_BWRAP").map_or(d.bwrap.clone(), PathBuf::from),
                    ..d
                }
            },
            max_body_bytes: number("BYOK_MAX_BODY_BYTES", 16usize * 1024 * 1024)?.max(1024),
            max_concurrent_per_user: number("BYOK_MAX_CONCURRENT_PER_USER", 32usize)?,
            max_servers_per_user: number(
                "BYOK_MAX_SERVERS_PER_USER",
                byok_core::services::DEFAULT_MAX_SERVERS_PER_USER,
            )?
            .max(1),
            max_translated_body_bytes: number(
                "BYOK_MAX_TRANSLATED_BODY_BYTES",
                16usize * 1024 * 1024,
            )?
            .max(64 * 1024),
            response_buffer_budget: number("BYOK_RESPONSE_BUFFER_BUDGET_MB", 128usize)?
                .clamp(1, 1 << 30)
                << 20,
            auth_mode,
            keycloak,
            tier_cache_ttl: Duration::from_secs(number("KEYCLOAK_TIER_CACHE_SECS", 60u64)?),
            key_store,
            brigade: match var("BRIGADE_URL") {
                Some(url) => Some(byok_brigade::BrigadeSettings {
                    allow_http: flag("BRIGADE_ALLOW_HTTP"),
                    timeout: Duration::from_secs(number("BRIGADE_TIMEOUT_SECS", 600u64)?.max(1)),
                    idle_timeout: Duration::from_secs(
                        number("BRIGADE_IDLE_TIMEOUT_SECS", 300u64)?.max(1),
                    ),
                    ca_pem: match var("BRIGADE_CA_FILE") {
                        Some(path) => Some(
                            std::fs::read(&path)
                                .map_err(|e| ConfigError(format!("BRIGADE_CA_FILE {path}: {e}")))?,
                        ),
                        None => None,
                    },
                    ..byok_brigade::BrigadeSettings::new(&url)
                }),
                None => None,
            },
            bind,
            data_dir,
            database_url,
            db_max_connections: number("BYOK_DB_MAX_CONNECTIONS", 10usize)?.max(1),
            encryption_key,
            key_source,
            target_policy,
            catalogue,
            probe_timeout: Duration::from_secs(number("BYOK_PROBE_TIMEOUT_SECS", 10u64)?.max(1)),
            auth_cache_ttl: Duration::from_secs(number("BYOK_AUTH_CACHE_TTL_SECS", 5u64)?),
            upgrade_url: var("BYOK_UPGRADE_URL").unwrap_or_else(|| "/pricing".into()),
            public_url_explicit: var("BYOK_PUBLIC_URL").is_some(),
            keycloak_operator_role: var("KEYCLOAK_OPERATOR_ROLE")
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty()),
            session_policy: byok_core::services::SessionPolicy {
                idle: Duration::from_secs(60 * number("BYOK_CONSOLE_IDLE_MINUTES", 120u64)?.max(1)),
                absolute: Duration::from_secs(
                    3600 * number("BYOK_CONSOLE_SESSION_HOURS", 12u64)?.max(1),
                ),
                link_lifetime: Duration::from_secs(
                    60 * number("BYOK_LOGIN_LINK_MINUTES", 15u64)?.max(1),
                ),
            },
            bootstrap_admin_email: var("BYOK_BOOTSTRAP_ADMIN_EMAIL")
                .unwrap_or_else(|| "admin@localhost".into()),
            bootstrap_admin: var("BYOK_BOOTSTRAP_ADMIN").is_none_or(|v| {
                !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no")
            }),
            workers,
            rate_limits: {
                let mut limits = byok_core::services::RateLimits {
                    window: Duration::from_secs(
                        number("BYOK_RATE_LIMIT_WINDOW_SECS", 60u64)?.max(1),
                    ),
                    per_token: Some(number("BYOK_TOKEN_RATE_LIMIT", 0u64)?).filter(|n| *n > 0),
                    ..Default::default()
                };
                if let Some(raw) = var("BYOK_RATE_LIMITS") {
                    limits
                        .parse_tiers(&raw)
                        .map_err(|e| ConfigError(format!("BYOK_RATE_LIMITS: {e}")))?;
                }
                limits
            },
            redis_url: var("REDIS_URL").map(SecretString::from),
            metrics_token: var("BYOK_METRICS_TOKEN").map(SecretString::from),
            shutdown_timeout: Duration::from_secs(number("BYOK_SHUTDOWN_TIMEOUT_SECS", 30u64)?),
            shutdown_drain_delay: Duration::from_secs(number("BYOK_SHUTDOWN_DRAIN_SECS", 0u64)?),
        })
    }

    pub fn key_ring(&self) -> Result<FernetKeyRing, ConfigError> {
        FernetKeyRing::parse(&self.encryption_key).map_err(|e| ConfigError(e.to_string()))
    }

    /// `DATABASE_URL` for log lines: scheme, host, port and database only (no user, password
    /// or query parameters, which may hold a password too).
    pub fn database_display(&self) -> String {
        let raw = self.database_url.expose_secret();
        if raw.starts_with("sqlite://") {
            return raw.to_string();
        }
        match url::Url::parse(raw) {
            Ok(u) => format!(
                "{}://{}{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                u.path()
            ),
            Err(_) => "(unparsable DATABASE_URL)".to_string(),
        }
    }
}

/// Reads the key file, or creates it (mode 0600) with a fresh key.
fn load_or_create_key(path: &Path) -> Result<SecretString, ConfigError> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_shared(path);
            Ok(SecretString::from(text.trim().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ConfigError(format!("cannot create {}: {e}", dir.display())))?;
            }
            let key = FernetKeyRing::generate_key();
            write_private(path, key.expose_secret())
                .map_err(|e| ConfigError(format!("cannot write {shown}: {e}")))?;
            tracing::warn!(
                path = %shown,
                "ENCRYPTION_KEY is not set: generated a key into this file (mode 0600). \
                 Production must set ENCRYPTION_KEY from a secret store and back it up: \
                 without it, stored keys cannot be decrypted"
            );
            Ok(key)
        }
        Err(e) => Err(ConfigError(format!("cannot read {shown}: {e}"))),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "encryption key file is readable by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}
