//! The orchestrator port: the agent orchestrator ("Brigade") runs a task to a reply or a
//! stream of events.

use async_trait::async_trait;
use serde_json::Value;

/// A task ready to send. Its body holds decrypted secrets (the provider key, the server's
/// credentials): never logged, never in `Debug`.
pub struct OrchestratorTask {
    pub task_id: String,
    pub stream: bool,
    pub body: Value,
}

impl std::fmt::Debug for OrchestratorTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorTask")
            .field("task_id", &self.task_id)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// One block of an orchestrator's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBlock {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
}

/// An orchestrator's complete answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrchestratorReply {
    pub blocks: Vec<ReplyBlock>,
    /// `end_turn`, `tool_use`, `max_tokens`, … (`None`: derived from the blocks).
    pub stop_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum OrchestratorEvent {
    /// A piece of text.
    Text(String),
    /// A complete tool call.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The end, with the stop reason and usage.
    Done {
        stop_reason: Option<String>,
        input_tokens: u64,
        output_tokens: u64,
    },
}

/// Why an orchestrator call failed. Messages are safe to show (no secrets, no raw bodies).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OrchestratorError {
    /// Not reachable, or no answer in time.
    #[error("the orchestrator could not be reached: {0}")]
    Unreachable(String),
    /// It answered with an error status (or reported a failed task).
    #[error("the orchestrator failed the task (HTTP {status}): {message}")]
    Failed { status: u16, message: String },
    /// The answer was not in the contract's format, or the stream ended early.
    #[error("the orchestrator's answer was malformed or cut short: {0}")]
    Protocol(String),
}

/// A stream of events; it ends after `Done` or with an error.
pub type OrchestratorStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<OrchestratorEvent, OrchestratorError>> + Send>,
>;

/// The agent orchestrator ("Brigade"), implemented by `byok-brigade` over HTTP.
#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// Runs a task to completion.
    async fn run(&self, task: &OrchestratorTask) -> Result<OrchestratorReply, OrchestratorError>;
    /// Runs a task, streaming its answer. Dropping the stream MUST cancel the call.
    async fn run_stream(
        &self,
        task: &OrchestratorTask,
    ) -> Result<OrchestratorStream, OrchestratorError>;
    /// Whether the orchestrator answers its health check (cached briefly by implementations).
    async fn ready(&self) -> bool;
}
