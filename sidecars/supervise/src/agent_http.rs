//! The agent-facing listener: MCP streamable HTTP at `/mcp` (the shared transport of
//! [`sidecars_common::mcp`]), and `/health`. supervise's tool list never changes, so it
//! announces no `listChanged` and `GET /mcp` is 405. This listener has no operator routes:
//! `/v1/*` is 404 here by construction.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming as IncomingBody;

use sidecars_common::body::Body;
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext};
use sidecars_common::mcp::Endpoint;

use crate::tools::Tools;
use crate::State;

/// Handler of the agent-facing listener.
pub struct AgentHandler {
    /// Shared daemon state.
    pub state: Arc<State>,
    /// The `/mcp` endpoint over supervise's tools.
    pub mcp: Endpoint<Tools>,
}

impl Handler for AgentHandler {
    async fn handle(&self, req: Request<IncomingBody>, ctx: RequestContext) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => crate::health(&self.state).await,
            (_, "/mcp") => self.mcp.handle(req, &ctx).await,
            _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
                .into_response(&ctx.request_id),
        }
    }
}
