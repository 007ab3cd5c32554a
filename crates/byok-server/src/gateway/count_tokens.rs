//! `POST /v1/messages/count_tokens`: exact from an Anthropic upstream, else an estimate.

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use byok_core::{CredentialKind, Principal};
use serde_json::{Value, json};

use super::body::{self, Charge};
use super::errors::{Doing, GatewayError, Ingress};
use super::{Admitted, admit, buffer_refused, charge_parse, header, peek, request};
use crate::state::AppState;

/// Largest `count_tokens` answer read from a provider (it is `{"input_tokens": N}`).
const MAX_COUNT_TOKENS_BODY: usize = 64 * 1024;

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
    let resolution = match state.routes.resolve(who, &model).await {
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
            match request::rewrite_model(body, &route.model) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_is_documented_and_monotonic() {
        let small = json!({"messages": [{"role": "user", "content": "hi"}]});
        let large =
            json!({"system": "x".repeat(400), "messages": [{"role": "user", "content": "hi"}]});
        assert!(estimate_tokens(&large) >= estimate_tokens(&small) + 100);
    }
}
