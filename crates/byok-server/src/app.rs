//! The actix-web application: middleware, extractor configuration, error normalisation.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, web};
use tracing::Instrument;

use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;

/// Largest accepted JSON body on the management API.
pub const JSON_LIMIT: usize = 64 * 1024;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Maps a JSON body error to a 4xx without echoing values from the body (a value could be a
/// key sent in the wrong field).
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body must be at most {limit} bytes"),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            let msg = e.to_string();
            let safe = msg.starts_with("missing field") || msg.starts_with("unknown field");
            let detail = if safe {
                format!("invalid request body: {msg}")
            } else {
                format!(
                    "invalid request body: a field has the wrong type (line {}, column {})",
                    e.line(),
                    e.column()
                )
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
        }
        JsonPayloadError::Deserialize(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body could not be read",
        ),
    };
    api.into()
}

fn path_error(_: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource").into()
}

fn query_error(_: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        "invalid query string",
    )
    .into()
}

/// Gives every error response without a JSON body (404 for unknown paths, 405, framework
/// errors) the `{detail, code}` shape.
fn normalise_error<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
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

/// Request id (taken from a well-formed `x-request-id`, else generated), one span per request
/// and one log line with method, route pattern, status and latency.
async fn request_log(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(new_request_id, str::to_owned);
    // The route pattern (`/api/v1/byok/keys/{provider}`), never the raw path: a client that
    // puts a key where a provider id belongs must not get it written to the log.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
        // Filled in by the gateway for a non-streaming LLM call (see `log_and_record`).
        provider = tracing::field::Empty,
        model = tracing::field::Empty,
        credential = tracing::field::Empty,
        byok = tracing::field::Empty,
        input_tokens = tracing::field::Empty,
        output_tokens = tracing::field::Empty,
    );
    let started = Instant::now();
    req.extensions_mut().insert(RequestId(id.clone()));
    async move {
        let mut res = next.call(req).await?;
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID.clone(), v);
        }
        let route = res.request().match_pattern();
        tracing::Span::current().record("route", route.as_deref().unwrap_or("unmatched"));
        let status = res.status().as_u16();
        let latency_us = started.elapsed().as_micros() as u64;
        if status >= 500 {
            tracing::error!(status, latency_us, "request failed");
        } else {
            tracing::info!(status, latency_us, "request");
        }
        Ok(res)
    }
    .instrument(span)
    .await
}

/// The application with every route and middleware.
pub fn build(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT)
                .error_handler(json_error),
        )
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .configure(routes::configure)
        .configure(crate::gateway::configure)
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({
                "detail": "no such resource", "code": "not_found"
            }))
        }))
        .wrap(ErrorHandlers::new().default_handler(normalise_error))
        .wrap(actix_web::middleware::from_fn(request_log))
}

/// The request's id (as logged and echoed in `x-request-id`), for handlers that pass it on.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A random UUIDv4 from the thread's own generator (no system call per request, unlike the
/// OS-backed `Uuid::new_v4`; request ids need uniqueness, not secrecy).
fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
