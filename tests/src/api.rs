//! Fixtures of the end-to-end API tests (`tests/integration/api/`): a database and data
//! directory per test, providers pointed at a stand-in, adding a key, and what the database
//! stores.

use serde_json::json;

use crate::db::{Kind, TestDb};
use crate::server::{Env, Resp, TestServer};

/// A test's database and the server's data directory (both removed when dropped).
pub struct Setup {
    pub db: TestDb,
    pub data: tempfile::TempDir,
}

/// A fresh database of `kind` and a data directory, with the server's environment for them.
pub async fn setup(kind: Kind) -> (Setup, Env) {
    let db = TestDb::new(kind).await;
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url);
    (Setup { db, data }, env)
}

/// Every provider's base URL pointed at `base` (a stand-in).
pub fn point_providers_at(env: Env, base: &str) -> Env {
    [
        "OPENAI",
        "ANTHROPIC",
        "OPENROUTER",
        "PERPLEXITY",
        "GROQ",
        "TOGETHER",
        "COHERE",
        "HUGGINGFACE",
        "OLLAMA",
        "OLLAMA_CLOUD",
    ]
    .iter()
    .fold(env, |env, id| {
        env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), base)
    })
}

/// `POST /api/v1/byok/keys/add` with the label `test`.
pub async fn add(s: &TestServer, token: &str, provider: &str, key: &str) -> Resp {
    s.post(
        "/api/v1/byok/keys/add",
        token,
        json!({"provider": provider, "key": key, "label": "test"}),
    )
    .await
}

/// SQLite: every byte of the database files. PostgreSQL: every keys row as JSON text.
pub async fn stored_text(setup: &Setup) -> String {
    match setup.db.kind {
        Kind::Sqlite => {
            let path = setup.db.sqlite_path().unwrap();
            let mut all = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let p = format!("{}{suffix}", path.display());
                all.extend(std::fs::read(&p).unwrap_or_default());
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        Kind::Postgres => stored_rows(setup).await.join("\n"),
    }
}

/// Every keys row, as text (one entry per row).
pub async fn stored_rows(setup: &Setup) -> Vec<String> {
    use diesel::QueryableByName;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    match setup.db.kind {
        Kind::Sqlite => {
            let path = setup.db.sqlite_path().unwrap();
            let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                diesel::SqliteConnection,
            >::establish(path.to_str().unwrap())
            .await
            .unwrap();
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT id || ' ' || user_id || ' ' || provider || ' ' || api_key_encrypted \
                 || ' ' || key_preview || ' ' || metadata AS t FROM user_provider_keys",
            )
            .load(&mut c)
            .await
            .unwrap();
            rows.into_iter().map(|r| r.t).collect()
        }
        Kind::Postgres => {
            let mut c = diesel_async::AsyncPgConnection::establish(&setup.db.url)
                .await
                .unwrap();
            let rows: Vec<Row> =
                diesel::sql_query("SELECT row_to_json(k)::text AS t FROM user_provider_keys k")
                    .load(&mut c)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.t).collect()
        }
    }
}
