//! One LLM call's log line, metrics and usage record.

use std::time::Instant;

use actix_web::http::StatusCode;
use byok_core::services::Route;
use byok_core::{CredentialKind, UsageRecord};

use super::call::Call;
use super::errors::scrub;
use crate::state::AppState;

/// The request's log fields and usage record (never the key; the model name scrubbed, as
/// it is client input).
///
/// A non-streaming answer built before its response head (translated, or an error) is logged
/// once, by the request middleware: the LLM fields are recorded on the request's span and
/// appear on its `request` line (one formatted line and one `write` per request instead of
/// two). A stream, and a same-format answer streamed through, end after their response head was
/// logged, so they get their own `llm request` line with the whole latency.
#[expect(clippy::too_many_arguments, reason = "one flat record of a request")]
pub(super) fn log_and_record(
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
pub(super) fn log_and_record_line(
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
        fallback: route.fallback,
    });
}

pub(super) fn record(
    state: &AppState,
    call: &Call<'_>,
    route: &Route,
    status: u16,
    input: u64,
    output: u64,
) {
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
