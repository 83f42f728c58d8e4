//! MCP's streamable HTTP transport (2025-03-26 and later), for any [`ToolServer`].
//!
//! `POST /mcp` carries one JSON-RPC message (or a batch, in 2025-03-26 only); requests are
//! answered with `application/json`, input made only of notifications/responses with
//! `202 Accepted`; `initialize` issues `Mcp-Session-Id`, which every later request must carry
//! (400 without it, 404 for an unknown one); `DELETE /mcp` ends a session. `GET /mcp` opens
//! the session's SSE stream of server notifications when the server announces `listChanged`,
//! and is 405 otherwise.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming as IncomingBody};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::jsonrpc::{
    classify, result_response, Incoming, RpcError, INVALID_PARAMS, INVALID_REQUEST,
    METHOD_NOT_FOUND, PARSE_ERROR,
};
use super::session::{
    batches_allowed, negotiate, SessionError, Sessions, StreamHandle, SESSION_HEADER,
    VERSION_HEADER,
};
use crate::body::{empty, json as json_response, read_limited, Body, BoxError, ReadBodyError};
use crate::http::RequestContext;
use crate::shutdown::Shutdown;

/// An idle SSE stream carries a comment this often, so a dead client is noticed and no
/// middlebox closes the connection as idle.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// What `initialize` tells the client about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `serverInfo.name`.
    pub name: &'static str,
    /// `serverInfo.title`.
    pub title: &'static str,
    /// `instructions`, if the server has any for the model.
    pub instructions: Option<&'static str>,
    /// Whether the server sends `notifications/tools/list_changed` (and so serves `GET /mcp`).
    pub list_changed: bool,
}

/// A server's tools: the one thing that differs between the bundle's MCP servers.
pub trait ToolServer: Send + Sync + 'static {
    /// The server's description for `initialize`.
    fn info(&self) -> &ServerInfo;
    /// The `tools/list` result for a session of protocol `version`.
    fn list_tools(&self, version: &'static str) -> Value;
    /// Run tool `name`. `Err` is a protocol error (unknown tool, malformed arguments);
    /// failures while running are `Ok` results with `isError: true` ([`super::tool_error`]).
    fn call_tool(
        &self,
        name: String,
        arguments: Map<String, Value>,
        version: &'static str,
        shutdown: &Shutdown,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;
}

/// The `/mcp` endpoint of one server: transport rules, sessions, and the method table.
pub struct Endpoint<S> {
    /// The tools.
    pub server: S,
    /// Live sessions (shared with whoever sends notifications).
    pub sessions: Arc<Sessions>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// A JSON-RPC error with a null id, answered at the HTTP level with `status`.
fn rpc_error(status: StatusCode, err: &RpcError) -> Response<Body> {
    json_response(status, &err.to_response(Value::Null))
}

fn header_str<'a>(req: &'a Request<IncomingBody>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// DNS-rebinding guard the spec asks for: a browser-sent `Origin` must match `Host`.
/// Non-browser clients (agents, SDKs) send no `Origin` and pass.
fn origin_ok(req: &Request<IncomingBody>) -> bool {
    let Some(origin) = header_str(req, "origin") else {
        return true;
    };
    let host = header_str(req, "host").unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    !host.is_empty() && origin_host.trim_end_matches('/') == host
}

/// An HTTP-level refusal: status plus the JSON-RPC error in the body.
type Refusal = (StatusCode, RpcError);

fn session_refusal(err: SessionError) -> Refusal {
    match err {
        SessionError::Missing => (
            StatusCode::BAD_REQUEST,
            RpcError::new(
                INVALID_REQUEST,
                "missing Mcp-Session-Id header: send initialize first",
            ),
        ),
        SessionError::Unknown => (
            StatusCode::NOT_FOUND,
            RpcError::new(
                INVALID_REQUEST,
                "unknown or expired session: send initialize again",
            ),
        ),
    }
}

fn refuse((status, err): Refusal) -> Response<Body> {
    rpc_error(status, &err)
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// Split `tools/call`'s params into the tool name and its arguments object.
fn call_params(
    params: Option<Map<String, Value>>,
) -> Result<(String, Map<String, Value>), RpcError> {
    let mut params = params.unwrap_or_default();
    let name = match params.remove("name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(RpcError::new(INVALID_PARAMS, "`name` must be a string")),
        None => return Err(RpcError::new(INVALID_PARAMS, "missing `name`")),
    };
    let arguments = match params.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "`arguments` must be an object",
            ))
        }
    };
    Ok((name, arguments))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl<S: ToolServer> Endpoint<S> {
    /// Answer a request for `/mcp` (the caller routes the path).
    pub async fn handle(&self, req: Request<IncomingBody>, ctx: &RequestContext) -> Response<Body> {
        match *req.method() {
            Method::POST => self.post(req, ctx).await,
            Method::DELETE => self.delete(&req),
            Method::GET if self.server.info().list_changed => self.stream(&req, ctx),
            _ => {
                let (allow, message) = if self.server.info().list_changed {
                    (
                        "GET, POST, DELETE",
                        "use POST, GET (the SSE stream) or DELETE",
                    )
                } else {
                    (
                        "POST, DELETE",
                        "this server offers no SSE stream; use POST (and DELETE to end a session)",
                    )
                };
                let mut resp = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &RpcError::new(INVALID_REQUEST, message),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
        }
    }

    fn delete(&self, req: &Request<IncomingBody>) -> Response<Body> {
        match header_str(req, SESSION_HEADER) {
            None => refuse(session_refusal(SessionError::Missing)),
            Some(id) if self.sessions.remove(id) => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Some(_) => refuse(session_refusal(SessionError::Unknown)),
        }
    }

    /// The session's version, after checking the version header against it.
    fn session(
        &self,
        session_id: Option<&str>,
        version_header: Option<&str>,
    ) -> Result<&'static str, Refusal> {
        let version = self.sessions.get(session_id).map_err(session_refusal)?;
        check_version_header(version, version_header)?;
        Ok(version)
    }

    /// `GET /mcp`: the session's stream of server notifications, as `text/event-stream`.
    fn stream(&self, req: &Request<IncomingBody>, ctx: &RequestContext) -> Response<Body> {
        if !origin_ok(req) {
            return rpc_error(
                StatusCode::FORBIDDEN,
                &RpcError::new(INVALID_REQUEST, "Origin does not match Host"),
            );
        }
        let accept = header_str(req, "accept").unwrap_or("").to_ascii_lowercase();
        if !accept.contains("text/event-stream") {
            return rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                &RpcError::new(INVALID_REQUEST, "Accept must allow text/event-stream"),
            );
        }
        let session_id = header_str(req, SESSION_HEADER);
        let version = match self.sessions.get(session_id) {
            Ok(v) => v,
            Err(e) => return refuse(session_refusal(e)),
        };
        if let Err(refusal) = check_version_header(version, header_str(req, VERSION_HEADER)) {
            return refuse(refusal);
        }
        let handle = match self.sessions.open_stream(session_id) {
            Ok(h) => h,
            Err(e) => return refuse(session_refusal(e)),
        };
        let mut resp = Response::new(sse_body(handle, ctx.shutdown.clone()));
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }

    async fn post(&self, req: Request<IncomingBody>, ctx: &RequestContext) -> Response<Body> {
        if !origin_ok(&req) {
            return rpc_error(
                StatusCode::FORBIDDEN,
                &RpcError::new(INVALID_REQUEST, "Origin does not match Host"),
            );
        }
        let content_type = header_str(&req, "content-type").unwrap_or("");
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &RpcError::new(INVALID_REQUEST, "Content-Type must be application/json"),
            );
        }
        if let Some(accept) = header_str(&req, "accept") {
            let a = accept.to_ascii_lowercase();
            if !(a.contains("application/json") || a.contains("*/*") || a.contains("application/*"))
            {
                return rpc_error(
                    StatusCode::NOT_ACCEPTABLE,
                    &RpcError::new(INVALID_REQUEST, "Accept must allow application/json"),
                );
            }
        }
        let session_id = header_str(&req, SESSION_HEADER).map(str::to_string);
        let version_header = header_str(&req, VERSION_HEADER).map(str::to_string);
        let (parts, body) = req.into_parts();
        let bytes = match read_limited(&parts.headers, body, self.max_body_bytes).await {
            Ok(b) => b,
            Err(ReadBodyError::TooLarge { limit }) => {
                return rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &RpcError::new(
                        INVALID_REQUEST,
                        format!("request body is larger than {limit} bytes"),
                    ),
                )
            }
            Err(ReadBodyError::Io(err)) => {
                tracing::debug!(%err, "client went away mid-body");
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &RpcError::new(PARSE_ERROR, "could not read the request body"),
                );
            }
        };
        // serde_json refuses nesting deeper than 128 levels, so hostile input can't blow the
        // stack; it becomes a parse error like any other bad JSON.
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(err) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    &RpcError::new(PARSE_ERROR, format!("parse error: {err}")),
                )
            }
        };
        let (sid, vh) = (session_id.as_deref(), version_header.as_deref());
        match value {
            Value::Array(items) => self.batch(items, sid, vh, ctx).await,
            single => self.single(single, sid, vh, ctx).await,
        }
    }

    async fn single(
        &self,
        value: Value,
        session_id: Option<&str>,
        version_header: Option<&str>,
        ctx: &RequestContext,
    ) -> Response<Body> {
        let msg = match classify(value) {
            Ok(m) => m,
            Err(rej) => {
                return json_response(StatusCode::BAD_REQUEST, &rej.error.to_response(rej.id))
            }
        };
        if let Incoming::Request { id, method, params } = &msg {
            if method == "initialize" {
                return match self.initialize(params.as_ref()) {
                    Ok((result, version)) => {
                        let sid = self.sessions.create(version);
                        tracing::info!(
                            server = self.server.info().name,
                            version,
                            "MCP session started"
                        );
                        let mut resp =
                            json_response(StatusCode::OK, &result_response(id.clone(), result));
                        if let Ok(v) = HeaderValue::from_str(&sid) {
                            resp.headers_mut().insert(SESSION_HEADER, v);
                        }
                        resp
                    }
                    Err(err) => json_response(StatusCode::OK, &err.to_response(id.clone())),
                };
            }
        }
        let version = match self.session(session_id, version_header) {
            Ok(v) => v,
            Err(refusal) => return refuse(refusal),
        };
        match self.dispatch(msg, version, &ctx.shutdown).await {
            Some(answer) => json_response(StatusCode::OK, &answer),
            None => accepted(),
        }
    }

    async fn batch(
        &self,
        items: Vec<Value>,
        session_id: Option<&str>,
        version_header: Option<&str>,
        ctx: &RequestContext,
    ) -> Response<Body> {
        if items.is_empty() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &RpcError::new(INVALID_REQUEST, "empty batch"),
            );
        }
        let version = match self.session(session_id, version_header) {
            Ok(v) => v,
            Err(refusal) => return refuse(refusal),
        };
        if !batches_allowed(version) {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &RpcError::new(
                    INVALID_REQUEST,
                    format!("JSON-RPC batches are not supported in protocol version {version}"),
                ),
            );
        }
        let answers = futures_util::future::join_all(items.into_iter().map(|item| async move {
            match classify(item) {
                Ok(msg) => self.dispatch(msg, version, &ctx.shutdown).await,
                Err(rej) => Some(rej.error.to_response(rej.id)),
            }
        }))
        .await;
        let answers: Vec<Value> = answers.into_iter().flatten().collect();
        if answers.is_empty() {
            accepted()
        } else {
            json_response(StatusCode::OK, &json!(answers))
        }
    }

    /// The result of `initialize` for `params`, and the version it settled on.
    fn initialize(
        &self,
        params: Option<&Map<String, Value>>,
    ) -> Result<(Value, &'static str), RpcError> {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RpcError::new(
                    INVALID_PARAMS,
                    "initialize needs `protocolVersion` (a string)",
                )
            })?;
        let version = negotiate(requested);
        let info = self.server.info();
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": info.list_changed}},
            "serverInfo": {
                "name": info.name,
                "title": info.title,
                "version": env!("CARGO_PKG_VERSION"),
            },
        });
        if let Some(instructions) = info.instructions {
            result["instructions"] = Value::from(instructions);
        }
        Ok((result, version))
    }

    /// Answer one message inside an established session. `None` for notifications and
    /// responses.
    async fn dispatch(
        &self,
        msg: Incoming,
        version: &'static str,
        shutdown: &Shutdown,
    ) -> Option<Value> {
        let Incoming::Request { id, method, params } = msg else {
            if let Incoming::Notification { method } = msg {
                tracing::debug!(%method, "notification");
            }
            return None;
        };
        let result = match method.as_str() {
            "ping" => Ok(json!({})),
            "tools/list" => Ok(self.server.list_tools(version)),
            "tools/call" => match call_params(params) {
                Ok((name, arguments)) => {
                    self.server
                        .call_tool(name, arguments, version, shutdown)
                        .await
                }
                Err(e) => Err(e),
            },
            "initialize" => Err(RpcError::new(
                INVALID_REQUEST,
                "initialize must be sent alone, not inside a batch or an existing session's batch",
            )),
            other => Err(RpcError::new(
                METHOD_NOT_FOUND,
                format!("method not found: {}", truncate(other, 100)),
            )),
        };
        Some(match result {
            Ok(value) => result_response(id, value),
            Err(err) => err.to_response(id),
        })
    }
}

fn check_version_header(version: &'static str, header: Option<&str>) -> Result<(), Refusal> {
    match header {
        Some(h) if h != version => Err((
            StatusCode::BAD_REQUEST,
            RpcError::new(
                INVALID_REQUEST,
                format!(
                    "MCP-Protocol-Version {:?} does not match the session's {version}",
                    h.chars().take(40).collect::<String>()
                ),
            ),
        )),
        _ => Ok(()),
    }
}

/// One SSE event carrying a JSON-RPC message.
fn sse_event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// The body of a GET stream: notifications as they come, a keep-alive comment when idle; it
/// ends when the session ends or is taken over by a newer stream, or the daemon shuts down.
fn sse_body(handle: StreamHandle, shutdown: Shutdown) -> Body {
    let stream =
        futures_util::stream::unfold((handle, shutdown), |(mut handle, shutdown)| async move {
            let data = tokio::select! {
                got = handle.notifications.recv() => match got {
                    Ok(message) => sse_event(&message),
                    // Every notification we send is a level trigger ("the list changed"):
                    // after a lag, one of them says all there is to say.
                    Err(RecvError::Lagged(_)) => sse_event(
                        &json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                    ),
                    Err(RecvError::Closed) => return None,
                },
                _ = handle.ended.changed() => return None,
                _ = shutdown.wait() => return None,
                _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, BoxError>(Frame::data(data)), (handle, shutdown)))
        });
    StreamBody::new(stream).boxed()
}
