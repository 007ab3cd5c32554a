//! The Keycloak Admin REST API through a confidential client's service account.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::ports::{DirectoryAccount, ExternalAccount, IdentityDirectory, TierSource};
use byok_core::{CoreError, Tier};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{KeycloakError, KeycloakSettings};

/// A token is renewed this long before Keycloak says it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// A user as the admin API returns it, kept whole: `PUT` sends it back with only the
/// attributes this service owns changed, so nothing else is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRepresentation(pub Value);

impl UserRepresentation {
    /// The attributes: each one a list of values, as Keycloak stores them.
    pub fn attributes(&self) -> BTreeMap<String, Vec<String>> {
        self.0
            .get("attributes")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let values = match v {
                            Value::Array(a) => a
                                .iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect(),
                            Value::String(s) => vec![s.clone()],
                            _ => Vec::new(),
                        };
                        (k.clone(), values)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of an attribute.
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.attributes().remove(name)?.into_iter().next()
    }

    /// Replaces the attribute map (whole, as Keycloak's update does).
    pub fn set_attributes(&mut self, attributes: BTreeMap<String, Vec<String>>) {
        if !self.0.is_object() {
            self.0 = json!({});
        }
        self.0["attributes"] = json!(attributes);
    }

    pub fn id(&self) -> Option<&str> {
        self.0.get("id").and_then(Value::as_str)
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// Calls the admin API; its access token is cached and renewed by one caller at a time.
pub struct AdminClient {
    http: reqwest::Client,
    settings: KeycloakSettings,
    secret: SecretString,
    token: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
    /// The realm's issuer, from its discovery document (read once).
    issuer: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("realm", &self.settings.realm)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> KeycloakError {
    KeycloakError::Unavailable(e.to_string())
}

impl AdminClient {
    /// `None` when no client secret is configured (no admin API then).
    pub fn new(settings: KeycloakSettings) -> Result<Option<Self>, KeycloakError> {
        let Some(secret) = settings.client_secret.clone() else {
            return Ok(None);
        };
        Ok(Some(Self {
            http: settings.http_client()?,
            settings,
            secret,
            token: tokio::sync::Mutex::new(None),
            issuer: tokio::sync::OnceCell::new(),
        }))
    }

    /// A valid access token: the cached one, or a new one from the client-credentials grant
    /// (one request at a time; waiting callers reuse its answer).
    async fn access_token(&self, renew: bool) -> Result<SecretString, KeycloakError> {
        let mut slot = self.token.lock().await;
        if !renew
            && let Some((t, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let url = format!(
            "{}/protocol/openid-connect/token",
            self.settings.realm_url()
        );
        let resp = self
            .http
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.secret.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        match resp.status() {
            s if s.is_success() => {}
            s @ (StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN) => {
                return Err(KeycloakError::Forbidden(s.as_u16()));
            }
            s => return Err(unavailable(format!("token endpoint answered {s}"))),
        }
        let answer: TokenAnswer = resp
            .json()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        let lifetime = Duration::from_secs(answer.expires_in.max(1));
        let until = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        let token = SecretString::from(answer.access_token);
        *slot = Some((token.clone(), until));
        Ok(token)
    }

    /// One admin call; a 401 renews the token and retries once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), KeycloakError> {
        let url = format!("{}{path}", self.settings.admin_url());
        let mut renew = false;
        loop {
            let token = self.access_token(renew).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| unavailable(e.without_url()))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renew {
                renew = true;
                continue;
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| unavailable(e.without_url()))?;
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            return match status {
                s if s.is_success() => Ok((s, value)),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    Err(KeycloakError::Forbidden(status.as_u16()))
                }
                StatusCode::NOT_FOUND => Err(KeycloakError::NotFound),
                StatusCode::CONFLICT => Err(KeycloakError::Conflict(
                    value
                        .get("errorMessage")
                        .and_then(Value::as_str)
                        .unwrap_or("conflict")
                        .to_string(),
                )),
                s => Err(unavailable(format!("admin API answered {s}"))),
            };
        }
    }

    fn user_path(id: &str) -> Result<String, KeycloakError> {
        // Ids are path segments: nothing that could change the path.
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(KeycloakError::NotFound);
        }
        Ok(format!("/users/{id}"))
    }

    /// `GET /admin/realms/{realm}/users/{id}`.
    pub async fn get_user(&self, id: &str) -> Result<UserRepresentation, KeycloakError> {
        let (_, v) = self.call(Method::GET, &Self::user_path(id)?, None).await?;
        Ok(UserRepresentation(v))
    }

    /// `PUT /admin/realms/{realm}/users/{id}` with the whole representation.
    pub async fn put_user(&self, id: &str, user: &UserRepresentation) -> Result<(), KeycloakError> {
        self.call(Method::PUT, &Self::user_path(id)?, Some(&user.0))
            .await
            .map(|_| ())
    }

    /// Users whose email is exactly `email`.
    pub async fn find_by_email(
        &self,
        email: &str,
    ) -> Result<Vec<UserRepresentation>, KeycloakError> {
        let mut url = url::Url::parse("http://x/users").map_err(unavailable)?;
        url.query_pairs_mut()
            .append_pair("email", email)
            .append_pair("exact", "true")
            .append_pair("briefRepresentation", "false");
        let path = format!("/users?{}", url.query().unwrap_or_default());
        let (_, v) = self.call(Method::GET, &path, None).await?;
        Ok(v.as_array()
            .map(|a| a.iter().cloned().map(UserRepresentation).collect())
            .unwrap_or_default())
    }

    /// The issuer the realm's tokens carry: the `issuer` of its discovery document, the very
    /// value `OidcVerifier` holds tokens to (read once, then kept).
    pub async fn issuer(&self) -> Result<String, KeycloakError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
        }
        self.issuer
            .get_or_try_init(|| async {
                let resp = self
                    .http
                    .get(self.settings.discovery_url())
                    .send()
                    .await
                    .map_err(|e| unavailable(e.without_url()))?;
                if !resp.status().is_success() {
                    return Err(unavailable(format!("discovery answered {}", resp.status())));
                }
                let d: Discovery = resp
                    .json()
                    .await
                    .map_err(|e| unavailable(e.without_url()))?;
                Ok(d.issuer)
            })
            .await
            .cloned()
    }

    /// Every user id of the realm, paged (`first`/`max`), for the legacy import.
    pub async fn list_users(
        &self,
        first: u32,
        max: u32,
    ) -> Result<Vec<UserRepresentation>, KeycloakError> {
        let path = format!("/users?first={first}&max={max}&briefRepresentation=false");
        let (_, v) = self.call(Method::GET, &path, None).await?;
        Ok(v.as_array()
            .map(|a| a.iter().cloned().map(UserRepresentation).collect())
            .unwrap_or_default())
    }
}

#[async_trait]
impl TierSource for AdminClient {
    async fn tier(&self, subject: &str) -> Result<Option<Tier>, CoreError> {
        match self.get_user(subject).await {
            Ok(u) => Ok(u
                .attribute("subscription_tier")
                .and_then(|t| Tier::from_str(&t).ok())),
            Err(KeycloakError::NotFound) => Ok(None),
            Err(e) => Err(CoreError::Unavailable {
                code: "identity_provider_unavailable",
                message: e.to_string(),
            }),
        }
    }

    async fn account(&self, subject: &str) -> Result<Option<ExternalAccount>, CoreError> {
        match self.get_user(subject).await {
            Ok(u) => Ok(Some(ExternalAccount {
                // Keycloak's UserRepresentation: `enabled` (absent means enabled).
                enabled: u.0.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                tier: u
                    .attribute("subscription_tier")
                    .and_then(|t| Tier::from_str(&t).ok()),
            })),
            Err(KeycloakError::NotFound) => Ok(None),
            Err(e) => Err(CoreError::Unavailable {
                code: "identity_provider_unavailable",
                message: e.to_string(),
            }),
        }
    }
}

#[async_trait]
impl IdentityDirectory for AdminClient {
    async fn accounts_by_email(&self, email: &str) -> Result<Vec<DirectoryAccount>, CoreError> {
        let found = match self.issuer().await {
            Ok(issuer) => self.find_by_email(email).await.map(|u| (issuer, u)),
            Err(e) => Err(e),
        };
        let (issuer, users) = found.map_err(|e| {
            tracing::warn!(error = %e, "Keycloak could not be asked for the accounts of an email");
            CoreError::Unavailable {
                code: "identity_provider_unavailable",
                message: "the identity provider cannot be reached; try again shortly".into(),
            }
        })?;
        Ok(users
            .iter()
            // `exact=true` is a case-insensitive equality in current Keycloak; older ones
            // matched substrings: only the email itself counts.
            .filter(|u| {
                u.0.get("email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
            .filter_map(|u| {
                Some(DirectoryAccount {
                    subject: u.id()?.to_string(),
                    issuer: issuer.clone(),
                    email_verified: u
                        .0
                        .get("emailVerified")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    // Keycloak's UserRepresentation: `enabled` (absent means enabled).
                    enabled: u.0.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                    tier: u
                        .attribute("subscription_tier")
                        .and_then(|t| Tier::from_str(&t).ok()),
                })
            })
            .collect())
    }
}
