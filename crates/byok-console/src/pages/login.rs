//! Signing in (a single-use link, or a gateway token pasted in the form) and out.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use byok_core::CoreError;
use byok_core::ports::{Authenticator, RateDecision};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Chrome, Notice, forbidden};
use crate::session::{cleared_cookie, presented, session_cookie};
use crate::state::Console;
use crate::web::{client_ip, local_path, page, same_origin, see_other};

/// Sign-in attempts per client address per minute.
const ATTEMPTS_PER_MINUTE: u64 = 10;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    /// Sign-in at the identity provider is offered.
    oidc: bool,
}

#[derive(Template)]
#[template(path = "login_link.html")]
struct LinkPage {
    chrome: Chrome,
    secret: String,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

/// The sign-in routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(form))
        .route("/login", web::post().to(with_token))
        .route("/login/link", web::post().to(with_link))
        .route("/login/{secret}", web::get().to(link_page))
        .route("/logout", web::post().to(logout));
}

/// `GET /login`
pub async fn form(console: web::Data<Console>, q: web::Query<NextQuery>) -> HttpResponse {
    let notice = q
        .signed_out
        .as_ref()
        .map(|_| Notice::ok("You are signed out."));
    login_page(&console, StatusCode::OK, q.next.as_deref(), notice)
}

pub(super) fn login_page(
    console: &Console,
    status: StatusCode,
    next: Option<&str>,
    notice: Option<Notice>,
) -> HttpResponse {
    page(
        status,
        &LoginPage {
            chrome: Chrome::anonymous().with_notice(notice),
            next: local_path(next, "/keys").to_string(),
            oidc: console.oidc.is_some(),
        },
    )
}

/// Counts an attempt from this client (its address behind trusted proxies); `false` when
/// over the limit.
async fn admit(console: &Console, req: &HttpRequest) -> bool {
    let who = client_ip(req, &console.trusted_proxies)
        .map_or_else(|| "unknown".to_string(), byok_core::client_addr::limit_key);
    matches!(
        console
            .limiter
            .hit(
                &format!("console-login:{who}"),
                ATTEMPTS_PER_MINUTE,
                Duration::from_secs(60)
            )
            .await,
        RateDecision::Allowed
    )
}

fn too_many(console: &Console) -> HttpResponse {
    login_page(
        console,
        StatusCode::TOO_MANY_REQUESTS,
        None,
        Some(Notice::error(
            "Too many sign-in attempts from your address. Wait a minute and try again.",
        )),
    )
}

pub(super) fn signed_in(
    console: &Console,
    opened: &byok_core::services::OpenedSession,
    to: &str,
) -> HttpResponse {
    let mut res = see_other(to);
    if let Err(e) = res.add_cookie(&session_cookie(console, opened)) {
        tracing::error!(error = %e, "could not set the session cookie");
    }
    res
}

/// Ends the session the browser came with, if any (a new one replaces it at sign-in).
pub(super) async fn end_presented(console: &Console, req: &HttpRequest) {
    if let Some(old) = presented(req, console)
        && let Err(e) = console.sessions.sign_out(&old).await
    {
        tracing::warn!(error = %e, "could not end the previous console session");
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    token: SecretString,
    next: Option<String>,
}

/// `POST /login`: a gateway token pasted in the form.
pub async fn with_token(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    if !same_origin(&req, &console.public_url.get(), &console.allowed_origins) {
        return forbidden();
    }
    if !admit(&console, &req).await {
        return too_many(&console);
    }
    let form = form.into_inner();
    let token = SecretString::from(form.token.expose_secret().trim().to_owned());
    let refused = || {
        login_page(
            &console,
            StatusCode::UNAUTHORIZED,
            form.next.as_deref(),
            Some(Notice::error(
                "That token was not accepted. Check that you pasted the whole token \
                 (it starts with byok_) and that it has not expired or been revoked.",
            )),
        )
    };
    let principal = match console.tokens.authenticate(&token).await {
        Ok(p) => p,
        Err(CoreError::Unauthenticated) => return refused(),
        Err(e) => return unavailable(&console, e),
    };
    let user = match console.users.get(principal.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return refused(),
        Err(e) => return unavailable(&console, e.into()),
    };
    end_presented(&console, &req).await;
    match console.sessions.open(&user, principal.token_id).await {
        Ok(opened) => {
            tracing::info!(user_id = %user.id, "console sign-in with a gateway token");
            signed_in(&console, &opened, local_path(form.next.as_deref(), "/keys"))
        }
        Err(CoreError::Unauthenticated) => refused(),
        Err(e) => unavailable(&console, e),
    }
}

pub(super) fn unavailable(console: &Console, e: CoreError) -> HttpResponse {
    let view = (console.errors)(e);
    login_page(
        console,
        view.status,
        None,
        Some(Notice::error(view.message)),
    )
}

/// `GET /login/{secret}`: asks for a click, so that link previews do not use the link.
pub async fn link_page(secret: web::Path<String>) -> HttpResponse {
    page(
        StatusCode::OK,
        &LinkPage {
            chrome: Chrome::anonymous(),
            secret: secret.into_inner(),
        },
    )
}

#[derive(Deserialize)]
pub struct LinkForm {
    secret: SecretString,
}

/// `POST /login/link`: uses a sign-in link.
pub async fn with_link(
    console: web::Data<Console>,
    req: HttpRequest,
    form: web::Form<LinkForm>,
) -> HttpResponse {
    if !same_origin(&req, &console.public_url.get(), &console.allowed_origins) {
        return forbidden();
    }
    if !admit(&console, &req).await {
        return too_many(&console);
    }
    match console.sessions.redeem_link(&form.secret).await {
        Ok(opened) => {
            // A link that does not work leaves the browser's session alone.
            end_presented(&console, &req).await;
            tracing::info!("console sign-in with a link");
            signed_in(&console, &opened, "/keys")
        }
        Err(CoreError::Unauthenticated) => login_page(
            &console,
            StatusCode::UNAUTHORIZED,
            None,
            Some(Notice::error(
                "This sign-in link has expired or was already used. Ask for a new one \
                 (byok-gateway user login-link --email you@example.com) or sign in with a \
                 gateway token.",
            )),
        ),
        Err(e) => unavailable(&console, e),
    }
}

/// `POST /logout` (the session's CSRF token checked by the extractor).
pub async fn logout(
    console: web::Data<Console>,
    req: HttpRequest,
    _: crate::session::CsrfForm,
) -> HttpResponse {
    if let Some(cookie) = presented(&req, &console)
        && let Err(e) = console.sessions.sign_out(&cookie).await
    {
        return unavailable(&console, e);
    }
    let mut res = see_other("/login?signed_out=1");
    if let Err(e) = res.add_cookie(&cleared_cookie(&console)) {
        tracing::error!(error = %e, "could not clear the session cookie");
    }
    res
}
