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

/// A fresh service state: its own data directory, database and generated encryption key.
async fn state() -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_vars([("BYOK_DATA_DIR", dir.path().display().to_string())])
        .expect("settings");
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
