#![doc = include_str!("../README.md")]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use byok_core::ports::{
    Orchestrator, OrchestratorError, OrchestratorEvent, OrchestratorReply, OrchestratorStream,
    OrchestratorTask, ReplyBlock,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

/// How Brigade is reached.
#[derive(Debug, Clone)]
pub struct BrigadeSettings {
    /// `BRIGADE_URL`, without a trailing slash.
    pub url: String,
    /// `BRIGADE_ALLOW_HTTP`: plain http (decrypted keys would cross the network in clear).
    pub allow_http: bool,
    pub connect_timeout: Duration,
    /// Whole-call limit for non-streaming tasks.
    pub timeout: Duration,
    /// Longest silence between two reads of a stream.
    pub idle_timeout: Duration,
    /// Extra CA certificates (PEM) for Brigade's certificate (`BRIGADE_CA_FILE`).
    pub ca_pem: Option<Vec<u8>>,
}

impl BrigadeSettings {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim().trim_end_matches('/').to_string(),
            allow_http: false,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            ca_pem: None,
        }
    }
}

/// A set-up problem (the URL); safe to print.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrigadeConfigError(pub String);

/// How long a health answer is reused.
const HEALTH_TTL: Duration = Duration::from_secs(10);
/// Largest reply (a non-streaming task's JSON) read from Brigade.
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Largest error body read from Brigade (only its message is used; the rest is not read).
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Largest stream event held while it arrives.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A whole body up to `limit` bytes (an announced length over it is refused before reading),
/// else `Err` with what was read so far dropped.
async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut out = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(ReadError::Http)?;
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// At most `limit` bytes of a body (the rest is not read); for error bodies.
async fn read_prefix(resp: reqwest::Response, limit: usize) -> Bytes {
    let mut out = BytesMut::new();
    let mut body = resp.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    out.freeze()
}

#[derive(Debug)]
enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// The orchestrator over HTTP.
pub struct BrigadeClient {
    http: reqwest::Client,
    settings: BrigadeSettings,
    health: Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for BrigadeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrigadeClient")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

fn unreachable(e: reqwest::Error) -> OrchestratorError {
    if e.is_timeout() {
        OrchestratorError::Unreachable("no answer in time".into())
    } else {
        OrchestratorError::Unreachable(e.without_url().to_string())
    }
}

/// A short, safe message from an error body: its `error.message`, `message` or `detail`.
fn failure_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))
        .and_then(Value::as_str)
        .unwrap_or("no details");
    msg.chars().take(300).collect()
}

fn usage(v: &Value) -> (u64, u64) {
    let u = v.get("usage").unwrap_or(&Value::Null);
    (
        u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
        u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
    )
}

fn block(v: &Value) -> Option<ReplyBlock> {
    match v.get("type").and_then(Value::as_str)? {
        "text" => Some(ReplyBlock::Text(v.get("text")?.as_str()?.to_string())),
        "tool_use" | "tool_call" => Some(ReplyBlock::ToolUse {
            id: v.get("id")?.as_str()?.to_string(),
            name: v.get("name")?.as_str()?.to_string(),
            input: v
                .get("input")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default())),
        }),
        _ => None,
    }
}

/// Parses the answer of `POST /api/tasks`: `{task_id, status, result: {content, stop_reason,
/// usage}, error?}` (a top-level `content` is accepted too).
pub fn parse_reply(v: &Value) -> Result<OrchestratorReply, OrchestratorError> {
    if v.get("status").and_then(Value::as_str) == Some("failed") {
        return Err(OrchestratorError::Failed {
            status: 200,
            message: failure_message(v.to_string().as_bytes()),
        });
    }
    let result = v.get("result").filter(|r| r.is_object()).unwrap_or(v);
    let content = result
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| OrchestratorError::Protocol("no content in the answer".into()))?;
    let (input_tokens, output_tokens) = usage(result);
    Ok(OrchestratorReply {
        blocks: content.iter().filter_map(block).collect(),
        stop_reason: result
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_tokens,
        output_tokens,
    })
}

/// One SSE event's `data` as an orchestrator event (`None`: an event to skip).
pub fn parse_event(data: &str) -> Option<Result<OrchestratorEvent, OrchestratorError>> {
    let v: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(_) => {
            return Some(Err(OrchestratorError::Protocol(
                "an event was not JSON".into(),
            )));
        }
    };
    match v.get("type").and_then(Value::as_str)? {
        "text" | "text_delta" => Some(Ok(OrchestratorEvent::Text(
            v.get("text").and_then(Value::as_str)?.to_string(),
        ))),
        "tool_use" | "tool_call" => match block(&v) {
            Some(ReplyBlock::ToolUse { id, name, input }) => {
                Some(Ok(OrchestratorEvent::ToolUse { id, name, input }))
            }
            _ => Some(Err(OrchestratorError::Protocol(
                "a tool call without id or name".into(),
            ))),
        },
        "done" | "completed" => {
            let (input_tokens, output_tokens) = usage(&v);
            Some(Ok(OrchestratorEvent::Done {
                stop_reason: v
                    .get("stop_reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                input_tokens,
                output_tokens,
            }))
        }
        "error" | "failed" => Some(Err(OrchestratorError::Failed {
            status: 200,
            message: failure_message(data.as_bytes()),
        })),
        // status updates, pings, anything newer: skipped.
        _ => None,
    }
}

/// Splits complete SSE events off `buf`, returning their joined `data:` lines. `scanned`: the
/// bytes of `buf` already searched without finding an event's end (each byte is searched about
/// once, however an event is chunked).
fn take_events(buf: &mut BytesMut, scanned: &mut usize) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let from = (*scanned).saturating_sub(3).min(buf.len());
        let text = &buf[from..];
        let end = text
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|i| (from + i, 2))
            .or_else(|| {
                text.windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| (from + i, 4))
            });
        let Some((at, len)) = end else {
            *scanned = buf.len();
            return out;
        };
        *scanned = 0;
        let event = buf.split_to(at + len);
        let event = String::from_utf8_lossy(&event);
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
}

/// Stream state: the body, the unparsed bytes, events parsed but not yet handed out.
struct Reader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: BytesMut,
    /// Bytes of `buf` searched for an event's end already.
    scanned: usize,
    pending: std::collections::VecDeque<Result<OrchestratorEvent, OrchestratorError>>,
    finished: bool,
    idle: Duration,
}

impl BrigadeClient {
    pub fn new(settings: BrigadeSettings) -> Result<Self, BrigadeConfigError> {
        let url = url::Url::parse(&settings.url)
            .map_err(|_| BrigadeConfigError("BRIGADE_URL is not a URL".into()))?;
        match url.scheme() {
            "https" => {}
            "http" if settings.allow_http => {}
            "http" => {
                return Err(BrigadeConfigError(
                    "BRIGADE_URL must be https: tasks carry decrypted provider keys and server \
                     credentials (BRIGADE_ALLOW_HTTP=true to accept plain http)"
                        .into(),
                ));
            }
            _ => return Err(BrigadeConfigError("BRIGADE_URL must be https".into())),
        }
        // reqwest 0.13 uses the process-wide rustls provider (ring, as everywhere here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("byok-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| BrigadeConfigError("BRIGADE_CA_FILE is not PEM".into()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| BrigadeConfigError(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            settings,
            health: Mutex::new(None),
        })
    }

    async fn post(
        &self,
        path: &str,
        task: &OrchestratorTask,
        total: Option<Duration>,
    ) -> Result<reqwest::Response, OrchestratorError> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.settings.url))
            .header("x-byok-task-id", &task.task_id)
            .json(&task.body);
        if let Some(t) = total {
            req = req.timeout(t);
        }
        if task.stream {
            req = req.header("accept", "text/event-stream");
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_prefix(resp, MAX_ERROR_BYTES).await;
            return Err(OrchestratorError::Failed {
                status: status.as_u16(),
                message: failure_message(&body),
            });
        }
        Ok(resp)
    }
}

#[async_trait]
impl Orchestrator for BrigadeClient {
    async fn run(&self, task: &OrchestratorTask) -> Result<OrchestratorReply, OrchestratorError> {
        let resp = self
            .post("/api/tasks", task, Some(self.settings.timeout))
            .await?;
        let body = read_capped(resp, MAX_REPLY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => OrchestratorError::Protocol(format!(
                    "the reply exceeds the gateway's limit of {} MiB",
                    MAX_REPLY_BYTES / (1024 * 1024)
                )),
                ReadError::Http(e) => unreachable(e),
            })?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| OrchestratorError::Protocol("the answer is not JSON".into()))?;
        parse_reply(&v)
    }

    async fn run_stream(
        &self,
        task: &OrchestratorTask,
    ) -> Result<OrchestratorStream, OrchestratorError> {
        let resp = tokio::time::timeout(
            self.settings.idle_timeout,
            self.post("/api/tasks/stream", task, None),
        )
        .await
        .map_err(|_| OrchestratorError::Unreachable("no answer in time".into()))??;
        let reader = Reader {
            body: resp.bytes_stream().boxed(),
            buf: BytesMut::new(),
            scanned: 0,
            pending: Default::default(),
            finished: false,
            idle: self.settings.idle_timeout,
        };
        let stream = futures_util::stream::unfold(reader, |mut r| async move {
            loop {
                if let Some(item) = r.pending.pop_front() {
                    if matches!(item, Ok(OrchestratorEvent::Done { .. }) | Err(_)) {
                        r.finished = true;
                        r.pending.clear();
                    }
                    return Some((item, r));
                }
                if r.finished {
                    return None;
                }
                match tokio::time::timeout(r.idle, r.body.next()).await {
                    Err(_) => {
                        r.finished = true;
                        return Some((
                            Err(OrchestratorError::Unreachable(
                                "the stream went silent".into(),
                            )),
                            r,
                        ));
                    }
                    Ok(Some(Ok(chunk))) => {
                        r.buf.extend_from_slice(&chunk);
                        for data in take_events(&mut r.buf, &mut r.scanned) {
                            if let Some(ev) = parse_event(&data) {
                                r.pending.push_back(ev);
                            }
                        }
                        if r.buf.len() > MAX_EVENT_BYTES {
                            r.buf = BytesMut::new();
                            r.scanned = 0;
                            r.pending.push_back(Err(OrchestratorError::Protocol(format!(
                                "a stream event exceeds the gateway's limit of {} MiB",
                                MAX_EVENT_BYTES / (1024 * 1024)
                            ))));
                        }
                    }
                    Ok(Some(Err(e))) => {
                        r.finished = true;
                        return Some((Err(unreachable(e)), r));
                    }
                    Ok(None) => {
                        r.finished = true;
                        return Some((
                            Err(OrchestratorError::Protocol(
                                "the stream ended before its end event".into(),
                            )),
                            r,
                        ));
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn ready(&self) -> bool {
        if let Some((at, ok)) = *self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            && at.elapsed() < HEALTH_TTL
        {
            return ok;
        }
        let ok = self
            .http
            .get(format!("{}/health", self.settings.url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        *self
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), ok));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_split_whole_and_parsed() {
        let mut buf = BytesMut::from(
            &b"event: text\ndata: {\"type\":\"text\",\"text\":\"Hel\"}\n\ndata: {\"type\":\"te"[..],
        );
        let mut scanned = 0;
        let evs = take_events(&mut buf, &mut scanned);
        assert_eq!(
            evs,
            vec!["{\"type\":\"text\",\"text\":\"Hel\"}".to_string()]
        );
        buf.extend_from_slice(b"xt\",\"text\":\"lo\"}\r\n\r\n");
        assert_eq!(take_events(&mut buf, &mut scanned).len(), 1);
        assert!(buf.is_empty());
        assert_eq!(
            parse_event(
                r#"{"type":"done","stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":5}}"#
            ),
            Some(Ok(OrchestratorEvent::Done {
                stop_reason: Some("end_turn".into()),
                input_tokens: 3,
                output_tokens: 5
            }))
        );
        assert_eq!(parse_event(r#"{"type":"status","state":"running"}"#), None);
        assert!(matches!(
            parse_event("nope"),
            Some(Err(OrchestratorError::Protocol(_)))
        ));
    }

    #[test]
    fn replies() {
        let r = parse_reply(&json!({"task_id": "t", "status": "completed", "result": {
            "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 0}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2}}}))
        .unwrap();
        assert_eq!(r.blocks.len(), 2);
        assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
        assert!(matches!(
            parse_reply(&json!({"status": "failed", "error": {"message": "agent crashed"}})),
            Err(OrchestratorError::Failed { message, .. }) if message == "agent crashed"
        ));
        assert!(parse_reply(&json!({"status": "completed"})).is_err());
    }

    /// A loopback server answering every request with `status` and `body` (chunked when
    /// `chunked`); returns its URL.
    async fn answering(status: u16, body: Vec<u8>, chunked: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let body = std::sync::Arc::new(body);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    // The request body is read too (a close with unread bytes resets).
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut request = vec![0; length];
                    if sock.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let framing = if chunked {
                        "transfer-encoding: chunked".to_string()
                    } else {
                        format!("content-length: {}", body.len())
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{framing}\r\nconnection: close\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for piece in body.chunks(1 << 20) {
                        let sent = if chunked {
                            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                            framed.extend_from_slice(piece);
                            framed.extend_from_slice(b"\r\n");
                            sock.write_all(&framed).await
                        } else {
                            sock.write_all(piece).await
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                    if chunked {
                        let _ = sock.write_all(b"0\r\n\r\n").await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        url
    }

    fn client(url: &str) -> BrigadeClient {
        let mut s = BrigadeSettings::new(url);
        s.allow_http = true;
        BrigadeClient::new(s).unwrap()
    }

    fn task(stream: bool) -> OrchestratorTask {
        OrchestratorTask {
            task_id: "t".into(),
            body: json!({}),
            stream,
        }
    }

    /// A valid reply padded to more than 16 MiB.
    fn huge_reply() -> Vec<u8> {
        let pad = "x".repeat(MAX_REPLY_BYTES + 1);
        json!({"status": "completed", "result": {"content": [{"type": "text", "text": pad}]}})
            .to_string()
            .into_bytes()
    }

    #[tokio::test]
    async fn replies_and_error_bodies_are_read_under_caps() {
        for chunked in [false, true] {
            let c = client(&answering(200, huge_reply(), chunked).await);
            match c.run(&task(false)).await {
                Err(OrchestratorError::Protocol(m)) => assert!(m.contains("16 MiB"), "{m}"),
                other => panic!("chunked {chunked}: {other:?}"),
            }
        }
        // An error body: its first 64 KiB at most are read (a message past them is not seen).
        let mut body = br#"{"padding":""#.to_vec();
        body.resize(1 << 20, b'x');
        body.extend_from_slice(br#"","error":{"message":"far away"}}"#);
        let c = client(&answering(500, body, true).await);
        match c.run(&task(false)).await {
            Err(OrchestratorError::Failed {
                status: 500,
                message,
            }) => {
                assert_eq!(message, "no details");
            }
            other => panic!("{other:?}"),
        }
        // A stream event that never ends.
        let c = client(&answering(200, vec![b'x'; MAX_EVENT_BYTES + (2 << 20)], true).await);
        let mut events = c.run_stream(&task(true)).await.unwrap();
        match events.next().await {
            Some(Err(OrchestratorError::Protocol(m))) => assert!(m.contains("16 MiB"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_http_needs_the_opt_in() {
        assert!(BrigadeClient::new(BrigadeSettings::new("http://brigade.internal")).is_err());
        let mut s = BrigadeSettings::new("http://brigade.internal");
        s.allow_http = true;
        assert!(BrigadeClient::new(s).is_ok());
        assert!(BrigadeClient::new(BrigadeSettings::new("https://brigade.internal")).is_ok());
    }
}
