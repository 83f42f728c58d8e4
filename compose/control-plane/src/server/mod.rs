//! `control-plane serve`: the HTTP API over the same [`Controller`] the CLI uses. This module
//! only translates HTTP to controller calls and results (or [`ControlError`]s) back to HTTP;
//! every operation lives in [`crate::core`], so the two front ends cannot drift.
//!
//! The server scaffold (accept loop, request ids, one access-log line per request with method,
//! path, status and milliseconds — never headers, query strings or bodies —, graceful shutdown)
//! is the one every sidecar daemon runs on: [`sidecars_common::http`].
//! Endpoint reference: docs/api.md.

pub mod auth;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use sidecars_common::body::{self, read_limited, Body, ReadBodyError};
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext, ServeOptions};
use sidecars_common::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::api::{BottleState, ControlError, DownReport, Endpoint, ServiceStatus, UpReport};
use crate::approvals::Op;
use crate::core::Controller;
use crate::packs::PackAnswer;
use crate::runtime::{LogOptions, Runtime};
use crate::source::Source;
use auth::Token;
use routes::{route, NoRoute, Route};

/// Default request body limit: manifests and pack inputs are small; 1 MiB leaves room.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// What `serve` needs besides the controller.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The bearer token; `None` only with `--insecure-no-auth`.
    pub token: Option<Token>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
}

/// The API: a controller shared by every connection, and the auth settings.
pub struct Api<R> {
    ctl: Arc<Controller<R>>,
    token: Option<Token>,
    max_body_bytes: usize,
}

impl<R: Runtime + 'static> Api<R> {
    /// An API over `ctl`.
    pub fn new(ctl: Arc<Controller<R>>, token: Option<Token>, max_body_bytes: usize) -> Self {
        Api {
            ctl,
            token,
            max_body_bytes,
        }
    }
}

/// Bind `cfg.listen` and serve until `shutdown` fires (then drain in-flight requests).
pub async fn serve<R: Runtime + 'static>(
    ctl: Arc<Controller<R>>,
    cfg: ServeConfig,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", cfg.listen))
    })?;
    serve_on(listener, ctl, cfg, shutdown).await
}

/// [`serve`] on a bound listener (tests bind port 0).
pub async fn serve_on<R: Runtime + 'static>(
    listener: TcpListener,
    ctl: Arc<Controller<R>>,
    cfg: ServeConfig,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let api = Arc::new(Api::new(ctl, cfg.token, cfg.max_body_bytes));
    let mut opts = ServeOptions::new("control-plane");
    // `DELETE` stops containers with a 10 s grace each: let it finish on shutdown.
    opts.drain_timeout = Duration::from_secs(30);
    sidecars_common::http::serve(listener, api, opts, shutdown).await
}

impl<R: Runtime + 'static> Handler for Api<R> {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        let id = ctx.request_id.clone();
        match self.dispatch(req, &ctx).await {
            Ok(resp) => resp,
            Err(err) => err.into_response(&id),
        }
    }
}

impl<R: Runtime + 'static> Api<R> {
    async fn dispatch(
        &self,
        req: Request<Incoming>,
        ctx: &RequestContext,
    ) -> Result<Response<Body>, ApiError> {
        let route = match route(req.method(), req.uri().path()) {
            Ok(r) => r,
            Err(NoRoute::NotFound) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no endpoint {} (see docs/api.md)", req.uri().path()),
                ))
            }
            Err(NoRoute::Method(allowed)) => {
                let mut resp = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} takes {allowed}", req.uri().path()),
                )
                .into_response(&ctx.request_id);
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allowed));
                return Ok(resp);
            }
        };
        // Liveness probes carry no token.
        let needs_auth = route != Route::Healthz;
        if let Some(token) = self.token.as_ref().filter(|_| needs_auth) {
            if !token.admits(req.headers()) {
                let mut resp = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token (send `Authorization: Bearer <token>`)",
                )
                .into_response(&ctx.request_id);
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"control-plane\""),
                );
                return Ok(resp);
            }
        }
        let ctl = &self.ctl;
        match route {
            Route::Healthz => Ok(body::json(StatusCode::OK, &Healthz { status: "ok" })),
            Route::Create => {
                let name = manifest_name(req.headers());
                let text = self.read_text(req).await?;
                let report = ctl
                    .create(Source::Inline { text, name })
                    .await
                    .map_err(control)?;
                let created = Created::from(report);
                let mut resp = body::json(StatusCode::CREATED, &created);
                if let Ok(v) = HeaderValue::from_str(&format!("/v1/bottles/{}", created.slug)) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Ok(resp)
            }
            Route::List => {
                let bottles = ctl.ps().await.map_err(control)?;
                Ok(body::json(StatusCode::OK, &Bottles { bottles }))
            }
            Route::Get(slug) => {
                check_slug(&slug)?;
                let detail = ctl.inspect(&slug).await.map_err(control)?;
                Ok(body::json(StatusCode::OK, &detail))
            }
            Route::Delete(slug) => {
                check_slug(&slug)?;
                let (slug, report) = ctl.down(&slug).await.map_err(control)?;
                Ok(body::json(
                    StatusCode::OK,
                    &Deleted {
                        slug,
                        existed: !report.nothing(),
                        removed: report,
                    },
                ))
            }
            Route::ComposeYaml(slug) => {
                check_slug(&slug)?;
                let yaml = ctl.compose_yaml(&slug).map_err(control)?;
                Ok(with_type(
                    Response::new(body::full(yaml)),
                    "application/yaml",
                ))
            }
            Route::Logs(slug) => {
                check_slug(&slug)?;
                let query = routes::logs_query(req.uri().query())
                    .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m))?;
                if let Some(d) = &query.daemon {
                    check_daemon(d)?;
                }
                let rx = ctl
                    .logs(
                        &slug,
                        query.daemon.clone(),
                        LogOptions {
                            follow: query.follow,
                            tail: query.tail,
                        },
                    )
                    .await
                    .map_err(control)?;
                Ok(with_type(
                    Response::new(lines_body(rx)),
                    "text/plain; charset=utf-8",
                ))
            }
            Route::Approvals(slug) => {
                check_slug(&slug)?;
                let pending = routes::approvals_query(req.uri().query())
                    .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m))?;
                let answer = ctl
                    .approvals(&slug, Op::List { pending })
                    .await
                    .map_err(control)?;
                Ok(body::json(StatusCode::OK, &answer))
            }
            Route::Approval(slug, id) => {
                check_slug(&slug)?;
                let answer = ctl
                    .approvals(&slug, Op::Show { id })
                    .await
                    .map_err(control)?;
                Ok(body::json(StatusCode::OK, &answer))
            }
            Route::Reload(slug) => {
                check_slug(&slug)?;
                // A body is the manifest to re-render from (as for `POST /v1/bottles`); none
                // re-renders the one the bottle was started from.
                let name = manifest_name(req.headers());
                let bytes = self.read(req).await?;
                let source = if bytes.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(Source::Inline {
                        text: utf8_manifest(bytes.to_vec())?,
                        name,
                    })
                };
                let report = ctl.reload(&slug, source).await.map_err(control)?;
                Ok(body::json(
                    StatusCode::ACCEPTED,
                    &serde_json::json!({"slug": report.slug, "reload": "requested", "changed": report.changed}),
                ))
            }
            Route::KillSwitch(slug) => {
                check_slug(&slug)?;
                let bytes = self.read(req).await?;
                let wanted: KillSwitchBody = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        format!("expected {{\"engaged\": true|false}}: {e}"),
                    )
                })?;
                ctl.kill_switch(&slug, wanted.engaged)
                    .await
                    .map_err(control)?;
                Ok(body::json(
                    StatusCode::OK,
                    &serde_json::json!({"slug": slug, "engaged": wanted.engaged}),
                ))
            }
            Route::Decide(slug, id, approve) => {
                check_slug(&slug)?;
                let bytes = self.read(req).await?;
                let note = if bytes.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    serde_json::from_slice::<Decision>(&bytes)
                        .map_err(|e| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_body",
                                format!("expected {{\"note\": \"...\"}} or an empty body: {e}"),
                            )
                        })?
                        .note
                };
                let answer = ctl
                    .approvals(&slug, Op::Decide { id, approve, note })
                    .await
                    .map_err(control)?;
                Ok(body::json(StatusCode::OK, &answer))
            }
            Route::PackCall(slug, name) => {
                check_slug(&slug)?;
                let input = self.read(req).await?;
                relay(
                    ctl.packs_call(&slug, &name, input)
                        .await
                        .map(|body| PackAnswer { status: 200, body }),
                )
            }
            Route::PackInstall(slug, name) => {
                check_slug(&slug)?;
                let flags = routes::install_query(req.uri().query())
                    .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m))?;
                let archive = self.read(req).await?;
                if archive.is_empty() {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        "the request body is empty: send the pack directory as a tar.gz",
                    ));
                }
                relay(
                    ctl.packs_install_archive(&slug, &name, archive, flags)
                        .await,
                )
            }
            Route::PackDelete(slug, name) => {
                check_slug(&slug)?;
                relay(ctl.packs_delete(&slug, &name).await)
            }
        }
    }

    async fn read(&self, req: Request<Incoming>) -> Result<Bytes, ApiError> {
        let (parts, body) = req.into_parts();
        read_limited(&parts.headers, body, self.max_body_bytes)
            .await
            .map_err(|e| match e {
                ReadBodyError::TooLarge { limit } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is larger than {limit} bytes"),
                ),
                ReadBodyError::Io(e) => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the request body: {e}"),
                ),
            })
    }

    async fn read_text(&self, req: Request<Incoming>) -> Result<String, ApiError> {
        let bytes = self.read(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_manifest",
                "the request body is empty: send a bottle manifest (JSON or TOML)",
            ));
        }
        utf8_manifest(bytes.to_vec())
    }
}

/// A manifest body as text; not UTF-8 is a 400.
fn utf8_manifest(bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_manifest",
            "the manifest is not UTF-8 text",
        )
    })
}

/// pack-exec's answer, success or its own error, goes back unchanged (status and body); a
/// failure before pack-exec answered is the API's own error.
fn relay(result: Result<PackAnswer, ControlError>) -> Result<Response<Body>, ApiError> {
    let (status, bytes) = match result {
        Ok(answer) => (answer.status, answer.body),
        Err(ControlError::Daemon { status, body, .. }) => (status, Bytes::from(body)),
        Err(e) => return Err(control(e)),
    };
    let empty = bytes.is_empty();
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok(if empty {
        resp
    } else {
        with_type(resp, "application/json")
    })
}

/// `ControlError` → the API's error answer. 5xx causes are logged (they are ours or the
/// runtime's to fix); 4xx are the client's and are only in the access log.
fn control(err: ControlError) -> ApiError {
    let status = err.http_status();
    if status.is_server_error() {
        tracing::warn!(code = err.code(), error = %err, "request failed");
    }
    ApiError::new(status, err.code(), err.to_string())
}

/// The manifest's format from the request's content type (`None`: sniff the text).
fn manifest_name(headers: &http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Some("request.json".to_string())
    } else if mime.ends_with("toml") {
        Some("request.toml".to_string())
    } else {
        None
    }
}

/// A path's slug must look like one before it reaches the controller (whose `down` also
/// accepts manifest paths: the API must never read a file the client names).
fn check_slug(slug: &str) -> Result<(), ApiError> {
    if bottle_compose::validate::is_slug(slug) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_slug",
            format!("{slug:?} is not a bottle slug (lowercase letters, digits and '-')"),
        ))
    }
}

/// Daemon names the logs filter knows: the daemons, and `init` itself.
fn check_daemon(name: &str) -> Result<(), ApiError> {
    if name == "init" || bottle_compose::Daemon::from_name(name).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = bottle_compose::Daemon::ALL
        .iter()
        .map(|d| d.name())
        .chain(["init"])
        .collect();
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("daemon: {name:?} is not one of {}", known.join(", ")),
    ))
}

fn with_type(mut resp: Response<Body>, content_type: &'static str) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A streaming body of log lines (each with its newline). It ends when the runtime's stream
/// ends; dropping it (the client went away) drops the receiver, which stops the reader.
fn lines_body(rx: tokio::sync::mpsc::Receiver<crate::runtime::LogLine>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut bytes = line.line;
        bytes.push(b'\n');
        Some((
            Ok::<_, sidecars_common::body::BoxError>(Frame::data(Bytes::from(bytes))),
            rx,
        ))
    });
    http_body_util::StreamBody::new(stream).boxed()
}

/// Body of an approve/deny request.
/// `PUT /v1/bottles/{slug}/kill-switch`'s body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchBody {
    engaged: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    note: Option<String>,
}

#[derive(Serialize)]
struct Healthz {
    status: &'static str,
}

#[derive(Serialize)]
struct Bottles {
    bottles: Vec<crate::api::BottleSummary>,
}

/// `POST /v1/bottles`'s answer.
#[derive(Serialize)]
struct Created {
    slug: String,
    project: String,
    state: BottleState,
    endpoints: Vec<Endpoint>,
    services: Vec<ServiceStatus>,
    agent_env: Vec<(String, String)>,
    notes: Vec<String>,
}

impl From<UpReport> for Created {
    fn from(r: UpReport) -> Self {
        Created {
            slug: r.bottle.slug,
            project: r.bottle.project,
            state: r.bottle.state,
            endpoints: r.endpoints,
            services: r.bottle.services,
            agent_env: r.agent_env,
            notes: r.notes,
        }
    }
}

#[derive(Serialize)]
struct Deleted {
    slug: String,
    existed: bool,
    removed: DownReport,
}
