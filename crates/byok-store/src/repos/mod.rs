//! The repository ports, one file per aggregate, each implemented once for both backends with
//! [`with_conn!`].

mod keys;
mod legacy;
mod servers;
mod sessions;
mod settings;
mod stats;
mod tokens;
mod usage;
mod users;

use chrono::{DateTime, Utc};

/// Runs `$body` with `$conn` bound to a pooled connection and `$s` to that backend's schema.
/// The body is compiled once per backend. On PostgreSQL the whole of it (pool wait, the
/// connection's check, the body) is bounded by `$bound` (default: the query bound), past which
/// it fails with `Unavailable`: a database that hangs costs at most that, not minutes of TCP
/// retransmissions. (SQLite has its `busy_timeout` and no network.)
macro_rules! with_conn {
    ($db:expr, |$conn:ident, $s:ident| $body:block) => {
        crate::repos::with_conn!($db, $db.bounds.query, |$conn, $s| $body)
    };
    ($db:expr, $bound:expr, |$conn:ident, $s:ident| $body:block) => {{
        match &$db.pool {
            crate::pool::DbPool::Pg(pool) => {
                crate::options::bounded($bound, async {
                    let mut guard = pool.get().await.map_err(crate::error::pool_err)?;
                    let $conn: &mut diesel_async::AsyncPgConnection = &mut guard;
                    #[allow(unused_imports)] // a body may not name the schema
                    use crate::schema::pg as $s;
                    Ok::<_, byok_core::StoreError>($body)
                })
                .await?
            }
            crate::pool::DbPool::Sqlite(pool) => {
                let mut held = crate::pool::SqliteHeld::get(pool).await?;
                let $conn: &mut crate::sqlite::SqliteConn = held.conn()?;
                #[allow(unused_imports)]
                use crate::schema::sqlite as $s;
                let out = $body;
                held.finish();
                out
            }
        }
    }};
}

pub(crate) use with_conn;

/// Now, at the precision both databases store (microseconds), so returned records equal
/// what a later read gives back.
fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}
