//! Health, readiness and the OpenAPI document.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `degraded` (ready, but the orchestrator does not answer), `unavailable`,
    /// or `draining` (shutting down: finishing in-flight requests, taking no new ones).
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
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(Health {
            status: "draining".into(),
            database: None,
            brigade: None,
        });
    }
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

/// Prometheus metrics (text format 0.0.4). With `BYOK_METRICS_TOKEN` set, the scraper must
/// send it as `Authorization: Bearer`.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, description = "BYOK_METRICS_TOKEN is set and was not presented"),
    )
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> HttpResponse {
    if let Some(expected) = &state.metrics_token {
        use secrecy::ExposeSecret;
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), expected.expose_secret().as_bytes()) {
            return HttpResponse::Unauthorized().json(serde_json::json!({
                "detail": "send BYOK_METRICS_TOKEN as Authorization: Bearer",
                "code": "unauthorized",
            }));
        }
    }
    let body = state.metrics.render(&state).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// This OpenAPI document.
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::ApiDoc::openapi())
}
