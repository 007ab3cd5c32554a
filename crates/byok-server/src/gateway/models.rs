//! `GET /v1/models`: the models the caller can reach.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use byok_core::CredentialKind;
use serde_json::{Value, json};

use super::authenticate;
use super::errors::{GatewayError, Ingress};
use crate::state::AppState;

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
    // The list (well-known models of each reachable provider) is core's, shared with the
    // console's Try it page.
    let ids = match state.routes.reachable_models(&who).await {
        Ok(r) => r,
        Err(e) => return GatewayError::from(e).response(ingress),
    };
    let data: Vec<Value> = ids
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "type": "model", "object": "model", "display_name": m.id,
                "created_at": "2025-01-01T00:00:00Z", "created": 1_735_689_600,
                "owned_by": m.provider.as_str(), "byok": m.credential == CredentialKind::User,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": ids.first().map(|m| &m.id),
        "last_id": ids.last().map(|m| &m.id),
    }))
}
