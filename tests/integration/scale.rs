//! Running several replicas: cross-replica cache invalidation (PostgreSQL LISTEN/NOTIFY), rate
//! limits shared through a real Redis, graceful shutdown on SIGTERM, and `/metrics` read by the
//! official Prometheus client library's parser.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use byok_tests::canary;
use byok_tests::db::TestDb;
use byok_tests::llm::LlmStandIn;
use byok_tests::redis::TestRedis;
use byok_tests::server::{Env, Resp, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The documented bound for a change made on one replica to reach another while the
/// invalidation feed is up (docs/deploying.md). The caches' TTLs are set far above it below,
/// so only the feed can explain a change seen within it.
const INVALIDATION_BOUND: Duration = Duration::from_secs(2);

fn env_for(data: &std::path::Path, db_url: &str, llm: &LlmStandIn) -> Env {
    let mut env = Env::new(data, db_url)
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM)
        .set("RUST_LOG", "info");
    for id in ["OPENAI", "ANTHROPIC", "OPENROUTER"] {
        env = env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), &llm.base);
    }
    env
}

/// One gateway on its own SQLite database, every provider pointed at a stand-in.
struct Single {
    llm: LlmStandIn,
    db: TestDb,
    env: Env,
    _data: tempfile::TempDir,
}

async fn single(extra: &[(&str, &str)]) -> Single {
    setup(TestDb::sqlite(), extra).await
}

/// Replicas' shared configuration: one PostgreSQL database and one `ENCRYPTION_KEY`.
async fn replicas(extra: &[(&str, &str)]) -> Single {
    let mut s = setup(TestDb::postgres().await, extra).await;
    let key = shared_key(&s.env);
    s.env = s.env.set("ENCRYPTION_KEY", &key);
    s
}

async fn setup(db: TestDb, extra: &[(&str, &str)]) -> Single {
    let llm = LlmStandIn::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut env = env_for(data.path(), &db.url, &llm);
    for (k, v) in extra {
        env = env.set(k, v);
    }
    Single {
        llm,
        db,
        env,
        _data: data,
    }
}

async fn chat(s: &TestServer, token: &str, model: &str) -> Resp {
    s.send(
        s.http
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(token)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})),
    )
    .await
}

/// Which credential served an OpenAI-model request (`user` or `system`; empty when it failed).
async fn credential(s: &TestServer, token: &str) -> String {
    let r = chat(s, token, "openai/gpt-4o-mini").await;
    r.headers
        .get("x-byok-credential")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn add_openai_key(s: &TestServer, token: &str) {
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            token,
            json!({"provider": "openai", "key": canary::OPENAI}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// Waits, up to the invalidation bound, until `s` serves `token` with the credential `want`;
/// returns how long that took.
async fn until_credential(s: &TestServer, token: &str, want: &str, what: &str) -> Duration {
    within(INVALIDATION_BOUND, || async {
        credential(s, token).await == want
    })
    .await
    .unwrap_or_else(|| panic!("{what}: still not `{want}` after {INVALIDATION_BOUND:?}"))
}

/// Polls `check` until it holds or `bound` passes; returns how long it took.
async fn within<F, Fut>(bound: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wait_for_log(s: &TestServer, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.logs().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the logs:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn shared_key(env: &Env) -> String {
    let out = env.cli(&["generate-key"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_other_at_once() {
    // TTLs far above the bound: only the invalidation feed can make a change visible in time.
    let Single {
        llm,
        db: _db,
        env,
        _data,
    } = replicas(&[
        ("BYOK_CREDENTIAL_CACHE_TTL_SECS", "600"),
        ("BYOK_AUTH_CACHE_TTL_SECS", "600"),
    ])
    .await;
    let a = TestServer::start(env.clone());
    let b = TestServer::start(env.clone());
    for s in [&a, &b] {
        wait_for_log(s, "listening for cache invalidations");
    }
    let t = env.create_user("replicas@example.com", "starter");

    // A key added on A is used by B (B had cached "no key" before).
    assert_eq!(credential(&b, &t).await, "system");
    add_openai_key(&a, &t).await;
    let took = until_credential(&b, &t, "user", "B kept ignoring the key added on A").await;
    eprintln!("key added on A used by B after {took:?}");
    assert_eq!(
        llm.last().headers["authorization"],
        format!("Bearer {}", canary::OPENAI)
    );

    // Deleted on A: B stops using it.
    let r = a.delete("/api/v1/byok/keys/openai", &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let took = until_credential(&b, &t, "system", "B kept using a key deleted on A").await;
    eprintln!("key deleted on A dropped by B after {took:?}");
    assert_eq!(
        llm.last().headers["authorization"],
        format!("Bearer {}", canary::SYSTEM)
    );

    // A token revoked on A is refused by B, which had it cached.
    let created = a
        .post("/api/v1/tokens", &t, json!({"name": "second"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let second = created.json["token"].as_str().unwrap().to_string();
    let id = created.json["id"].as_str().unwrap().to_string();
    assert_eq!(
        chat(&b, &second, "openai/gpt-4o-mini").await.status,
        StatusCode::OK
    );
    let r = a.delete(&format!("/api/v1/tokens/{id}"), &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let took = within(INVALIDATION_BOUND, || async {
        chat(&b, &second, "openai/gpt-4o-mini").await.status == StatusCode::UNAUTHORIZED
    })
    .await
    .expect("B kept accepting a token revoked on A");
    eprintln!("token revoked on A refused by B after {took:?}");
    assert_eq!(
        chat(&b, &t, "openai/gpt-4o-mini").await.status,
        StatusCode::OK,
        "the other token still works"
    );

    // A tier change from the CLI (a third process) reaches both: on `free`, the user's own key
    // is no longer used.
    add_openai_key(&a, &t).await;
    until_credential(&b, &t, "user", "B ignored the key added again").await;
    let out = env.cli(&[
        "user",
        "set-tier",
        "--email",
        "replicas@example.com",
        "--tier",
        "free",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [&a, &b] {
        let took = until_credential(s, &t, "system", "a replica kept the old tier").await;
        eprintln!("tier change from the CLI seen after {took:?}");
    }
    a.finish();
    b.finish();
}

/// Waits, if needed, so that the next `secs` seconds fall inside one rate-limit window.
async fn clear_of_window_edge(window: u64, secs: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = window - now.as_secs() % window;
    if left <= secs {
        tokio::time::sleep(Duration::from_secs(left) + Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_replicas_through_redis() {
    const LIMIT: usize = 60;
    const WINDOW: u64 = 3600;
    let redis = TestRedis::start();
    let Single {
        llm: _llm,
        db: _db,
        env,
        _data,
    } = replicas(&[
        ("REDIS_URL", &redis.url),
        ("BYOK_RATE_LIMITS", &format!("starter={LIMIT}")),
        ("BYOK_RATE_LIMIT_WINDOW_SECS", &WINDOW.to_string()),
    ])
    .await;
    let a = TestServer::start(env.clone());
    let b = TestServer::start(env.clone());
    for s in [&a, &b] {
        wait_for_log(s, "rate limits shared through Redis");
    }
    let t = env.create_user("limited@example.com", "starter");
    let other = env.create_user("other@example.com", "starter");
    clear_of_window_edge(WINDOW, 60).await;

    // 3 × the limit, alternating replicas, 8 at a time.
    let mut allowed = 0;
    let mut limited = Vec::new();
    for round in 0..(3 * LIMIT / 8) {
        let replies = futures_util::future::join_all((0..8).map(|i| {
            let s = if (round * 8 + i) % 2 == 0 { &a } else { &b };
            chat(s, &t, "openai/gpt-4o-mini")
        }))
        .await;
        for r in replies {
            match r.status {
                StatusCode::OK => allowed += 1,
                StatusCode::TOO_MANY_REQUESTS => limited.push(r),
                s => panic!("unexpected {s}: {}", r.text),
            }
        }
    }
    let off = (allowed as f64 - LIMIT as f64).abs() / LIMIT as f64;
    eprintln!(
        "allowed {allowed} of {} with a limit of {LIMIT}",
        3 * LIMIT / 8 * 8
    );
    assert!(off <= 0.05, "allowed {allowed}, limit {LIMIT}");
    let r = &limited[0];
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=WINDOW).contains(&retry), "retry-after {retry}");
    assert_eq!(r.json["error"]["code"], "rate_limit_exceeded", "{}", r.text);
    // Another user is not affected.
    assert_eq!(
        chat(&a, &other, "openai/gpt-4o-mini").await.status,
        StatusCode::OK
    );

    // The refusals are counted (no user id in the labels).
    let m = a.get("/metrics", "").await;
    assert!(
        m.text.contains("byok_rate_limited_total{scope=\"user\"}"),
        "{}",
        m.text
    );
    assert!(!m.text.contains("limited@example.com"));
    drop(redis);

    // Redis gone: each replica counts alone (the documented fallback), and keeps serving.
    let third = env.create_user("third@example.com", "starter");
    let mut a_allowed = 0;
    for _ in 0..(LIMIT + 5) {
        match chat(&a, &third, "openai/gpt-4o-mini").await.status {
            StatusCode::OK => a_allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("unexpected {s} with Redis down"),
        }
    }
    assert_eq!(a_allowed, LIMIT, "per-replica limit while Redis is down");
    assert!(a.logs().contains("Redis unavailable"), "{}", a.logs());
    a.finish();
    b.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limit_counts_per_token_and_a_tier_limit_per_user() {
    let Single {
        llm: _llm,
        db: _db,
        env,
        _data,
    } = single(&[
        ("BYOK_TOKEN_RATE_LIMIT", "3"),
        ("BYOK_RATE_LIMITS", "free=5,starter=0"),
        ("BYOK_RATE_LIMIT_WINDOW_SECS", "3600"),
    ])
    .await;
    let s = TestServer::start(env.clone());
    clear_of_window_edge(3600, 30).await;
    let first = env.create_user("tokens@example.com", "starter");
    let second = s
        .post("/api/v1/tokens", &first, json!({"name": "ci"}))
        .await;
    let second = second.json["token"].as_str().unwrap().to_string();
    let statuses = |n| {
        let s = &s;
        let token = first.clone();
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(chat(s, &token, "openai/gpt-4o-mini").await.status.as_u16());
            }
            out
        }
    };
    assert_eq!(statuses(4).await, [200, 200, 200, 429], "per token");
    // The same user's other token has its own count (starter: no per-user limit).
    assert_eq!(
        chat(&s, &second, "openai/gpt-4o-mini").await.status,
        StatusCode::OK
    );
    // A free user: 5 per window across tokens; the per-token limit (3) comes first per token.
    let free = env.create_user("free-limited@example.com", "free");
    let free2 = s.post("/api/v1/tokens", &free, json!({"name": "2"})).await;
    let free2 = free2.json["token"].as_str().unwrap().to_string();
    let mut got = Vec::new();
    for t in [&free, &free, &free, &free2, &free2, &free2] {
        got.push(chat(&s, t, "openai/gpt-4o-mini").await.status.as_u16());
    }
    assert_eq!(
        got,
        [200, 200, 200, 200, 200, 429],
        "per user across tokens"
    );
    // Anthropic clients get their own error shape.
    let r = s
        .send(
            s.http
                .post(format!("{}/v1/messages", s.base))
                .header("x-api-key", &free2)
                .json(
                    &json!({"model": "anthropic/claude-sonnet-4-5", "max_tokens": 8,
                              "messages": [{"role": "user", "content": "Hi"}]}),
                ),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json["type"], "error");
    assert_eq!(r.json["error"]["type"], "rate_limit_error");
    assert!(r.headers.contains_key("retry-after"));
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_then_exits_zero() {
    let Single {
        llm: _llm,
        db,
        env,
        _data,
    } = single(&[
        ("BYOK_SHUTDOWN_TIMEOUT_SECS", "20"),
        ("BYOK_SHUTDOWN_DRAIN_SECS", "1"),
    ])
    .await;
    let mut s = TestServer::start(env.clone());
    let t = env.create_user("stream@example.com", "starter");
    let base = s.base.clone();

    let resp = s
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&t)
        .json(&json!({"model": "openai/gpt-4o-mini-drip", "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // Mid-stream: SIGTERM. First readiness fails (load balancers stop sending traffic)...
    s.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = byok_tests::http_client()
        .build()
        .unwrap()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "draining");
    // ...then, after BYOK_SHUTDOWN_DRAIN_SECS, no new connection is taken.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = byok_tests::http_client()
        .build()
        .unwrap()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted after SIGTERM"
    );

    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream was cut"),
        ));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let status = s
        .wait_exit(Duration::from_secs(15))
        .expect("still running 15 s after the stream ended");
    assert!(status.success(), "exit status {status}");
    let logs = s.logs();
    assert!(logs.contains("shutting down"), "{logs}");

    // The stream's usage record was flushed before exit.
    let db_handle = db.open().await;
    let users = byok_core::ports::UserRepository::find_by_email(&db_handle, "stream@example.com")
        .await
        .unwrap()
        .unwrap();
    let usage = byok_core::ports::UsageRepository::usage_summary(&db_handle, users.id)
        .await
        .unwrap();
    assert_eq!(usage.requests, 1, "{usage:?}");
    s.finish();
}

/// Parses `/metrics` with `prometheus_client.parser` (the official Python client) into
/// `{name{labels}: value}` lines.
fn parse_metrics(text: &str) -> Value {
    let code = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(byok_tests::python())
        .args(["-c", code])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(m: &Value, key: &str) -> f64 {
    m.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move() {
    let Single {
        llm: _llm,
        db: _db,
        env,
        _data,
    } = single(&[("BYOK_METRICS_TOKEN", "scrape-secret")]).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("metrics@example.com", "starter");
    let free = env.create_user("free@example.com", "free");

    let unauth = s.get("/metrics", "wrong").await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    // (No scrape yet: the adoption counts are read at the first one and reused for 30 s.)

    add_openai_key(&s, &t).await;
    for _ in 0..3 {
        assert_eq!(
            chat(&s, &t, "openai/gpt-4o-mini").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        chat(&s, &free, "openai/gpt-4o-mini").await.status,
        StatusCode::OK
    );
    let test = s.post("/api/v1/byok/keys/test/openai", &t, json!({})).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.text);
    // A request to a path that does not exist is labelled `unmatched`, not by its path.
    let _ = s.get("/secret-looking/path/sk-123", &t).await;

    let text = s.get("/metrics", "scrape-secret").await.text;
    let after = parse_metrics(&text);
    let http =
        r#"byok_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}"#;
    assert_eq!(value(&after, http), 4.0, "{text}");
    let byok = r#"byok_llm_requests_total{credential="user",provider="openai",status="200",stream="false"}"#;
    assert_eq!(value(&after, byok), 3.0, "{text}");
    let system = r#"byok_llm_requests_total{credential="system",provider="openrouter",status="200",stream="false"}"#;
    assert_eq!(value(&after, system), 1.0, "{text}");
    assert_eq!(
        value(
            &after,
            r#"byok_llm_request_duration_seconds_count{credential="user",provider="openai"}"#
        ),
        3.0
    );
    assert!(
        value(
            &after,
            r#"byok_upstream_response_seconds_count{provider="openai"}"#
        ) >= 3.0
    );
    assert_eq!(
        value(&after, r#"byok_users{kind="with_keys"}"#),
        1.0,
        "{text}"
    );
    assert!(value(&after, r#"byok_users{kind="eligible"}"#) >= 1.0);
    assert_eq!(value(&after, r#"byok_keys{provider="openai"}"#), 1.0);
    assert!(
        after
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("byok_key_tests_total{provider=\"openai\"")),
        "{text}"
    );
    assert!(
        value(
            &after,
            r#"byok_cache_requests_total{cache="credential",result="hit"}"#
        ) >= 1.0
    );
    assert!(value(&after, r#"byok_db_pool_connections{state="max"}"#) >= 1.0);
    assert!(
        value(
            &after,
            r#"byok_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ) >= 1.0
    );
    for forbidden in [
        "metrics@example.com",
        "secret-looking",
        "sk-123",
        "gpt-4o-mini",
    ] {
        assert!(!text.contains(forbidden), "{forbidden} in /metrics");
    }
    s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_continued_logged_and_propagated() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let Single {
        llm,
        db: _db,
        env,
        _data,
    } = single(&[("BYOK_LOG_FORMAT", "json")]).await;
    let s = TestServer::start(env.clone());
    let t = env.create_user("trace@example.com", "starter");
    let r = s
        .send(
            s.http
                .post(format!("{}/v1/chat/completions", s.base))
                .bearer_auth(&t)
                .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
                .json(&json!({"model": "openai/gpt-4o-mini",
                              "messages": [{"role": "user", "content": "Hi"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Upstream: the same trace, this request as the parent.
    let upstream = llm.last().headers["traceparent"].clone();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"));
    assert_ne!(parts[2], "00f067aa0ba902b7");
    // One JSON line for the request, with the trace id and the LLM fields.
    let logs = s.logs();
    let line: Value = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v.to_string().contains("/v1/chat/completions"))
        .unwrap_or_else(|| panic!("no request line:\n{logs}"));
    let text = line.to_string();
    assert!(text.contains(TRACE), "{text}");
    // The answer is streamed through, so its LLM fields (usage is known at its end) come on the
    // request's own `llm request` line, in the same trace.
    let llm_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "llm request")
        .unwrap_or_else(|| panic!("no llm request line:\n{logs}"))
        .to_string();
    assert!(llm_line.contains(TRACE), "{llm_line}");
    assert!(
        llm_line.contains(r#""provider":"openrouter""#),
        "{llm_line}"
    );
    // Without a traceparent, a new trace is started (and still propagated).
    let _ = chat(&s, &t, "openai/gpt-4o-mini").await;
    let fresh = llm.last().headers["traceparent"].clone();
    assert!(
        fresh.starts_with("00-") && !fresh.contains(TRACE),
        "{fresh}"
    );
    s.finish();
}
