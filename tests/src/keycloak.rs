//! A loopback stand-in for one Keycloak realm (`byok`), written to Keycloak's documentation:
//! OIDC discovery (`/realms/byok/.well-known/openid-configuration`), the realm's keys
//! (`/realms/byok/protocol/openid-connect/certs`), the token endpoint (client-credentials
//! grant for the service account), and the Admin REST API's users
//! (`GET`/`PUT /admin/realms/byok/users/{id}`, `GET /admin/realms/byok/users?email=&exact=` and
//! `?first=&max=`), with its error statuses: 401 (no or bad bearer), 403 (service account
//! without `view-users`/`manage-users`), 404 (`{"error":"User not found"}`), 409 on a `PUT`
//! whose email another user has (`{"errorMessage":"User exists with same email"}`).
//!
//! Tokens are signed by the tests themselves (ES256 keys made here), so every negative case
//! (expired, wrong issuer or audience, `alg: none`, HS256 with the public key, unknown `kid`,
//! rotation) can be produced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::http::{Request, read_request, serve_loopback};
use crate::tls::TestPki;

pub const REALM: &str = "byok";
pub const CLIENT_ID: &str = "byok-gateway";
pub const CLIENT_SECRET: &str = "kc-client-secret-CANARY-0123";

/// One signing key: its id, private key (PEM), and public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub private_pem: String,
    pub public_pem: String,
    pub jwk: Value,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let raw = key.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                         "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
        Self {
            kid: kid.to_string(),
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
            jwk,
        }
    }

    /// An ES256 token with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

#[derive(Default)]
struct State {
    keys: Vec<SigningKey>,
    users: BTreeMap<String, Value>,
    admin_tokens: Vec<String>,
    puts: usize,
}

pub struct KeycloakStandIn {
    pub url: String,
    state: Arc<Mutex<State>>,
    pub jwks_fetches: Arc<AtomicUsize>,
    pub token_requests: Arc<AtomicUsize>,
    /// When set, the admin API answers 403 (the service account lacks its roles).
    pub forbid_admin: Arc<AtomicBool>,
}

impl KeycloakStandIn {
    /// Plain HTTP on loopback.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// HTTPS with the server certificate of `pki`.
    pub async fn start_tls(pki: &TestPki) -> Self {
        Self::serve(Some(TlsAcceptor::from(pki.server_config(false)))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> Self {
        let state = Arc::new(Mutex::new(State {
            keys: vec![SigningKey::generate("key-1")],
            ..State::default()
        }));
        let (jwks, tokens, forbid): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicBool>) =
            Default::default();
        // The issuer names the server's own URL, known once it listens.
        let url_cell: Arc<std::sync::OnceLock<String>> = Arc::default();
        let shared = Arc::new(Shared {
            url: url_cell.clone(),
            state: state.clone(),
            jwks: jwks.clone(),
            tokens: tokens.clone(),
            forbid: forbid.clone(),
        });
        let url = serve_loopback(tls, move |stream, _| {
            let shared = shared.clone();
            async move { handle(stream, &shared).await }
        })
        .await;
        let _ = url_cell.set(url.clone());
        Self {
            url,
            state,
            jwks_fetches: jwks,
            token_requests: tokens,
            forbid_admin: forbid,
        }
    }

    /// The issuer tokens of this realm carry.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.url)
    }

    /// The current (first) signing key.
    pub fn key(&self) -> SigningKey {
        self.state.lock().unwrap().keys[0].clone()
    }

    /// Rotation: a new key signs from now on; the old one stays published (as Keycloak does
    /// until the old key is removed) unless `drop_old`.
    pub fn rotate(&self, kid: &str, drop_old: bool) -> SigningKey {
        let key = SigningKey::generate(kid);
        let mut s = self.state.lock().unwrap();
        if drop_old {
            s.keys.clear();
        }
        s.keys.insert(0, key.clone());
        key
    }

    /// Standard claims for `sub` (a verified email), valid for an hour; `extra` is merged in.
    pub fn claims(&self, sub: &str, extra: Value) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({"iss": self.issuer(), "sub": sub, "aud": CLIENT_ID, "azp": CLIENT_ID,
                           "exp": now + 3600, "iat": now, "nbf": now - 5,
                           "email": format!("{}@example.com", &sub[..8.min(sub.len())]),
                           "email_verified": true, "typ": "Bearer"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// A valid token for `sub` with `extra` claims.
    pub fn token(&self, sub: &str, extra: Value) -> String {
        self.key().sign(&self.claims(sub, extra))
    }

    /// Adds a user (a UserRepresentation).
    pub fn add_user(&self, id: &str, email: &str, attributes: Value) {
        self.state.lock().unwrap().users.insert(
            id.to_string(),
            json!({"id": id, "username": email, "email": email, "enabled": true,
                   "emailVerified": true, "createdTimestamp": 1_700_000_000_000u64,
                   "attributes": attributes}),
        );
    }

    /// Changes a stored user (e.g. `enabled`, attributes), as an administrator would.
    pub fn update_user(&self, id: &str, patch: Value) {
        let mut s = self.state.lock().unwrap();
        let user = s.users.get_mut(id).unwrap();
        for (k, v) in patch.as_object().unwrap() {
            user[k] = v.clone();
        }
    }

    /// Deletes a user.
    pub fn remove_user(&self, id: &str) {
        self.state.lock().unwrap().users.remove(id);
    }

    pub fn user(&self, id: &str) -> Value {
        self.state.lock().unwrap().users[id].clone()
    }

    /// Forgets every admin token issued (as a Keycloak restart or a revoked session would):
    /// the next admin call gets 401.
    pub fn revoke_admin_tokens(&self) {
        self.state.lock().unwrap().admin_tokens.clear();
    }

    pub fn puts(&self) -> usize {
        self.state.lock().unwrap().puts
    }
}

struct Shared {
    url: Arc<std::sync::OnceLock<String>>,
    state: Arc<Mutex<State>>,
    jwks: Arc<AtomicUsize>,
    tokens: Arc<AtomicUsize>,
    forbid: Arc<AtomicBool>,
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S, shared: &Shared) {
    let (r, mut w) = tokio::io::split(stream);
    let Ok(req) = read_request(r).await else {
        return;
    };
    let (status, body) = answer(
        &req,
        shared.url.get().map(String::as_str).unwrap_or_default(),
        &shared.state,
        &shared.jwks,
        &shared.tokens,
        &shared.forbid,
    );
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        text.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.write_all(text.as_bytes()).await;
    let _ = w.shutdown().await;
}

fn error(status: u16, body: Value) -> (u16, Value) {
    (status, body)
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn answer(
    req: &Request,
    base: &str,
    state: &Mutex<State>,
    jwks: &AtomicUsize,
    tokens: &AtomicUsize,
    forbid: &AtomicBool,
) -> (u16, Value) {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let realm = format!("/realms/{REALM}");
    if req.method == "GET" && path == format!("{realm}/.well-known/openid-configuration") {
        let iss = format!("{base}{realm}");
        return (
            200,
            json!({"issuer": iss, "jwks_uri": format!("{iss}/protocol/openid-connect/certs"),
                   "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
                   "authorization_endpoint": format!("{iss}/protocol/openid-connect/auth"),
                   "id_token_signing_alg_values_supported": ["RS256", "ES256"]}),
        );
    }
    if req.method == "GET" && path == format!("{realm}/protocol/openid-connect/certs") {
        jwks.fetch_add(1, Ordering::SeqCst);
        let s = state.lock().unwrap();
        // Keycloak publishes an encryption key beside the signing keys.
        let mut keys: Vec<Value> = s.keys.iter().map(|k| k.jwk.clone()).collect();
        keys.push(json!({"kid": "enc-key", "kty": "RSA", "alg": "RSA-OAEP", "use": "enc",
                         "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
                         "e": "AQAB"}));
        return (200, json!({"keys": keys}));
    }
    if req.method == "POST" && path == format!("{realm}/protocol/openid-connect/token") {
        tokens.fetch_add(1, Ordering::SeqCst);
        let f = form(&req.body);
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return error(
                401,
                json!({"error": "unauthorized_client",
                       "error_description": "Invalid client or Invalid client credentials"}),
            );
        }
        let mut s = state.lock().unwrap();
        let t = format!("admin-access-{}", s.admin_tokens.len());
        s.admin_tokens.push(t.clone());
        return (
            200,
            json!({"access_token": t, "expires_in": 300, "refresh_expires_in": 0,
                   "token_type": "Bearer", "not-before-policy": 0, "scope": "profile email"}),
        );
    }
    let admin = format!("/admin/realms/{REALM}/users");
    if !path.starts_with(&admin) {
        return error(
            404,
            json!({"error": "Unable to find matching target resource method"}),
        );
    }
    let bearer = req
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let mut s = state.lock().unwrap();
    if !s.admin_tokens.contains(&bearer) {
        return error(401, json!({"error": "HTTP 401 Unauthorized"}));
    }
    if forbid.load(Ordering::SeqCst) {
        return error(403, json!({"error": "unknown_error"}));
    }
    let rest = path[admin.len()..].trim_start_matches('/');
    let q = form(query.as_bytes());
    match (req.method.as_str(), rest) {
        ("GET", "") => {
            let list: Vec<Value> = if let Some(email) = q.get("email") {
                s.users
                    .values()
                    .filter(|u| u["email"].as_str() == Some(email.as_str()))
                    .cloned()
                    .collect()
            } else {
                let first: usize = q.get("first").and_then(|v| v.parse().ok()).unwrap_or(0);
                let max: usize = q.get("max").and_then(|v| v.parse().ok()).unwrap_or(100);
                s.users.values().skip(first).take(max).cloned().collect()
            };
            (200, Value::Array(list))
        }
        ("GET", id) => match s.users.get(id) {
            Some(u) => (200, u.clone()),
            None => error(404, json!({"error": "User not found"})),
        },
        ("PUT", id) => {
            let Ok(update) = serde_json::from_slice::<Value>(&req.body) else {
                return error(400, json!({"error": "unknown_error"}));
            };
            if !s.users.contains_key(id) {
                return error(404, json!({"error": "User not found"}));
            }
            if let Some(email) = update.get("email").and_then(Value::as_str)
                && s.users
                    .iter()
                    .any(|(other, u)| other != id && u["email"].as_str() == Some(email))
            {
                return error(409, json!({"errorMessage": "User exists with same email"}));
            }
            s.puts += 1;
            let user = s.users.get_mut(id).unwrap();
            // Fields present replace the stored ones; `attributes` replaces the whole map.
            for (k, v) in update.as_object().unwrap() {
                if k != "id" {
                    user[k] = v.clone();
                }
            }
            (204, Value::Null)
        }
        _ => error(405, json!({"error": "HTTP 405 Method Not Allowed"})),
    }
}
