//! Errors of the core services and of the ports they call.

use crate::tier::Tier;

/// Failure of a [`crate::ports::SecretCipher`].
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The key ring configuration (`ENCRYPTION_KEY`) is unusable.
    #[error("invalid ENCRYPTION_KEY: {0}")]
    InvalidKeyRing(String),
    /// The token is well formed, but no key of the ring authenticates it: the key
    /// that wrote it was removed from `ENCRYPTION_KEY`, or the token was tampered with.
    #[error(
        "stored secret cannot be decrypted with any key in ENCRYPTION_KEY \
         (was the key that encrypted it removed from the ring?)"
    )]
    UnknownKey,
    /// The stored value is not a Fernet token at all.
    #[error("stored secret is not a valid Fernet token")]
    Malformed,
}

/// Failure of a repository port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule of the store was violated (the message names the rule, never a value).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store could not be reached (pool exhausted, connection refused, timeout).
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row could not be interpreted (corrupt or written by an incompatible version).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database failure.
    #[error("database error")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a backend could not do what was asked. Each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("the server could not be reached: {0}")]
    Unreachable(String),
    #[error("authentication failed")]
    AuthFailed,
    #[error("the server's host key changed: pinned {pinned}, presented {presented}")]
    HostKeyMismatch { pinned: String, presented: String },
    #[error("the server's host key is not trusted yet: {fingerprint}")]
    HostKeyUnverified { fingerprint: String },
    #[error("the command did not finish within the time limit")]
    Timeout,
    #[error("{0}")]
    BackendUnavailable(String),
    #[error("the target is not allowed: {0}")]
    ForbiddenTarget(String),
}

impl ExecError {
    /// The stable machine-readable code (`unreachable`, `auth_failed`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::Unreachable(_) => "unreachable",
            ExecError::AuthFailed => "auth_failed",
            ExecError::HostKeyMismatch { .. } => "host_key_mismatch",
            ExecError::HostKeyUnverified { .. } => "host_key_unverified",
            ExecError::Timeout => "timeout",
            ExecError::BackendUnavailable(_) => "backend_unavailable",
            ExecError::ForbiddenTarget(_) => "forbidden_target",
        }
    }
}

/// Errors the core services return. `byok-server` maps each variant to one HTTP status
/// and a stable machine-readable `code`.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The caller sent something invalid. `code` is stable, `message` is safe to show.
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// The caller's tier is below what the operation needs.
    #[error("this feature requires {required} tier or higher")]
    UpgradeRequired { current: Tier, required: Tier },
    /// The addressed object does not exist (or belongs to someone else).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The request conflicts with stored state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The caller is known but may not do this (an operator's action by someone who is not
    /// one). `code` is stable, `message` is safe to show.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Nothing can serve the request right now (no user key and no system default, say).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Too many requests; try again after the given number of seconds.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// An execution backend could not do what was asked (stable code in the error).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// No valid credential was presented.
    #[error("invalid or missing credentials")]
    Unauthenticated,
    /// A write authenticated by a browser's cookie came from an origin that is not trusted
    /// (see [`crate::origin::write_origin_allowed`]): possibly another site's page.
    #[error("this origin may not change anything with a session cookie")]
    OriginRefused,
    /// A user-supplied outbound address is forbidden by the target policy.
    #[error(transparent)]
    TargetForbidden(#[from] crate::policy::TargetError),
    /// A stored secret could not be decrypted or encrypted.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An unexpected failure inside an adapter (logged; answered with a generic 500).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CoreError {
    pub(crate) fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            code,
            message: message.into(),
        }
    }
}
