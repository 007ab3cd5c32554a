//! One prompt from the console's Try it page, sent through the gateway as the signed-in person:
//! the same admission (a concurrency slot, the rate limits), routing, credential and fallback,
//! upstream call, translation (an Anthropic provider's answer comes back in the OpenAI shape),
//! error scrubbing on the platform's key, and usage record as a non-streaming
//! `POST /v1/chat/completions`. Only the answer's text, model, usage and latency are kept.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use async_trait::async_trait;
use byok_core::{CredentialKind, Principal};
use serde_json::{Value, json};

use super::call::Call;
use super::errors::{GatewayError, Ingress, scrub};
use super::{Unserved, buffer_refused, serve, take_slot};
use crate::state::AppState;

/// `max_tokens` of a Try it prompt: enough to see a key work, cheap on anyone's key.
pub const PROMPT_MAX_TOKENS: u32 = 512;

/// Longest prompt accepted, in bytes.
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;

/// Largest answer read back (512 tokens are a few KiB; a larger body is not an answer to it).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What a prompt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptReply {
    pub text: String,
    /// The model that answered, as the provider named it (else as asked).
    pub model: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub latency_ms: u64,
    /// Whose key answered (after a fallback: the platform's).
    pub credential: CredentialKind,
}

/// Sends `prompt` to `model` as `who` (see the module documentation). `request_id` is the
/// console request's id, which the log lines and a withheld provider error name.
pub async fn run_prompt(
    state: &AppState,
    who: &Principal,
    model: &str,
    prompt: &str,
    request_id: String,
    traceparent: Option<String>,
) -> Result<PromptReply, GatewayError> {
    let started = Instant::now();
    if prompt.trim().is_empty() {
        return Err(GatewayError::invalid("the prompt is empty"));
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(GatewayError::invalid(format!(
            "the prompt is longer than {MAX_PROMPT_BYTES} bytes"
        )));
    }
    let slot = take_slot(state, who, true).await.inspect_err(|e| {
        tracing::info!(status = e.status.as_u16(), "try-it prompt refused");
    })?;
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": PROMPT_MAX_TOKENS,
        "stream": false,
    });
    let body = Bytes::from(
        serde_json::to_vec(&body)
            .map_err(|_| GatewayError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?,
    );
    let mut charge = state.response_budget.charge();
    charge.cover(body.len()).map_err(buffer_refused)?;
    let call = Call {
        ingress: Ingress::OpenAi,
        who,
        requested_model: model,
        stream: false,
        include_usage: false,
        body: &body,
        anthropic_version: None,
        anthropic_beta: None,
        traceparent,
        request_id,
        started,
    };
    let resp = match serve(state, &call, &mut charge).await {
        Ok(resp) => resp,
        Err(Unserved::Refused(e)) => {
            tracing::info!(
                status = e.status.as_u16(),
                model = %scrub(model, None),
                "try-it prompt refused"
            );
            return Err(e);
        }
        Err(Unserved::Failed(e, _)) => return Err(e),
    };
    drop(charge);
    let credential = match resp
        .headers()
        .get("x-byok-credential")
        .and_then(|v| v.to_str().ok())
    {
        Some("user") => CredentialKind::User,
        _ => CredentialKind::System,
    };
    // Read whole (the usage record is made as the body ends), then the slot is given back.
    let read = actix_web::body::to_bytes_limited(resp.into_body(), MAX_ANSWER_BYTES).await;
    drop(slot);
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Err(GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "the provider's answer was cut off",
            ));
        }
        Err(_) => {
            return Err(GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "the provider's answer is larger than the Try it page reads",
            ));
        }
    };
    let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
        GatewayError::new(
            StatusCode::BAD_GATEWAY,
            "the provider's answer is not a chat completion",
        )
    })?;
    Ok(reply_of(&answer, model, credential, started))
}

/// The text, model and usage of an OpenAI chat completion.
fn reply_of(
    answer: &Value,
    asked: &str,
    credential: CredentialKind,
    started: Instant,
) -> PromptReply {
    let message = &answer["choices"][0]["message"];
    let text = match &message["content"] {
        Value::String(s) => s.clone(),
        // Content parts (some OpenAI-compatible servers): their text, in order.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let usage = &answer["usage"];
    PromptReply {
        text,
        model: answer["model"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or(asked)
            .to_string(),
        input_tokens: usage["prompt_tokens"].as_u64(),
        output_tokens: usage["completion_tokens"].as_u64(),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        credential,
    }
}

/// The console's [`byok_console::PromptRunner`]: [`run_prompt`] on this service's state.
#[derive(Debug)]
pub struct GatewayPrompts {
    state: AppState,
}

impl GatewayPrompts {
    /// `state` without a prompt runner of its own (the console's runner is this one).
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[async_trait(?Send)]
impl byok_console::PromptRunner for GatewayPrompts {
    async fn run(
        &self,
        req: &actix_web::HttpRequest,
        who: &Principal,
        model: &str,
        prompt: &str,
    ) -> Result<byok_console::PromptAnswer, byok_console::ErrorView> {
        let request_id = super::request_id(req);
        let traceparent = actix_web::HttpMessage::extensions(req)
            .get::<crate::trace::TraceContext>()
            .map(crate::trace::TraceContext::traceparent);
        match run_prompt(&self.state, who, model, prompt, request_id, traceparent).await {
            Ok(r) => Ok(byok_console::PromptAnswer {
                text: r.text,
                model: r.model,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                latency_ms: r.latency_ms,
                credential: r.credential,
            }),
            Err(e) => Err(byok_console::ErrorView {
                status: e.status,
                code: e.stable_code(),
                message: e.message,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_text_and_usage_are_read() {
        let started = Instant::now();
        let r = reply_of(
            &json!({"model": "gpt-4o-2024", "choices": [{"message": {"content": "hi"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
            "gpt-4o",
            CredentialKind::User,
            started,
        );
        assert_eq!(
            (
                r.text.as_str(),
                r.model.as_str(),
                r.input_tokens,
                r.output_tokens
            ),
            ("hi", "gpt-4o-2024", Some(3), Some(1))
        );
        let r = reply_of(
            &json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"},
                    {"type": "text", "text": "b"}]}}]}),
            "m",
            CredentialKind::System,
            started,
        );
        assert_eq!((r.text.as_str(), r.model.as_str()), ("ab", "m"));
        assert_eq!(r.input_tokens, None);
    }
}
