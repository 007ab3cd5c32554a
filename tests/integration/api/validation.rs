//! Bad input: clear 4xx answers that never echo the submitted values and leave stored data
//! alone.

use byok_tests::api::{add, setup};
use byok_tests::canary;
use byok_tests::db::Kind;
use byok_tests::server::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

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
