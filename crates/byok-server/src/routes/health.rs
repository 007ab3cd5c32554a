//! Health, readiness and the OpenAPI document.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `degraded` (ready, but the orchestrator does not answer) or `unavailable`.
    pub status: String,
    /// `ok` or `unreachable` (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `ok` or `unreachable`, when an orchestrator is configured (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brigade: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        database: None,
        brigade: None,
    })
}

/// The service can serve requests (the database answers); the orchestrator's reachability is
/// reported, and only degrades the status.
#[utoipa::path(
    get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let brigade = match &state.orchestrator {
        Some(o) => Some(o.ready().await),
        None => None,
    };
    let brigade_text = brigade.map(|ok| if ok { "ok" } else { "unreachable" }.to_string());
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            // The orchestrator is optional for most requests: degraded, not down.
            status: if brigade == Some(false) {
                "degraded"
            } else {
                "ready"
            }
            .into(),
            database: Some("ok".into()),
            brigade: brigade_text,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "unavailable".into(),
                database: Some("unreachable".into()),
                brigade: brigade_text,
            })
        }
    }
}

/// This OpenAPI document.
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
