//! `POST /v1/messages` handed to the orchestrator ("Brigade") instead of a provider.
//!
//! Asked for with the `x-byok-orchestrate: true` header or a `brigade/` model prefix; the
//! execution server is the one named by `x-byok-execution-server` (id or name, `none`) or the
//! user's default. The answer comes back as an Anthropic Messages response, or as the full SSE
//! sequence (`message_start` … `message_stop`; a failure mid-stream is an `event: error`).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use byok_core::Principal;
use byok_core::ports::{OrchestratorError, OrchestratorEvent, OrchestratorReply, ReplyBlock};
use byok_core::services::{
    EXECUTION_SERVER_HEADER, LlmTarget, Route, build_task, strip_orchestration_prefix,
};
use byok_providers::ChatWire;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::body::Charge;
use super::errors::Doing;
use super::record::log_and_record;
use super::{GatewayError, Ingress, header, scrub};
use crate::state::AppState;

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// Brigade's message, with the task's key and anything shaped like a credential removed (an
/// orchestrator may echo what it was given).
fn safe_message(e: &OrchestratorError, key: Option<&str>) -> String {
    scrub(&e.to_string(), key)
}

fn orchestrator_error(e: &OrchestratorError, key: Option<&str>) -> GatewayError {
    let message = safe_message(e, key);
    tracing::warn!(error = %message, "orchestrator call failed");
    let status = match e {
        OrchestratorError::Failed { status: 429, .. } => StatusCode::TOO_MANY_REQUESTS,
        OrchestratorError::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    GatewayError::new(status, message)
}

fn stop_reason(given: Option<String>, has_tool_use: bool) -> String {
    given.unwrap_or_else(|| {
        if has_tool_use {
            "tool_use".into()
        } else {
            "end_turn".into()
        }
    })
}

/// An orchestrator reply as an Anthropic `message`.
pub fn message_json(reply: OrchestratorReply, model: &str) -> Value {
    let has_tool = reply
        .blocks
        .iter()
        .any(|b| matches!(b, ReplyBlock::ToolUse { .. }));
    let content: Vec<Value> = reply
        .blocks
        .into_iter()
        .map(|b| match b {
            ReplyBlock::Text(text) => json!({"type": "text", "text": text}),
            ReplyBlock::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(reply.stop_reason, has_tool),
        "stop_sequence": null,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
    })
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Turns orchestrator events into Anthropic stream events, one block at a time.
#[derive(Debug, Default)]
pub struct SseWriter {
    index: usize,
    text_open: bool,
    saw_tool: bool,
}

impl SseWriter {
    pub fn start(model: &str) -> Bytes {
        sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        )
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        if self.text_open {
            out.extend_from_slice(&sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.text_open = false;
            self.index += 1;
        }
    }

    /// The bytes for one event.
    pub fn event(&mut self, ev: OrchestratorEvent) -> Bytes {
        let mut out = Vec::new();
        match ev {
            OrchestratorEvent::Text(text) => {
                if !self.text_open {
                    out.extend_from_slice(&sse(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": self.index,
                                "content_block": {"type": "text", "text": ""}}),
                    ));
                    self.text_open = true;
                }
                out.extend_from_slice(&sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            OrchestratorEvent::ToolUse { id, name, input } => {
                self.close_text(&mut out);
                self.saw_tool = true;
                let i = self.index;
                out.extend_from_slice(&sse(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                ));
                out.extend_from_slice(&sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
                ));
                out.extend_from_slice(&sse(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": i}),
                ));
                self.index += 1;
            }
            OrchestratorEvent::Done {
                stop_reason: reason,
                input_tokens,
                output_tokens,
            } => {
                self.close_text(&mut out);
                out.extend_from_slice(&sse(
                    "message_delta",
                    &json!({"type": "message_delta",
                            "delta": {"stop_reason": stop_reason(reason, self.saw_tool), "stop_sequence": null},
                            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}),
                ));
                out.extend_from_slice(&sse("message_stop", &json!({"type": "message_stop"})));
            }
        }
        Bytes::from(out)
    }

    /// A failure after the stream began.
    pub fn error(e: &OrchestratorError, key: Option<&str>) -> Bytes {
        let kind = match e {
            OrchestratorError::Unreachable(_) => "overloaded_error",
            _ => "api_error",
        };
        sse(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": safe_message(e, key)}}),
        )
    }
}

/// Serves an orchestrated `/v1/messages` request.
#[expect(
    clippy::too_many_arguments,
    reason = "the admitted request, as the handler holds it"
)]
pub async fn answer_via_orchestrator(
    state: &AppState,
    req: &HttpRequest,
    who: &Principal,
    body: &Bytes,
    charge: &mut Charge,
    model: &str,
    stream: bool,
    started: Instant,
) -> HttpResponse {
    let ingress = Ingress::Anthropic;
    let Some(orchestrator) = state.orchestrator.clone() else {
        return GatewayError::invalid(
            "orchestration is not configured on this service (BRIGADE_URL is not set)",
        )
        .response(ingress);
    };
    // The task is built from the parsed request: charged to the buffer budget first.
    if let Err(e) = super::charge_parse(charge, body) {
        return e.response(ingress);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return GatewayError::invalid("the body is not valid JSON").response(ingress),
    };
    let wanted = strip_orchestration_prefix(model);
    let resolution = match state.routes.resolve(who, wanted).await {
        Ok(r) => r,
        Err(e) => return GatewayError::from_core(e, Doing::ResolvingModel).response(ingress),
    };
    let route: Route = resolution.primary;
    let key: Option<String> = route.api_key.as_ref().map(|k| k.expose().to_string());
    let target = match state.upstream.target(
        route.provider,
        route.endpoint.as_deref(),
        route.credential == byok_core::CredentialKind::System,
    ) {
        Ok(t) => {
            // Brigade will call a user's endpoint from inside the operator's network: it must
            // pass the same target policy as a direct call, refused the same way.
            if let Err(e) = state.upstream.check_target(&t).await {
                return GatewayError::from(e).response(ingress);
            }
            t
        }
        Err(e) => return GatewayError::from(e).response(ingress),
    };
    let target = LlmTarget {
        base_url: Some(target.base),
        format: match target.wire {
            ChatWire::Anthropic => "anthropic",
            ChatWire::OpenAi => "openai",
        },
    };
    let selector = header(req, EXECUTION_SERVER_HEADER);
    let server = match state
        .servers
        .for_orchestration(who, selector.as_deref())
        .await
    {
        Ok(s) => s,
        Err(e) => return GatewayError::from(e).response(ingress),
    };
    // The id the request is logged under (the middleware validated or generated it).
    let request_id = super::request_id(req);
    let task = build_task(&request, who, &route, &target, server, &request_id, stream);
    tracing::info!(
        task_id = %task.task_id,
        provider = route.provider.as_str(),
        credential = route.credential.as_str(),
        stream,
        "orchestrated request"
    );
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("x-byok-provider", route.provider.as_str()));
    resp.insert_header(("x-byok-credential", route.credential.as_str()));
    resp.insert_header(("x-byok-orchestrator", "brigade"));
    resp.insert_header(("x-byok-task-id", task.task_id.as_str()));
    if !stream {
        return match orchestrator.run(&task).await {
            Ok(reply) => {
                let (input, output) = (reply.input_tokens, reply.output_tokens);
                log_and_record(
                    state,
                    who.user_id,
                    &route,
                    false,
                    200,
                    input,
                    output,
                    started,
                );
                resp.json(message_json(reply, model))
            }
            Err(e) => {
                let err = orchestrator_error(&e, key.as_deref());
                log_and_record(
                    state,
                    who.user_id,
                    &route,
                    false,
                    err.status.as_u16(),
                    0,
                    0,
                    started,
                );
                err.response(ingress)
            }
        };
    }
    let events = match orchestrator.run_stream(&task).await {
        Ok(s) => s,
        Err(e) => {
            let err = orchestrator_error(&e, key.as_deref());
            log_and_record(
                state,
                who.user_id,
                &route,
                true,
                err.status.as_u16(),
                0,
                0,
                started,
            );
            return err.response(ingress);
        }
    };
    let start = SseWriter::start(model);
    let usage_state = state.clone();
    let user = who.user_id;
    let body = futures_util::stream::once(async move { Ok::<_, actix_web::Error>(start) }).chain(
        futures_util::stream::unfold(
            (
                events,
                SseWriter::default(),
                false,
                usage_state,
                route,
                user,
                started,
            ),
            |(mut events, mut writer, done, state, route, user, started)| async move {
                if done {
                    return None;
                }
                let (bytes, finished) = match events.next().await {
                    Some(Ok(ev)) => {
                        let last = matches!(ev, OrchestratorEvent::Done { .. });
                        if let OrchestratorEvent::Done {
                            input_tokens,
                            output_tokens,
                            ..
                        } = &ev
                        {
                            log_and_record(
                                &state,
                                user,
                                &route,
                                true,
                                200,
                                *input_tokens,
                                *output_tokens,
                                started,
                            );
                        }
                        (writer.event(ev), last)
                    }
                    Some(Err(e)) => {
                        let key = route.api_key.as_ref().map(|k| k.expose());
                        tracing::warn!(error = %safe_message(&e, key), "orchestrator stream failed");
                        log_and_record(&state, user, &route, true, 502, 0, 0, started);
                        (SseWriter::error(&e, key), true)
                    }
                    None => {
                        let e = OrchestratorError::Protocol("the stream ended early".into());
                        (SseWriter::error(&e, None), true)
                    }
                };
                Some((
                    Ok::<_, actix_web::Error>(bytes),
                    (events, writer, finished, state, route, user, started),
                ))
            },
        ),
    );
    resp.insert_header(("content-type", "text/event-stream"))
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}
