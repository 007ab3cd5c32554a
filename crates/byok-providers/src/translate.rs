//! Request and response translation between the Anthropic Messages API and OpenAI Chat
//! Completions, on `serde_json::Value` so unknown fields of either side never break a request.
//!
//! Mapping (Anthropic ⇄ OpenAI):
//! - `system` (string or text blocks) ⇄ leading `system`/`developer` messages;
//! - text blocks ⇄ text content / content parts; image blocks (base64 or URL) ⇄ `image_url`
//!   parts (data URLs for base64);
//! - assistant `tool_use` blocks ⇄ `tool_calls` (arguments as a JSON string);
//! - user `tool_result` blocks ⇄ `role: "tool"` messages;
//! - `thinking` blocks are dropped towards OpenAI (it has no input form for them);
//! - `tools` (`input_schema`) ⇄ `tools[].function` (`parameters`); `tool_choice` auto/any/tool/none
//!   ⇄ auto/required/{function}/none; `disable_parallel_tool_use` ⇄ `parallel_tool_calls: false`;
//! - `stop_sequences` ⇄ `stop`; `max_tokens` ⇄ `max_tokens`/`max_completion_tokens`;
//!   `temperature`, `top_p` kept as they are (0 stays 0); `metadata.user_id` ⇄ `user`;
//! - stop reasons: `end_turn`/`stop_sequence` ⇄ `stop`, `max_tokens` ⇄ `length`,
//!   `tool_use` ⇄ `tool_calls`, `refusal` ⇄ `content_filter`;
//! - usage: `input_tokens`/`output_tokens` ⇄ `prompt_tokens`/`completion_tokens`.

use serde_json::{Map, Value, json};

/// Anthropic requires `max_tokens`; used when an OpenAI client sent none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn text_of_blocks(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

/// An Anthropic `tool_use` block as an OpenAI `tool_calls` entry (arguments as a JSON string).
fn tool_use_to_call(b: &Value) -> Value {
    json!({
        "id": b.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": b.get("name").cloned().unwrap_or(Value::Null),
            "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
        }
    })
}

fn anthropic_image_to_openai(block: &Value) -> Option<Value> {
    let source = block.get("source")?;
    let url = match source.get("type").and_then(Value::as_str)? {
        "base64" => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        "url" => source.get("url").and_then(Value::as_str)?.to_string(),
        _ => return None,
    };
    Some(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result_content(block: &Value) -> Value {
    match block.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => {
            let only_text = parts
                .iter()
                .all(|p| p.get("type").and_then(Value::as_str) == Some("text"));
            if only_text {
                Value::String(text_of_blocks(&Value::Array(parts.clone())))
            } else {
                Value::Array(
                    parts
                        .iter()
                        .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                            Some("text") => Some(json!({"type": "text", "text": p["text"]})),
                            Some("image") => anthropic_image_to_openai(p),
                            _ => None,
                        })
                        .collect(),
                )
            }
        }
        _ => Value::String(String::new()),
    }
}

/// Anthropic Messages request → OpenAI Chat Completions request for `model`.
/// `use_max_completion_tokens`: OpenAI itself wants `max_completion_tokens` (o-series).
pub fn anthropic_request_to_openai(
    req: &Value,
    model: &str,
    use_max_completion_tokens: bool,
) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = req.get("system") {
        let text = text_of_blocks(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for msg in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = msg.get("content").cloned().unwrap_or(Value::Null);
        let blocks = match content {
            Value::String(s) => {
                messages.push(json!({"role": role, "content": s}));
                continue;
            }
            Value::Array(b) => b,
            _ => continue,
        };
        if role == "assistant" {
            let mut text = String::new();
            let mut tool_calls = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("tool_use") => tool_calls.push(tool_use_to_call(b)),
                    _ => {}
                }
            }
            let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !tool_calls.is_empty() {
                m["tool_calls"] = Value::Array(tool_calls);
            }
            messages.push(m);
        } else {
            // Tool results become `tool` messages (they must directly follow the assistant's
            // tool calls); the rest of the user's blocks become one user message after them.
            let mut parts = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_result") => {
                        let mut content = tool_result_content(b);
                        if b.get("is_error").and_then(Value::as_bool) == Some(true)
                            && let Value::String(s) = &content
                        {
                            content = Value::String(format!("Error: {s}"));
                        }
                        messages.push(json!({
                            "role": "tool",
                            "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                            "content": content,
                        }));
                    }
                    Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(Value::Null)})),
                    Some("image") => parts.extend(anthropic_image_to_openai(b)),
                    _ => {}
                }
            }
            if !parts.is_empty() {
                let all_text = parts.iter().all(|p| p["type"] == "text");
                let content = if all_text && parts.len() == 1 {
                    parts[0]["text"].clone()
                } else {
                    Value::Array(parts)
                };
                messages.push(json!({"role": role, "content": content}));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(m) = req.get("max_tokens") {
        let key = if use_max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        out.insert(key.into(), m.clone());
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences") {
        out.insert("stop".into(), stop.clone());
    }
    // OpenAI caps `user` at 64 characters; longer ids (Claude Code sends a JSON blob) are not
    // forwarded.
    if let Some(user) = req
        .pointer("/metadata/user_id")
        .filter(|u| u.as_str().is_some_and(|s| s.chars().count() <= 64))
    {
        out.insert("user".into(), user.clone());
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let converted: Vec<Value> = tools
            .iter()
            .filter(|t| t.get("input_schema").is_some())
            .map(|t| {
                let mut f = json!({
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                });
                if let Some(d) = t.get("description") {
                    f["description"] = d.clone();
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(tc) = req.get("tool_choice") {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => Some(
                json!({"type": "function", "function": {"name": tc.get("name").cloned().unwrap_or(Value::Null)}}),
            ),
            _ => None,
        };
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(out)
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
pub fn stop_reason_from_openai(reason: Option<&str>) -> &'static str {
    match reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason_from_anthropic(reason: Option<&str>) -> &'static str {
    match reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Parses tool-call arguments; an unparsable string is kept under `_raw` rather than lost.
fn parse_arguments(args: Option<&Value>) -> Value {
    match args {
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({"_raw": s})),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// A message id in Anthropic's shape.
pub fn anthropic_message_id(upstream: Option<&str>) -> String {
    match upstream {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        _ => crate::redact::fresh_id("msg_"),
    }
}

/// OpenAI Chat Completions response → Anthropic Messages response (model = requested name).
pub fn openai_response_to_anthropic(resp: &Value, model: &str) -> Value {
    // Borrowed, not cloned: a large answer is not copied more than once.
    let choice = resp.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(r) = message
        .get("reasoning_content")
        .or_else(|| message.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    {
        content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
    }
    if let Some(t) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or_else(|| json!(crate::redact::fresh_id("toolu_"))),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": parse_arguments(call.pointer("/function/arguments")),
        }));
    }
    // Some servers say "stop" although they called tools: the client must still run them.
    let stop_reason = if content.iter().any(|b| b["type"] == "tool_use") {
        "tool_use"
    } else {
        stop_reason_from_openai(choice.get("finish_reason").and_then(Value::as_str))
    };
    let usage = resp.get("usage");
    let tokens = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "id": anthropic_message_id(resp.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": tokens("prompt_tokens"), "output_tokens": tokens("completion_tokens")},
    })
}

fn openai_image_to_anthropic(part: &Value) -> Option<Value> {
    let url = part.pointer("/image_url/url").and_then(Value::as_str)?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.trim_end_matches(";base64");
        return Some(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    Some(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

fn openai_content_to_blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => vec![],
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Some(
                    json!({"type": "text", "text": p.get("text").cloned().unwrap_or(Value::Null)}),
                ),
                Some("image_url") => openai_image_to_anthropic(p),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// OpenAI Chat Completions request → Anthropic Messages request for `model`.
pub fn openai_request_to_anthropic(req: &Value, model: &str) -> Value {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let push = |role: &str, blocks: Vec<Value>, messages: &mut Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        // Anthropic wants alternating roles: merge consecutive same-role messages.
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(arr) = last["content"].as_array_mut()
        {
            arr.extend(blocks);
            return;
        }
        messages.push(json!({"role": role, "content": blocks}));
    };
    for msg in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = msg.get("content").cloned().unwrap_or(Value::Null);
        match role {
            "system" | "developer" => system.push(text_of_blocks(&content)),
            "assistant" => {
                let mut blocks = openai_content_to_blocks(&content);
                for call in msg
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").cloned().unwrap_or(Value::Null),
                        "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        "input": parse_arguments(call.pointer("/function/arguments")),
                    }));
                }
                push("assistant", blocks, &mut messages);
            }
            "tool" | "function" => {
                let text = text_of_blocks(&content);
                push(
                    "user",
                    vec![json!({
                        "type": "tool_result",
                        "tool_use_id": msg.get("tool_call_id").cloned().unwrap_or(Value::Null),
                        "content": text,
                    })],
                    &mut messages,
                );
            }
            _ => push("user", openai_content_to_blocks(&content), &mut messages),
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_string()));
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    out.insert("max_tokens".into(), json!(max));
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| !v.is_null()) {
            out.insert(k.into(), v.clone());
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(u) = req.get("user").filter(|u| u.is_string()) {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let converted: Vec<Value> = tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut t = json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "input_schema": f.get("parameters").cloned().unwrap_or(json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = f.get("description") {
                    t["description"] = d.clone();
                }
                t
            })
            .collect();
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    let parallel_off = req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    let mut choice = match req.get("tool_choice") {
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|n| json!({"type": "tool", "name": n})),
        _ => None,
    };
    if parallel_off && out.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
    }
    Value::Object(out)
}

/// Anthropic Messages response → OpenAI Chat Completions response (model = requested name).
pub fn anthropic_response_to_openai(resp: &Value, model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in resp
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(tool_use_to_call(b)),
            _ => {}
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
    }
    let usage = resp.get("usage");
    let tokens = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let input = tokens("input_tokens")
        + tokens("cache_read_input_tokens")
        + tokens("cache_creation_input_tokens");
    let output = tokens("output_tokens");
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("msg");
    json!({
        "id": format!("chatcmpl-{}", id.trim_start_matches("msg_")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason_from_anthropic(resp.get("stop_reason").and_then(Value::as_str)),
            "logprobs": null,
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_to_openai_request_covers_blocks_tools_and_sampling() {
        let req = json!({
            "model": "claude-x", "max_tokens": 100, "temperature": 0, "top_p": 0.5, "top_k": 3,
            "stop_sequences": ["END"], "stream": true, "metadata": {"user_id": "u1"},
            "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
            "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "checking"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "thanks"}
                ]}
            ]
        });
        let out = anthropic_request_to_openai(&req, "gpt-4o", false);
        assert_eq!(out["model"], "gpt-4o");
        assert_eq!(out["temperature"], 0, "temperature 0 stays 0");
        assert_eq!(out["top_p"], 0.5);
        assert!(out.get("top_k").is_none());
        assert_eq!(out["stop"], json!(["END"]));
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["user"], "u1");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["tool_choice"], "required");
        assert_eq!(out["parallel_tool_calls"], false);
        assert_eq!(
            out["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        let m = out["messages"].as_array().unwrap();
        assert_eq!(
            m[0],
            json!({"role": "system", "content": "be brief\n\nbe kind"})
        );
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
        assert_eq!(m[2]["content"], "checking");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "thanks"}));
        let o = anthropic_request_to_openai(&req, "o3", true);
        assert_eq!(o["max_completion_tokens"], 100);
    }

    #[test]
    fn openai_to_anthropic_response() {
        let resp = json!({
            "id": "chatcmpl-abc", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "let me see",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]
            }}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        });
        let out = openai_response_to_anthropic(&resp, "claude-x");
        assert_eq!(out["id"], "msg_abc");
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"][0],
            json!({"type": "text", "text": "let me see"})
        );
        assert_eq!(out["content"][1]["input"], json!({"a": 1}));
        assert_eq!(
            out["usage"],
            json!({"input_tokens": 11, "output_tokens": 7})
        );
    }

    #[test]
    fn openai_to_anthropic_request_and_back() {
        let req = json!({
            "model": "x", "temperature": 0, "stop": "END", "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":\"x\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "result"},
                {"role": "tool", "tool_call_id": "c2", "content": "result2"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto"
        });
        let out = openai_request_to_anthropic(&req, "claude-y");
        assert_eq!(out["system"], "sys");
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(out["temperature"], 0);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(
            out["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        let m = out["messages"].as_array().unwrap();
        assert_eq!(
            m[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/jpeg", "data": "QUJD"})
        );
        assert_eq!(m[1]["content"][0]["input"], json!({"q": "x"}));
        assert_eq!(
            m[2]["content"].as_array().unwrap().len(),
            2,
            "consecutive tool results merge"
        );

        let resp = json!({"id": "msg_1", "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"z": 2}}],
                          "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}});
        let o = anthropic_response_to_openai(&resp, "x", 1);
        assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"z":2}"#
        );
        assert_eq!(o["usage"]["total_tokens"], 7);
    }
}
