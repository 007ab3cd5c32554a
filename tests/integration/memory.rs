//! The gateway's memory under huge or hostile upstream answers (security review, issue 13,
//! item 4): a user's endpoint answering 60 MB, six times at once, must not grow the process
//! without bound; same-format answers stream through, translated ones are capped and share a
//! process-wide buffer budget, and each user has a cap on concurrent LLM requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use byok_tests::canary;
use byok_tests::db::TestDb;
use byok_tests::server::{Env, TestServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::gateway::gateway;

const MIB: usize = 1024 * 1024;
/// What the big answer reports as its usage (at the end of the body, after decoys).
const PROMPT_TOKENS: u64 = 1234;
const COMPLETION_TOKENS: u64 = 5678;
/// Peak resident memory the gateway may reach under the attack.
const MAX_PEAK_KIB: u64 = 150 * 1024;

/// A valid OpenAI chat completion of about `size` bytes: a huge `content` string holding a
/// decoy `"usage"` (escaped quotes), a nested `usage` object inside the choice, and the real
/// `usage` at the end.
fn big_answer(size: usize) -> Vec<u8> {
    let head = br#"{"id":"chatcmpl-big","object":"chat.completion","created":1700000000,"model":"big","choices":[{"index":0,"message":{"role":"assistant","content":"decoy \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1} \\ "#;
    let tail = format!(
        r#""}},"logprobs":null,"finish_reason":"stop","extra":{{"usage":{{"prompt_tokens":7,"completion_tokens":7}}}}}}],"usage":{{"prompt_tokens":{PROMPT_TOKENS},"completion_tokens":{COMPLETION_TOKENS},"total_tokens":{}}}}}"#,
        PROMPT_TOKENS + COMPLETION_TOKENS
    );
    let mut out = Vec::with_capacity(size + 512);
    out.extend_from_slice(head);
    let line = b"All work and no play makes Jack a dull boy. {\\\"usage\\\": [1,2]}\\n";
    while out.len() + line.len() + tail.len() < size {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(tail.as_bytes());
    out
}

fn small_answer() -> Vec<u8> {
    json!({"id": "chatcmpl-small", "object": "chat.completion", "created": 1_700_000_000u64,
           "model": "small", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
           "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    .to_string()
    .into_bytes()
}

/// A loopback OpenAI-compatible endpoint: model `big` → the big answer with a content-length,
/// `big-chunked` → the same with chunked transfer encoding (size unknown in advance), anything
/// else → a small answer. Big answers go out in 1 MiB pieces with short pauses, so concurrent
/// requests overlap.
async fn big_stand_in(big: Arc<Vec<u8>>) -> String {
    byok_tests::http::serve_loopback(None, move |mut io, _| {
        let big = big.clone();
        async move {
            let Ok(req) = byok_tests::http::read_request(&mut io).await else {
                return;
            };
            let model = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|v| v["model"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let chunked = model.contains("chunked");
            let small = small_answer();
            let body: &[u8] = if model.contains("big") { &big } else { &small };
            let framing = if chunked {
                "transfer-encoding: chunked".to_string()
            } else {
                format!("content-length: {}", body.len())
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\nconnection: close\r\n\r\n"
            );
            if io.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for piece in body.chunks(MIB) {
                let sent = if chunked {
                    let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                    framed.extend_from_slice(piece);
                    framed.extend_from_slice(b"\r\n");
                    io.write_all(&framed).await
                } else {
                    io.write_all(piece).await
                };
                if sent.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if chunked {
                let _ = io.write_all(b"0\r\n\r\n").await;
            }
            let _ = io.shutdown().await;
        }
    })
    .await
}

/// The start of a response body, for assertion messages (a wrong answer may be 60 MB).
fn short(text: &str) -> &str {
    let mut end = text.len().min(400);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// (VmRSS, VmHWM) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Big {
    s: TestServer,
    env: Env,
    endpoint: String,
    big: Arc<Vec<u8>>,
    _db: TestDb,
    _data: tempfile::TempDir,
}

async fn big_gateway(extra: &[(&str, &str)]) -> Big {
    let big = Arc::new(big_answer(60 * MIB));
    serde_json::from_slice::<serde::de::IgnoredAny>(&big).expect("the big answer is valid JSON");
    let endpoint = format!("{}/v1", big_stand_in(big.clone()).await);
    let db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let mut env = Env::new(data.path(), &db.url)
        .set("BYOK_ALLOWED_TARGETS", "127.0.0.1/32")
        .set("BYOK_UPSTREAM_TIMEOUT_SECS", "120")
        // Info level: debug logs of 360 MB of traffic would only slow the test down.
        .set("RUST_LOG", "info");
    for (k, v) in extra {
        env = env.set(k, v);
    }
    let s = TestServer::start(env.clone());
    Big {
        s,
        env,
        endpoint,
        big,
        _db: db,
        _data: data,
    }
}

impl Big {
    async fn user(&self, email: &str) -> String {
        let t = self.env.create_user(email, "starter");
        let r = self
            .s
            .post(
                "/api/v1/byok/keys/add",
                &t,
                json!({"provider": "custom", "key": canary::CUSTOM, "endpoint": self.endpoint}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
        t
    }

    /// Polls the stats until `requests` usage rows are recorded.
    async fn usage(&self, token: &str, requests: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let u = self.s.get("/api/v1/byok/stats", token).await.json["usage"].clone();
            if u["requests"] == requests {
                return u;
            }
            assert!(Instant::now() < deadline, "usage not recorded: {u}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Samples the gateway's resident memory until `stop`; returns the largest VmRSS seen.
fn sample_rss(pid: u32, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            max = max.max(rss_kib(pid).0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn huge_same_format_answers_stream_through_in_bounded_memory() {
    let g = big_gateway(&[]).await;
    let attacker = g.user("big@example.com").await;
    let other = g.user("other@example.com").await;
    let pid = g.s.pid();
    // Warm up both users' paths (auth, credential cache, pinned client).
    let r =
        g.s.post(
            "/v1/chat/completions",
            &other,
            json!({"model": "custom/small", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
    let (rss_before, _) = rss_kib(pid);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let started = Instant::now();
    let bigs = (0..6).map(|_| {
        let (http, base, t, expected) = (
            g.s.http.clone(),
            g.s.base.clone(),
            attacker.clone(),
            g.big.clone(),
        );
        tokio::spawn(async move {
            let resp = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&t)
                .timeout(Duration::from_secs(120))
                .json(&json!({"model": "custom/big", "messages": [{"role": "user", "content": "everything"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["x-byok-provider"], "custom");
            assert_eq!(resp.headers()["x-byok-credential"], "user");
            assert_eq!(resp.headers()["content-type"], "application/json");
            // Compared as it arrives: the test keeps no copy of the six answers.
            let mut at = 0;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.unwrap();
                assert!(
                    at + chunk.len() <= expected.len()
                        && chunk[..] == expected[at..at + chunk.len()],
                    "the answer differs from the endpoint's at byte {at}"
                );
                at += chunk.len();
            }
            assert_eq!(at, expected.len(), "the whole answer arrived");
        })
    });
    let bigs: Vec<_> = bigs.collect();
    // Meanwhile, another user's small requests succeed, without waiting for the big ones.
    let mut small = 0;
    let mut slowest = Duration::ZERO;
    while bigs.iter().any(|b| !b.is_finished()) {
        let t0 = Instant::now();
        let r =
            g.s.post(
                "/v1/chat/completions",
                &other,
                json!({"model": "custom/small", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
        assert_eq!(r.json["choices"][0]["message"]["content"], "ok");
        slowest = slowest.max(t0.elapsed());
        small += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in bigs {
        b.await.unwrap();
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_rss = sampler.await.unwrap();
    let (rss_after, hwm) = rss_kib(pid);
    eprintln!(
        "6 × {} MB same-format in {took:?}: VmRSS before {} KiB, max sampled {max_rss} KiB, \
         after {rss_after} KiB; VmHWM {hwm} KiB; {small} small requests meanwhile, slowest {slowest:?}",
        g.big.len() / 1_000_000,
        rss_before,
    );
    assert!(small >= 3, "the other user's requests ran meanwhile");
    assert!(
        slowest < Duration::from_secs(3),
        "the other user's requests were held up ({slowest:?})"
    );
    assert!(
        hwm < MAX_PEAK_KIB,
        "peak RSS {hwm} KiB (limit {MAX_PEAK_KIB} KiB)"
    );

    // Usage comes from the bytes as they passed: the real `usage`, not the decoys.
    let u = g.usage(&attacker, 6).await;
    assert_eq!(u["errors"], 0, "{u}");
    assert_eq!(u["input_tokens"], 6 * PROMPT_TOKENS, "{u}");
    assert_eq!(u["output_tokens"], 6 * COMPLETION_TOKENS, "{u}");
    let u = g.usage(&other, small + 1).await;
    assert_eq!(u["input_tokens"], 3 * (small + 1), "{u}");
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn translated_answers_are_capped_and_share_a_budget() {
    // A 40 MB budget: six answers read at once cannot all be buffered to the 16 MiB cap.
    let g = big_gateway(&[("BYOK_RESPONSE_BUFFER_BUDGET_MB", "40")]).await;
    let t = g.user("tr@example.com").await;
    let pid = g.s.pid();
    let messages = |model: &str| {
        g.s.http
            .post(format!("{}/v1/messages", g.s.base))
            .header("x-api-key", &t)
            .header("anthropic-version", "2023-06-01")
            .timeout(Duration::from_secs(120))
            .json(&json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
    };

    // A small answer is still translated.
    let r = g.s.send(messages("custom/small")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
    assert_eq!(r.json["type"], "message");
    assert_eq!(r.json["content"][0]["text"], "ok");
    assert_eq!(r.json["usage"]["input_tokens"], 3);

    // Over the cap with a content-length: refused before the body is read.
    let r = g.s.send(messages("custom/big")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", short(&r.text));
    assert_eq!(r.json["type"], "error", "{}", short(&r.text));
    assert_eq!(r.json["error"]["type"], "api_error", "{}", short(&r.text));
    let msg = r.json["error"]["message"].as_str().unwrap();
    assert!(msg.contains("too large"), "{msg}");
    assert!(!msg.contains("127.0.0.1"), "the endpoint stays out: {msg}");

    // Chunked (size unknown), six at once: each stops at the cap (502) or when the budget is
    // spent (503); memory stays bounded.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let replies =
        futures_util::future::join_all((0..6).map(|_| g.s.send(messages("custom/big-chunked"))))
            .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_rss = sampler.await.unwrap();
    let (mut capped, mut busy) = (0, 0);
    for r in &replies {
        assert_eq!(r.json["type"], "error", "{}", short(&r.text));
        match r.status {
            StatusCode::BAD_GATEWAY => {
                assert_eq!(r.json["error"]["type"], "api_error", "{}", short(&r.text));
                capped += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(
                    r.json["error"]["type"],
                    "overloaded_error",
                    "{}",
                    short(&r.text)
                );
                busy += 1;
            }
            s => panic!("unexpected {s}: {}", r.text),
        }
    }
    let (_, hwm) = rss_kib(pid);
    eprintln!(
        "6 × chunked 60 MB translated: {capped} over the cap (502), {busy} over the budget (503); \
         max sampled VmRSS {max_rss} KiB, VmHWM {hwm} KiB"
    );
    assert!(capped >= 1, "at least one reached the cap");
    assert!(
        hwm < MAX_PEAK_KIB,
        "peak RSS {hwm} KiB (limit {MAX_PEAK_KIB} KiB)"
    );

    // The budget was given back: a small answer still goes through.
    let r = g.s.send(messages("custom/small")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
    g.s.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_has_a_cap_on_concurrent_requests() {
    let g = gateway(&[
        ("BYOK_MAX_CONCURRENT_PER_USER", "2"),
        ("BYOK_UPSTREAM_TIMEOUT_SECS", "10"),
    ])
    .await;
    let t = g.env.create_user("busy@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let other = g.env.create_user("calm@example.com", "starter");
    g.add_key(&other, "openai", canary::OPENAI, None).await;
    let chat = |model: &str, stream: bool| {
        g.s.http
            .post(format!("{}/v1/chat/completions", g.s.base))
            .bearer_auth(&t)
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
    };

    // Two in flight: an endless stream being read, and a slow answer (3 s).
    let stream = chat("gpt-endless", true).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let mut stream = stream.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let slow = tokio::spawn(chat("gpt-slow", false).send());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A third: 429 in the client's format, with retry-after 1.
    let r = g.s.send(chat("gpt-4o", false)).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        short(&r.text)
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(
        r.json["error"]["type"],
        "rate_limit_error",
        "{}",
        short(&r.text)
    );
    assert_eq!(
        r.json["error"]["code"],
        "rate_limit_exceeded",
        "{}",
        short(&r.text)
    );
    let r = g
        .messages(
            &t,
            json!({"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        short(&r.text)
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.json["type"], "error", "{}", short(&r.text));
    assert_eq!(
        r.json["error"]["type"],
        "rate_limit_error",
        "{}",
        short(&r.text)
    );
    // count_tokens takes a slot too (it read bodies up to BYOK_MAX_BODY_BYTES with no cap).
    let r =
        g.s.send(
            g.s.http
                .post(format!("{}/v1/messages/count_tokens", g.s.base))
                .header("x-api-key", &t)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        short(&r.text)
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.json["error"]["type"], "rate_limit_error", "{}", r.text);
    // Nothing was sent upstream for them.
    assert!(
        g.llm
            .requests()
            .iter()
            .all(|s| s.json()["model"] != "gpt-4o"),
        "a refused request reached the provider"
    );

    // Another user is not affected.
    let r =
        g.s.send(
            g.s.http
                .post(format!("{}/v1/chat/completions", g.s.base))
                .bearer_auth(&other)
                .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));

    // The client leaves the stream: its slot is given back at once.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = g.s.send(chat("gpt-4o", false)).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(
            r.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            short(&r.text)
        );
        assert!(
            Instant::now() < deadline,
            "the stream's slot was not released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    slow.bytes().await.unwrap();
    // Both slots free again.
    let (a, b) = tokio::join!(
        g.s.send(chat("gpt-4o", false)),
        g.s.send(chat("gpt-4o", false))
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    g.s.finish();
}

/// A JSON request body of exactly `size` bytes (one long user message).
fn big_request(model: &str, size: usize) -> Vec<u8> {
    let head =
        format!(r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.as_bytes());
    out.resize(size - tail.len(), b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// What a raw client got: the status (0 when the connection closed before a response head),
/// the lower-cased head and the body.
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

/// POSTs `body` over a plain connection, 1 MiB every 20 ms (a client on a slow link), while
/// reading the answer: a server that refuses early answers before the body is all sent.
async fn slow_post(addr: &str, path: &str, token: &str, body: Arc<Vec<u8>>) -> RawReply {
    use tokio::io::AsyncReadExt;
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = sock.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {token}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await?;
        for piece in body.chunks(MIB) {
            w.write_all(piece).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The write half stays open until the answer is read.
        Ok::<_, std::io::Error>(w)
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawReply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Review #6 (issue 13): the request side was unbounded: `count_tokens` took no concurrency slot,
/// and every admitted request buffered its body (up to `BYOK_MAX_BODY_BYTES`) outside any
/// budget, so one user could make the gateway hold 32 × 16 MiB of `/v1/messages` bodies plus any
/// number of `count_tokens` ones. Request bodies are now charged to the process-wide buffer
/// budget as they are read; when it is spent the client gets 503 + retry-after in its format.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_bodies_share_the_buffer_budget() {
    let g = gateway(&[
        ("BYOK_RESPONSE_BUFFER_BUDGET_MB", "40"),
        ("BYOK_MAX_CONCURRENT_PER_USER", "4"),
        ("BYOK_UPSTREAM_TIMEOUT_SECS", "30"),
        ("RUST_LOG", "info"),
    ])
    .await;
    let t = g.env.create_user("bodies@example.com", "starter");
    g.add_key(&t, "openai", canary::OPENAI, None).await;
    let addr = g.s.base.trim_start_matches("http://").to_string();
    let pid = g.s.pid();
    let (rss_before, _) = rss_kib(pid);
    // 8 MiB each: a translated /v1/messages (to OpenAI) and a count_tokens estimate.
    let body = Arc::new(big_request("gpt-4o", 8 * MIB));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(pid, stop.clone());
    let replies = futures_util::future::join_all((0..40).map(|i| {
        let path = if i % 2 == 0 {
            "/v1/messages"
        } else {
            "/v1/messages/count_tokens"
        };
        slow_post(&addr, path, &t, body.clone())
    }))
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let max_rss = sampler.await.unwrap();
    let (_, hwm) = rss_kib(pid);
    let (mut ok, mut busy, mut limited) = (0, 0, 0);
    for r in &replies {
        match r.status {
            200 => ok += 1,
            503 => {
                assert!(r.head.contains("retry-after: 1"), "{}", r.head);
                let v: Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(v["type"], "error", "{}", r.body);
                assert_eq!(v["error"]["type"], "overloaded_error", "{}", r.body);
                assert_eq!(v["error"]["code"], "request_buffer_exhausted", "{}", r.body);
                busy += 1;
            }
            429 => {
                assert!(r.head.contains("retry-after: 1"), "{}", r.head);
                limited += 1;
            }
            s => panic!("unexpected {s}: {} {}", r.head, short(&r.body)),
        }
    }
    eprintln!(
        "40 × 8 MiB request bodies: {ok} served, {busy} over the budget (503), {limited} over the \
         per-user cap (429); VmRSS before {rss_before} KiB, max sampled {max_rss} KiB, VmHWM {hwm} KiB"
    );
    // Four slots, five bodies' worth of budget (40 MiB), each body needing twice more to be
    // parsed: the admitted ones that cannot be parsed at once are refused (which ones depends
    // on timing), the others are over the cap.
    assert!(busy >= 1, "the budget refused some");
    assert!(
        limited >= 1,
        "the per-user cap (count_tokens included) refused some"
    );
    assert!(
        hwm < MAX_PEAK_KIB,
        "peak RSS {hwm} KiB (limit {MAX_PEAK_KIB} KiB)"
    );
    // The budget was given back.
    let r = g
        .messages(
            &t,
            json!({"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", short(&r.text));
    g.s.finish();
}
