//! `/api/v1/tokens`: the caller's own gateway tokens.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody};
use crate::openapi::{ApiErrors, BodyErrors};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Lifetime in days (1–3650). Absent: the service's default (`BYOK_TOKEN_LIFETIME_DAYS`,
    /// 90 days unless the operator changed it). Never later than the expiry of the gateway
    /// token this request is authenticated with.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// A freshly created token. `token` is shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A token as listed: its prefix only.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub active: bool,
}

/// Create a gateway token for the caller (for `Authorization: Bearer` or `x-api-key`).
#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "tokens", operation_id = "create_token",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, body = CreatedToken, description = "created: the token is shown this once"),
        (status = 422, body = ErrorBody, description = "missing or mistyped field, invalid name (`invalid_token_name`) or expiry (`invalid_expiry`)"),
        ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("")]
pub async fn create(
    state: web::Data<AppState>,
    who: Authenticated,
    body: crate::extract::Json<CreateTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let issued = state
        .tokens
        .issue_for(&who.0, &body.name, body.expires_in_days)
        .await?;
    let r = issued.record;
    Ok(HttpResponse::Created().json(CreatedToken {
        id: r.id,
        name: r.name,
        prefix: r.prefix,
        token: issued.token.expose_secret().to_owned(),
        created_at: r.created_at,
        expires_at: r.expires_at,
    }))
}

/// List the caller's tokens (prefixes only).
#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, body = [TokenInfo], description = "the caller's tokens (prefixes only, never a token)"), ApiErrors),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("")]
pub async fn list(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<web::Json<Vec<TokenInfo>>, ApiError> {
    let now = Utc::now();
    Ok(web::Json(
        state
            .tokens
            .list(who.0.user_id)
            .await?
            .into_iter()
            .map(|t| TokenInfo {
                active: t.is_active(now),
                id: t.id,
                name: t.name,
                prefix: t.prefix,
                created_at: t.created_at,
                last_used_at: t.last_used_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedToken {
    pub message: String,
    pub id: Uuid,
}

/// Revoke one of the caller's tokens. Effective at once on this instance, within
/// `BYOK_AUTH_CACHE_TTL_SECS` on others.
#[utoipa::path(
    delete, path = "/api/v1/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(("id" = Uuid, Path, description = "token id")),
    responses(
        (status = 200, body = RevokedToken, description = "revoked"),
        (status = 404, body = ErrorBody, description = "no such active token (`token_not_found`)"),
        ApiErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[delete("/{id}")]
pub async fn revoke(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<web::Json<RevokedToken>, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "token_not_found",
            "no active token with this id",
        )
    })?;
    state.tokens.revoke(who.0.user_id, id).await?;
    Ok(web::Json(RevokedToken {
        message: "token revoked".into(),
        id,
    }))
}
