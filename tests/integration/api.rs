//! End-to-end: the real binary on port 0, real databases, a provider stand-in, and canary
//! secrets searched for in every log line and response.

use std::time::{Duration, Instant};

use byok_tests::canary;
use byok_tests::db::{Kind, TestDb};
use byok_tests::server::{Env, TestServer, token_from};
use byok_tests::standin::StandIn;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Setup {
    db: TestDb,
    data: tempfile::TempDir,
}

async fn setup(kind: Kind) -> (Setup, Env) {
    let db = TestDb::new(kind).await;
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &db.url);
    (Setup { db, data }, env)
}

fn point_providers_at(env: Env, base: &str) -> Env {
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
    ]
    .iter()
    .fold(env, |env, id| {
        env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), base)
    })
}

async fn add(s: &TestServer, token: &str, provider: &str, key: &str) -> byok_tests::server::Resp {
    s.post(
        "/api/v1/byok/keys/add",
        token,
        json!({"provider": provider, "key": key, "label": "test"}),
    )
    .await
}

/// SQLite: every byte of the database files. PostgreSQL: every keys row as JSON text.
async fn stored_text(setup: &Setup) -> String {
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
async fn stored_rows(setup: &Setup) -> Vec<String> {
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
            use diesel::QueryableByName;
            use diesel_async::{AsyncConnection, RunQueryDsl};
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Text)]
                t: String,
            }
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

async fn walkthrough(kind: Kind) {
    let standin = StandIn::start(&[canary::OPENAI]).await;
    let (setup, env) = setup(kind).await;
    let env = point_providers_at(env, &standin.base);
    let s = TestServer::start(env.clone());
    let admin = s.admin().to_string();
    assert_eq!(
        s.get("/api/v1/byok/stats", &admin).await.json["user_tier"],
        "enterprise"
    );

    let token = env.create_user("dev@example.com", "starter");
    let r = add(&s, &token, "openai", canary::OPENAI).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"message": "OpenAI key saved", "provider": "openai", "provider_name": "OpenAI"})
    );

    let keys = s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(keys.status, StatusCode::OK);
    let k = &keys.json[0];
    assert_eq!(k["provider"], "openai");
    assert_eq!(k["provider_name"], "OpenAI");
    assert_eq!(k["key_preview"], "sk-p...fXYZ");
    assert_eq!(k["label"], "test");
    assert!(k["added_date"].is_string());
    assert!(k["last_tested"].is_null());

    let providers = s.get("/api/v1/byok/providers", &token).await;
    let list = providers.json.as_array().unwrap();
    assert_eq!(list.len(), 10);
    let openai = list.iter().find(|p| p["id"] == "openai").unwrap();
    assert_eq!(openai["configured"], true);
    assert_eq!(openai["key_format"], "sk-...");

    let tested = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.json["status"], "valid");
    assert_eq!(tested.json["details"]["http_status"], 200);
    let seen = standin.requests();
    assert_eq!(seen.last().unwrap().path, "/models");
    assert_eq!(seen.last().unwrap().method, "GET");
    assert_eq!(
        seen.last().unwrap().headers["authorization"],
        format!("Bearer {}", canary::OPENAI)
    );
    let keys = s.get("/api/v1/byok/keys", &token).await;
    assert_eq!(keys.json[0]["test_status"], "valid");
    assert!(keys.json[0]["last_tested"].is_string());
    let mut stats = s.get("/api/v1/byok/stats", &token).await.json;
    let usage = stats.as_object_mut().unwrap().remove("usage").unwrap();
    assert_eq!(
        stats,
        json!({"total_providers": 10, "configured_providers": 1, "tested_providers": 1,
               "valid_providers": 1, "user_tier": "starter"}),
        "the legacy fields, unchanged"
    );
    assert_eq!(usage["requests"], 0);
    assert_eq!(usage["by_provider"], json!([]));

    let stored = stored_text(&setup).await;
    assert!(stored.contains("sk-p...fXYZ"), "the preview is stored");
    canary::assert_absent("the database", &stored);
    let rows = stored_rows(&setup).await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].contains("gAAAAA"),
        "the key is stored as a Fernet token"
    );

    let del = s.delete("/api/v1/byok/keys/openai", &token).await;
    assert_eq!(del.status, StatusCode::OK);
    assert_eq!(
        del.json,
        json!({"message": "OpenAI key deleted", "provider": "openai"})
    );
    assert_eq!(s.get("/api/v1/byok/keys", &token).await.json, json!([]));
    let again = s.delete("/api/v1/byok/keys/openai", &token).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.json["code"], "key_not_found");
    let gone = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert!(
        stored_rows(&setup).await.is_empty(),
        "delete removed the row"
    );
    drop(setup.data);
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_sqlite() {
    walkthrough(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_postgres() {
    walkthrough(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_are_enforced_and_users_isolated() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = env.set("BYOK_UPGRADE_URL", "https://example.com/upgrade");
    let s = TestServer::start(env.clone());
    let free = env.create_user("free@example.com", "free");
    let trial = env.create_user("trial@example.com", "trial");
    let a = env.create_user("a@example.com", "starter");
    let b = env.create_user("b@example.com", "professional");
    for who in [&free, &trial] {
        let r = add(&s, who, "openai", canary::OPENAI).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let tier = s.get("/api/v1/byok/stats", who).await.json["user_tier"].clone();
        assert_eq!(
            r.json,
            json!({
                "detail": "BYOK requires starter tier or higher",
                "code": "upgrade_required",
                "current_tier": tier,
                "required_tier": "starter",
                "upgrade_url": "https://example.com/upgrade"
            })
        );
        let t = s
            .call(
                Method::POST,
                "/api/v1/byok/keys/test/openai",
                Some(who),
                None,
            )
            .await;
        assert_eq!(t.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(s.get("/api/v1/byok/keys", &free).await.json, json!([]));

    assert_eq!(
        add(&s, &a, "groq", canary::GROQ).await.status,
        StatusCode::OK
    );
    assert_eq!(s.get("/api/v1/byok/keys", &b).await.json, json!([]));
    let stolen = s.delete("/api/v1/byok/keys/groq", &b).await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND);
    let probe = s
        .call(Method::POST, "/api/v1/byok/keys/test/groq", Some(&b), None)
        .await;
    assert_eq!(probe.status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.get("/api/v1/byok/keys", &a)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A downgrade takes effect (cache TTL is 5 s by default; tier changes evict nothing
    // across processes, so wait it out) and the user can still delete their key.
    let out = env.cli(&[
        "user",
        "set-tier",
        "--email",
        "a@example.com",
        "--tier",
        "free",
    ]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = add(&s, &a, "groq", canary::GROQ).await;
        if r.status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(Instant::now() < deadline, "downgrade never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.delete("/api/v1/byok/keys/groq", &a).await.status,
        StatusCode::OK
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_4xx_and_keeps_stored_data() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("v@example.com", "enterprise");
    assert_eq!(
        add(&s, &t, "openai", canary::OPENAI).await.status,
        StatusCode::OK
    );
    let before = s.get("/api/v1/byok/keys", &t).await.json;

    let long_label = "x".repeat(101);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"provider": "openai", "key": canary::ANTHROPIC}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_format",
        ),
        (
            json!({"provider": "openai", "key": "sk-short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_format",
        ),
        (
            json!({"provider": "openai", "key": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "key_required",
        ),
        (
            json!({"provider": "anthropic", "key": canary::OPENAI}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_format",
        ),
        (
            json!({"provider": "openai", "key": canary::OPENAI, "label": long_label}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_label",
        ),
        (
            json!({"provider": "custom", "key": canary::CUSTOM}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "endpoint_required",
        ),
        (
            json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": "ftp://x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_endpoint",
        ),
        (
            json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": "https://u:p@x.example"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_endpoint",
        ),
        (
            json!({"provider": "nope", "key": canary::OPENAI}),
            StatusCode::NOT_FOUND,
            "unknown_provider",
        ),
        (
            json!({"provider": canary::OPENAI, "key": canary::OPENAI}),
            StatusCode::NOT_FOUND,
            "unknown_provider",
        ),
        (
            json!({"provider": "openai"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"provider": "openai", "key": [canary::OPENAI]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"provider": 5, "key": canary::OPENAI}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!([1, 2]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = s.post("/api/v1/byok/keys/add", &t, body.clone()).await;
        assert_eq!(r.status, status, "{body} -> {}", r.text);
        assert_eq!(r.json["code"], code, "{body} -> {}", r.text);
        assert!(r.json["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let raw = |body: &'static str, ct: &'static str| {
        s.http
            .post(format!("{}/api/v1/byok/keys/add", s.base))
            .bearer_auth(&t)
            .header("content-type", ct)
            .body(body)
    };
    let r = s
        .send(raw("{\"provider\": \"openai\",", "application/json"))
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let r = s
        .send(raw("provider=openai", "application/x-www-form-urlencoded"))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json["code"], "unsupported_media_type");
    let huge = format!(r#"{{"provider":"openai","key":"{}"}}"#, "a".repeat(100_000));
    let r = s
        .send(
            s.http
                .post(format!("{}/api/v1/byok/keys/add", s.base))
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json["code"], "payload_too_large");

    let r = s.call(Method::GET, "/api/v1/byok/keys", None, None).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = s.get("/api/v1/byok/keys", "byok_not-a-real-token").await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let r = s.get("/api/v1/byok/keys", canary::ANTHROPIC).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no sk-ant- shortcut");
    let r = s.get("/api/v1/nowhere", &t).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let r = s
        .delete(&format!("/api/v1/byok/keys/{}", canary::OPENAI), &t)
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "a key in the path is not logged (checked by finish)"
    );
    let r = s.delete("/api/v1/byok/keys/%ZZ", &t).await;
    assert!(r.status.is_client_error());

    assert_eq!(
        s.get("/api/v1/byok/keys", &t).await.json,
        before,
        "stored data untouched"
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_probes_tell_the_truth() {
    let standin = StandIn::start(&[
        canary::OPENAI,
        canary::ANTHROPIC,
        canary::OPENROUTER,
        canary::PERPLEXITY,
    ])
    .await;
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = point_providers_at(env, &standin.base);
    let s = TestServer::start(env.clone());
    let t = env.create_user("p@example.com", "professional");

    let probe = |provider: &'static str| {
        let s = &s;
        let t = t.clone();
        async move {
            s.call(
                Method::POST,
                &format!("/api/v1/byok/keys/test/{provider}"),
                Some(&t),
                None,
            )
            .await
        }
    };

    add(&s, &t, "anthropic", canary::ANTHROPIC).await;
    let r = probe("anthropic").await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    let last = standin.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(last.headers["x-api-key"], canary::ANTHROPIC);
    assert_eq!(last.headers["anthropic-version"], "2023-06-01");
    assert!(!last.headers.contains_key("authorization"));

    add(&s, &t, "openrouter", canary::OPENROUTER).await;
    assert_eq!(probe("openrouter").await.json["status"], "valid");
    assert_eq!(
        standin.requests().pop().unwrap().path,
        "/key",
        "OpenRouter's /models is public"
    );

    add(&s, &t, "perplexity", canary::PERPLEXITY).await;
    assert_eq!(probe("perplexity").await.json["status"], "valid");
    let last = standin.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/chat/completions")
    );

    add(&s, &t, "groq", canary::GROQ).await;
    let r = probe("groq").await;
    assert_eq!(r.json["status"], "invalid");
    assert_eq!(r.json["details"]["http_status"], 401);

    for (key, status) in [
        ("sk-proj-ratelimited-0123456789abcdef", 429),
        ("sk-proj-broken-0123456789abcdefghij", 500),
    ] {
        add(&s, &t, "openai", key).await;
        let r = probe("openai").await;
        assert_eq!(r.json["status"], "error", "{status}: {}", r.text);
        assert_eq!(r.json["details"]["http_status"], status);
        if status == 429 {
            assert_eq!(r.json["details"]["retry_after"], "7");
        }
    }
    add(&s, &t, "openai", "sk-proj-slow-0123456789abcdefghijkl").await;
    let r = probe("openai").await;
    assert_eq!(r.json["status"], "error");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );

    let keys = s.get("/api/v1/byok/keys", &t).await.json;
    let status_of = |p: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["provider"] == p)
            .unwrap()["test_status"]
            .clone()
    };
    assert_eq!(status_of("anthropic"), "valid");
    assert_eq!(status_of("groq"), "invalid");
    assert_eq!(status_of("openai"), "error");
    let stats = s.get("/api/v1/byok/stats", &t).await.json;
    assert_eq!(
        (
            stats["configured_providers"].as_u64(),
            stats["valid_providers"].as_u64()
        ),
        (Some(5), Some(3))
    );
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_endpoints_pass_the_target_policy() {
    let standin = StandIn::start(&[canary::CUSTOM]).await;
    let (setup_a, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("c@example.com", "starter");
    for endpoint in [
        standin.base.clone(),
        "http://169.254.169.254/latest".into(),
        "http://[::1]:9".into(),
        "http://10.0.0.1/v1".into(),
    ] {
        let r = s
            .post(
                "/api/v1/byok/keys/add",
                &t,
                json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": endpoint}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = s
            .call(
                Method::POST,
                "/api/v1/byok/keys/test/custom",
                Some(&t),
                None,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{endpoint}: {}",
            r.text
        );
        assert_eq!(r.json["code"], "forbidden_target");
    }
    assert!(
        standin.requests().is_empty(),
        "nothing reached the forbidden target"
    );
    s.finish();

    // The operator allow-lists loopback: the same endpoint now works.
    let env = env.set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32");
    let s = TestServer::start(env.clone());
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &t,
            json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": format!("{}/v1/", standin.base)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = s.get("/api/v1/byok/keys", &t).await.json;
    assert_eq!(keys[0]["endpoint"], format!("{}/v1", standin.base));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/custom",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    assert_eq!(standin.requests().pop().unwrap().path, "/v1/models");
    drop(setup_a);
    s.finish();
}

/// Security review, low 8: validation errors echoed submitted values (`invalid type: string
/// "sk-…"`). They name the field and the expected type, never the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_name_the_field_never_the_value() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("val@example.com", "enterprise");
    let key = canary::OPENAI;
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "here", "server_type": "ssh", "connection_config": {
                "host": "h.example", "username": "u", "auth_method": "password", "password": "p"}}),
        )
        .await;
    let server = r.json["id"].as_str().unwrap().to_string();
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (
            Method::POST,
            "/api/v1/byok/keys/add".into(),
            json!({"provider": key, "key": "x"}),
            "unknown provider",
        ),
        (
            Method::POST,
            "/api/v1/byok/keys/add".into(),
            json!({"provider": "openai", "key": [key]}),
            "key: expected a string",
        ),
        (
            Method::PUT,
            "/api/v1/byok/settings".into(),
            json!({"fallback_policy": "user_only", key: 1}),
            "unknown field",
        ),
        (
            Method::PUT,
            "/api/v1/byok/settings".into(),
            json!({"fallback_policy": key}),
            "fallback_policy must be",
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            json!({"name": "x", "expires_in_days": key}),
            "expires_in_days: expected",
        ),
        (
            Method::POST,
            "/api/v1/execution-servers".into(),
            json!({"name": "x", "server_type": "ssh", "connection_config": {"host": "h", "username": "u",
                "auth_method": "password", "password": "p", "port": key}}),
            "connection_config.port: expected",
        ),
        (
            Method::PUT,
            format!("/api/v1/execution-servers/{server}"),
            json!({"connection_config": {"host": "h", "username": "u", "auth_method": "password",
                "password": "p", "extra": key}}),
            "connection_config: unknown field `extra`",
        ),
        (
            Method::POST,
            format!("/api/v1/execution-servers/{server}/exec"),
            json!({"command": "true", "timeout_secs": key}),
            "timeout_secs: expected",
        ),
        (
            Method::POST,
            "/v1/messages".into(),
            json!({"model": "claude-sonnet-4-5", "max_tokens": key, "messages": []}),
            "max_tokens",
        ),
        (
            Method::POST,
            "/v1/chat/completions".into(),
            json!({"model": key, "messages": "nope"}),
            "messages",
        ),
    ];
    for (method, path, body, want) in cases {
        let r = s.call(method, &path, Some(&t), Some(body.clone())).await;
        assert!(r.status.is_client_error(), "{path} {body}: {}", r.text);
        canary::assert_absent(&path, &r.text);
        assert!(
            r.text.contains(want),
            "{path}: wanted {want:?} in {}",
            r.text
        );
    }
    // Not JSON at all: a 400 that says where, not what.
    let r = s
        .send(
            s.http
                .post(format!("{}/api/v1/byok/keys/add", s.base))
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body(format!("{{\"provider\": \"openai\", \"key\": \"{key}")),
        )
        .await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    canary::assert_absent("syntax error", &r.text);
    // A compressed body is refused before anything is decoded (a few kilobytes of zstd can
    // expand to gigabytes), with or without a valid token.
    for token in [t.as_str(), "byok_not-a-real-token-000000000000000000000000"] {
        let r = s
            .send(
                s.http
                    .post(format!("{}/api/v1/byok/keys/add", s.base))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .header("content-encoding", "zstd")
                    .body(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]),
            )
            .await;
        assert!(
            r.status == StatusCode::UNSUPPORTED_MEDIA_TYPE || r.status == StatusCode::UNAUTHORIZED,
            "{}",
            r.text
        );
        if token == t {
            assert_eq!(r.json["code"], "unsupported_content_encoding");
        }
    }
    let logs = s.finish();
    canary::assert_absent("logs", &logs);
}

/// Security review, low 7 (and medium 3): a token created with `expires_in_days: 1` minted
/// one with no expiry. Tokens now get a default lifetime, shown at creation, and a token never
/// mints one that outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_outlive_the_token_that_minted_them() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let out = env.cli(&[
        "user",
        "create",
        "--email",
        "life@example.com",
        "--tier",
        "free",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("it expires "),
        "the lifetime is shown: {stdout}"
    );
    let t = byok_tests::server::token_from(&stdout);
    let days = |r: &byok_tests::server::Resp| {
        let at =
            chrono::DateTime::parse_from_rfc3339(r.json["expires_at"].as_str().unwrap()).unwrap();
        (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0
    };
    // Without a lifetime: the default (90 days).
    let r = s
        .post("/api/v1/tokens", &t, json!({"name": "default"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!((89.0..=90.0).contains(&days(&r)), "{}", r.text);
    // A one-day token...
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "short", "expires_in_days": 1}),
        )
        .await;
    let short = r.json["token"].as_str().unwrap().to_string();
    let short_expiry = r.json["expires_at"].as_str().unwrap().to_string();
    // ...mints nothing that outlives it, asked or not.
    for body in [
        json!({"name": "child"}),
        json!({"name": "child", "expires_in_days": 3650}),
    ] {
        let r = s.post("/api/v1/tokens", &short, body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(
            r.json["expires_at"].as_str().unwrap() <= short_expiry.as_str(),
            "{body}: {} outlives {short_expiry}",
            r.text
        );
    }
    // A shorter lifetime than the parent's stays shorter.
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "week", "expires_in_days": 7}),
        )
        .await;
    let week = r.json["token"].as_str().unwrap().to_string();
    let r = s
        .post(
            "/api/v1/tokens",
            &week,
            json!({"name": "day", "expires_in_days": 1}),
        )
        .await;
    assert!(days(&r) <= 1.0, "{}", r.text);
    s.finish();

    // `0` turns the default off: tokens without a lifetime do not expire.
    let env = env.clone().set("BYOK_TOKEN_LIFETIME_DAYS", "0");
    let s = TestServer::start(env.clone());
    let t = env.create_user("forever@example.com", "free");
    let r = s
        .post("/api/v1/tokens", &t, json!({"name": "forever"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.json["expires_at"].is_null(), "{}", r.text);
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_api_create_list_revoke() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("tok@example.com", "free");
    let r = s
        .post(
            "/api/v1/tokens",
            &t,
            json!({"name": "claude code", "expires_in_days": 30}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let new_token = r.json["token"].as_str().unwrap().to_string();
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(new_token.starts_with(r.json["prefix"].as_str().unwrap()));
    assert!(r.json["expires_at"].is_string());

    let list = s.get("/api/v1/tokens", &new_token).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        !list.text.contains(&new_token),
        "listing never shows a token"
    );
    assert_eq!(list.json.as_array().unwrap().len(), 2);

    // x-api-key works like a bearer token.
    let r = s
        .send(
            s.http
                .get(format!("{}/api/v1/byok/stats", s.base))
                .header("x-api-key", &new_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    for bad in [
        json!({"name": ""}),
        json!({"name": "x", "expires_in_days": 0}),
        json!({"name": "x", "expires_in_days": 5000}),
    ] {
        let r = s.post("/api/v1/tokens", &t, bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = s.delete("/api/v1/tokens/not-a-uuid", &t).await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("token_not_found"))
    );
    let other = env.create_user("other@example.com", "free");
    assert_eq!(
        s.delete(&format!("/api/v1/tokens/{id}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let r = s.delete(&format!("/api/v1/tokens/{id}"), &t).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s.get("/api/v1/byok/stats", &new_token).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "revocation is immediate on this instance"
    );
    let listed = s.get("/api/v1/tokens", &t).await.json;
    let revoked = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string());
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_processes_within_the_cache_ttl() {
    let (_setup, env) = setup(Kind::Postgres).await;
    let env = env.set("BYOK_AUTH_CACHE_TTL_SECS", "1");
    let a = TestServer::start(env.clone());
    let b = TestServer::start(env.clone());
    let t = env.create_user("r@example.com", "free");
    let created = a.post("/api/v1/tokens", &t, json!({"name": "x"})).await;
    let token = created.json["token"].as_str().unwrap().to_string();
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        b.get("/api/v1/byok/stats", &token).await.status,
        StatusCode::OK
    );
    a.delete(&format!("/api/v1/tokens/{id}"), &t).await;
    let revoked_at = Instant::now();
    loop {
        if b.get("/api/v1/byok/stats", &token).await.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "replica kept accepting a revoked token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.finish();
    b.finish();
}

async fn concurrent_adds(kind: Kind) {
    let (setup, env) = setup(kind).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("cc@example.com", "starter");
    let keys: Vec<String> = (0..24)
        .map(|i| format!("sk-proj-concurrent-{i:02}-0123456789abcdef"))
        .collect();
    let results =
        futures_util::future::join_all(keys.iter().map(|k| add(&s, &t, "openai", k))).await;
    for r in &results {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let listed = s.get("/api/v1/byok/keys", &t).await.json;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "one row per user and provider");
    let preview = listed[0]["key_preview"].as_str().unwrap();
    assert!(
        keys.iter()
            .any(|k| byok_core::KeyPreview::of(k).as_str() == preview)
    );
    assert_eq!(stored_rows(&setup).await.len(), 1);
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_sqlite() {
    concurrent_adds(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_postgres() {
    concurrent_adds(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_encryption_key_stops_startup_clearly() {
    let (_setup, env) = setup(Kind::Sqlite).await;
    for bad in ["not-a-fernet-key-CANARYopenai", "", ","] {
        let env = env.clone().set("ENCRYPTION_KEY", bad);
        let err = TestServer::try_start(env)
            .err()
            .expect("must refuse to start");
        if !bad.is_empty() {
            assert!(err.contains("invalid ENCRYPTION_KEY"), "{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        canary::assert_absent("the start-up error", &err);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_keys_fail_clearly_and_rotation_recovers() {
    let standin = StandIn::start(&[canary::OPENAI]).await;
    let (_setup, env) = setup(Kind::Sqlite).await;
    let env = point_providers_at(env, &standin.base);
    let make_key = || {
        let out = env.cli(&["generate-key"]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (old, new) = (make_key(), make_key());
    let with_key = |k: &str| env.clone().set("ENCRYPTION_KEY", k);

    let s = TestServer::start(with_key(&old));
    let t = with_key(&old).create_user("rot@example.com", "starter");
    assert_eq!(
        add(&s, &t, "openai", canary::OPENAI).await.status,
        StatusCode::OK
    );
    // An execution server's sealed password, written under `old` too.
    let r = s
        .post(
            "/api/v1/execution-servers",
            &t,
            json!({"name": "rot", "server_type": "ssh", "connection_config": {
                "host": "127.0.0.1", "port": 9, "username": "u", "auth_method": "password",
                "password": "rotation-ssh-password"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let server_test = format!(
        "/api/v1/execution-servers/{}/test",
        r.json["id"].as_str().unwrap()
    );
    s.finish();

    // A key that reads none of the stored keys is a wrong key: refuse to start.
    let err = TestServer::try_start(with_key(&new))
        .err()
        .expect("must refuse to start");
    assert!(
        err.contains("invalid ENCRYPTION_KEY") && err.contains("decrypts none"),
        "{err}"
    );
    assert!(!err.contains("panicked"));

    // During a rotation both keys are in the ring; a key added now is written under `new`.
    let both = format!("{new},{old}");
    let s = TestServer::start(with_key(&both));
    assert_eq!(
        add(&s, &t, "groq", canary::GROQ).await.status,
        StatusCode::OK
    );
    s.finish();

    // Dropping `old` too early: the service starts (some keys are readable), and a key written
    // under `old` fails clearly instead of silently.
    let s = TestServer::start(with_key(&new));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json["code"], "key_decryption_failed");
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap()
            .contains("ENCRYPTION_KEY")
    );
    let r = s
        .call(Method::POST, "/api/v1/byok/keys/test/groq", Some(&t), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "keys under the current key still work"
    );
    let r = s.call(Method::POST, &server_test, Some(&t), None).await;
    assert_eq!(r.json["code"], "key_decryption_failed", "{}", r.text);
    assert_eq!(
        s.get("/api/v1/byok/keys", &t).await.status,
        StatusCode::OK,
        "listing never decrypts"
    );
    let logs = s.finish();
    assert!(
        logs.contains("cannot be decrypted"),
        "the log names the problem"
    );

    let out = with_key(&new).cli(&["rotate-keys"]);
    assert!(!out.status.success(), "a row no key can read is a failure");
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed=1"));

    let out = with_key(&both).cli(&["rotate-keys", "--batch-size", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("provider keys: processed=2 rotated=1 already_current=1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("execution servers: processed=1 rotated=1 already_current=0"),
        "{stdout}"
    );

    let s = TestServer::start(with_key(&new));
    let r = s
        .call(
            Method::POST,
            "/api/v1/byok/keys/test/openai",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.json["status"], "valid", "{}", r.text);
    // The server's password reads under `new` alone: the test reaches the backend (which
    // refuses the loopback target) instead of failing to decrypt.
    let r = s.call(Method::POST, &server_test, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["details"]["code"], "forbidden_target", "{}", r.text);
    s.finish();
}

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
