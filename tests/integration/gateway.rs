//! The LLM gateway end to end: the real binary, a provider stand-in that speaks both APIs, and
//! canary keys that must never leak.

use std::time::{Duration, Instant};

use byok_tests::canary;
use byok_tests::db::TestDb;
use byok_tests::llm::{LlmStandIn, TEXT};
use byok_tests::server::{Env, Resp, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub struct Gw {
    pub s: TestServer,
    pub llm: LlmStandIn,
    pub env: Env,
    _db: TestDb,
    _data: tempfile::TempDir,
}

/// A gateway whose every provider (and the OpenRouter system default) is the stand-in.
pub async fn gateway(extra: &[(&str, &str)]) -> Gw {
    let llm = LlmStandIn::start().await;
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let mut env = Env::new(data.path(), &db.url)
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM)
        .set("BYOK_UPSTREAM_TIMEOUT_SECS", "2");
    for id in [
        "OPENAI",
        "ANTHROPIC",
        "OPENROUTER",
        "GROQ",
        "TOGETHER",
        "PERPLEXITY",
        "COHERE",
        "HUGGINGFACE",
        "OLLAMA_CLOUD",
    ] {
        env = env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), &llm.base);
    }
    for (k, v) in extra {
        env = env.set(k, v);
    }
    let s = TestServer::start(env.clone());
    Gw {
        s,
        llm,
        env,
        _db: db,
        _data: data,
    }
}

impl Gw {
    pub async fn add_key(&self, token: &str, provider: &str, key: &str, endpoint: Option<&str>) {
        let mut body = json!({"provider": provider, "key": key});
        if let Some(e) = endpoint {
            body["endpoint"] = json!(e);
        }
        let r = self.s.post("/api/v1/byok/keys/add", token, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    pub async fn messages(&self, token: &str, body: Value) -> Resp {
        self.s
            .send(
                self.s
                    .http
                    .post(format!("{}/v1/messages?beta=true", self.s.base))
                    .header("x-api-key", token)
                    .header("anthropic-version", "2023-06-01")
                    .header("anthropic-beta", "tools-2024-04-04")
                    .json(&body),
            )
            .await
    }

    pub async fn chat(&self, token: &str, body: Value) -> Resp {
        self.s
            .send(
                self.s
                    .http
                    .post(format!("{}/v1/chat/completions", self.s.base))
                    .bearer_auth(token)
                    .json(&body),
            )
            .await
    }
}

fn anthropic_req(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "temperature": 0, "stream": stream,
           "system": [{"type": "text", "text": "be brief"}],
           "messages": [{"role": "user", "content": "Hi"}]})
}

fn openai_req(model: &str, stream: bool) -> Value {
    json!({"model": model, "temperature": 0, "stream": stream,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"}]})
}

fn sse_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_pass_through_keeps_bytes_and_headers() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("a@example.com", "starter");
    g.add_key(&t, "anthropic", canary::ANTHROPIC, None).await;

    let body = anthropic_req("claude-sonnet-4-5", false);
    let r = g.messages(&t, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-provider"], "anthropic");
    assert_eq!(r.headers["x-byok-credential"], "user");
    assert_eq!(r.json["content"][0]["text"], TEXT);
    let seen = g.llm.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], canary::ANTHROPIC);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["anthropic-beta"], "tools-2024-04-04");
    assert!(
        !seen.headers.contains_key("authorization"),
        "the gateway token never goes upstream"
    );
    assert_eq!(
        seen.body,
        serde_json::to_vec(&body).unwrap(),
        "same format: body forwarded untouched"
    );

    let r = g
        .messages(&t, anthropic_req("claude-sonnet-4-5", true))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let names = sse_names(&r.text);
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(names.contains(&"ping".to_string()));
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_the_openrouter_default_translated() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("free@example.com", "free");
    let r = g
        .messages(&t, anthropic_req("claude-sonnet-4-5-20250929", false))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-provider"], "openrouter");
    assert_eq!(r.headers["x-byok-credential"], "system");
    assert_eq!(r.json["type"], "message");
    assert!(r.json["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(r.json["content"][0]["text"], TEXT);
    assert_eq!(r.json["stop_reason"], "end_turn");
    assert_eq!(
        r.json["usage"],
        json!({"input_tokens": 21, "output_tokens": 9})
    );
    let seen = g.llm.last();
    assert_eq!(seen.path, "/chat/completions");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {}", canary::SYSTEM)
    );
    let sent = seen.json();
    assert_eq!(sent["model"], "anthropic/claude-sonnet-4.5");
    assert_eq!(sent["temperature"], 0, "temperature 0 stays 0");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    // Streaming with a tool call: every argument fragment becomes its own input_json_delta.
    let mut req = anthropic_req("claude-tool-1", true);
    req["tools"] = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let r = g.messages(&t, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let frags = r.text.matches("input_json_delta").count();
    assert_eq!(frags, 3, "{}", r.text);
    let names = sse_names(&r.text);
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(r.text.contains(r#""stop_reason":"tool_use""#));
    assert_eq!(
        g.llm.last().json()["tools"][0]["function"]["name"],
        "get_weather"
    );
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_pass_through_and_translate_to_anthropic() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("o@example.com", "professional");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    g.add_key(&t, "anthropic", canary::ANTHROPIC, None).await;

    let body = openai_req("gpt-4o", false);
    let r = g.chat(&t, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-provider"], "openai");
    assert_eq!(r.json["choices"][0]["message"]["content"], TEXT);
    assert_eq!(g.llm.last().body, serde_json::to_vec(&body).unwrap());

    // An explicit provider prefix is rewritten in place; everything else stays as sent.
    let r = g.chat(&t, openai_req("openai/gpt-4o", false)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(g.llm.last().json()["model"], "gpt-4o");

    let r = g.chat(&t, openai_req("claude-sonnet-4-5", false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-provider"], "anthropic");
    assert_eq!(r.json["object"], "chat.completion");
    assert_eq!(r.json["choices"][0]["message"]["content"], TEXT);
    assert_eq!(r.json["usage"]["total_tokens"], 30);
    let seen = g.llm.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.json()["system"], "be brief");
    assert_eq!(seen.json()["max_tokens"], 4096);

    let mut req = openai_req("claude-tool", true);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let r = g.chat(&t, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.trim_end().ends_with("data: [DONE]"), "{}", r.text);
    assert_eq!(
        r.text.matches("\"arguments\":\"").count(),
        4,
        "name chunk + 3 fragments: {}",
        r.text
    );
    assert!(r.text.contains(r#""finish_reason":"tool_calls""#));
    assert!(
        r.text.contains(r#""prompt_tokens":21"#),
        "include_usage honoured"
    );
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_the_clients_format() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("e@example.com", "starter");
    g.add_key(&t, "openai", "sk-proj-ratelimited-CANARYopenai-0123", None)
        .await;

    let r = g
        .messages("byok_wrong", anthropic_req("claude-sonnet-4-5", false))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["type"], "error");
    assert_eq!(r.json["error"]["type"], "authentication_error");
    let r = g.chat("byok_wrong", openai_req("gpt-4o", false)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json["error"]["type"], "authentication_error");
    assert_eq!(r.json["error"]["code"], "invalid_api_key");

    let mut no_max = anthropic_req("claude-sonnet-4-5", false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let r = g.messages(&t, no_max).await;
    assert_eq!(
        (r.status, r.json["error"]["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request_error"))
    );
    let r = g.chat(&t, json!({"model": "gpt-4o"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = g
        .chat(&t, json!({"model": "custom/x", "messages": []}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no custom key stored: {}",
        r.text
    );

    // A model that needs the user's own key, for a tier that cannot have one: the hint
    // says so (review #23), on every route that resolves a model.
    let free = g.env.create_user("tierless@example.com", "free");
    let count =
        g.s.send(
            g.s.http
                .post(format!("{}/v1/messages/count_tokens", g.s.base))
                .header("x-api-key", &free)
                .header("anthropic-version", "2023-06-01")
                .json(
                    &json!({"model": "custom/x", "messages": [{"role": "user", "content": "hi"}]}),
                ),
        )
        .await;
    for r in [
        g.chat(&free, openai_req("custom/x", false)).await,
        g.messages(&free, anthropic_req("custom/x", false)).await,
        count,
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.json["error"]["type"], "permission_error", "{}", r.text);
        assert_eq!(r.json["error"]["code"], "upgrade_required", "{}", r.text);
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("this model needs your own key, which requires the starter tier"),
            "{msg}"
        );
    }

    // 429 from the user's key: passed on with retry-after (policy user_only, the default).
    let r = g.chat(&t, openai_req("gpt-4o", false)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.headers["retry-after"], "11");
    assert_eq!(r.json["error"]["type"], "rate_limit_error");
    assert_eq!(r.headers["x-byok-credential"], "user");

    let cases = [
        ("claude-error500", StatusCode::BAD_GATEWAY, "api_error"),
        (
            "claude-overloaded",
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
        ),
        ("claude-missing", StatusCode::NOT_FOUND, "not_found_error"),
        ("claude-slow", StatusCode::GATEWAY_TIMEOUT, "timeout_error"),
    ];
    for (model, status, kind) in cases {
        let r = g.messages(&t, anthropic_req(model, false)).await;
        assert_eq!(r.status, status, "{model}: {}", r.text);
        assert_eq!(r.json["error"]["type"], kind, "{model}");
    }

    // A stream cut by the provider ends with an error event, never a fake message_stop.
    let r = g.messages(&t, anthropic_req("claude-truncate", true)).await;
    assert_eq!(r.status, StatusCode::OK);
    let names = sse_names(&r.text);
    assert_eq!(
        names.last().map(String::as_str),
        Some("error"),
        "{}",
        r.text
    );
    assert!(!names.contains(&"message_stop".to_string()));
    let r = g.chat(&t, openai_req("claude-truncate", true)).await;
    assert!(
        r.text.contains("\"error\"") && !r.text.contains("[DONE]"),
        "{}",
        r.text
    );
    // Cut in the middle of an event on a same-format route: the half event is held back, so
    // the error event the client gets is whole and parses.
    let t_mid = g.env.create_user("e-mid@example.com", "starter");
    g.add_key(&t_mid, "anthropic", canary::ANTHROPIC, None)
        .await;
    let r = g
        .messages(&t_mid, anthropic_req("claude-midcut", true))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        sse_names(&r.text).last().map(String::as_str),
        Some("error"),
        "{}",
        r.text
    );
    for data in r.text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        serde_json::from_str::<Value>(data).unwrap_or_else(|e| panic!("{e}: {data}"));
    }
    // Models the OpenRouter default does not know under that name are not sent to it.
    let free = g.env.create_user("e-free@example.com", "free");
    let r = g
        .chat(&free, openai_req("groq/llama-3.3-70b-versatile", false))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // The system key was rejected upstream: that is the service's problem, a 502.
    let g2 = gateway(&[("DEFAULT_LLM_API_KEY", "sk-or-v1-invalid-CANARYsystem-xyz")]).await;
    let t2 = g2.env.create_user("e2@example.com", "free");
    let r = g2
        .messages(&t2, anthropic_req("claude-sonnet-4-5", false))
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    g.s.finish();
    g2.s.finish();
}

/// Review finding 11: unknown paths under `/v1` answered `{"code":"not_found"}`, which no LLM
/// client understands (Gemini CLI read it as "model not found"). Each client gets its own
/// error shape, and the operator a log line naming what was tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_llm_endpoints_answer_in_the_clients_shape() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("lost@example.com", "starter");
    let http = &g.s.http;
    let base = &g.s.base;
    // OpenAI clients (Codex's Responses API, before it exists here).
    let r =
        g.s.send(
            http.post(format!("{base}/v1/responses"))
                .bearer_auth(&t)
                .json(&json!({"model": "gpt-5"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (
            r.json["error"]["type"].as_str(),
            r.json["error"]["code"].as_str()
        ),
        (Some("invalid_request_error"), Some("unknown_endpoint")),
        "{}",
        r.text
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/chat/completions")
    );
    // Anthropic clients.
    let r =
        g.s.send(
            http.post(format!("{base}/v1/messages/batches"))
                .header("x-api-key", &t)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (r.json["type"].as_str(), r.json["error"]["type"].as_str()),
        (Some("error"), Some("not_found_error")),
        "{}",
        r.text
    );
    // Gemini's API shape (`google.rpc.Status`), the key in the query never logged.
    let r =
        g.s.send(
            http.post(format!(
                "{base}/v1beta/models/gemini-2.5-pro:generateContent?key={}",
                canary::OPENAI
            ))
            .header("x-goog-api-key", &t)
            .json(&json!({"contents": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (
            r.json["error"]["code"].as_u64(),
            r.json["error"]["status"].as_str()
        ),
        (Some(404), Some("NOT_FOUND")),
        "{}",
        r.text
    );
    // A key pasted into the path is not logged either.
    let r =
        g.s.send(
            http.get(format!("{base}/v1/{}/models", canary::OPENAI))
                .bearer_auth(&t),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Nor a percent-encoded key, a JWT, or a bare alphanumeric key (Mistral, Together or
    // Cohere style) in a segment.
    let encoded = canary::OPENAI.replace('-', "%2D");
    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJDQU5BUllqd3QifQ.c2ln";
    const BARE: &str = "CANARYbare0123456789abcdefghijklmnopqrst";
    assert_eq!(BARE.len(), 40);
    for path in [
        format!("/v1/{encoded}/models"),
        format!("/v1/models/{JWT}"),
        format!("/v1/engines/{BARE}/completions"),
        format!("/v1/models/x:{BARE}"),
    ] {
        let r =
            g.s.send(http.get(format!("{base}{path}")).bearer_auth(&t))
                .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // The management API keeps its own shape.
    let r = g.s.get("/api/v1/nowhere", &t).await;
    assert_eq!(r.json["code"], "not_found");
    let logs = g.s.finish();
    for tried in [
        "/v1/responses",
        "/v1/messages/batches",
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "/v1/[redacted]/models",
        "/v1/models/[redacted]",
        "/v1/engines/[redacted]/completions",
        "/v1/models/x:[redacted]",
    ] {
        assert!(logs.contains(tried), "{tried} not in the log");
    }
    canary::assert_absent("logs", &logs);
    for secret in ["eyJhbGci", "eyJzdWIi", "CANARYbare"] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

/// Security review, low 9: the system default provider's error details reached any user (a
/// provider that quotes key fragments leaked them to a free user). Users get a generic message
/// and the request id; the detail goes to the log, scrubbed. A user's own key's errors still
/// pass, scrubbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_credential_errors_stay_with_the_operator() {
    let g = gateway(&[]).await;
    let free = g.env.create_user("free@example.com", "free");
    let system_fragment = &canary::SYSTEM[..12];
    for ingress in ["anthropic", "openai"] {
        let body = json!({"model": "openrouter/some-echokey-model", "max_tokens": 10,
                          "messages": [{"role": "user", "content": "hi"}]});
        let r = if ingress == "anthropic" {
            g.messages(&free, body).await
        } else {
            g.s.post("/v1/chat/completions", &free, body).await
        };
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        let msg = r.json["error"]["message"].as_str().unwrap();
        assert!(
            !msg.contains(system_fragment) && !msg.contains("CANARYaccount"),
            "{ingress}: {msg}"
        );
        let id = r.headers["x-request-id"].to_str().unwrap();
        assert!(msg.contains(id), "the request id itself is in {msg}");
    }
    // Mid-stream errors (OpenRouter reports failures as HTTP 200 and an error chunk): the
    // default provider here speaks OpenAI, so OpenAI clients get the stream passed through and
    // Anthropic clients get it translated.
    let g2 = gateway(&[("DEFAULT_LLM_PROVIDER", "anthropic")]).await;
    let free2 = g2.env.create_user("free2@example.com", "free");
    for (gw, token, model, ingress, kind) in [
        (
            &g,
            &free,
            "openrouter/x-streamerror",
            "openai",
            "same format",
        ),
        (
            &g,
            &free,
            "openrouter/x-streamerror",
            "anthropic",
            "translated",
        ),
        (
            &g2,
            &free2,
            "claude-streamerror",
            "anthropic",
            "same format",
        ),
        (&g2, &free2, "claude-streamerror", "openai", "translated"),
    ] {
        let body = json!({"model": model, "max_tokens": 10, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
        let r = if ingress == "anthropic" {
            gw.messages(token, body).await
        } else {
            gw.s.post("/v1/chat/completions", token, body).await
        };
        assert_eq!(r.status, StatusCode::OK, "{ingress} {kind}: {}", r.text);
        assert_eq!(r.headers["x-byok-credential"], "system");
        let id = r.headers["x-request-id"].to_str().unwrap();
        let text = &r.text;
        assert!(
            !text.contains(system_fragment) && !text.contains("CANARYaccount"),
            "{ingress} {kind}: {text}"
        );
        let error = text
            .split("\n\n")
            .find(|ev| ev.contains("\"error\""))
            .unwrap_or_else(|| panic!("{ingress} {kind}: no error event in {text}"));
        let data: Value = serde_json::from_str(
            error
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        let msg = data["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(id),
            "{ingress} {kind}: the request id is in {msg}"
        );
        if ingress == "anthropic" {
            assert!(error.starts_with("event: error"), "{error}");
            assert_eq!(data["type"], "error");
            assert_eq!(
                sse_names(text).last().map(String::as_str),
                Some("error"),
                "{text}"
            );
        } else {
            assert!(!text.contains("[DONE]"), "{text}");
        }
    }
    // A user's own key: the provider's message is theirs to read, streams included.
    let t = g.env.create_user("own@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let r =
        g.s.post(
            "/v1/chat/completions",
            &t,
            json!({"model": "gpt-4o-echokey", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("CANARYaccount"), "{msg}");
    for ingress in ["openai", "anthropic"] {
        let body = json!({"model": "gpt-4o-streamerror", "max_tokens": 10, "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]});
        let r = if ingress == "anthropic" {
            g.messages(&t, body).await
        } else {
            g.s.post("/v1/chat/completions", &t, body).await
        };
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.text.contains("CANARYaccount"), "{ingress}: {}", r.text);
    }
    let logs = g.s.finish();
    assert!(
        logs.contains("CANARYaccount"),
        "the operator sees the detail"
    );
    assert!(
        logs.matches("CANARYaccount").count() >= 4,
        "the stream errors are logged too"
    );
    canary::assert_absent("logs", &logs);
    let logs = g2.s.finish();
    assert!(
        logs.matches("CANARYaccount").count() >= 2,
        "the operator sees the stream errors: {logs}"
    );
    canary::assert_absent("logs", &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_policy_tier_and_key_changes() {
    let g = gateway(&[("BYOK_AUTH_CACHE_TTL_SECS", "1")]).await;
    let t = g.env.create_user("f@example.com", "starter");
    g.add_key(&t, "openai", "sk-proj-ratelimited-0123456789abcdef", None)
        .await;
    let r = g.s.get("/api/v1/byok/settings", &t).await;
    assert_eq!(r.json, json!({"fallback_policy": "user_only"}));
    assert_eq!(
        g.chat(&t, openai_req("gpt-4o", false)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let r =
        g.s.call(
            reqwest::Method::PUT,
            "/api/v1/byok/settings",
            Some(&t),
            Some(json!({"fallback_policy": "user_then_system"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r =
        g.s.call(
            reqwest::Method::PUT,
            "/api/v1/byok/settings",
            Some(&t),
            Some(json!({"fallback_policy": "sometimes"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = g.chat(&t, openai_req("gpt-4o", false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-byok-credential"], "system");
    assert_eq!(r.headers["x-byok-provider"], "openrouter");
    assert_eq!(g.llm.last().json()["model"], "openai/gpt-4o");

    // A key change takes effect on the next request.
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let r = g.chat(&t, openai_req("gpt-4o", false)).await;
    assert_eq!(r.headers["x-byok-credential"], "user");
    assert_eq!(
        g.llm.last().headers["authorization"],
        format!("Bearer {}", canary::OPENAI)
    );
    assert_eq!(
        g.s.delete("/api/v1/byok/keys/openai", &t).await.status,
        StatusCode::OK
    );
    let r = g.chat(&t, openai_req("gpt-4o", false)).await;
    assert_eq!(
        r.headers["x-byok-credential"], "system",
        "a deleted key is never used again"
    );

    // A downgrade to free: the user's key is no longer used.
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    assert_eq!(
        g.chat(&t, openai_req("gpt-4o", false)).await.headers["x-byok-credential"],
        "user"
    );
    assert!(
        g.env
            .cli(&[
                "user",
                "set-tier",
                "--email",
                "f@example.com",
                "--tier",
                "free"
            ])
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = g.chat(&t, openai_req("gpt-4o", false)).await;
        if r.headers["x-byok-credential"] == "system" {
            break;
        }
        assert!(Instant::now() < deadline, "the downgrade never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_endpoints_pass_the_target_policy() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("s@example.com", "starter");
    let port = g.llm.base.rsplit(':').next().unwrap().to_string();
    for endpoint in [
        g.llm.base.clone(),
        "http://169.254.169.254/v1".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://0x7f.1:{port}/v1"),
        "http://10.1.2.3/v1".to_string(),
    ] {
        g.add_key(&t, "custom", canary::CUSTOM, Some(&endpoint))
            .await;
        let before = g.llm.count();
        let r = g.chat(&t, openai_req("custom/my-model", false)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{endpoint}: {}",
            r.text
        );
        assert_eq!(r.json["error"]["code"], "forbidden_target", "{}", r.text);
        assert!(
            r.json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not an allowed target")
        );
        assert_eq!(g.llm.count(), before, "{endpoint}: nothing was sent");
    }
    // Free users cannot use custom endpoints at all.
    let free = g.env.create_user("s2@example.com", "free");
    let r = g.chat(&free, openai_req("custom/my-model", false)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    g.s.finish();

    // Allow-listed by the operator: the custom endpoint (OpenAI-compatible) is used.
    let g = gateway(&[("BYOK_ALLOWED_TARGETS", "127.0.0.1/32")]).await;
    let t = g.env.create_user("s3@example.com", "starter");
    g.add_key(
        &t,
        "custom",
        canary::CUSTOM,
        Some(&format!("{}/v1", g.llm.base)),
    )
    .await;
    let r = g.chat(&t, openai_req("custom/my-model", false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let seen = g.llm.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.json()["model"], "my-model");
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_models_and_usage() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("c@example.com", "starter");
    g.add_key(&t, "anthropic", canary::ANTHROPIC, None).await;
    let count = |model: &str| {
        let req = json!({"model": model, "messages": [{"role": "user", "content": "Hello there, how are you?"}]});
        g.s.send(
            g.s.http
                .post(format!("{}/v1/messages/count_tokens", g.s.base))
                .header("x-api-key", &t)
                .json(&req),
        )
    };
    let r = count("claude-sonnet-4-5").await;
    assert_eq!(r.json, json!({"input_tokens": 42}), "exact from Anthropic");
    assert_eq!(r.headers["x-byok-token-count"], "exact");
    assert_eq!(g.llm.last().path, "/v1/messages/count_tokens");
    let r = count("gpt-4o").await;
    assert_eq!(r.headers["x-byok-token-count"], "estimate");
    assert!(r.json["input_tokens"].as_u64().unwrap() > 5);

    let r =
        g.s.send(
            g.s.http
                .get(format!("{}/v1/models", g.s.base))
                .header("x-api-key", &t)
                .header("anthropic-version", "2023-06-01"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<&str> = r.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"claude-sonnet-4-5"), "{ids:?}");
    assert!(
        ids.contains(&"gpt-4o"),
        "the system default's models: {ids:?}"
    );

    g.messages(&t, anthropic_req("claude-sonnet-4-5", false))
        .await;
    g.messages(&t, anthropic_req("claude-sonnet-4-5", true))
        .await;
    g.chat(&t, openai_req("gpt-4o", false)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let u = g.s.get("/api/v1/byok/stats", &t).await.json["usage"].clone();
        if u["requests"] == 3 {
            break u;
        }
        assert!(Instant::now() < deadline, "usage not recorded: {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(usage["byok_requests"], 2);
    assert_eq!(usage["system_requests"], 1);
    assert_eq!(usage["input_tokens"], 63);
    assert_eq!(usage["output_tokens"], 27);
    assert_eq!(usage["by_provider"].as_array().unwrap().len(), 2);
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    use futures_util::StreamExt;
    let g = gateway(&[]).await;
    let t = g.env.create_user("d@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let resp =
        g.s.http
            .post(format!("{}/v1/chat/completions", g.s.base))
            .bearer_auth(&t)
            .json(&openai_req("gpt-endless", true))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("tick"),
        "streamed before the end"
    );
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.llm.disconnected.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the upstream stream kept running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_route_reaches_its_documented_path() {
    let g = gateway(&[
        ("BYOK_ALLOWED_TARGETS", "127.0.0.1/32"),
        ("BYOK_PROVIDER_OLLAMA_BASE_URL", ""),
    ])
    .await;
    let t = g.env.create_user("all@example.com", "enterprise");
    let ollama = g.llm.base.clone();
    let custom = format!("{}/custom/v1", g.llm.base);
    let keys: [(&str, &str, Option<&str>, &str); 10] = [
        ("openai", canary::OPENAI, None, "/chat/completions"),
        ("groq", canary::GROQ, None, "/chat/completions"),
        (
            "together",
            "together-CANARYopenai-0123456789abcdef",
            None,
            "/chat/completions",
        ),
        ("perplexity", canary::PERPLEXITY, None, "/chat/completions"),
        (
            "huggingface",
            "hf_CANARYopenai0123456789abcdef",
            None,
            "/chat/completions",
        ),
        (
            "cohere",
            "cohere-CANARYopenai-0123456789abcdef",
            None,
            "/chat/completions",
        ),
        ("openrouter", canary::OPENROUTER, None, "/chat/completions"),
        (
            "ollama",
            "ollama-CANARYopenai-key",
            Some(ollama.as_str()),
            "/v1/chat/completions",
        ),
        (
            "custom",
            canary::CUSTOM,
            Some(custom.as_str()),
            "/custom/v1/chat/completions",
        ),
        // Ollama Cloud: its OpenAI-compatible API under the base `https://ollama.com`.
        (
            "ollama_cloud",
            "ollama-cloud-CANARYopenai-key",
            None,
            "/v1/chat/completions",
        ),
    ];
    for (provider, key, endpoint, path) in keys {
        g.add_key(&t, provider, key, endpoint).await;
        let r = g
            .chat(&t, openai_req(&format!("{provider}/some-model"), false))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{provider}: {}", r.text);
        assert_eq!(r.headers["x-byok-provider"], provider);
        assert_eq!(r.headers["x-byok-credential"], "user");
        let seen = g.llm.last();
        assert_eq!(seen.path, path, "{provider}");
        assert_eq!(
            seen.headers["authorization"],
            format!("Bearer {key}"),
            "{provider}"
        );
        assert_eq!(seen.json()["model"], "some-model", "{provider}");
    }
    // Ollama takes no key: stored empty, no Authorization header sent.
    g.add_key(&t, "ollama", "", Some(&ollama)).await;
    let r = g.chat(&t, openai_req("ollama/llama3.2", false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!g.llm.last().headers.contains_key("authorization"));
    g.add_key(&t, "anthropic", canary::ANTHROPIC, None).await;
    let r = g
        .messages(&t, anthropic_req("anthropic/claude-x", false))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = g.llm.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], canary::ANTHROPIC);
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_format_openai_streams_record_usage_without_changing_the_client_stream() {
    let g = gateway(&[]).await;
    let t = g.env.create_user("u@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let mut req = openai_req("gpt-4o", true);
    req.as_object_mut().unwrap().remove("stream_options");
    let r = g.chat(&t, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.text.contains("prompt_tokens"),
        "the client did not ask for usage: {}",
        r.text
    );
    assert!(r.text.trim_end().ends_with("data: [DONE]"));
    let sent = g.llm.last().json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asked for it"
    );
    assert_eq!(
        sent["messages"][1]["content"], "Hi",
        "everything else as sent"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = g.s.get("/api/v1/byok/stats", &t).await.json["usage"].clone();
        if u["requests"] == 1 {
            assert_eq!(
                (u["input_tokens"].as_u64(), u["output_tokens"].as_u64()),
                (Some(21), Some(9))
            );
            break;
        }
        assert!(Instant::now() < deadline, "usage not recorded: {u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    g.s.finish();
}
