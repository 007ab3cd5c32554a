//! The one place errors become HTTP responses.
//!
//! Every error body on `/api/v1/*` is `{"detail": "...", "code": "..."}` (tier refusals add
//! `current_tier`, `required_tier`, `upgrade_url`). Unknown errors are logged with their cause
//! and answered with a generic body.

use std::sync::OnceLock;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use byok_core::{CoreError, CryptoError, StoreError};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

static UPGRADE_URL: OnceLock<String> = OnceLock::new();

/// Sets the `upgrade_url` shown in tier refusals (once, at start-up).
pub fn set_upgrade_url(url: String) {
    let _ = UPGRADE_URL.set(url);
}

fn upgrade_url() -> &'static str {
    UPGRADE_URL.get().map_or("/pricing", String::as_str)
}

/// The error body of the management API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message; never contains a secret.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
}

/// A 403 tier refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpgradeRequiredBody {
    pub detail: String,
    /// Always `upgrade_required`.
    pub code: String,
    pub current_tier: byok_core::Tier,
    pub required_tier: byok_core::Tier,
    pub upgrade_url: String,
}

/// An HTTP error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    extra: Map<String, Value>,
    retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

/// `retry-after` (seconds) of a 503 `database_unavailable`: a failover takes seconds to tens of
/// seconds; clients that honour it do not hammer a recovering database.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn unauthenticated(detail: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("detail".into(), Value::String(self.detail.clone()));
        body.insert("code".into(), Value::String(self.code.into()));
        body.extend(self.extra.clone());
        Value::Object(body)
    }

    fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, source = ?cause.source().map(ToString::to_string), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; the request id identifies it in the server log",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(r) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, r.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        resp.json(self.body())
    }
}

/// The status of an execution-server refusal, on `/api/v1/*` and on `/v1/*` (orchestrated
/// requests) alike.
pub fn exec_status(e: &byok_core::execution::ExecError) -> StatusCode {
    use byok_core::execution::ExecError;
    match e {
        ExecError::HostKeyMismatch { .. } | ExecError::HostKeyUnverified { .. } => {
            StatusCode::CONFLICT
        }
        ExecError::Unreachable(_) | ExecError::AuthFailed => StatusCode::BAD_GATEWAY,
        ExecError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        // A permanent property of this service or server, not a failure.
        ExecError::BackendUnavailable(_) | ExecError::ForbiddenTarget(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidInput { code, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            CoreError::UpgradeRequired { current, required } => {
                let mut err = Self::new(
                    StatusCode::FORBIDDEN,
                    "upgrade_required",
                    format!("BYOK requires {required} tier or higher"),
                );
                err.extra
                    .insert("current_tier".into(), current.as_str().into());
                err.extra
                    .insert("required_tier".into(), required.as_str().into());
                err.extra.insert("upgrade_url".into(), upgrade_url().into());
                err
            }
            CoreError::NotFound { code, message } => {
                Self::new(StatusCode::NOT_FOUND, code, message)
            }
            CoreError::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            CoreError::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "invalid or expired token",
            ),
            CoreError::Unavailable { code, message } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            }
            CoreError::RateLimited { retry_after_secs } => {
                let mut err = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests; retry in {retry_after_secs} s"),
                );
                err.retry_after = Some(retry_after_secs);
                err
            }
            CoreError::Exec(e) => Self::new(exec_status(&e), e.code(), e.to_string()),
            CoreError::TargetForbidden(t) => {
                if let byok_core::policy::TargetError::Forbidden { reason, .. } = &t {
                    tracing::info!(reason, "outbound target refused");
                }
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "forbidden_target",
                    t.to_string(),
                )
            }
            CoreError::Crypto(c @ (CryptoError::UnknownKey | CryptoError::Malformed)) => {
                tracing::error!(error = %c, "stored secret cannot be decrypted");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "key_decryption_failed",
                    "the stored key cannot be decrypted with the configured ENCRYPTION_KEY \
                     (was its key removed from the ring?); add the key again or ask the operator",
                )
            }
            CoreError::Crypto(c) => Self::internal(&c),
            CoreError::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(error = %cause, "database unavailable");
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again shortly",
                );
                e.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
                e
            }
            CoreError::Store(StoreError::Conflict(_)) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "the request conflicts with stored data",
            ),
            CoreError::Store(other) => Self::internal(&other),
            CoreError::Internal(cause) => Self::internal(cause.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::Tier;

    #[test]
    fn upgrade_required_body_is_pinned() {
        let err = ApiError::from(CoreError::UpgradeRequired {
            current: Tier::Free,
            required: Tier::Starter,
        });
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(
            err.body(),
            serde_json::json!({
                "detail": "BYOK requires starter tier or higher",
                "code": "upgrade_required",
                "current_tier": "free",
                "required_tier": "starter",
                "upgrade_url": "/pricing"
            })
        );
    }

    #[test]
    fn unknown_errors_get_a_generic_body() {
        let err = ApiError::from(CoreError::Store(StoreError::Other("boom: secret".into())));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body().to_string().contains("secret"));
    }
}
