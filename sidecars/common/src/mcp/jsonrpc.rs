//! JSON-RPC 2.0 message shapes: classifying what arrived, building what goes back.
//!
//! Hand-written on `serde_json::Value` on purpose: the Rust JSON-RPC crates (jsonrpsee,
//! jsonrpc-core) own their transport and don't speak MCP's streamable HTTP (session headers,
//! 202 for notifications, per-version batch rules), and we need to answer malformed input
//! with the exact error object the spec prescribes rather than whatever a framework emits.
//! The protocol surface is this module plus its siblings in [`crate::mcp`].

use serde_json::{json, Map, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal JSON-RPC error.
pub const INTERNAL_ERROR: i64 = -32603;

/// An error to send back as a JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// One of the codes above.
    pub code: i64,
    /// A sentence for the client (never a secret, never a stack trace).
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// The full response object for request `id` (`null` when the id is unknown).
    pub fn to_response(&self, id: Value) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": self.code, "message": self.message},
        })
    }
}

/// A success response for request `id`.
pub fn result_response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// One incoming message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request: must be answered.
    Request {
        /// The request id (string or integer), echoed back.
        id: Value,
        /// The method name.
        method: String,
        /// The params object, if any.
        params: Option<Map<String, Value>>,
    },
    /// A notification: never answered.
    Notification {
        /// The method name.
        method: String,
    },
    /// A response to a server→client request. We send none, so these are dropped.
    Response,
}

/// A message that could not be classified, with the id to answer to (`null` if unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The id to use in the error response.
    pub id: Value,
    /// Why.
    pub error: RpcError,
}

/// MCP ids are strings or integers (never null, never fractional).
fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

/// Classify one JSON value as a request, notification or response.
pub fn classify(value: Value) -> Result<Incoming, Rejected> {
    let Value::Object(mut obj) = value else {
        return Err(Rejected {
            id: Value::Null,
            error: RpcError::new(INVALID_REQUEST, "a JSON-RPC message must be an object"),
        });
    };
    let id = obj.remove("id");
    let reply_id = id.clone().filter(valid_id).unwrap_or(Value::Null);
    let reject = |message: &str| {
        Err(Rejected {
            id: reply_id.clone(),
            error: RpcError::new(INVALID_REQUEST, message),
        })
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return reject("`jsonrpc` must be \"2.0\"");
    }
    if let Some(id) = &id {
        if !valid_id(id) {
            return reject("`id` must be a string or an integer");
        }
    }
    let Some(method) = obj.remove("method") else {
        if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) {
            return Ok(Incoming::Response);
        }
        return reject("missing `method`");
    };
    let Value::String(method) = method else {
        return reject("`method` must be a string");
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(Value::Array(_)) => {
            return Err(Rejected {
                id: reply_id,
                error: RpcError::new(INVALID_PARAMS, "`params` must be an object"),
            })
        }
        Some(_) => return reject("`params` must be an object"),
    };
    match id {
        Some(id) => Ok(Incoming::Request { id, method, params }),
        None => Ok(Incoming::Notification { method }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_notification_response() {
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Ok(Incoming::Request { .. })
        ));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Ok(Incoming::Notification { .. })
        ));
        assert!(matches!(
            classify(json!({"jsonrpc":"2.0","id":"x","result":{}})),
            Ok(Incoming::Response)
        ));
    }

    #[test]
    fn malformed_messages_are_invalid_requests() {
        for bad in [
            json!(1),
            json!("x"),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 7}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": 3}),
        ] {
            let err = classify(bad.clone()).unwrap_err();
            assert_eq!(err.error.code, INVALID_REQUEST, "{bad}");
        }
    }

    #[test]
    fn array_params_are_invalid_params_with_the_id() {
        let err =
            classify(json!({"jsonrpc":"2.0","id":9,"method":"ping","params":[1]})).unwrap_err();
        assert_eq!(err.error.code, INVALID_PARAMS);
        assert_eq!(err.id, json!(9));
    }
}
