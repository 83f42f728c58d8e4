//! MCP over streamable HTTP, written once for the bundle's MCP servers (supervise's approvals,
//! pack-exec's packs as tools).
//!
//! | module | job |
//! | --- | --- |
//! | [`jsonrpc`] | JSON-RPC 2.0 message classification and error objects |
//! | [`session`] | version negotiation, the session table, notification fan-out |
//! | [`transport`] | the `/mcp` endpoint: POST/GET/DELETE rules, the method table, SSE |
//!
//! A server implements [`transport::ToolServer`] (its info, `tools/list`, `tools/call`) and
//! mounts a [`transport::Endpoint`] at `/mcp`.

pub mod jsonrpc;
pub mod session;
pub mod transport;

use serde_json::{json, Value};

pub use jsonrpc::RpcError;
pub use session::Sessions;
pub use transport::{Endpoint, ServerInfo, ToolServer};

/// The notification a server sends when its tool list changed.
pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";

/// A `CallToolResult` carrying `value` as text JSON and, when `structured`, as
/// `structuredContent` (which MCP requires to be an object).
pub fn tool_ok(value: Value, structured: bool) -> Value {
    let text = value.to_string();
    if structured && value.is_object() {
        json!({
            "content": [{"type": "text", "text": text}],
            "structuredContent": value,
            "isError": false,
        })
    } else {
        json!({"content": [{"type": "text", "text": text}], "isError": false})
    }
}

/// A tool execution error the model should see (`isError: true`), with `text` as its content.
pub fn tool_error(text: String) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
    })
}
