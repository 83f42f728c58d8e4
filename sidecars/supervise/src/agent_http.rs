//! The agent-facing listener: MCP streamable HTTP at `/mcp`, and `/health`.
//!
//! Transport rules (MCP 2025-03-26 and later): `POST /mcp` carries one JSON-RPC message (or a
//! batch, in 2025-03-26 only); requests are answered with `application/json`, input made only
//! of notifications/responses with `202 Accepted`; `initialize` issues `Mcp-Session-Id`, which
//! every later request must carry (400 without it, 404 for an unknown one); `DELETE /mcp`
//! ends a session; `GET /mcp` is 405 because we offer no server-initiated SSE stream. This
//! listener has no operator routes: `/v1/*` is 404 here by construction.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming as IncomingBody;
use serde_json::{json, Value};

use sidecars_common::body::{empty, json as json_response, read_limited, Body, ReadBodyError};
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext};

use crate::jsonrpc::{classify, Incoming, RpcError, INVALID_REQUEST, PARSE_ERROR};
use crate::mcp::{self, SessionError, SESSION_HEADER, VERSION_HEADER};
use crate::State;

/// Handler of the agent-facing listener.
pub struct AgentHandler {
    /// Shared daemon state.
    pub state: Arc<State>,
}

impl Handler for AgentHandler {
    async fn handle(&self, req: Request<IncomingBody>, ctx: RequestContext) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => crate::health(&self.state).await,
            (&Method::POST, "/mcp") => self.post(req, &ctx).await,
            (&Method::DELETE, "/mcp") => self.delete(&req),
            (_, "/mcp") => {
                let mut resp = rpc_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &RpcError::new(
                        INVALID_REQUEST,
                        "this server offers no SSE stream; use POST (and DELETE to end a session)",
                    ),
                );
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
                resp
            }
            _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
                .into_response(&ctx.request_id),
        }
    }
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

fn session_failure(err: SessionError) -> Response<Body> {
    let (status, err) = session_refusal(err);
    rpc_error(status, &err)
}

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

impl AgentHandler {
    fn delete(&self, req: &Request<IncomingBody>) -> Response<Body> {
        match header_str(req, SESSION_HEADER) {
            None => session_failure(SessionError::Missing),
            Some(id) if self.state.sessions.remove(id) => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            Some(_) => session_failure(SessionError::Unknown),
        }
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
        let limit = self.state.config.max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = match read_limited(&parts.headers, body, limit).await {
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
        match value {
            Value::Array(items) => {
                self.batch(items, session_id.as_deref(), version_header.as_deref(), ctx)
                    .await
            }
            single => {
                self.single(
                    single,
                    session_id.as_deref(),
                    version_header.as_deref(),
                    ctx,
                )
                .await
            }
        }
    }

    /// The session's version, after checking the version header against it.
    fn session(
        &self,
        session_id: Option<&str>,
        version_header: Option<&str>,
    ) -> Result<&'static str, Refusal> {
        let version = self
            .state
            .sessions
            .get(session_id)
            .map_err(session_refusal)?;
        if let Some(h) = version_header {
            if h != version {
                return Err((
                    StatusCode::BAD_REQUEST,
                    RpcError::new(
                        INVALID_REQUEST,
                        format!(
                            "MCP-Protocol-Version {:?} does not match the session's {version}",
                            h.chars().take(40).collect::<String>()
                        ),
                    ),
                ));
            }
        }
        Ok(version)
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
                return match mcp::initialize(params.as_ref()) {
                    Ok((result, version)) => {
                        let sid = self.state.sessions.create(version);
                        tracing::info!(version, "MCP session started");
                        let mut resp = json_response(
                            StatusCode::OK,
                            &crate::jsonrpc::result_response(id.clone(), result),
                        );
                        if let Ok(v) = HeaderValue::from_str(&sid) {
                            resp.headers_mut().insert(SESSION_HEADER, v);
                        }
                        resp
                    }
                    Err(err) => json_response(StatusCode::OK, &err.to_response(id.clone())),
                };
            }
        }
        if let Err((status, err)) = self.session(session_id, version_header) {
            return rpc_error(status, &err);
        }
        match mcp::dispatch(msg, &self.state.tools, &ctx.shutdown).await {
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
            Err((status, err)) => return rpc_error(status, &err),
        };
        if !mcp::batches_allowed(version) {
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
                Ok(msg) => mcp::dispatch(msg, &self.state.tools, &ctx.shutdown).await,
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
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}
