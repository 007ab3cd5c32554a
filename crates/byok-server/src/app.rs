//! The actix-web application: middleware, extractor configuration, error normalisation.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{PathError, QueryPayloadError};
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
    let trace = TraceContext::from_request(
        req.headers()
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        trace_id = %trace.trace_id,
        method = %req.method(),
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
        // Filled in by the gateway for an LLM call answered before its head (see `log_and_record`).
        provider = tracing::field::Empty,
        model = tracing::field::Empty,
        credential = tracing::field::Empty,
        byok = tracing::field::Empty,
        input_tokens = tracing::field::Empty,
        output_tokens = tracing::field::Empty,
    );
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = method_label(req.method());
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(trace);
    async move {
        let mut res = next.call(req).await?;
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID.clone(), v);
        }
        let route = res.request().match_pattern();
        let route = route.as_deref().unwrap_or("unmatched");
        tracing::Span::current().record("route", route);
        let status = res.status().as_u16();
        let elapsed = started.elapsed();
        if let Some(m) = metrics {
            m.observe_http(route, method, status, elapsed);
        }
        let latency_us = elapsed.as_micros() as u64;
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
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .configure(routes::configure)
        .configure(crate::gateway::configure)
        .default_service(web::to(|req: HttpRequest| async move {
            let path = req.path();
            if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/v1beta") {
                // LLM clients read errors in their own API's shape only.
                return crate::gateway::unknown_endpoint(&req);
            }
            HttpResponse::NotFound().json(serde_json::json!({
                "detail": "no such resource", "code": "not_found"
            }))
        }))
        .wrap(ErrorHandlers::new().default_handler(normalise_error))
        .wrap(actix_web::middleware::from_fn(request_log))
}

/// A bounded label for the method (a client may send any token as a method).
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// W3C trace context: the caller's trace (from a valid `traceparent`) or a new one, and this
/// request's own span id, which upstream calls name as their parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// 16 lower-case hex digits: this request.
    pub span_id: String,
    /// Trace flags, 2 hex digits (`01` = sampled).
    pub flags: String,
}

impl TraceContext {
    /// Continues a valid version-00 `traceparent` (or a future version's first four fields),
    /// else starts a trace.
    pub fn from_request(header: Option<&str>) -> Self {
        let span_id = format!("{:016x}", rand::random::<u64>());
        if let Some((trace_id, flags)) = header.and_then(parse_traceparent) {
            return Self {
                trace_id,
                span_id,
                flags,
            };
        }
        Self {
            trace_id: uuid::Uuid::from_bytes(rand::random()).simple().to_string(),
            span_id,
            flags: "01".into(),
        }
    }

    /// The `traceparent` header for a call made on behalf of this request.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// (trace id, flags) of a well-formed `traceparent`: `vv-<32 hex>-<16 hex>-<2 hex>`, lower-case,
/// ids not all zero, version not `ff`; version 00 has exactly four fields.
fn parse_traceparent(raw: &str) -> Option<(String, String)> {
    let raw = raw.trim();
    let mut parts = raw.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = is_hex(version, 2)
        && version != "ff"
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && is_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    ok.then(|| (trace.to_string(), flags.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_started() {
        let t = TraceContext::from_request(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, "01");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert!(
            t.traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            let t = TraceContext::from_request(Some(bad));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(t.trace_id.len(), 32);
        }
        // A later version may carry more fields.
        let t = TraceContext::from_request(Some(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
        ));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
