//! The Docker backend (`bollard`): each command runs in a fresh, locked-down container.
//!
//! Endpoints: `unix:///path` only when the operator lists that socket in
//! `BYOK_DOCKER_SOCKETS` (so a user can never point the service at its own host's engine
//! unless the operator chose so); `https://host:port`, or `tcp://host:port` with `tls_ca`, over
//! TLS that trusts only the configured CA and presents `tls_cert`/`tls_key` when given (the
//! engine's `--tlsverify` mode); `http://` or `tcp://` without TLS material only when the
//! operator allows plain TCP. Every TCP endpoint passes the outbound target policy and is
//! connected at the address that was checked (no second DNS lookup).
//! Containers get the labels `byok.managed=true`, `byok.owner`, `byok.server`, no network,
//! memory/CPU/pids limits, `no-new-privileges` and every capability dropped, and are removed
//! after the run; `reap` removes labelled containers left behind.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::AttachContainerResults;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::{BollardRequest, Docker};
use byok_core::execution::{
    CommandSpec, ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig,
    ServerTest, ServerType,
};
use byok_core::policy::TargetPolicy;
use futures_util::StreamExt;
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Label every managed container carries.
pub const MANAGED_LABEL: &str = "byok.managed";

/// A client for a unix socket path (for the reaper).
pub fn docker_client(socket: &str) -> Result<Docker, ExecError> {
    Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION).map_err(unreachable)
}

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Unix sockets users may name (`BYOK_DOCKER_SOCKETS`); none by default.
    pub allowed_sockets: Vec<String>,
    /// Whether plain `tcp://` endpoints are allowed (`BYOK_DOCKER_ALLOW_PLAIN_TCP`).
    pub allow_plain_tcp: bool,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
}

impl Default for DockerOptions {
    fn default() -> Self {
        Self {
            allowed_sockets: Vec::new(),
            allow_plain_tcp: false,
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids_limit: 256,
        }
    }
}

/// Runs commands in containers on the user's engine.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    policy: TargetPolicy,
    options: DockerOptions,
}

/// A checked engine endpoint, ready to connect to.
enum Endpoint {
    Unix(String),
    Plain(SocketAddr),
    Tls(Box<rustls::ClientConfig>, String, SocketAddr),
}

fn unreachable(e: impl std::fmt::Display) -> ExecError {
    ExecError::Unreachable(format!("the Docker engine: {e}"))
}

impl DockerBackend {
    pub fn new(policy: TargetPolicy, options: DockerOptions) -> Self {
        Self { policy, options }
    }

    async fn client(&self, config: &OpenConfig) -> Result<Docker, ExecError> {
        match self.endpoint(config).await? {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)
            }
            Endpoint::Plain(addr) => {
                Docker::connect_with_http(&addr.to_string(), 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)
            }
            Endpoint::Tls(tls_config, host, addr) => connect_tls(*tls_config, &host, addr),
        }
    }

    /// The engine the config names, checked: a unix socket on the operator's allow-list, or a
    /// host through the target policy (plain TCP only when allowed), with its TLS settings.
    async fn endpoint(&self, config: &OpenConfig) -> Result<Endpoint, ExecError> {
        let endpoint = config
            .public
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(path) = endpoint.strip_prefix("unix://") {
            if !self.options.allowed_sockets.iter().any(|s| s == path) {
                return Err(ExecError::ForbiddenTarget(
                    "this Docker socket is not one the operator allows (BYOK_DOCKER_SOCKETS)"
                        .into(),
                ));
            }
            return Ok(Endpoint::Unix(path.to_string()));
        }
        let ca = config.secret("tls_ca");
        let (rest, tls) = if let Some(rest) = endpoint.strip_prefix("https://") {
            (rest, true)
        } else if let Some(rest) = endpoint.strip_prefix("tcp://") {
            (rest, ca.is_some())
        } else if let Some(rest) = endpoint.strip_prefix("http://") {
            (rest, false)
        } else {
            return Err(ExecError::BackendUnavailable(
                "the Docker endpoint must be unix://, tcp://, https:// or http://".into(),
            ));
        };
        if !tls && !self.options.allow_plain_tcp {
            return Err(ExecError::ForbiddenTarget(
                "plain TCP Docker endpoints are not allowed on this service; give tls_ca \
                 (and tls_cert/tls_key) for a TLS endpoint"
                    .into(),
            ));
        }
        let (host, addr) = self
            .checked_address(rest, if tls { 2376 } else { 2375 })
            .await?;
        if !tls {
            return Ok(Endpoint::Plain(addr));
        }
        let ca = ca.ok_or_else(|| {
            ExecError::BackendUnavailable("a TLS Docker endpoint needs tls_ca".into())
        })?;
        let identity = match (config.secret("tls_cert"), config.secret("tls_key")) {
            (Some(c), Some(k)) => Some((c.expose_secret(), k.expose_secret())),
            (None, None) => None,
            _ => {
                return Err(ExecError::BackendUnavailable(
                    "tls_cert and tls_key go together".into(),
                ));
            }
        };
        let tls_config = crate::tls::client_config(ca.expose_secret(), identity)?;
        Ok(Endpoint::Tls(Box::new(tls_config), host, addr))
    }

    /// Parses `host[:port]`, applies the target policy, and returns the host name (for TLS
    /// verification) with the one checked address every connection then uses.
    async fn checked_address(
        &self,
        rest: &str,
        default_port: u16,
    ) -> Result<(String, SocketAddr), ExecError> {
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| ExecError::Unreachable("bad port".into()))?,
            ),
            _ => (rest, default_port),
        };
        crate::target::resolve_checked(&self.policy, host, port, Duration::from_secs(10)).await
    }

    /// Removes managed containers older than `age` (left behind by a crash).
    pub async fn reap(docker: &Docker, age: Duration) -> usize {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{MANAGED_LABEL}=true")]);
        let Ok(list) = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
        else {
            return 0;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut removed = 0;
        for c in list {
            let old = c.created.is_some_and(|t| now - t >= age.as_secs() as i64);
            if let (true, Some(id)) = (old, c.id)
                && remove(docker, &id).await
            {
                removed += 1;
            }
        }
        removed
    }
}

/// A Docker client over TLS to the checked address `addr`, verifying the certificate against
/// `host` (the name the user configured), through bollard's custom-transport hook.
fn connect_tls(
    tls_config: rustls::ClientConfig,
    host: &str,
    addr: SocketAddr,
) -> Result<Docker, ExecError> {
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|_| ExecError::BackendUnavailable("the endpoint host is not a TLS name".into()))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_only()
        .with_server_name_resolver(FixedServerNameResolver::new(server_name))
        .enable_http1()
        .wrap_connector(http);
    let client = Arc::new(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector),
    );
    let base = format!("https://{addr}");
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let client = Arc::clone(&client);
            async move {
                client
                    .request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(base),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(unreachable)
}

/// Attaches to the created (not yet started) container's stdin and writes `data` from a task,
/// then closes it, so the command sees end of input. The task is aborted when the run ends
/// (a command that never reads its input cannot hold the exec open).
async fn feed_stdin(
    docker: &Docker,
    id: &str,
    data: &SecretString,
) -> Result<tokio::task::JoinHandle<()>, ExecError> {
    let attached = docker
        .attach_container(
            id,
            Some(AttachContainerOptions {
                stdin: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| ExecError::BackendUnavailable(format!("could not attach stdin: {e}")))?;
    let bytes = data.expose_secret().as_bytes().to_vec();
    Ok(tokio::spawn(async move {
        let AttachContainerResults {
            mut output,
            mut input,
        } = attached;
        if input.write_all(&bytes).await.is_ok() {
            let _ = input.shutdown().await;
        }
        // Keep the connection read until the engine closes it.
        while output.next().await.is_some() {}
    }))
}

/// Removes (force: kills first) a container when dropped while still armed.
struct RemoveOnDrop {
    docker: Option<Docker>,
    id: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let (Some(docker), Ok(rt)) = (self.docker.take(), tokio::runtime::Handle::try_current())
        {
            let id = std::mem::take(&mut self.id);
            rt.spawn(async move {
                let _ = remove(&docker, &id).await;
            });
        }
    }
}

async fn remove(docker: &Docker, id: &str) -> bool {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
        .is_ok()
}

#[async_trait]
impl ExecutionBackend for DockerBackend {
    fn kind(&self) -> ServerType {
        ServerType::Docker
    }

    async fn admit(
        &self,
        _: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<Option<SocketAddr>, ExecError> {
        Ok(match self.endpoint(config).await? {
            Endpoint::Unix(_) => None,
            Endpoint::Plain(addr) | Endpoint::Tls(_, _, addr) => Some(addr),
        })
    }

    async fn test(
        &self,
        _server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<ServerTest, ExecError> {
        let docker = match self.client(config).await {
            Ok(d) => d,
            Err(e) => {
                return Ok(ServerTest::from_error(&e));
            }
        };
        let outcome = async {
            docker.ping().await.map_err(unreachable)?;
            docker.version().await.map_err(unreachable)
        }
        .await;
        Ok(match outcome {
            Ok(v) => ServerTest {
                status: "success",
                message: "the Docker engine answers".into(),
                details: json!({"version": v.version, "api_version": v.api_version, "os": v.os}),
            },
            Err(e) => ServerTest::from_error(&e),
        })
    }

    async fn exec(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        let docker = self.client(config).await?;
        let image = config
            .public
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("python:3.11-slim");
        let cmd = match &request.command {
            CommandSpec::Argv(a) => a.clone(),
            CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        };
        // Configured environment (sealed values, opened) first, the request's on top.
        let mut env: Vec<String> = config
            .secrets
            .iter()
            .filter_map(|(path, v)| {
                path.strip_prefix("environment.")
                    .map(|k| format!("{k}={}", v.expose_secret()))
            })
            .collect();
        env.extend(
            request
                .env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.expose_secret())),
        );
        let mut labels = HashMap::new();
        labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
        labels.insert("byok.owner".to_string(), server.user_id.to_string());
        labels.insert("byok.server".to_string(), server.id.to_string());
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: server.workspace_path.clone(),
            labels: Some(labels),
            network_disabled: Some(true),
            // stdin, when given, goes through an attach before start; closing it ends input.
            open_stdin: Some(request.stdin.is_some()),
            stdin_once: Some(request.stdin.is_some()),
            attach_stdin: Some(request.stdin.is_some()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                memory: Some(self.options.memory_bytes),
                nano_cpus: Some(self.options.nano_cpus),
                pids_limit: Some(self.options.pids_limit),
                security_opt: Some(vec!["no-new-privileges".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        let created = docker
            .create_container(Some(CreateContainerOptions::default()), body)
            .await
            .map_err(|e| {
                ExecError::BackendUnavailable(format!("could not create the container: {e}"))
            })?;
        let id = created.id;
        // If this future is dropped (the client went away), the guard removes the container.
        let mut guard = RemoveOnDrop {
            docker: Some(docker.clone()),
            id: id.clone(),
        };
        let run = async {
            let feeder = match &request.stdin {
                Some(data) => Some(feed_stdin(&docker, &id, data).await?),
                None => None,
            };
            docker
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| {
                    ExecError::BackendUnavailable(format!("could not start the container: {e}"))
                })?;
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            let waited = tokio::time::timeout(request.timeout, wait.next()).await;
            let (exit_code, timed_out) = match waited {
                Ok(Some(Ok(r))) => (Some(r.status_code as i32), false),
                // bollard reports a non-zero exit as an error carrying the code.
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError {
                    code, ..
                }))) => (Some(code as i32), false),
                Ok(_) => (None, false),
                Err(_) => {
                    let _ = docker
                        .kill_container(
                            &id,
                            Some(KillContainerOptions {
                                signal: "KILL".into(),
                            }),
                        )
                        .await;
                    (None, true)
                }
            };
            if let Some(f) = feeder {
                f.abort();
            }
            let mut logs = docker.logs(
                &id,
                Some(LogsOptions {
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            let (mut out, mut err, mut truncated) = (Vec::new(), Vec::new(), false);
            while let Some(Ok(chunk)) = logs.next().await {
                let (target, bytes) = match chunk {
                    bollard::container::LogOutput::StdErr { message } => (&mut err, message),
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => (&mut out, message),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                let room = request.max_output.saturating_sub(target.len());
                if bytes.len() > room {
                    truncated = true;
                }
                target.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Ok::<_, ExecError>(ExecResult {
                exit_code,
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
                truncated,
                timed_out,
                duration_ms: started.elapsed().as_millis() as u64,
            })
        }
        .await;
        guard.docker = None;
        if !remove(&docker, &id).await {
            tracing::warn!(server_id = %server.id, "could not remove a container; the reaper will");
        }
        run
    }
}
