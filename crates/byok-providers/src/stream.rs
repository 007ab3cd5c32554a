//! Streaming: pass-through observation and incremental translation of SSE streams.
//!
//! Every mode feeds upstream bytes through [`SseParser`] as they arrive and writes what the
//! client should receive into `out` at once: nothing waits for the end of the stream, and each
//! tool-call argument fragment is forwarded as its own delta. A stream that ends before its
//! protocol's terminal event (`message_stop` / `data: [DONE]`) gets a protocol-correct error
//! event instead of a silent close or a fake completion.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::redact::{fresh_id, scrub};
use crate::sse::{SseEvent, SseParser, last_event_end};
use crate::translate::{
    anthropic_message_id, finish_reason_from_anthropic, stop_reason_from_openai,
};

/// Tokens counted from a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

const CUT_MESSAGE: &str = "the upstream stream ended before the response was complete";

fn anthropic_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn openai_data(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// An Anthropic `event: error` frame.
pub fn anthropic_error_event(out: &mut Vec<u8>, kind: &str, message: &str) {
    anthropic_event(
        out,
        "error",
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    );
}

/// An OpenAI-style error frame inside a stream (what OpenAI sends on a mid-stream failure).
pub fn openai_error_event(out: &mut Vec<u8>, kind: &str, message: &str) {
    openai_data(
        out,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    );
}

/// Which way a stream flows.
#[derive(Debug)]
enum Mode {
    /// Anthropic upstream, Anthropic client: bytes forwarded untouched.
    PassAnthropic,
    /// OpenAI upstream, OpenAI client: bytes forwarded untouched, except (when `strip_usage`)
    /// the usage-only chunk the gateway asked for on the client's behalf.
    PassOpenAi { strip_usage: bool },
    /// OpenAI upstream, Anthropic client.
    OpenAiToAnthropic(Box<OpenAiToAnthropic>),
    /// Anthropic upstream, OpenAI client.
    AnthropicToOpenAi(Box<AnthropicToOpenAi>),
}

/// Per-stream state: parser, mode, usage, completeness.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: SseParser,
    /// Pass-through: bytes of an unfinished event, held back until the event completes (so an
    /// error event appended after a cut never merges with half an event).
    pending: Vec<u8>,
    mode: Mode,
    usage: StreamUsage,
    complete: bool,
    failed: bool,
    /// When set, the provider's own error events are replaced by this message (the system
    /// default credential: its errors can quote the operator's key, account or limits).
    private_errors: Option<String>,
    /// The provider's error message withheld from the client, for the operator's log.
    withheld: Option<String>,
}

impl StreamTranslator {
    fn new(mode: Mode) -> Self {
        Self {
            parser: SseParser::new(),
            pending: Vec::new(),
            mode,
            usage: StreamUsage::default(),
            complete: false,
            failed: false,
            private_errors: None,
            withheld: None,
        }
    }

    /// The provider's error events (pass-through and translated alike) reach the client as an
    /// error event carrying `message` instead of the provider's; the provider's message is
    /// kept for [`Self::take_withheld`]. Events before the error pass as usual, nothing after it.
    pub fn with_private_errors(mut self, message: String) -> Self {
        self.private_errors = Some(message);
        self
    }

    /// The provider's error message that was replaced (unscrubbed: scrub before logging it).
    pub fn take_withheld(&mut self) -> Option<String> {
        self.withheld.take()
    }

    pub fn passthrough_anthropic() -> Self {
        Self::new(Mode::PassAnthropic)
    }

    pub fn passthrough_openai() -> Self {
        Self::new(Mode::PassOpenAi { strip_usage: false })
    }

    /// OpenAI pass-through for a client that did not ask for usage although the gateway did
    /// (`stream_options.include_usage` added upstream, to record usage): the usage-only chunk
    /// is counted and not forwarded.
    pub fn passthrough_openai_without_usage() -> Self {
        Self::new(Mode::PassOpenAi { strip_usage: true })
    }

    /// OpenAI chunks in, Anthropic events out; `model` is the name the client asked for,
    /// `input_estimate` the prompt size shown in `message_start` until the real count arrives.
    pub fn openai_to_anthropic(model: &str, input_estimate: u64) -> Self {
        Self::new(Mode::OpenAiToAnthropic(Box::new(OpenAiToAnthropic::new(
            model,
            input_estimate,
        ))))
    }

    /// Anthropic events in, OpenAI chunks out.
    pub fn anthropic_to_openai(model: &str, created: u64, include_usage: bool) -> Self {
        Self::new(Mode::AnthropicToOpenAi(Box::new(AnthropicToOpenAi::new(
            model,
            created,
            include_usage,
        ))))
    }

    pub fn usage(&self) -> StreamUsage {
        self.usage
    }

    /// The terminal event was seen (or an error event was relayed).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// An error event was relayed or produced.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether upstream bytes go to the client unchanged (use [`Self::observe`] then).
    pub fn is_passthrough(&self) -> bool {
        matches!(self.mode, Mode::PassAnthropic | Mode::PassOpenAi { .. })
    }

    /// Feeds an upstream chunk; appends what the client should get to `out`. In pass-through
    /// modes that is the chunk itself (callers that can forward the chunk without copying use
    /// [`Self::observe`] instead).
    pub fn on_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.is_passthrough() {
            let ready = self.pass_chunk(bytes::Bytes::copy_from_slice(chunk));
            out.extend_from_slice(&ready);
            return;
        }
        for ev in self.parser.feed(chunk) {
            self.on_event(&ev, out);
        }
    }

    /// Pass-through modes: watches a chunk and returns the part to forward now: every
    /// complete event, untouched (the chunk itself, without a copy, when it ends on an event
    /// boundary); the bytes of an unfinished event wait for the rest.
    pub fn pass_chunk(&mut self, chunk: bytes::Bytes) -> bytes::Bytes {
        if self.failed && self.private_errors.is_some() {
            // Nothing of the provider's after its withheld error.
            return bytes::Bytes::new();
        }
        let mut sink = Vec::new();
        let was_failed = self.failed;
        let events = self.parser.feed(&chunk);
        for ev in &events {
            self.on_event(ev, &mut sink);
        }
        if !was_failed && self.failed && self.private_errors.is_some() {
            // Rare: only a chunk that completes an error event is rewritten.
            return bytes::Bytes::from(self.withhold_error(&events));
        }
        if matches!(self.mode, Mode::PassOpenAi { strip_usage: true }) {
            self.pending.extend_from_slice(&chunk);
            let Some(end) = last_event_end(&self.pending) else {
                return bytes::Bytes::new();
            };
            let ready: Vec<u8> = self.pending.drain(..end).collect();
            return bytes::Bytes::from(strip_usage_chunks(&ready));
        }
        if self.pending.is_empty() {
            return match last_event_end(&chunk) {
                Some(end) if end == chunk.len() => chunk,
                Some(end) => {
                    self.pending.extend_from_slice(&chunk[end..]);
                    chunk.slice(..end)
                }
                None => {
                    self.pending.extend_from_slice(&chunk);
                    bytes::Bytes::new()
                }
            };
        }
        self.pending.extend_from_slice(&chunk);
        match last_event_end(&self.pending) {
            Some(end) => {
                let out = bytes::Bytes::copy_from_slice(&self.pending[..end]);
                self.pending.drain(..end);
                out
            }
            None => bytes::Bytes::new(),
        }
    }

    /// The parser gave up on an oversized event: the stream cannot go on.
    pub fn overflowed(&self) -> bool {
        self.parser.overflowed()
    }

    /// Pass-through with private errors, for the chunk that completed the provider's error
    /// event: the events before it (as parsed, re-framed), then the generic error event.
    fn withhold_error(&mut self, events: &[SseEvent]) -> Vec<u8> {
        self.pending.clear();
        let strip_usage = matches!(self.mode, Mode::PassOpenAi { strip_usage: true });
        let mut out = Vec::new();
        let mut kind = None;
        for ev in events {
            let v = if ev.data.contains("\"error\"") || ev.data.contains("\"usage\"") {
                serde_json::from_str::<Value>(&ev.data).ok()
            } else {
                None
            };
            if let Some(k) = v.as_ref().and_then(error_of) {
                kind = ANTHROPIC_ERROR_TYPES.iter().copied().find(|t| *t == k);
                break;
            }
            if ev.event.as_deref() == Some("error") {
                break;
            }
            if strip_usage && v.as_ref().is_some_and(is_usage_only) {
                continue;
            }
            if let Some(name) = &ev.event {
                out.extend_from_slice(b"event: ");
                out.extend_from_slice(name.as_bytes());
                out.push(b'\n');
            }
            for line in ev.data.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
            out.push(b'\n');
        }
        let message = self.private_errors.as_deref().unwrap_or("upstream error");
        match self.mode {
            Mode::PassAnthropic => {
                anthropic_error_event(&mut out, kind.unwrap_or("api_error"), message)
            }
            _ => openai_error_event(&mut out, "server_error", message),
        }
        out
    }

    fn on_event(&mut self, ev: &SseEvent, out: &mut Vec<u8>) {
        if self.complete {
            return;
        }
        match &mut self.mode {
            Mode::PassAnthropic => {
                // Only these events carry usage or end the stream; deltas are not parsed.
                let interesting = matches!(
                    ev.event.as_deref(),
                    Some("message_start" | "message_delta" | "message_stop" | "error") | None
                );
                if !interesting {
                    return;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                    return;
                };
                observe_anthropic(&v, &mut self.usage);
                match v.get("type").and_then(Value::as_str) {
                    Some("message_stop") => self.complete = true,
                    Some("error") => {
                        self.complete = true;
                        self.failed = true;
                        self.withhold(&v, &ev.data);
                    }
                    _ => {}
                }
            }
            Mode::PassOpenAi { .. } => {
                if ev.data.trim() == "[DONE]" {
                    self.complete = true;
                    return;
                }
                // Only chunks with usage or an error need parsing.
                if !ev.data.contains("\"usage\"") && !ev.data.contains("\"error\"") {
                    return;
                }
                let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                    return;
                };
                if v.get("error").is_some_and(|e| !e.is_null()) {
                    self.complete = true;
                    self.failed = true;
                    self.withhold(&v, &ev.data);
                }
                observe_openai(&v, &mut self.usage);
            }
            Mode::OpenAiToAnthropic(t) => {
                let state = t.on_event(ev, out, &mut self.usage, self.private_errors.as_deref());
                self.apply(state);
            }
            Mode::AnthropicToOpenAi(t) => {
                let state = t.on_event(ev, out, &mut self.usage, self.private_errors.as_deref());
                self.apply(state);
            }
        }
    }

    /// Keeps the provider's error message for the log when errors are private.
    fn withhold(&mut self, v: &Value, data: &str) {
        if self.private_errors.is_some() {
            self.withheld = Some(provider_message(v, data));
        }
    }

    fn apply(&mut self, state: Progress) {
        match state {
            Progress::Going => {}
            Progress::Done => self.complete = true,
            Progress::Failed(withheld) => {
                self.complete = true;
                self.failed = true;
                if withheld.is_some() {
                    self.withheld = withheld;
                }
            }
        }
    }

    /// The upstream body ended (EOF). Completes a translation that saw its finish, or appends
    /// an error event when the stream was cut.
    pub fn on_end(&mut self, out: &mut Vec<u8>) {
        // Bytes of an unfinished event are never forwarded.
        self.pending.clear();
        if self.complete {
            return;
        }
        if let Mode::OpenAiToAnthropic(t) = &mut self.mode
            && t.stop_reason.is_some()
            && !self.parser.has_partial()
        {
            // Finished (finish_reason seen) but the upstream omitted `[DONE]`.
            t.finish(out, &self.usage);
            self.complete = true;
            return;
        }
        self.on_error(CUT_MESSAGE, out);
    }

    /// The upstream failed mid-stream (read error, idle timeout): appends an error event in
    /// the client's protocol.
    pub fn on_error(&mut self, message: &str, out: &mut Vec<u8>) {
        if self.complete {
            return;
        }
        self.pending.clear();
        match &self.mode {
            Mode::PassAnthropic | Mode::OpenAiToAnthropic(_) => {
                anthropic_error_event(out, "api_error", message);
            }
            Mode::PassOpenAi { .. } | Mode::AnthropicToOpenAi(_) => {
                openai_error_event(out, "server_error", message);
            }
        }
        self.complete = true;
        self.failed = true;
    }
}

/// Anthropic's documented `error.type`s (a withheld error keeps its type: clients retry on
/// `overloaded_error`).
const ANTHROPIC_ERROR_TYPES: [&str; 9] = [
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
];

/// The error type of a parsed event that reports an error (Anthropic `{"type": "error"}`,
/// OpenAI/OpenRouter `{"error": {...}}`), `""` when it has none.
fn error_of(v: &Value) -> Option<&str> {
    let err = v.get("error").filter(|e| !e.is_null())?;
    if v.get("type").is_some_and(|t| t != "error") && v.get("choices").is_none() {
        // An Anthropic event that is not an error but carries an `error` member.
        return None;
    }
    Some(err.get("type").and_then(Value::as_str).unwrap_or(""))
}

/// A chunk with `"choices": []` and a `usage` object.
fn is_usage_only(v: &Value) -> bool {
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && v.get("usage").is_some_and(Value::is_object)
}

/// The provider's message in an error event (its `error.message`, else the event's data), cut
/// to 2,000 characters.
fn provider_message(v: &Value, data: &str) -> String {
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or(data)
        .chars()
        .take(2000)
        .collect()
}

/// Drops the usage-only chunks (`"choices": []` with `usage`) from whole events.
fn strip_usage_chunks(events: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(events);
    let mut out = String::with_capacity(text.len());
    for ev in text.split_inclusive("\n\n") {
        let data = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect::<Vec<_>>()
            .join("\n");
        let usage_only = data.contains("\"usage\"")
            && serde_json::from_str::<Value>(&data).is_ok_and(|v| is_usage_only(&v));
        if !usage_only {
            out.push_str(ev);
        }
    }
    out.into_bytes()
}

fn observe_anthropic(v: &Value, usage: &mut StreamUsage) {
    let u = v.pointer("/message/usage").or_else(|| v.get("usage"));
    if let Some(u) = u {
        let get = |k: &str| u.get(k).and_then(Value::as_u64);
        let input = get("input_tokens").map(|i| {
            i + get("cache_read_input_tokens").unwrap_or(0)
                + get("cache_creation_input_tokens").unwrap_or(0)
        });
        if let Some(i) = input.filter(|i| *i > 0) {
            usage.input_tokens = i;
        }
        if let Some(o) = get("output_tokens") {
            usage.output_tokens = o;
        }
    }
}

fn observe_openai(v: &Value, usage: &mut StreamUsage) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        if let Some(i) = u.get("prompt_tokens").and_then(Value::as_u64) {
            usage.input_tokens = i;
        }
        if let Some(o) = u.get("completion_tokens").and_then(Value::as_u64) {
            usage.output_tokens = o;
        }
    }
}

enum Progress {
    Going,
    Done,
    /// An error event was written; with the provider's message when it was withheld.
    Failed(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool,
}

/// OpenAI Chat Completions chunks → Anthropic Messages events.
#[derive(Debug)]
struct OpenAiToAnthropic {
    model: String,
    started: bool,
    next_index: usize,
    open: Option<(usize, Block)>,
    tools: HashMap<u64, usize>,
    stop_reason: Option<&'static str>,
    input_estimate: u64,
}

impl OpenAiToAnthropic {
    fn new(model: &str, input_estimate: u64) -> Self {
        Self {
            model: model.to_string(),
            started: false,
            next_index: 0,
            open: None,
            tools: HashMap::new(),
            stop_reason: None,
            input_estimate,
        }
    }

    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>, usage: &StreamUsage) {
        if self.started {
            return;
        }
        self.started = true;
        anthropic_event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": anthropic_message_id(chunk.get("id").and_then(Value::as_str)),
                "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": usage.input_tokens.max(self.input_estimate), "output_tokens": 0},
            }}),
        );
        anthropic_event(out, "ping", &json!({"type": "ping"}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            anthropic_event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, kind: Block, block: Value, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        anthropic_event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some((index, kind));
        index
    }

    fn ensure(&mut self, kind: Block, out: &mut Vec<u8>) -> usize {
        match self.open {
            Some((i, k)) if k == kind => i,
            _ => {
                let block = match kind {
                    Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                    _ => json!({"type": "text", "text": ""}),
                };
                self.open_block(kind, block, out)
            }
        }
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: Value) {
        anthropic_event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    fn finish(&mut self, out: &mut Vec<u8>, usage: &StreamUsage) {
        self.close(out);
        anthropic_event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}),
        );
        anthropic_event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn on_event(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<u8>,
        usage: &mut StreamUsage,
        private: Option<&str>,
    ) -> Progress {
        let data = ev.data.trim();
        if data == "[DONE]" {
            if !self.started {
                self.start(&Value::Null, out, usage);
            }
            self.finish(out, usage);
            return Progress::Done;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Progress::Going;
        };
        if let Some(err) = chunk.get("error").filter(|e| !e.is_null()) {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error");
            if let Some(generic) = private {
                anthropic_error_event(out, "api_error", generic);
                return Progress::Failed(Some(provider_message(&chunk, data)));
            }
            let msg = &scrub(msg, None);
            anthropic_error_event(out, "api_error", msg);
            return Progress::Failed(None);
        }
        observe_openai(&chunk, usage);
        self.start(&chunk, out, usage);
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Progress::Going;
        };
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        let reasoning = delta
            .get("reasoning_content")
            .or_else(|| delta.get("reasoning"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if let Some(r) = reasoning {
            let i = self.ensure(Block::Thinking, out);
            Self::delta(out, i, json!({"type": "thinking_delta", "thinking": r}));
        }
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let i = self.ensure(Block::Text, out);
            Self::delta(out, i, json!({"type": "text_delta", "text": t}));
        }
        for (position, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            // Some servers omit `index`; the position in the array stands in for it.
            let oi = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            // A call is new when its index is; some servers repeat the id on every fragment.
            if !self.tools.contains_key(&oi) {
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| fresh_id("toolu_"), str::to_owned);
                let name = call.pointer("/function/name").cloned().unwrap_or(json!(""));
                let index = self.open_block(
                    Block::Tool,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.tools.insert(oi, index);
            }
            if let Some(args) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                && let Some(index) = self.tools.get(&oi).copied()
            {
                Self::delta(
                    out,
                    index,
                    json!({"type": "input_json_delta", "partial_json": args}),
                );
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            let mapped = stop_reason_from_openai(Some(reason));
            // Some servers say "stop" after tool calls: the client must still run the tools.
            self.stop_reason = Some(if mapped == "end_turn" && !self.tools.is_empty() {
                "tool_use"
            } else {
                mapped
            });
        }
        Progress::Going
    }
}

/// Anthropic Messages events → OpenAI Chat Completions chunks.
#[derive(Debug)]
struct AnthropicToOpenAi {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    tools: HashMap<u64, u64>,
    next_tool: u64,
    finish_reason: &'static str,
}

impl AnthropicToOpenAi {
    fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            id: "chatcmpl-stream".into(),
            model: model.to_string(),
            created,
            include_usage,
            tools: HashMap::new(),
            next_tool: 0,
            finish_reason: "stop",
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        openai_data(
            out,
            &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]}),
        );
    }

    fn on_event(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<u8>,
        usage: &mut StreamUsage,
        private: Option<&str>,
    ) -> Progress {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return Progress::Going;
        };
        observe_anthropic(&v, usage);
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if let Some(id) = v.pointer("/message/id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{}", id.trim_start_matches("msg_"));
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let ti = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, ti);
                        self.chunk(
                            out,
                            json!({"tool_calls": [{"index": ti, "id": block.get("id"), "type": "function",
                                    "function": {"name": block.get("name"), "arguments": ""}}]}),
                            None,
                        );
                    }
                    Some("text") => {
                        if let Some(t) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.chunk(out, json!({"content": t}), None);
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.chunk(out, json!({"content": delta.get("text")}), None);
                    }
                    Some("input_json_delta") => {
                        if let Some(ti) = self.tools.get(&index).copied() {
                            self.chunk(
                                out,
                                json!({"tool_calls": [{"index": ti, "function": {"arguments": delta.get("partial_json")}}]}),
                                None,
                            );
                        }
                    }
                    Some("thinking_delta") => {
                        self.chunk(
                            out,
                            json!({"reasoning_content": delta.get("thinking")}),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.finish_reason = finish_reason_from_anthropic(
                    v.pointer("/delta/stop_reason").and_then(Value::as_str),
                );
            }
            Some("message_stop") => {
                self.chunk(out, json!({}), Some(self.finish_reason));
                if self.include_usage {
                    openai_data(
                        out,
                        &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                                "model": self.model, "choices": [],
                                "usage": {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                                          "total_tokens": usage.input_tokens + usage.output_tokens}}),
                    );
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                return Progress::Done;
            }
            Some("error") => {
                if let Some(generic) = private {
                    openai_error_event(out, "server_error", generic);
                    return Progress::Failed(Some(provider_message(&v, &ev.data)));
                }
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                let msg = &scrub(msg, None);
                openai_error_event(out, "server_error", msg);
                return Progress::Failed(None);
            }
            _ => {}
        }
        Progress::Going
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[u8]) -> Vec<SseEvent> {
        SseParser::new().feed(out)
    }

    #[test]
    fn openai_stream_becomes_anthropic_events_with_tool_args_per_fragment() {
        let mut t = StreamTranslator::openai_to_anthropic("claude-x", 0);
        let mut out = Vec::new();
        let chunks = [
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"P\"}"}}]}}]}"#,
            r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#,
        ];
        for c in chunks {
            t.on_chunk(format!("data: {c}\n\n").as_bytes(), &mut out);
        }
        // Fragments were forwarded before the end of the stream.
        let partial = String::from_utf8(out.clone()).unwrap();
        assert!(partial.contains(r#""partial_json":"{\"ci""#));
        t.on_chunk(b"data: [DONE]\n\n", &mut out);
        assert!(t.is_complete() && !t.failed());
        let evs = events(&out);
        let names: Vec<_> = evs.iter().map(|e| e.event.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let md: Value = serde_json::from_str(&evs[10].data).unwrap();
        assert_eq!(md["delta"]["stop_reason"], "tool_use");
        assert_eq!(md["usage"]["output_tokens"], 9);
        assert_eq!(
            t.usage(),
            StreamUsage {
                input_tokens: 5,
                output_tokens: 9
            }
        );
    }

    #[test]
    fn reasoning_deltas_become_a_thinking_block() {
        let mut t = StreamTranslator::openai_to_anthropic("m", 0);
        let mut out = Vec::new();
        for c in [
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"answer"},"finish_reason":"stop"}]}"#,
        ] {
            t.on_chunk(format!("data: {c}\n\n").as_bytes(), &mut out);
        }
        t.on_chunk(b"data: [DONE]\n\n", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains(r#""type":"thinking_delta""#) && s.contains(r#""type":"thinking""#));
        assert!(s.find("thinking_delta").unwrap() < s.find("text_delta").unwrap());
    }

    #[test]
    fn cut_streams_end_with_an_error_event() {
        let mut t = StreamTranslator::openai_to_anthropic("m", 0);
        let mut out = Vec::new();
        t.on_chunk(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            &mut out,
        );
        t.on_end(&mut out);
        let evs = events(&out);
        assert_eq!(evs.last().unwrap().event.as_deref(), Some("error"));
        assert!(!String::from_utf8(out).unwrap().contains("message_stop"));

        let mut p = StreamTranslator::passthrough_openai();
        let mut out = Vec::new();
        p.on_chunk(b"data: {\"choices\":[]}\n\n", &mut out);
        p.on_end(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\"error\"") && !s.contains("[DONE]"));

        let mut p = StreamTranslator::passthrough_anthropic();
        let mut out = Vec::new();
        p.on_chunk(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            &mut out,
        );
        p.on_end(&mut out);
        assert!(p.is_complete() && !p.failed());
        assert!(!String::from_utf8(out).unwrap().contains("error"));
    }

    #[test]
    fn pass_through_holds_back_half_events_so_a_cut_ends_cleanly() {
        let mut p = StreamTranslator::passthrough_anthropic();
        let whole = bytes::Bytes::from_static(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let out = p.pass_chunk(whole.clone());
        assert_eq!(out, whole, "a chunk ending on a boundary goes out as is");
        let out = p.pass_chunk(bytes::Bytes::from_static(
            b"event: ping\ndata: {}\n\nevent: content_block_delta\ndata: {\"te",
        ));
        assert_eq!(&out[..], b"event: ping\ndata: {}\n\n");
        let mut tail = Vec::new();
        p.on_end(&mut tail);
        let tail = String::from_utf8(tail).unwrap();
        assert!(tail.starts_with("event: error\n"), "{tail}");
        let evs = SseParser::new().feed(tail.as_bytes());
        let v: Value = serde_json::from_str(&evs[0].data).unwrap();
        assert_eq!(v["error"]["type"], "api_error");
    }

    #[test]
    fn stream_errors_are_scrubbed_and_stop_after_tools_means_tool_use() {
        let mut t = StreamTranslator::openai_to_anthropic("m", 7);
        let mut out = Vec::new();
        t.on_chunk(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"a\",\"arguments\":\"{}\"}},{\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}\n\n", &mut out);
        t.on_chunk(b"data: [DONE]\n\n", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(
            s.matches("\"type\":\"tool_use\"").count(),
            2,
            "index-less calls stay apart: {s}"
        );
        assert!(s.contains("\"stop_reason\":\"tool_use\""));
        assert!(
            s.contains("\"input_tokens\":7"),
            "message_start carries the estimate"
        );
        let mut t = StreamTranslator::anthropic_to_openai("m", 1, false);
        let mut out = Vec::new();
        t.on_chunk(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"x\",\"message\":\"bad key sk-ant-api03-secretsecret\"}}\n\n", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            !s.contains("secretsecret") && s.contains("[redacted]"),
            "{s}"
        );
    }

    #[test]
    fn private_errors_replace_the_providers_message_in_every_mode() {
        const SECRET: &str = "Key sk-or-v1-abc...wxyz of org-ACME is over its limit";
        let generic = "the provider failed; see request id r-123".to_string();
        // Anthropic pass-through: the events before pass, the error is replaced, its type kept.
        let mut p = StreamTranslator::passthrough_anthropic().with_private_errors(generic.clone());
        let first = p.pass_chunk(bytes::Bytes::from_static(
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n",
        ));
        assert_eq!(&first[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let chunk = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\"}}\n\n\
             event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"{SECRET}\"}}}}\n\n\
             event: ping\ndata: {{}}\n\n"
        );
        let out = p.pass_chunk(bytes::Bytes::from(chunk));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("ACME") && text.contains("r-123"), "{text}");
        assert!(text.starts_with("event: content_block_delta\n"), "{text}");
        let evs = events(text.as_bytes());
        assert_eq!(evs.len(), 2, "nothing after the error: {text}");
        let v: Value = serde_json::from_str(&evs[1].data).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(p.take_withheld().as_deref(), Some(SECRET));
        assert!(p.failed() && p.is_complete());
        assert!(
            p.pass_chunk(bytes::Bytes::from_static(b"data: late\n\n"))
                .is_empty()
        );

        // OpenRouter's mid-stream error, passed through to an OpenAI client.
        let mut p = StreamTranslator::passthrough_openai_without_usage()
            .with_private_errors(generic.clone());
        let chunk = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"a\"}}}}]}}\n\n\
             data: {{\"object\":\"chat.completion.chunk\",\"error\":{{\"code\":502,\"message\":\"{SECRET}\"}},\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"error\"}}]}}\n\n"
        );
        let out = p.pass_chunk(bytes::Bytes::from(chunk));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("ACME") && text.contains("r-123"), "{text}");
        assert!(text.contains("\"content\":\"a\""), "{text}");
        assert_eq!(p.take_withheld().as_deref(), Some(SECRET));

        // Translated, both ways.
        let mut t =
            StreamTranslator::openai_to_anthropic("m", 0).with_private_errors(generic.clone());
        let mut out = Vec::new();
        t.on_chunk(
            format!("data: {{\"error\":{{\"message\":\"{SECRET}\"}}}}\n\n").as_bytes(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("ACME") && text.contains("r-123"), "{text}");
        assert_eq!(t.take_withheld().as_deref(), Some(SECRET));
        let mut t =
            StreamTranslator::anthropic_to_openai("m", 1, false).with_private_errors(generic);
        let mut out = Vec::new();
        t.on_chunk(
            format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"{SECRET}\"}}}}\n\n").as_bytes(),
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("ACME") && text.contains("r-123"), "{text}");
        assert_eq!(t.take_withheld().as_deref(), Some(SECRET));

        // Without private errors (a user's own key), the provider's message passes.
        let mut p = StreamTranslator::passthrough_openai();
        let chunk = format!("data: {{\"error\":{{\"message\":\"{SECRET}\"}}}}\n\n");
        let out = p.pass_chunk(bytes::Bytes::from(chunk.clone()));
        assert_eq!(&out[..], chunk.as_bytes());
        assert!(p.failed() && p.take_withheld().is_none());
    }

    #[test]
    fn usage_asked_for_the_client_is_counted_not_forwarded() {
        let mut p = StreamTranslator::passthrough_openai_without_usage();
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
                    data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
                    data: [DONE]\n\n";
        let out = p.pass_chunk(bytes::Bytes::from(body));
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(s.contains("\"hi\"") && s.ends_with("data: [DONE]\n\n"));
        assert!(!s.contains("prompt_tokens"), "{s}");
        assert_eq!(
            p.usage(),
            StreamUsage {
                input_tokens: 3,
                output_tokens: 2
            }
        );
    }

    #[test]
    fn anthropic_stream_becomes_openai_chunks() {
        let mut t = StreamTranslator::anthropic_to_openai("gpt-x", 1, true);
        let mut out = Vec::new();
        let evs = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_9","usage":{"input_tokens":4,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":12}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        for (name, data) in evs {
            t.on_chunk(
                format!("event: {name}\ndata: {data}\n\n").as_bytes(),
                &mut out,
            );
        }
        assert!(t.is_complete());
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"));
        assert!(s.contains(r#""finish_reason":"tool_calls""#));
        assert!(s.contains(r#""arguments":"{\"a\":""#));
        assert!(
            s.contains(r#""usage":{"completion_tokens":12,"prompt_tokens":4,"total_tokens":16}"#)
        );
    }
}
