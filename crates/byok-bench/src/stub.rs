//! A fast provider stub: OpenAI Chat Completions and Anthropic Messages, JSON and SSE.
//!
//! `POST /v1/chat/completions` and `POST /chat/completions` answer in OpenAI's format,
//! `POST /v1/messages` in Anthropic's; `"stream": true` in the body selects SSE with `chunks`
//! content deltas `chunk_interval` apart (a tool-call argument split across deltas when the
//! request offers tools). The body is only scanned for `"stream":true` and `"tools"`: the stub
//! must cost as little as possible.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// How the stub answers.
#[derive(Debug, Clone, Copy)]
pub struct StubOptions {
    /// Delay before the answer (or before the first stream event).
    pub latency: Duration,
    /// Content deltas in a stream.
    pub chunks: usize,
    /// Time between two deltas.
    pub chunk_interval: Duration,
}

/// A channel receiver as a response body stream.
pub struct ChunkStream(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

type Body = http_body_util::Either<Full<Bytes>, StreamBody<ChunkStream>>;

fn openai_json(model: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from the stub."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}}}"#
    )
}

fn anthropic_json(model: &str) -> String {
    format!(
        r#"{{"id":"msg_bench","type":"message","role":"assistant","model":"{model}","content":[{{"type":"text","text":"Hello from the stub."}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"output_tokens":5}}}}"#
    )
}

fn model_of(body: &[u8]) -> String {
    // A cheap scan: the value after "model":"…".
    let text = std::str::from_utf8(body).unwrap_or_default();
    text.split("\"model\"")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .unwrap_or("stub-model")
        .to_string()
}

fn wants_stream(body: &[u8]) -> bool {
    let text = std::str::from_utf8(body).unwrap_or_default();
    text.contains("\"stream\":true") || text.contains("\"stream\": true")
}

fn sse_openai(model: &str, i: usize, last: bool, tools: bool) -> Bytes {
    let delta = if tools {
        if i == 0 {
            r#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#.to_string()
        } else {
            format!(
                r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":"{}"}}}}]}}"#,
                if i == 1 {
                    "{\\\"city\\\":"
                } else {
                    "\\\"x\\\""
                }
            )
        }
    } else {
        r#"{"content":"tok "}"#.to_string()
    };
    let mut s = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
    );
    if last {
        let reason = if tools { "tool_calls" } else { "stop" };
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{reason}\"}}],\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}}}\n\ndata: [DONE]\n\n"
        ));
    }
    Bytes::from(s)
}

fn sse_anthropic(model: &str, i: usize, last: bool) -> Bytes {
    let mut s = String::new();
    if i == 0 {
        s.push_str(&format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{model}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":12,\"output_tokens\":0}}}}}}\n\nevent: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
        ));
    }
    s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok \"}}\n\n");
    if last {
        s.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
    Bytes::from(s)
}

async fn answer(
    req: Request<Incoming>,
    opts: Arc<StubOptions>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !opts.latency.is_zero() {
        tokio::time::sleep(opts.latency).await;
    }
    let anthropic = path.ends_with("/messages");
    let model = model_of(&body);
    if !wants_stream(&body) {
        let text = if anthropic {
            anthropic_json(&model)
        } else {
            openai_json(&model)
        };
        let mut resp = Response::new(Body::Left(Full::new(Bytes::from(text))));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(resp);
    }
    let tools = !anthropic
        && std::str::from_utf8(&body)
            .unwrap_or_default()
            .contains("\"tools\"");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let n = opts.chunks.max(1);
    let interval = opts.chunk_interval;
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let chunk = if anthropic {
                sse_anthropic(&model, i, i + 1 == n)
            } else {
                sse_openai(&model, i, i + 1 == n, tools)
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(Body::Right(StreamBody::new(ChunkStream(rx))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Serves until the process ends. Returns the bound address.
pub async fn start(addr: SocketAddr, opts: StubOptions) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let opts = Arc::new(opts);
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            let opts = opts.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| answer(req, opts.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .http1_only()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok(local)
}
