//! The request handler: `GET /health`, the `allow_from` ACL, CONNECT (intercepted or blind)
//! and plain-HTTP forwarding, every destination address checked by the SSRF guard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sidecars_common::body::{empty, json, Body};
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext};
use sidecars_common::proxy::{
    blocked, checked_addrs, connect_any, deny, target_of, Target, TunnelClient,
};
use sidecars_common::ssrf::SsrfError;

use crate::intercept::{
    finish_response, prepare_request, read_or_drain, serve_tunnel, substitute_request, Upstream,
};
use crate::sni::{self, is_ip_literal};
use crate::state::Live;
use sidecars_common::kill_switch::{self, KillSwitch};

const TUNNEL_BUFFER: usize = 64 * 1024;

/// The egress service.
pub struct Egress {
    live: Arc<Live>,
    kill_switch: Arc<KillSwitch>,
}

impl Egress {
    /// Serve from `live` (replaced on reload), obeying `kill_switch`.
    pub fn new(live: Arc<Live>, kill_switch: Arc<KillSwitch>) -> Egress {
        Egress { live, kill_switch }
    }

    /// The addresses to connect to: those pipelock checked (sent in `X-Pipelock-Addr`,
    /// checked again here, and only for the target's port) or, without the header, our own
    /// resolution. Either way every address passes the SSRF guard.
    async fn addresses(
        &self,
        req: &Request<Incoming>,
        target: &Target,
    ) -> Result<Vec<SocketAddr>, ApiError> {
        let state = self.live.get();
        let policy = &state.addresses;
        match checked_addrs(req.headers())
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?
        {
            Some(addrs) => {
                for addr in &addrs {
                    if addr.port() != target.port {
                        return Err(blocked(format!(
                            "checked address {addr} does not match port {}",
                            target.port
                        )));
                    }
                    policy
                        .check_ip(addr.ip())
                        .map_err(|reason| blocked(format!("SSRF: {} is {reason}", addr.ip())))?;
                }
                Ok(addrs)
            }
            None => policy
                .resolve(&target.host, target.port)
                .await
                .map_err(|err| match err {
                    SsrfError::Resolve { .. } => {
                        ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", err.to_string())
                    }
                    other => blocked(format!("SSRF: {other}")),
                }),
        }
    }

    async fn connect(
        &self,
        mut req: Request<Incoming>,
        target: Target,
        request_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let addrs = self.addresses(&req, &target).await?;
        let state = self.live.get();
        let on_upgrade = hyper::upgrade::on(&mut req);
        let request_id = request_id.to_string();
        if state.intercepts(&target.host) {
            let tls = state
                .ca
                .as_ref()
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "no CA configured",
                    )
                })?
                .server_config(&target.host)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("cannot mint a certificate: {e}"),
                    )
                })?;
            let upstream = Upstream::connect(self.live.clone(), target.host.clone(), addrs)
                .await
                .map_err(|m| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_failed",
                        format!("upstream failed: {m}"),
                    )
                })?;
            let kill_switch = self.kill_switch.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                tokio::select! {
                    ended = serve_tunnel(TokioIo::new(upgraded), tls, upstream) => {
                        if let Err(err) = ended {
                            tracing::info!(%request_id, target = %target, %err, "intercepted tunnel ended");
                        }
                    }
                    _ = kill_switch.until_engaged() => {
                        tracing::warn!(%request_id, target = %target, rule = "kill-switch", "tunnel closed by the kill switch");
                    }
                }
            });
        } else {
            let stream = connect_any(&addrs, state.connect_timeout)
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_failed",
                        format!("upstream failed: cannot connect to {target}: {e}"),
                    )
                })?;
            let limits = state.tunnel;
            let hello_timeout = state.connect_timeout;
            let kill_switch = self.kill_switch.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let started = Instant::now();
                let mut client = TunnelClient::new(upgraded);
                if !is_ip_literal(&target.host) {
                    if let Err(why) = sni::check(&mut client, &target.host, hello_timeout).await {
                        // Dropping both ends closes the tunnel: nothing reached the upstream.
                        tracing::warn!(%request_id, target = %target, rule = "sni-mismatch", reason = %why, "denied");
                        return;
                    }
                }
                // Blind: zero-copy when the scaffold hands back the raw socket.
                let stats = tokio::select! {
                    stats = client.relay(Bytes::new(), stream, limits, TUNNEL_BUFFER) => stats,
                    _ = kill_switch.until_engaged() => {
                        tracing::warn!(%request_id, target = %target, rule = "kill-switch", "tunnel closed by the kill switch");
                        return;
                    }
                };
                tracing::info!(%request_id, target = %target, up = stats.up, down = stats.down, end = ?stats.end, zero_copy = stats.zero_copy, secs = started.elapsed().as_secs_f64(), "tunnel closed");
            });
        }
        Ok(Response::new(empty()))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        target: Target,
    ) -> Result<Response<Body>, ApiError> {
        let addrs = self.addresses(&req, &target).await?;
        let (mut parts, body) = req.into_parts();
        let state = self.live.get();
        // Buffered (pipelock has already scanned it, within the same bound) so placeholders
        // in it can be substituted.
        let body = read_or_drain(body, state.max_body_scan_bytes)
            .await
            .map_err(|e| sidecars_common::dlp::body_refusal(e).0)?;
        // Route rules see the path as the agent sent it; placeholders are filled in after.
        let redactor = prepare_request(&state, &target.host, &mut parts)?;
        let body = substitute_request(&state, &target.host, &mut parts, body)?;
        parts.version = http::Version::HTTP_11;
        let req = Request::from_parts(parts, sidecars_common::body::full(body));
        let resp = state.http.send(req, addrs[0]).await.map_err(|m| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!("upstream failed: cannot reach {target}: {m}"),
            )
        })?;
        Ok(finish_response(resp, redactor))
    }
}

impl Handler for Egress {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let target = match target_of(&req) {
            Ok(Some(t)) => Some(t),
            Ok(None) if method == Method::GET && req.uri().path() == "/health" => {
                return json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "status": "ok",
                        "daemon": "egress",
                        "version": env!("CARGO_PKG_VERSION"),
                        "intercepted_hosts": self.live.get().hosts.len(),
                    }),
                );
            }
            Ok(None) => None,
            Err(msg) => {
                return deny(
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg),
                    &ctx.request_id,
                )
            }
        };
        let peer = ctx.peer.ip().to_canonical();
        if !self
            .live
            .get()
            .allow_from
            .iter()
            .any(|net| net.contains(&peer))
        {
            tracing::warn!(request_id = %ctx.request_id, %peer, rule = "allow-from", "denied");
            return deny(
                blocked(format!("peer {peer} is not allowed to use egress")),
                &ctx.request_id,
            );
        }
        let Some(target) = target else {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "egress is a proxy: send CONNECT or absolute-form http:// requests",
            )
            .into_response(&ctx.request_id);
        };
        let shown = target.to_string();
        let result = if self.kill_switch.engaged() {
            Err(kill_switch::refusal())
        } else if method == Method::CONNECT {
            self.connect(req, target, &ctx.request_id).await
        } else {
            self.forward(req, target).await
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(resp) => {
                tracing::info!(request_id = %ctx.request_id, %method, target = %shown, status = resp.status().as_u16(), ms, "allowed");
                resp
            }
            Err(err) => {
                tracing::warn!(request_id = %ctx.request_id, %method, target = %shown, status = err.status.as_u16(), reason = %err.message, ms, "denied");
                deny(err, &ctx.request_id)
            }
        }
    }
}
