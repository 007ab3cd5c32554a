//! The execution backend port: runs commands on one kind of execution server (SSH, Docker,
//! Kubernetes, the local sandbox; `byok-exec`).

use std::net::SocketAddr;

use async_trait::async_trait;

use crate::error::ExecError;
use crate::execution::request::{ExecRequest, ExecResult, ServerTest};
use crate::execution::seal::OpenConfig;
use crate::execution::server::{ExecutionServer, ServerType};

/// Runs commands on one kind of execution server.
#[async_trait]
pub trait ExecutionBackend: Send + Sync + 'static {
    /// The server type this backend runs.
    fn kind(&self) -> ServerType;
    /// Whether this server may be used from this service at all, without running anything:
    /// the address it names, resolved, through the outbound target policy; the endpoint against
    /// the operator's allow-lists; the credentials' restrictions (no kubeconfig that runs
    /// programs or reads local files). The registry calls it before every use of a stored server
    /// (test, exec, trust, hand-off to the orchestrator); `test`/`exec` still check again at
    /// connection time and connect to the checked address.
    /// Returns the checked address the server's connections go to (`None` for servers without
    /// one: a unix socket, the local host), which the orchestrator is told to connect to.
    async fn admit(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<Option<SocketAddr>, ExecError>;
    /// Is the server reachable, does authentication work, what is there. MUST NOT fail for
    /// an unreachable server: that is a `ServerTest` with status `error` or `failed`.
    async fn test(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<ServerTest, ExecError>;
    /// Runs `request`: working directory = the server's workspace path, the wall-clock timeout
    /// enforced, stdout and stderr captured apart and capped.
    async fn exec(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError>;
    /// The host key the server presents now (`SHA256:…`), for pinning. Backends without host
    /// keys keep the default.
    async fn host_key(
        &self,
        _server: &ExecutionServer,
        _config: &OpenConfig,
    ) -> Result<String, ExecError> {
        Err(ExecError::BackendUnavailable(
            "this kind of server has no host key to trust".into(),
        ))
    }
}
