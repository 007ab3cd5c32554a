//! One attempt to serve a request on one route: build the upstream request (pass-through or
//! translated), send it, and turn the answer into the client's response.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use byok_core::services::Route;
use byok_core::{CredentialKind, Principal, UsageRecord};
use byok_providers::ChatWire;
use byok_providers::stream::StreamTranslator;
use byok_providers::translate;
use byok_providers::upstream::{ChatTarget, UpstreamError, UpstreamResponse};
use futures_util::StreamExt;
use serde_json::Value;

use super::errors::{GatewayError, Ingress, scrub};
use crate::state::AppState;

/// Largest upstream error body read (the rest is ignored).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streaming upstream response accepted (a user endpoint could send without end).
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

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

fn upstream_body(
    call: &Call<'_>,
    route: &Route,
    target: &ChatTarget,
) -> Result<Bytes, GatewayError> {
    if wire_of(call.ingress) == target.wire {
        let rename = (route.model != call.requested_model).then_some(route.model.as_str());
        let ask_usage = asks_usage_for_client(call, target);
        if rename.is_none() && !ask_usage {
            return Ok(call.body.clone());
        }
        return rewrite_members(call.body, rename, ask_usage).map(Bytes::from);
    }
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

/// The whole body, or `Err` when it fails or exceeds `limit`.
async fn read_capped(resp: UpstreamResponse, limit: usize) -> Result<Bytes, ()> {
    let mut out = web::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if out.len() + chunk.len() > limit {
            return Err(());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

async fn read_limited(resp: UpstreamResponse, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Maps an upstream error status to what the client gets.
fn from_upstream_status(
    status: u16,
    body: &[u8],
    retry_after: Option<String>,
    route: &Route,
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
    let detail = if upstream_msg.is_empty() {
        String::new()
    } else {
        format!(": {upstream_msg}")
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
                format!("{provider} rejected the service's default credential"),
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

/// The request's log fields and usage record (never the key; the model name scrubbed, as
/// it is client input).
///
/// A non-streaming answer is logged once, by the request middleware: the LLM fields are
/// recorded on the request's span and appear on its `request` line (one formatted line and one
/// `write` per request instead of two). A stream ends after its response head was logged, so it
/// gets its own `llm request` line with the whole stream's latency.
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
    if stream {
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

/// The `usage` member of a provider's answer, everything else skipped unparsed.
#[derive(serde::Deserialize)]
struct UsageOnly {
    usage: Option<UsageFields>,
}

/// Token counts in either format (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic
/// `input_tokens` + cache reads/writes, `output_tokens`).
#[derive(serde::Deserialize, Default)]
struct UsageFields {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl UsageFields {
    fn totals(&self) -> (u64, u64) {
        match self.prompt_tokens {
            Some(p) => (p, self.completion_tokens.unwrap_or(0)),
            None => (
                self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens,
                self.output_tokens,
            ),
        }
    }
}

fn usage_of(v: &Value) -> (u64, u64) {
    let u = v.get("usage");
    let get = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    if u.is_some_and(|u| u.get("prompt_tokens").is_some()) {
        (get("prompt_tokens"), get("completion_tokens"))
    } else {
        (
            get("input_tokens")
                + get("cache_read_input_tokens")
                + get("cache_creation_input_tokens"),
            get("output_tokens"),
        )
    }
}

/// Tries `route`. Errors before anything was sent to the client come back as `Err` (or as
/// `Retryable` for a user key that may fall back).
pub async fn attempt(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
) -> Result<Attempt, GatewayError> {
    let target = state
        .upstream
        .target(
            route.provider,
            route.endpoint.as_deref(),
            route.credential == CredentialKind::System,
        )
        .map_err(GatewayError::from)?;
    let body = upstream_body(call, route, &target)?;
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
        let body = read_limited(resp, MAX_ERROR_BODY).await;
        let err = from_upstream_status(status, &body, retry_after, route);
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
    let bytes = read_capped(resp, MAX_RESPONSE_BODY).await.map_err(|_| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            format!("{provider_name} sent an incomplete response"),
        )
    })?;
    // Same format: only `usage` is read (no tree of the whole answer is built).
    let (input, output, parsed) = if same_wire {
        let u = serde_json::from_slice::<UsageOnly>(&bytes)
            .ok()
            .and_then(|o| o.usage)
            .unwrap_or_default();
        let (i, o) = u.totals();
        (i, o, None)
    } else {
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        let (i, o) = parsed.as_ref().map(usage_of).unwrap_or((0, 0));
        (i, o, parsed)
    };
    let body = if same_wire {
        bytes
    } else {
        let v = parsed.ok_or_else(|| {
            GatewayError::new(
                StatusCode::BAD_GATEWAY,
                format!("{provider_name} sent a response that is not JSON"),
            )
        })?;
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
        Bytes::from(out.to_string())
    };
    record(state, call, route, 200, input, output);
    let mut resp = HttpResponse::Ok();
    resp.content_type("application/json");
    with_route_headers(&mut resp, route);
    Ok(Attempt::Done(resp.body(body)))
}

/// Records usage when the stream ends, however it ends (client gone included).
struct StreamGuard {
    translator: StreamTranslator,
    state: AppState,
    who: Principal,
    route: Route,
    stream: bool,
    started: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
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
    let guard = StreamGuard {
        translator,
        state: state.clone(),
        who: call.who.clone(),
        route: route.clone(),
        stream: true,
        started: call.started,
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
