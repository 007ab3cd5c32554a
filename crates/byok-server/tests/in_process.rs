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
async fn state_with(stand_in: &StandIn, extra: &[(&str, &str)]) -> (AppState, tempfile::TempDir) {
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
            f.usage.fallbacks == 1 && f.usage.own_requests == 2 && f.usage.platform_requests == 1
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
