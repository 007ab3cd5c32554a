//! The hand-off of an Anthropic Messages request to the agent orchestrator ("Brigade").
//!
//! Business rules: when a request is orchestrated ([`orchestration_requested`]), which model it
//! names ([`strip_orchestration_prefix`]), the task type ([`infer_task_type`]), and the task
//! body in the legacy contract ([`build_task`]): conversation history as typed parts (text,
//! images, tool calls, tool results), tools with their full JSON schema, sampling parameters
//! as sent (a temperature of 0 stays 0), `user_config`, `llm_config` from the resolved route,
//! and the execution server.

use chrono::Utc;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::domain::{CredentialKind, Principal};
use crate::execution::ExecutionServer;
use crate::ports::OrchestratorTask;
use crate::services::Route;

/// The model prefix that asks for orchestration: `brigade/<model>`.
pub const ORCHESTRATION_PREFIX: &str = "brigade/";
/// The header that asks for orchestration (`true`/`1`/`yes`).
pub const ORCHESTRATION_HEADER: &str = "x-byok-orchestrate";
/// The header naming the execution server (id or name; `none` for no server).
pub const EXECUTION_SERVER_HEADER: &str = "x-byok-execution-server";

/// Whether a request asks for orchestration: the header, or the model prefix.
pub fn orchestration_requested(header: Option<&str>, model: &str) -> bool {
    header.is_some_and(|h| matches!(h.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
        || model.starts_with(ORCHESTRATION_PREFIX)
}

/// The model to resolve once the orchestration prefix is removed.
pub fn strip_orchestration_prefix(model: &str) -> &str {
    model.strip_prefix(ORCHESTRATION_PREFIX).unwrap_or(model)
}

/// Tools that act on a machine (shell, files, code execution).
const CODE_TOOLS: &[&str] = &[
    "bash",
    "shell",
    "execute",
    "exec",
    "run",
    "terminal",
    "python",
    "code",
    "str_replace",
    "editor",
    "write_file",
    "edit",
];

/// `code` when a tool acts on a machine (by its name or type), `tool_use` when other tools are
/// offered, `chat` otherwise.
pub fn infer_task_type(request: &Value) -> &'static str {
    let Some(tools) = request.get("tools").and_then(Value::as_array) else {
        return "chat";
    };
    if tools.is_empty() {
        return "chat";
    }
    let acts_on_machine = tools.iter().any(|t| {
        ["name", "type"].iter().any(|f| {
            t.get(*f).and_then(Value::as_str).is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                CODE_TOOLS.iter().any(|c| n.contains(c))
            })
        })
    });
    if acts_on_machine { "code" } else { "tool_use" }
}

/// The text of a `system` field (a string, or an array of text blocks).
fn system_prompt(request: &Value) -> Option<String> {
    match request.get("system")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n\n"),
        ),
        _ => None,
    }
}

/// One content block as a part: text, image (kept whole), tool_call, tool_result.
fn part(block: &Value) -> Value {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => {
            json!({"type": "text", "text": block.get("text").cloned().unwrap_or_default()})
        }
        Some("image") | Some("document") => {
            json!({"type": block["type"], "source": block.get("source").cloned().unwrap_or_default()})
        }
        Some("tool_use") => {
            json!({"type": "tool_call", "id": block.get("id").cloned().unwrap_or_default(),
                                   "name": block.get("name").cloned().unwrap_or_default(),
                                   "input": block.get("input").cloned().unwrap_or_else(|| json!({}))})
        }
        Some("tool_result") => {
            let content = match block.get("content") {
                Some(Value::Array(items)) => Value::Array(items.iter().map(part).collect()),
                Some(other) => other.clone(),
                None => Value::String(String::new()),
            };
            json!({"type": "tool_result", "tool_call_id": block.get("tool_use_id").cloned().unwrap_or_default(),
                   "content": content, "is_error": block.get("is_error").and_then(Value::as_bool).unwrap_or(false)})
        }
        // Anything else (thinking, future block types) is passed as it came.
        _ => block.clone(),
    }
}

/// The conversation as `{role, parts}` messages (string content becomes one text part).
pub fn conversation_history(request: &Value) -> Vec<Value> {
    request
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|m| {
                    let parts = match m.get("content") {
                        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
                        Some(Value::Array(blocks)) => blocks.iter().map(part).collect(),
                        _ => Vec::new(),
                    };
                    json!({"role": m.get("role").cloned().unwrap_or_else(|| json!("user")), "parts": parts})
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the task needs to know about the resolved route beyond [`Route`].
#[derive(Debug, Clone)]
pub struct LlmTarget {
    /// The base URL the orchestrator should call.
    pub base_url: Option<String>,
    /// `anthropic` or `openai` (the provider's wire format).
    pub format: &'static str,
}

/// Builds the task body of the legacy contract. `server` is the execution server with its
/// connection config opened (secrets in clear, see [`crate::execution::reveal_config`]).
pub fn build_task(
    request: &Value,
    who: &Principal,
    route: &Route,
    target: &LlmTarget,
    server: Option<(ExecutionServer, Value)>,
    request_id: &str,
    stream: bool,
) -> OrchestratorTask {
    let task_id = format!("task_{}", Uuid::new_v4().simple());
    let pick = |k: &str| request.get(k).cloned().unwrap_or(Value::Null);
    let tools: Vec<Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let username = who.email.split('@').next().unwrap_or_default().to_string();
    let execution_server = match server {
        Some((s, connection)) => json!({
            "id": s.id.to_string(),
            "type": s.server_type.as_str(),
            "name": s.name,
            "connection": connection,
            "workspace": s.workspace_path,
        }),
        None => Value::Null,
    };
    let mut context = Map::new();
    context.insert(
        "system_prompt".into(),
        system_prompt(request)
            .map(Value::String)
            .unwrap_or(Value::Null),
    );
    context.insert(
        "conversation_history".into(),
        Value::Array(conversation_history(request)),
    );
    context.insert("model".into(), json!(route.model));
    for k in [
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
    ] {
        context.insert(k.into(), pick(k));
    }
    let body = json!({
        "task_id": task_id,
        "task_type": infer_task_type(request),
        "user_id": who.user_id.to_string(),
        "agents": [],
        "tools": tools,
        "context": context,
        "user_config": {
            "subscription_tier": who.tier.as_str(),
            "email": who.email,
            "username": username,
        },
        "llm_config": {
            "provider": route.provider.as_str(),
            "model": route.model,
            "api_key": route.api_key.as_ref().map(|k| k.expose().to_string()),
            "base_url": target.base_url,
            "format": target.format,
            "is_byok": route.credential == CredentialKind::User,
            "supports_streaming": true,
        },
        "execution_server": execution_server,
        "metadata": {
            "anthropic_request_id": request_id,
            "timestamp": Utc::now().to_rfc3339(),
            "stream": stream,
        },
    });
    OrchestratorTask {
        task_id,
        stream,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_and_prefix() {
        assert!(orchestration_requested(Some("true"), "claude"));
        assert!(orchestration_requested(None, "brigade/anthropic/claude"));
        assert!(!orchestration_requested(Some("no"), "claude"));
        assert_eq!(strip_orchestration_prefix("brigade/x/y"), "x/y");
    }

    #[test]
    fn task_types() {
        assert_eq!(infer_task_type(&json!({})), "chat");
        assert_eq!(
            infer_task_type(&json!({"tools": [{"name": "get_weather"}]})),
            "tool_use"
        );
        assert_eq!(
            infer_task_type(&json!({"tools": [{"name": "Bash"}]})),
            "code"
        );
        assert_eq!(
            infer_task_type(&json!({"tools": [{"type": "text_editor_20250124", "name": "x"}]})),
            "code"
        );
    }

    #[test]
    fn history_keeps_every_part() {
        let req = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}
        ]});
        let h = conversation_history(&req);
        assert_eq!(h[0]["parts"][0], json!({"type": "text", "text": "hi"}));
        assert_eq!(h[1]["parts"][1]["type"], "tool_call");
        assert_eq!(h[1]["parts"][1]["input"], json!({"a": 1}));
        assert_eq!(h[2]["parts"][0]["tool_call_id"], "t1");
        assert_eq!(h[2]["parts"][1]["source"]["data"], "AAAA");
    }
}
