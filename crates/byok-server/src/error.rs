//! The one place errors become HTTP responses.
//!
//! Every error body on `/api/v1/*` is `{"detail": "...", "code": "..."}` (tier refusals add
//! `current_tier`, `required_tier`, `upgrade_url`). Unknown errors are logged with their cause
//! and answered with a generic body.

use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use byok_core::execution::ExecError;
use byok_core::policy::TargetError;
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

const INTERNAL_DETAIL: &str = "internal error; the request id identifies it in the server log";

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

/// How the service answers a core error: the one place a status and a stable code are chosen
/// for it, on `/api/v1/*` and on `/v1/*` (which differ only for core validation errors, see
/// [`decide`]). The management API renders the decision as
/// `{"detail", "code"}` ([`ApiError`]); the gateway renders it in the Anthropic or OpenAI error
/// shape, with its own wording (`gateway::GatewayError::from_core`). The table is in
/// docs/api.md ("Errors") and docs/gateway.md ("Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub status: StatusCode,
    /// The stable code (`detail`'s companion on `/api/v1/*`).
    pub code: &'static str,
    /// Seconds for `retry-after`.
    pub retry_after: Option<u64>,
    /// The wire protocols have no code of their own for this case, so the gateway passes ours
    /// in `error.code` (`upgrade_required`, `forbidden_target`, `host_key_unverified`, …); where
    /// they do (bad request, unknown model, bad token, rate limit), clients get theirs.
    pub service_code: bool,
}

impl Decision {
    const fn new(status: StatusCode, code: &'static str, service_code: bool) -> Self {
        Self {
            status,
            code,
            retry_after: None,
            service_code,
        }
    }
}

/// The status of an execution-server refusal.
fn exec_status(e: &ExecError) -> StatusCode {
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

/// Which API a refusal is answered on: the one difference between them is in [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/api/v1/*`, the management API (legacy-compatible).
    Management,
    /// `/v1/*`, the LLM APIs (Anthropic Messages, OpenAI Chat Completions).
    Gateway,
}

/// The (status, code) of a core error on `surface`. Pure; [`log_cause`] logs what the operator
/// needs.
pub fn decide(e: &CoreError, surface: Surface) -> Decision {
    match e {
        // Well-formed but unacceptable input: 422 on the management API, as the legacy service
        // (FastAPI) answered validation errors; 400 on the LLM APIs, as Anthropic and OpenAI
        // answer a request they cannot process (`invalid_request_error`), and as the gateway
        // answers a malformed body before core sees it.
        CoreError::InvalidInput { code, .. } => match surface {
            Surface::Management => Decision::new(StatusCode::UNPROCESSABLE_ENTITY, code, false),
            Surface::Gateway => Decision::new(StatusCode::BAD_REQUEST, code, false),
        },
        CoreError::UpgradeRequired { .. } => {
            Decision::new(StatusCode::FORBIDDEN, "upgrade_required", true)
        }
        CoreError::NotFound { code, .. } => Decision::new(StatusCode::NOT_FOUND, code, false),
        CoreError::Conflict { code, .. } => Decision::new(StatusCode::CONFLICT, code, true),
        CoreError::Forbidden { code, .. } => Decision::new(StatusCode::FORBIDDEN, code, true),
        // On the management API, "no key can serve this model for you" (`no_credential`) is a
        // state the caller changes by adding a key, not an outage: 409. The LLM APIs keep 503,
        // the status their clients retry or report.
        CoreError::Unavailable { code, .. }
            if *code == "no_credential" && matches!(surface, Surface::Management) =>
        {
            Decision::new(StatusCode::CONFLICT, code, false)
        }
        CoreError::Unavailable { code, .. } => {
            Decision::new(StatusCode::SERVICE_UNAVAILABLE, code, false)
        }
        CoreError::RateLimited { retry_after_secs } => Decision {
            retry_after: Some(*retry_after_secs),
            ..Decision::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", false)
        },
        CoreError::Unauthenticated => {
            Decision::new(StatusCode::UNAUTHORIZED, "invalid_token", false)
        }
        // The caller is known, the page that sent the request is not trusted: a refusal of
        // this request, not of the credential (which stays valid for the service's own pages).
        CoreError::OriginRefused => Decision::new(StatusCode::FORBIDDEN, "origin_refused", true),
        CoreError::Exec(e) => Decision::new(exec_status(e), e.code(), true),
        // A configured address this service will not call: a property of what was stored or
        // sent, not of the caller's rights (the same 422 as an execution server's target).
        CoreError::TargetForbidden(_) => {
            Decision::new(StatusCode::UNPROCESSABLE_ENTITY, "forbidden_target", true)
        }
        CoreError::Crypto(CryptoError::UnknownKey | CryptoError::Malformed) => Decision::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "key_decryption_failed",
            true,
        ),
        CoreError::Store(StoreError::Unavailable(_)) => Decision {
            retry_after: Some(DATABASE_RETRY_AFTER_SECS),
            ..Decision::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                true,
            )
        },
        CoreError::Store(StoreError::Conflict(_)) => {
            Decision::new(StatusCode::CONFLICT, "conflict", true)
        }
        CoreError::Crypto(_) | CoreError::Store(_) | CoreError::Internal(_) => {
            Decision::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", false)
        }
    }
}

/// Logs what the operator needs to know about a core error (its cause, never a secret): once,
/// wherever the error is answered.
pub fn log_cause(e: &CoreError) {
    match e {
        CoreError::TargetForbidden(TargetError::Forbidden { reason, .. }) => {
            tracing::info!(reason, "outbound target refused");
        }
        CoreError::Crypto(c @ (CryptoError::UnknownKey | CryptoError::Malformed)) => {
            tracing::error!(error = %c, "stored secret cannot be decrypted");
        }
        CoreError::Store(StoreError::Unavailable(cause)) => {
            tracing::error!(error = %cause, "database unavailable");
        }
        // A race the request lost (two first sign-ins of one account, say): answered 409.
        CoreError::Store(StoreError::Conflict(rule)) => {
            tracing::warn!(rule = %rule, "store conflict");
        }
        CoreError::Crypto(c) => log_internal(c),
        CoreError::Store(s @ (StoreError::Corrupt(_) | StoreError::Other(_))) => log_internal(s),
        CoreError::Internal(cause) => log_internal(cause.as_ref()),
        _ => {}
    }
}

fn log_internal(cause: &dyn std::error::Error) {
    tracing::error!(error = %cause, source = ?cause.source().map(ToString::to_string), "internal error");
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        log_cause(&e);
        let d = decide(&e, Surface::Management);
        let tiers = match &e {
            CoreError::UpgradeRequired { current, required } => Some((*current, *required)),
            _ => None,
        };
        let detail = match e {
            CoreError::InvalidInput { message, .. }
            | CoreError::NotFound { message, .. }
            | CoreError::Conflict { message, .. }
            | CoreError::Forbidden { message, .. }
            | CoreError::Unavailable { message, .. } => message,
            CoreError::UpgradeRequired { required, .. } => {
                format!("BYOK requires {required} tier or higher")
            }
            CoreError::Unauthenticated => "invalid or expired token".into(),
            CoreError::OriginRefused => {
                "this request came from a page of another origin: changes made with a session \
                 cookie are accepted only from this service's own pages (or BYOK_ALLOWED_ORIGINS)"
                    .into()
            }
            CoreError::RateLimited { retry_after_secs } => {
                format!("too many requests; retry in {retry_after_secs} s")
            }
            CoreError::Exec(e) => e.to_string(),
            CoreError::TargetForbidden(t) => t.to_string(),
            CoreError::Crypto(CryptoError::UnknownKey | CryptoError::Malformed) => {
                "the stored key cannot be decrypted with the configured ENCRYPTION_KEY \
                 (was its key removed from the ring?); add the key again or ask the operator"
                    .into()
            }
            CoreError::Store(StoreError::Unavailable(_)) => {
                "the database is unavailable; try again shortly".into()
            }
            CoreError::Store(StoreError::Conflict(_)) => {
                "the request conflicts with stored data".into()
            }
            CoreError::Crypto(_) | CoreError::Store(_) | CoreError::Internal(_) => {
                INTERNAL_DETAIL.into()
            }
        };
        let mut err = Self::new(d.status, d.code, detail);
        err.retry_after = d.retry_after;
        if let Some((current, required)) = tiers {
            err.extra
                .insert("current_tier".into(), current.as_str().into());
            err.extra
                .insert("required_tier".into(), required.as_str().into());
            err.extra.insert("upgrade_url".into(), upgrade_url().into());
        }
        err
    }
}

/// A core error as the console shows it: the same status, code and message as on
/// `/api/v1` (decided by [`decide`]; the cause logged once by [`log_cause`]).
pub fn console_view(e: CoreError) -> byok_console::ErrorView {
    let api = ApiError::from(e);
    byok_console::ErrorView {
        status: api.status,
        code: api.code,
        message: api.detail,
    }
}

/// A path parameter that does not parse (a non-UUID id): no such resource.
pub fn path_error(_: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource").into()
}

/// A query string that does not parse.
pub fn query_error(e: QueryPayloadError, req: &HttpRequest) -> actix_web::Error {
    let path = req.path();
    if !path.starts_with("/api/") && !path.starts_with("/v1") && byok_console::wants_html(req) {
        // A person's browser on a console page: a page, not the API's JSON.
        let page = byok_console::status_page(StatusCode::BAD_REQUEST);
        return actix_web::error::InternalError::from_response(e, page).into();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        "invalid query string",
    )
    .into()
}

/// A required query parameter is missing or empty (`missing_parameter`, 400: the request is
/// malformed, as an unreadable query string is).
pub fn missing_parameter(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "missing_parameter",
        format!("the query parameter {name} is required"),
    )
}

/// Gives every error response without a JSON body (404 for unknown paths, 405, framework
/// errors) the `{detail, code}` shape.
pub fn normalise_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let ctype = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // JSON bodies, and the console's pages, are already what their clients read.
    if ctype.starts_with("application/json") || ctype.starts_with("text/html") {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let path = res.request().path();
    if !path.starts_with("/api/")
        && !path.starts_with("/v1")
        && byok_console::wants_html(res.request())
    {
        // A person's browser (a form the console could not read, say): a page, not JSON.
        let (req, _) = res.into_parts();
        let page = byok_console::status_page(status);
        return Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, page).map_into_right_body(),
        ));
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("bad_request", "the request could not be processed"),
    };
    let (req, _) = res.into_parts();
    let mut resp = HttpResponse::build(status);
    let body = serde_json::json!({ "detail": detail, "code": code });
    let res = ServiceResponse::new(req, resp.json(body)).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

/// `error: cause: cause…`, for messages printed at start-up and logged causes.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Every core error, with the status and code of the management API (docs/api.md
    /// "Errors"); the gateway answers the same but for core validation errors (400).
    pub(crate) fn table() -> Vec<(CoreError, u16, &'static str)> {
        use byok_core::execution::ExecError;
        vec![
            (
                CoreError::InvalidInput {
                    code: "invalid_label",
                    message: "bad".into(),
                },
                422,
                "invalid_label",
            ),
            (
                CoreError::UpgradeRequired {
                    current: Tier::Free,
                    required: Tier::Starter,
                },
                403,
                "upgrade_required",
            ),
            (
                CoreError::NotFound {
                    code: "key_not_found",
                    message: "no".into(),
                },
                404,
                "key_not_found",
            ),
            (
                CoreError::Conflict {
                    code: "duplicate_name",
                    message: "taken".into(),
                },
                409,
                "duplicate_name",
            ),
            (
                CoreError::Forbidden {
                    code: "operator_required",
                    message: "operators only".into(),
                },
                403,
                "operator_required",
            ),
            (
                CoreError::Unavailable {
                    code: "no_credential",
                    message: "none".into(),
                },
                409,
                "no_credential",
            ),
            (
                CoreError::RateLimited {
                    retry_after_secs: 7,
                },
                429,
                "rate_limited",
            ),
            (CoreError::Unauthenticated, 401, "invalid_token"),
            (CoreError::OriginRefused, 403, "origin_refused"),
            (CoreError::Exec(ExecError::Timeout), 504, "timeout"),
            (CoreError::Exec(ExecError::AuthFailed), 502, "auth_failed"),
            (
                CoreError::TargetForbidden(TargetError::Unresolvable { host: "x".into() }),
                422,
                "forbidden_target",
            ),
            (
                CoreError::Crypto(CryptoError::UnknownKey),
                500,
                "key_decryption_failed",
            ),
            (
                CoreError::Store(StoreError::Unavailable("down".into())),
                503,
                "database_unavailable",
            ),
            (
                CoreError::Store(StoreError::Conflict("users_email".into())),
                409,
                "conflict",
            ),
            (
                CoreError::Store(StoreError::Corrupt("row".into())),
                500,
                "internal_error",
            ),
            (CoreError::Internal("boom".into()), 500, "internal_error"),
        ]
    }

    #[test]
    fn one_status_and_code_per_core_error() {
        for (e, status, code) in table() {
            let d = decide(&e, Surface::Management);
            assert_eq!((d.status.as_u16(), d.code), (status, code), "{e:?}");
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            assert_eq!(api.body()["code"], code);
        }
        // The differences between the surfaces: no credential for a model is 503 on the LLM
        // APIs (409 on the management API), and a core validation error is 400 there.
        let none = CoreError::Unavailable {
            code: "no_credential",
            message: "none".into(),
        };
        assert_eq!(
            decide(&none, Surface::Gateway).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let invalid = CoreError::InvalidInput {
            code: "invalid_model",
            message: "bad".into(),
        };
        assert_eq!(
            decide(&invalid, Surface::Gateway).status,
            StatusCode::BAD_REQUEST
        );
        let limited = ApiError::from(CoreError::RateLimited {
            retry_after_secs: 7,
        });
        assert_eq!(limited.retry_after, Some(7));
        let db = ApiError::from(CoreError::Store(StoreError::Unavailable("down".into())));
        assert_eq!(db.retry_after, Some(DATABASE_RETRY_AFTER_SECS));
    }

    #[test]
    fn unknown_errors_get_a_generic_body() {
        let err = ApiError::from(CoreError::Store(StoreError::Other("boom: secret".into())));
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!err.body().to_string().contains("secret"));
    }
}
