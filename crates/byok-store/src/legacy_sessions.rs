//! The legacy front end's sessions, read from the legacy backend's Redis
//! (`BYOK_LEGACY_SESSION_REDIS_URL`).
//!
//! One `GET session:{token}` per look-up, nothing else: no write, no `EXPIRE`, no `KEYS` or
//! `SCAN` (the store works with a Redis user limited to `+get` on `session:*`). Each read waits
//! at most [`READ_TIMEOUT`]; after a failure the store is left alone for
//! [`PAUSE_AFTER_FAILURE`] (look-ups fail at once meanwhile), so a Redis that stopped answering
//! costs one timeout per pause, not one per request. Neither the token nor the session is ever
//! logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::CoreError;
use byok_core::ports::{LegacySession, LegacySessions};
use byok_core::secrecy::{ExposeSecret, SecretString};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Longest wait for one read (the request waits for it).
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, look-ups fail at once for this long before Redis is tried again.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The legacy backend's key prefix (`RedisSessionManager(key_prefix="session:")`).
const KEY_PREFIX: &str = "session:";

/// [`LegacySessions`] on Redis.
pub struct RedisLegacySessions {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    paused_until: Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisLegacySessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLegacySessions")
            .finish_non_exhaustive()
    }
}

fn unavailable() -> CoreError {
    CoreError::Unavailable {
        code: "session_store_unavailable",
        message: "the session store cannot be reached; try again shortly".into(),
    }
}

impl RedisLegacySessions {
    /// Parses the URL (`redis://` or `rediss://`, possibly with a user and password); connects
    /// on first use.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| {
            // The URL may hold a password: only the kind of problem is reported.
            format!(
                "BYOK_LEGACY_SESSION_REDIS_URL is not a valid Redis URL ({:?})",
                e.kind()
            )
        })?;
        Ok(Self {
            client,
            conn: tokio::sync::OnceCell::new(),
            paused_until: Mutex::new(None),
            last_warning: Mutex::new(None),
        })
    }

    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .map(|p| p.is_some_and(|until| Instant::now() < until))
            .unwrap_or(false)
    }

    /// Warns (at most once a minute), naming the problem's kind only; `pause`: look-ups fail
    /// at once for [`PAUSE_AFTER_FAILURE`] (Redis unreachable or too slow, as opposed to a
    /// refusal of one command).
    fn failed(&self, what: &str, pause: bool) -> CoreError {
        if pause && let Ok(mut p) = self.paused_until.lock() {
            *p = Some(Instant::now() + PAUSE_AFTER_FAILURE);
        }
        if let Ok(mut last) = self.last_warning.lock()
            && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            *last = Some(Instant::now());
            tracing::warn!(
                problem = what,
                "the legacy session store (BYOK_LEGACY_SESSION_REDIS_URL) does not answer: \
                 requests with a session cookie get 503 until it does"
            );
        }
        unavailable()
    }

    async fn connection(&self) -> Result<ConnectionManager, CoreError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(READ_TIMEOUT);
        let made = tokio::time::timeout(
            CONNECT_TIMEOUT + READ_TIMEOUT,
            self.conn.get_or_try_init(|| {
                ConnectionManager::new_with_config(self.client.clone(), config)
            }),
        )
        .await;
        match made {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(self.failed(&format!("cannot connect ({:?})", e.kind()), true)),
            Err(_) => Err(self.failed("connect timeout", true)),
        }
    }
}

#[async_trait]
impl LegacySessions for RedisLegacySessions {
    async fn session(&self, token: &SecretString) -> Result<Option<LegacySession>, CoreError> {
        if self.paused() {
            return Err(unavailable());
        }
        let mut conn = self.connection().await?;
        let key = format!("{KEY_PREFIX}{}", token.expose_secret());
        let read = tokio::time::timeout(
            READ_TIMEOUT,
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        match read {
            Ok(Ok(doc)) => Ok(doc.and_then(|d| LegacySession::from_json(&d))),
            // Something else than a string under that key: not a session.
            Ok(Err(e)) if e.code() == Some("WRONGTYPE") => Ok(None),
            // The error's kind and code only: a server message could quote the key.
            Ok(Err(e)) => {
                let lost = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout();
                let what = format!("{:?} {}", e.kind(), e.code().unwrap_or_default());
                Err(self.failed(what.trim(), lost))
            }
            Err(_) => Err(self.failed("read timeout", true)),
        }
    }
}
