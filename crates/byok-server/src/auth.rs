//! The `Authenticated` extractor: `Authorization: Bearer <token>` or `x-api-key: <token>`, and,
//! when `BYOK_LEGACY_SESSION_REDIS_URL` is set, the legacy front end's `session_token` cookie.
//!
//! The cookie is read only on `/api/v1/*` and only when neither header was sent (a credential
//! in a header always wins, and a refused one never falls back to the cookie). A write
//! (any method but `GET`, `HEAD`, `OPTIONS`) authenticated by the cookie must come from this
//! service's own origin or a trusted one ([`byok_core::origin::write_origin_allowed`]): a
//! browser sends the cookie with other sites' requests too, and the legacy pages send no CSRF
//! header.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use byok_core::{CoreError, Principal};
use secrecy::SecretString;

use crate::error::ApiError;
use crate::state::AppState;

/// The legacy backend's session cookie.
pub const SESSION_COOKIE: &str = "session_token";

/// The authenticated caller. Handlers take it as an argument; they never see the credential.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The presented credential, if any: a bearer token wins over `x-api-key`.
pub fn presented_credential(req: &HttpRequest) -> Option<SecretString> {
    let headers = req.headers();
    if let Some(v) = headers.get(header::AUTHORIZATION)
        && let Ok(v) = v.to_str()
        && let Some((scheme, token)) = v.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !token.trim().is_empty()
    {
        return Some(SecretString::from(token.trim().to_owned()));
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.to_owned()))
}

/// The `session_token` cookie, if the request carries one (in any `Cookie` header).
pub fn session_cookie(req: &HttpRequest) -> Option<SecretString> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == SESSION_COOKIE).then(|| value.trim().trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
        .map(|v| SecretString::from(v.to_owned()))
}

/// Whether this cookie-authenticated request passes the origin check (reads always do): core's
/// rule ([`byok_core::origin::request_origin_allowed`], the console's forms pass the same one),
/// against the service's public URL (known after binding) and allowed origins.
fn origin_allowed(req: &HttpRequest, state: &AppState) -> bool {
    let get = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    byok_core::origin::request_origin_allowed(
        req.method().as_str(),
        get("origin"),
        get("sec-fetch-site"),
        &state.console.public_url.get(),
        &state.console.allowed_origins,
    )
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credential = presented_credential(req);
        // The legacy cookie: configured, on the management API, and no header credential.
        let cookie = match (&credential, &state) {
            (None, Some(s))
                if s.legacy_sessions.is_some() && req.path().starts_with("/api/v1/") =>
            {
                session_cookie(req).map(|c| (c, origin_allowed(req, s)))
            }
            _ => None,
        };
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "application state missing",
                )
            })?;
            let principal = match (credential, cookie, &state.legacy_sessions) {
                (Some(credential), _, _) => state.authenticator.authenticate(&credential).await?,
                (None, Some((cookie, origin_ok)), Some(sessions)) => {
                    if !origin_ok {
                        // Checked before the session is looked up: a forged cross-site
                        // request costs no look-up, and learns nothing about the session.
                        tracing::info!("refused a write with a session cookie from another origin");
                        return Err(CoreError::OriginRefused.into());
                    }
                    use byok_core::ports::Authenticator;
                    sessions.authenticate(&cookie).await?
                }
                _ => {
                    return Err(ApiError::unauthenticated(
                        "missing credentials: send Authorization: Bearer <token> or x-api-key: <token>",
                    ));
                }
            };
            tracing::Span::current().record("user_id", tracing::field::display(principal.user_id));
            Ok(Authenticated(principal))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use secrecy::ExposeSecret;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let req = TestRequest::default()
            .insert_header((header::COOKIE, "a=1; session_token=abc_DEF-123; b=2"))
            .to_http_request();
        assert_eq!(session_cookie(&req).unwrap().expose_secret(), "abc_DEF-123");
        let none = TestRequest::default()
            .insert_header((header::COOKIE, "session_token_x=1; xsession_token=2"))
            .to_http_request();
        assert!(session_cookie(&none).is_none());
        let empty = TestRequest::default()
            .insert_header((header::COOKIE, "session_token="))
            .to_http_request();
        assert!(session_cookie(&empty).is_none());
        assert!(session_cookie(&TestRequest::default().to_http_request()).is_none());
    }
}
