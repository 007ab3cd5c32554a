//! `/v1/*`: the LLM gateway (Anthropic Messages and OpenAI Chat Completions ingress).

mod body;
mod errors;
mod forward;
mod orchestrate;

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use byok_core::{CredentialKind, Principal, ProviderId};
use serde::Deserialize;
use serde_json::{Value, json};

pub use body::ResponseBudget;
use body::{Charge, Refusal, RequestRefusal};
use byok_core::services::InFlight;
use errors::Doing;
pub use errors::{GatewayError, Ingress, scrub};
use forward::{Attempt, Call, attempt, error_response, record_error};

use crate::auth::presented_credential;
use crate::state::AppState;

/// Largest `count_tokens` answer read from a provider (it is `{"input_tokens": N}`).
const MAX_COUNT_TOKENS_BODY: usize = 64 * 1024;

/// Registers the gateway routes (query strings such as `?beta=true` are accepted and ignored).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/messages", web::post().to(messages))
            .route("/messages/count_tokens", web::post().to(count_tokens))
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/models", web::get().to(models)),
    );
}

async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, GatewayError> {
    let credential = presented_credential(req).ok_or_else(|| {
        GatewayError::new(
            StatusCode::UNAUTHORIZED,
            "missing credentials: send the gateway token as x-api-key or Authorization: Bearer",
        )
    })?;
    let who = state.authenticator.authenticate(&credential).await?;
    tracing::Span::current().record("user_id", tracing::field::display(who.user_id));
    Ok(who)
}

/// Why a request body was not read, as the client sees it.
fn body_refused(why: RequestRefusal, limit: usize) -> GatewayError {
    match why {
        RequestRefusal::OverLimit => GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body exceeds {limit} bytes"),
        ),
        RequestRefusal::Broken => GatewayError::invalid("the request body could not be read"),
        RequestRefusal::Budget(why) => buffer_refused(why),
    }
}

/// The client's error when the process-wide buffer budget cannot hold what a request needs
/// (its body, or the copies made to translate it).
fn buffer_refused(why: Refusal) -> GatewayError {
    match why {
        Refusal::Busy | Refusal::Broken => GatewayError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the gateway is holding too many large requests at the moment; retry shortly"
                .into(),
            retry_after: Some("1".into()),
            code: Some("request_buffer_exhausted"),
        },
        Refusal::TooLarge => GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request is larger than this gateway can hold at once (its buffer budget)",
        )
        .with_code("request_buffer_exhausted"),
    }
}

/// Charges `charge` for parsing `body` whole (and for the translated or rewritten copy).
fn charge_parse(charge: &mut Charge, body: &[u8]) -> Result<(), GatewayError> {
    charge
        .cover(body.len().saturating_add(body::parse_cost(body)))
        .map_err(buffer_refused)
}

/// Answers a request refused before any provider was called, with its log line (the model
/// name is client input: scrubbed).
fn reject(err: GatewayError, ingress: Ingress, model: Option<&str>) -> HttpResponse {
    tracing::info!(
        status = err.status.as_u16(),
        model = model.map(|m| scrub(m, None)).unwrap_or_default(),
        "llm request refused"
    );
    err.response(ingress)
}

/// The refusal of a request over `BYOK_MAX_CONCURRENT_PER_USER`.
fn too_many_in_flight(max: usize) -> GatewayError {
    GatewayError {
        status: StatusCode::TOO_MANY_REQUESTS,
        message: format!(
            "too many concurrent requests: at most {max} at a time per user; retry in 1 s"
        ),
        retry_after: Some("1".into()),
        code: None,
    }
}

/// What an admitted request holds until it is served: its caller, its body, its concurrency
/// slot (until the answer has been sent) and the part of the buffer budget its body takes (until
/// the body is dropped, when the answer starts).
struct Admitted {
    who: Principal,
    body: Bytes,
    slot: Option<InFlight>,
    charge: Charge,
}

/// Authenticates the caller, takes one of its concurrent-request slots, counts the request
/// against its rate limits when `rate_limited`, then reads the body, charged to the buffer
/// budget as it grows (in that order: an unauthenticated, limited or over-budget client cannot
/// make the service buffer a large body). Errors come in the client's format.
async fn admit(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    ingress: Ingress,
    rate_limited: bool,
) -> Result<Admitted, HttpResponse> {
    let who = authenticate(req, state)
        .await
        .map_err(|e| reject(e, ingress, None))?;
    let slot = match state.in_flight.max() {
        Some(max) => match state.in_flight.try_acquire(who.user_id) {
            Some(slot) => Some(slot),
            None => {
                state
                    .metrics
                    .rate_limited
                    .with_label_values(&["concurrency"])
                    .inc();
                return Err(reject(too_many_in_flight(max), ingress, None));
            }
        },
        None => None,
    };
    if rate_limited
        && state.rate_limits.any()
        && let Err((scope, e)) = state.rate_limits.admit(state.limiter.as_ref(), &who).await
    {
        state.metrics.rate_limited.with_label_values(&[scope]).inc();
        return Err(reject(e.into(), ingress, None));
    }
    let announced = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut charge = state.response_budget.charge();
    let body = body::read_request(payload, announced, state.max_body_bytes, &mut charge)
        .await
        .map_err(|why| {
            if matches!(why, RequestRefusal::Budget(_)) {
                state
                    .metrics
                    .rate_limited
                    .with_label_values(&["buffer"])
                    .inc();
            }
            reject(body_refused(why, state.max_body_bytes), ingress, None)
        })?;
    Ok(Admitted {
        who,
        body,
        slot,
        charge,
    })
}

/// The id the request is logged under (validated or generated by the request middleware).
fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<crate::trace::RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What the gateway reads of a request body (everything else is forwarded or translated).
#[derive(Deserialize)]
struct Peek<'a> {
    model: Option<String>,
    #[serde(borrow)]
    messages: Option<&'a serde_json::value::RawValue>,
    max_tokens: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

fn peek(body: &[u8], need_max_tokens: bool) -> Result<Peek<'_>, GatewayError> {
    let p: Peek<'_> = byok_core::json::from_slice(body)
        .map_err(|p| GatewayError::invalid(format!("invalid request body: {p}")))?;
    match &p.model {
        Some(m) if !m.trim().is_empty() => {}
        _ => return Err(GatewayError::invalid("model: field required")),
    }
    if !p
        .messages
        .is_some_and(|m| m.get().trim_start().starts_with('['))
    {
        return Err(GatewayError::invalid("messages: an array is required"));
    }
    if need_max_tokens && !p.max_tokens.as_ref().is_some_and(Value::is_u64) {
        return Err(GatewayError::invalid(
            "max_tokens: a positive integer is required",
        ));
    }
    Ok(p)
}

async fn serve(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
    ingress: Ingress,
) -> HttpResponse {
    let started = Instant::now();
    let Admitted {
        who,
        body,
        slot,
        mut charge,
    } = match admit(&state, &req, payload, ingress, true).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let resp = answer(&state, &req, &who, &body, &mut charge, ingress, started).await;
    // The body (and its copies) are no longer held once the answer starts.
    drop(body);
    drop(charge);
    match slot {
        Some(slot) => body::hold_while_streaming(resp, slot),
        None => resp,
    }
}

/// Serves an admitted request.
async fn answer(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    body: &Bytes,
    charge: &mut Charge,
    ingress: Ingress,
    started: Instant,
) -> HttpResponse {
    let p = match peek(body, ingress == Ingress::Anthropic) {
        Ok(p) => p,
        Err(e) => return reject(e, ingress, None),
    };
    let model = p.model.clone().unwrap_or_default();
    if ingress == Ingress::Anthropic
        && byok_core::services::orchestration_requested(
            header(req, byok_core::services::ORCHESTRATION_HEADER).as_deref(),
            &model,
        )
    {
        let stream = p.stream.unwrap_or(false);
        return orchestrate::serve(state, req, who, body, charge, &model, stream, started).await;
    }
    let resolution = match state.gateway.resolve(who, &model).await {
        Ok(r) => r,
        Err(e) => {
            return reject(
                GatewayError::from_core(e, Doing::ResolvingModel),
                ingress,
                Some(&model),
            );
        }
    };
    let call = Call {
        ingress,
        who,
        requested_model: &model,
        stream: p.stream.unwrap_or(false),
        include_usage: p
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        body,
        anthropic_version: header(req, "anthropic-version"),
        anthropic_beta: header(req, "anthropic-beta"),
        traceparent: req
            .extensions()
            .get::<crate::trace::TraceContext>()
            .map(crate::trace::TraceContext::traceparent),
        request_id: request_id(req),
        started,
    };
    let routes = std::iter::once(&resolution.primary).chain(resolution.fallback.iter());
    let mut last: Option<(GatewayError, &byok_core::services::Route)> = None;
    for route in routes {
        match attempt(state, &call, route, charge).await {
            Ok(Attempt::Done(resp)) => return resp,
            Ok(Attempt::Retryable(err)) => {
                record_error(state, &call, route, err.status);
                if resolution.fallback.is_some() && std::ptr::eq(route, &resolution.primary) {
                    state.metrics.fallbacks.inc();
                }
                tracing::info!(
                    provider = route.provider.as_str(),
                    status = err.status.as_u16(),
                    "user key failed; trying the fallback if the policy allows"
                );
                last = Some((err, route));
            }
            Err(err) => {
                record_error(state, &call, route, err.status);
                return error_response(&err, ingress, Some(route));
            }
        }
    }
    match last {
        Some((err, route)) => error_response(&err, ingress, Some(route)),
        None => GatewayError::new(StatusCode::BAD_GATEWAY, "no route could serve the request")
            .response(ingress),
    }
}

/// `POST /v1/messages` (Anthropic Messages API).
pub async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(state, req, payload, Ingress::Anthropic).await
}

/// `POST /v1/chat/completions` (OpenAI Chat Completions API).
pub async fn chat_completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(state, req, payload, Ingress::OpenAi).await
}

/// A documented estimate: about four characters per token over every text the model reads
/// (system, messages, tool definitions), plus a few tokens per message.
pub fn estimate_tokens(req: &Value) -> u64 {
    /// (characters, images) under `v`; image data is not counted as text.
    fn walk(v: &Value) -> (u64, u64) {
        match v {
            Value::String(s) => (s.chars().count() as u64, 0),
            Value::Array(a) => a
                .iter()
                .map(walk)
                .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1)),
            Value::Object(o) => {
                let image = u64::from(o.get("type").and_then(Value::as_str) == Some("image"));
                o.iter()
                    .filter(|(k, _)| k.as_str() != "data" && k.as_str() != "type")
                    .map(|(k, v)| {
                        let (c, i) = walk(v);
                        (c + k.len() as u64, i)
                    })
                    .fold((0, image), |x, y| (x.0 + y.0, x.1 + y.1))
            }
            Value::Number(n) => (n.to_string().len() as u64, 0),
            _ => (0, 0),
        }
    }
    let (system, _) = req.get("system").map_or((0, 0), walk);
    let (messages_chars, images) = req.get("messages").map_or((0, 0), walk);
    let (tools, _) = req.get("tools").map_or((0, 0), walk);
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    (system + messages_chars + tools).div_ceil(4) + 4 * messages + 1600 * images + 3
}

/// `POST /v1/messages/count_tokens`: exact from an Anthropic upstream, else an estimate
/// (`x-byok-token-count: estimate`).
pub async fn count_tokens(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let ingress = Ingress::Anthropic;
    // Counting tokens is free at the providers, and clients such as Claude Code count before
    // many of their messages: counting them against the rate limits would halve a user's
    // effective limit for no protection. It takes a concurrency slot and its body is charged to
    // the buffer budget like any other request, so memory and concurrency stay bounded.
    let Admitted {
        who,
        body,
        slot,
        mut charge,
    } = match admit(&state, &req, payload, ingress, false).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let resp = count(&state, &req, &who, &body, &mut charge).await;
    drop((body, charge));
    match slot {
        Some(slot) => body::hold_while_streaming(resp, slot),
        None => resp,
    }
}

/// Serves an admitted `count_tokens` request.
async fn count(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    body: &Bytes,
    charge: &mut Charge,
) -> HttpResponse {
    let ingress = Ingress::Anthropic;
    let model = match peek(body, false) {
        Ok(p) => p.model.unwrap_or_default(),
        Err(e) => return e.response(ingress),
    };
    let resolution = match state.gateway.resolve(who, &model).await {
        Ok(r) => r,
        Err(e) => return GatewayError::from_core(e, Doing::ResolvingModel).response(ingress),
    };
    let route = &resolution.primary;
    if let Ok(target) = state.upstream.target(
        route.provider,
        route.endpoint.as_deref(),
        route.credential == CredentialKind::System,
    ) && let Some(url) = target.count_tokens_url()
    {
        let upstream_body = if route.model == model {
            body.clone()
        } else {
            // A copy with the model renamed.
            if let Err(e) = charge
                .cover(body.len().saturating_mul(2))
                .map_err(buffer_refused)
            {
                return e.response(ingress);
            }
            match forward::rewrite_model(body, &route.model) {
                Ok(b) => Bytes::from(b),
                Err(e) => return e.response(ingress),
            }
        };
        let mut headers = vec![(
            "anthropic-version",
            header(req, "anthropic-version").unwrap_or_else(|| "2023-06-01".into()),
        )];
        if let Some(b) = header(req, "anthropic-beta") {
            headers.push(("anthropic-beta", b));
        }
        match state
            .upstream
            .post(
                &target,
                url,
                route.api_key.as_ref(),
                &headers,
                upstream_body,
                false,
            )
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                if let Some(bytes) = body::read_small(resp, MAX_COUNT_TOKENS_BODY).await {
                    return HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("x-byok-provider", route.provider.as_str()))
                        .insert_header(("x-byok-credential", route.credential.as_str()))
                        .insert_header(("x-byok-token-count", "exact"))
                        .body(bytes);
                }
            }
            Ok(resp) => {
                tracing::info!(
                    status = resp.status().as_u16(),
                    "upstream count_tokens failed; estimating"
                );
            }
            Err(e) => tracing::info!(error = %e, "upstream count_tokens failed; estimating"),
        }
    }
    // The estimate parses the body whole.
    if let Err(e) = charge_parse(charge, body) {
        return e.response(ingress);
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    HttpResponse::Ok()
        .insert_header(("x-byok-provider", route.provider.as_str()))
        .insert_header(("x-byok-credential", route.credential.as_str()))
        .insert_header(("x-byok-token-count", "estimate"))
        .json(json!({"input_tokens": estimate_tokens(&v)}))
}

/// Well-known models per provider, listed by `GET /v1/models` (any other model name of a
/// reachable provider works too).
fn known_models(p: ProviderId) -> &'static [&'static str] {
    match p {
        ProviderId::Anthropic => &[
            "claude-opus-4-1",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-3-5-haiku-latest",
        ],
        ProviderId::Openai => &["gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3-mini"],
        ProviderId::Groq => &["groq/llama-3.3-70b-versatile", "groq/llama-3.1-8b-instant"],
        ProviderId::Together => &["together/meta-llama/Llama-3.3-70B-Instruct-Turbo"],
        ProviderId::Perplexity => &["sonar", "sonar-pro"],
        ProviderId::Cohere => &["command-r-plus", "command-a-03-2025"],
        ProviderId::Huggingface => &["huggingface/meta-llama/Llama-3.1-8B-Instruct"],
        ProviderId::Openrouter => &[
            "claude-sonnet-4-5",
            "gpt-4o",
            "openrouter/meta-llama/llama-3.3-70b-instruct",
        ],
        ProviderId::Ollama | ProviderId::Custom => &[],
    }
}

/// `GET /v1/models`: the models the caller can reach, in a shape both SDKs read (Anthropic's
/// `type`/`display_name`/`created_at` and OpenAI's `object`/`created`/`owned_by`).
pub async fn models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let ingress = if req.headers().contains_key("anthropic-version") {
        Ingress::Anthropic
    } else {
        Ingress::OpenAi
    };
    let who = match authenticate(&req, &state).await {
        Ok(w) => w,
        Err(e) => return e.response(ingress),
    };
    let reachable = match state.gateway.reachable(&who).await {
        Ok(r) => r,
        Err(e) => return GatewayError::from(e).response(ingress),
    };
    let mut ids: Vec<(String, ProviderId, CredentialKind)> = Vec::new();
    for (p, kind) in reachable {
        let names: Vec<String> = match p {
            ProviderId::Ollama | ProviderId::Custom => vec![format!("{}/*", p.as_str())],
            _ => known_models(p).iter().map(|m| (*m).to_string()).collect(),
        };
        for n in names {
            if !ids.iter().any(|(i, _, _)| *i == n) {
                ids.push((n, p, kind));
            }
        }
    }
    let data: Vec<Value> = ids
        .iter()
        .map(|(id, p, kind)| {
            json!({
                "id": id, "type": "model", "object": "model", "display_name": id,
                "created_at": "2025-01-01T00:00:00Z", "created": 1_735_689_600,
                "owned_by": p.as_str(), "byok": *kind == CredentialKind::User,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": ids.first().map(|(i, _, _)| i),
        "last_id": ids.last().map(|(i, _, _)| i),
    }))
}

/// What an LLM client gets for a path or method this gateway does not serve under `/v1` (or
/// Gemini's `/v1beta`): a 404 in the shape its SDK parses (Anthropic when it sends Anthropic's
/// headers or calls a messages path, Google's for Gemini, else OpenAI's), and one log line with
/// the method and the path (query dropped, credential-shaped segments scrubbed, bounded) so an
/// operator sees what a client tried.
pub fn unknown_endpoint(req: &HttpRequest) -> HttpResponse {
    let path = req.path();
    let logged = loggable_path(path);
    tracing::info!(method = %req.method().as_str().chars().take(16).collect::<String>(),
        path = %logged, "an LLM client called an endpoint this gateway does not serve");
    let message = "this gateway does not serve this endpoint; it serves POST /v1/messages, \
                   /v1/messages/count_tokens, /v1/chat/completions and GET /v1/models";
    let has = |h: &str| req.headers().contains_key(h);
    if path.starts_with("/v1beta") || has("x-goog-api-key") {
        return HttpResponse::NotFound().json(serde_json::json!({
            "error": {"code": 404, "message": message, "status": "NOT_FOUND"}
        }));
    }
    let ingress = if has("anthropic-version") || has("x-api-key") || path.contains("/messages") {
        Ingress::Anthropic
    } else {
        Ingress::OpenAi
    };
    GatewayError::new(StatusCode::NOT_FOUND, message)
        .with_code("unknown_endpoint")
        .response(ingress)
}

/// `%XX` escapes decoded (invalid ones kept as they are), lossily as UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a path segment may be a credential: a run of 20 or more characters of the alphabet
/// keys are written in (`[A-Za-z0-9_.-]`: OpenAI-style, Mistral/Together/Cohere-style bare
/// alphanumerics, JWTs), or a JWT's `eyJ` start.
fn key_shaped(segment: &str) -> bool {
    const MIN_RUN: usize = 20;
    if segment.starts_with("eyJ") {
        return true;
    }
    let mut run = 0;
    for c in segment.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
            run += 1;
            if run >= MIN_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A path as the unknown-endpoint log line shows it: percent-decoded (until stable, so an
/// encoded key is seen as one), each segment between `/` and `:` that may be a credential
/// replaced by `[redacted]`, other credential shapes scrubbed, at most 200 characters.
/// `v1`, `models`, `gemini-2.5-pro:generateContent` stay readable.
fn loggable_path(path: &str) -> String {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let mut out = String::with_capacity(decoded.len().min(256));
    for piece in decoded.split_inclusive(['/', ':']) {
        let (segment, sep) = match piece.strip_suffix(['/', ':']) {
            Some(seg) => (seg, &piece[seg.len()..]),
            None => (piece, ""),
        };
        if key_shaped(segment) {
            out.push_str("[redacted]");
        } else {
            out.push_str(segment);
        }
        out.push_str(sep);
    }
    scrub(&out, None).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_keep_endpoints_and_lose_keys() {
        assert_eq!(
            loggable_path("/v1beta/models/gemini-2.5-pro:generateContent"),
            "/v1beta/models/gemini-2.5-pro:generateContent"
        );
        assert_eq!(loggable_path("/v1/responses"), "/v1/responses");
        assert_eq!(
            loggable_path("/v1/sk%2Dproj%2DABCDEFabcdef0123456789/models"),
            "/v1/[redacted]/models"
        );
        assert_eq!(
            loggable_path("/v1/sk%252Dproj%252DABCDEFabcdef0123456789/models"),
            "/v1/[redacted]/models",
            "encoded twice"
        );
        assert_eq!(
            loggable_path("/v1/models/eyJhbGc.x.y"),
            "/v1/models/[redacted]"
        );
        assert_eq!(
            loggable_path("/v1/x:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd/y"),
            "/v1/x:[redacted]/y"
        );
        assert_eq!(loggable_path("/v1/a%2"), "/v1/a%2");
        assert!(loggable_path(&"/v1/a".repeat(100)).chars().count() <= 200);
    }

    #[test]
    fn estimate_is_documented_and_monotonic() {
        let small = json!({"messages": [{"role": "user", "content": "hi"}]});
        let large =
            json!({"system": "x".repeat(400), "messages": [{"role": "user", "content": "hi"}]});
        assert!(estimate_tokens(&large) >= estimate_tokens(&small) + 100);
    }

    #[test]
    fn peek_validates_the_essentials() {
        assert!(peek(br#"{"model":"m","messages":[],"max_tokens":5}"#, true).is_ok());
        assert!(peek(br#"{"model":"m","messages":[]}"#, true).is_err());
        assert!(peek(br#"{"model":"m","messages":{}}"#, false).is_err());
        assert!(peek(br#"{"messages":[]}"#, false).is_err());
        assert!(peek(b"nope", false).is_err());
    }
}
