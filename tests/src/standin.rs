//! A loopback stand-in for LLM providers' key-probe endpoints, following their public API
//! documentation: OpenAI-style `{"error": {...}}` bodies, 401 for bad keys, 429 with
//! `retry-after`, Anthropic's `{"type": "error", ...}` shape on `/v1/models`.
//!
//! Behaviour is chosen by the presented key: a key listed as valid gets 200 (or, for the
//! Perplexity probe, the 400 an invalid model name earns); a key containing `ratelimited` gets
//! 429, `broken` gets 500, `slow` answers after 5 s; anything else gets 401.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub struct StandIn {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    pub async fn start(valid_keys: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let valid: Arc<Vec<String>> = Arc::new(valid_keys.iter().map(|s| s.to_string()).collect());
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let _ = sock.set_nodelay(true);
                let record = record.clone();
                let valid = valid.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, record, valid).await;
                });
            }
        });
        Self { base, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    record: Arc<Mutex<Vec<Seen>>>,
    valid: Arc<Vec<String>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let crate::http::Request {
        method,
        path,
        headers,
        body,
    } = crate::http::read_request(r).await?;
    let key = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").map(String::as_str))
        .unwrap_or_default()
        .to_string();
    record.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let anthropic = path.starts_with("/v1/models") && headers.contains_key("x-api-key");
    let err = |kind: &str, msg: &str| {
        if anthropic {
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{msg}"}}}}"#)
        } else {
            format!(r#"{{"error":{{"message":"{msg}","type":"{kind}","code":null}}}}"#)
        }
    };
    let (status, extra, body) = if key.contains("ratelimited") {
        (
            429,
            "retry-after: 7\r\n",
            err("rate_limit_error", "Rate limit reached"),
        )
    } else if key.contains("broken") {
        (500, "", err("api_error", "Internal server error"))
    } else if key.contains("slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
        (200, "", r#"{"data":[]}"#.to_string())
    } else if valid.contains(&key) {
        if method == "POST" && path.ends_with("/chat/completions") {
            (
                400,
                "",
                err("invalid_request_error", "Invalid model 'byok-key-probe'"),
            )
        } else if path.ends_with("/key") {
            (
                200,
                "",
                r#"{"data":{"label":"sk-or-v1-...","usage":0,"limit":null}}"#.into(),
            )
        } else {
            (
                200,
                "",
                r#"{"data":[],"has_more":false,"object":"list"}"#.into(),
            )
        }
    } else {
        (
            401,
            "",
            err("authentication_error", "Incorrect API key provided"),
        )
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    w.write_all(resp.as_bytes()).await?;
    w.shutdown().await
}
