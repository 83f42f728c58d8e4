//! Interception for route and vault hosts: rewriting a request (vault placeholders, injected
//! headers), the per-tunnel upstream TLS connection, and serving the agent's requests inside
//! a CONNECT tunnel whose TLS egress terminates with a certificate from the bottle's CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use sidecars_common::body::{Body, ReadBodyError};
use sidecars_common::dlp;
use sidecars_common::error::ApiError;
use sidecars_common::http::new_request_id;
use sidecars_common::proxy::{
    blocked, connect_any, deny, origin_form, strip_hop_by_hop, CHECKED_ADDR_HEADER,
};
use tokio::sync::Mutex;

use crate::creds::{substitute_body, substitute_uri, substitute_vault};
use crate::redact::Redactor;
use crate::state::{Live, State};
use crate::stream_scan::{self, Refusal, Start, Verdict};

/// Rewrite an outgoing request for `host`: check the route's method/path rules (a refused
/// request never gets a credential), substitute scoped `${vault:NAME}` placeholders
/// (refusing unscoped ones), drop hop-by-hop headers and the agent's own copies of the
/// route's headers, add the route's headers. Returns the redactor for the response.
pub fn prepare_request(
    state: &State,
    host: &str,
    parts: &mut http::request::Parts,
) -> Result<Option<Arc<Redactor>>, ApiError> {
    if let Some(rules) = state.hosts.get(host) {
        let path = parts.uri.path();
        if let Err(refusal) = rules.rules.check(parts.method.as_str(), path) {
            let shown: String = path.chars().take(200).collect();
            // The path stays out of the log: it is the agent's, and may carry anything.
            tracing::warn!(host, method = %parts.method, rule = "route-rule", why = %refusal, "denied");
            return Err(blocked(format!("route rule: {} {shown}", parts.method)));
        }
    }
    substitute_vault(&mut parts.headers, host, &state.vault).map_err(blocked)?;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(CHECKED_ADDR_HEADER);
    let Some(rules) = state.hosts.get(host) else {
        return Ok(None);
    };
    for (name, _) in &rules.inject {
        parts.headers.remove(name);
    }
    for (name, value) in &rules.inject {
        parts.headers.append(name.clone(), value.clone());
    }
    if rules.redactor.is_some() {
        // Redaction needs plain bytes: no compressed responses from intercepted hosts.
        parts.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    Ok(rules.redactor.clone())
}

/// Prepare an upstream response for the agent: hop-by-hop headers dropped, credentials
/// redacted from headers and body.
pub fn finish_response(
    resp: Response<Incoming>,
    redactor: Option<Arc<Redactor>>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body: Body = body.map_err(Into::into).boxed();
    let body = match redactor {
        Some(r) => {
            r.headers(&mut parts.headers);
            // The length may change.
            parts.headers.remove(header::CONTENT_LENGTH);
            r.body(body)
        }
        None => body,
    };
    Response::from_parts(parts, body)
}

/// The upstream side of one intercepted tunnel: a TLS connection to the checked address with
/// the original host as SNI, reconnected if the upstream closes it between requests.
pub struct Upstream {
    live: Arc<Live>,
    host: String,
    addrs: Vec<SocketAddr>,
    sender: Mutex<Option<SendRequest<Body>>>,
}

impl Upstream {
    /// Connect now, so a dead or untrusted upstream is reported on the CONNECT (502).
    pub async fn connect(
        live: Arc<Live>,
        host: String,
        addrs: Vec<SocketAddr>,
    ) -> Result<Upstream, String> {
        let sender = Self::dial(&live.get(), &host, &addrs).await?;
        Ok(Upstream {
            live,
            host,
            addrs,
            sender: Mutex::new(Some(sender)),
        })
    }

    async fn dial(
        state: &State,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<SendRequest<Body>, String> {
        let tcp = connect_any(addrs, state.connect_timeout)
            .await
            .map_err(|e| format!("cannot connect to {host}: {e}"))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("{host} is not a valid TLS server name"))?;
        let tls = tokio::time::timeout(
            state.connect_timeout,
            tokio_rustls::TlsConnector::from(state.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| format!("TLS handshake with {host} timed out"))?
        .map_err(|e| format!("TLS handshake with {host} failed: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake with {host} failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let fut = {
            let mut slot = self.sender.lock().await;
            let mut sender = match slot.take() {
                Some(s) if !s.is_closed() => s,
                _ => Self::dial(&self.live.get(), &self.host, &self.addrs).await?,
            };
            if sender.ready().await.is_err() {
                sender = Self::dial(&self.live.get(), &self.host, &self.addrs).await?;
            }
            let fut = sender.send_request(req);
            *slot = Some(sender);
            fut
        };
        fut.await.map_err(|e| {
            format!(
                "upstream {}: {}",
                self.host,
                sidecars_common::proxy::error_chain(&e)
            )
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let request_id = new_request_id();
        let method = req.method().clone();
        if let Some(other) = foreign_host(&req, &self.host) {
            tracing::warn!(%request_id, host = %self.host, %method, rule = "host-mismatch", "denied");
            return deny(
                blocked(format!(
                    "the request's Host ({other}) is not the tunnel's host {}",
                    self.host
                )),
                &request_id,
            );
        }
        let (mut parts, body) = req.into_parts();
        // The state now: a reload (rotated credentials) applies from the next request on.
        let state = self.live.get();
        let verdict = Verdict::default();
        let started = match scan_request(&state, &parts, body, verdict.clone()).await {
            Ok(started) => started,
            Err((err, rule)) => {
                tracing::warn!(%request_id, host = %self.host, %method, rule, reason = %err.message, "denied");
                return deny(err, &request_id);
            }
        };
        let redactor = match prepare_request(&state, &self.host, &mut parts) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(%request_id, host = %self.host, %method, reason = %err.message, "denied");
                return deny(err, &request_id);
            }
        };
        // Route rules saw the path as the agent sent it; placeholders are filled in now (in
        // the body only when it ended within the first window: a streamed one goes as it is).
        let (whole, streamed) = match started {
            Start::Whole(bytes) => (bytes, None),
            Start::Streaming(stream) => (bytes::Bytes::new(), Some(stream)),
        };
        let body = match substitute_request(&state, &self.host, &mut parts, whole) {
            Ok(body) => match streamed {
                None => sidecars_common::body::full(body),
                Some(stream) => stream.boxed(),
            },
            Err(err) => {
                tracing::warn!(%request_id, host = %self.host, %method, rule = "vault", reason = %err.message, "denied");
                return deny(err, &request_id);
            }
        };
        parts.uri = origin_form(&parts.uri);
        parts.version = http::Version::HTTP_11;
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(h) = HeaderValue::from_str(&self.host) {
                parts.headers.insert(header::HOST, h);
            }
        }
        let req = Request::from_parts(parts, body);
        match self.send(req).await {
            Ok(resp) => {
                tracing::info!(%request_id, host = %self.host, %method, status = resp.status().as_u16(), "intercepted");
                finish_response(resp, redactor)
            }
            Err(msg) => {
                // A streamed body the DLP stopped mid-way: the upstream request was aborted.
                if let Some(refusal) = verdict.take().await {
                    let (err, rule) = refusal_answer(refusal);
                    tracing::warn!(%request_id, host = %self.host, %method, rule, reason = %err.message, "denied mid-stream; upstream request aborted");
                    return deny(err, &request_id);
                }
                tracing::warn!(%request_id, host = %self.host, %method, reason = %msg, "upstream failed");
                deny(
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream_failed",
                        format!("upstream failed: {msg}"),
                    ),
                    &request_id,
                )
            }
        }
    }
}

/// DLP on a decrypted request, before anything is injected or substituted: the request line
/// and every header, then the body, in windows as it arrives ([`crate::stream_scan`]; bounded
/// by `max_body_scan_bytes`, a larger one is refused, never forwarded unscanned). The same
/// rules, configured secrets and answers as pipelock's on plain HTTP. Returns how the body
/// starts, or the answer and the rule that refused it (never the value found).
async fn scan_request(
    state: &Arc<State>,
    parts: &http::request::Parts,
    body: Incoming,
    verdict: Verdict,
) -> Result<Start, (ApiError, &'static str)> {
    if let Some(hit) = dlp::scan_head(&state.scanner, &parts.uri, &parts.headers) {
        return Err(refusal_answer(Refusal::Secret(hit)));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    stream_scan::start(state.clone(), declared, body, verdict)
        .await
        .map_err(refusal_answer)
}

/// The answer to a refused body, and the rule for the log.
fn refusal_answer(refusal: Refusal) -> (ApiError, &'static str) {
    match refusal {
        Refusal::Secret(hit) => {
            let rule = hit.rule;
            (blocked(hit), rule)
        }
        Refusal::Body(e) => dlp::body_refusal(e),
    }
}

/// Substitute scoped `${vault:NAME}` placeholders in the URL (path and query,
/// percent-encoded) and the buffered body (JSON, form or text, by `Content-Type`), after DLP
/// has seen the request and before it is sent; an unscoped placeholder refuses the request.
/// Headers are [`prepare_request`]'s. Returns the body to send.
pub fn substitute_request(
    state: &State,
    host: &str,
    parts: &mut http::request::Parts,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(uri) = substitute_uri(&parts.uri, host, &state.vault).map_err(blocked)? {
        parts.uri = uri;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match substitute_body(&body, content_type, host, &state.vault).map_err(blocked)? {
        Some(new) => {
            // The length changed; the client sets it again from the new body.
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(bytes::Bytes::from(new))
        }
        None => Ok(body),
    }
}

/// Read a whole body of at most `limit` bytes. A larger one is `TooLarge`, after what the
/// client still sends is read and dropped (bounded): answering while it is mid-upload would
/// reset the connection and lose the answer.
pub async fn read_or_drain(
    mut body: Incoming,
    limit: usize,
) -> Result<bytes::Bytes, ReadBodyError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(buf.freeze()),
            Some(Err(e)) => return Err(ReadBodyError::Io(e.into())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > limit {
                        break;
                    }
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    stream_scan::drain(body).await;
    Err(ReadBodyError::TooLarge { limit })
}

/// The `Host` of a request inside an intercepted tunnel when it names another host than the
/// tunnel's (port ignored, case-insensitive): one tunnel, one host, so a request cannot be
/// steered to another virtual host of the same upstream. Truncated for the message.
fn foreign_host(req: &Request<Incoming>, tunnel_host: &str) -> Option<String> {
    let host = req.headers().get(header::HOST)?;
    let host = String::from_utf8_lossy(host.as_bytes());
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(&*host, |(h, _)| h),
    };
    let same = name
        .trim_end_matches('.')
        .eq_ignore_ascii_case(tunnel_host.trim_end_matches('.'));
    (!same).then(|| host.chars().take(100).collect())
}

/// Serve the agent's HTTP/1.1 requests inside an intercepted tunnel until it closes, idles
/// past `state.tunnel.idle` between requests, or reaches the maximum lifetime.
pub async fn serve_tunnel<IO>(
    io: IO,
    tls: Arc<rustls::ServerConfig>,
    upstream: Upstream,
) -> Result<(), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = upstream.live.get();
    let limits = state.tunnel;
    let stream = tokio::time::timeout(
        state.connect_timeout,
        tokio_rustls::TlsAcceptor::from(tls).accept(io),
    )
    .await
    .map_err(|_| "agent TLS handshake timed out".to_string())?
    .map_err(|e| format!("agent TLS handshake failed: {e}"))?;
    let upstream = Arc::new(upstream);
    let svc = service_fn(move |req| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(upstream.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    match tokio::time::timeout(limits.max_lifetime, conn).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("tunnel reached its maximum lifetime".into()),
    }
}
