//! `/api/v1/byok`: the legacy BYOK keys API.

use actix_web::{HttpResponse, delete, get, post, put, web};
use byok_core::services::AddKey;
use byok_core::{FallbackPolicy, ProviderId, TestStatus, Tier};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody, UpgradeRequiredBody, missing_parameter};
use crate::openapi::{ApiErrors, BodyErrors};
use crate::state::AppState;

fn provider(raw: &str) -> Result<ProviderId, ApiError> {
    Ok(raw.parse::<ProviderId>()?)
}

/// A provider of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderInfo {
    /// Provider id, e.g. `openai`.
    pub id: ProviderId,
    pub name: String,
    /// What keys look like, e.g. `sk-...` (or `any`).
    pub key_format: String,
    /// Whether the caller has stored a key for it.
    pub configured: bool,
}

/// List the providers and whether the caller configured each.
#[utoipa::path(
    get, path = "/api/v1/byok/providers", tag = "byok", operation_id = "list_providers",
    responses((status = 200, body = [ProviderInfo], description = "the providers a key can be stored for"), ApiErrors),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/providers")]
pub async fn providers(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<web::Json<Vec<ProviderInfo>>, ApiError> {
    let list = state.vault.providers(&who.0).await?;
    Ok(web::Json(
        list.into_iter()
            .map(|p| ProviderInfo {
                id: p.id,
                name: p.id.display_name().into(),
                key_format: p.id.key_format().describe(),
                configured: p.configured,
            })
            .collect(),
    ))
}

/// A stored key, masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub provider: ProviderId,
    pub provider_name: String,
    /// First 4 + `...` + last 4 characters (`****` for short keys), computed when stored.
    pub key_preview: String,
    pub label: Option<String>,
    pub endpoint: Option<String>,
    pub enabled: bool,
    pub added_date: Option<DateTime<Utc>>,
    pub last_tested: Option<DateTime<Utc>>,
    /// Null before the first test.
    pub test_status: Option<TestStatus>,
}

/// List the caller's keys (previews only; nothing is decrypted).
#[utoipa::path(
    get, path = "/api/v1/byok/keys", tag = "byok", operation_id = "list_provider_keys",
    responses((status = 200, body = [KeyInfo], description = "the caller's stored keys (previews only, never a key)"), ApiErrors),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/keys")]
pub async fn list_keys(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<web::Json<Vec<KeyInfo>>, ApiError> {
    let keys = state.vault.list(&who.0).await?;
    Ok(web::Json(
        keys.into_iter()
            .map(|k| KeyInfo {
                provider: k.provider,
                provider_name: k.provider.display_name().into(),
                key_preview: k.key_preview.as_str().into(),
                label: k.label,
                endpoint: k.endpoint,
                enabled: k.enabled,
                added_date: k.added_date,
                last_tested: k.last_tested,
                test_status: k.test_status,
            })
            .collect(),
    ))
}

/// Body of `POST /keys/add`. The key is a secret: never logged, never echoed.
#[derive(Deserialize, ToSchema)]
pub struct AddKeyRequest {
    /// Provider id (see `GET /api/v1/byok/providers`).
    #[schema(value_type = ProviderId)]
    pub provider: String,
    /// The provider API key (surrounding whitespace is trimmed; empty only for `ollama`, which
    /// takes no key).
    #[schema(value_type = String, max_length = 512)]
    pub key: SecretString,
    /// Optional label, at most 100 characters.
    #[schema(max_length = 100)]
    pub label: Option<String>,
    /// Base URL; required for `custom` (OpenAI-compatible), optional for `ollama`.
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for AddKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddKeyRequest")
            .field("provider", &self.provider)
            .field("key", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AddKeyResponse {
    pub message: String,
    pub provider: ProviderId,
    pub provider_name: String,
}

/// Store (or replace) the caller's key for a provider. Needs tier `starter` or higher.
#[utoipa::path(
    post, path = "/api/v1/byok/keys/add", tag = "byok", operation_id = "add_provider_key",
    request_body = AddKeyRequest,
    responses(
        (status = 200, body = AddKeyResponse, description = "stored (an existing key for the provider is replaced)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        (status = 404, body = ErrorBody, description = "unknown provider"),
        (status = 422, body = ErrorBody, description = "missing or mistyped field, invalid key, label or endpoint, or a forbidden endpoint"),
        ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/keys/add")]
pub async fn add_key(
    state: web::Data<AppState>,
    who: Authenticated,
    body: crate::extract::Json<AddKeyRequest>,
) -> Result<web::Json<AddKeyResponse>, ApiError> {
    let body = body.into_inner();
    let id = provider(&body.provider)?;
    state
        .vault
        .add(
            &who.0,
            AddKey {
                provider: id,
                key: body.key,
                label: body.label,
                endpoint: body.endpoint,
            },
        )
        .await?;
    Ok(web::Json(AddKeyResponse {
        message: format!("{} key saved", id.display_name()),
        provider: id,
        provider_name: id.display_name().into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteKeyResponse {
    pub message: String,
    pub provider: ProviderId,
}

/// Delete the caller's key for a provider: it is gone and no longer used.
#[utoipa::path(
    delete, path = "/api/v1/byok/keys/{provider}", tag = "byok", operation_id = "delete_provider_key",
    params(("provider" = ProviderId, Path, description = "provider id")),
    responses(
        (status = 200, body = DeleteKeyResponse, description = "deleted"),
        (status = 404, body = ErrorBody, description = "unknown provider or no key stored"),
        ApiErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[delete("/keys/{provider}")]
pub async fn delete_key(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<web::Json<DeleteKeyResponse>, ApiError> {
    let id = provider(&path)?;
    state.vault.delete(&who.0, id).await?;
    Ok(web::Json(DeleteKeyResponse {
        message: format!("{} key deleted", id.display_name()),
        provider: id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestKeyResponse {
    pub provider: ProviderId,
    /// The provider's display name (as `GET /keys` shows it; the legacy LLM hub page reads it).
    pub provider_name: String,
    /// `valid` (2xx), `invalid` (401/403), `error` (timeout, 429, 5xx, unreachable), `unknown`.
    pub status: TestStatus,
    /// `status == "valid"` (the legacy LLM hub page reads this field).
    pub success: bool,
    pub message: String,
    /// HTTP status, latency and host of the probe.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Test the caller's stored key against the provider; the result is stored.
#[utoipa::path(
    post, path = "/api/v1/byok/keys/test/{provider}", tag = "byok", operation_id = "test_provider_key",
    params(("provider" = ProviderId, Path, description = "provider id")),
    responses(
        (status = 200, body = TestKeyResponse, description = "the outcome of the probe (also stored with the key)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        (status = 404, body = ErrorBody, description = "unknown provider or no key stored"),
        (status = 422, body = ErrorBody, description = "the key's endpoint is a forbidden target"),
        ApiErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/keys/test/{provider}")]
pub async fn test_key(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<web::Json<TestKeyResponse>, ApiError> {
    let id = provider(&path)?;
    let outcome = state.vault.test(&who.0, id).await?;
    state
        .metrics
        .key_tests
        .with_label_values(&[id.as_str(), outcome.status.as_str()])
        .inc();
    Ok(web::Json(TestKeyResponse {
        provider: id,
        provider_name: id.display_name().into(),
        success: outcome.status == TestStatus::Valid,
        status: outcome.status,
        message: outcome.message,
        details: outcome.details,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    pub total_providers: usize,
    pub configured_providers: usize,
    pub tested_providers: usize,
    pub valid_providers: usize,
    pub user_tier: Tier,
    /// Gateway usage (recorded off the hot path; a request shows up within about a second).
    pub usage: UsageStats,
}

/// Gateway usage totals.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageStats {
    pub requests: u64,
    /// Requests served with the user's own key.
    pub byok_requests: u64,
    /// Requests served with the system default.
    pub system_requests: u64,
    /// Requests answered with an error (status 400 or above).
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub by_provider: Vec<ProviderUsageStats>,
}

/// Usage for one provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderUsageStats {
    pub provider: String,
    pub requests: u64,
    pub byok_requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Counts of the caller's keys.
#[utoipa::path(
    get, path = "/api/v1/byok/stats", tag = "byok", operation_id = "get_key_stats",
    responses((status = 200, body = StatsResponse, description = "the caller's usage per provider"), ApiErrors),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/stats")]
pub async fn stats(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let s = state.vault.stats(&who.0).await?;
    let u = byok_core::ports::UsageRepository::usage_summary(&state.db, who.0.user_id)
        .await
        .map_err(byok_core::CoreError::from)?;
    Ok(HttpResponse::Ok().json(StatsResponse {
        usage: UsageStats {
            requests: u.requests,
            byok_requests: u.byok_requests,
            system_requests: u.system_requests,
            errors: u.errors,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            by_provider: u
                .by_provider
                .into_iter()
                .map(|p| ProviderUsageStats {
                    provider: p.provider,
                    requests: p.requests,
                    byok_requests: p.byok_requests,
                    errors: p.errors,
                    input_tokens: p.input_tokens,
                    output_tokens: p.output_tokens,
                })
                .collect(),
        },
        total_providers: s.total_providers,
        configured_providers: s.configured_providers,
        tested_providers: s.tested_providers,
        valid_providers: s.valid_providers,
        user_tier: s.user_tier,
    }))
}

/// The caller's gateway settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// What happens when the caller's own key fails upstream with 401, 403 or 429:
    /// `user_only` (the error is returned; the default) or `user_then_system` (one retry on the
    /// system default, before anything reached the client).
    #[schema(value_type = FallbackPolicy)]
    pub fallback_policy: String,
}

/// The caller's gateway settings.
#[utoipa::path(
    get, path = "/api/v1/byok/settings", tag = "byok", operation_id = "get_gateway_settings",
    responses((status = 200, body = SettingsBody, description = "the caller's gateway settings"), ApiErrors),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/settings")]
pub async fn get_settings(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<web::Json<SettingsBody>, ApiError> {
    let s = state.routes.settings(&who.0).await?;
    Ok(web::Json(SettingsBody {
        fallback_policy: s.fallback_policy.as_str().into(),
    }))
}

/// Change the caller's gateway settings (effective at once on this instance, within
/// `BYOK_CREDENTIAL_CACHE_TTL_SECS` on others).
#[utoipa::path(
    put, path = "/api/v1/byok/settings", tag = "byok", operation_id = "update_gateway_settings",
    request_body = SettingsBody,
    responses(
        (status = 200, body = SettingsBody, description = "the settings as stored"),
        (status = 422, body = ErrorBody, description = "missing, unknown or mistyped field, or an unknown policy"),
        ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[put("/settings")]
pub async fn put_settings(
    state: web::Data<AppState>,
    who: Authenticated,
    body: crate::extract::Json<SettingsBody>,
) -> Result<web::Json<SettingsBody>, ApiError> {
    let policy: FallbackPolicy = body.fallback_policy.parse()?;
    let s = state
        .routes
        .set_settings(
            &who.0,
            byok_core::UserSettings {
                fallback_policy: policy,
            },
        )
        .await?;
    Ok(web::Json(SettingsBody {
        fallback_policy: s.fallback_policy.as_str().into(),
    }))
}

/// Whose key serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialSource {
    /// The caller's own key (BYOK).
    Own,
    /// The platform's key (the system default).
    Platform,
}

/// An execution server, as named in other answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerRef {
    pub id: uuid::Uuid,
    pub name: String,
    pub server_type: byok_core::execution::ServerType,
}

/// Which credential a request for a model would use for the caller (never a key).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResolveResponse {
    /// The model as asked for.
    pub model: String,
    /// The provider that would be called.
    pub provider: ProviderId,
    pub provider_name: String,
    /// The model name the provider would be asked for.
    pub upstream_model: String,
    /// `own` (the caller's key) or `platform` (the platform's key).
    pub credential: CredentialSource,
    /// The label of the caller's key (`own` only).
    pub key_label: Option<String>,
    /// The stored preview of the caller's key, e.g. `sk-p...1234` (`own` only).
    pub key_preview: Option<String>,
    /// Whether a refusal of the caller's key (401, 403, 429) would be retried once on the
    /// platform's key (policy `user_then_system`, for a model the platform can serve).
    pub fallback_to_platform: bool,
    /// Where agent work would run: the caller's active default execution server (null when
    /// none is set, and below tier `starter`, which has no execution servers).
    pub execution_server: Option<ServerRef>,
    /// Ready to show: "Using your OpenAI key (work …1234)" or "Using the platform's key".
    pub badge: String,
}

#[derive(Debug, Deserialize)]
pub struct ResolveQuery {
    model: Option<String>,
}

/// Which credential a gateway request for `model` would use for the caller, and where agent
/// work would run: the facts behind the "Using your OpenAI key" badge. Resolved exactly as
/// the gateway resolves a request (same refusals), without calling the provider.
#[utoipa::path(
    get, path = "/api/v1/byok/resolve", tag = "byok", operation_id = "resolve_model",
    params(("model" = String, Query, description = "a model name as sent to `/v1/messages` or `/v1/chat/completions`, e.g. `openai/gpt-4o`")),
    responses(
        (status = 200, body = ResolveResponse, description = "the credential a request for this model would use"),
        (status = 400, body = ErrorBody, description = "no `model` parameter (`missing_parameter`), or an unreadable query string (`invalid_query`)"),
        (status = 403, body = UpgradeRequiredBody, description = "a Custom or Ollama model without a key, below tier `starter`"),
        (status = 404, body = ErrorBody, description = "an unknown model (`unknown_model`), or a Custom or Ollama model without a stored key (`key_not_found`)"),
        (status = 409, body = ErrorBody, description = "no key of the caller's and no platform key for this model (`no_credential`): add a key"),
        (status = 422, body = ErrorBody, description = "a model name that cannot be one (`invalid_model`)"),
        ApiErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/resolve")]
pub async fn resolve(
    state: web::Data<AppState>,
    who: Authenticated,
    q: web::Query<ResolveQuery>,
) -> Result<web::Json<ResolveResponse>, ApiError> {
    let model = q
        .model
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| missing_parameter("model"))?;
    let summary = state.routes.summarize(&who.0, model).await?;
    let server = state.servers.agent_server(&who.0).await?;
    Ok(web::Json(ResolveResponse {
        model: model.to_string(),
        provider: summary.provider,
        provider_name: summary.provider.display_name().into(),
        upstream_model: summary.model.clone(),
        credential: match summary.credential {
            byok_core::CredentialKind::User => CredentialSource::Own,
            byok_core::CredentialKind::System => CredentialSource::Platform,
        },
        key_label: summary.key_label.clone(),
        key_preview: summary.key_preview.as_ref().map(|p| p.as_str().to_string()),
        fallback_to_platform: summary.fallback,
        execution_server: server.map(|s| ServerRef {
            id: s.id,
            name: s.name,
            server_type: s.server_type,
        }),
        badge: summary.badge(),
    }))
}
