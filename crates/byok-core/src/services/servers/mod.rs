//! The execution-server registry: create, list, update, delete, default.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::*;
use crate::error::{CoreError, StoreError};
use crate::execution::{
    ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig, ServerTest,
    ServerType, open_config, pinned_host_key, reveal_config, seal_config, validate_name,
    validate_workspace,
};
use crate::ports::{
    NewServer, RateDecision, RateLimiter, SecretCipher, ServerChanges, ServerRepository,
};
use crate::services::limits::{ConcurrencyLimit, InFlight, LocalRateLimiter, limited};

/// What a client asks to create.
#[derive(Debug)]
pub struct CreateServer {
    pub name: String,
    pub server_type: String,
    pub connection_config: Value,
    pub workspace_path: Option<String>,
    pub is_default: bool,
}

/// What a client asks to change (absent fields stay as they are).
#[derive(Debug, Default)]
pub struct UpdateServer {
    pub name: Option<String>,
    pub connection_config: Option<Value>,
    pub workspace_path: Option<Option<String>>,
    pub is_default: Option<bool>,
    pub is_active: Option<bool>,
}

/// Where the checked address of a server handed to the orchestrator travels, in its
/// `connection` (`"203.0.113.7:22"`, `"[2001:db8::1]:6443"`).
pub const CHECKED_ADDRESS_FIELD: &str = "checked_address";

/// Why a stored server is about to be used (what the gate checks differs a little).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerUse {
    Test,
    Trust,
    Exec,
    Orchestrate,
}

/// Operations (test, trust, exec) a user may start per minute, all their servers together.
pub const EXEC_PER_MINUTE: u32 = 30;
/// The window [`EXEC_PER_MINUTE`] is counted in.
const EXEC_WINDOW: Duration = Duration::from_secs(60);
/// Operations a user may have in flight at once (each can hold a backend session: the SSH
/// backend's pool is shared by every user, so one user holds at most this share of it).
pub const MAX_IN_FLIGHT_PER_USER: usize = 4;
/// Servers one user may register unless the service sets another cap
/// ([`ServerRegistry::with_max_servers_per_user`]; `BYOK_MAX_SERVERS_PER_USER`).
pub const DEFAULT_MAX_SERVERS_PER_USER: u64 = 100;

/// The registry service. Needs tier `starter`+ for everything; local servers run only when
/// the operator enabled local execution, and only for `enterprise` users.
#[derive(Clone)]
pub struct ServerRegistry {
    repo: Arc<dyn ServerRepository>,
    cipher: Arc<dyn SecretCipher>,
    backends: Vec<Arc<dyn ExecutionBackend>>,
    exec_limiter: Arc<dyn RateLimiter>,
    in_flight: ConcurrencyLimit,
    max_servers: u64,
}

impl std::fmt::Debug for ServerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRegistry").finish_non_exhaustive()
    }
}

fn not_found() -> CoreError {
    CoreError::NotFound {
        code: "server_not_found",
        message: "no execution server with this id".into(),
    }
}

fn name_taken(e: StoreError) -> CoreError {
    match e {
        StoreError::Conflict(_) => CoreError::Conflict {
            code: "server_name_taken",
            message: "you already have an execution server with this name".into(),
        },
        other => other.into(),
    }
}

impl ServerRegistry {
    /// A registry over `repo`, sealing configs with `cipher`, running on `backends` (one per
    /// server type offered); operations are rate-limited in process (see
    /// [`ServerRegistry::with_rate_limiter`]).
    pub fn new(
        repo: Arc<dyn ServerRepository>,
        cipher: Arc<dyn SecretCipher>,
        backends: Vec<Arc<dyn ExecutionBackend>>,
    ) -> Self {
        Self {
            repo,
            cipher,
            backends,
            exec_limiter: Arc::new(LocalRateLimiter::new()),
            in_flight: ConcurrencyLimit::new(MAX_IN_FLIGHT_PER_USER),
            max_servers: DEFAULT_MAX_SERVERS_PER_USER,
        }
    }

    /// Lets each user register at most `max` servers (at least one) instead of
    /// [`DEFAULT_MAX_SERVERS_PER_USER`].
    pub fn with_max_servers_per_user(mut self, max: u64) -> Self {
        self.max_servers = max.max(1);
        self
    }

    /// The most servers one user may register.
    pub fn max_servers_per_user(&self) -> u64 {
        self.max_servers
    }

    /// Counts operations with `limiter` (a shared one holds the limit across replicas)
    /// instead of the in-process default.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.exec_limiter = limiter;
        self
    }

    fn backend(
        &self,
        who: &Principal,
        kind: ServerType,
    ) -> Result<&Arc<dyn ExecutionBackend>, CoreError> {
        if kind == ServerType::Local {
            who.tier.require(Tier::Enterprise)?;
        }
        self.backends
            .iter()
            .find(|b| b.kind() == kind)
            .ok_or_else(|| {
                ExecError::BackendUnavailable(format!(
                    "running on {} servers is not available on this service",
                    kind.as_str()
                ))
                .into()
            })
    }

    /// The server types `who` can use on this service, in [`ServerType::ALL`]'s order: those
    /// a backend is offered for (`local` only where the operator enabled local execution) and
    /// `who`'s tier allows (`starter`+, `local` `enterprise`). Empty below `starter`.
    pub fn offered_types(&self, who: &Principal) -> Vec<ServerType> {
        if who.tier.require(Tier::BYOK_MINIMUM).is_err() {
            return Vec::new();
        }
        ServerType::ALL
            .into_iter()
            .filter(|kind| self.backend(who, *kind).is_ok())
            .collect()
    }

    /// The one gate every use of a stored server goes through (test, trust, exec, hand-off to
    /// the orchestrator): the tier (starter+, `local` enterprise and only when the operator
    /// enabled it), active for exec and hand-off, the config opened, and the backend's
    /// [`ExecutionBackend::admit`] (target policy on the resolved address, socket allow-list,
    /// kubeconfig restrictions). For a hand-off an SSH server must also carry a trusted host-key
    /// pin, which travels with it so the orchestrator verifies the same key.
    async fn gate(
        &self,
        who: &Principal,
        server: &ExecutionServer,
        purpose: ServerUse,
    ) -> Result<(&Arc<dyn ExecutionBackend>, OpenConfig), CoreError> {
        let (backend, config) = self.open(who, server, purpose)?;
        self.admit(who, backend, server, &config, purpose).await?;
        Ok((backend, config))
    }

    /// The gate's first half: who may use the server at all, and its config opened.
    fn open(
        &self,
        who: &Principal,
        server: &ExecutionServer,
        purpose: ServerUse,
    ) -> Result<(&Arc<dyn ExecutionBackend>, OpenConfig), CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        let backend = self.backend(who, server.server_type)?;
        if matches!(purpose, ServerUse::Exec | ServerUse::Orchestrate) && !server.is_active {
            return Err(CoreError::Conflict {
                code: "server_inactive",
                message: "this execution server is deactivated".into(),
            });
        }
        let config = open_config(&server.connection_config, self.cipher.as_ref())?;
        Ok((backend, config))
    }

    /// The gate's second half: what the server names may be reached from here. Returns the
    /// checked address its connections go to, if it has one.
    async fn admit(
        &self,
        who: &Principal,
        backend: &Arc<dyn ExecutionBackend>,
        server: &ExecutionServer,
        config: &OpenConfig,
        purpose: ServerUse,
    ) -> Result<Option<std::net::SocketAddr>, CoreError> {
        if purpose == ServerUse::Orchestrate && server.server_type == ServerType::Local {
            // This service's sandbox is not the orchestrator's: a local server runs only here.
            return Err(ExecError::BackendUnavailable(
                "local servers run only through this service's exec endpoint, not through the \
                 orchestrator"
                    .into(),
            )
            .into());
        }
        let checked = backend.admit(server, config).await?;
        if purpose == ServerUse::Orchestrate
            && server.server_type == ServerType::Ssh
            && pinned_host_key(&config.public).is_none()
        {
            // Tell the user which key to trust, as `test` does; the probe is an operation.
            self.admit_exec(who).await?;
            let fingerprint = backend.host_key(server, config).await?;
            return Err(ExecError::HostKeyUnverified { fingerprint }.into());
        }
        Ok(checked)
    }

    /// Tests the connection and stores the outcome (`last_tested_at`, `test_status`).
    pub async fn test(&self, who: &Principal, id: Uuid) -> Result<ServerTest, CoreError> {
        let server = self.get(who, id).await?;
        let _running = self.begin(who)?;
        self.admit_exec(who).await?;
        let (backend, config) = self.open(who, &server, ServerUse::Test)?;
        let outcome = match self
            .admit(who, backend, &server, &config, ServerUse::Test)
            .await
        {
            Ok(_) => backend.test(&server, &config).await,
            // A refused target is a test outcome, recorded like any other.
            Err(CoreError::Exec(e)) => Err(e),
            Err(e) => return Err(e),
        };
        let outcome = match outcome {
            Ok(t) => t,
            // A changed host key is a conflict the user must see as such (409).
            Err(e @ ExecError::HostKeyMismatch { .. }) => {
                self.repo
                    .record_server_test(who.user_id, id, chrono::Utc::now(), "failed")
                    .await?;
                return Err(e.into());
            }
            Err(e) => ServerTest::from_error(&e),
        };
        self.repo
            .record_server_test(who.user_id, id, chrono::Utc::now(), outcome.status)
            .await?;
        tracing::info!(server_id = %id, status = outcome.status, "execution server tested");
        Ok(outcome)
    }

    /// Pins the host key the server presents now. With `expected`, the presented key must be
    /// that one (what the user saw in the test result), else `host_key_mismatch`.
    pub async fn trust_host_key(
        &self,
        who: &Principal,
        id: Uuid,
        expected: Option<&str>,
    ) -> Result<ExecutionServer, CoreError> {
        let server = self.get(who, id).await?;
        let _running = self.begin(who)?;
        self.admit_exec(who).await?;
        let (backend, config) = self.gate(who, &server, ServerUse::Trust).await?;
        let presented = backend.host_key(&server, &config).await?;
        if let Some(e) = expected
            && e != presented
        {
            return Err(ExecError::HostKeyMismatch {
                pinned: e.to_string(),
                presented,
            }
            .into());
        }
        let pinned = crate::execution::pin_host_key(&server.connection_config, &presented);
        self.repo
            .update_server(
                who.user_id,
                id,
                ServerChanges {
                    connection_config: Some(pinned),
                    ..ServerChanges::default()
                },
            )
            .await?;
        tracing::info!(server_id = %id, "host key trusted");
        self.get(who, id).await
    }

    /// Starts an operation of `who`, refused (retry in a second) while they have
    /// [`MAX_IN_FLIGHT_PER_USER`] running.
    fn begin(&self, who: &Principal) -> Result<InFlight, CoreError> {
        self.in_flight
            .try_acquire(who.user_id)
            .ok_or(CoreError::RateLimited {
                retry_after_secs: 1,
            })
    }

    /// Counts one operation (test, trust, exec, host-key probe) of `who` against
    /// [`EXEC_PER_MINUTE`], through the [`RateLimiter`] port like every other rate limit.
    async fn admit_exec(&self, who: &Principal) -> Result<(), CoreError> {
        let key = format!("exec:{}", who.user_id);
        match self
            .exec_limiter
            .hit(&key, u64::from(EXEC_PER_MINUTE), EXEC_WINDOW)
            .await
        {
            RateDecision::Allowed => Ok(()),
            RateDecision::Limited { retry_after } => Err(limited(retry_after)),
        }
    }

    /// Runs a command on one of the caller's servers (rate-limited per user, and at most
    /// [`MAX_IN_FLIGHT_PER_USER`] operations of a user at once).
    pub async fn exec(
        &self,
        who: &Principal,
        id: Uuid,
        request: ExecRequest,
    ) -> Result<ExecResult, CoreError> {
        let server = self.get(who, id).await?;
        let _running = self.begin(who)?;
        self.admit_exec(who).await?;
        let (backend, config) = self.gate(who, &server, ServerUse::Exec).await?;
        let result = backend.exec(&server, &config, &request).await?;
        tracing::info!(
            server_id = %id,
            exit_code = ?result.exit_code,
            timed_out = result.timed_out,
            duration_ms = result.duration_ms,
            "command executed"
        );
        Ok(result)
    }

    /// Creates a server: type, name, workspace and config validated, secrets sealed; refused
    /// with `server_limit` when the user already has [`Self::max_servers_per_user`] servers.
    /// The count is read before the insert, so creates of one user running at the same moment
    /// may each pass it: the cap can be overshot by the number of such creates in flight.
    pub async fn create(
        &self,
        who: &Principal,
        req: CreateServer,
    ) -> Result<ExecutionServer, CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        let kind: ServerType = req.server_type.parse()?;
        let name = validate_name(&req.name)?;
        let workspace_path = req
            .workspace_path
            .as_deref()
            .map(validate_workspace)
            .transpose()?;
        let connection_config =
            seal_config(kind, &req.connection_config, None, self.cipher.as_ref())?;
        if self.repo.count_servers(who.user_id).await? >= self.max_servers {
            return Err(CoreError::Conflict {
                code: "server_limit",
                message: format!(
                    "you have reached the limit of {} execution servers: delete one to add \
                     another",
                    self.max_servers
                ),
            });
        }
        let server = self
            .repo
            .create_server(NewServer {
                user_id: who.user_id,
                name,
                server_type: kind,
                connection_config,
                workspace_path,
                is_default: req.is_default,
            })
            .await
            .map_err(name_taken)?;
        tracing::info!(server_id = %server.id, server_type = kind.as_str(), "execution server created");
        Ok(server)
    }

    /// The caller's servers, configs sealed (mask them before showing).
    pub async fn list(&self, who: &Principal) -> Result<Vec<ExecutionServer>, CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        Ok(self.repo.list_servers(who.user_id).await?)
    }

    /// The caller's server `id` (`server_not_found` if it is someone else's).
    pub async fn get(&self, who: &Principal, id: Uuid) -> Result<ExecutionServer, CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        self.repo
            .get_server(who.user_id, id)
            .await?
            .ok_or_else(not_found)
    }

    /// The server to hand to the orchestrator, with its connection config in clear:
    /// `selector` names one by id or name (`none`: no server), else the user's default. A named
    /// server that is missing or deactivated is an error; no default is `None`.
    pub async fn for_orchestration(
        &self,
        who: &Principal,
        selector: Option<&str>,
    ) -> Result<Option<(ExecutionServer, Value)>, CoreError> {
        if who.tier.require(Tier::BYOK_MINIMUM).is_err() {
            // Execution servers need starter: lower tiers simply have none.
            return Ok(None);
        }
        let servers = self.repo.list_servers(who.user_id).await?;
        let chosen = match selector.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("none") => return Ok(None),
            Some(s) => servers
                .into_iter()
                .find(|x| x.id.to_string() == s || x.name == s)
                .ok_or_else(not_found)?,
            None => match servers.into_iter().find(runs_agent_work) {
                Some(s) => s,
                None => return Ok(None),
            },
        };
        // Every check a direct use would pass; refused → the orchestrator receives nothing.
        let checked = {
            let _running = self.begin(who)?;
            let (backend, config) = self.open(who, &chosen, ServerUse::Orchestrate)?;
            self.admit(who, backend, &chosen, &config, ServerUse::Orchestrate)
                .await?
        };
        let mut connection = reveal_config(&chosen.connection_config, self.cipher.as_ref())?;
        if let (Some(addr), Some(c)) = (checked, connection.as_object_mut()) {
            // The address the target policy passed: the orchestrator connects there, so a DNS
            // answer that changed since cannot send it elsewhere.
            c.insert(
                CHECKED_ADDRESS_FIELD.into(),
                Value::String(addr.to_string()),
            );
        }
        Ok(Some((chosen, connection)))
    }

    /// The server agent work runs on when none is named: the caller's active default server,
    /// as [`Self::for_orchestration`] chooses it; none below tier `starter` (no servers there).
    pub async fn agent_server(
        &self,
        who: &Principal,
    ) -> Result<Option<ExecutionServer>, CoreError> {
        if who.tier.require(Tier::BYOK_MINIMUM).is_err() {
            return Ok(None);
        }
        Ok(self
            .repo
            .list_servers(who.user_id)
            .await?
            .into_iter()
            .find(runs_agent_work))
    }

    /// The user's default server, if any.
    pub async fn default_server(
        &self,
        who: &Principal,
    ) -> Result<Option<ExecutionServer>, CoreError> {
        Ok(self.list(who).await?.into_iter().find(|s| s.is_default))
    }

    /// Applies the changes (the config re-validated, masked secrets kept) and the default flag.
    pub async fn update(
        &self,
        who: &Principal,
        id: Uuid,
        req: UpdateServer,
    ) -> Result<ExecutionServer, CoreError> {
        let current = self.get(who, id).await?;
        let connection_config = match &req.connection_config {
            Some(c) => Some(seal_config(
                current.server_type,
                c,
                Some(&current.connection_config),
                self.cipher.as_ref(),
            )?),
            None => None,
        };
        let changes = ServerChanges {
            name: req.name.as_deref().map(validate_name).transpose()?,
            connection_config,
            workspace_path: match req.workspace_path {
                Some(Some(p)) => Some(Some(validate_workspace(&p)?)),
                Some(None) => Some(None),
                None => None,
            },
            is_active: req.is_active,
        };
        self.repo
            .update_server(who.user_id, id, changes)
            .await
            .map_err(name_taken)?
            .ok_or_else(not_found)?;
        if let Some(d) = req.is_default {
            self.repo.set_default(who.user_id, id, d).await?;
        }
        self.get(who, id).await
    }

    /// Makes `id` the user's default (one transaction; any other default is cleared).
    pub async fn make_default(
        &self,
        who: &Principal,
        id: Uuid,
    ) -> Result<ExecutionServer, CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        if !self.repo.set_default(who.user_id, id, true).await? {
            return Err(not_found());
        }
        self.get(who, id).await
    }

    /// Deletes the caller's server `id`.
    pub async fn delete(&self, who: &Principal, id: Uuid) -> Result<(), CoreError> {
        who.tier.require(Tier::BYOK_MINIMUM)?;
        if self.repo.delete_server(who.user_id, id).await? {
            tracing::info!(server_id = %id, "execution server deleted");
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

/// Whether agent work runs on `s` when no server is named: the active default.
fn runs_agent_work(s: &ExecutionServer) -> bool {
    s.is_default && s.is_active
}

#[cfg(test)]
mod tests;
