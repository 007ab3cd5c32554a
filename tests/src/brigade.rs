//! A loopback stand-in for the orchestrator ("Brigade"), answering in the contract of
//! docs/orchestrator.md and recording every request (and whether it came over TLS).
//!
//! The last user message picks the answer: `use a tool` → a text and a tool call
//! (`get_weather`, `{"city": "Paris"}`); `fail` → HTTP 500 `{"error": {"message": "agent
//! crashed"}}`; `cut` → a stream that stops after one text event; `task fails` → a stream
//! that reports `{"type": "error"}`; `slow` → a stream that keeps going until its reader
//! leaves (then `cancelled` is set); anything else → `Brigade did it`. `GET /health` → 200.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::http::{Request, read_request, serve_loopback};
use crate::tls::TestPki;

/// A request as received, and whether it arrived over TLS.
#[derive(Debug, Clone)]
pub struct Seen {
    pub request: Request,
    pub tls: bool,
}

pub struct BrigadeStandIn {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Set when a `slow` stream's reader went away (the gateway cancelled the task).
    pub cancelled: Arc<std::sync::atomic::AtomicBool>,
}

impl BrigadeStandIn {
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    pub async fn start_tls(pki: &TestPki) -> Self {
        Self::serve(Some(TlsAcceptor::from(pki.server_config(false)))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let cancelled: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (record, flag) = (seen.clone(), cancelled.clone());
        let url = serve_loopback(tls, move |stream, over_tls| {
            let (record, flag) = (record.clone(), flag.clone());
            async move { handle(stream, over_tls, &record, &flag).await }
        })
        .await;
        Self {
            url,
            seen,
            cancelled,
        }
    }

    /// Every task received (health checks left out).
    pub fn tasks(&self) -> Vec<(Seen, Value)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.request.path.starts_with("/api/tasks"))
            .map(|s| (s.clone(), serde_json::from_slice(&s.request.body).unwrap()))
            .collect()
    }
}

fn last_user_text(task: &Value) -> String {
    task.pointer("/context/conversation_history")
        .and_then(Value::as_array)
        .and_then(|h| h.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["parts"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    record: &Mutex<Vec<Seen>>,
    cancelled: &std::sync::atomic::AtomicBool,
) {
    let (r, mut w) = tokio::io::split(stream);
    let Ok(request) = read_request(r).await else {
        return;
    };
    record.lock().unwrap().push(Seen {
        request: request.clone(),
        tls,
    });
    let task: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let said = last_user_text(&task);
    let task_id = task["task_id"].clone();
    if request.path == "/api/tasks/stream" && said.contains("slow") {
        // A long task: one text event, then a status event every 100 ms until the reader
        // goes away (the body ends with the connection).
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        let first = format!(
            "{head}data: {}\n\n",
            json!({"type": "text", "text": "working"})
        );
        if w.write_all(first.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..300 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let ping = format!(
                "data: {}\n\n",
                json!({"type": "status", "state": "running"})
            );
            if w.write_all(ping.as_bytes()).await.is_err() || w.flush().await.is_err() {
                cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
                return;
            }
        }
        return;
    }
    let (status, kind, body): (u16, &str, String) = match request.path.as_str() {
        "/health" => (200, "application/json", json!({"status": "ok"}).to_string()),
        // An orchestrator that echoes what it was given: the gateway must not pass the key on.
        _ if said.contains("fail") && !said.contains("task fails") => (
            500,
            "application/json",
            json!({"error": {"message": format!("agent crashed (key {})",
                task.pointer("/llm_config/api_key").and_then(Value::as_str).unwrap_or("none"))}})
            .to_string(),
        ),
        "/api/tasks" => {
            let content = if said.contains("use a tool") {
                json!([{"type": "text", "text": "Checking."},
                       {"type": "tool_use", "id": "toolu_b1", "name": "get_weather", "input": {"city": "Paris"}}])
            } else {
                json!([{"type": "text", "text": "Brigade did it"}])
            };
            let stop = if said.contains("use a tool") {
                "tool_use"
            } else {
                "end_turn"
            };
            (
                200,
                "application/json",
                json!({"task_id": task_id, "status": "completed", "result": {
                    "content": content, "stop_reason": stop,
                    "usage": {"input_tokens": 11, "output_tokens": 7}}})
                .to_string(),
            )
        }
        "/api/tasks/stream" => {
            let mut events = vec![
                json!({"type": "status", "state": "running"}),
                json!({"type": "text", "text": "Brigade "}),
            ];
            if said.contains("cut") {
                // The connection closes here: no end event.
            } else if said.contains("task fails") {
                events.push(json!({"type": "error", "message": "the agent gave up"}));
            } else {
                events.push(json!({"type": "text", "text": "did it"}));
                if said.contains("use a tool") {
                    events.push(
                        json!({"type": "tool_use", "id": "toolu_b2", "name": "get_weather",
                                       "input": {"city": "Paris", "units": "metric"}}),
                    );
                }
                let stop = if said.contains("use a tool") {
                    "tool_use"
                } else {
                    "end_turn"
                };
                events.push(json!({"type": "done", "stop_reason": stop,
                                   "usage": {"input_tokens": 13, "output_tokens": 9}}));
            }
            let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            (200, "text/event-stream", body)
        }
        _ => (
            404,
            "application/json",
            json!({"detail": "not found"}).to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(head.as_bytes()).await;
    let _ = w.write_all(body.as_bytes()).await;
    let _ = w.shutdown().await;
}
