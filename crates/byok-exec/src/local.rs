//! The local backend: commands on the gateway host (operator opt-in, enterprise only).

use std::process::Stdio;
use std::time::Instant;

use async_trait::async_trait;
use byok_core::execution::{
    CommandSpec, ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig,
    ServerTest, ServerType,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Runs commands on this host.
#[derive(Debug, Default, Clone)]
pub struct LocalBackend;

/// Reads all of `r`, keeping at most `cap` bytes; returns (kept, truncated).
async fn capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

#[async_trait]
impl ExecutionBackend for LocalBackend {
    fn kind(&self) -> ServerType {
        ServerType::Local
    }

    async fn test(&self, _: &ExecutionServer, _: &OpenConfig) -> Result<ServerTest, ExecError> {
        Ok(ServerTest {
            status: "success",
            message: "local execution is enabled on this service".into(),
            details: json!({"os": std::env::consts::OS, "arch": std::env::consts::ARCH}),
        })
    }

    async fn exec(
        &self,
        _server: &ExecutionServer,
        _config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        let dir = tempfile::Builder::new()
            .prefix("byok-local-")
            .tempdir()
            .map_err(|e| ExecError::BackendUnavailable(format!("no working directory: {e}")))?;
        let mut cmd = match &request.command {
            CommandSpec::Argv(argv) => {
                let mut c = tokio::process::Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            CommandSpec::Shell(line) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
        };
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("LANG", "C.UTF-8")
            .stdin(if request.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group, so a timeout kills the command's children too.
            .process_group(0);
        for (k, v) in &request.env {
            cmd.env(k, v.expose_secret());
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            ExecError::BackendUnavailable(format!("could not start the command: {e}"))
        })?;
        if let (Some(input), Some(mut stdin)) = (&request.stdin, child.stdin.take()) {
            let data = input.expose_secret().as_bytes().to_vec();
            tokio::spawn(async move {
                let _ = stdin.write_all(&data).await;
            });
        }
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ExecError::BackendUnavailable("no output pipes".into()));
        };
        let cap = request.max_output;
        let out_task = tokio::spawn(capped(out, cap));
        let err_task = tokio::spawn(capped(err, cap));
        let (exit_code, timed_out) = match tokio::time::timeout(request.timeout, child.wait()).await
        {
            Ok(Ok(status)) => (status.code(), false),
            Ok(Err(e)) => return Err(ExecError::BackendUnavailable(format!("wait failed: {e}"))),
            Err(_) => {
                if let Some(pid) = child.id() {
                    // SIGKILL to the whole group (negative pid).
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                let _ = child.kill().await;
                (None, true)
            }
        };
        let (stdout, t1) = out_task.await.unwrap_or_default();
        let (stderr, t2) = err_task.await.unwrap_or_default();
        Ok(ExecResult {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            truncated: t1 || t2,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byok_core::execution::open_config;
    use std::collections::BTreeMap;

    fn server() -> ExecutionServer {
        ExecutionServer {
            id: uuid::Uuid::new_v4(),
            user_id: byok_core::UserId::new_random(),
            name: "l".into(),
            server_type: ServerType::Local,
            connection_config: json!({}),
            workspace_path: None,
            is_default: false,
            is_active: true,
            last_tested_at: None,
            test_status: None,
            created_at: chrono_now(),
            updated_at: chrono_now(),
        }
    }

    fn chrono_now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }

    struct NoCipher;
    impl byok_core::ports::SecretCipher for NoCipher {
        fn encrypt(&self, _: &secrecy::SecretString) -> Result<String, byok_core::CryptoError> {
            Err(byok_core::CryptoError::Malformed)
        }
        fn decrypt(&self, _: &str) -> Result<secrecy::SecretString, byok_core::CryptoError> {
            Err(byok_core::CryptoError::Malformed)
        }
        fn is_current(&self, _: &str) -> bool {
            false
        }
    }

    async fn run(cmd: CommandSpec, timeout: u64, stdin: Option<&str>) -> ExecResult {
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_string(), secrecy::SecretString::from("hello"));
        let req = ExecRequest::new(
            cmd,
            env,
            stdin.map(|s| secrecy::SecretString::from(s.to_string())),
            timeout,
        )
        .unwrap();
        let cfg = open_config(&json!({}), &NoCipher).unwrap();
        LocalBackend.exec(&server(), &cfg, &req).await.unwrap()
    }

    #[tokio::test]
    async fn runs_captures_and_limits() {
        let r = run(
            CommandSpec::Shell("echo $GREETING; echo oops >&2; exit 3".into()),
            5,
            None,
        )
        .await;
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
            (Some(3), "hello\n", "oops\n")
        );
        let r = run(CommandSpec::Argv(vec!["cat".into()]), 5, Some("from stdin")).await;
        assert_eq!(r.stdout, "from stdin");
        let r = run(CommandSpec::Shell("sleep 30 & sleep 30".into()), 1, None).await;
        assert!(r.timed_out && r.exit_code.is_none());
        assert!(r.duration_ms < 10_000);
        let r = run(
            CommandSpec::Shell("head -c 10000000 /dev/zero >&2; echo done".into()),
            20,
            None,
        )
        .await;
        assert!(r.truncated, "10 MB to stderr is capped");
        assert_eq!(r.stdout, "done\n", "and does not block stdout");
        assert_eq!(r.stderr.len(), byok_core::execution::DEFAULT_MAX_OUTPUT);
    }
}
