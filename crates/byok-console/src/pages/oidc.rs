//! Sign-in at the identity provider (Keycloak): OpenID Connect's authorization code flow with
//! PKCE (S256), `state` and `nonce`. The attempt's secrets wait in a short-lived HttpOnly
//! cookie scoped to `/login/oidc`; the access token the provider returns is checked by the
//! same authenticator as the API's bearer tokens (which creates the user on first sight and
//! reads the tier), and a console session is opened for that user.

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use byok_core::services::constant_time_eq;
use byok_core::{CoreError, Role};
use rand::RngCore;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Notice;
use super::login::{end_presented, login_page, signed_in, unavailable};
use crate::state::Console;
use crate::web::{local_path, secured};

const PENDING_COOKIE: &str = "byok_oidc";
/// Over https: `__Host-` (Secure, `Path=/`, no `Domain`), so that no sibling host and no
/// plain-http response can plant an attempt.
const SECURE_PENDING_COOKIE: &str = "__Host-byok_oidc";
const PENDING_PATH: &str = "/login/oidc";

fn pending_name(console: &Console) -> &'static str {
    if console.secure() {
        SECURE_PENDING_COOKIE
    } else {
        PENDING_COOKIE
    }
}
/// How long a person may take at the identity provider.
const PENDING_SECS: i64 = 600;

/// One sign-in attempt, kept in the browser between the redirect and the callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn redirect_uri(console: &Console) -> String {
    format!("{}/login/oidc/callback", console.public_url.get())
}

fn pending_cookie(console: &Console, value: String, max_age: i64) -> Cookie<'static> {
    let path = if console.secure() { "/" } else { PENDING_PATH };
    let mut c = Cookie::build(pending_name(console), value)
        .path(path)
        .http_only(true)
        .secure(console.secure())
        // The provider sends the browser back with a top-level GET: Lax carries the cookie.
        .same_site(SameSite::Lax)
        .max_age(time::Duration::seconds(max_age))
        .finish();
    if max_age == 0 {
        c.make_removal();
    }
    c
}

/// The identity-provider sign-in routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login/oidc", web::get().to(start))
        .route("/login/oidc/callback", web::get().to(callback));
}

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /login/oidc`: to the identity provider.
pub async fn start(console: web::Data<Console>, q: web::Query<StartQuery>) -> HttpResponse {
    let Some(oidc) = console.oidc.clone() else {
        return login_page(
            &console,
            StatusCode::NOT_FOUND,
            None,
            Some(Notice::error(
                "Sign-in with an identity provider is not configured here.",
            )),
        );
    };
    let pending = Pending {
        state: random(),
        nonce: random(),
        verifier: random(),
        next: local_path(q.next.as_deref(), "/keys").to_string(),
    };
    let url = match oidc
        .authorization_url(
            &redirect_uri(&console),
            &pending.state,
            &pending.nonce,
            &challenge(&pending.verifier),
        )
        .await
    {
        Ok(u) => u,
        Err(e) => return unavailable(&console, e),
    };
    let value = match serde_json::to_vec(&pending) {
        Ok(v) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
        Err(_) => return unavailable(&console, CoreError::Internal("pending sign-in".into())),
    };
    let mut res = secured(HttpResponse::SeeOther())
        .insert_header((actix_web::http::header::LOCATION, url))
        .finish();
    if let Err(e) = res.add_cookie(&pending_cookie(&console, value, PENDING_SECS)) {
        tracing::error!(error = %e, "could not set the sign-in cookie");
    }
    res
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn read_pending(req: &HttpRequest, console: &Console) -> Option<Pending> {
    let raw = req.cookie(pending_name(console))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.value())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `GET /login/oidc/callback`: back from the identity provider.
pub async fn callback(
    console: web::Data<Console>,
    req: HttpRequest,
    q: web::Query<Callback>,
) -> HttpResponse {
    let refused = |text: &str| {
        let mut res = login_page(
            &console,
            StatusCode::UNAUTHORIZED,
            None,
            Some(Notice::error(text)),
        );
        let _ = res.add_cookie(&pending_cookie(&console, String::new(), 0));
        res
    };
    let Some(oidc) = console.oidc.clone() else {
        return refused("Sign-in with an identity provider is not configured here.");
    };
    if q.error.is_some() {
        return refused("The identity provider did not sign you in. Try again.");
    }
    let (Some(code), Some(state), Some(pending)) =
        (&q.code, &q.state, read_pending(&req, &console))
    else {
        return refused(
            "This sign-in attempt is not known here (it may have expired). Start again.",
        );
    };
    if !constant_time_eq(state, &pending.state) {
        return refused(
            "This sign-in attempt is not known here (it may have expired). Start again.",
        );
    }
    let verifier = SecretString::from(pending.verifier.clone());
    let signed = match oidc
        .exchange(code, &verifier, &redirect_uri(&console), &pending.nonce)
        .await
    {
        Ok(s) => s,
        Err(CoreError::Unauthenticated) => {
            return refused("The identity provider's answer was not accepted. Start again.");
        }
        Err(e) => return unavailable(&console, e),
    };
    let principal = match console
        .authenticator
        .authenticate(&signed.access_token)
        .await
    {
        Ok(p) => p,
        Err(CoreError::Unauthenticated) => {
            return refused("Your account cannot use this service (disabled, or refused).");
        }
        Err(e) => return unavailable(&console, e),
    };
    let mut user = match console.users.get(principal.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return refused("Your account cannot use this service."),
        Err(e) => return unavailable(&console, e.into()),
    };
    if let Some(operator) = signed.operator {
        let role = if operator { Role::Operator } else { Role::User };
        if user.role != role {
            if let Err(e) = console.users.set_role(user.id, role).await {
                return unavailable(&console, e.into());
            }
            user.role = role;
        }
    }
    end_presented(&console, &req).await;
    match console.sessions.open(&user, None).await {
        Ok(opened) => {
            tracing::info!(user_id = %user.id, "console sign-in through the identity provider");
            // The return path came back through the browser: checked again.
            let mut res = signed_in(&console, &opened, local_path(Some(&pending.next), "/keys"));
            let _ = res.add_cookie(&pending_cookie(&console, String::new(), 0));
            res
        }
        Err(CoreError::Unauthenticated) => refused("Your account is disabled."),
        Err(e) => unavailable(&console, e),
    }
}
