//! What the pages need: the core services, and what the app decides for them.

use std::sync::Arc;

use actix_web::http::StatusCode;
use async_trait::async_trait;
use byok_core::ports::{Authenticator, BrowserLogin, RateLimiter, UsageRepository, UserRepository};
use byok_core::services::{
    Administration, KeyVault, RouteResolver, ServerRegistry, SessionService, TokenService,
};
use byok_core::{CoreError, CredentialKind, Principal};

/// How a core error is shown, decided by the application (byok-server's one status
/// decision), never here.
#[derive(Debug, Clone)]
pub struct ErrorView {
    pub status: StatusCode,
    /// The stable code (as on `/api/v1`).
    pub code: &'static str,
    /// A message safe to show (never a secret or an internal cause).
    pub message: String,
}

/// The answer to a prompt sent through the gateway from the Try it page.
#[derive(Debug, Clone)]
pub struct PromptAnswer {
    pub text: String,
    pub model: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: u64,
    /// Whose key answered (the platform's after a fallback from the user's own).
    pub credential: CredentialKind,
}

/// Sends a prompt through the gateway as `who` (implemented by the application, which owns
/// the gateway). `req` is the page's request: its id and trace context carry on to the call.
/// Errors come as the application words them (a provider's message on the platform's key is
/// already replaced by a generic one).
#[async_trait(?Send)]
pub trait PromptRunner: Send + Sync + 'static {
    async fn run(
        &self,
        req: &actix_web::HttpRequest,
        who: &Principal,
        model: &str,
        prompt: &str,
    ) -> Result<PromptAnswer, ErrorView>;
}

/// The console's state: the core services, and settings.
#[derive(Clone)]
pub struct Console {
    pub sessions: SessionService,
    /// Checks gateway tokens pasted on the sign-in page.
    pub tokens: Arc<TokenService>,
    pub vault: KeyVault,
    pub servers: ServerRegistry,
    pub routes: Arc<RouteResolver>,
    pub users: Arc<dyn UserRepository>,
    pub usage: Arc<dyn UsageRepository>,
    /// Counts sign-in attempts.
    pub limiter: Arc<dyn RateLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client (`BYOK_TRUSTED_PROXIES`).
    pub trusted_proxies: byok_core::client_addr::TrustedProxies,
    /// The authenticator of the JSON API (for the record; pages use sessions).
    pub authenticator: Arc<dyn Authenticator>,
    /// This service's public URL (`BYOK_PUBLIC_URL`), without a trailing slash.
    pub public_url: Arc<PublicUrl>,
    /// Extra origins allowed to post forms (`BYOK_ALLOWED_ORIGINS`).
    pub allowed_origins: Vec<String>,
    /// Where tier refusals point (`BYOK_UPGRADE_URL`).
    pub upgrade_url: String,
    /// The application's decision for a core error (status, code, safe message).
    pub errors: fn(CoreError) -> ErrorView,
    /// Sends Try it prompts through the gateway.
    pub prompts: Option<Arc<dyn PromptRunner>>,
    /// Sign-in at the identity provider (Keycloak mode), offered on the sign-in page.
    pub oidc: Option<Arc<dyn BrowserLogin>>,
    /// Accounts and service figures, for operators.
    pub admin: Administration,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A field a page refused itself, before the core saw the form (no number where one is
    /// needed, nothing chosen): shown like a core validation error (`code` as the core would
    /// name it), with the status the application decides for one, never one chosen here.
    pub fn invalid_field(&self, code: &'static str, message: impl Into<String>) -> ErrorView {
        (self.errors)(CoreError::InvalidInput {
            code,
            message: message.into(),
        })
    }

    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure(&self) -> bool {
        self.public_url.get().starts_with("https://")
    }
}

/// The service's public URL; set once more after binding when it was derived from the bind
/// address (port 0 picks the port then).
#[derive(Debug, Default)]
pub struct PublicUrl(std::sync::RwLock<String>);

impl PublicUrl {
    pub fn new(url: String) -> Self {
        Self(std::sync::RwLock::new(url))
    }

    /// The URL, without a trailing slash.
    pub fn get(&self) -> String {
        self.0.read().map(|u| u.clone()).unwrap_or_default()
    }

    /// Replaces the URL (start-up only).
    pub fn set(&self, url: String) {
        if let Ok(mut u) = self.0.write() {
            *u = url;
        }
    }
}
