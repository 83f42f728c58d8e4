//! The operator listener (loopback by default, never the agent's): events and approvals API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/events` | sidecar-init reports a daemon's `started/exited/restarting/failed` |
//! | `GET /v1/events` | every stored event, oldest first |
//! | `GET /v1/approvals` | every approval (optional `?status=pending|approved|denied`) |
//! | `GET /v1/approvals/{id}` | one approval |
//! | `POST /v1/approvals/{id}/approve`, `/deny` | decide; optional body `{"note": "..."}` |
//! | `GET /health` | liveness |

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming as IncomingBody;
use serde::Deserialize;
use serde_json::json;

use sidecars_common::body::{json as json_response, read_limited, Body, ReadBodyError};
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext};

use crate::queue::{Event, QueueError, Status, Verdict};
use crate::waiters::blocking;
use crate::State;

/// Handler of the operator listener.
pub struct OperatorHandler {
    /// Shared daemon state.
    pub state: Arc<State>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    note: Option<String>,
}

fn api_error(err: QueueError) -> ApiError {
    match err {
        QueueError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string())
        }
        QueueError::InvalidId(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", err.to_string())
        }
        QueueError::AlreadyDecided(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_decided", err.to_string())
        }
        other => {
            tracing::error!(err = %other, "approval queue failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the approval queue is unavailable",
            )
        }
    }
}

impl Handler for OperatorHandler {
    async fn handle(&self, req: Request<IncomingBody>, ctx: RequestContext) -> Response<Body> {
        match self.route(req).await {
            Ok(resp) => resp,
            Err(err) => err.into_response(&ctx.request_id),
        }
    }
}

impl OperatorHandler {
    /// The request's JSON body, `None` if it is empty.
    async fn body<T: for<'de> Deserialize<'de>>(
        &self,
        req: Request<IncomingBody>,
    ) -> Result<Option<T>, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts.headers, body, self.state.config.max_body_bytes)
            .await
            .map_err(|err| match err {
                ReadBodyError::TooLarge { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    err.to_string(),
                ),
                ReadBodyError::Io(_) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", err.to_string())
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("invalid JSON body: {err}"),
            )
        })
    }

    async fn route(&self, req: Request<IncomingBody>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let queue = self.state.queue.clone();
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET, ["health"]) => Ok(crate::health(&self.state).await),
            (Method::POST, ["v1", "events"]) => {
                let Some(event) = self.body::<Event>(req).await? else {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_input",
                        "empty event",
                    ));
                };
                let stored = blocking(move || queue.record_event(event))
                    .await
                    .map_err(api_error)?;
                tracing::info!(
                    daemon = %stored.event.daemon,
                    event = ?stored.event.event,
                    code = ?stored.event.code,
                    restarts = ?stored.event.restarts,
                    "daemon event recorded"
                );
                Ok(json_response(StatusCode::CREATED, &stored))
            }
            (Method::GET, ["v1", "events"]) => {
                let events = blocking(move || queue.events()).await.map_err(api_error)?;
                Ok(json_response(StatusCode::OK, &json!({"events": events})))
            }
            (Method::GET, ["v1", "approvals"]) => {
                let wanted = req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("status="))
                        .map(str::to_string)
                });
                let all = blocking(move || queue.list()).await.map_err(api_error)?;
                let approvals: Vec<_> = all
                    .into_iter()
                    .filter(|a| wanted.as_deref().is_none_or(|w| a.status.as_str() == w))
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"approvals": approvals}),
                ))
            }
            (Method::GET, ["v1", "approvals", id]) => {
                let id = id.to_string();
                let a = blocking(move || queue.get(&id)).await.map_err(api_error)?;
                Ok(json_response(StatusCode::OK, &a))
            }
            (Method::POST, ["v1", "approvals", id, action @ ("approve" | "deny")]) => {
                let verdict = if *action == "approve" {
                    Verdict::Approved
                } else {
                    Verdict::Denied
                };
                let id = id.to_string();
                let body: DecisionBody = self.body(req).await?.unwrap_or_default();
                let decided =
                    blocking(move || queue.decide(&id, verdict, body.note, "operator-api"))
                        .await
                        .map_err(api_error)?;
                self.state.decisions.notify();
                tracing::info!(id = %decided.id, status = decided.status.as_str(), "approval decided");
                debug_assert_ne!(decided.status, Status::Pending);
                Ok(json_response(StatusCode::OK, &decided))
            }
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
            )),
        }
    }
}
