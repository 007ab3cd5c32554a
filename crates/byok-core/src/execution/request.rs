//! Commands for an execution server: the validated request, its result, and a connection
//! test's outcome.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::error::{CoreError, ExecError};

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    /// Program and arguments, no shell.
    Argv(Vec<String>),
    /// A line for `sh -c`.
    Shell(String),
}

/// A command to run on an execution server.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub command: CommandSpec,
    /// Extra environment (names validated; values may be secrets and are never echoed).
    pub env: BTreeMap<String, SecretString>,
    pub stdin: Option<SecretString>,
    pub timeout: std::time::Duration,
    /// Cap on each of stdout and stderr, in bytes.
    pub max_output: usize,
}

/// The wall-clock limit of a command that names none.
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 60;
/// The longest wall-clock time a command may be given.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 600;
/// The most input a command may be given (it fits a Kubernetes Secret).
pub const MAX_STDIN: usize = 512 * 1024;
/// The default cap on each output stream.
pub const DEFAULT_MAX_OUTPUT: usize = 1024 * 1024;

impl ExecRequest {
    /// Validates a request: non-empty command (at most 64 KiB), environment names
    /// `[A-Za-z_][A-Za-z0-9_]*`, stdin at most [`MAX_STDIN`], timeout 1–600 s.
    pub fn new(
        command: CommandSpec,
        env: BTreeMap<String, SecretString>,
        stdin: Option<SecretString>,
        timeout_secs: u64,
    ) -> Result<Self, CoreError> {
        let size = match &command {
            CommandSpec::Argv(a) if a.is_empty() || a[0].is_empty() => {
                return Err(CoreError::invalid(
                    "invalid_command",
                    "command must not be empty",
                ));
            }
            CommandSpec::Argv(a) => a.iter().map(String::len).sum::<usize>(),
            CommandSpec::Shell(s) if s.trim().is_empty() => {
                return Err(CoreError::invalid(
                    "invalid_command",
                    "command must not be empty",
                ));
            }
            CommandSpec::Shell(s) => s.len(),
        };
        let has_nul = match &command {
            CommandSpec::Argv(a) => a.iter().any(|x| x.contains('\0')),
            CommandSpec::Shell(s) => s.contains('\0'),
        };
        if size > 64 * 1024 || has_nul {
            return Err(CoreError::invalid(
                "invalid_command",
                "command must be at most 64 KiB, without NUL",
            ));
        }
        for k in env.keys() {
            let ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.len() <= 128;
            if !ok {
                return Err(CoreError::invalid(
                    "invalid_env",
                    "environment names must match [A-Za-z_][A-Za-z0-9_]*",
                ));
            }
        }
        if stdin
            .as_ref()
            .is_some_and(|d| d.expose_secret().len() > MAX_STDIN)
        {
            return Err(CoreError::invalid(
                "invalid_stdin",
                "stdin must be at most 512 KiB",
            ));
        }
        if !(1..=MAX_EXEC_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(CoreError::invalid(
                "invalid_timeout",
                "timeout_secs must be between 1 and 600",
            ));
        }
        Ok(Self {
            command,
            env,
            stdin,
            timeout: std::time::Duration::from_secs(timeout_secs),
            max_output: DEFAULT_MAX_OUTPUT,
        })
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// `None` when the command was killed (timeout) or died by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Either stream exceeded its cap (the rest was read and dropped).
    pub truncated: bool,
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// What a connection test found.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerTest {
    /// `success`, `failed` (reachable, but refused or unusable) or `error`.
    pub status: &'static str,
    pub message: String,
    pub details: Value,
}

impl ServerTest {
    /// A test that did not succeed, the reason's code in the details: status `failed` when
    /// the server answered and refused the credentials, `error` when it could not be used.
    pub fn from_error(e: &ExecError) -> Self {
        Self {
            status: if matches!(e, ExecError::AuthFailed) {
                "failed"
            } else {
                "error"
            },
            message: e.to_string(),
            details: json!({ "code": e.code() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_is_capped() {
        let req = |n: usize| {
            ExecRequest::new(
                CommandSpec::Shell("cat".into()),
                BTreeMap::new(),
                Some(SecretString::from("x".repeat(n))),
                10,
            )
        };
        assert!(req(MAX_STDIN).is_ok());
        assert!(req(MAX_STDIN + 1).is_err());
    }
}
