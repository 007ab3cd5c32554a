#![doc = include_str!("../README.md")]

mod admin;
mod keystore;
mod login;
mod oidc;

use std::time::Duration;

use secrecy::SecretString;

pub use admin::{AdminClient, UserRepresentation};
pub use keystore::{KeycloakKeyStore, legacy_attribute_names, legacy_keys_in_realm};
pub use login::KeycloakLogin;
pub use oidc::{ALLOWED_ALGORITHMS, DEFAULT_JWKS_MIN_REFRESH, OidcVerifier};

/// Errors of this crate's set-up and admin calls. Never carries a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeycloakError {
    /// A setting is unusable (URL, CA file).
    #[error("keycloak configuration: {0}")]
    Config(String),
    /// Keycloak could not be reached or answered unexpectedly.
    #[error("keycloak: {0}")]
    Unavailable(String),
    /// The admin API refused the service account (401/403).
    #[error("keycloak refused the service account (HTTP {0})")]
    Forbidden(u16),
    /// The user does not exist (404).
    #[error("keycloak has no such user")]
    NotFound,
    /// A write lost a race or was not applied (409, or not seen on re-read).
    #[error("keycloak write conflict: {0}")]
    Conflict(String),
}

/// Where the realm is and how to trust it.
#[derive(Clone)]
pub struct KeycloakSettings {
    /// `KEYCLOAK_URL`, without a trailing slash (e.g. `https://sso.example.com`).
    pub url: String,
    /// `KEYCLOAK_REALM`.
    pub realm: String,
    /// The audience tokens must carry in `aud` or `azp` (`KEYCLOAK_AUDIENCE`, default the
    /// client id).
    pub audience: String,
    /// The confidential client for the admin API (`KEYCLOAK_CLIENT_ID`).
    pub client_id: String,
    /// Its secret (`KEYCLOAK_CLIENT_SECRET`); no admin API without it.
    pub client_secret: Option<SecretString>,
    /// Extra CA certificates (PEM) to trust (`KEYCLOAK_CA_FILE`).
    pub ca_pem: Option<Vec<u8>>,
    /// Allow `http://` (`KEYCLOAK_ALLOW_HTTP`; development and tests only).
    pub allow_http: bool,
    /// The claim holding the tier (`KEYCLOAK_TIER_CLAIM`, default `subscription_tier`).
    pub tier_claim: String,
    /// Map realm roles named like tiers (`KEYCLOAK_TIER_FROM_ROLES`).
    pub tier_from_roles: bool,
    /// Clock leeway for `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
    /// Minimum time between JWKS fetches triggered by unknown `kid`s.
    pub jwks_min_refresh: Duration,
    /// Request timeout for every call to Keycloak.
    pub timeout: Duration,
}

impl std::fmt::Debug for KeycloakSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakSettings")
            .field("url", &self.url)
            .field("realm", &self.realm)
            .field("audience", &self.audience)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl KeycloakSettings {
    /// Defaults for everything but the URL, realm `byok`, client `byok-gateway`, http allowed.
    pub fn for_testing(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            realm: "byok".into(),
            audience: "byok-gateway".into(),
            client_id: "byok-gateway".into(),
            client_secret: None,
            ca_pem: None,
            allow_http: true,
            tier_claim: "subscription_tier".into(),
            tier_from_roles: false,
            leeway_secs: 30,
            jwks_min_refresh: DEFAULT_JWKS_MIN_REFRESH,
            timeout: Duration::from_secs(10),
        }
    }

    /// `{url}/realms/{realm}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/realms/{}/.well-known/openid-configuration",
            self.url, self.realm
        )
    }

    fn realm_url(&self) -> String {
        format!("{}/realms/{}", self.url, self.realm)
    }

    fn admin_url(&self) -> String {
        format!("{}/admin/realms/{}", self.url, self.realm)
    }

    /// Refuses anything but https (http only when allowed).
    pub fn check_url(&self, url: &str) -> Result<(), KeycloakError> {
        let parsed = url::Url::parse(url).map_err(|_| KeycloakError::Config("not a URL".into()))?;
        match parsed.scheme() {
            "https" => Ok(()),
            "http" if self.allow_http => Ok(()),
            _ => Err(KeycloakError::Config(
                "Keycloak must be reached over https (KEYCLOAK_ALLOW_HTTP=true for development)"
                    .into(),
            )),
        }
    }

    /// An HTTP client for Keycloak: TLS verified (plus the configured CA), no redirects,
    /// no proxy surprises, bounded time.
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, KeycloakError> {
        self.check_url(&self.url)?;
        // reqwest 0.13 uses the process-wide rustls provider (ring, as everywhere here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout)
            .user_agent(concat!("byok-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &self.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| KeycloakError::Config("KEYCLOAK_CA_FILE is not PEM".into()))?;
            b = b.tls_certs_merge(certs);
        }
        b.build()
            .map_err(|e| KeycloakError::Config(format!("HTTP client: {e}")))
    }
}
