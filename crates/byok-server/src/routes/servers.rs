//! `/api/v1/execution-servers`: the legacy execution-server registry.

use actix_web::{HttpResponse, delete, get, post, put, web};
use byok_core::execution::{ExecutionServer, mask_config};
use byok_core::services::{CreateServer, UpdateServer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody, UpgradeRequiredBody};
use crate::state::AppState;

/// Server types (for the OpenAPI document).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ServerTypeDoc {
    Ssh,
    Local,
    Docker,
    Kubernetes,
}

/// An execution server; secret fields of `connection_config` read `***masked***`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = ServerTypeDoc)]
    pub server_type: String,
    /// Per type: ssh `{host, port, username, auth_method, password?, private_key?, passphrase?}`;
    /// docker `{image, container_name?, volumes?, environment?, endpoint?, tls_ca?, tls_cert?,
    /// tls_key?}`; kubernetes `{cluster_url, namespace, service_account_token?, kubeconfig?,
    /// ca_cert?}`; local `{}`.
    #[schema(value_type = Object)]
    pub connection_config: Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
    pub is_active: bool,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub test_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ExecutionServer> for ServerInfo {
    fn from(s: ExecutionServer) -> Self {
        Self {
            id: s.id,
            name: s.name,
            server_type: s.server_type.as_str().into(),
            connection_config: mask_config(&s.connection_config),
            workspace_path: s.workspace_path,
            is_default: s.is_default,
            is_active: s.is_active,
            last_tested_at: s.last_tested_at,
            test_status: s.test_status,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Body of `POST /api/v1/execution-servers`.
#[derive(Deserialize, ToSchema)]
pub struct CreateServerRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    #[schema(value_type = ServerTypeDoc)]
    pub server_type: String,
    /// Typed per `server_type`; unknown fields are refused. Secrets are encrypted at rest.
    #[schema(value_type = Object)]
    pub connection_config: Value,
    pub workspace_path: Option<String>,
    #[serde(default)]
    pub is_default: bool,
}

impl std::fmt::Debug for CreateServerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateServerRequest")
            .field("name", &self.name)
            .field("server_type", &self.server_type)
            .finish_non_exhaustive()
    }
}

/// Body of `PUT /api/v1/execution-servers/{id}`: any of the fields. In `connection_config`, a
/// secret sent back as `***masked***` (or left out) keeps the stored secret; `null` clears it.
#[derive(Deserialize, ToSchema)]
pub struct UpdateServerRequest {
    pub name: Option<String>,
    #[schema(value_type = Object)]
    pub connection_config: Option<Value>,
    /// A path, or `null` to clear it.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    pub workspace_path: Option<Value>,
    pub is_default: Option<bool>,
    pub is_active: Option<bool>,
}

impl std::fmt::Debug for UpdateServerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateServerRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedServer {
    pub message: String,
}

fn server_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "server_not_found",
            "no execution server with this id",
        )
    })
}

/// The caller's execution servers: the default first, then newest first.
#[utoipa::path(
    get, path = "/api/v1/execution-servers", tag = "execution-servers",
    responses((status = 200, body = [ServerInfo]), (status = 401, body = ErrorBody),
              (status = 403, body = UpgradeRequiredBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("")]
pub async fn list(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let servers = state.servers.list(&who.0).await?;
    Ok(HttpResponse::Ok().json(
        servers
            .into_iter()
            .map(ServerInfo::from)
            .collect::<Vec<_>>(),
    ))
}

/// Register an execution server (tier `starter`+).
#[utoipa::path(
    post, path = "/api/v1/execution-servers", tag = "execution-servers",
    request_body = CreateServerRequest,
    responses(
        (status = 201, body = ServerInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = UpgradeRequiredBody),
        (status = 409, body = ErrorBody, description = "name already used"),
        (status = 422, body = ErrorBody, description = "invalid type, name, path or connection_config"),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("")]
pub async fn create(
    state: web::Data<AppState>,
    who: Authenticated,
    body: web::Json<CreateServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let server = state
        .servers
        .create(
            &who.0,
            CreateServer {
                name: b.name,
                server_type: b.server_type,
                connection_config: b.connection_config,
                workspace_path: b.workspace_path,
                is_default: b.is_default,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(ServerInfo::from(server)))
}

/// The caller's default execution server, or `null`.
#[utoipa::path(
    get, path = "/api/v1/execution-servers/default", tag = "execution-servers",
    responses((status = 200, body = Option<ServerInfo>), (status = 401, body = ErrorBody),
              (status = 403, body = UpgradeRequiredBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/default")]
pub async fn default_server(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let s = state.servers.default_server(&who.0).await?;
    Ok(HttpResponse::Ok().json(s.map(ServerInfo::from)))
}

/// Change an execution server.
#[utoipa::path(
    put, path = "/api/v1/execution-servers/{id}", tag = "execution-servers",
    params(("id" = String, Path, description = "server id")),
    request_body = UpdateServerRequest,
    responses(
        (status = 200, body = ServerInfo),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = UpgradeRequiredBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[put("/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: web::Json<UpdateServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&path)?;
    let b = body.into_inner();
    let workspace_path = match b.workspace_path {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(_) => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_workspace_path",
                "workspace_path must be a string or null",
            ));
        }
    };
    let server = state
        .servers
        .update(
            &who.0,
            id,
            UpdateServer {
                name: b.name,
                connection_config: b.connection_config,
                workspace_path,
                is_default: b.is_default,
                is_active: b.is_active,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(ServerInfo::from(server)))
}

/// Delete an execution server.
#[utoipa::path(
    delete, path = "/api/v1/execution-servers/{id}", tag = "execution-servers",
    params(("id" = String, Path, description = "server id")),
    responses((status = 200, body = DeletedServer), (status = 401, body = ErrorBody),
              (status = 403, body = UpgradeRequiredBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[delete("/{id}")]
pub async fn remove(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&path)?;
    state.servers.delete(&who.0, id).await?;
    Ok(HttpResponse::Ok().json(DeletedServer {
        message: "execution server deleted".into(),
    }))
}
