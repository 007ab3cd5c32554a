//! `GET /v1/models`: the models the caller can reach.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use byok_core::{CredentialKind, ProviderId};
use serde_json::{Value, json};

use super::authenticate;
use super::errors::{GatewayError, Ingress};
use crate::state::AppState;

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
        ProviderId::OllamaCloud => &["ollama_cloud/gpt-oss:120b", "ollama_cloud/gpt-oss:20b"],
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
    let reachable = match state.routes.reachable(&who).await {
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
