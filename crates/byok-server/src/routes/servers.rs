//! `/api/v1/execution-servers`: the legacy execution-server registry.

use actix_web::{HttpResponse, delete, get, post, put, web};
use byok_core::execution::{ExecutionServer, ServerType, mask_config};
use byok_core::services::{CreateServer, UpdateServer};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiError, ErrorBody, UpgradeRequiredBody};
use crate::openapi::{ApiErrors, BodyErrors, ServerUseErrors};
use crate::state::AppState;

/// An execution server; secret fields of `connection_config` read `***masked***`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerInfo {
    pub id: Uuid,
    pub name: String,
    pub server_type: ServerType,
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
    /// The last connection test's `status` (`success`, `failed` or `error`); null before the
    /// first test.
    pub test_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ExecutionServer> for ServerInfo {
    fn from(s: ExecutionServer) -> Self {
        Self {
            id: s.id,
            name: s.name,
            server_type: s.server_type,
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
    #[schema(value_type = ServerType)]
    pub server_type: String,
    /// Typed per `server_type`; unknown fields are refused. Secrets are encrypted at rest.
    /// As the legacy service accepted: ssh `auth_method` defaults to `key`; docker `volumes`
    /// is a list of `host:container` strings or a map `{host_path: container_path}` (stored
    /// as the list).
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
    /// Typed per the server's type; absent or `null` keeps the stored config.
    #[schema(value_type = Option<Object>)]
    pub connection_config: Option<Value>,
    /// An absolute path. Absent keeps the stored one; `null` clears it.
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "present")]
    pub workspace_path: Option<Value>,
    pub is_default: Option<bool>,
    pub is_active: Option<bool>,
}

/// `Some` for a member that is present, `null` included (an absent one is `None` through
/// `#[serde(default)]`): what tells "clear" from "keep".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
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
    get, path = "/api/v1/execution-servers", tag = "execution-servers", operation_id = "list_servers",
    responses(
        (status = 200, body = [ServerInfo], description = "the caller's execution servers (secrets masked)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        ApiErrors,
    ),
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

/// Register an execution server (tier `starter`+; at most `BYOK_MAX_SERVERS_PER_USER` per user).
#[utoipa::path(
    post, path = "/api/v1/execution-servers", tag = "execution-servers", operation_id = "create_server",
    request_body = CreateServerRequest,
    responses(
        (status = 201, body = ServerInfo, description = "created (secrets masked)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter` (`enterprise` for `local`)"),
        (status = 409, body = ErrorBody, description = "name already used (`server_name_taken`), or the caller already has the most servers one user may register (`server_limit`, `BYOK_MAX_SERVERS_PER_USER`)"),
        (status = 422, body = ErrorBody, description = "missing or mistyped field, invalid type, name, path or connection_config"),
        ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("")]
pub async fn create(
    state: web::Data<AppState>,
    who: Authenticated,
    body: crate::extract::Json<CreateServerRequest>,
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
    get, path = "/api/v1/execution-servers/default", tag = "execution-servers", operation_id = "get_default_server",
    responses(
        (status = 200, body = Option<ServerInfo>, description = "the caller's default server, or null when there is none"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        ApiErrors,
    ),
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
    put, path = "/api/v1/execution-servers/{id}", tag = "execution-servers", operation_id = "update_server",
    params(("id" = Uuid, Path, description = "server id")),
    request_body = UpdateServerRequest,
    responses(
        (status = 200, body = ServerInfo, description = "updated (secrets masked)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        (status = 404, body = ErrorBody, description = "no such server of the caller (`server_not_found`)"),
        (status = 409, body = ErrorBody, description = "name already used (`server_name_taken`)"),
        (status = 422, body = ErrorBody, description = "mistyped field, invalid name, path or connection_config"),
        ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[put("/{id}")]
pub async fn update(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: crate::extract::Json<UpdateServerRequest>,
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
    delete, path = "/api/v1/execution-servers/{id}", tag = "execution-servers", operation_id = "delete_server",
    params(("id" = Uuid, Path, description = "server id")),
    responses(
        (status = 200, body = DeletedServer, description = "deleted"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter`"),
        (status = 404, body = ErrorBody, description = "no such server of the caller (`server_not_found`)"),
        ApiErrors,
    ),
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

/// The outcome of a connection test (for the OpenAPI document; core reports it as a string).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ServerTestStatus {
    /// The server was reached and is usable.
    Success,
    /// The server answered and refused the credentials (or its host key is not trusted yet).
    Failed,
    /// The server could not be used (unreachable, timeout, forbidden target, …).
    Error,
}

/// Outcome of a connection test (legacy shape).
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerTestResponse {
    #[schema(value_type = ServerTestStatus)]
    pub status: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Test the connection to an execution server; the result is stored.
#[utoipa::path(
    post, path = "/api/v1/execution-servers/{id}/test", tag = "execution-servers", operation_id = "test_server",
    params(("id" = Uuid, Path, description = "server id")),
    responses(
        (status = 200, body = ServerTestResponse, description = "the outcome of the connection test (also stored with the server)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter` (`enterprise` for `local`)"),
        (status = 404, body = ErrorBody, description = "no such server of the caller (`server_not_found`)"),
        (status = 409, body = ErrorBody, description = "the SSH host key changed (`host_key_mismatch`)"),
        (status = 422, body = ErrorBody, description = "no backend for this server type here (`backend_unavailable`)"),
        ServerUseErrors, ApiErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/{id}/test")]
pub async fn test(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&path)?;
    let t = state.servers.test(&who.0, id).await?;
    state
        .metrics
        .server_tests
        .with_label_values(&[t.status])
        .inc();
    Ok(HttpResponse::Ok().json(ServerTestResponse {
        status: t.status.into(),
        message: t.message,
        details: t.details,
    }))
}

/// Body of `POST /api/v1/execution-servers/{id}/exec`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// A shell line (run with `sh -c`) or an argv array.
    #[schema(value_type = ExecCommand)]
    pub command: Value,
    /// Extra environment; values are never echoed back.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub stdin: Option<String>,
    /// 1–600, default 60.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600)]
    pub timeout_secs: Option<u64>,
}

/// The `command` of an exec body: a shell line or an argv array (for the OpenAPI document; the
/// handler reads it from the JSON itself, answering 422 `invalid_command` otherwise).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExecCommand {
    /// A shell line, run with `sh -c`.
    Shell(String),
    /// An argv array, run without a shell.
    Argv(Vec<String>),
}

impl std::fmt::Debug for ExecBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecBody").finish_non_exhaustive()
    }
}

/// What the command did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResponse {
    /// `null` when the command was killed (timeout) or died by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// An output stream exceeded 1 MiB; the rest was dropped.
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// The body limit of `/exec` (stdin up to 512 KiB, a 64 KiB command, the environment).
pub const EXEC_JSON_LIMIT: usize = 1024 * 1024;

// Registered in `routes::configure` with its own body limit (`EXEC_JSON_LIMIT`), hence no
// route macro here.
/// Run a command on an execution server (rate-limited per user).
#[utoipa::path(
    post, path = "/api/v1/execution-servers/{id}/exec", tag = "execution-servers", operation_id = "exec_on_server",
    params(("id" = Uuid, Path, description = "server id")),
    request_body = ExecBody,
    responses(
        (status = 200, body = ExecResponse, description = "the command ran (its exit code, output and whether it timed out)"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter` (`enterprise` for `local`)"),
        (status = 404, body = ErrorBody, description = "no such server of the caller (`server_not_found`)"),
        (status = 409, body = ErrorBody, description = "server inactive (`server_inactive`), or host key not trusted / changed"),
        (status = 422, body = ErrorBody, description = "invalid command, env, stdin or timeout, a forbidden target, or no backend for this server type here"),
        (status = 502, body = ErrorBody, description = "the server could not be reached (`unreachable`) or refused the credentials (`auth_failed`)"),
        (status = 504, body = ErrorBody, description = "connecting to the server timed out (`timeout`)"),
        ServerUseErrors, ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn exec(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: crate::extract::Json<ExecBody>,
) -> Result<HttpResponse, ApiError> {
    use byok_core::execution::{CommandSpec, ExecRequest};
    use secrecy::SecretString;
    let id = server_id(&path)?;
    let b = body.into_inner();
    let command = match b.command {
        Value::String(s) => CommandSpec::Shell(s),
        Value::Array(items) => CommandSpec::Argv(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::new(
                        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_command",
                        "command must be a string or an array of strings",
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_command",
                "command must be a string or an array of strings",
            ));
        }
    };
    let request = ExecRequest::new(
        command,
        b.env
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
        b.stdin.map(SecretString::from),
        b.timeout_secs
            .unwrap_or(byok_core::execution::DEFAULT_EXEC_TIMEOUT_SECS),
    )?;
    let r = state.servers.exec(&who.0, id, request).await;
    let outcome = match &r {
        Ok(r) if r.timed_out => "timed_out",
        Ok(_) => "completed",
        Err(byok_core::CoreError::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    state
        .metrics
        .server_execs
        .with_label_values(&[outcome])
        .inc();
    if outcome == "rate_limited" {
        state
            .metrics
            .rate_limited
            .with_label_values(&["exec"])
            .inc();
    }
    let r = r?;
    Ok(HttpResponse::Ok().json(ExecResponse {
        exit_code: r.exit_code,
        stdout: r.stdout,
        stderr: r.stderr,
        truncated: r.truncated,
        timed_out: r.timed_out,
        duration_ms: r.duration_ms,
    }))
}

/// Body of `POST /api/v1/execution-servers/{id}/trust-host-key` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustHostKey {
    /// The fingerprint the user checked (`SHA256:…`, from the test result). When given, the
    /// key the server presents now must be this one.
    pub fingerprint: Option<String>,
}

/// Pin the SSH host key the server presents now (trust on first use, made explicit).
#[utoipa::path(
    post, path = "/api/v1/execution-servers/{id}/trust-host-key", tag = "execution-servers", operation_id = "trust_server_host_key",
    params(("id" = Uuid, Path, description = "server id")),
    request_body(content = Option<TrustHostKey>),
    responses(
        (status = 200, body = ServerInfo, description = "the host key is now trusted"),
        (status = 403, body = UpgradeRequiredBody, description = "tier below `starter` (`enterprise` for `local`)"),
        (status = 404, body = ErrorBody, description = "no such server of the caller (`server_not_found`)"),
        (status = 409, body = ErrorBody, description = "the presented key is not the expected one (`host_key_mismatch`)"),
        (status = 422, body = ErrorBody, description = "mistyped body, not an SSH server, or a forbidden target"),
        (status = 502, body = ErrorBody, description = "the server could not be reached (`unreachable`)"),
        (status = 504, body = ErrorBody, description = "connecting to the server timed out (`timeout`)"),
        ServerUseErrors, ApiErrors, BodyErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/{id}/trust-host-key")]
pub async fn trust_host_key(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: crate::extract::OptionalJson<TrustHostKey>,
) -> Result<HttpResponse, ApiError> {
    let id = server_id(&path)?;
    // A body that is there but wrong is refused, never taken for "trust what is presented".
    let expected = body.into_inner().and_then(|b| b.fingerprint);
    let server = state
        .servers
        .trust_host_key(&who.0, id, expected.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(ServerInfo::from(server)))
}
