//! `/v1/*`: the LLM gateway (Anthropic Messages and OpenAI Chat Completions ingress).

mod body;
mod call;
mod count_tokens;
mod errors;
mod forward;
mod models;
mod orchestrate;
pub mod prompt;
mod record;
mod request;
mod respond;
mod unknown;
mod upstream;

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use byok_core::Principal;
use serde::Deserialize;
use serde_json::Value;

pub use body::ResponseBudget;
use body::{Charge, Refusal, RequestRefusal};
use byok_core::services::InFlight;
use call::Call;
pub use count_tokens::{count_tokens, estimate_tokens};
use errors::Doing;
pub use errors::{GatewayError, Ingress, scrub};
use forward::{Attempt, attempt};
pub use models::models;
use record::record_error;
use respond::error_response;
pub use unknown::unknown_endpoint;

use crate::auth::presented_credential;
use crate::state::AppState;

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
    let slot = take_slot(state, &who, rate_limited)
        .await
        .map_err(|e| reject(e, ingress, None))?;
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

/// Takes one of `who`'s concurrent-request slots (held until the answer has been sent) and,
/// when `rate_limited`, counts the request against their rate limits.
async fn take_slot(
    state: &AppState,
    who: &Principal,
    rate_limited: bool,
) -> Result<Option<InFlight>, GatewayError> {
    let slot = match state.in_flight.max() {
        Some(max) => match state.in_flight.try_acquire(who.user_id) {
            Some(slot) => Some(slot),
            None => {
                state
                    .metrics
                    .rate_limited
                    .with_label_values(&["concurrency"])
                    .inc();
                return Err(too_many_in_flight(max));
            }
        },
        None => None,
    };
    if rate_limited
        && state.rate_limits.any()
        && let Err((scope, e)) = state.rate_limits.admit(state.limiter.as_ref(), who).await
    {
        state.metrics.rate_limited.with_label_values(&[scope]).inc();
        return Err(e.into());
    }
    Ok(slot)
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

async fn admit_and_answer(
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
        return orchestrate::answer_via_orchestrator(
            state, req, who, body, charge, &model, stream, started,
        )
        .await;
    }
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
    match serve(state, &call, charge).await {
        Ok(resp) => resp,
        Err(Unserved::Refused(err)) => reject(err, ingress, Some(&model)),
        Err(Unserved::Failed(err, route)) => error_response(&err, ingress, Some(&route)),
    }
}

/// Why [`serve`] produced no answer.
#[derive(Debug)]
enum Unserved {
    /// Refused before any provider was called (the model, the credential).
    Refused(GatewayError),
    /// The last route tried failed (its usage is recorded).
    Failed(GatewayError, byok_core::services::Route),
}

/// Serves a parsed request: resolves its route (core `RouteResolver`), then tries the primary
/// and, after a refused own key, the fallback. Every attempt is recorded.
async fn serve(
    state: &AppState,
    call: &Call<'_>,
    charge: &mut Charge,
) -> Result<HttpResponse, Unserved> {
    let resolution = state
        .routes
        .resolve(call.who, call.requested_model)
        .await
        .map_err(|e| Unserved::Refused(GatewayError::from_core(e, Doing::ResolvingModel)))?;
    let routes = std::iter::once(&resolution.primary).chain(resolution.fallback.iter());
    let mut last: Option<(GatewayError, &byok_core::services::Route)> = None;
    for route in routes {
        match attempt(state, call, route, charge).await {
            Ok(Attempt::Done(resp)) => return Ok(resp),
            Ok(Attempt::Retryable(err)) => {
                record_error(state, call, route, err.status);
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
                record_error(state, call, route, err.status);
                return Err(Unserved::Failed(err, route.clone()));
            }
        }
    }
    Err(match last {
        Some((err, route)) => Unserved::Failed(err, route.clone()),
        None => Unserved::Refused(GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "no route could serve the request",
        )),
    })
}

/// `POST /v1/messages` (Anthropic Messages API).
pub async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    admit_and_answer(state, req, payload, Ingress::Anthropic).await
}

/// `POST /v1/chat/completions` (OpenAI Chat Completions API).
pub async fn chat_completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    admit_and_answer(state, req, payload, Ingress::OpenAi).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_validates_the_essentials() {
        assert!(peek(br#"{"model":"m","messages":[],"max_tokens":5}"#, true).is_ok());
        assert!(peek(br#"{"model":"m","messages":[]}"#, true).is_err());
        assert!(peek(br#"{"model":"m","messages":{}}"#, false).is_err());
        assert!(peek(br#"{"messages":[]}"#, false).is_err());
        assert!(peek(b"nope", false).is_err());
    }
}
