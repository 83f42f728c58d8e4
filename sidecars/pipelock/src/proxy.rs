//! The request handler: `GET /health`, CONNECT tunnels and plain-HTTP forwarding, each checked
//! against the current [`Policy`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sidecars_common::body::{empty, full, json, read_limited, Body};
use sidecars_common::error::ApiError;
use sidecars_common::http::{Handler, RequestContext};
use sidecars_common::proxy::{
    blocked, deny, relay_upgraded, strip_hop_by_hop, target_of, Target, CHECKED_ADDR_HEADER,
};
use sidecars_common::ssrf::SsrfError;

use crate::config::Config;
use crate::policy::{Policy, PolicyError};
use crate::ratelimit::RateLimiter;
use crate::upstream::{open_tunnel, Forwarder, UpstreamError};
use sidecars_common::dlp;
use sidecars_common::kill_switch::{self, KillSwitch};

/// Relay buffer per direction of a tunnel.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// The policy and the HTTP client built for it, swapped together on reload.
struct Current {
    policy: Arc<Policy>,
    forwarder: Forwarder,
}

/// The pipelock service: current policy, rate limiter and tunnel count.
pub struct Pipelock {
    current: RwLock<Arc<Current>>,
    limiter: RateLimiter,
    tunnels: Arc<AtomicUsize>,
    /// Engaged: everything refused, open tunnels closed (`sidecars_common::kill_switch`).
    pub kill_switch: Arc<KillSwitch>,
    /// The policy after each reload: open tunnels re-check their destination against it.
    policies: tokio::sync::watch::Sender<Arc<Policy>>,
}

impl Pipelock {
    /// Build from a validated config.
    pub fn new(config: &Config) -> Result<Pipelock, PolicyError> {
        let current = Self::compile(config)?;
        Ok(Pipelock {
            policies: tokio::sync::watch::channel(current.policy.clone()).0,
            current: RwLock::new(Arc::new(current)),
            limiter: RateLimiter::default(),
            tunnels: Arc::new(AtomicUsize::new(0)),
            kill_switch: KillSwitch::new(config.kill_switch_file.clone()),
        })
    }

    fn compile(config: &Config) -> Result<Current, PolicyError> {
        let policy = Policy::build(config)?;
        let forwarder = Forwarder::new(policy.upstream.as_deref(), policy.connect_timeout);
        Ok(Current { policy, forwarder })
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replace the policy with one built from `config`, all at once: requests already running
    /// finish under the old one. On error nothing changes.
    pub fn reload(&self, config: &Config) -> Result<(), PolicyError> {
        let next = Arc::new(Self::compile(config)?);
        let policy = next.policy.clone();
        let old = std::mem::replace(
            &mut *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            next,
        );
        if old.policy.config.listen != config.listen {
            tracing::warn!(
                "reload: `listen` changed; the new address takes effect only after a restart"
            );
        }
        // Open tunnels hear of it and close if the new policy denies their destination.
        self.policies.send_replace(policy);
        Ok(())
    }

    /// Load `path` and [`Self::reload`]; logs the outcome (a bad config keeps the old one).
    pub fn reload_from(&self, path: &Path) {
        let result = sidecars_common::config::load::<Config>(path)
            .map_err(|e| e.to_string())
            .and_then(|c| self.reload(&c).map(|()| c).map_err(|e| e.to_string()));
        match result {
            Ok(c) => tracing::info!(
                path = %path.display(),
                allow = c.allow.len(),
                secret_files = c.secret_files.len(),
                "config reloaded"
            ),
            Err(err) => tracing::error!(
                path = %path.display(),
                "config reload rejected; keeping the previous config: {err}"
            ),
        }
    }

    /// Tunnels open right now.
    pub fn active_tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    async fn health(&self) -> Response<Body> {
        let cur = self.current();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "daemon": "pipelock",
                "version": env!("CARGO_PKG_VERSION"),
                "tunnels": self.active_tunnels(),
                "allow_rules": cur.policy.allow.len(),
                "upstream": cur.policy.upstream,
            }),
        )
    }

    /// DLP, allowlist, rate limit and SSRF for `target`; the checked addresses on success.
    async fn check(
        &self,
        policy: &Policy,
        req_uri: &http::Uri,
        headers: &http::HeaderMap,
        target: &Target,
        from_pack: bool,
    ) -> Result<Vec<std::net::SocketAddr>, Denial> {
        if let Some(hit) = dlp::scan_head(&policy.scanner, req_uri, headers) {
            return Err(Denial::secret(hit));
        }
        policy
            .check_allowlist(&target.host, target.port, from_pack)
            .map_err(|why| Denial::new(blocked(why), "allowlist"))?;
        self.limiter
            .check(&target.host, policy.rate_limit_per_minute)
            .map_err(|retry| {
                Denial::new(
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        format!(
                            "rate limited: more than {}/min to {}",
                            policy.rate_limit_per_minute, target.host
                        ),
                    )
                    .with_retry_after(retry),
                    "rate-limit",
                )
            })?;
        policy
            .addresses
            .resolve(&target.host, target.port)
            .await
            .map_err(|err| match err {
                SsrfError::Resolve { .. } => Denial::new(
                    ApiError::new(StatusCode::BAD_GATEWAY, "upstream_failed", err.to_string()),
                    "resolve",
                ),
                other => Denial::new(blocked(format!("SSRF: {other}")), "ssrf"),
            })
    }

    async fn connect(
        &self,
        mut req: Request<Incoming>,
        ctx: &RequestContext,
        target: Target,
        from_pack: bool,
    ) -> Result<Response<Body>, Denial> {
        let cur = self.current();
        let policy = &cur.policy;
        // Count the tunnel before the (slow) checks so the limit holds under a burst.
        let guard = TunnelGuard::new(self.tunnels.clone());
        let addrs = self
            .check(policy, req.uri(), req.headers(), &target, from_pack)
            .await?;
        if guard.count > policy.max_tunnels {
            return Err(Denial::new(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_tunnels",
                    format!("too many tunnels: {} open", policy.max_tunnels),
                )
                .with_retry_after(1),
                "tunnel-limit",
            ));
        }
        let tunnel = open_tunnel(
            policy.upstream.as_deref(),
            &target,
            &addrs,
            &ctx.request_id,
            policy.connect_timeout,
        )
        .await
        .map_err(|err| match err {
            UpstreamError::Refused { status, reason } => {
                let code = match status {
                    StatusCode::FORBIDDEN => "blocked",
                    StatusCode::TOO_MANY_REQUESTS => "rate_limited",
                    StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                    _ => "upstream_failed",
                };
                Denial::new(ApiError::new(status, code, reason), "egress")
            }
            UpstreamError::Io(msg) => Denial::new(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    format!("upstream failed: {msg}"),
                ),
                "upstream",
            ),
        })?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        let limits = policy.tunnel;
        let request_id = ctx.request_id.clone();
        let kill_switch = self.kill_switch.clone();
        let mut policies = self.policies.subscribe();
        policies.mark_unchanged();
        let (host, port) = (target.host.clone(), target.port);
        // Resolves when a reloaded policy no longer allows this tunnel's destination.
        let denied_by_reload = async move {
            loop {
                if policies.changed().await.is_err() {
                    return std::future::pending::<()>().await;
                }
                let policy = policies.borrow_and_update().clone();
                if policy.check_allowlist(&host, port, from_pack).is_err() {
                    return;
                }
            }
        };
        // The tunnel's log line keeps the pack's span (its name and call id) when it has one.
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _guard = guard;
                let started = Instant::now();
                let upgraded = match on_upgrade.await {
                    Ok(u) => u,
                    Err(err) => {
                        tracing::debug!(%request_id, %err, "client went away before the tunnel opened");
                        return;
                    }
                };
                // Blind: zero-copy when the scaffold hands back the raw socket. The kill
                // switch ends it (dropping both sockets) whenever it is engaged.
                let relay = relay_upgraded(
                    upgraded,
                    tunnel.leftover,
                    tunnel.stream,
                    limits,
                    TUNNEL_BUFFER,
                );
                let stats = tokio::select! {
                    stats = relay => stats,
                    _ = kill_switch.until_engaged() => {
                        tracing::warn!(%request_id, target = %target, rule = "kill-switch", "tunnel closed by the kill switch");
                        return;
                    }
                    _ = denied_by_reload => {
                        tracing::warn!(%request_id, target = %target, rule = "allowlist", "tunnel closed: the reloaded policy denies its destination");
                        return;
                    }
                };
                tracing::info!(
                    %request_id,
                    target = %target,
                    up = stats.up,
                    down = stats.down,
                    end = ?stats.end,
                    zero_copy = stats.zero_copy,
                    secs = started.elapsed().as_secs_f64(),
                    "tunnel closed"
                );
            },
            span,
        ));
        Ok(Response::new(empty()))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        target: Target,
        from_pack: bool,
    ) -> Result<Response<Body>, Denial> {
        let cur = self.current();
        let policy = &cur.policy;
        let (mut parts, body) = req.into_parts();
        let addrs = self
            .check(policy, &parts.uri, &parts.headers, &target, from_pack)
            .await?;
        let bytes = read_limited(&parts.headers, body, policy.max_body_scan_bytes)
            .await
            .map_err(|err| {
                let (error, rule) = dlp::body_refusal(err);
                Denial::new(error, rule)
            })?;
        if let Some(hit) = dlp::scan_body(&policy.scanner, &bytes) {
            return Err(Denial::secret(hit));
        }
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(CHECKED_ADDR_HEADER);
        if !parts.headers.contains_key(header::HOST) {
            if let Some(Ok(host)) = parts
                .uri
                .authority()
                .map(|a| HeaderValue::from_str(a.as_str()))
            {
                parts.headers.insert(header::HOST, host);
            }
        }
        parts.version = http::Version::HTTP_11;
        let req = Request::from_parts(parts, full(bytes));
        let resp = cur
            .forwarder
            .send(req, &target, &addrs)
            .await
            .map_err(|msg| {
                Denial::new(
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_failed",
                        format!("upstream failed: {msg}"),
                    ),
                    "upstream",
                )
            })?;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed(),
        ))
    }
}

/// A refused request: the answer, and the rule name for the log line.
struct Denial {
    error: ApiError,
    rule: &'static str,
    /// False when the host itself carried a secret (then it must not be logged).
    log_host: bool,
}

impl Denial {
    fn new(error: ApiError, rule: &'static str) -> Denial {
        Denial {
            error,
            rule,
            log_host: true,
        }
    }

    fn secret(hit: dlp::Hit) -> Denial {
        Denial {
            log_host: hit.location != "host",
            rule: hit.rule,
            error: blocked(hit),
        }
    }
}

/// Holds one slot of the tunnel count while a tunnel (or its setup) lives.
struct TunnelGuard {
    tunnels: Arc<AtomicUsize>,
    /// The count including this tunnel.
    count: usize,
}

impl TunnelGuard {
    fn new(tunnels: Arc<AtomicUsize>) -> TunnelGuard {
        let count = tunnels.fetch_add(1, Ordering::Relaxed) + 1;
        TunnelGuard { tunnels, count }
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Handler for Pipelock {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        self.serve_request(req, ctx, false).await
    }
}

impl Pipelock {
    /// One request, from the agent or (`from_pack`) from a pack handler through init's relay:
    /// the same checks, with pack traffic held to `pack_allow` when it is set.
    pub async fn serve_request(
        &self,
        req: Request<Incoming>,
        ctx: RequestContext,
        from_pack: bool,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let target = match target_of(&req) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return if method == Method::GET && req.uri().path() == "/health" {
                    self.health().await
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "pipelock is a proxy: send CONNECT or absolute-form http:// requests",
                    )
                    .into_response(&ctx.request_id)
                };
            }
            Err(msg) => {
                return deny(
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg),
                    &ctx.request_id,
                )
            }
        };
        let shown = target.to_string();
        let result = if self.kill_switch.engaged() {
            Err(Denial::new(kill_switch::refusal(), "kill-switch"))
        } else if method == Method::CONNECT {
            self.connect(req, &ctx, target, from_pack).await
        } else {
            self.forward(req, target, from_pack).await
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(resp) => {
                tracing::info!(request_id = %ctx.request_id, %method, target = %shown, status = resp.status().as_u16(), ms, "allowed");
                resp
            }
            Err(denial) => {
                let shown = if denial.log_host {
                    shown.as_str()
                } else {
                    "[redacted]"
                };
                tracing::warn!(
                    request_id = %ctx.request_id,
                    %method,
                    target = %shown,
                    status = denial.error.status.as_u16(),
                    rule = denial.rule,
                    reason = if denial.log_host { denial.error.message.as_str() } else { "secret detected in host" },
                    ms,
                    "denied"
                );
                deny(denial.error, &ctx.request_id)
            }
        }
    }
}
