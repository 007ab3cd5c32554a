//! The SSH backend (`ssh2`, blocking, run under `spawn_blocking` behind a concurrency limit).
//!
//! The host key is checked before authentication: against the SHA-256 fingerprint pinned with
//! the server (`host_key_fingerprint`, set only by trusting the presented key). No pin →
//! `host_key_unverified` with the presented fingerprint; a different key →
//! `host_key_mismatch` naming both. The host passes the outbound target policy first, and the
//! connection goes to the checked address.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use byok_core::execution::{
    CommandSpec, ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig,
    ServerTest, ServerType, pinned_host_key,
};
use byok_core::policy::TargetPolicy;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// Settings of the SSH backend.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub connect_timeout: Duration,
    /// Sessions open at once (each holds a blocking thread).
    pub max_sessions: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_sessions: 16,
        }
    }
}

/// Runs commands over SSH.
#[derive(Debug, Clone)]
pub struct SshBackend {
    policy: TargetPolicy,
    options: SshOptions,
    limit: Arc<Semaphore>,
}

impl SshBackend {
    pub fn new(policy: TargetPolicy, options: SshOptions) -> Self {
        let limit = Arc::new(Semaphore::new(options.max_sessions.max(1)));
        Self {
            policy,
            options,
            limit,
        }
    }

    /// Resolves the host once and checks every address against the target policy.
    async fn checked_addr(&self, config: &Value) -> Result<SocketAddr, ExecError> {
        let host = config
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let port = config.get("port").and_then(Value::as_u64).unwrap_or(22) as u16;
        crate::target::resolve_checked(&self.policy, &host, port, self.options.connect_timeout)
            .await
            .map(|(_, addr)| addr)
    }

    async fn run<T: Send + 'static>(
        &self,
        config: &OpenConfig,
        job: impl FnOnce(Connected) -> Result<T, ExecError> + Send + 'static,
        authenticate: bool,
    ) -> Result<T, ExecError> {
        let addr = self.checked_addr(&config.public).await?;
        let _permit = self.limit.clone().acquire_owned().await.map_err(|_| {
            ExecError::BackendUnavailable("the SSH backend is shutting down".into())
        })?;
        let creds = Credentials::from(config);
        let timeout = self.options.connect_timeout;
        tokio::task::spawn_blocking(move || {
            let connected = connect(addr, timeout, &creds, authenticate)?;
            job(connected)
        })
        .await
        .map_err(|_| ExecError::BackendUnavailable("the SSH worker failed".into()))?
    }
}

/// What a session needs, copied out of the opened config (secrets stay secrets).
struct Credentials {
    username: String,
    method: String,
    password: Option<secrecy::SecretString>,
    private_key: Option<secrecy::SecretString>,
    passphrase: Option<secrecy::SecretString>,
    pinned: Option<String>,
}

impl From<&OpenConfig> for Credentials {
    fn from(c: &OpenConfig) -> Self {
        Self {
            username: c
                .public
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            method: c
                .public
                .get("auth_method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            password: c.secret("password").cloned(),
            private_key: c.secret("private_key").cloned(),
            passphrase: c.secret("passphrase").cloned(),
            pinned: pinned_host_key(&c.public).map(str::to_owned),
        }
    }
}

struct Connected {
    session: ssh2::Session,
    fingerprint: String,
}

fn fingerprint(session: &ssh2::Session) -> Option<String> {
    session.host_key_hash(ssh2::HashType::Sha256).map(|h| {
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(h)
        )
    })
}

fn connect(
    addr: SocketAddr,
    timeout: Duration,
    creds: &Credentials,
    authenticate: bool,
) -> Result<Connected, ExecError> {
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| ExecError::Unreachable(format!("{addr}: {}", e.kind())))?;
    let mut session = ssh2::Session::new()
        .map_err(|_| ExecError::BackendUnavailable("could not start an SSH session".into()))?;
    session.set_tcp_stream(tcp);
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    session.handshake().map_err(|e| {
        ExecError::Unreachable(format!("SSH handshake with {addr} failed: {}", e.message()))
    })?;
    let presented = fingerprint(&session)
        .ok_or_else(|| ExecError::Unreachable("the server presented no host key".into()))?;
    if !authenticate {
        return Ok(Connected {
            session,
            fingerprint: presented,
        });
    }
    // The host key is checked before any credential is sent.
    match &creds.pinned {
        None => {
            return Err(ExecError::HostKeyUnverified {
                fingerprint: presented,
            });
        }
        Some(p) if *p != presented => {
            return Err(ExecError::HostKeyMismatch {
                pinned: p.clone(),
                presented,
            });
        }
        Some(_) => {}
    }
    let result = match creds.method.as_str() {
        "password" => match &creds.password {
            Some(p) => session.userauth_password(&creds.username, p.expose_secret()),
            None => return Err(ExecError::AuthFailed),
        },
        _ => match &creds.private_key {
            Some(k) => session.userauth_pubkey_memory(
                &creds.username,
                None,
                k.expose_secret(),
                creds.passphrase.as_ref().map(|p| p.expose_secret()),
            ),
            None => return Err(ExecError::AuthFailed),
        },
    };
    if result.is_err() || !session.authenticated() {
        return Err(ExecError::AuthFailed);
    }
    Ok(Connected {
        session,
        fingerprint: presented,
    })
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The remote command line: working directory, environment, and a remote `timeout` when the
/// host has one (the local deadline applies in any case).
fn remote_command(request: &ExecRequest, workspace: Option<&str>) -> String {
    let inner = match &request.command {
        CommandSpec::Shell(line) => line.clone(),
        CommandSpec::Argv(argv) => argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
    };
    let mut line = String::new();
    if let Some(w) = workspace {
        line.push_str(&format!("cd {} && ", quote(w)));
    }
    line.push_str("env");
    for (k, v) in &request.env {
        line.push(' ');
        line.push_str(&quote(&format!("{k}={}", v.expose_secret())));
    }
    let secs = request.timeout.as_secs().max(1);
    line.push_str(&format!(
        " sh -c {} sh {}",
        quote(&format!(
            "if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL {secs} sh -c \"$1\"; else exec sh -c \"$1\"; fi"
        )),
        quote(&inner)
    ));
    line
}

fn exec_blocking(
    connected: Connected,
    request: &ExecRequest,
    workspace: Option<String>,
) -> Result<ExecResult, ExecError> {
    let started = Instant::now();
    let deadline = started + request.timeout;
    let session = connected.session;
    let fail =
        |e: ssh2::Error| ExecError::Unreachable(format!("SSH channel failed: {}", e.message()));
    let mut channel = session.channel_session().map_err(fail)?;
    channel
        .exec(&remote_command(request, workspace.as_deref()))
        .map_err(fail)?;
    if let Some(input) = &request.stdin {
        let _ = channel.write_all(input.expose_secret().as_bytes());
    }
    let _ = channel.send_eof();
    session.set_blocking(false);
    let cap = request.max_output;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let mut buf = vec![0u8; 32 * 1024];
    let mut timed_out = false;
    loop {
        let mut progressed = false;
        for stream_id in [0, 1] {
            let read = if stream_id == 0 {
                channel.read(&mut buf)
            } else {
                channel.stderr().read(&mut buf)
            };
            match read {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    let target = if stream_id == 0 { &mut out } else { &mut err };
                    let room = cap.saturating_sub(target.len());
                    if n > room {
                        truncated = true;
                    }
                    target.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        if channel.eof() && !progressed {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    session.set_blocking(true);
    let exit_code = if timed_out {
        let _ = channel.close();
        None
    } else {
        let _ = channel.wait_close();
        channel.exit_status().ok()
    };
    // A remote `timeout -s KILL` reports 137: the command was killed at the deadline.
    let killed =
        exit_code == Some(137) && started.elapsed() + Duration::from_millis(500) >= request.timeout;
    Ok(ExecResult {
        exit_code: if killed { None } else { exit_code },
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        truncated,
        timed_out: timed_out || killed,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

#[async_trait]
impl ExecutionBackend for SshBackend {
    fn kind(&self) -> ServerType {
        ServerType::Ssh
    }

    async fn admit(
        &self,
        _: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<Option<SocketAddr>, ExecError> {
        self.checked_addr(&config.public).await.map(Some)
    }

    async fn test(
        &self,
        _server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<ServerTest, ExecError> {
        let result = self
            .run(
                config,
                |c| {
                    let fp = c.fingerprint.clone();
                    let req = ExecRequest::new(
                        CommandSpec::Shell("uname -a".into()),
                        Default::default(),
                        None,
                        10,
                    )
                    .map_err(|_| ExecError::BackendUnavailable("internal".into()))?;
                    let r = exec_blocking(c, &req, None)?;
                    Ok((fp, r))
                },
                true,
            )
            .await;
        Ok(match result {
            Ok((fp, r)) => ServerTest {
                status: "success",
                message: "connected and authenticated".into(),
                details: json!({"host_key_fingerprint": fp, "uname": r.stdout.trim()}),
            },
            Err(ExecError::HostKeyUnverified { fingerprint }) => ServerTest {
                status: "failed",
                message: "the server's host key is not trusted yet: check the fingerprint, then \
                          POST /api/v1/execution-servers/{id}/trust-host-key"
                    .into(),
                details: json!({"code": "host_key_unverified", "host_key_fingerprint": fingerprint}),
            },
            Err(e @ ExecError::HostKeyMismatch { .. }) => return Err(e),
            Err(e) => ServerTest::from_error(&e),
        })
    }

    async fn exec(
        &self,
        server: &ExecutionServer,
        config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        let request = request.clone();
        let workspace = server.workspace_path.clone();
        self.run(config, move |c| exec_blocking(c, &request, workspace), true)
            .await
    }

    async fn host_key(
        &self,
        _server: &ExecutionServer,
        config: &OpenConfig,
    ) -> Result<String, ExecError> {
        self.run(config, |c| Ok(c.fingerprint), false).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_arguments_apart() {
        assert_eq!(quote("it's"), "'it'\\''s'");
        let req = ExecRequest::new(
            CommandSpec::Argv(vec!["echo".into(), "a b".into()]),
            [("K".to_string(), secrecy::SecretString::from("v'1"))]
                .into_iter()
                .collect(),
            None,
            5,
        )
        .unwrap();
        let line = remote_command(&req, Some("/w s"));
        assert!(
            line.starts_with("cd '/w s' && env 'K=v'\\''1' sh -c "),
            "{line}"
        );
        assert!(
            line.ends_with(" sh ''\\''echo'\\'' '\\''a b'\\'''"),
            "{line}"
        );
    }
}
