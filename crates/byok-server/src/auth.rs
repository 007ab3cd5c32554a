//! The `Authenticated` extractor: `Authorization: Bearer <token>` or `x-api-key: <token>`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use byok_core::Principal;
use secrecy::SecretString;

use crate::error::ApiError;
use crate::state::AppState;

/// The authenticated caller. Handlers take it as an argument; they never see the credential.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The presented credential, if any: a bearer token wins over `x-api-key`.
pub fn presented_credential(req: &HttpRequest) -> Option<SecretString> {
    let headers = req.headers();
    if let Some(v) = headers.get(actix_web::http::header::AUTHORIZATION)
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

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let credential = presented_credential(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::new(
                    actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "application state missing",
                )
            })?;
            let credential = credential.ok_or_else(|| {
                ApiError::unauthenticated(
                    "missing credentials: send Authorization: Bearer <token> or x-api-key: <token>",
                )
            })?;
            let principal = state.authenticator.authenticate(&credential).await?;
            tracing::Span::current().record("user_id", tracing::field::display(principal.user_id));
            Ok(Authenticated(principal))
        })
    }
}
