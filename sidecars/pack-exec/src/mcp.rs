//! Every visible pack as an MCP tool, at `/mcp` on the agent listener.
//!
//! The transport, sessions and SSE stream are [`sidecars_common::mcp`]'s (the same as
//! supervise's); this module maps packs to tools and calls to [`Calls::run`], so a call over
//! MCP runs exactly as `POST /v1/packs/{name}` does: same schemas, slots, jail and limits.
//!
//! Tool names: a pack's name `<namespace>.<name>` is `^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`, so
//! its one `.` becomes `-` (`cmd.upper` ↔ `cmd-upper`). The result uses only `[a-z0-9_-]`,
//! which MCP and the model APIs' tool-name rules (`^[a-zA-Z0-9_-]{1,64}$`) accept, and is
//! reversible because pack names never hold a `-`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use sidecars_common::error::ApiError;
use sidecars_common::mcp::jsonrpc::{RpcError, INVALID_PARAMS};
use sidecars_common::mcp::session::has_structured_output;
use sidecars_common::mcp::{tool_error, tool_ok, ServerInfo, ToolServer};
use sidecars_common::shutdown::Shutdown;

use crate::api::{check_input, Calls};
use crate::manifest::{valid_name, Pack};
use crate::store::Store;

/// The MCP tool name of pack `pack` (`cmd.upper` → `cmd-upper`).
pub fn tool_name(pack: &str) -> String {
    pack.replacen('.', "-", 1)
}

/// The pack a tool name stands for, if it stands for one (`cmd-upper` → `cmd.upper`).
pub fn pack_name(tool: &str) -> Option<String> {
    if tool.contains('.') {
        return None;
    }
    let name = tool.replacen('-', ".", 1);
    valid_name(&name).then_some(name)
}

/// pack-exec's tools: the store's packs, run through the shared call path.
pub struct PackTools {
    /// Installed and shipped packs.
    pub store: Arc<Store>,
    /// How calls run.
    pub calls: Calls,
}

static INFO: ServerInfo = ServerInfo {
    name: "sidecars-pack-exec",
    title: "Command packs",
    instructions: None,
    list_changed: true,
};

/// `input_schema` as an MCP `inputSchema`: MCP wants `"type": "object"` at the top, which a
/// pack's input always is (a call's input is a JSON object), so it is added when absent.
fn input_schema(summary: &Value) -> Value {
    let mut schema = summary
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut schema {
        map.entry("type").or_insert_with(|| json!("object"));
    } else {
        schema = json!({"type": "object"});
    }
    schema
}

/// `output_schema` as an MCP `outputSchema`, when it describes an object (MCP's rule for
/// structured content): `type: object`, or — helmdeck's way, which [`crate::schema`] reads
/// as an object too — `properties`/`required` without a `type`. Other outputs are returned
/// as text only.
fn output_schema(summary: &Value) -> Option<Value> {
    let schema = summary.get("output_schema")?.as_object()?;
    match schema.get("type") {
        Some(t) if t == "object" => Some(Value::Object(schema.clone())),
        None if schema.contains_key("properties") || schema.contains_key("required") => {
            let mut schema = schema.clone();
            schema.insert("type".into(), json!("object"));
            Some(Value::Object(schema))
        }
        _ => None,
    }
}

fn tool(pack: &Pack, version: &'static str) -> Value {
    let summary = &pack.summary;
    let description = summary
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("The command pack {} {}.", pack.name, pack.version));
    let mut tool = json!({
        "name": tool_name(&pack.name),
        "title": pack.name,
        "description": description,
        "inputSchema": input_schema(summary),
    });
    if has_structured_output(version) {
        if let Some(schema) = output_schema(summary) {
            tool["outputSchema"] = schema;
        }
    }
    tool
}

/// A pack failure as the tool result the model sees: the same `{"error","message"}` pair as
/// the HTTP API's error body, with `isError`.
fn failure(e: ApiError) -> Value {
    tool_error(json!({"error": e.code, "message": e.message}).to_string())
}

impl ToolServer for PackTools {
    fn info(&self) -> &ServerInfo {
        &INFO
    }

    fn list_tools(&self, version: &'static str) -> Value {
        let tools: Vec<Value> = self.store.list().iter().map(|p| tool(p, version)).collect();
        json!({ "tools": tools })
    }

    async fn call_tool(
        &self,
        name: String,
        arguments: Map<String, Value>,
        version: &'static str,
        _shutdown: &Shutdown,
    ) -> Result<Value, RpcError> {
        let Some(pack) = pack_name(&name).and_then(|p| self.store.get(&p)) else {
            let shown: String = name.chars().take(128).collect();
            return Err(RpcError::new(
                INVALID_PARAMS,
                format!("Unknown tool: {shown}"),
            ));
        };
        let input = Value::Object(arguments);
        // A schema mismatch is a tool execution error (MCP 2025-11-25): the model sees it and
        // can correct its arguments.
        if let Err(e) = check_input(&pack, &input) {
            return Ok(failure(e));
        }
        let input = Bytes::from(input.to_string());
        Ok(match self.calls.run(&pack, input, false).await {
            Ok(called) => tool_ok(called.output, has_structured_output(version)),
            Err(e) => failure(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_map_both_ways_and_stay_within_the_model_apis_rules() {
        for pack in ["cmd.upper", "a.b", "my_ns.tool_2"] {
            let tool = tool_name(pack);
            assert!(tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            assert_eq!(pack_name(&tool).as_deref(), Some(pack));
        }
        assert_eq!(tool_name("cmd.upper"), "cmd-upper");
        for not_a_pack in ["cmd.upper", "cmdupper", "cmd-up-per", "Cmd-upper", "-x", ""] {
            assert_eq!(pack_name(not_a_pack), None, "{not_a_pack}");
        }
    }

    #[test]
    fn schemas_become_mcp_schemas() {
        assert_eq!(input_schema(&json!({})), json!({"type": "object"}));
        assert_eq!(
            input_schema(&json!({"input_schema": {"properties": {"a": {}}}})),
            json!({"type": "object", "properties": {"a": {}}})
        );
        assert_eq!(
            output_schema(&json!({"output_schema": {"type": "object"}})),
            Some(json!({"type": "object"}))
        );
        assert_eq!(
            output_schema(&json!({"output_schema": {"type": "string"}})),
            None
        );
        assert_eq!(output_schema(&json!({"output_schema": {}})), None);
        assert_eq!(
            output_schema(&json!({"output_schema": {"required": ["text"]}})),
            Some(json!({"type": "object", "required": ["text"]}))
        );
    }
}
