//! The HTTP API: routing, request checks, and mapping every failure to the closed set of
//! error codes (DESIGN.md §5 plus the install codes documented in docs/pack-exec.md).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use sidecars_common::body::{self, read_limited, Body, ReadBodyError};
use sidecars_common::error::ApiError;
use sidecars_common::http::{new_request_id, Handler, RequestContext};

use crate::exec::{ExecError, Runner};
use crate::manifest::{valid_name, LoadError, Pack};
use crate::schema::kind;
use crate::store::{DeleteError, InstallError, Store};

/// Everything a request needs; shared by all connections.
pub struct Api {
    /// Installed and shipped packs.
    pub store: Arc<Store>,
    /// Spawns handlers.
    pub runner: Runner,
    /// Bounds concurrently running handlers; `try_acquire` so excess calls get 429 at once.
    pub slots: Arc<Semaphore>,
    /// The semaphore's size, for the `busy` message.
    pub concurrency: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
}

impl Handler for Api {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        match self.route(req, &ctx).await {
            Ok(resp) => resp,
            Err(err) => {
                if err.status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(request_id = %ctx.request_id, error = %err.message, "internal error");
                }
                err.into_response(&ctx.request_id)
            }
        }
    }
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn internal(message: impl std::fmt::Display) -> ApiError {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        message.to_string(),
    )
}

impl Api {
    async fn route(
        &self,
        req: Request<Incoming>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path();
        if path == "/health" {
            return match *req.method() {
                Method::GET | Method::HEAD => Ok(body::json(
                    StatusCode::OK,
                    &json!({"status": "ok", "packs": self.store.count()}),
                )),
                _ => Err(not_allowed("GET")),
            };
        }
        if path == "/v1/packs" || path == "/v1/packs/" {
            return match *req.method() {
                Method::GET => {
                    let list = self.store.list();
                    let packs: Vec<&Value> = list.iter().map(|p| &p.summary).collect();
                    Ok(body::json(StatusCode::OK, &json!({ "packs": packs })))
                }
                _ => Err(not_allowed("GET")),
            };
        }
        let Some(name) = path.strip_prefix("/v1/packs/") else {
            return Err(err(StatusCode::NOT_FOUND, "not_found", "no such endpoint"));
        };
        let name = name.to_string();
        match *req.method() {
            Method::POST => self.call(req, name, ctx).await,
            Method::PUT => self.install(req, name).await,
            Method::DELETE => self.delete(name).await,
            Method::GET => match self.store.get(&name) {
                Some(pack) => Ok(body::json(StatusCode::OK, &pack.summary)),
                None => Err(not_found(&name)),
            },
            _ => Err(not_allowed("GET, PUT, POST, DELETE")),
        }
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let (parts, incoming) = req.into_parts();
        read_limited(&parts.headers, incoming, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                ReadBodyError::TooLarge { limit } => err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body is larger than max_body_bytes ({limit} bytes)"),
                ),
                ReadBodyError::Io(e) => err(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("could not read the request body: {e}"),
                ),
            })
    }

    async fn call(
        &self,
        req: Request<Incoming>,
        name: String,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let pack = self.store.get(&name).ok_or_else(|| not_found(&name))?;
        let body = self.read_body(req).await?;
        let input: Bytes = if body.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            let value: Value = serde_json::from_slice(&body).map_err(|e| {
                err(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("the body is not JSON: {e}"),
                )
            })?;
            if !value.is_object() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("the input must be a JSON object, not {}", kind(&value)),
                ));
            }
            pack.input.validate(&value).map_err(|m| {
                err(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("input does not match input_schema: {m}"),
                )
            })?;
            body
        };
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            err(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "all {} handler slots are busy; retry shortly",
                    self.concurrency
                ),
            )
            .with_retry_after(1)
        })?;
        let call_id = new_request_id();
        tracing::debug!(request_id = %ctx.request_id, call_id = %call_id, pack = %pack.name, "call");
        // Run in its own task: a client that hangs up does not cut a handler short (its
        // group is killed and its temp dir removed by the same code path as always).
        let runner = self.runner.clone();
        let task_pack = pack.clone();
        let started = Instant::now();
        let outcome = tokio::spawn(async move {
            let result = runner.run(&task_pack, &input, &call_id).await;
            drop(permit);
            result
        })
        .await
        .map_err(|e| internal(format!("call task failed: {e}")))?;
        let stdout = outcome.map_err(|e| exec_error(e, &pack))?;
        let output = check_output(&stdout, &pack)?;
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let mut bytes = Vec::with_capacity(pack.response_head.len() + output.len() + 32);
        bytes.extend_from_slice(&pack.response_head);
        bytes.extend_from_slice(output);
        bytes.extend_from_slice(b",\"duration_ms\":");
        bytes.extend_from_slice(format!("{duration_ms}").as_bytes());
        bytes.extend_from_slice(b"}\n");
        let mut resp = Response::new(body::full(bytes));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }

    async fn install(
        &self,
        req: Request<Incoming>,
        name: String,
    ) -> Result<Response<Body>, ApiError> {
        if !valid_name(&name) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "invalid_pack",
                format!("`{name}` is not a valid pack name (^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$)"),
            ));
        }
        let body = self.read_body(req).await?;
        let (pack, replaced) = self
            .store
            .install(name, body)
            .await
            .map_err(install_error)?;
        let status = if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(body::json(status, &pack.summary))
    }

    async fn delete(&self, name: String) -> Result<Response<Body>, ApiError> {
        match self.store.delete(name).await {
            Ok(()) => {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
            Err(DeleteError::NotFound(name)) => Err(not_found(&name)),
            Err(e @ DeleteError::Shipped(_)) => {
                Err(err(StatusCode::CONFLICT, "pack_read_only", e.to_string()))
            }
            Err(e) => Err(internal(e)),
        }
    }
}

/// stdout must be exactly one JSON value matching `output_schema`; returns it trimmed.
fn check_output<'a>(stdout: &'a [u8], pack: &Pack) -> Result<&'a [u8], ApiError> {
    let bad = |m: String| err(StatusCode::BAD_GATEWAY, "invalid_output", m);
    let trimmed = trim(stdout);
    if trimmed.is_empty() {
        return Err(bad(
            "the handler printed nothing on stdout; it must print one JSON value".into(),
        ));
    }
    let value: Value = serde_json::from_slice(trimmed).map_err(|e| {
        bad(format!(
            "the handler's stdout is not exactly one JSON value: {e}"
        ))
    })?;
    pack.output
        .validate(&value)
        .map_err(|m| bad(format!("output does not match output_schema: {m}")))?;
    Ok(trimmed)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn exec_error(e: ExecError, pack: &Pack) -> ApiError {
    match e {
        ExecError::Timeout(_) => err(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
        ExecError::OutputTooLarge(_) => {
            err(StatusCode::BAD_GATEWAY, "invalid_output", e.to_string())
        }
        ExecError::Failed { .. } | ExecError::Spawn(_) => {
            err(StatusCode::BAD_GATEWAY, "handler_failed", e.to_string())
        }
        ExecError::Internal(m) => internal(format!("pack {}: {m}", pack.name)),
    }
}

fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::Archive(crate::archive::ArchiveError::Io(io)) => {
            internal(format!("writing the pack: {io}"))
        }
        InstallError::Archive(a) => err(StatusCode::BAD_REQUEST, "invalid_pack", a.to_string()),
        InstallError::Load(LoadError::MissingDependency(m)) => err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_dependency",
            LoadError::MissingDependency(m).to_string(),
        ),
        InstallError::Load(e @ LoadError::TrustMismatch { .. }) => {
            err(StatusCode::BAD_REQUEST, "trust_mismatch", e.to_string())
        }
        InstallError::Load(LoadError::Io(io)) => internal(format!("reading the pack: {io}")),
        InstallError::Load(e @ LoadError::Invalid(_)) => {
            err(StatusCode::BAD_REQUEST, "invalid_pack", e.to_string())
        }
        e @ InstallError::NameMismatch { .. } => {
            err(StatusCode::BAD_REQUEST, "invalid_pack", e.to_string())
        }
        e @ (InstallError::Io(_) | InstallError::Task(_)) => internal(e),
    }
}

fn not_found(name: &str) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        "pack_not_found",
        format!("no pack named `{name}` is installed"),
    )
}

fn not_allowed(allow: &'static str) -> ApiError {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed methods: {allow}"),
    )
}
