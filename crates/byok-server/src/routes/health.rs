//! Health, readiness and the OpenAPI document.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness), `ready`, `degraded` (ready, but the database or the orchestrator does not
    /// answer), or `draining` (shutting down: finishing in-flight requests, taking no new ones).
    #[schema(value_type = HealthStatus)]
    pub status: String,
    /// Readiness only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DependencyStatus>)]
    pub database: Option<String>,
    /// When an orchestrator is configured (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DependencyStatus>)]
    pub brigade: Option<String>,
    /// Usage records waiting for the database: in memory and in the spool file (readiness
    /// only, when there are any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_pending: Option<UsagePending>,
}

/// The `status` of a health answer (for the OpenAPI document).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Ready,
    Degraded,
    Draining,
}

/// Whether a shared dependency answers (for the OpenAPI document).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum DependencyStatus {
    Ok,
    Unreachable,
}

/// Usage records not yet written.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsagePending {
    /// Records held in memory.
    pub buffered: u64,
    /// Size of the spool file in bytes.
    pub spool_bytes: u64,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "get_liveness", responses((status = 200, body = Health, description = "the process is alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
        database: None,
        brigade: None,
        usage_pending: None,
    })
}

/// This process can take requests (503 only while it drains after a shutdown signal).
///
/// Shared dependencies are reported, not failed: with the database down the status is
/// `degraded` and `database` is `unreachable` (LLM traffic goes on from cached identities and
/// credentials, management writes answer 503 `database_unavailable`, usage records are kept and
/// written later); an unreachable orchestrator also only degrades the status. Failing readiness
/// for a shared dependency would take every replica out of the load balancer at once.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "get_readiness",
    responses(
        (status = 200, body = Health, description = "ready (`ready` or `degraded`)"),
        (status = 503, body = Health, description = "draining"),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(Health {
            status: "draining".into(),
            database: None,
            brigade: None,
            usage_pending: None,
        });
    }
    let (database, brigade) = match &state.orchestrator {
        Some(o) => {
            let (db, brigade) = futures_util::join!(state.db_health.check(&state.db), o.ready());
            (db, Some(brigade))
        }
        None => (state.db_health.check(&state.db).await, None),
    };
    let text = |ok: bool| if ok { "ok" } else { "unreachable" }.to_string();
    let stats = state.usage_writer.stats();
    let buffered = stats.buffered.load(std::sync::atomic::Ordering::Relaxed);
    let spool_bytes = stats.spool_bytes.load(std::sync::atomic::Ordering::Relaxed);
    HttpResponse::Ok().json(Health {
        status: if database && brigade != Some(false) {
            "ready"
        } else {
            "degraded"
        }
        .into(),
        database: Some(text(database)),
        brigade: brigade.map(text),
        usage_pending: (buffered > 0 || spool_bytes > 0).then_some(UsagePending {
            buffered,
            spool_bytes,
        }),
    })
}

/// Prometheus metrics (text format 0.0.4). With `BYOK_METRICS_TOKEN` set, the scraper must
/// send it as `Authorization: Bearer`.
#[utoipa::path(
    get, path = "/metrics", tag = "health", operation_id = "get_metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, body = crate::error::ErrorBody, description = "BYOK_METRICS_TOKEN is set and was not presented"),
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
    let body = state.metrics.render(state.readings()).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
