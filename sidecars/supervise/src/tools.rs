//! The three MCP tools: their schemas, argument parsing and execution.
//!
//! Argument errors (missing field, wrong type, unknown tool) are protocol errors (JSON-RPC
//! `-32602`); failures while running a valid call (no such id, queue I/O) are tool results
//! with `isError: true`, so the model sees them and can react.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use sidecars_common::shutdown::Shutdown;

use crate::queue::{Approval, NewApproval, Queue, QueueError};
use crate::waiters::{blocking, read, Decisions};
use sidecars_common::mcp::jsonrpc::{RpcError, INVALID_PARAMS};
use sidecars_common::mcp::{tool_error as error_result, tool_ok, ServerInfo, ToolServer};

/// Longest accepted `kind`.
const MAX_KIND: usize = 64;
/// Longest accepted `summary`.
const MAX_SUMMARY: usize = 2000;
/// `wait_for_approval`'s timeout when the caller gives none.
const DEFAULT_WAIT_S: f64 = 60.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestArgs {
    kind: String,
    summary: String,
    #[serde(default)]
    details: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitArgs {
    id: String,
    #[serde(default)]
    timeout_s: Option<f64>,
}

/// What the tools need: the queue, the decision fan-out, the wait cap.
#[derive(Debug, Clone)]
pub struct Tools {
    queue: Queue,
    decisions: Arc<Decisions>,
    max_wait: Duration,
}

fn approval_output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "approved", "denied"]},
            "kind": {"type": "string"},
            "summary": {"type": "string"},
            "note": {"type": ["string", "null"]},
            "created_at": {"type": "string"},
            "decided_at": {"type": ["string", "null"]}
        },
        "required": ["id", "status"]
    })
}

/// The `tools/list` result.
pub fn list() -> Value {
    json!({"tools": [
        {
            "name": "request_approval",
            "title": "Request operator approval",
            "description": "Ask the human operator to approve an action before you take it. Returns an id with status \"pending\"; use wait_for_approval or get_approval to learn the decision.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "description": "Short category, e.g. \"deploy\", \"delete\", \"spend\".", "maxLength": MAX_KIND},
                    "summary": {"type": "string", "description": "One line the operator reads first.", "maxLength": MAX_SUMMARY},
                    "details": {"description": "Anything else the operator needs to decide (text or JSON object)."}
                },
                "required": ["kind", "summary"],
                "additionalProperties": false
            },
            "outputSchema": approval_output_schema()
        },
        {
            "name": "get_approval",
            "title": "Get an approval's status",
            "description": "Current status (pending, approved, denied) of an approval request and the operator's note.",
            "inputSchema": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
                "additionalProperties": false
            },
            "outputSchema": approval_output_schema()
        },
        {
            "name": "wait_for_approval",
            "title": "Wait for an approval decision",
            "description": "Block until the operator decides on the request or timeout_s seconds pass, then return its status (still \"pending\" on timeout).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "timeout_s": {"type": "number", "minimum": 0, "description": "Seconds to wait (default 60, capped by the server)."}
                },
                "required": ["id"],
                "additionalProperties": false
            },
            "outputSchema": approval_output_schema()
        }
    ]})
}

fn args<T: DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, RpcError> {
    serde_path_to_error::deserialize(arguments).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        RpcError::new(
            INVALID_PARAMS,
            format!("invalid arguments for {tool}{at}: {inner}"),
        )
    })
}

/// The agent-facing view of an approval (no internal fields such as `decided_by`).
fn view(a: &Approval) -> Value {
    json!({
        "id": a.id,
        "status": a.status.as_str(),
        "kind": a.kind,
        "summary": a.summary,
        "note": a.note,
        "created_at": a.created_at,
        "decided_at": a.decided_at,
    })
}

fn ok(value: Value) -> Value {
    tool_ok(value, true)
}

fn tool_error(message: String) -> Value {
    error_result(message)
}

fn queue_failure(err: QueueError) -> Value {
    match err {
        QueueError::NotFound(_) | QueueError::InvalidId(_) => tool_error(err.to_string()),
        other => {
            tracing::error!(err = %other, "approval queue failure");
            tool_error("the approval queue is unavailable; try again later".to_string())
        }
    }
}

impl Tools {
    /// Tools over `queue`, woken by `decisions`, waiting at most `max_wait` per call.
    pub fn new(queue: Queue, decisions: Arc<Decisions>, max_wait: Duration) -> Tools {
        Tools {
            queue,
            decisions,
            max_wait,
        }
    }

    /// Run tool `name` with `arguments`. `Err` is a protocol error; tool failures are `Ok`
    /// results with `isError: true`.
    pub async fn call(
        &self,
        name: String,
        arguments: Map<String, Value>,
        shutdown: &Shutdown,
    ) -> Result<Value, RpcError> {
        let arguments = Value::Object(arguments);
        match name.as_str() {
            "request_approval" => {
                let a: RequestArgs = args(&name, arguments)?;
                self.request(a).await
            }
            "get_approval" => {
                let a: GetArgs = args(&name, arguments)?;
                Ok(match read(&self.queue, &a.id).await {
                    Ok(approval) => ok(view(&approval)),
                    Err(err) => queue_failure(err),
                })
            }
            "wait_for_approval" => {
                let a: WaitArgs = args(&name, arguments)?;
                self.wait(a, shutdown).await
            }
            other => Err(RpcError::new(
                INVALID_PARAMS,
                format!("Unknown tool: {other}"),
            )),
        }
    }

    async fn request(&self, a: RequestArgs) -> Result<Value, RpcError> {
        let kind = a.kind.trim().to_string();
        let summary = a.summary.trim().to_string();
        if kind.is_empty() || kind.chars().count() > MAX_KIND {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("invalid arguments for request_approval at `kind`: must be 1 to {MAX_KIND} characters"),
            ));
        }
        if summary.is_empty() || summary.chars().count() > MAX_SUMMARY {
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("invalid arguments for request_approval at `summary`: must be 1 to {MAX_SUMMARY} characters"),
            ));
        }
        let queue = self.queue.clone();
        let new = NewApproval {
            kind,
            summary,
            details: a.details,
        };
        // The answer goes out only after the request is fsynced: an acknowledged request
        // survives a kill -9.
        Ok(match blocking(move || queue.submit(new)).await {
            Ok(approval) => {
                tracing::info!(id = %approval.id, kind = %approval.kind, "approval requested");
                ok(json!({"id": approval.id, "status": "pending"}))
            }
            Err(err) => queue_failure(err),
        })
    }

    async fn wait(&self, a: WaitArgs, shutdown: &Shutdown) -> Result<Value, RpcError> {
        let secs = a.timeout_s.unwrap_or(DEFAULT_WAIT_S);
        if !secs.is_finite() || secs < 0.0 {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "invalid arguments for wait_for_approval at `timeout_s`: must be a non-negative number",
            ));
        }
        let timeout = Duration::from_secs_f64(secs.min(self.max_wait.as_secs_f64()));
        let deadline = Instant::now() + timeout;
        Ok(
            match self
                .decisions
                .wait(&self.queue, &a.id, deadline, shutdown)
                .await
            {
                Ok(approval) => ok(view(&approval)),
                Err(err) => queue_failure(err),
            },
        )
    }
}

/// What `initialize` says about supervise.
static INFO: ServerInfo = ServerInfo {
    name: "sidecars-supervise",
    title: "Operator approvals",
    instructions: Some("Before a risky or irreversible action, call request_approval and then wait_for_approval; act only if the status is \"approved\"."),
    list_changed: false,
};

impl ToolServer for Tools {
    fn info(&self) -> &ServerInfo {
        &INFO
    }

    fn list_tools(&self, _version: &'static str) -> Value {
        list()
    }

    async fn call_tool(
        &self,
        name: String,
        arguments: Map<String, Value>,
        _version: &'static str,
        shutdown: &Shutdown,
    ) -> Result<Value, RpcError> {
        self.call(name, arguments, shutdown).await
    }
}
