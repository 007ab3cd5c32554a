//! The real application (`app::build`) driven in process with `actix_web::test`: the handlers,
//! middleware, extractors and the one error decision, on an embedded SQLite database in a
//! temporary directory. No socket, no binary: these run in milliseconds, beside the end-to-end
//! suite (tests/integration) that drives the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::{StatusCode, header};
use actix_web::{test, web};
use byok_core::Tier;
use byok_server::config::Settings;
use byok_server::state::AppState;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use utoipa::OpenApi;

/// The rate limiter's windows are aligned to the clock minute: a test that counts requests
/// against a limit starts early in a minute, so that no boundary resets the count halfway.
async fn early_in_a_minute() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if secs > 40 {
        actix_web::rt::time::sleep(std::time::Duration::from_secs(61 - secs)).await;
    }
}

/// A fresh service state: its own data directory, database and generated encryption key.
async fn state() -> (AppState, tempfile::TempDir) {
    state_with(&[]).await
}

/// [`state`] with more settings.
async fn state_with(vars: &[(&str, &str)]) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![(
        "BYOK_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    )];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::from_vars(all).expect("settings");
    let state = byok_server::commands::prepare(&settings)
        .await
        .expect("state");
    (state, dir)
}

/// A user of `tier` and a gateway token for them.
async fn user(state: &AppState, email: &str, tier: Tier) -> String {
    let user = state.tokens.create_user(email, tier).await.unwrap();
    let issued = state.tokens.issue(user.id, "test", None).await.unwrap();
    issued.token.expose_secret().to_string()
}

/// Sends `req` to the app: (status, headers, JSON body or null).
macro_rules! call {
    ($app:expr, $req:expr $(,)?) => {
        read(test::call_service(&$app, $req.to_request()).await).await
    };
}

async fn read<B: MessageBody>(resp: ServiceResponse<B>) -> (StatusCode, header::HeaderMap, Value) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = test::read_body(resp).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

fn bearer(token: &str) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {token}"))
}

#[actix_web::test]
async fn keys_flow_and_the_error_shapes() {
    let (state, _dir) = state().await;
    let starter = user(&state, "starter@example.com", Tier::Starter).await;
    let free = user(&state, "free@example.com", Tier::Free).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;

    // No credential: 401, `WWW-Authenticate`, the management API's body.
    let (status, headers, body) = call!(app, test::TestRequest::get().uri("/api/v1/byok/keys"));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    assert_eq!(body["code"], "unauthenticated");
    assert!(headers.contains_key("x-request-id"));

    // A free user cannot store a key: the tier refusal, exactly.
    let add = |token: &str, body: Value| {
        test::TestRequest::post()
            .uri("/api/v1/byok/keys/add")
            .insert_header(bearer(token))
            .set_json(body)
    };
    let key = "sk-proj-INPROCESS0123456789abcdefghijklmnop";
    let (status, _, body) = call!(app, add(&free, json!({"provider": "openai", "key": key})));
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"detail": "BYOK requires starter tier or higher", "code": "upgrade_required",
               "current_tier": "free", "required_tier": "starter", "upgrade_url": "/pricing"})
    );

    // Stored, listed masked, never echoed.
    let (status, _, body) = call!(
        app,
        add(
            &starter,
            json!({"provider": "openai", "key": key, "label": "mine"})
        )
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "openai");
    let list = test::TestRequest::get()
        .uri("/api/v1/byok/keys")
        .insert_header(bearer(&starter));
    let (status, _, body) = call!(app, list);
    assert_eq!(status, StatusCode::OK);
    assert!(!body.to_string().contains(key), "{body}");
    assert!(body.to_string().contains("openai"), "{body}");

    // A stored endpoint the target policy refuses: the gateway answers 422 forbidden_target,
    // the one decision for this error, in OpenAI's shape; nothing is sent.
    let (status, _, body) = call!(
        app,
        add(
            &starter,
            json!({"provider": "custom", "key": "k-123456789", "endpoint": "http://169.254.169.254/v1"}),
        ),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(bearer(&starter))
            .set_json(
                json!({"model": "custom/m", "messages": [{"role": "user", "content": "hi"}]})
            ),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_target");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Malformed and wrongly typed bodies: 400 and 422, never echoing the body.
    let bad_json = test::TestRequest::post()
        .uri("/api/v1/byok/keys/add")
        .insert_header(bearer(&starter))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(format!("{{\"key\": \"{key}\""));
    let (status, _, body) = call!(app, bad_json);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "invalid_json");
    assert!(!body.to_string().contains(key));
    let (status, _, body) = call!(app, add(&starter, json!({"provider": "openai", "key": 5})));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_request");

    // Deleted once; the second time it is not found.
    let delete = || {
        test::TestRequest::delete()
            .uri("/api/v1/byok/keys/openai")
            .insert_header(bearer(&starter))
    };
    assert_eq!(call!(app, delete()).0, StatusCode::OK);
    let (status, _, body) = call!(app, delete());
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "key_not_found");
}

#[actix_web::test]
async fn unknown_paths_and_the_gateway_shapes() {
    let (state, _dir) = state().await;
    let token = user(&state, "u@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;

    let (status, _, body) = call!(app, test::TestRequest::get().uri("/api/v1/nope"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"detail": "no such resource", "code": "not_found"})
    );

    // A non-UUID path id is a 404, not a parse error.
    let (status, _, body) = call!(
        app,
        test::TestRequest::delete()
            .uri("/api/v1/execution-servers/not-a-uuid")
            .insert_header(bearer(&token)),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // The gateway answers in the client's API shape.
    let (status, _, body) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/messages")
            .insert_header(("anthropic-version", "2023-06-01"))
            .set_json(json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []})),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let (status, _, body) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(bearer(&token))
            .set_json(json!({"model": "openai/gpt-4o"})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // A model name the router refuses (core's InvalidInput): 400 on the LLM APIs, as the
    // providers answer, not the management API's 422.
    let (status, _, body) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(bearer(&token))
            .set_json(json!({"model": "openai/gpt 4o", "messages": []})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // The router's message: the refusal came from core, through the one decision.
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without spaces"),
        "{body}"
    );

    let (status, _, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/v1/responses")
            .insert_header(bearer(&token)),
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_endpoint");

    // The served document is the committed one's source.
    let (status, _, body) = call!(app, test::TestRequest::get().uri("/openapi.json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::to_value(byok_server::openapi::ApiDoc::openapi()).unwrap()
    );
}

#[actix_web::test]
async fn a_request_id_is_kept_or_made() {
    let (state, _dir) = state().await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let (_, headers, _) = call!(
        app,
        test::TestRequest::get()
            .uri("/healthz")
            .insert_header(("x-request-id", "abc-123")),
    );
    assert_eq!(headers.get("x-request-id").unwrap(), "abc-123");
    // Not well-formed: replaced, never echoed.
    let (_, headers, _) = call!(
        app,
        test::TestRequest::get()
            .uri("/healthz")
            .insert_header(("x-request-id", "a b\tc")),
    );
    let id = headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(id, "a b\tc");
    assert_eq!(id.len(), 36);
}

#[actix_web::test]
async fn updating_a_server_keeps_or_clears_its_workspace_path() {
    let (state, _dir) = state().await;
    let token = user(&state, "s@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let (status, _, made) = call!(
        app,
        test::TestRequest::post()
            .uri("/api/v1/execution-servers")
            .insert_header(bearer(&token))
            .set_json(
                json!({"name": "box", "server_type": "ssh", "workspace_path": "/home/agent/work",
                "connection_config": {"host": "203.0.113.7", "username": "agent",
                    "auth_method": "password", "password": "CANARY-pw-123"}})
            ),
    );
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let update = |body: Value| {
        test::TestRequest::put()
            .uri(&format!(
                "/api/v1/execution-servers/{}",
                made["id"].as_str().unwrap()
            ))
            .insert_header(bearer(&token))
            .set_json(body)
    };
    // Absent: kept.
    let (status, _, body) = call!(app, update(json!({"name": "renamed"})));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workspace_path"], "/home/agent/work");
    // `null`: cleared (it used to be read as absent and kept).
    let (status, _, body) = call!(app, update(json!({"workspace_path": null})));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workspace_path"], Value::Null, "{body}");
    assert!(!body.to_string().contains("CANARY-pw-123"));
    // Anything else but a string: refused.
    let (status, _, body) = call!(app, update(json!({"workspace_path": 5})));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "invalid_workspace_path");
}

/// A loopback stand-in for Ollama Cloud's `POST /api/chat` as the key probe calls it: 401 for
/// any key but `good`, and for `good` the 404 an unknown model earns. Records `METHOD path`.
async fn ollama_cloud_standin(
    good: &'static str,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let record = seen.clone();
    actix_web::rt::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let line = head.lines().next().unwrap_or_default().to_string();
            let mut parts = line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            record.lock().unwrap().push(format!("{method} {path}"));
            let authorised = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {good}")));
            let (status, body) = if authorised {
                (
                    "404 Not Found",
                    r#"{"error":"model 'byok-key-probe' not found"}"#,
                )
            } else {
                ("401 Unauthorized", r#"{"error":"unauthorized"}"#)
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (base, seen)
}

#[actix_web::test]
async fn ollama_cloud_keys_and_the_legacy_fields_of_the_key_test() {
    let good = "ollama-cloud-good-0123456789";
    let (base, seen) = ollama_cloud_standin(good).await;
    let (state, _dir) = state_with(&[("BYOK_PROVIDER_OLLAMA_CLOUD_BASE_URL", &base)]).await;
    let token = user(&state, "cloud@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;

    // Offered like every other provider, named as the legacy pages name it.
    let (status, _, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/byok/providers")
            .insert_header(bearer(&token)),
    );
    assert_eq!(status, StatusCode::OK);
    let cloud = body
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "ollama_cloud")
        .cloned()
        .expect("ollama_cloud is listed");
    assert_eq!(cloud["name"], "Ollama Cloud");
    assert_eq!(cloud["key_format"], "any");

    let add = |key: &str| {
        test::TestRequest::post()
            .uri("/api/v1/byok/keys/add")
            .insert_header(bearer(&token))
            .set_json(json!({"provider": "ollama_cloud", "key": key}))
    };
    // The legacy rule: 10 characters or more.
    let (status, _, body) = call!(app, add("too-short"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_key_format");
    let (status, _, body) = call!(app, add(good));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["provider_name"], "Ollama Cloud");

    let test_key = || {
        test::TestRequest::post()
            .uri("/api/v1/byok/keys/test/ollama_cloud")
            .insert_header(bearer(&token))
    };
    let (status, _, body) = call!(app, test_key());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["provider"], "ollama_cloud");
    assert_eq!(body["provider_name"], "Ollama Cloud");
    assert_eq!(body["status"], "valid");
    assert_eq!(body["success"], true, "success = status == valid");
    assert!(body["message"].is_string());
    assert_eq!(body["details"]["http_status"], 404);
    // The probe: a chat request for a model that does not exist (the key is checked first).
    assert_eq!(seen.lock().unwrap().last().unwrap(), "POST /api/chat");

    // A key the provider refuses: `success` false, the status and message say why.
    let (status, _, body) = call!(app, add("ollama-cloud-bad-0123456789"));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call!(app, test_key());
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "invalid");
    assert_eq!(body["success"], false);
    assert_eq!(body["provider_name"], "Ollama Cloud");
    assert!(!body.to_string().contains("bad-0123456789"), "{body}");
}

#[actix_web::test]
async fn legacy_execution_server_payloads_are_accepted_and_stored_complete() {
    let (state, _dir) = state().await;
    let token = user(&state, "legacy@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let create = |body: Value| {
        test::TestRequest::post()
            .uri("/api/v1/execution-servers")
            .insert_header(bearer(&token))
            .set_json(body)
    };
    // SSH without `auth_method`: `key`, as the legacy service defaulted.
    let pem =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nCANARYsshkey\n-----END OPENSSH PRIVATE KEY-----\n";
    let (status, _, body) = call!(
        app,
        create(json!({"name": "ssh-box", "server_type": "ssh",
            "connection_config": {"host": "203.0.113.7", "username": "agent", "private_key": pem}}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["connection_config"]["auth_method"], "key");
    assert_eq!(body["connection_config"]["private_key"], "***masked***");
    assert!(!body.to_string().contains("CANARYsshkey"));

    // Docker `volumes` as the legacy map: stored (and shown) as the list form.
    let (status, _, body) = call!(
        app,
        create(json!({"name": "docker-box", "server_type": "docker",
            "connection_config": {"image": "python:3.11-slim",
                "volumes": {"/srv/data": "/workspace"}}}))
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["connection_config"]["volumes"],
        json!(["/srv/data:/workspace"])
    );
    // A map entry that cannot be written as host:container is refused, naming no value.
    let (status, _, body) = call!(
        app,
        create(json!({"name": "docker-bad", "server_type": "docker",
            "connection_config": {"volumes": {"/srv": 5}}}))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "invalid_connection_config");
}

/// The app with the legacy session cookie accepted, sessions from an in-memory store (the
/// binary reads them from Redis: tests/integration/legacy_frontend.rs).
async fn legacy_app_state(
    vars: &[(&str, &str)],
) -> (
    AppState,
    std::sync::Arc<byok_core::testing::MemLegacySessions>,
    tempfile::TempDir,
) {
    use byok_core::services::LegacySessionAuthenticator;
    use std::sync::Arc;
    let (mut state, dir) = state_with(vars).await;
    let sessions = Arc::new(byok_core::testing::MemLegacySessions::new());
    state.legacy_sessions = Some(Arc::new(LegacySessionAuthenticator::new(
        sessions.clone(),
        Arc::new(state.db.clone()),
        std::time::Duration::ZERO,
    )));
    (state, sessions, dir)
}

const SESSION: &str = "legacy_SESSION_token_0123456789abcdefghijk";

#[actix_web::test]
async fn the_legacy_session_cookie_authenticates_api_v1_with_the_origin_check_on_writes() {
    let (state, sessions, _dir) =
        legacy_app_state(&[("BYOK_PUBLIC_URL", "https://byok.example.com/")]).await;
    assert_eq!(state.console.public_url.get(), "https://byok.example.com");
    let bearer_token = user(&state, "dev@example.com", Tier::Starter).await;
    sessions.put(
        SESSION,
        r#"{"user": "dev@example.com", "access_token": "eyJ.x.y", "subscription_tier": "starter"}"#,
    );
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let cookie = (
        header::COOKIE,
        format!("theme=dark; session_token={SESSION}"),
    );

    // A read with the cookie only.
    let (status, _, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/byok/stats")
            .insert_header(cookie.clone()),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_tier"], "starter");

    let add = |origin: Option<&str>, site: Option<&str>| {
        let mut r = test::TestRequest::post()
            .uri("/api/v1/byok/keys/add")
            .insert_header(cookie.clone())
            .set_json(json!({"provider": "groq", "key": "gsk_INPROCESScookie0123456789"}));
        if let Some(o) = origin {
            r = r.insert_header((header::ORIGIN, o));
        }
        if let Some(s) = site {
            r = r.insert_header(("sec-fetch-site", s));
        }
        r
    };
    // Writes: the own origin, or no Origin but Sec-Fetch-Site: same-origin.
    let (status, _, body) = call!(app, add(Some("https://byok.example.com"), None));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = call!(app, add(None, Some("same-origin")));
    assert_eq!(status, StatusCode::OK, "{body}");
    // Another origin, `null`, or nothing to tell: 403 origin_refused, the one decision.
    for (origin, site) in [
        (Some("https://evil.example.com"), Some("cross-site")),
        (Some("null"), None),
        (None, Some("cross-site")),
        (None, None),
    ] {
        let (status, _, body) = call!(app, add(origin, site));
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?} {site:?}: {body}");
        assert_eq!(body["code"], "origin_refused");
    }
    // A header credential wins, and is not subject to the origin check.
    let (status, _, body) = call!(
        app,
        add(Some("https://evil.example.com"), None).insert_header(bearer(&bearer_token)),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    // A refused header credential never falls back to the cookie.
    let (status, _, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/byok/keys")
            .insert_header(cookie.clone())
            .insert_header(bearer("byok_not-a-token")),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // An unknown session: 401, like a bad token.
    let (status, _, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/byok/keys")
            .insert_header((
                header::COOKIE,
                "session_token=unknown_session_0123456789abcdef"
            )),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "invalid_token");

    // Never on the LLM gateway.
    let (status, _, body) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/chat/completions")
            .insert_header(cookie.clone())
            .set_json(json!({"model": "groq/llama", "messages": []})),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains(SESSION));
    assert_eq!(
        sessions.reads(),
        4,
        "the gateway never looked the cookie up"
    );
}

#[actix_web::test]
async fn without_the_setting_the_cookie_is_ignored() {
    let (state, _dir) = state().await;
    assert!(state.legacy_sessions.is_none());
    user(&state, "dev@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let (status, headers, body) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/byok/keys")
            .insert_header((header::COOKIE, format!("session_token={SESSION}"))),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
}

#[actix_web::test]
async fn settings_of_the_legacy_front_end() {
    let dir = tempfile::tempdir().unwrap();
    let var = |k: &'static str, v: &str| (k, v.to_string());
    let data = var("BYOK_DATA_DIR", &dir.path().display().to_string());
    let s = Settings::from_vars([data.clone(), var("BYOK_BIND", "0.0.0.0:9000")]).unwrap();
    // A wildcard bind address is reached on loopback (and replaced by the bound address).
    assert_eq!(
        s.public_url, "http://127.0.0.1:9000",
        "http://{{BYOK_BIND}}"
    );
    assert!(s.legacy_session_redis_url.is_none(), "opt-in");
    assert_eq!(s.legacy_session_cache, std::time::Duration::from_secs(30));
    assert!(s.allowed_origins.is_empty());
    let s = Settings::from_vars([
        data.clone(),
        var(
            "BYOK_ALLOWED_ORIGINS",
            " https://app.example.com/ , http://localhost:3000",
        ),
        var("BYOK_LEGACY_SESSION_CACHE_SECS", "0"),
        var(
            "BYOK_LEGACY_SESSION_REDIS_URL",
            "redis://:pw@127.0.0.1:6379/",
        ),
    ])
    .unwrap();
    assert_eq!(
        s.allowed_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert!(s.legacy_session_cache.is_zero());
    assert!(s.legacy_session_redis_url.is_some());
    for (k, v) in [
        ("BYOK_ALLOWED_ORIGINS", "https://ok.example.com,*"),
        ("BYOK_ALLOWED_ORIGINS", "app.example.com"),
        ("BYOK_PUBLIC_URL", "byok.example.com"),
        ("BYOK_LEGACY_SESSION_CACHE_SECS", "301"),
    ] {
        let err = Settings::from_vars([data.clone(), var(k, v)])
            .err()
            .unwrap_or_else(|| panic!("{k}={v} must be refused"));
        assert!(err.0.contains(k), "{err}");
    }
}

/// The console's Execution servers page (`/servers`), signed in through `/login` with a
/// gateway token, as a browser does (cookie, Origin, the form's CSRF token).
mod console_servers {
    use super::*;

    const ORIGIN: &str = "http://127.0.0.1:8080";
    const SECRET: &str = "CANARY-ssh-pw-0123456789";

    /// (status, headers, HTML).
    async fn html<B: MessageBody>(
        resp: ServiceResponse<B>,
    ) -> (StatusCode, header::HeaderMap, String) {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = test::read_body(resp).await;
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// A signed-in browser: its session cookie.
    struct Browser {
        cookie: String,
    }

    /// Signs in at `/login` with a gateway token, as the form does.
    macro_rules! sign_in {
        ($app:expr, $token:expr) => {{
            let resp = test::call_service(
                &$app,
                test::TestRequest::post()
                    .uri("/login")
                    .insert_header((header::ORIGIN, ORIGIN))
                    .set_form([("token", $token.as_str())])
                    .to_request(),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER);
            let cookie = resp
                .headers()
                .get_all(header::SET_COOKIE)
                .filter_map(|v| v.to_str().ok())
                .find(|v| v.starts_with("byok_session="))
                .and_then(|v| v.split(';').next())
                .expect("a session cookie")
                .to_string();
            Browser { cookie }
        }};
    }

    impl Browser {
        fn get(&self, uri: &str) -> test::TestRequest {
            test::TestRequest::get()
                .uri(uri)
                .insert_header((header::COOKIE, self.cookie.clone()))
        }

        fn post(&self, uri: &str, form: &[(&str, &str)]) -> test::TestRequest {
            test::TestRequest::post()
                .uri(uri)
                .insert_header((header::COOKIE, self.cookie.clone()))
                .insert_header((header::ORIGIN, ORIGIN))
                .set_form(form)
        }
    }

    /// The CSRF token of the page's first form.
    fn csrf(page: &str) -> String {
        let at = page.find("name=\"csrf\" value=\"").expect("a form") + 19;
        page[at..].split('"').next().unwrap().to_string()
    }

    fn location(h: &header::HeaderMap) -> String {
        h.get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    macro_rules! page {
        ($app:expr, $req:expr $(,)?) => {
            html(test::call_service(&$app, $req.to_request()).await).await
        };
    }

    #[actix_web::test]
    async fn add_edit_default_and_delete_an_ssh_server() {
        let (state, _dir) = state().await;
        let token = user(&state, "servers@example.com", Tier::Starter).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let b = sign_in!(app, token);

        // The list, empty, and the type chooser (plain links, no script needed).
        let (status, _, list) = page!(app, b.get("/servers"));
        assert_eq!(status, StatusCode::OK);
        assert!(list.contains("id=\"servers-empty\""), "{list}");
        let (status, _, chooser) = page!(app, b.get("/servers/new"));
        assert_eq!(status, StatusCode::OK);
        for kind in ["ssh", "docker", "kubernetes"] {
            assert!(chooser.contains(&format!("href=\"/servers/new?type={kind}\"")));
        }
        assert!(
            !chooser.contains("type=local"),
            "local execution is off here, and starter could not use it"
        );
        let (status, _, form) = page!(app, b.get("/servers/new?type=ssh"));
        assert_eq!(status, StatusCode::OK);
        assert!(form.contains("id=\"add-server-form\""));
        assert!(
            form.contains("<option value=\"key\" selected>"),
            "key is the default"
        );
        let token_field = csrf(&form);

        // A refusal of the core lands next to its field; the other values stay, the secret does not.
        let fields = |port: &'static str| {
            vec![
                ("csrf", token_field.clone()),
                ("server_type", "ssh".to_string()),
                ("name", "build-box".to_string()),
                ("host", "203.0.113.7".to_string()),
                ("port", port.to_string()),
                ("username", "agent".to_string()),
                ("auth_method", "password".to_string()),
                ("password", SECRET.to_string()),
                ("workspace_path", "/home/agent/work".to_string()),
            ]
        };
        let post = |uri: &str, v: Vec<(&'static str, String)>| {
            test::TestRequest::post()
                .uri(uri)
                .insert_header((header::COOKIE, b.cookie.clone()))
                .insert_header((header::ORIGIN, ORIGIN))
                .set_form(v)
        };
        let (status, _, refused) = page!(app, post("/servers", fields("70000")));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.contains("id=\"port-error\""), "{refused}");
        assert!(
            refused.contains("Port must be between 1 and 65535"),
            "{refused}"
        );
        assert!(refused.contains("aria-describedby=\"port-error\" aria-invalid=\"true\""));
        assert!(
            refused.contains("value=\"agent\""),
            "non-secret values are kept"
        );
        assert!(!refused.contains(SECRET), "the password is never put back");
        let (status, _, refused) = page!(app, post("/servers", fields("ssh")));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(refused.contains("id=\"port-error\""), "{refused}");

        // Saved: to the list (no host is reached: the test does that).
        let (status, headers, _) = page!(app, post("/servers", fields("2222")));
        assert_eq!(status, StatusCode::SEE_OTHER);
        let to = location(&headers);
        assert!(to.starts_with("/servers?done=created&server="), "{to}");
        let id = to.rsplit('=').next().unwrap().to_string();
        let (_, _, list) = page!(app, b.get(&to));
        assert!(list.contains(&format!("id=\"server-{id}\"")), "{list}");
        assert!(list.contains("data-server-name=\"build-box\""));
        assert!(list.contains("agent@203.0.113.7:2222"));
        assert!(list.contains("host key not trusted yet"));
        assert!(list.contains("“build-box” is saved"));
        assert!(!list.contains(SECRET));

        // The same name again: next to the name.
        let (status, _, refused) = page!(app, post("/servers", fields("22")));
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(refused.contains("id=\"name-error\""), "{refused}");

        // Edit: prefilled, no secret; an empty password keeps the stored one.
        let (status, _, edit) = page!(app, b.get(&format!("/servers/{id}/edit")));
        assert_eq!(status, StatusCode::OK);
        assert!(edit.contains("id=\"edit-server-form\""));
        assert!(edit.contains("value=\"203.0.113.7\""));
        assert!(edit.contains("leave this empty to keep the stored value"));
        assert!(!edit.contains(SECRET) && !edit.contains("***masked***"));
        let mut renamed: Vec<(&'static str, String)> = fields("2222")
            .into_iter()
            .filter(|(k, _)| *k != "server_type")
            .map(|(k, v)| match k {
                "name" => (k, "renamed-box".to_string()),
                "password" => (k, String::new()),
                _ => (k, v),
            })
            .collect();
        renamed.push(("is_active", "on".into()));
        let (status, headers, _) = page!(app, post(&format!("/servers/{id}/edit"), renamed));
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            location(&headers),
            format!("/servers?done=saved&server={id}")
        );
        let (_, _, api) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&token)),
        );
        assert_eq!(api[0]["name"], "renamed-box");
        assert_eq!(
            api[0]["connection_config"]["password"], "***masked***",
            "the stored password is kept: {api}"
        );

        // Run: the core's request rules, next to the field (no host reached).
        let (status, _, run) = page!(app, b.get(&format!("/servers/{id}/run")));
        assert_eq!(status, StatusCode::OK);
        assert!(run.contains("id=\"run-form\""));
        let (status, _, run) = page!(
            app,
            b.post(
                &format!("/servers/{id}/run"),
                &[
                    ("csrf", token_field.as_str()),
                    ("command", "  "),
                    ("timeout_secs", "60")
                ]
            )
        );
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(run.contains("id=\"command-error\""), "{run}");

        // Make default.
        let (status, headers, _) = page!(
            app,
            b.post(
                &format!("/servers/{id}/default"),
                &[("csrf", token_field.as_str())]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, list) = page!(app, b.get(&location(&headers)));
        assert!(
            list.contains(&format!("id=\"default-marker-{id}\"")),
            "{list}"
        );
        assert!(list.contains("is now your default server"));
        // The selector clears it.
        let (status, _, _) = page!(
            app,
            b.post(
                "/servers/default",
                &[("csrf", token_field.as_str()), ("server", "none")]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, list) = page!(app, b.get("/servers"));
        assert!(!list.contains("id=\"default-marker-"));

        // Delete: a confirmation page, then the post.
        let (status, _, confirm) = page!(app, b.get(&format!("/servers/{id}/delete")));
        assert_eq!(status, StatusCode::OK);
        assert!(confirm.contains(&format!("action=\"/servers/{id}/delete\"")));
        assert!(confirm.contains("renamed-box"));
        let (status, headers, _) = page!(
            app,
            b.post(
                &format!("/servers/{id}/delete"),
                &[("csrf", token_field.as_str())]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, list) = page!(app, b.get(&location(&headers)));
        assert!(list.contains("“renamed-box” is deleted"), "{list}");
        assert!(list.contains("id=\"servers-empty\""));
    }

    #[actix_web::test]
    async fn forms_without_the_session_token_are_refused() {
        let (state, _dir) = state().await;
        let token = user(&state, "csrf@example.com", Tier::Starter).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let b = sign_in!(app, token);
        let add = [
            ("server_type", "ssh"),
            ("name", "x"),
            ("host", "203.0.113.7"),
            ("username", "agent"),
            ("auth_method", "password"),
            ("password", SECRET),
        ];
        let (status, _, body) = page!(app, b.post("/servers", &add));
        assert_eq!(status, StatusCode::FORBIDDEN, "no csrf field");
        assert!(!body.contains(SECRET));
        let mut wrong = add.to_vec();
        wrong.push(("csrf", "not-the-token"));
        let (status, _, _) = page!(app, b.post("/servers", &wrong));
        assert_eq!(status, StatusCode::FORBIDDEN, "a wrong csrf token");
        let id = uuid::Uuid::new_v4().to_string();
        for action in ["test", "trust", "default", "delete", "run", "edit"] {
            let (status, _, _) = page!(app, b.post(&format!("/servers/{id}/{action}"), &[]));
            assert_eq!(status, StatusCode::FORBIDDEN, "{action}");
        }
        // With the token but from another site: refused too.
        let (_, _, list) = page!(app, b.get("/servers"));
        let good = csrf(&list);
        let mut signed = add.to_vec();
        signed.push(("csrf", good.as_str()));
        let (status, _, _) = page!(
            app,
            b.post("/servers", &signed)
                .insert_header((header::ORIGIN, "https://evil.example"))
        );
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, _, api) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&token)),
        );
        assert_eq!(api, json!([]), "nothing was created");
    }

    /// Registers an SSH server named `$name` through the JSON API: (status, body).
    macro_rules! add_by_api {
        ($app:expr, $token:expr, $name:expr) => {{
            let (status, _, body) = call!(
                $app,
                test::TestRequest::post()
                    .uri("/api/v1/execution-servers")
                    .insert_header(bearer(&$token))
                    .set_json(json!({"name": $name, "server_type": "ssh",
                        "connection_config": {"host": "203.0.113.7", "username": "agent",
                            "auth_method": "password", "password": SECRET}})),
            );
            (status, body)
        }};
    }

    /// The ids of the table's rows, in order (`id="server-…"`).
    fn row_ids(page: &str) -> Vec<String> {
        page.split("<tr id=\"server-")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[actix_web::test]
    async fn the_servers_of_one_user_are_capped() {
        let (state, _dir) = state_with(&[("BYOK_MAX_SERVERS_PER_USER", "2")]).await;
        let token = user(&state, "cap@example.com", Tier::Starter).await;
        let other = user(&state, "cap-other@example.com", Tier::Starter).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        for name in ["one", "two"] {
            let (status, body) = add_by_api!(app, token, name);
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        // One more: 409 with a stable code and a message naming the cap; nothing stored.
        let (status, body) = add_by_api!(app, token, "three");
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["code"], "server_limit");
        assert_eq!(
            body["detail"],
            "you have reached the limit of 2 execution servers: delete one to add another"
        );
        // Per user: another user still may.
        let (status, _) = add_by_api!(app, other, "three");
        assert_eq!(status, StatusCode::CREATED);

        // The console's add form: the same refusal as a notice on the form, the same status.
        let b = sign_in!(app, token);
        let (_, _, form) = page!(app, b.get("/servers/new?type=ssh"));
        let token_field = csrf(&form);
        let (status, _, refused) = page!(
            app,
            b.post(
                "/servers",
                &[
                    ("csrf", token_field.as_str()),
                    ("server_type", "ssh"),
                    ("name", "three"),
                    ("host", "203.0.113.7"),
                    ("port", "22"),
                    ("username", "agent"),
                    ("auth_method", "password"),
                    ("password", SECRET),
                ]
            )
        );
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(refused.contains("id=\"form-error\""), "{refused}");
        assert!(
            refused.contains(
                "You have reached the limit of 2 execution servers: delete one to add another"
            ),
            "{refused}"
        );
        assert!(refused.contains("value=\"three\""), "the values are kept");
        assert!(!refused.contains(SECRET));
        let (_, _, api) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&token)),
        );
        assert_eq!(api.as_array().map(Vec::len), Some(2), "{api}");
    }

    #[actix_web::test]
    async fn the_servers_table_shows_25_rows_a_page() {
        let (state, _dir) = state().await;
        let token = user(&state, "many@example.com", Tier::Starter).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        for i in 0..30 {
            let (status, body) = add_by_api!(app, token, format!("box-{i:02}"));
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        // An old one is the default: it comes first, then the newest.
        let (_, _, api) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&token)),
        );
        let oldest = api[29]["id"].as_str().unwrap().to_string();
        let b = sign_in!(app, token);
        let (_, _, list) = page!(app, b.get("/servers"));
        let (status, _, _) = page!(
            app,
            b.post(
                &format!("/servers/{oldest}/default"),
                &[("csrf", csrf(&list).as_str())]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, _, api) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&token)),
        );
        let order: Vec<String> = api
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(order[0], oldest);
        assert_eq!(api[0]["name"], "box-00");
        assert_eq!(api[1]["name"], "box-29", "then the newest");

        // Page 1: the first 25 in the API's order, a pager to page 2, every server in the
        // default selector.
        let (status, _, first) = page!(app, b.get("/servers"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(row_ids(&first), order[..25]);
        assert!(first.contains("Page 1 of 2"), "{first}");
        assert!(first.contains("href=\"/servers?page=2\" rel=\"next\""));
        assert!(!first.contains("rel=\"prev\""));
        assert!(first.contains(&format!("id=\"default-marker-{oldest}\"")));
        let options = between(&first, "id=\"default-server\"", "</select>").unwrap();
        for id in &order {
            assert!(options.contains(&format!("value=\"{id}\"")), "{id}");
        }
        // Page 2: the other 5, a pager back.
        let (status, _, second) = page!(app, b.get("/servers?page=2"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(row_ids(&second), order[25..]);
        assert!(second.contains("Page 2 of 2"));
        assert!(second.contains("href=\"/servers?page=1\" rel=\"prev\""));
        assert!(!second.contains("rel=\"next\""));
        assert_eq!(
            between(&second, "id=\"default-server\"", "</select>").unwrap(),
            options,
            "the selector lists every server on every page"
        );
        // Past the end: the last page; before the start: the first.
        let (status, _, past) = page!(app, b.get("/servers?page=9"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(row_ids(&past), order[25..]);
        let (_, _, zero) = page!(app, b.get("/servers?page=0"));
        assert_eq!(row_ids(&zero), order[..25]);
        // A server saved from page 2 is shown on its page.
        let (_, _, saved) = page!(
            app,
            b.get(&format!("/servers?done=saved&server={}", order[27]))
        );
        assert_eq!(row_ids(&saved), order[25..]);
    }

    #[actix_web::test]
    async fn a_free_user_sees_what_plan_servers_need() {
        let (state, _dir) = state().await;
        let token = user(&state, "free-servers@example.com", Tier::Free).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let b = sign_in!(app, token);
        for uri in ["/servers", "/servers/new", "/servers/new?type=ssh"] {
            let (status, _, body) = page!(app, b.get(uri));
            assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                "{uri}: {status}"
            );
            assert!(body.contains("id=\"servers-upgrade\""), "{uri}: {body}");
            assert!(body.contains("need the starter plan"), "{uri}");
            assert!(!body.contains("add-server-form"), "{uri}");
        }
    }
}

// ---- Console: gateway tokens and usage pages ----

/// Sends `req` to the app: (status, headers, body as text).
macro_rules! page {
    ($app:expr, $req:expr $(,)?) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
        (status, headers, body)
    }};
}

/// The text between `start` (after it) and the next `end` in `body`.
fn between<'a>(body: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = body.find(start)? + start.len();
    let len = body[from..].find(end)?;
    Some(&body[from..from + len])
}

/// The session cookie (`name=value`) a response sets.
fn session_cookie(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(byok_console::COOKIE_NAME))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
}

/// Signs in to the console with a gateway token: the session cookie.
macro_rules! sign_in {
    ($app:expr, $origin:expr, $token:expr) => {{
        let (status, headers, _) = page!(
            $app,
            test::TestRequest::post()
                .uri("/login")
                .insert_header(("origin", $origin.as_str()))
                .set_form([("token", $token.as_str())])
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        session_cookie(&headers).expect("a session cookie")
    }};
}

fn csrf_of(body: &str) -> String {
    between(body, "name=\"csrf\" value=\"", "\"")
        .expect("a CSRF field")
        .to_string()
}

#[actix_web::test]
async fn console_tokens_create_once_list_and_revoke() {
    let (state, _dir) = state().await;
    let signed_in_with = user(&state, "tokens@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let cookie = sign_in!(app, origin, signed_in_with);
    let get = |uri: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.clone()))
    };
    let post = |uri: &str, form: Vec<(&str, &str)>| {
        test::TestRequest::post()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.clone()))
            .insert_header(("origin", origin.clone()))
            .set_form(form)
    };

    // The list: the token this session was opened with, marked; snippets with this URL and
    // the placeholder, never a token.
    let (status, headers, body) = page!(app, get("/tokens"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(body.contains(&signed_in_with[..13]), "the prefix is listed");
    assert!(!body.contains(&signed_in_with), "never the token");
    assert!(body.contains("id=\"this-session-token\""));
    assert!(body.contains(&format!(
        "ANTHROPIC_BASE_URL={origin} ANTHROPIC_AUTH_TOKEN="
    )));
    assert!(body.contains("$BYOK_TOKEN"));
    assert!(body.contains(&format!("OpenAI(base_url=&#34;{origin}/v1&#34;")));
    let csrf = csrf_of(&body);

    // Without the form's CSRF token, or from another site: 403, nothing created.
    let (status, _, _) = page!(app, post("/tokens", vec![("name", "x"), ("expiry", "30")]));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = page!(
        app,
        post(
            "/tokens",
            vec![("csrf", "wrong"), ("name", "x"), ("expiry", "30")]
        )
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = page!(
        app,
        post(
            "/tokens",
            vec![("csrf", &csrf), ("name", "x"), ("expiry", "30")]
        )
        .insert_header(("origin", "https://evil.example"))
    );
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A name the service refuses: the error beside the field, the form kept.
    let (status, _, body) = page!(
        app,
        post(
            "/tokens",
            vec![("csrf", &csrf), ("name", "  "), ("expiry", "30")]
        )
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("id=\"token-name-error\""));
    assert!(body.contains("aria-invalid=\"true\""));
    assert!(!body.contains("id=\"new-token\""));

    // Created: 200 with the token once, no-store, and the snippets filled with it.
    let (status, headers, body) = page!(
        app,
        post(
            "/tokens",
            vec![("csrf", &csrf), ("name", "laptop"), ("expiry", "30")]
        )
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    let token = between(&body, "<code id=\"new-token-value\">", "</code>")
        .expect("the one-time block")
        .to_string();
    assert!(token.starts_with("byok_") && token.len() == 48, "{token}");
    assert!(body.contains("it will not be shown again"));
    assert!(body.contains("data-copy=\"new-token-value\""));
    assert!(body.contains(&format!("ANTHROPIC_AUTH_TOKEN={token} claude")));
    let prefix = &token[..13];

    // It works, and expires in 30 days (the same service as the API).
    let (status, _, list) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/tokens")
            .insert_header(bearer(&token))
    );
    assert_eq!(status, StatusCode::OK);
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == prefix)
        .unwrap()
        .clone();
    let expires: chrono::DateTime<chrono::Utc> =
        mine["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "{days} hours");
    let id = mine["id"].as_str().unwrap().to_string();

    // Never shown again.
    let (_, _, body) = page!(app, get("/tokens"));
    assert!(!body.contains(&token));
    assert!(!body.contains("id=\"new-token\""));
    assert!(body.contains(&format!("id=\"token-{id}\" data-prefix=\"{prefix}\"")));
    assert!(body.contains(&format!("id=\"revoke-{id}\"")));

    // Revoke: a confirmation first (not this session's token), then the post.
    let (status, _, body) = page!(app, get(&format!("/tokens/{id}/revoke")));
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&format!("action=\"/tokens/{id}/revoke\"")));
    assert!(!body.contains("signs you out"));
    let (status, _, _) = page!(app, post(&format!("/tokens/{id}/revoke"), vec![]));
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let (status, headers, _) = page!(
        app,
        post(&format!("/tokens/{id}/revoke"), vec![("csrf", &csrf)])
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        "/tokens?done=revoked"
    );
    let (status, _, _) = call!(
        app,
        test::TestRequest::get()
            .uri("/api/v1/tokens")
            .insert_header(bearer(&token))
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked at once");
    let (_, _, body) = page!(app, get("/tokens?done=revoked"));
    assert!(body.contains(&format!(
        "id=\"token-{id}\" data-prefix=\"{prefix}\" data-status=\"revoked\""
    )));
    assert!(!body.contains(&format!("id=\"revoke-{id}\"")));
    let (status, _, _) = page!(app, get(&format!("/tokens/{id}/revoke")));
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing left to revoke");

    // Revoking the token this session was opened with says it signs you out, and does.
    let (_, _, body) = page!(app, get("/tokens"));
    let marker = format!("\" data-prefix=\"{}\"", &signed_in_with[..13]);
    let at = body.find(&marker).expect("the session's token is listed");
    let own = body[..at].rsplit("id=\"token-").next().unwrap().to_string();
    let (_, _, body) = page!(app, get(&format!("/tokens/{own}/revoke")));
    assert!(body.contains("revoking it signs you out"), "{body}");
    let (status, headers, _) = page!(
        app,
        post(&format!("/tokens/{own}/revoke"), vec![("csrf", &csrf)])
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        "/login?signed_out=1"
    );
    let (status, headers, _) = page!(app, get("/tokens"));
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(header::LOCATION).unwrap(),
        "/login?next=/tokens"
    );
}

/// Whether a response is a page (HTML), not the API's JSON.
fn is_page(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// Every form handler takes `CsrfForm`: signed in, the form read, its CSRF token checked
/// before the handler runs. A missing or wrong token is a 403 page whatever else the form
/// holds; a form that cannot be read is a 400 page (for a browser); a field the page refuses
/// itself gets the status of a core validation error.
#[actix_web::test]
async fn console_forms_pass_one_extractor() {
    let (state, _dir) = state().await;
    let token = user(&state, "forms@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let cookie = sign_in!(app, origin, token);
    let post = |uri: &str, form: Vec<(&str, &str)>| {
        test::TestRequest::post()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.clone()))
            .insert_header(("origin", origin.clone()))
            .insert_header((header::ACCEPT, "text/html"))
            .set_form(form)
    };
    let (_, _, keys) = page!(
        app,
        test::TestRequest::get()
            .uri("/keys")
            .insert_header((header::COOKIE, cookie.clone()))
    );
    let csrf = csrf_of(&keys);
    let key = [
        ("provider", "groq"),
        ("key", "gsk_not-a-real-key-0123456789"),
    ];

    for (uri, form) in [
        ("/keys", key.to_vec()),
        ("/keys/settings", vec![("fallback_policy", "user_only")]),
        ("/logout", vec![]),
    ] {
        let (status, headers, body) = page!(app, post(uri, form.clone()));
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} without a token");
        assert!(is_page(&headers), "{uri}");
        assert!(body.contains("cannot be accepted"), "{uri}: {body}");
        let mut wrong = form;
        wrong.push(("csrf", "not-the-token"));
        let (status, _, _) = page!(app, post(uri, wrong));
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri} with a wrong token");
    }

    // With the token but without a field the form needs: a page saying so.
    let (status, headers, body) = page!(app, post("/keys", vec![("csrf", &csrf)]));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(is_page(&headers));
    assert!(body.contains("could not be read"), "{body}");

    // A field the page refuses itself: the status of a core validation error, next to it.
    let (status, _, body) = page!(
        app,
        post(
            "/tokens",
            vec![("csrf", &csrf), ("name", "x"), ("expiry", "soon")]
        )
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("id=\"token-expiry-error\""), "{body}");

    // Nothing above signed the person out; with the token, sign-out works.
    let (status, _, _) = page!(app, post("/logout", vec![("csrf", &csrf)]));
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[actix_web::test]
async fn console_usage_with_and_without_requests() {
    use byok_core::ports::UsageRepository;
    use byok_core::{CredentialKind, ProviderId, UsageRecord};
    let (state, _dir) = state().await;
    let busy = state
        .tokens
        .create_user("busy@example.com", Tier::Starter)
        .await
        .unwrap();
    let busy_token = state.tokens.issue(busy.id, "t", None).await.unwrap();
    let idle_token = user(&state, "idle@example.com", Tier::Free).await;
    let now = chrono::Utc::now();
    let rec = |provider, credential, status, days_ago: i64| UsageRecord {
        id: uuid::Uuid::now_v7(),
        user_id: busy.id,
        provider,
        model: "m".into(),
        credential,
        status,
        input_tokens: 1000,
        output_tokens: 100,
        latency_ms: 5,
        fallback: false,
        at: now - chrono::Duration::days(days_ago),
    };
    let mut records = Vec::new();
    for d in 0..30 {
        records.push(rec(ProviderId::Openai, CredentialKind::User, 200, d));
        records.push(rec(ProviderId::Openai, CredentialKind::System, 200, d));
    }
    records.push(rec(ProviderId::Anthropic, CredentialKind::User, 500, 3));
    // Older than the window: not shown.
    records.push(rec(ProviderId::Groq, CredentialKind::User, 200, 40));
    state.db.insert_usage(&records).await.unwrap();
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;

    let cookie = sign_in!(app, origin, busy_token.token.expose_secret().to_string());
    let (status, _, body) = page!(
        app,
        test::TestRequest::get()
            .uri("/usage")
            .insert_header((header::COOKIE, cookie))
    );
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<dd class=\"value\" id=\"usage-requests\">61</dd>"));
    assert!(body.contains("<dd class=\"value\" id=\"usage-own-share\">51%</dd>"));
    assert!(body.contains("<dd class=\"value\" id=\"usage-errors\">1</dd>"));
    assert!(body.contains("<dd class=\"value\" id=\"usage-input-tokens\">61,000</dd>"));
    assert!(body.contains("role=\"img\""));
    assert!(
        body.contains("61 in all, 31 with your own keys, 30 with the platform&#39;s key, 1 errors")
    );
    assert!(body.contains("class=\"bar-errors\""));
    let openai = between(&body, "<tr id=\"usage-provider-openai\">", "</tr>").unwrap();
    assert!(openai.contains(">60<") && openai.contains(">30<") && openai.contains(">60,000<"));
    assert!(body.contains("id=\"usage-provider-anthropic\""));
    assert!(!body.contains("usage-provider-groq"), "outside the window");
    assert!(!body.contains("id=\"usage-empty\""));
    assert!(!body.contains("style="), "no inline style (CSP)");
    assert!(body.len() < 150_000);

    let cookie = sign_in!(app, origin, idle_token);
    let (status, _, body) = page!(
        app,
        test::TestRequest::get()
            .uri("/usage")
            .insert_header((header::COOKIE, cookie))
    );
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"usage-empty\""));
    assert!(body.contains("href=\"/tokens\"") && body.contains("href=\"/try\""));
    assert!(!body.contains("id=\"usage-chart\""));
}

// ---- Console: sign-in rules (review findings) ----

#[actix_web::test]
async fn console_over_https_uses_a_host_prefixed_secure_cookie() {
    let (state, _dir) = state_with(&[("BYOK_PUBLIC_URL", "https://byok.example.com")]).await;
    let token = user(&state, "https@example.com", Tier::Starter).await;
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let (status, headers, _) = page!(
        app,
        test::TestRequest::post()
            .uri("/login")
            .insert_header(("origin", "https://byok.example.com"))
            .set_form([("token", token.as_str())])
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(byok_console::SECURE_COOKIE_NAME))
        .expect("__Host-byok_session")
        .to_ascii_lowercase();
    for flag in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("domain="), "{cookie}");
    // The http origin of the same host is another origin.
    let (status, _, _) = page!(
        app,
        test::TestRequest::post()
            .uri("/login")
            .insert_header(("origin", "http://byok.example.com"))
            .set_form([("token", token.as_str())])
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[actix_web::test]
async fn console_sign_in_attempts_are_limited_and_next_stays_here() {
    early_in_a_minute().await;
    let (state, _dir) = state().await;
    let token = user(&state, "limits@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    // Another host's URL, a protocol-relative one, a backslash trick: all land on /keys.
    for next in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/keys",
    ] {
        let (status, headers, _) = page!(
            app,
            test::TestRequest::post()
                .uri("/login")
                .peer_addr("192.0.2.1:1000".parse().unwrap())
                .insert_header(("origin", origin.as_str()))
                .set_form([("token", token.as_str()), ("next", next)])
        );
        assert_eq!(status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(headers.get(header::LOCATION).unwrap(), "/keys", "{next}");
    }
    let mut limited = false;
    for _ in 0..12 {
        let (status, _, body) = page!(
            app,
            test::TestRequest::post()
                .uri("/login")
                .peer_addr("192.0.2.2:1000".parse().unwrap())
                .insert_header(("origin", origin.as_str()))
                .set_form([("token", "byok_wrong-token-0123456789")])
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(body.contains("Too many sign-in attempts"), "{body}");
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "the eleventh attempt in a minute is refused");
    // Another address is not affected.
    let (status, _, _) = page!(
        app,
        test::TestRequest::post()
            .uri("/login")
            .peer_addr("192.0.2.3:1000".parse().unwrap())
            .insert_header(("origin", origin.as_str()))
            .set_form([("token", token.as_str())])
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
}

/// Review finding: the sign-in limit was keyed on the TCP peer, so behind a reverse proxy
/// every client shared one bucket (ten wrong tokens anywhere locked everyone out for a
/// minute). With `BYOK_TRUSTED_PROXIES`, the client the proxy names is counted.
#[actix_web::test]
async fn console_sign_in_limit_counts_each_client_behind_a_trusted_proxy() {
    early_in_a_minute().await;
    let (state, _dir) = state_with(&[("BYOK_TRUSTED_PROXIES", "10.0.0.0/8")]).await;
    let token = user(&state, "proxied@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let attempt = |peer: &str, forwarded: Option<&str>, token: &str| {
        let mut req = test::TestRequest::post()
            .uri("/login")
            .peer_addr(peer.parse().unwrap())
            .insert_header(("origin", origin.as_str()))
            .set_form([("token", token)]);
        if let Some(f) = forwarded {
            req = req.insert_header(("x-forwarded-for", f));
        }
        req
    };
    // Client A, through the proxy, tries wrong tokens until it is limited.
    let mut limited = false;
    for _ in 0..12 {
        let (status, _, _) = page!(
            app,
            attempt(
                "10.0.0.1:4000",
                Some("203.0.113.1"),
                "byok_wrong-token-0123456789"
            )
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "client A is limited");
    // Client B, through the same proxy: its own count.
    let (status, _, _) = page!(app, attempt("10.0.0.1:4000", Some("203.0.113.2"), &token));
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "client B is not limited by A"
    );
    // A cannot get out of its count with a header of its own: through the proxy its entries
    // are left of the address the proxy appended; straight to the service (an untrusted
    // peer) the header is ignored.
    for (peer, forwarded) in [
        ("10.0.0.1:4000", "198.51.100.9, 203.0.113.1"),
        ("10.0.0.1:4000", "10.0.0.77, 203.0.113.1"),
        ("203.0.113.1:5000", "198.51.100.9"),
        ("203.0.113.1:5000", "198.51.100.9, 10.0.0.1"),
    ] {
        let (status, _, _) = page!(app, attempt(peer, Some(forwarded), &token));
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "{peer} with {forwarded}"
        );
    }
    // A malformed header through the proxy: the proxy's own address is counted, not A's.
    let (status, _, _) = page!(app, attempt("10.0.0.1:4000", Some("unknown"), &token));
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[actix_web::test]
async fn console_without_trusted_proxies_x_forwarded_for_is_ignored() {
    early_in_a_minute().await;
    let (state, _dir) = state().await;
    let token = user(&state, "direct@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    // Every attempt claims another address; all come from one peer and share its count.
    let mut limited = false;
    for i in 0..12 {
        let (status, _, _) = page!(
            app,
            test::TestRequest::post()
                .uri("/login")
                .peer_addr("10.0.0.1:4000".parse().unwrap())
                .insert_header(("origin", origin.as_str()))
                .insert_header(("x-forwarded-for", format!("203.0.113.{i}")))
                .set_form([("token", "byok_wrong-token-0123456789")])
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "a made-up X-Forwarded-For is not a new client");
    let (status, _, _) = page!(
        app,
        test::TestRequest::post()
            .uri("/login")
            .peer_addr("10.0.0.1:4000".parse().unwrap())
            .insert_header(("origin", origin.as_str()))
            .insert_header(("x-forwarded-for", "198.51.100.1"))
            .set_form([("token", token.as_str())])
    );
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn trusted_proxies_must_be_addresses_or_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    for bad in ["proxy.internal", "10.0.0.0/40", "10.0.0.1, nonsense"] {
        let e = Settings::from_vars([
            ("BYOK_DATA_DIR", data.as_str()),
            ("BYOK_TRUSTED_PROXIES", bad),
        ])
        .expect_err("refused");
        assert!(e.to_string().starts_with("BYOK_TRUSTED_PROXIES: "), "{e}");
    }
    let ok = Settings::from_vars([
        ("BYOK_DATA_DIR", data.as_str()),
        ("BYOK_TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.5,fd00::/8 "),
    ])
    .expect("accepted");
    assert!(ok.trusted_proxies.trusts("10.1.2.3".parse().unwrap()));
    assert!(!ok.trusted_proxies.trusts("203.0.113.1".parse().unwrap()));
    let none = Settings::from_vars([("BYOK_DATA_DIR", data.as_str())]).expect("default");
    assert!(
        none.trusted_proxies.is_empty(),
        "trusts no proxy by default"
    );
}

/// A stand-in for the identity provider's browser sign-in: every code is exchanged for
/// `access_token` (a gateway token here, which the authenticator accepts like a JWT).
struct FakeLogin {
    access_token: String,
}

#[byok_core::async_trait::async_trait]
impl byok_core::ports::BrowserLogin for FakeLogin {
    async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        _nonce: &str,
        _challenge: &str,
    ) -> Result<String, byok_core::CoreError> {
        Ok(format!(
            "https://idp.example/auth?redirect_uri={redirect_uri}&state={state}"
        ))
    }
    async fn exchange(
        &self,
        _code: &str,
        _verifier: &secrecy::SecretString,
        _redirect_uri: &str,
        _nonce: &str,
    ) -> Result<byok_core::ports::BrowserSignIn, byok_core::CoreError> {
        Ok(byok_core::ports::BrowserSignIn {
            access_token: self.access_token.clone().into(),
            operator: None,
        })
    }
}

/// Over https the OIDC attempt's cookie is `__Host-byok_oidc`: `Secure`, `Path=/`, no
/// `Domain`, `HttpOnly`, `SameSite=Lax`; the callback reads it under that name and clears it.
#[actix_web::test]
async fn console_oidc_attempt_cookie_over_https_is_host_prefixed() {
    let (mut state, _dir) = state_with(&[("BYOK_PUBLIC_URL", "https://byok.example.com")]).await;
    let token = user(&state, "oidc-https@example.com", Tier::Starter).await;
    state.console.oidc = Some(std::sync::Arc::new(FakeLogin {
        access_token: token,
    }));
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let (status, headers, _) = page!(
        app,
        test::TestRequest::get().uri("/login/oidc?next=/tokens")
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-byok_oidc="))
        .expect("__Host-byok_oidc")
        .to_string();
    let attributes: Vec<String> = set
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for flag in [
        "secure",
        "httponly",
        "samesite=lax",
        "path=/",
        "max-age=600",
    ] {
        assert!(attributes.iter().any(|a| a == flag), "{flag}: {set}");
    }
    assert!(!attributes.iter().any(|a| a.starts_with("domain")), "{set}");
    let pending = set.split(';').next().unwrap().to_string();
    let value = pending.split_once('=').unwrap().1.to_string();
    let to = headers.get(header::LOCATION).unwrap().to_str().unwrap();
    let state_param = to.split("state=").nth(1).unwrap().to_string();

    // Back from the provider: the attempt is read under its __Host- name, then cleared.
    let (status, headers, body) = page!(
        app,
        test::TestRequest::get()
            .uri(&format!("/login/oidc/callback?code=c&state={state_param}"))
            .insert_header((header::COOKIE, pending))
    );
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers.get(header::LOCATION).unwrap(), "/tokens");
    let cookies: Vec<&str> = headers
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(byok_console::SECURE_COOKIE_NAME)),
        "signed in: {cookies:?}"
    );
    let cleared = cookies
        .iter()
        .find(|c| c.starts_with("__Host-byok_oidc="))
        .expect("the attempt's cookie is cleared")
        .to_ascii_lowercase();
    assert!(
        cleared.contains("max-age=0") && cleared.contains("secure"),
        "{cleared}"
    );
    // The plain-http name is not read over https (a cookie planted by an http response).
    let (status, _, _) = page!(
        app,
        test::TestRequest::get()
            .uri(&format!("/login/oidc/callback?code=c&state={state_param}"))
            .insert_header((header::COOKIE, format!("byok_oidc={value}")))
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn console_a_new_sign_in_replaces_the_browsers_session() {
    let (state, _dir) = state().await;
    let token = user(&state, "rotate@example.com", Tier::Starter).await;
    let origin = state.console.public_url.get();
    let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
    let first = sign_in!(app, origin, token);
    let (status, headers, _) = page!(
        app,
        test::TestRequest::post()
            .uri("/login")
            .insert_header(("origin", origin.as_str()))
            .insert_header((header::COOKIE, first.clone()))
            .set_form([("token", token.as_str())])
    );
    assert_eq!(status, StatusCode::SEE_OTHER);
    let second = session_cookie(&headers).unwrap();
    assert_ne!(first, second, "a new id at sign-in");
    let keys = |c: String| {
        test::TestRequest::get()
            .uri("/keys")
            .insert_header((header::COOKIE, c))
    };
    assert_eq!(
        page!(app, keys(first)).0,
        StatusCode::SEE_OTHER,
        "the old one ended"
    );
    assert_eq!(page!(app, keys(second)).0, StatusCode::OK);
    // A malformed query on a page gets a page, not the API's JSON.
    let (status, headers, body) = page!(
        app,
        test::TestRequest::get()
            .uri("/login?next=a&next=b")
            .insert_header((header::ACCEPT, "text/html"))
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(is_page(&headers));
    assert!(body.contains("could not be read"), "{body}");
}

/// Resolve, Try it and Administration (their own fixtures: a provider stand-in, the platform's key).
mod console_try_admin {
    use super::*;

    // ---- Resolve, Try it and Administration -------------------------------------------------

    /// The platform's key in these tests (OpenRouter's format).
    const SYSTEM_KEY: &str = "sk-or-v1-SYSTEMKEY0123456789abcdefghijkl";
    /// A user's OpenAI key; the stand-in refuses keys containing `invalid`.
    const USER_KEY: &str = "sk-proj-INPROCESS0123456789abcdefghijklmnop";
    const ORIGIN: &str = "http://127.0.0.1:8080";

    /// A loopback stand-in for an OpenAI-compatible chat API: every POST answers a chat
    /// completion, but a key containing `invalid` gets 401 and a prompt containing `leak` gets a
    /// 400 whose message quotes the key (as some providers do). It records the keys it saw.
    struct StandIn {
        base: String,
        keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    async fn stand_in() -> StandIn {
        use actix_web::{HttpRequest, HttpResponse};
        let keys: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let seen = keys.clone();
        let server = actix_web::HttpServer::new(move || {
        let seen = seen.clone();
        actix_web::App::new().default_service(web::to(
            move |req: HttpRequest, body: web::Bytes| {
                let seen = seen.clone();
                async move {
                    let key = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .trim_start_matches("Bearer ")
                        .to_string();
                    seen.lock().unwrap().push(key.clone());
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if key.contains("invalid") {
                        return HttpResponse::Unauthorized().json(json!({"error": {
                            "message": "Incorrect API key provided", "type": "invalid_request_error",
                            "code": "invalid_api_key"}}));
                    }
                    if body.to_string().contains("leak") {
                        return HttpResponse::BadRequest().json(json!({"error": {
                            "message": format!("bad request for key {key} on account acct_42"),
                            "type": "invalid_request_error"}}));
                    }
                    HttpResponse::Ok().json(json!({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Hello from the stand-in"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
                    }))
                }
            },
        ))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        StandIn { base, keys }
    }

    /// A service whose platform key (OpenRouter) and OpenAI are the stand-in, with `extra`
    /// settings.
    async fn state_with(
        stand_in: &StandIn,
        extra: &[(&str, &str)],
    ) -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut vars: Vec<(String, String)> = vec![
            ("BYOK_DATA_DIR".into(), dir.path().display().to_string()),
            ("DEFAULT_LLM_API_KEY".into(), SYSTEM_KEY.into()),
            (
                "DEFAULT_LLM_BASE_URL".into(),
                format!("{}/api/v1", stand_in.base),
            ),
            (
                "BYOK_PROVIDER_OPENAI_BASE_URL".into(),
                format!("{}/v1", stand_in.base),
            ),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::from_vars(vars).expect("settings");
        let state = byok_server::commands::prepare(&settings)
            .await
            .expect("state");
        (state, dir)
    }

    /// Sends `req` to the app: (status, headers, body as text).
    macro_rules! page {
        ($app:expr, $req:expr $(,)?) => {{
            let resp = test::call_service(&$app, $req.to_request()).await;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = test::read_body(resp).await;
            (status, headers, String::from_utf8(body.to_vec()).unwrap())
        }};
    }

    /// Signs in to the console with a gateway token: the session cookie (`name=value`).
    macro_rules! sign_in {
        ($app:expr, $token:expr) => {{
            let (status, headers, _) = page!(
                $app,
                test::TestRequest::post()
                    .uri("/login")
                    .insert_header((header::ORIGIN, ORIGIN))
                    .set_form([("token", $token)])
            );
            assert_eq!(status, StatusCode::SEE_OTHER);
            let cookie = headers
                .get_all(header::SET_COOKIE)
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with("byok_session="))
                .expect("a session cookie")
                .split(';')
                .next()
                .unwrap()
                .to_string();
            cookie
        }};
    }

    /// The CSRF token of a page.
    fn csrf_of(html: &str) -> String {
        let at = html
            .find("name=\"csrf\" value=\"")
            .expect("a form with a csrf field");
        let rest = &html[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The text of the element with this id (its first text, tags stripped).
    fn text_of(html: &str, id: &str) -> Option<String> {
        let at = html.find(&format!("id=\"{id}\""))?;
        let rest = &html[at..];
        let start = rest.find('>')? + 1;
        let end = rest[start..].find("</")?;
        let mut text = rest[start..start + end].to_string();
        while let (Some(a), Some(b)) = (text.find('<'), text.find('>')) {
            if b < a {
                break;
            }
            text.replace_range(a..=b, "");
        }
        Some(text.replace("&#39;", "'").replace("&#x27;", "'"))
    }

    fn get(uri: &str, cookie: &str) -> test::TestRequest {
        test::TestRequest::get()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.to_string()))
    }

    fn post_form(uri: &str, cookie: &str, form: &[(&str, &str)]) -> test::TestRequest {
        test::TestRequest::post()
            .uri(uri)
            .insert_header((header::COOKIE, cookie.to_string()))
            .insert_header((header::ORIGIN, ORIGIN))
            .set_form(form)
    }

    /// Waits until `check` holds (usage is written off the request path).
    async fn eventually<F, Fut>(mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..100 {
            if check().await {
                return;
            }
            actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("never happened");
    }

    #[actix_web::test]
    async fn resolve_names_the_key_and_the_server() {
        let s = stand_in().await;
        let (state, _dir) = state_with(&s, &[]).await;
        let starter = user(&state, "own@example.com", Tier::Starter).await;
        let free = user(&state, "free@example.com", Tier::Free).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let resolve = |token: &str, query: &str| {
            test::TestRequest::get()
                .uri(&format!("/api/v1/byok/resolve{query}"))
                .insert_header(bearer(token))
        };

        let (status, _, body) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/v1/byok/keys/add")
                .insert_header(bearer(&starter))
                .set_json(json!({"provider": "openai", "key": USER_KEY, "label": "work"})),
        );
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _, body) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/v1/execution-servers")
                .insert_header(bearer(&starter))
                .set_json(
                    json!({"name": "box", "server_type": "ssh", "is_default": true,
                "connection_config": {"host": "203.0.113.7", "username": "agent",
                    "auth_method": "password", "password": "pw-123456"}})
                ),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // Own key: provider, label, preview, the badge; never the key.
        let (status, _, body) = call!(app, resolve(&starter, "?model=openai/gpt-4o"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["provider"], "openai");
        assert_eq!(body["provider_name"], "OpenAI");
        assert_eq!(body["upstream_model"], "gpt-4o");
        assert_eq!(body["credential"], "own");
        assert_eq!(body["key_label"], "work");
        assert_eq!(body["key_preview"], "sk-p...mnop");
        assert_eq!(body["fallback_to_platform"], false);
        assert_eq!(body["badge"], "Using your OpenAI key (work \u{2026}mnop)");
        assert_eq!(body["execution_server"]["name"], "box");
        assert_eq!(body["execution_server"]["server_type"], "ssh");
        assert!(!body.to_string().contains(USER_KEY));

        // The platform's key for a free user, whatever the model's family; no server.
        let (status, _, body) = call!(app, resolve(&free, "?model=gpt-4o"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["credential"], "platform");
        assert_eq!(body["provider"], "openrouter");
        assert_eq!(body["upstream_model"], "openai/gpt-4o");
        assert_eq!(body["key_label"], Value::Null);
        assert_eq!(body["key_preview"], Value::Null);
        assert_eq!(body["execution_server"], Value::Null);
        assert_eq!(body["badge"], "Using the platform's key");

        // The router's refusals, through the one decision.
        let (status, _, body) = call!(app, resolve(&free, "?model=openai/"));
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["code"], "unknown_model");
        let (status, _, body) = call!(app, resolve(&free, "?model=openai/gpt%204o"));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["code"], "invalid_model");
        // No model at all: a malformed request.
        for q in ["", "?model=", "?model=%20"] {
            let (status, _, body) = call!(app, resolve(&free, q));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
            assert_eq!(body["code"], "missing_parameter");
        }
        let (status, _, _) = call!(
            app,
            test::TestRequest::get().uri("/api/v1/byok/resolve?model=gpt-4o")
        );
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            s.keys.lock().unwrap().is_empty(),
            "resolving calls no provider"
        );
    }

    #[actix_web::test]
    async fn try_it_answers_through_the_gateway_with_the_right_badge() {
        let s = stand_in().await;
        let (state, _dir) = state_with(&s, &[("BYOK_RATE_LIMITS", "free=1")]).await;
        let starter = user(&state, "own@example.com", Tier::Starter).await;
        let free = user(&state, "free@example.com", Tier::Free).await;
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let (status, _, _) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/v1/byok/keys/add")
                .insert_header(bearer(&starter))
                .set_json(json!({"provider": "openai", "key": USER_KEY, "label": "work"})),
        );
        assert_eq!(status, StatusCode::OK);

        // Own key: the badge before sending, the answer and the same badge after.
        let own = sign_in!(app, starter.as_str());
        let (status, _, html) = page!(app, get("/try?model=openai/gpt-4o", &own));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            text_of(&html, "try-badge").unwrap(),
            "Using your OpenAI key (work \u{2026}mnop)"
        );
        assert!(html.contains("data-credential=\"own\""));
        assert!(html.contains("<option value=\"gpt-4o\">"), "the datalist");
        assert!(
            text_of(&html, "try-server")
                .unwrap()
                .contains("No execution server set")
        );
        let csrf = csrf_of(&html);
        let (status, _, html) = page!(
            app,
            post_form(
                "/try",
                &own,
                &[
                    ("csrf", csrf.as_str()),
                    ("model", "openai/gpt-4o"),
                    ("prompt", "Say hello"),
                    ("action", "send")
                ]
            )
        );
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(
            text_of(&html, "try-answer").unwrap(),
            "Hello from the stand-in"
        );
        assert_eq!(
            text_of(&html, "try-result-badge").unwrap(),
            "Using your OpenAI key (work \u{2026}mnop)"
        );
        assert!(html.contains("tokens: 5 in, 4 out"), "{html}");
        assert_eq!(s.keys.lock().unwrap().last().unwrap(), USER_KEY);
        assert!(!html.contains(USER_KEY));
        // Recorded as a gateway request of this user.
        eventually(|| {
            let req = test::TestRequest::get()
                .uri("/api/v1/byok/stats")
                .insert_header(bearer(&starter))
                .to_request();
            let app = &app;
            async move {
                let body: Value = test::call_and_read_body_json(app, req).await;
                body["usage"]["byok_requests"] == 1
            }
        })
        .await;
        // A check sends nothing.
        let before = s.keys.lock().unwrap().len();
        let (status, _, html) = page!(
            app,
            post_form(
                "/try",
                &own,
                &[
                    ("csrf", csrf.as_str()),
                    ("model", "gpt-4o"),
                    ("prompt", "x"),
                    ("action", "check")
                ]
            )
        );
        assert_eq!(status, StatusCode::OK);
        assert!(
            text_of(&html, "try-badge")
                .unwrap()
                .starts_with("Using your OpenAI key")
        );
        assert_eq!(s.keys.lock().unwrap().len(), before);
        // An unknown model: the router's refusal next to the field.
        let (status, _, html) = page!(
            app,
            post_form(
                "/try",
                &own,
                &[
                    ("csrf", csrf.as_str()),
                    ("model", "openai/"),
                    ("prompt", "x"),
                    ("action", "send")
                ]
            )
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(html.contains("id=\"try-model-error\""));
        // Without the page's CSRF token: refused.
        let (status, _, _) = page!(
            app,
            post_form(
                "/try",
                &own,
                &[
                    ("csrf", "nope"),
                    ("model", "gpt-4o"),
                    ("prompt", "x"),
                    ("action", "send")
                ]
            )
        );
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Platform key (a free user): its badge, the system key upstream, then the rate limit.
        let platform = sign_in!(app, free.as_str());
        let (_, _, html) = page!(app, get("/try?model=gpt-4o", &platform));
        assert_eq!(
            text_of(&html, "try-badge").unwrap(),
            "Using the platform's key"
        );
        assert!(html.contains("data-credential=\"platform\""));
        // A free user has no execution servers: said plainly, not as an error.
        assert!(!html.contains("notice error"), "{html}");
        assert!(
            text_of(&html, "try-server")
                .unwrap()
                .contains("No execution server set")
        );
        let csrf = csrf_of(&html);
        let send = |prompt: &'static str| {
            post_form(
                "/try",
                &platform,
                &[
                    ("csrf", csrf.as_str()),
                    ("model", "gpt-4o"),
                    ("prompt", prompt),
                    ("action", "send"),
                ],
            )
        };
        early_in_a_minute().await;
        let (status, _, html) = page!(app, send("Say hello"));
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(
            text_of(&html, "try-result-badge").unwrap(),
            "Using the platform's key"
        );
        assert_eq!(s.keys.lock().unwrap().last().unwrap(), SYSTEM_KEY);
        let (status, _, html) = page!(app, send("Say hello again"));
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{html}");
        assert!(html.contains("rate limit reached"));
    }

    #[actix_web::test]
    async fn try_it_falls_back_and_scrubs_the_platform_errors() {
        let s = stand_in().await;
        let (state, _dir) = state_with(&s, &[]).await;
        let starter = user(&state, "own@example.com", Tier::Starter).await;
        let figures = state.admin.clone();
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;
        let refused_key = "sk-proj-invalid0123456789abcdefghijklmnop";
        let (status, _, _) = call!(
            app,
            test::TestRequest::post()
                .uri("/api/v1/byok/keys/add")
                .insert_header(bearer(&starter))
                .set_json(json!({"provider": "openai", "key": refused_key})),
        );
        assert_eq!(status, StatusCode::OK);
        let cookie = sign_in!(app, starter.as_str());
        let (_, _, html) = page!(app, get("/try?model=gpt-4o", &cookie));
        let csrf = csrf_of(&html);
        let send = |prompt: &'static str| {
            post_form(
                "/try",
                &cookie,
                &[
                    ("csrf", csrf.as_str()),
                    ("model", "gpt-4o"),
                    ("prompt", prompt),
                    ("action", "send"),
                ],
            )
        };
        // user_only: the provider's refusal of the user's own key, as a notice.
        let (status, _, html) = page!(app, send("hi"));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{html}");
        assert!(html.contains("class=\"notice error\""), "{html}");

        // user_then_system: the platform's key answers, and the result says so.
        let (status, _, _) = call!(
            app,
            test::TestRequest::put()
                .uri("/api/v1/byok/settings")
                .insert_header(bearer(&starter))
                .set_json(json!({"fallback_policy": "user_then_system"})),
        );
        assert_eq!(status, StatusCode::OK);
        let (_, _, html) = page!(app, get("/try?model=gpt-4o", &cookie));
        assert!(html.contains("id=\"try-fallback\""));
        let (status, _, html) = page!(app, send("hi"));
        assert_eq!(status, StatusCode::OK, "{html}");
        assert_eq!(
            text_of(&html, "try-result-badge").unwrap(),
            "Using the platform's key"
        );
        assert!(html.contains("id=\"try-fell-back\""));
        assert_eq!(s.keys.lock().unwrap().last().unwrap(), SYSTEM_KEY);
        // The usage records say so: the operators' fallback count.
        eventually(|| {
            let figures = figures.clone();
            async move {
                let f = figures
                    .figures(byok_core::services::Actor::Host, 30)
                    .await
                    .unwrap();
                f.usage.fallbacks == 1
                    && f.usage.own_requests == 2
                    && f.usage.platform_requests == 1
            }
        })
        .await;

        // The platform provider's error quoting its key: the user reads a generic message.
        let (status, _, html) = page!(app, send("please leak"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
        assert!(!html.contains(SYSTEM_KEY), "{html}");
        assert!(!html.contains("acct_42"), "{html}");
        assert!(!html.contains(refused_key));
    }

    #[actix_web::test]
    async fn administration_is_for_operators() {
        let s = stand_in().await;
        let (state, _dir) = state_with(&s, &[]).await;
        let op_token = user(&state, "op@example.com", Tier::Enterprise).await;
        let plain_token = user(&state, "plain@example.com", Tier::Starter).await;
        let op = state
            .admin
            .find(byok_core::services::Actor::Host, "op@example.com")
            .await
            .unwrap();
        state
            .admin
            .set_role(
                byok_core::services::Actor::Host,
                op.id,
                byok_core::Role::Operator,
            )
            .await
            .unwrap();
        let app = test::init_service(byok_server::app::build(web::Data::new(state))).await;

        // Not an operator: a 403 page, no nav entry, and no action either.
        let plain = sign_in!(app, plain_token.as_str());
        let (status, _, html) = page!(app, get("/admin", &plain));
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("Administration is for operators"));
        let (_, _, keys_html) = page!(app, get("/keys", &plain));
        assert!(!keys_html.contains("href=\"/admin\""));
        let csrf = csrf_of(&keys_html);
        let (status, _, _) = page!(
            app,
            post_form(
                "/admin/users",
                &plain,
                &[
                    ("csrf", csrf.as_str()),
                    ("email", "x@example.com"),
                    ("tier", "free")
                ]
            )
        );
        assert_eq!(status, StatusCode::FORBIDDEN);

        // An operator sees the users and the figures.
        let cookie = sign_in!(app, op_token.as_str());
        let (status, _, html) = page!(app, get("/admin", &cookie));
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains("data-email=\"plain@example.com\""));
        assert!(html.contains("data-email=\"op@example.com\""));
        assert!(html.contains("id=\"figure-fallbacks\""));
        assert!(html.contains("href=\"/admin\""));
        let csrf = csrf_of(&html);

        // Create a user: the sign-in link is shown once, and it works.
        let (status, _, html) = page!(
            app,
            post_form(
                "/admin/users",
                &cookie,
                &[
                    ("csrf", csrf.as_str()),
                    ("email", "New@Example.com"),
                    ("tier", "starter")
                ]
            )
        );
        assert_eq!(status, StatusCode::OK, "{html}");
        let link = text_of(&html, "new-user-link").unwrap();
        assert!(link.starts_with(&format!("{ORIGIN}/login/")), "{link}");
        assert!(html.contains("data-email=\"new@example.com\""));
        let (_, _, again) = page!(app, get("/admin", &cookie));
        assert!(!again.contains(&link), "shown once");
        assert!(!again.contains("id=\"new-user-link\""));
        let secret = link.rsplit('/').next().unwrap().to_string();
        let (status, headers, _) = page!(
            app,
            test::TestRequest::post()
                .uri("/login/link")
                .insert_header((header::ORIGIN, ORIGIN))
                .set_form([("secret", secret.as_str())])
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(headers.contains_key(header::SET_COOKIE));
        // The same email again: the error next to the field.
        let (status, _, html) = page!(
            app,
            post_form(
                "/admin/users",
                &cookie,
                &[
                    ("csrf", csrf.as_str()),
                    ("email", "new@example.com"),
                    ("tier", "free")
                ]
            )
        );
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(html.contains("id=\"new-email-error\""));

        // Tier change: the user's token sees it at once.
        let plain_id = {
            let at = html.find("data-email=\"plain@example.com\"").unwrap();
            let row = &html[..at];
            let id_at = row.rfind("id=\"user-").unwrap() + "id=\"user-".len();
            row[id_at..id_at + 36].to_string()
        };
        let (status, headers, _) = page!(
            app,
            post_form(
                &format!("/admin/users/{plain_id}/tier"),
                &cookie,
                &[("csrf", csrf.as_str()), ("tier", "professional")]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers.get(header::LOCATION).unwrap(), "/admin?done=tier");
        let (_, _, body) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/byok/stats")
                .insert_header(bearer(&plain_token))
        );
        assert_eq!(body["user_tier"], "professional");

        // Disable: asked first; then their session and their token stop working.
        let (status, _, confirm) = page!(
            app,
            get(&format!("/admin/users/{plain_id}/disable"), &cookie)
        );
        assert_eq!(status, StatusCode::OK);
        assert!(confirm.contains("Disable plain@example.com?"));
        let (status, headers, _) = page!(
            app,
            post_form(
                &format!("/admin/users/{plain_id}/disable"),
                &cookie,
                &[("csrf", csrf.as_str())]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            headers.get(header::LOCATION).unwrap(),
            "/admin?done=disabled&ended=1"
        );
        let (status, headers, _) = page!(app, get("/keys", &plain));
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(
            headers
                .get(header::LOCATION)
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("/login")
        );
        let (status, _, _) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/byok/keys")
                .insert_header(bearer(&plain_token))
        );
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Enabled again: the token works again.
        let (status, _, _) = page!(
            app,
            post_form(
                &format!("/admin/users/{plain_id}/enable"),
                &cookie,
                &[("csrf", csrf.as_str())]
            )
        );
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _, _) = call!(
            app,
            test::TestRequest::get()
                .uri("/api/v1/byok/keys")
                .insert_header(bearer(&plain_token))
        );
        assert_eq!(status, StatusCode::OK);

        // Not oneself.
        let op_id = op.id.to_string();
        let (status, _, html) = page!(
            app,
            post_form(
                &format!("/admin/users/{op_id}/disable"),
                &cookie,
                &[("csrf", csrf.as_str())]
            )
        );
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(html.contains("your own account"), "{html}");
        let (status, _, _) = page!(
            app,
            post_form(
                &format!("/admin/users/{op_id}/role"),
                &cookie,
                &[("csrf", csrf.as_str()), ("role", "user")]
            )
        );
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = page!(app, get("/admin", &cookie));
        assert_eq!(status, StatusCode::OK, "still an operator");
    }
}
