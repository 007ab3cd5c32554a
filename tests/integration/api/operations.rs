//! Operating the service: embedded defaults and health, the CLI, a lost database.

use byok_tests::api::setup;
use byok_tests::db::Kind;
use byok_tests::server::{Env, TestServer, token_from};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_defaults_and_health() {
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), "unused").unset("DATABASE_URL");
    let s = TestServer::start(env.clone());
    for f in ["byok.db", "encryption.key"] {
        let meta = std::fs::metadata(data.path().join(f)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f} is private");
    }
    assert!(s.logs().contains("Production must set ENCRYPTION_KEY"));
    let h = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (h.status, h.json["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.json, json!({"status": "ready", "database": "ok"}));
    assert!(r.headers.contains_key("x-request-id"));
    let spec = s.call(Method::GET, "/openapi.json", None, None).await;
    assert!(spec.json["openapi"].as_str().unwrap().starts_with("3.1"));
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../openapi/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        spec.json, committed,
        "openapi/openapi.json is stale: run make openapi"
    );
    // A second start keeps the key file and does not bootstrap again.
    let admin = s.admin().to_string();
    s.finish();
    let s = TestServer::start(env);
    assert!(s.admin_token.is_none());
    assert_eq!(
        s.get("/api/v1/byok/stats", &admin).await.status,
        StatusCode::OK
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_users_and_tokens() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let first = env.create_user("cli@example.com", "starter");
    let dup = env.cli(&[
        "user",
        "create",
        "--email",
        "CLI@example.com",
        "--tier",
        "free",
    ]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = env.cli(&[
        "user",
        "create",
        "--email",
        "x@example.com",
        "--tier",
        "gold",
    ]);
    assert!(!bad.status.success());
    let out = env.cli(&[
        "token",
        "create",
        "--email",
        "cli@example.com",
        "--name",
        "ci",
        "--expires-in-days",
        "7",
    ]);
    assert!(out.status.success());
    let second = token_from(&String::from_utf8_lossy(&out.stdout));
    let list = env.cli(&["token", "list", "--email", "cli@example.com"]);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(text.contains(&first[..13]) && text.contains(&second[..13]));
    assert!(
        !text.contains(&first) && !text.contains(&second),
        "list shows prefixes only"
    );
    let id = text
        .lines()
        .find(|l| l.contains(&second[..13]))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let s = TestServer::start(env.clone());
    assert_eq!(
        s.get("/api/v1/byok/stats", &second).await.status,
        StatusCode::OK
    );
    let out = env.cli(&["token", "revoke", "--email", "cli@example.com", "--id", &id]);
    assert!(out.status.success());
    s.finish();
    let s = TestServer::start(env);
    assert_eq!(
        s.get("/api/v1/byok/stats", &second).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.get("/api/v1/byok/stats", &first).await.json["user_tier"],
        "starter"
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_503_not_500() {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let (setup, env) = setup(Kind::Postgres).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("down@example.com", "starter");
    assert_eq!(s.get("/api/v1/byok/keys", &t).await.status, StatusCode::OK);
    let name = setup.db.url.rsplit('/').next().unwrap().to_string();
    let admin = std::env::var("TEST_DATABASE_URL").unwrap();
    let mut c = diesel_async::AsyncPgConnection::establish(&admin)
        .await
        .unwrap();
    c.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    // Reported, not failed: a shared dependency must not take every replica out of service.
    let r = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({"status": "degraded", "database": "unreachable"})
    );
    // The token check is cached; the key listing needs the database.
    let r = s.get("/api/v1/byok/keys", &t).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["code"], "database_unavailable");
    let h = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        h.status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );
    s.finish();
}
