//! A loopback stand-in for LLM providers' chat APIs, written to the public OpenAI Chat
//! Completions and Anthropic Messages references: JSON and SSE (OpenAI `data:` chunks ending
//! with `data: [DONE]`; Anthropic `event:`/`data:` frames from `message_start` to
//! `message_stop` with `ping`), tool calls streamed as argument fragments, usage, and their
//! error bodies (`{"error": {...}}` / `{"type": "error", "error": {...}}`).
//!
//! Behaviour by key: none is needed on Ollama's path `/v1/chat/completions`; elsewhere a missing
//! key gets 401, a key containing `ratelimited` gets 429 with `retry-after: 11`; a key
//! containing `invalid` gets 401 (whose message quotes the key, as OpenAI's does).
//! Behaviour by model name: `tool` → a tool call (`get_weather` with `{"city":"Paris"}`),
//! `slow` → waits 3 s, `truncate` → the stream stops mid-way (or the JSON body is cut),
//! `midcut` → like `truncate`, but the connection drops in the middle of an event,
//! `error500` → 500, `overloaded` → 529, `missing` → 404, `echokey` → 400 quoting the key's
//! ends and the account, `streamerror` → a 200 stream that fails after its first frames with
//! the provider's in-stream error (Anthropic `event: error`; OpenAI/OpenRouter style `data:
//! {"error": {...}}` without `[DONE]`) quoting the key's ends and the account, as OpenRouter
//! reports failures mid-stream, `endless` → a stream that only ends
//! when the reader goes away, `drip` → a stream whose events come 150 ms apart. Anything else:
//! a text answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub struct LlmStandIn {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Set when a client went away in the middle of an `endless` stream.
    pub disconnected: Arc<std::sync::atomic::AtomicBool>,
}

pub const TEXT: &str = "Hello from the stand-in";

impl LlmStandIn {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let disconnected: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let record = seen.clone();
        let gone = disconnected.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let _ = sock.set_nodelay(true);
                let record = record.clone();
                let gone = gone.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, record, gone).await;
                });
            }
        });
        Self {
            base,
            seen,
            disconnected,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.requests()
            .pop()
            .expect("the stand-in received no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    record: Arc<Mutex<Vec<Seen>>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let crate::http::Request {
        path,
        headers,
        body,
        ..
    } = crate::http::read_request(r).await?;
    record.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let anthropic = path.contains("/v1/messages");
    let key = if anthropic {
        headers.get("x-api-key").cloned().unwrap_or_default()
    } else {
        headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string()
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);

    let error = |status: u16, kind: &str, msg: &str| -> (u16, String) {
        let body = if anthropic {
            json!({"type": "error", "error": {"type": kind, "message": msg}})
        } else {
            json!({"error": {"message": msg, "type": kind, "param": null, "code": null}})
        };
        (status, body.to_string())
    };
    // Ollama's OpenAI-compatible path (`/v1/chat/completions` at the server root) takes no
    // key, as Ollama does.
    let keyless = path == "/v1/chat/completions";
    let fail = if (key.is_empty() && !keyless) || key.contains("invalid") {
        Some(error(
            401,
            "authentication_error",
            &format!("Incorrect API key provided: {key}"),
        ))
    } else if key.contains("ratelimited") {
        Some(error(
            429,
            "rate_limit_error",
            "Rate limit reached for requests",
        ))
    } else if model.contains("error500") {
        Some(error(500, "api_error", "Internal server error"))
    } else if model.contains("overloaded") {
        Some(error(529, "overloaded_error", "Overloaded"))
    } else if model.contains("missing") {
        Some(error(404, "not_found_error", &format!("model: {model}")))
    } else if model.contains("echokey") {
        Some(error(400, "invalid_request_error", &echo_key(&key, &model)))
    } else {
        None
    };
    if let Some((status, body)) = fail {
        let extra = if status == 429 {
            "retry-after: 11\r\n"
        } else {
            ""
        };
        let head = format!(
            "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(body.as_bytes()).await?;
        return w.shutdown().await;
    }
    if model.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path.ends_with("/count_tokens") {
        let body = r#"{"input_tokens":42}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(body.as_bytes()).await?;
        return w.shutdown().await;
    }
    let tool = model.contains("tool");
    let truncate = model.contains("truncate") || model.contains("midcut");
    if !stream {
        let body = if anthropic {
            anthropic_json(&model, tool)
        } else {
            openai_json(&model, tool)
        }
        .to_string();
        let sent = if truncate {
            &body[..body.len() / 2]
        } else {
            body.as_str()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(sent.as_bytes()).await?;
        return w.shutdown().await;
    }
    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
        .await?;
    if model.contains("endless") {
        // Streams until the reader goes away; then notes that it did.
        let frame = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick \"}}]}\n\n";
        loop {
            let sent = async {
                w.write_all(frame.as_bytes()).await?;
                w.flush().await
            }
            .await;
            if sent.is_err() {
                gone.store(true, std::sync::atomic::Ordering::SeqCst);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let frames = if anthropic {
        anthropic_frames(&model, tool)
    } else {
        openai_frames(&model, tool, include_usage)
    };
    let cut = if truncate || model.contains("streamerror") {
        frames.len() / 2
    } else {
        frames.len()
    };
    let gap = Duration::from_millis(if model.contains("drip") { 150 } else { 2 });
    for f in &frames[..cut] {
        w.write_all(f.as_bytes()).await?;
        w.flush().await?;
        tokio::time::sleep(gap).await;
    }
    if model.contains("streamerror") {
        // The provider's own in-stream error, then the end of the stream.
        let msg = echo_key(&key, &model);
        let frame = if anthropic {
            format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": msg}})
            )
        } else {
            // OpenRouter's shape: a chunk with a top-level `error` and a `finish_reason`.
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                       "created": 1_700_000_000u64, "model": model,
                       "error": {"code": 502, "message": msg},
                       "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
            )
        };
        w.write_all(frame.as_bytes()).await?;
        w.flush().await?;
    }
    if model.contains("midcut") {
        // The connection drops in the middle of an event.
        let half = &frames[cut.min(frames.len() - 1)];
        w.write_all(&half.as_bytes()[..half.len() / 2]).await?;
        w.flush().await?;
    }
    w.shutdown().await
}

/// What providers put in an error message: the key's ends and the account.
fn echo_key(key: &str, model: &str) -> String {
    let head: String = key.chars().take(12).collect();
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("Key {head}...{tail} of organization org-CANARYaccount has no access to {model}")
}

fn openai_json(model: &str, tool: bool) -> Value {
    let message = if tool {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_abc123", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
    } else {
        json!({"role": "assistant", "content": TEXT})
    };
    json!({
        "id": "chatcmpl-standin", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": if tool { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    })
}

fn openai_frames(model: &str, tool: bool, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        )
    };
    let mut f = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tool {
        f.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_abc123", "type": "function",
                                            "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null));
        for frag in ["{\"ci", "ty\":\"Pa", "ris\"}"] {
            f.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
                Value::Null,
            ));
        }
        f.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for word in ["Hello", " from", " the", " stand-in"] {
            f.push(chunk(json!({"content": word}), Value::Null));
        }
        f.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        f.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": model, "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}})
        ));
    }
    f.push("data: [DONE]\n\n".to_string());
    f
}

fn anthropic_json(model: &str, tool: bool) -> Value {
    let content = if tool {
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_standin", "name": "get_weather", "input": {"city": "Paris"}}])
    } else {
        json!([{"type": "text", "text": TEXT}])
    };
    json!({
        "id": "msg_standin", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": if tool { "tool_use" } else { "end_turn" }, "stop_sequence": null,
        "usage": {"input_tokens": 21, "output_tokens": 9}
    })
}

fn anthropic_frames(model: &str, tool: bool) -> Vec<String> {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut f = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_standin", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 21, "output_tokens": 1}}}),
        ),
        ev("ping", json!({"type": "ping"})),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    let words: &[&str] = if tool {
        &["Let me", " check."]
    } else {
        &["Hello", " from", " the", " stand-in"]
    };
    for w in words {
        f.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
    }
    f.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if tool {
        f.push(ev("content_block_start", json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_standin", "name": "get_weather", "input": {}}})));
        for frag in ["{\"ci", "ty\":\"Pa", "ris\"}"] {
            f.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": frag}}),
            ));
        }
        f.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    f.push(ev(
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": if tool { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 9}}),
    ));
    f.push(ev("message_stop", json!({"type": "message_stop"})));
    f
}
