//! Browser sign-in at the realm: OpenID Connect's authorization code flow with PKCE (S256),
//! state and nonce (the `BrowserLogin` port).

use std::sync::Arc;

use async_trait::async_trait;
use byok_core::CoreError;
use byok_core::ports::{BrowserLogin, BrowserSignIn};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::oidc::OidcVerifier;
use crate::{KeycloakError, KeycloakSettings};

#[derive(Deserialize)]
struct Endpoints {
    authorization_endpoint: String,
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    id_token: Option<String>,
}

/// The realm's authorization code flow for the console.
pub struct KeycloakLogin {
    http: reqwest::Client,
    settings: KeycloakSettings,
    verifier: Arc<OidcVerifier>,
    /// The realm role that makes a user an operator (`KEYCLOAK_OPERATOR_ROLE`), if any.
    operator_role: Option<String>,
    endpoints: OnceCell<Endpoints>,
}

impl std::fmt::Debug for KeycloakLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeycloakLogin")
            .field("discovery_url", &self.settings.discovery_url())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> CoreError {
    tracing::warn!(error = %e, "the identity provider could not complete a sign-in");
    CoreError::Unavailable {
        code: "identity_provider_unavailable",
        message: "the identity provider cannot be reached; try again shortly".into(),
    }
}

impl KeycloakLogin {
    pub fn new(
        settings: KeycloakSettings,
        verifier: Arc<OidcVerifier>,
        operator_role: Option<String>,
    ) -> Result<Self, KeycloakError> {
        Ok(Self {
            http: settings.http_client()?,
            settings,
            verifier,
            operator_role,
            endpoints: OnceCell::new(),
        })
    }

    async fn endpoints(&self) -> Result<&Endpoints, CoreError> {
        self.endpoints
            .get_or_try_init(|| async {
                let resp = self
                    .http
                    .get(self.settings.discovery_url())
                    .send()
                    .await
                    .map_err(|e| unavailable(e.without_url()))?;
                if !resp.status().is_success() {
                    return Err(unavailable(format!("discovery: HTTP {}", resp.status())));
                }
                let e: Endpoints = resp
                    .json()
                    .await
                    .map_err(|e| unavailable(e.without_url()))?;
                for url in [&e.authorization_endpoint, &e.token_endpoint] {
                    self.settings.check_url(url).map_err(unavailable)?;
                }
                Ok(e)
            })
            .await
    }
}

/// Whether the access token's realm roles include `role`.
fn has_realm_role(claims: &Value, role: &str) -> bool {
    claims
        .pointer("/realm_access/roles")
        .and_then(Value::as_array)
        .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(role)))
}

#[async_trait]
impl BrowserLogin for KeycloakLogin {
    async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, CoreError> {
        let endpoints = self.endpoints().await?;
        let mut url = url::Url::parse(&endpoints.authorization_endpoint)
            .map_err(|_| unavailable("authorization_endpoint is not a URL"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn exchange(
        &self,
        code: &str,
        code_verifier: &SecretString,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<BrowserSignIn, CoreError> {
        if code.is_empty() || code.len() > 4096 {
            return Err(CoreError::Unauthenticated);
        }
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", code_verifier.expose_secret()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.expose_secret()));
        }
        let resp = self
            .http
            .post(&endpoints.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(unavailable(format!("token endpoint: HTTP {status}")));
        }
        if !status.is_success() {
            // A code used twice, expired, or for another client or verifier.
            tracing::info!(
                status = status.as_u16(),
                "the identity provider refused a sign-in code"
            );
            return Err(CoreError::Unauthenticated);
        }
        let answer: TokenAnswer = resp
            .json()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        let id_token = answer.id_token.ok_or(CoreError::Unauthenticated)?;
        let (_, claims) = self.verifier.decode_verified(&answer.access_token).await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(CoreError::Unauthenticated)?;
        self.verifier
            .verify_id_token(&id_token, &self.settings.client_id, nonce, subject)
            .await?;
        Ok(BrowserSignIn {
            operator: self
                .operator_role
                .as_deref()
                .map(|role| has_realm_role(&claims, role)),
            access_token: SecretString::from(answer.access_token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn realm_roles() {
        let c = json!({"realm_access": {"roles": ["offline_access", "byok-operator"]}});
        assert!(has_realm_role(&c, "byok-operator"));
        assert!(!has_realm_role(&c, "admin"));
        assert!(!has_realm_role(&json!({}), "byok-operator"));
    }
}
