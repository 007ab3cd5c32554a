//! Cross-replica cache invalidation over PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! [`Database`] implements [`ChangeNotifier`]: on PostgreSQL it sends `pg_notify` on
//! [`CHANNEL`]; on SQLite (one process) it does nothing. [`listen_invalidations`] holds one
//! dedicated connection that listens on the channel and hands every event to a callback; when
//! the connection is lost it reconnects (1 s to 30 s back-off) and reports
//! [`Invalidation::Everything`], since events may have been missed meanwhile.

use std::time::Duration;

use async_trait::async_trait;
use byok_core::ports::{ChangeNotifier, Invalidation};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;

use crate::database::Database;
use crate::pg_tls::{PgConnector, error_chain};
use crate::pool::DbPool;

/// The notification channel.
pub const CHANNEL: &str = "byok_invalidate";

/// How often an idle listening connection is checked (a lost connection is noticed within
/// this, and the caches are then cleared).
const PING_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for that check.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[async_trait]
impl ChangeNotifier for Database {
    async fn publish(&self, change: Invalidation) {
        let DbPool::Pg(pool) = &self.pool else {
            return;
        };
        let payload = change.encode();
        let sent = crate::options::bounded(self.bounds.query, async {
            let mut conn = pool.get().await.map_err(crate::error::pool_err)?;
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(CHANNEL)
                .bind::<Text, _>(&payload)
                .execute(&mut conn)
                .await
                .map_err(crate::error::db_err)
        })
        .await
        .map_err(|e| crate::pg_tls::error_chain(&e));
        if let Err(e) = sent {
            tracing::warn!(
                error = %e,
                "could not notify other replicas of a change; they see it when their caches expire"
            );
        }
    }
}

/// Listens for invalidations until the process ends (PostgreSQL only; returns at once for
/// any other `url`). Every event, and `Everything` after each (re)connection, goes to `apply`.
/// The connection honours the URL's `sslmode` and `sslrootcert`, like the pool's.
pub async fn listen_invalidations(url: String, apply: impl Fn(Invalidation) + Send + 'static) {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return;
    }
    let connector = match PgConnector::parse(&url) {
        Ok(c) => c,
        Err(e) => {
            // `Database::connect` refuses such a URL first; this is only a safety net.
            tracing::error!(error = %error_chain(&e), "cannot listen for cache invalidations");
            return;
        }
    };
    drop(url);
    let mut backoff = Duration::from_secs(1);
    loop {
        match connector.connect().await {
            Ok(mut conn) => match conn.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                Ok(()) => {
                    tracing::info!("listening for cache invalidations from other replicas");
                    backoff = Duration::from_secs(1);
                    apply(Invalidation::Everything);
                    follow(&mut conn, &apply).await;
                    tracing::warn!(
                        "lost the invalidation feed; reconnecting (caches are cleared when it is back)"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN failed"),
            },
            Err(e) => tracing::warn!(
                error = %e,
                retry_secs = backoff.as_secs(),
                "cannot connect for cache invalidations"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Applies notifications until the connection fails.
async fn follow(conn: &mut AsyncPgConnection, apply: &impl Fn(Invalidation)) {
    loop {
        let next = {
            let mut stream = std::pin::pin!(conn.notifications_stream());
            tokio::time::timeout(PING_EVERY, stream.next()).await
        };
        match next {
            Ok(Some(Ok(n))) => match Invalidation::decode(&n.payload) {
                Some(inv) => apply(inv),
                None => tracing::debug!("ignored an unknown invalidation"),
            },
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "invalidation feed error");
                return;
            }
            Ok(None) => return,
            Err(_) => {
                // A half-open connection (NAT, failover) would otherwise hang here for the
                // kernel's retransmission timeout.
                let ping = tokio::time::timeout(PING_TIMEOUT, conn.batch_execute("SELECT 1")).await;
                if !matches!(ping, Ok(Ok(()))) {
                    return;
                }
            }
        }
    }
}
