//! One attempt to serve a request on one route: build the upstream request (pass-through or
//! translated), send it, and turn the answer into the client's response.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use byok_core::services::Route;
use byok_core::{CredentialKind, Principal, UsageRecord};
use byok_providers::ChatWire;
use byok_providers::stream::StreamTranslator;
use byok_providers::translate;
use byok_providers::upstream::{ChatTarget, UpstreamError, UpstreamResponse};
use byok_providers::usage::UsageScanner;
use futures_util::StreamExt;
use serde_json::Value;

use super::body::{self, Charge, Held, Refusal, VALUE_COST};
use super::errors::{GatewayError, Ingress, scrub};
use crate::state::AppState;

/// Largest upstream error body read (the rest is ignored).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The request as the handler parsed it.
#[derive(Debug)]
pub struct Call<'a> {
    pub ingress: Ingress,
    pub who: &'a Principal,
    pub requested_model: &'a str,
    pub stream: bool,
    /// OpenAI clients' `stream_options.include_usage`.
    pub include_usage: bool,
    pub body: &'a Bytes,
    pub anthropic_version: Option<String>,
    pub anthropic_beta: Option<String>,
    /// W3C `traceparent` for the upstream call (this request as the parent).
    pub traceparent: Option<String>,
    /// The id the request is logged under: what a user quotes to the operator.
    pub request_id: String,
    pub started: Instant,
}

/// What one attempt produced.
#[derive(Debug)]
pub enum Attempt {
    /// A response for the client (success, or an error not worth a fallback).
    Done(HttpResponse),
    /// The user's key failed with 401/403/429 before anything reached the client.
    Retryable(GatewayError),
}

fn wire_of(ingress: Ingress) -> ChatWire {
    match ingress {
        Ingress::Anthropic => ChatWire::Anthropic,
        Ingress::OpenAi => ChatWire::OpenAi,
    }
}

/// Replaces the top-level `model` of a JSON object without touching any other byte of the
/// other members.
pub fn rewrite_model(body: &[u8], model: &str) -> Result<Vec<u8>, GatewayError> {
    rewrite_members(body, Some(model), false)
}

/// Rewrites top-level members: `model` when given; with `ask_usage`, `stream_options` gains
/// `include_usage: true` (so the gateway can record a stream's usage). Every other member is
/// copied byte for byte.
pub fn rewrite_members(
    body: &[u8],
    model: Option<&str>,
    ask_usage: bool,
) -> Result<Vec<u8>, GatewayError> {
    let members: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(body)
            .map_err(|_| GatewayError::invalid("the body is not a JSON object"))?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    };
    for (k, v) in &members {
        match (k.as_str(), model) {
            ("model", Some(m)) => put(
                &mut out,
                k,
                serde_json::to_string(m).unwrap_or_default().as_bytes(),
            ),
            ("stream_options", _) if ask_usage => {
                let mut opts: serde_json::Map<String, Value> =
                    serde_json::from_str(v.get()).unwrap_or_default();
                opts.insert("include_usage".into(), Value::Bool(true));
                put(&mut out, k, Value::Object(opts).to_string().as_bytes());
            }
            _ => put(&mut out, k, v.get().as_bytes()),
        }
    }
    if ask_usage && !members.contains_key("stream_options") {
        put(&mut out, "stream_options", br#"{"include_usage":true}"#);
    }
    out.push(b'}');
    Ok(out)
}

/// The body for the provider. A copy (rewritten or translated) is charged to the request's
/// part of the buffer budget first: the copy, and for a translation the parsed tree as well.
fn upstream_body(
    call: &Call<'_>,
    route: &Route,
    target: &ChatTarget,
    charge: &mut Charge,
) -> Result<Bytes, GatewayError> {
    if wire_of(call.ingress) == target.wire {
        let rename = (route.model != call.requested_model).then_some(route.model.as_str());
        let ask_usage = asks_usage_for_client(call, target);
        if rename.is_none() && !ask_usage {
            return Ok(call.body.clone());
        }
        charge
            .cover(call.body.len().saturating_mul(2).saturating_add(4096))
            .map_err(super::buffer_refused)?;
        return rewrite_members(call.body, rename, ask_usage).map(Bytes::from);
    }
    super::charge_parse(charge, call.body)?;
    let v: Value = serde_json::from_slice(call.body)
        .map_err(|_| GatewayError::invalid("the body is not valid JSON"))?;
    let translated = match call.ingress {
        Ingress::Anthropic => translate::anthropic_request_to_openai(
            &v,
            &route.model,
            route.provider == byok_core::ProviderId::Openai,
        ),
        Ingress::OpenAi => translate::openai_request_to_anthropic(&v, &route.model),
    };
    serde_json::to_vec(&translated)
        .map(Bytes::from)
        .map_err(|_| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

/// A same-format OpenAI stream whose client did not ask for usage: the gateway asks for it
/// (and keeps the usage chunk from the client) so the request's tokens can be recorded.
fn asks_usage_for_client(call: &Call<'_>, target: &ChatTarget) -> bool {
    call.ingress == Ingress::OpenAi
        && target.wire == ChatWire::OpenAi
        && call.stream
        && !call.include_usage
}

fn headers_for(call: &Call<'_>, target: &ChatTarget) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(tp) = &call.traceparent {
        h.push(("traceparent", tp.clone()));
    }
    if target.wire == ChatWire::Anthropic {
        h.push((
            "anthropic-version",
            call.anthropic_version
                .clone()
                .unwrap_or_else(|| "2023-06-01".to_string()),
        ));
        if let Some(b) = &call.anthropic_beta {
            h.push(("anthropic-beta", b.clone()));
        }
    }
    h
}

fn upstream_error(e: UpstreamError, provider: &str) -> GatewayError {
    match e {
        UpstreamError::Refused(core) => core.into(),
        UpstreamError::Timeout => GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{provider} did not answer in time"),
        ),
        UpstreamError::Connect => GatewayError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not connect to {provider}"),
        ),
        UpstreamError::Other => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("the request to {provider} failed"),
        ),
    }
}

/// Maps an upstream error status to what the client gets.
fn from_upstream_status(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    route: &Route,
    request_id: &str,
) -> GatewayError {
    let provider = route.provider.display_name();
    let upstream_msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map(|m| scrub(&m, route.api_key.as_ref().map(|k| k.expose())))
        .unwrap_or_default();
    let detail = match route.credential {
        _ if upstream_msg.is_empty() => String::new(),
        CredentialKind::User => format!(": {upstream_msg}"),
        // The operator's provider account is not the user's business: its messages (which
        // can quote the key, the account or its limits) go to the log, scrubbed.
        CredentialKind::System => {
            tracing::warn!(
                provider,
                status,
                upstream_message = %upstream_msg,
                "the provider refused a request made with the system default credential"
            );
            format!(" ({})", logged_under(request_id))
        }
    };
    let whose = match route.credential {
        CredentialKind::User => "your stored",
        CredentialKind::System => "the service's",
    };
    let (client_status, message) = match status {
        401 | 403 if route.credential == CredentialKind::System => {
            tracing::error!(
                provider,
                status,
                "the system default credential was rejected"
            );
            (
                StatusCode::BAD_GATEWAY,
                format!(
                    "{provider} rejected the service's default credential ({})",
                    logged_under(request_id)
                ),
            )
        }
        401 => (
            StatusCode::UNAUTHORIZED,
            format!("{provider} rejected {whose} API key (HTTP 401){detail}"),
        ),
        403 => (
            StatusCode::FORBIDDEN,
            format!("{provider} refused {whose} API key (HTTP 403){detail}"),
        ),
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("{provider} is rate limiting {whose} API key{detail}"),
        ),
        404 => (
            StatusCode::NOT_FOUND,
            format!("{provider}: model or endpoint not found{detail}"),
        ),
        413 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{provider}: request too large{detail}"),
        ),
        400 | 409 | 422 => (
            StatusCode::BAD_REQUEST,
            format!("{provider} rejected the request{detail}"),
        ),
        502 | 503 | 529 => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{provider} is unavailable or overloaded (HTTP {status})"),
        ),
        504 => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{provider} timed out (HTTP 504)"),
        ),
        _ => (
            StatusCode::BAD_GATEWAY,
            format!("{provider} failed to answer (HTTP {status})"),
        ),
    };
    GatewayError {
        status: client_status,
        message,
        retry_after: if status == 429 { retry_after } else { None },
        code: None,
    }
}

/// Where a user is told to look for what the system default's provider said.
fn logged_under(request_id: &str) -> String {
    format!("the details are in the service's log under request id {request_id}")
}

/// The request's log fields and usage record (never the key; the model name scrubbed, as
/// it is client input).
///
/// A non-streaming answer built before its response head (translated, or an error) is logged
/// once, by the request middleware: the LLM fields are recorded on the request's span and
/// appear on its `request` line (one formatted line and one `write` per request instead of
/// two). A stream, and a same-format answer streamed through, end after their response head was
/// logged, so they get their own `llm request` line with the whole latency.
#[expect(clippy::too_many_arguments, reason = "one flat record of a request")]
pub(crate) fn log_and_record(
    state: &AppState,
    user: byok_core::UserId,
    route: &Route,
    stream: bool,
    status: u16,
    input: u64,
    output: u64,
    started: Instant,
) {
    log_and_record_line(
        state, user, route, stream, stream, status, input, output, started,
    );
}

/// [`log_and_record`], with its own `llm request` line when `own_line` (the response head was
/// logged before the answer ended: streams, and non-streaming answers streamed through).
#[expect(clippy::too_many_arguments, reason = "one flat record of a request")]
fn log_and_record_line(
    state: &AppState,
    user: byok_core::UserId,
    route: &Route,
    stream: bool,
    own_line: bool,
    status: u16,
    input: u64,
    output: u64,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let latency_ms = elapsed.as_millis() as u64;
    state.metrics.observe_llm(
        route.provider.as_str(),
        route.credential.as_str(),
        stream,
        status,
        elapsed,
    );
    let model = scrub(&route.model, None);
    let byok = route.credential == CredentialKind::User;
    if own_line {
        tracing::info!(
            provider = route.provider.as_str(),
            model = %model,
            credential = route.credential.as_str(),
            byok,
            stream,
            status,
            latency_ms,
            input_tokens = input,
            output_tokens = output,
            "llm request"
        );
    } else {
        let span = tracing::Span::current();
        span.record("provider", route.provider.as_str());
        span.record("model", model.as_str());
        span.record("credential", route.credential.as_str());
        span.record("byok", byok);
        span.record("input_tokens", input);
        span.record("output_tokens", output);
    }
    state.usage.record(UsageRecord {
        // Time-ordered, so the unique index grows at its end.
        id: uuid::Uuid::now_v7(),
        user_id: user,
        provider: route.provider,
        model,
        credential: route.credential,
        status,
        input_tokens: input,
        output_tokens: output,
        latency_ms,
        at: chrono::Utc::now(),
    });
}

fn record(state: &AppState, call: &Call<'_>, route: &Route, status: u16, input: u64, output: u64) {
    log_and_record(
        state,
        call.who.user_id,
        route,
        call.stream,
        status,
        input,
        output,
        call.started,
    );
}

/// Records a failed attempt (the caller answers with the error or falls back).
pub fn record_error(state: &AppState, call: &Call<'_>, route: &Route, status: StatusCode) {
    record(state, call, route, status.as_u16(), 0, 0);
}

fn with_route_headers(resp: &mut actix_web::HttpResponseBuilder, route: &Route) {
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

/// Tries `route`. Errors before anything was sent to the client come back as `Err` (or as
/// `Retryable` for a user key that may fall back).
pub async fn attempt(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    charge: &mut Charge,
) -> Result<Attempt, GatewayError> {
    let target = state
        .upstream
        .target(
            route.provider,
            route.endpoint.as_deref(),
            route.credential == CredentialKind::System,
        )
        .map_err(GatewayError::from)?;
    let body = upstream_body(call, route, &target, charge)?;
    let headers = headers_for(call, &target);
    let provider_name = route.provider.display_name();
    let sent = Instant::now();
    let resp = state
        .upstream
        .post(
            &target,
            target.url(),
            route.api_key.as_ref(),
            &headers,
            body,
            call.stream,
        )
        .await
        .map_err(|e| upstream_error(e, provider_name))?;
    state
        .metrics
        .upstream_seconds
        .with_label_values(&[route.provider.as_str()])
        .observe(sent.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = body::read_limited(resp, MAX_ERROR_BODY).await;
        let err = from_upstream_status(status, &body, retry_after, route, &call.request_id);
        if route.credential == CredentialKind::User
            && byok_core::services::is_fallback_status(status)
        {
            return Ok(Attempt::Retryable(err));
        }
        return Err(err);
    }
    let same_wire = wire_of(call.ingress) == target.wire;
    if call.stream {
        return Ok(Attempt::Done(stream_response(
            state, call, route, resp, same_wire,
        )));
    }
    if same_wire {
        return Ok(Attempt::Done(pass_through(state, call, route, resp)));
    }
    translated_response(state, call, route, resp)
        .await
        .map(Attempt::Done)
}

/// The client's error for a translated answer that could not be buffered.
fn refused(why: Refusal, provider: &str, max_body: usize) -> GatewayError {
    match why {
        Refusal::TooLarge => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{provider}'s answer is too large to translate between API formats \
                 (limit: {max_body} bytes)"
            ),
        )
        .with_code("upstream_response_too_large"),
        Refusal::Busy => GatewayError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the gateway is holding too many large answers at the moment; retry shortly"
                .into(),
            retry_after: Some("1".into()),
            code: Some("response_buffer_exhausted"),
        },
        Refusal::Broken => GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("{provider} sent an incomplete response"),
        ),
    }
}

/// A non-streaming answer in the other API's format: buffered whole (it must be, to be
/// translated) under the per-answer cap and the process-wide budget, then translated.
async fn translated_response(
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
struct PassGuard {
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
fn pass_through(
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
struct StreamGuard {
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

fn stream_response(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_model_keeps_other_members_verbatim() {
        let body = br#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"h\u00e9 1.0e0"}],"temperature":0}"#;
        let out = rewrite_model(body, "gpt-4o").unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""model":"gpt-4o""#));
        assert!(s.contains(r#""content":"h\u00e9 1.0e0""#), "{s}");
        assert!(s.contains(r#""temperature":0"#));
        assert!(rewrite_model(b"[1]", "x").is_err());
    }
}
