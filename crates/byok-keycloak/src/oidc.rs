//! Local verification of the realm's access tokens against its JWKS.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::CoreError;
use byok_core::Tier;
use byok_core::ports::{ExternalIdentity, TokenVerifier};
use byok_core::services::external_user_id;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::{KeycloakError, KeycloakSettings};

/// The only algorithms a token may use: asymmetric signatures. `none` and HMAC (whose
/// "secret" an attacker could take from the public JWKS) are refused before any key lookup.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct Keys {
    issuer: String,
    jwks_uri: String,
    by_kid: HashMap<String, (Option<Algorithm>, DecodingKey)>,
}

/// Verifies access tokens of one realm.
pub struct OidcVerifier {
    http: reqwest::Client,
    settings: KeycloakSettings,
    keys: RwLock<Option<Keys>>,
    /// Held while fetching; remembers when the keys were last fetched.
    refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("discovery_url", &self.settings.discovery_url())
            .finish_non_exhaustive()
    }
}

fn unauthenticated() -> CoreError {
    CoreError::Unauthenticated
}

fn unavailable(e: impl std::fmt::Display) -> CoreError {
    tracing::warn!(error = %e, "the identity provider's keys could not be fetched");
    CoreError::Unavailable {
        code: "identity_provider_unavailable",
        message: "the identity provider cannot be reached; try again shortly".into(),
    }
}

impl OidcVerifier {
    pub fn new(settings: KeycloakSettings) -> Result<Self, KeycloakError> {
        Ok(Self {
            http: settings.http_client()?,
            settings,
            keys: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(None),
        })
    }

    fn lookup(&self, kid: &str) -> Option<(String, Option<Algorithm>, DecodingKey)> {
        let guard = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = guard.as_ref()?;
        let (alg, key) = keys.by_kid.get(kid)?;
        Some((keys.issuer.clone(), *alg, key.clone()))
    }

    /// Fetches discovery (first time) and the JWKS. Unknown-`kid` refreshes happen at most
    /// once per `jwks_min_refresh`; a caller that finds a refresh too recent gets `false`.
    async fn refresh(&self, kid: &str) -> Result<bool, CoreError> {
        let mut last = self.refresh.lock().await;
        // Someone else fetched while we waited.
        if self.lookup(kid).is_some() {
            return Ok(true);
        }
        let have_keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if last.is_some_and(|t| t.elapsed() < self.settings.jwks_min_refresh) {
            // Keys never loaded (the provider was down): say so, do not refuse the token.
            return if have_keys {
                Ok(false)
            } else {
                Err(unavailable("the keys are not loaded yet"))
            };
        }
        // Counted from the attempt, successful or not: a failing provider is not hammered.
        *last = Some(Instant::now());
        let (issuer, jwks_uri) = {
            let guard = self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_ref() {
                Some(k) => (k.issuer.clone(), k.jwks_uri.clone()),
                None => (String::new(), String::new()),
            }
        };
        let (issuer, jwks_uri) = if issuer.is_empty() {
            let d: Discovery = self.get_json(&self.settings.discovery_url()).await?;
            (d.issuer, d.jwks_uri)
        } else {
            (issuer, jwks_uri)
        };
        self.settings
            .check_url(&jwks_uri)
            .map_err(|e| unavailable(format!("jwks_uri: {e}")))?;
        let set: JwkSet = self.get_json(&jwks_uri).await?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != PublicKeyUse::Signature)
            {
                continue; // Keycloak also publishes encryption keys.
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::from_str(&key_algorithm_name(a)).ok());
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(kid, (alg, key));
            }
        }
        tracing::info!(
            keys = by_kid.len(),
            "fetched the identity provider's signing keys"
        );
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Keys {
            issuer,
            jwks_uri,
            by_kid,
        });
        Ok(self.lookup(kid).is_some())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, CoreError> {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status())));
        }
        resp.json().await.map_err(|e| unavailable(e.without_url()))
    }
}

fn key_algorithm_name(a: KeyAlgorithm) -> String {
    format!("{a:?}")
}

/// The tier a token states: the configured claim, else (when enabled) the highest realm role
/// named like a tier.
fn stated_tier(claims: &Value, settings: &KeycloakSettings) -> Option<Tier> {
    if let Some(t) = claims
        .get(&settings.tier_claim)
        .and_then(Value::as_str)
        .and_then(|s| Tier::from_str(s).ok())
    {
        return Some(t);
    }
    if !settings.tier_from_roles {
        return None;
    }
    claims
        .pointer("/realm_access/roles")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|r| Tier::from_str(r).ok())
        .reduce(|best, t| if t.allows(best) { t } else { best })
}

/// Whether the provider vouches for the `email` claim: only a JSON `true` counts (absent,
/// `false`, `"true"` or anything else do not).
fn email_verified(claims: &Value) -> bool {
    claims.get("email_verified") == Some(&Value::Bool(true))
}

fn audience_ok(claims: &Value, audience: &str) -> bool {
    let in_aud = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
        _ => false,
    };
    in_aud || claims.get("azp").and_then(Value::as_str) == Some(audience)
}

impl OidcVerifier {
    /// The issuer and claims of a token whose signature (an allowed asymmetric algorithm, a
    /// key of the realm), issuer, expiry and not-before check out.
    pub(crate) async fn decode_verified(&self, token: &str) -> Result<(String, Value), CoreError> {
        // Garbage is refused before any network activity.
        if token.len() > 16 * 1024 || token.split('.').count() != 3 {
            return Err(unauthenticated());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated())?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(unauthenticated());
        }
        let kid = header.kid.ok_or_else(unauthenticated)?;
        let found = match self.lookup(&kid) {
            Some(k) => Some(k),
            None if self.refresh(&kid).await? => self.lookup(&kid),
            None => None,
        };
        let (issuer, key_alg, key) = found.ok_or_else(unauthenticated)?;
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(unauthenticated());
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[issuer.as_str()]);
        validation.validate_aud = false; // checked by each caller
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway_secs;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|_| unauthenticated())?;
        Ok((issuer, data.claims))
    }

    /// Checks an ID token from the code exchange: signed by the realm, for `client_id`
    /// (`aud`), carrying `nonce`, for the same subject as the access token.
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
        client_id: &str,
        nonce: &str,
        subject: &str,
    ) -> Result<(), CoreError> {
        let (_, claims) = self.decode_verified(token).await?;
        if id_token_claims_ok(&claims, client_id, nonce, subject) {
            Ok(())
        } else {
            Err(unauthenticated())
        }
    }
}

/// The claims an ID token from the code exchange must carry (its signature, issuer and expiry
/// already checked): for `client_id` (the only audience, or one of several with `azp` naming
/// it; an `azp` present must name it), not an access or refresh token (`typ` absent or `ID`),
/// the attempt's `nonce`, and the access token's `subject`.
fn id_token_claims_ok(claims: &Value, client_id: &str, nonce: &str, subject: &str) -> bool {
    let azp = claims.get("azp").and_then(Value::as_str);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id && azp.is_none_or(|p| p == client_id),
        // Several audiences: this client must be the authorized party (OIDC Core 3.1.3.7).
        Some(Value::Array(a)) => {
            a.iter().any(|x| x.as_str() == Some(client_id))
                && (a.len() == 1 || azp == Some(client_id))
        }
        _ => false,
    };
    // Keycloak marks its ID tokens `typ: ID`; an access or refresh token is not one.
    let typ_ok = claims
        .get("typ")
        .and_then(Value::as_str)
        .is_none_or(|t| t.eq_ignore_ascii_case("ID"));
    let nonce_ok = claims
        .get("nonce")
        .and_then(Value::as_str)
        .is_some_and(|n| byok_core::services::constant_time_eq(n, nonce));
    let same_subject = claims.get("sub").and_then(Value::as_str) == Some(subject);
    aud_ok && typ_ok && nonce_ok && same_subject
}

#[async_trait]
impl TokenVerifier for OidcVerifier {
    async fn verify(&self, token: &str) -> Result<ExternalIdentity, CoreError> {
        let (issuer, claims) = self.decode_verified(token).await?;
        // Keycloak signs ID and refresh tokens with the same key: only access tokens count.
        if claims
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.eq_ignore_ascii_case("Bearer"))
        {
            return Err(unauthenticated());
        }
        if !audience_ok(&claims, &self.settings.audience) {
            return Err(unauthenticated());
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(unauthenticated)?
            .to_string();
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let email_verified = email_verified(&claims);
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|e| DateTime::<Utc>::from_timestamp(e, 0))
            .ok_or_else(unauthenticated)?;
        Ok(ExternalIdentity {
            user_id: external_user_id(&issuer, &subject),
            subject,
            issuer: issuer.to_string(),
            email,
            email_verified,
            tier: stated_tier(&claims, &self.settings),
            expires_at,
        })
    }
}

/// How long a refresh for an unknown `kid` blocks the next one (the default).
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_token_typ_azp_aud_nonce_and_subject_rules() {
        let ok = |extra: Value| {
            let mut c = json!({"aud": "byok", "typ": "ID", "nonce": "n-1", "sub": "s-1"});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            id_token_claims_ok(&c, "byok", "n-1", "s-1")
        };
        // Accepted: Keycloak's shape, `typ` absent (other providers), `azp` naming this client,
        // several audiences with `azp` naming this client, one audience in an array.
        assert!(ok(json!({})));
        assert!(ok(json!({"typ": null})));
        assert!(ok(json!({"typ": "id"})));
        assert!(ok(json!({"azp": "byok"})));
        assert!(ok(json!({"aud": ["other", "byok"], "azp": "byok"})));
        assert!(ok(json!({"aud": ["byok"]})));
        // An access or refresh token of the realm is not an ID token.
        assert!(!ok(json!({"typ": "Bearer"})));
        assert!(!ok(json!({"typ": "Refresh"})));
        // Issued to another client: `azp` naming another party, or several audiences without
        // `azp` naming this client.
        assert!(!ok(json!({"azp": "other"})));
        assert!(!ok(json!({"aud": ["other", "byok"]})));
        assert!(!ok(json!({"aud": ["other", "byok"], "azp": "other"})));
        assert!(!ok(json!({"aud": "other"})));
        assert!(!ok(json!({"aud": ["other"], "azp": "byok"})));
        assert!(!ok(json!({"aud": null})));
        assert!(!ok(json!({"aud": 7})));
        // Another attempt's nonce, or none; another subject, or none.
        assert!(!ok(json!({"nonce": "n-2"})));
        assert!(!ok(json!({"nonce": null})));
        assert!(!ok(json!({"sub": "s-2"})));
        assert!(!ok(json!({"sub": null})));
    }

    #[test]
    fn only_a_json_true_verifies_the_email() {
        assert!(email_verified(&json!({"email_verified": true})));
        for claims in [
            json!({}),
            json!({"email_verified": false}),
            json!({"email_verified": "true"}),
            json!({"email_verified": 1}),
            json!({"email_verified": null}),
        ] {
            assert!(!email_verified(&claims), "{claims}");
        }
    }

    #[test]
    fn audience_is_aud_or_azp() {
        assert!(audience_ok(&json!({"aud": "byok"}), "byok"));
        assert!(audience_ok(&json!({"aud": ["account", "byok"]}), "byok"));
        assert!(audience_ok(
            &json!({"aud": "account", "azp": "byok"}),
            "byok"
        ));
        assert!(!audience_ok(
            &json!({"aud": "account", "azp": "other"}),
            "byok"
        ));
        assert!(!audience_ok(&json!({}), "byok"));
    }

    #[test]
    fn tier_from_claim_then_roles() {
        let mut s = KeycloakSettings::for_testing("http://127.0.0.1:1");
        assert_eq!(
            stated_tier(&json!({"subscription_tier": "Professional"}), &s),
            Some(Tier::Professional)
        );
        let roles = json!({"realm_access": {"roles": ["offline_access", "starter", "enterprise"]}});
        assert_eq!(stated_tier(&roles, &s), None);
        s.tier_from_roles = true;
        assert_eq!(stated_tier(&roles, &s), Some(Tier::Enterprise));
        assert_eq!(stated_tier(&json!({"subscription_tier": "gold"}), &s), None);
    }
}
