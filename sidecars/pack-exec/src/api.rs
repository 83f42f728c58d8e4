//! The HTTP API: routing, request checks, and mapping every failure to the closed set of
//! error codes (DESIGN.md §5 plus the install codes documented in docs/pack-exec.md).
//!
//! One [`Api`] serves each listener. The agent's ([`Access::Agent`]) lists, gets and calls;
//! `PUT` and `DELETE` there answer `403 forbidden` without reading the body. The operator's
//! ([`Access::Operator`]) serves the same routes plus install and delete, behind a bearer
//! token, with helmdeck's consent flags (`allow_unsigned`, `replace_shipped`).

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
use crate::operator::OperatorToken;
use crate::schema::kind;
use crate::store::{DeleteError, InstallError, InstallPolicy, Store};

/// The closed set of error codes pack-exec answers with (docs/pack-exec.md, "Error codes").
pub mod code {
    /// Bad call input, or a bad query parameter on the operator listener (400).
    pub const INVALID_INPUT: &str = "invalid_input";
    /// No such pack (404).
    pub const PACK_NOT_FOUND: &str = "pack_not_found";
    /// Request body over `max_body_bytes` (413).
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// Every handler slot is running (429).
    pub const BUSY: &str = "busy";
    /// The handler failed or could not start (502).
    pub const HANDLER_FAILED: &str = "handler_failed";
    /// The handler's output is not one JSON value matching `output_schema` (502).
    pub const INVALID_OUTPUT: &str = "invalid_output";
    /// The handler ran past `timeout_s` (504).
    pub const TIMEOUT: &str = "timeout";
    /// Install: a required program is missing (422).
    pub const MISSING_DEPENDENCY: &str = "missing_dependency";
    /// Install: bad tarball, manifest or name (400).
    pub const INVALID_PACK: &str = "invalid_pack";
    /// An install with `self_test=true` whose example failed (400); nothing was installed.
    pub const SELF_TEST_FAILED: &str = "self_test_failed";
    /// Install: the files do not hash to `trust.sha256` (400).
    pub const TRUST_MISMATCH: &str = "trust_mismatch";
    /// DELETE of a shipped pack (409).
    pub const PACK_READ_ONLY: &str = "pack_read_only";
    /// Install or delete on the agent listener; an unsigned install without consent (403).
    pub const FORBIDDEN: &str = "forbidden";
    /// Operator listener: no or wrong bearer token (401).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// Operator install over a shipped pack without `replace_shipped=true` (409).
    pub const CONFLICT: &str = "conflict";
    /// No such endpoint (404).
    pub const NOT_FOUND: &str = "not_found";
    /// Wrong method for the endpoint (405).
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// 503: the handler sandbox cannot be had (sidecar-init's spawn service unreachable).
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox_unavailable";
    /// A bug or a broken host (500).
    pub const INTERNAL: &str = "internal";
}

/// Which listener an [`Api`] serves.
#[derive(Debug, Clone)]
pub enum Access {
    /// The agent's: list, get, call and `/health`; installs and deletes are refused.
    Agent,
    /// The operator's: everything, behind `Authorization: Bearer <token>`.
    Operator {
        /// The bearer token every request must carry.
        token: OperatorToken,
        /// The config's `allow_unsigned`: unsigned installs need no `?allow_unsigned=true`.
        allow_unsigned: bool,
    },
}

/// Everything a request needs; shared by all connections.
pub struct Api {
    /// Installed and shipped packs.
    pub store: Arc<Store>,
    /// Runs calls (shared with the operator listener and the MCP tools).
    pub calls: Calls,
    /// The agent listener's `/mcp` endpoint (packs as MCP tools); `None` elsewhere.
    pub mcp: Option<sidecars_common::mcp::Endpoint<crate::mcp::PackTools>>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Agent or operator listener.
    pub access: Access,
}

/// One call of a pack, the same for every way in (HTTP on either listener, MCP, self-test):
/// a handler slot, the runner, and the output check.
#[derive(Clone)]
pub struct Calls {
    /// Spawns handlers.
    pub runner: Runner,
    /// Bounds concurrently running handlers; `try_acquire` so excess calls get 429 at once.
    pub slots: Arc<Semaphore>,
    /// The semaphore's size, for the `busy` message.
    pub concurrency: usize,
}

/// A finished call: the handler's stdout, its parsed output, and how long it took.
pub struct Called {
    /// stdout as the handler wrote it.
    pub stdout: Vec<u8>,
    /// stdout parsed (one JSON value, checked against `output_schema`).
    pub output: Value,
    /// Wall time of the call, milliseconds (three decimals).
    pub duration_ms: f64,
}

impl Called {
    /// The output exactly as the handler printed it, without surrounding whitespace.
    pub fn output_bytes(&self) -> &[u8] {
        trim(&self.stdout)
    }
}

impl Calls {
    /// Run `pack` on `input` (a JSON object already checked against `input_schema`). With
    /// `wait`, a call queues for a slot (the self-test); without, a full house is `busy`.
    pub async fn run(
        &self,
        pack: &Arc<Pack>,
        input: Bytes,
        wait: bool,
    ) -> Result<Called, ApiError> {
        let permit = if wait {
            self.slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| internal(format!("handler slots closed: {e}")))?
        } else {
            self.slots.clone().try_acquire_owned().map_err(|_| {
                err(
                    StatusCode::TOO_MANY_REQUESTS,
                    code::BUSY,
                    format!(
                        "all {} handler slots are busy; retry shortly",
                        self.concurrency
                    ),
                )
                .with_retry_after(1)
            })?
        };
        let call_id = new_request_id();
        tracing::debug!(call_id = %call_id, pack = %pack.name, "call");
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
        let stdout = outcome.map_err(|e| exec_error(e, pack))?;
        let output = check_output(&stdout, pack)?;
        let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        Ok(Called {
            stdout,
            output,
            duration_ms,
        })
    }
}

/// Check a call's input object against the pack's `input_schema`.
pub fn check_input(pack: &Pack, input: &Value) -> Result<(), ApiError> {
    if !input.is_object() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            code::INVALID_INPUT,
            format!("the input must be a JSON object, not {}", kind(input)),
        ));
    }
    pack.input.validate(input).map_err(|m| {
        err(
            StatusCode::BAD_REQUEST,
            code::INVALID_INPUT,
            format!("input does not match input_schema: {m}"),
        )
    })
}

impl Handler for Api {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        match self.route(req, &ctx).await {
            Ok(resp) => resp,
            Err(err) => {
                if err.status == StatusCode::INTERNAL_SERVER_ERROR {
                    tracing::error!(request_id = %ctx.request_id, error = %err.message, "internal error");
                }
                let unauthorized = err.status == StatusCode::UNAUTHORIZED;
                let mut resp = err.into_response(&ctx.request_id);
                if unauthorized {
                    resp.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                resp
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
        code::INTERNAL,
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
        let mut flags = Flags::default();
        if let Access::Operator { token, .. } = &self.access {
            authorize(&req, token)?;
            let install = *req.method() == Method::PUT && path.starts_with("/v1/packs/");
            flags = query_flags(req.uri().query(), install)?;
        }
        if path == "/mcp" {
            if let Some(mcp) = &self.mcp {
                return Ok(mcp.handle(req, ctx).await);
            }
        }
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
            return Err(err(
                StatusCode::NOT_FOUND,
                code::NOT_FOUND,
                "no such endpoint",
            ));
        };
        let name = name.to_string();
        let operator_unsigned = match &self.access {
            Access::Agent => {
                return match *req.method() {
                    Method::POST => self.call(req, name, ctx).await,
                    Method::GET => self.get(&name),
                    // Refused before the body is read: nothing of it reaches the store or disk.
                    Method::PUT | Method::DELETE => Err(err(
                        StatusCode::FORBIDDEN,
                        code::FORBIDDEN,
                        "installing and deleting packs is an operator action (`control-plane packs \
                         install|rm`, or pack-exec's operator listener); this listener lists, \
                         gets and calls packs only",
                    )),
                    _ => Err(not_allowed("GET, POST")),
                };
            }
            Access::Operator { allow_unsigned, .. } => *allow_unsigned,
        };
        match *req.method() {
            Method::POST => self.call(req, name, ctx).await,
            Method::PUT => {
                let policy = InstallPolicy {
                    allow_unsigned: operator_unsigned || flags.allow_unsigned,
                    replace_shipped: flags.replace_shipped,
                };
                self.install(req, name, policy, flags.self_test).await
            }
            Method::DELETE => self.delete(name).await,
            Method::GET => self.get(&name),
            _ => Err(not_allowed("GET, PUT, POST, DELETE")),
        }
    }

    fn get(&self, name: &str) -> Result<Response<Body>, ApiError> {
        match self.store.get(name) {
            Some(pack) => Ok(body::json(StatusCode::OK, &pack.summary)),
            None => Err(not_found(name)),
        }
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let (parts, incoming) = req.into_parts();
        read_limited(&parts.headers, incoming, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                ReadBodyError::TooLarge { limit } => err(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::PAYLOAD_TOO_LARGE,
                    format!("the request body is larger than max_body_bytes ({limit} bytes)"),
                ),
                ReadBodyError::Io(e) => err(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_INPUT,
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
                    code::INVALID_INPUT,
                    format!("the body is not JSON: {e}"),
                )
            })?;
            check_input(&pack, &value)?;
            body
        };
        tracing::debug!(request_id = %ctx.request_id, pack = %pack.name, "call over HTTP");
        let called = self.calls.run(&pack, input, false).await?;
        let output = called.output_bytes();
        let mut bytes = Vec::with_capacity(pack.response_head.len() + output.len() + 32);
        bytes.extend_from_slice(&pack.response_head);
        bytes.extend_from_slice(output);
        bytes.extend_from_slice(b",\"duration_ms\":");
        bytes.extend_from_slice(format!("{}", called.duration_ms).as_bytes());
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
        policy: InstallPolicy,
        self_test: bool,
    ) -> Result<Response<Body>, ApiError> {
        if !valid_name(&name) {
            return Err(err(
                StatusCode::BAD_REQUEST,
                code::INVALID_PACK,
                format!("`{name}` is not a valid pack name (^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$)"),
            ));
        }
        // Known before the body is read: refuse without reading it (the store checks again).
        if self.store.is_shipped(&name) && !policy.replace_shipped {
            return Err(install_error(InstallError::ShadowsShipped(name)));
        }
        let body = self.read_body(req).await?;
        let staged = self
            .store
            .stage(name, body, policy, self_test)
            .await
            .map_err(install_error)?;
        if self_test {
            if let Err(failed) = self.self_test(staged.pack()).await {
                self.store.abandon(staged);
                return Err(failed);
            }
        }
        let (pack, replaced) = self.store.publish(staged).await.map_err(install_error)?;
        let status = if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(body::json(status, &pack.summary))
    }

    /// `self_test=true`: run every one of the staged pack's `examples` as a call would (same
    /// runner, jail and limits) and check its `expected_output_subset`; the first failure is
    /// the install's answer, naming the example and the difference.
    async fn self_test(&self, pack: &Arc<Pack>) -> Result<(), ApiError> {
        let failed = |m: String| err(StatusCode::BAD_REQUEST, code::SELF_TEST_FAILED, m);
        let examples = crate::examples::parse(pack.examples.as_ref())
            .map_err(|m| err(StatusCode::BAD_REQUEST, code::INVALID_PACK, m))?;
        for example in &examples {
            let label = format!("example `{}`", example.name);
            pack.input.validate(&example.input).map_err(|m| {
                failed(format!(
                    "{label}: its input does not match input_schema: {m}"
                ))
            })?;
            let input = Bytes::from(example.input.to_string());
            let called = self.calls.run(pack, input, true).await.map_err(|e| {
                let how = if e.code == code::INVALID_OUTPUT {
                    ""
                } else {
                    "the call failed: "
                };
                failed(format!("{label}: {how}{}", e.message))
            })?;
            let actual = called.output;
            if let Some(expected) = &example.expected {
                if let Some(difference) = crate::examples::difference(expected, &actual, "output") {
                    return Err(failed(format!("{label}: {difference}")));
                }
            }
        }
        tracing::info!(pack = %pack.name, examples = examples.len(), "self-test passed");
        Ok(())
    }

    async fn delete(&self, name: String) -> Result<Response<Body>, ApiError> {
        match self.store.delete(name).await {
            Ok(()) => {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
            Err(DeleteError::NotFound(name)) => Err(not_found(&name)),
            Err(e @ DeleteError::Shipped(_)) => Err(err(
                StatusCode::CONFLICT,
                code::PACK_READ_ONLY,
                e.to_string(),
            )),
            Err(e) => Err(internal(e)),
        }
    }
}

/// stdout must be exactly one JSON value matching `output_schema`; returns it parsed.
fn check_output(stdout: &[u8], pack: &Pack) -> Result<Value, ApiError> {
    let bad = |m: String| err(StatusCode::BAD_GATEWAY, code::INVALID_OUTPUT, m);
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
    Ok(value)
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
        ExecError::Timeout(_) => err(StatusCode::GATEWAY_TIMEOUT, code::TIMEOUT, e.to_string()),
        ExecError::OutputTooLarge(_) => {
            err(StatusCode::BAD_GATEWAY, code::INVALID_OUTPUT, e.to_string())
        }
        ExecError::Failed { .. } | ExecError::Spawn(_) => {
            err(StatusCode::BAD_GATEWAY, code::HANDLER_FAILED, e.to_string())
        }
        ExecError::Busy(_) => err(StatusCode::TOO_MANY_REQUESTS, code::BUSY, e.to_string()),
        ExecError::Unavailable(_) => err(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SANDBOX_UNAVAILABLE,
            e.to_string(),
        ),
        ExecError::Internal(m) => internal(format!("pack {}: {m}", pack.name)),
    }
}

fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::Archive(crate::archive::ArchiveError::Io(io)) => {
            internal(format!("writing the pack: {io}"))
        }
        InstallError::Archive(a) => err(StatusCode::BAD_REQUEST, code::INVALID_PACK, a.to_string()),
        InstallError::Load(LoadError::MissingDependency(m)) => err(
            StatusCode::UNPROCESSABLE_ENTITY,
            code::MISSING_DEPENDENCY,
            LoadError::MissingDependency(m).to_string(),
        ),
        InstallError::Load(e @ LoadError::TrustMismatch { .. }) => {
            err(StatusCode::BAD_REQUEST, code::TRUST_MISMATCH, e.to_string())
        }
        InstallError::Load(LoadError::Io(io)) => internal(format!("reading the pack: {io}")),
        InstallError::Load(e @ LoadError::Invalid(_)) => {
            err(StatusCode::BAD_REQUEST, code::INVALID_PACK, e.to_string())
        }
        e @ InstallError::NameMismatch { .. } => {
            err(StatusCode::BAD_REQUEST, code::INVALID_PACK, e.to_string())
        }
        e @ InstallError::Unsigned(_) => err(StatusCode::FORBIDDEN, code::FORBIDDEN, e.to_string()),
        e @ InstallError::ShadowsShipped(_) => {
            err(StatusCode::CONFLICT, code::CONFLICT, e.to_string())
        }
        e @ (InstallError::Io(_) | InstallError::Task(_)) => internal(e),
    }
}

/// Every operator request: exactly one `Authorization: Bearer <token>` header with the token.
/// The presented value is never logged or echoed.
fn authorize(req: &Request<Incoming>, token: &OperatorToken) -> Result<(), ApiError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let ok = match (values.next(), values.next()) {
        (Some(value), None) => token.authorizes(value.as_bytes()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(err(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHORIZED,
            "the operator listener needs `Authorization: Bearer <token>` with the token of \
             operator_token_file",
        ))
    }
}

/// The operator's query flags.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Flags {
    allow_unsigned: bool,
    replace_shipped: bool,
    self_test: bool,
}

/// Parse the operator listener's query: `allow_unsigned` and `replace_shipped` (`true` or
/// `false`) on an install, nothing elsewhere. Anything else is `invalid_input` naming it.
fn query_flags(query: Option<&str>, install: bool) -> Result<Flags, ApiError> {
    let bad = |m: String| err(StatusCode::BAD_REQUEST, code::INVALID_INPUT, m);
    let takes = if install {
        "this endpoint takes allow_unsigned=true|false, replace_shipped=true|false and self_test=true|false"
    } else {
        "this endpoint takes none"
    };
    let mut flags = Flags::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "allow_unsigned" if install => &mut flags.allow_unsigned,
            "replace_shipped" if install => &mut flags.replace_shipped,
            "self_test" if install => &mut flags.self_test,
            _ => {
                let shown: String = key.chars().take(64).collect();
                unknown.push(format!("`{}`", shown.escape_default()));
                continue;
            }
        };
        if seen.contains(&key) {
            return Err(bad(format!("query parameter `{key}` is given twice")));
        }
        seen.push(key);
        *slot = match value {
            "true" => true,
            "false" => false,
            _ => {
                return Err(bad(format!(
                    "query parameter `{key}` must be `true` or `false`"
                )))
            }
        };
    }
    if unknown.is_empty() {
        Ok(flags)
    } else {
        Err(bad(format!(
            "unknown query parameter{} {} ({takes})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        )))
    }
}

fn not_found(name: &str) -> ApiError {
    err(
        StatusCode::NOT_FOUND,
        code::PACK_NOT_FOUND,
        format!("no pack named `{name}` is installed"),
    )
}

fn not_allowed(allow: &'static str) -> ApiError {
    err(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!("allowed methods: {allow}"),
    )
}
