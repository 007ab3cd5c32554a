//! The local backend: commands on the gateway host (operator opt-in, enterprise only), each
//! in a bubblewrap sandbox that cannot see the gateway nor another run.
//!
//! Every run takes a uid/gid of its own from a range (`uid .. uid + sandboxes`), set before
//! `exec` with `std::process::Command::uid` (so the gateway must start as root), and waits for
//! one when all are busy: at most `sandboxes` runs at once on the host, and one run's process
//! limit (`RLIMIT_NPROC` counts per uid) is its own. Each runs under `prlimit` limits
//! (processes, address space per process, file size, open files, CPU seconds, no core dumps),
//! inside `bwrap` with fresh user, PID, mount, IPC, UTS, network and cgroup namespaces, further
//! user namespaces disabled (`--disable-userns`): `/usr` (and the merged-usr links) read-only,
//! its own `/proc` and minimal `/dev`, size-capped tmpfs `/tmp` and `/work`, no capabilities, a
//! new session (no terminal injection). The data directory, the encryption key, the database
//! and the gateway's `/proc` and environment are not in it. A timeout kills the outer `bwrap`;
//! the sandbox's init dies with it (`--die-with-parent`), and the kernel kills everything in a
//! PID namespace whose init is gone.
//!
//! If the sandbox cannot be set up ([`LocalBackend::check`]), local execution refuses to start;
//! there is no unsandboxed fallback.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use byok_core::execution::{
    CommandSpec, ExecError, ExecRequest, ExecResult, ExecutionBackend, ExecutionServer, OpenConfig,
    ServerTest, ServerType,
};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The sandbox local commands run in.
#[derive(Debug, Clone)]
pub struct LocalSandbox {
    /// The first uid and gid of the range runs take theirs from (`BYOK_LOCAL_SANDBOX_UID`,
    /// `_GID`). Use ids nothing else on the host runs as.
    pub uid: u32,
    pub gid: u32,
    /// How many runs at once, each with its own uid/gid (`BYOK_LOCAL_SANDBOXES`).
    pub sandboxes: u32,
    /// Processes (threads included) one run may have (`RLIMIT_NPROC` of its uid).
    pub max_processes: u32,
    /// Address space of each process, in bytes (`RLIMIT_AS`).
    pub max_memory_bytes: u64,
    /// Largest file a command may write, in bytes (`RLIMIT_FSIZE`), and the size of each tmpfs.
    pub max_file_bytes: u64,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The prlimit binary (util-linux).
    pub prlimit: PathBuf,
}

impl Default for LocalSandbox {
    fn default() -> Self {
        Self {
            uid: 990_000,
            gid: 990_000,
            sandboxes: 8,
            max_processes: 64,
            max_memory_bytes: 1 << 30,
            max_file_bytes: 128 << 20,
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            prlimit: PathBuf::from("/usr/bin/prlimit"),
        }
    }
}

/// Environment variables a request may not set on a local server: they would also apply to
/// the sandbox's launchers (`prlimit`, `bwrap`), which run outside the namespaces.
fn launcher_variable(name: &str) -> bool {
    name.starts_with("LD_")
        || matches!(
            name,
            "GCONV_PATH"
                | "GETCONF_DIR"
                | "GLIBC_TUNABLES"
                | "HOSTALIASES"
                | "LOCALDOMAIN"
                | "LOCPATH"
                | "MALLOC_TRACE"
                | "NIS_PATH"
                | "NLSPATH"
                | "RESOLV_HOST_CONF"
                | "RES_OPTIONS"
                | "TMPDIR"
                | "TZDIR"
        )
}

/// The uids/gids of the sandbox range not in use by a run.
#[derive(Debug)]
struct Ids {
    free: Mutex<Vec<(u32, u32)>>,
    available: Semaphore,
}

/// One run's uid/gid, back in the range when dropped.
struct Lease {
    ids: Arc<Ids>,
    uid: u32,
    gid: u32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ids
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((self.uid, self.gid));
        self.ids.available.add_permits(1);
    }
}

/// Runs commands on this host, sandboxed.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    sandbox: LocalSandbox,
    ids: Arc<Ids>,
}

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

impl LocalBackend {
    pub fn new(sandbox: LocalSandbox) -> Self {
        let n = sandbox.sandboxes.max(1);
        let free = (0..n)
            .rev()
            .map(|i| (sandbox.uid.saturating_add(i), sandbox.gid.saturating_add(i)))
            .collect();
        Self {
            ids: Arc::new(Ids {
                free: Mutex::new(free),
                available: Semaphore::new(n as usize),
            }),
            sandbox,
        }
    }

    /// A uid/gid for one run, waiting up to `wait` for one to be free.
    async fn lease(&self, wait: std::time::Duration) -> Option<Lease> {
        let permit = tokio::time::timeout(wait, self.ids.available.acquire())
            .await
            .ok()?
            .ok()?;
        // The permit is returned by the lease's drop, with the ids.
        permit.forget();
        let (uid, gid) = self
            .ids
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()?;
        Some(Lease {
            ids: self.ids.clone(),
            uid,
            gid,
        })
    }

    /// Starts `id -u` in the sandbox and checks it ran as a sandbox uid. Err: why the sandbox
    /// cannot be set up on this host, for the operator.
    pub async fn check(&self) -> Result<(), String> {
        let s = &self.sandbox;
        for (what, path, package) in [
            ("bubblewrap", &s.bwrap, "bubblewrap"),
            ("prlimit", &s.prlimit, "util-linux"),
        ] {
            if !path.exists() {
                return Err(format!(
                    "local execution needs {what} at {} (Debian package {package})",
                    path.display()
                ));
            }
        }
        // Root, and not the range's ids: the switch to another uid drops supplementary groups
        // only when it starts as root.
        let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid_of = |key: &str| {
            own.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
        };
        if uid_of("Uid:") != Some(0) {
            return Err(
                "local execution switches every command to a sandbox uid; the gateway must \
                 start as root to do so"
                    .into(),
            );
        }
        let range = s.uid..s.uid.saturating_add(s.sandboxes.max(1));
        if s.uid == 0 || s.gid == 0 || range.contains(&0) {
            return Err("the sandbox uid and gid range must not include 0 (root)".into());
        }
        let Some(lease) = self.lease(std::time::Duration::from_secs(10)).await else {
            return Err("no sandbox uid is free".into());
        };
        let mut cmd = self.command(
            &CommandSpec::Argv(vec!["id".into(), "-u".into()]),
            10,
            &lease,
        );
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let run = tokio::time::timeout(std::time::Duration::from_secs(10), cmd.output());
        let out = match run.await {
            Err(_) => return Err("the local execution sandbox did not start within 10 s".into()),
            Ok(Err(e)) => return Err(format!("the local execution sandbox cannot start: {e}")),
            Ok(Ok(out)) => out,
        };
        let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || uid != lease.uid.to_string() {
            let why = String::from_utf8_lossy(&out.stderr);
            let why: String = why.trim().chars().take(300).collect();
            return Err(format!(
                "the local execution sandbox cannot be set up (bubblewrap needs user namespaces \
                 for uid {}, and --disable-userns): {why}",
                lease.uid
            ));
        }
        Ok(())
    }

    /// `prlimit … -- bwrap … -- <command>`, started as the sandbox uid/gid.
    fn command(
        &self,
        spec: &CommandSpec,
        timeout_secs: u64,
        ids: &Lease,
    ) -> tokio::process::Command {
        let s = &self.sandbox;
        let mut c = tokio::process::Command::new(&s.prlimit);
        c.arg(format!("--nproc={}", s.max_processes))
            .arg(format!("--as={}", s.max_memory_bytes))
            .arg(format!("--fsize={}", s.max_file_bytes))
            .arg("--nofile=1024")
            .arg("--core=0")
            // CPU seconds per process: the wall-clock limit ends the run anyway; this is a
            // second bound should the kill ever fail.
            .arg(format!("--cpu={}", timeout_secs.saturating_add(5)))
            .arg("--")
            .arg(&s.bwrap)
            .args(["--unshare-all", "--unshare-user", "--disable-userns"])
            .arg("--die-with-parent")
            .args(["--new-session", "--cap-drop", "ALL"])
            .args(["--uid", &ids.uid.to_string(), "--gid", &ids.gid.to_string()])
            .args(["--hostname", "byok-sandbox"])
            .args(["--ro-bind", "/usr", "/usr"]);
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(dir) {
                // Merged /usr: the same link inside.
                Ok(target) => {
                    c.arg("--symlink").arg(target).arg(dir);
                }
                Err(_) => {
                    c.args(["--ro-bind-try", dir, dir]);
                }
            }
        }
        for file in ["/etc/alternatives", "/etc/ld.so.cache", "/etc/localtime"] {
            c.args(["--ro-bind-try", file, file]);
        }
        let size = s.max_file_bytes.to_string();
        c.args(["--proc", "/proc", "--dev", "/dev"])
            .args(["--size", &size, "--tmpfs", "/tmp"])
            .args(["--size", &size, "--tmpfs", "/work"])
            .args(["--chdir", "/work", "--"]);
        match spec {
            CommandSpec::Argv(argv) => {
                c.args(argv);
            }
            CommandSpec::Shell(line) => {
                c.arg("/bin/sh").arg("-c").arg(line);
            }
        }
        c.current_dir(Path::new("/")).uid(ids.uid).gid(ids.gid);
        c
    }
}

#[async_trait]
impl ExecutionBackend for LocalBackend {
    fn kind(&self) -> ServerType {
        ServerType::Local
    }

    async fn admit(
        &self,
        _: &ExecutionServer,
        _: &OpenConfig,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        // The sandbox was checked when the backend was enabled (no check, no backend).
        Ok(None)
    }

    async fn test(&self, _: &ExecutionServer, _: &OpenConfig) -> Result<ServerTest, ExecError> {
        if let Err(why) = self.check().await {
            tracing::error!(error = %why, "the local execution sandbox failed");
            return Err(ExecError::BackendUnavailable(
                "the local execution sandbox is not working on this service".into(),
            ));
        }
        Ok(ServerTest {
            status: "success",
            message: "local execution is enabled on this service (sandboxed)".into(),
            details: json!({
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "sandbox": "bubblewrap",
                "uid": self.sandbox.uid,
            }),
        })
    }

    async fn exec(
        &self,
        _server: &ExecutionServer,
        _config: &OpenConfig,
        request: &ExecRequest,
    ) -> Result<ExecResult, ExecError> {
        if let Some(name) = request.env.keys().find(|k| launcher_variable(k)) {
            return Err(ExecError::BackendUnavailable(format!(
                "the environment variable {name} cannot be set on local servers (it would \
                 reach the sandbox's launcher); set it in the command instead"
            )));
        }
        // A uid of its own for this run; waiting for one counts against the command's time.
        let asked = Instant::now();
        let Some(lease) = self.lease(request.timeout).await else {
            return Err(ExecError::Timeout);
        };
        let timeout = request.timeout.saturating_sub(asked.elapsed());
        if timeout.is_zero() {
            return Err(ExecError::Timeout);
        }
        let mut cmd = self.command(&request.command, timeout.as_secs().max(1), &lease);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/work")
            .env("LANG", "C.UTF-8")
            .stdin(if request.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
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
        let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => (status.code(), false),
            Ok(Err(e)) => return Err(ExecError::BackendUnavailable(format!("wait failed: {e}"))),
            Err(_) => {
                // Killing the outer bwrap is enough: the sandbox's init dies with it
                // (`--die-with-parent`), and with it every process of its PID namespace.
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

    /// A sandbox uid of its own, so its process count is the test's alone.
    fn sandboxed() -> LocalBackend {
        LocalBackend::new(LocalSandbox {
            uid: 61_001,
            gid: 61_001,
            ..LocalSandbox::default()
        })
    }

    /// These run real sandboxes: root and bubblewrap are needed (`make test` has both).
    fn can_sandbox() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        let ok = root && std::path::Path::new("/usr/bin/bwrap").exists();
        if !ok {
            eprintln!("skipped: the local sandbox needs root and /usr/bin/bwrap");
        }
        ok
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
        sandboxed().exec(&server(), &cfg, &req).await.unwrap()
    }

    #[tokio::test]
    async fn runs_captures_and_limits() {
        if !can_sandbox() {
            return;
        }
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
        // The background sleep died with the sandbox.
        let alive = || {
            (61_001..61_009).any(|uid| {
                std::process::Command::new("pgrep")
                    .args(["-u", &uid.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            })
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!alive(), "nothing of the run survives its timeout");
        // No nested user namespace (and with it no capabilities) inside.
        let r = run(
            CommandSpec::Shell("unshare -Ur true && echo nested".into()),
            5,
            None,
        )
        .await;
        assert_eq!(r.stdout, "", "{}", r.stderr);
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
