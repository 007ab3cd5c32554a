//! Middleware around every request: the request id, the request's span and log line, and
//! its HTTP metrics.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use tracing::Instrument;

use crate::state::AppState;
use crate::trace::{REQUEST_ID, RequestId, TRACEPARENT, TraceContext, new_request_id};

/// Request id (taken from a well-formed `x-request-id`, else generated), one span per request
/// and one log line with method, route pattern, status and latency.
pub async fn request_log(
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
