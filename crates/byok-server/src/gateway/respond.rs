//! The provider's answer as the client's response: translated whole, passed through, or
//! streamed (translated chunk by chunk); usage read on the way and recorded when it ends.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use byok_core::services::Route;
use byok_core::{CredentialKind, Principal};
use byok_providers::stream::StreamTranslator;
use byok_providers::translate;
use byok_providers::upstream::UpstreamResponse;
use byok_providers::usage::UsageScanner;
use futures_util::StreamExt;
use serde_json::Value;

use super::body::{self, Held, VALUE_COST};
use super::call::Call;
use super::errors::{GatewayError, Ingress, scrub};
use super::record::{log_and_record, log_and_record_line, record};
use super::upstream::{logged_under, refused};
use crate::state::AppState;

pub(super) fn with_route_headers(resp: &mut actix_web::HttpResponseBuilder, route: &Route) {
    resp.insert_header(("x-byok-provider", route.provider.as_str()));
    resp.insert_header(("x-byok-credential", route.credential.as_str()));
}

/// Adds the route headers to an error response.
pub fn error_response(err: &GatewayError, ingress: Ingress, route: Option<&Route>) -> HttpResponse {
    let mut resp = err.response(ingress);
    if let Some(route) = route {
        let h = resp.headers_mut();
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(route.provider.as_str()) {
            h.insert(
                actix_web::http::header::HeaderName::from_static("x-byok-provider"),
                v,
            );
        }
        h.insert(
            actix_web::http::header::HeaderName::from_static("x-byok-credential"),
            actix_web::http::header::HeaderValue::from_static(match route.credential {
                CredentialKind::User => "user",
                CredentialKind::System => "system",
            }),
        );
    }
    resp
}

/// A non-streaming answer in the other API's format: buffered whole (it must be, to be
/// translated) under the per-answer cap and the process-wide budget, then translated.
pub(super) async fn translated_response(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    resp: UpstreamResponse,
) -> Result<HttpResponse, GatewayError> {
    let provider_name = route.provider.display_name();
    let budget = &state.response_budget;
    let refuse = |why| refused(why, provider_name, budget.max_body());
    let mut charge = budget.charge();
    let mut scanner = UsageScanner::new();
    let raw = body::read_budgeted(resp, budget, &mut charge, |chunk| scanner.feed(chunk))
        .await
        .map_err(refuse)?;
    // Before parsing: the tree and the translated copy, charged as well.
    let parsing = raw
        .capacity()
        .saturating_add(raw.len().saturating_mul(2))
        .saturating_add(VALUE_COST.saturating_mul(scanner.structure() as usize));
    charge.cover(parsing).map_err(refuse)?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("{provider_name} sent a response that is not JSON"),
        )
    })?;
    drop(raw);
    let out = match call.ingress {
        Ingress::Anthropic => translate::openai_response_to_anthropic(&v, call.requested_model),
        Ingress::OpenAi => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            translate::anthropic_response_to_openai(&v, call.requested_model, created)
        }
    };
    drop(v);
    let body = serde_json::to_vec(&out)
        .map_err(|_| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    drop(out);
    // Until the client has it, the answer's bytes stay charged.
    charge.shrink_to(body.len());
    let usage = scanner.usage();
    record(
        state,
        call,
        route,
        200,
        usage.input_tokens,
        usage.output_tokens,
    );
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    with_route_headers(&mut resp, route);
    Ok(resp.body(Held::new(BoxBody::new(body), charge)))
}

/// Records a streamed-through answer when its body ends, however it ends (client gone
/// included), with the usage read from its bytes.
pub(super) struct PassGuard {
    scanner: UsageScanner,
    state: AppState,
    user: byok_core::UserId,
    route: Route,
    started: Instant,
    /// 200 once the body ended, 502 if the provider's connection failed, else the client
    /// went away (499).
    status: u16,
    /// The request's span (request id, trace id, user): the body outlives it.
    span: tracing::Span,
}

impl PassGuard {
    /// How the body ended (recorded when the guard is dropped, right after).
    fn end(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        let _request = self.span.enter();
        let usage = self.scanner.usage();
        log_and_record_line(
            &self.state,
            self.user,
            &self.route,
            false,
            true,
            self.status,
            usage.input_tokens,
            usage.output_tokens,
            self.started,
        );
    }
}

/// A non-streaming answer in the client's format: forwarded chunk by chunk as it arrives (with
/// the provider's length when it gave one), its usage read from the bytes as they pass. The
/// gateway holds at most a chunk of it, whatever its size.
pub(super) fn pass_through(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    resp: UpstreamResponse,
) -> HttpResponse {
    let length = resp.content_length();
    let guard = PassGuard {
        scanner: UsageScanner::new(),
        state: state.clone(),
        user: call.who.user_id,
        route: route.clone(),
        started: call.started,
        status: 499,
        span: tracing::Span::current(),
    };
    let body = futures_util::stream::unfold(
        (resp.bytes_stream(), guard, false),
        |(mut up, mut guard, ended)| async move {
            if ended {
                return None;
            }
            match up.next().await {
                Some(Ok(chunk)) => {
                    guard.scanner.feed(&chunk);
                    Some((Ok(chunk), (up, guard, false)))
                }
                Some(Err(_)) => {
                    // Too late for an error body: the connection is closed short, which the
                    // client sees (chunked or content-length framing).
                    guard.end(502);
                    let cut = std::io::Error::other("the provider's answer was cut off");
                    Some((Err(cut), (up, guard, true)))
                }
                None => {
                    guard.end(200);
                    None
                }
            }
        },
    );
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    with_route_headers(&mut resp, route);
    match length {
        Some(n) => resp.body(SizedStream::new(n, body)),
        None => resp.streaming(body),
    }
}

/// Records usage when the stream ends, however it ends (client gone included).
pub(super) struct StreamGuard {
    translator: StreamTranslator,
    state: AppState,
    who: Principal,
    route: Route,
    stream: bool,
    started: Instant,
    /// For the log line of a withheld provider error (the body outlives the request's span).
    request_id: String,
    /// The request's span (request id, trace id, user), entered for the final log line.
    span: tracing::Span,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let _request = self.span.enter();
        let usage = self.translator.usage();
        let status = if self.translator.is_complete() && !self.translator.failed() {
            200
        } else if self.translator.failed() {
            502
        } else {
            // The client went away before the end: nginx's "client closed request".
            499
        };
        log_and_record(
            &self.state,
            self.who.user_id,
            &self.route,
            self.stream,
            status,
            usage.input_tokens,
            usage.output_tokens,
            self.started,
        );
    }
}

pub(super) fn stream_response(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    resp: UpstreamResponse,
    same_wire: bool,
) -> HttpResponse {
    let translator = match (call.ingress, same_wire) {
        (Ingress::Anthropic, true) => StreamTranslator::passthrough_anthropic(),
        (Ingress::OpenAi, true) if !call.include_usage => {
            StreamTranslator::passthrough_openai_without_usage()
        }
        (Ingress::OpenAi, true) => StreamTranslator::passthrough_openai(),
        (Ingress::Anthropic, false) => {
            // A cheap estimate for message_start (about four bytes of JSON per token); the
            // provider's count arrives in message_delta.
            StreamTranslator::openai_to_anthropic(call.requested_model, call.body.len() as u64 / 4)
        }
        (Ingress::OpenAi, false) => {
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            StreamTranslator::anthropic_to_openai(call.requested_model, created, call.include_usage)
        }
    };
    // The system default's provider may quote the operator's key, account or limits in its
    // in-stream errors: the user reads a generic message naming the request, the operator the
    // detail (scrubbed) in the log.
    let translator = match route.credential {
        CredentialKind::System => translator.with_private_errors(format!(
            "{} reported an error during the answer ({})",
            route.provider.display_name(),
            logged_under(&call.request_id)
        )),
        CredentialKind::User => translator,
    };
    let guard = StreamGuard {
        translator,
        state: state.clone(),
        who: call.who.clone(),
        route: route.clone(),
        stream: true,
        started: call.started,
        request_id: call.request_id.clone(),
        span: tracing::Span::current(),
    };
    let upstream = resp.bytes_stream();
    let idle = state.upstream.options().idle_timeout;
    let deadline = tokio::time::Instant::now() + state.upstream.options().max_stream;
    let body = futures_util::stream::unfold(
        (upstream, guard, false),
        move |(mut up, mut guard, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let wait =
                    idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                let next = match tokio::time::timeout(wait, up.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let msg = if tokio::time::Instant::now() >= deadline {
                            "the stream exceeded the gateway's maximum duration"
                        } else {
                            "the provider stopped sending (idle timeout)"
                        };
                        let mut out = Vec::new();
                        guard.translator.on_error(msg, &mut out);
                        return Some((Ok(Bytes::from(out)), (up, guard, true)));
                    }
                };
                match next {
                    Some(Ok(chunk)) => {
                        let out = if guard.translator.is_passthrough() {
                            guard.translator.pass_chunk(chunk)
                        } else {
                            let mut out = Vec::new();
                            guard.translator.on_chunk(&chunk, &mut out);
                            Bytes::from(out)
                        };
                        if let Some(detail) = guard.translator.take_withheld() {
                            let key = guard.route.api_key.as_ref().map(|k| k.expose());
                            tracing::warn!(
                                request_id = %guard.request_id,
                                provider = guard.route.provider.as_str(),
                                upstream_message = %scrub(&detail, key),
                                "the provider reported an error mid-stream on the system \
                                 default credential"
                            );
                        }
                        if guard.translator.overflowed() {
                            let mut tail = out.to_vec();
                            guard
                                .translator
                                .on_error("the provider sent an oversized event", &mut tail);
                            return Some((Ok(Bytes::from(tail)), (up, guard, true)));
                        }
                        if !out.is_empty() {
                            return Some((Ok::<_, actix_web::Error>(out), (up, guard, false)));
                        }
                    }
                    Some(Err(_)) => {
                        let mut out = Vec::new();
                        guard
                            .translator
                            .on_error("the connection to the provider failed mid-stream", &mut out);
                        return Some((Ok(Bytes::from(out)), (up, guard, true)));
                    }
                    None => {
                        let mut out = Vec::new();
                        guard.translator.on_end(&mut out);
                        if out.is_empty() {
                            return None;
                        }
                        return Some((Ok(Bytes::from(out)), (up, guard, true)));
                    }
                }
            }
        },
    );
    let mut resp = HttpResponse::Ok();
    resp.content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"));
    with_route_headers(&mut resp, route);
    resp.streaming(body)
}
