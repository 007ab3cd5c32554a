//! The real `byok-gateway` binary, started on port 0 with its own data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::canary;

/// Path of the binary: `BYOK_GATEWAY_BIN`, else `target/<profile>/byok-gateway` next to the
/// test executable (`make test` builds it first).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("BYOK_GATEWAY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("byok-gateway");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p byok-server` first (make test does)",
        bin.display()
    );
    bin
}

/// Environment shared by a server and the CLI runs against it.
#[derive(Clone, Debug)]
pub struct Env {
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// Data in `data_dir`, database `db_url`, quiet-but-thorough logging.
    pub fn new(data_dir: &Path, db_url: &str) -> Self {
        let mut vars = vec![
            ("BYOK_DATA_DIR".to_string(), data_dir.display().to_string()),
            ("DATABASE_URL".to_string(), db_url.to_string()),
            ("BYOK_BIND".to_string(), "127.0.0.1:0".to_string()),
            ("BYOK_WORKERS".to_string(), "2".to_string()),
            ("BYOK_PROBE_TIMEOUT_SECS".to_string(), "2".to_string()),
            // Debug level everywhere: canaries must not leak even there.
            ("RUST_LOG".to_string(), "debug".to_string()),
        ];
        // No real provider is reachable from tests: point every provider at a closed port
        // unless a test points it at a stand-in.
        for id in [
            "OPENAI",
            "ANTHROPIC",
            "HUGGINGFACE",
            "COHERE",
            "TOGETHER",
            "PERPLEXITY",
            "GROQ",
            "OPENROUTER",
            "OLLAMA",
            "OLLAMA_CLOUD",
        ] {
            vars.push((
                format!("BYOK_PROVIDER_{id}_BASE_URL"),
                "http://127.0.0.1:9".to_string(),
            ));
        }
        Self { vars }
    }

    pub fn set(mut self, k: &str, v: &str) -> Self {
        self.vars.retain(|(key, _)| key != k);
        self.vars.push((k.to_string(), v.to_string()));
        self
    }

    pub fn unset(mut self, k: &str) -> Self {
        self.vars.retain(|(key, _)| key != k);
        self
    }

    fn apply(&self, cmd: &mut Command) {
        for k in [
            "DATABASE_URL",
            "ENCRYPTION_KEY",
            "BYOK_ALLOWED_TARGETS",
            "BYOK_LOG_FORMAT",
            "RUST_LOG",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }

    /// Runs a CLI subcommand to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary());
        cmd.args(args).stdin(Stdio::null());
        self.apply(&mut cmd);
        cmd.output().unwrap()
    }

    /// Runs `user create` and returns the printed token.
    pub fn create_user(&self, email: &str, tier: &str) -> String {
        let out = self.cli(&["user", "create", "--email", email, "--tier", tier]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        token_from(&String::from_utf8_lossy(&out.stdout))
    }
}

/// The token from a `token: …` line.
pub fn token_from(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("no token line")
        .trim()
        .to_string()
}

/// A running server.
pub struct TestServer {
    child: Child,
    pub base: String,
    /// The bootstrap admin's token, if this start created it.
    pub admin_token: Option<String>,
    pub env: Env,
    stdout: PathBuf,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
    bodies: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

/// A response, with its body as text and parsed JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestServer {
    pub fn start(env: Env) -> Self {
        Self::try_start(env).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(env: Env) -> Result<Self, String> {
        let logs = tempfile::tempdir().unwrap();
        let stdout = logs.path().join("stdout.log");
        let stderr = logs.path().join("stderr.log");
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        env.apply(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(addr) = out
                .lines()
                .find_map(|l| l.strip_prefix("BYOK gateway listening on "))
            {
                let admin_token = out
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("byok_"))
                    .map(str::to_owned);
                return Ok(Self {
                    child,
                    base: addr.trim().to_string(),
                    admin_token,
                    env,
                    stdout,
                    stderr,
                    _logs: logs,
                    bodies: Arc::default(),
                    http: crate::http_client()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap(),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "server exited with {status}: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("server did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn admin(&self) -> &str {
        self.admin_token.as_deref().expect("no bootstrap token")
    }

    /// Sends a request; `token` goes in `Authorization: Bearer`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    /// A POST with a bearer token and a JSON body, to add headers to before [`Self::send`].
    pub fn http_post(&self, path: &str, token: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
    }

    /// Sends a prepared request and records its body for the leak check.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        for v in headers.values() {
            self.bodies
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Sends SIGTERM (what Kubernetes sends before a pod goes away).
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Stops the server and checks that no canary reached its logs or any response.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let logs = self.logs();
        canary::assert_absent("server logs", &logs);
        for body in self.bodies.lock().unwrap().iter() {
            canary::assert_absent("a response", body);
        }
        assert!(!logs.contains("panicked"), "the server panicked:\n{logs}");
        logs
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
