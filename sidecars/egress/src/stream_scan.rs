//! Streaming DLP of a decrypted request body: the body is scanned in windows as it arrives
//! and forwarded as each window passes, instead of being buffered whole first.
//!
//! - **Small bodies keep the strong guarantee.** The first [`WINDOW`] bytes are read and
//!   scanned before anything is sent: a body that ends within them (nearly every API call) is
//!   refused or passed whole, and the upstream sees neither its head nor the injected
//!   credential before the whole body is clean ([`Start::Whole`]).
//! - **Chunk-boundary safe.** Windows end at exact multiples of [`WINDOW`] of the body, wherever
//!   the client cut its chunks; each is scanned together with the last [`OVERLAP`] bytes
//!   of the one before, and those bytes are held back until the next window is clean, so a
//!   secret of up to [`OVERLAP`] bytes lies whole in one scanned window and none of its bytes
//!   leave before that window is scanned, wherever the client's chunks were cut.
//! - **A refusal mid-stream aborts the upstream request.** The upstream has received the head
//!   and a clean prefix of the body but never the secret and never the end of the request
//!   (its `Content-Length` or final chunk is never reached), and the client gets the same 403
//!   (or 413 past `max_body_scan_bytes`) as a buffered body would, once what it still sends
//!   has been drained ([`drain`]).
//! - **Pipelined.** A window is scanned on a blocking thread while the next one is read and
//!   the previous one is encrypted to the upstream by the upstream connection's task, so TLS
//!   in, DLP and TLS out run on different cores.
//!
//! Placeholders (`${vault:NAME}`) are substituted in bodies that end within the first window
//! only: a streamed body is forwarded as it is (docs/proxy.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use sidecars_common::body::{BoxError, ReadBodyError};
use sidecars_common::dlp;
use tokio::task::JoinHandle;

use crate::state::State;

/// Bytes scanned at a time, and read (and scanned) before anything is sent upstream.
pub const WINDOW: usize = 1 << 20;
/// Bytes of each window scanned again with the next one and held back until it is clean: the
/// longest secret (in any encoding) found across a chunk boundary.
pub const OVERLAP: usize = 64 << 10;

/// Most bytes of a refused body read and dropped so the client, still sending, reads the
/// answer instead of a reset; past it (or after [`DRAIN_FOR`]) the connection just closes.
const DRAIN_CAP: usize = 64 << 20;
/// How long a refused body is drained at most.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a body was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The DLP found a secret (the rule and where, never the value).
    Secret(dlp::Hit),
    /// Over `max_body_scan_bytes`, or unreadable.
    Body(ReadBodyError),
}

/// How a body starts: whole, or streaming after a clean first window.
pub enum Start {
    /// The whole body, scanned clean: it ended within the first window.
    Whole(Bytes),
    /// The first window was clean and more follows: send this body upstream.
    Streaming(ScanStream),
}

/// The refusal a [`ScanStream`] stopped with, and the client's body to drain; read by the
/// handler when the upstream request fails.
#[derive(Clone, Default)]
pub struct Verdict(Arc<Mutex<Option<Stopped>>>);

/// A refusal and the client's body still to drain.
type Stopped = (Refusal, Option<Incoming>);

impl Verdict {
    /// The refusal, if the stream stopped with one (the body is drained first).
    pub async fn take(&self) -> Option<Refusal> {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (refusal, body) = taken?;
        if let Some(body) = body {
            drain(body).await;
        }
        Some(refusal)
    }

    fn set(&self, refusal: Refusal, body: Option<Incoming>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((refusal, body));
    }
}

/// Read what the client still sends (bounded by [`DRAIN_CAP`] and [`DRAIN_FOR`]) and drop it.
pub async fn drain(mut body: Incoming) {
    let drain = async {
        let mut drained = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, |d| d.len());
            if drained > DRAIN_CAP {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, drain).await;
}

/// Read and scan the first window of `body` (of at most `declared` bytes, its
/// `Content-Length`, when known). A body that ends within it is [`Start::Whole`]; a longer
/// one is [`Start::Streaming`], whose refusals land in `verdict`. A body declared or read
/// past `max_body_scan_bytes`, or with a secret in its first window, is refused here, before
/// anything is sent.
pub async fn start(
    state: Arc<State>,
    declared: Option<u64>,
    mut body: Incoming,
    verdict: Verdict,
) -> Result<Start, Refusal> {
    let limit = state.max_body_scan_bytes;
    let too_large = || Refusal::Body(ReadBodyError::TooLarge { limit });
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut first = BytesMut::new();
    let mut ended = false;
    while first.len() < WINDOW {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => return Err(Refusal::Body(ReadBodyError::Io(e.into()))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if first.len() + data.len() > limit {
                        drain(body).await;
                        return Err(too_large());
                    }
                    first.extend_from_slice(&data);
                }
            }
        }
    }
    // Windows end at exact multiples of WINDOW, wherever the client's chunks end.
    let pending = if first.len() > WINDOW {
        first.split_off(WINDOW)
    } else {
        BytesMut::new()
    };
    let first = first.freeze();
    if let Some(hit) = dlp::scan_body(&state.scanner, &first) {
        if !ended {
            drain(body).await;
        }
        return Err(Refusal::Secret(hit));
    }
    if ended && pending.is_empty() {
        return Ok(Start::Whole(first));
    }
    let keep = OVERLAP.min(first.len());
    let total = first.len() + pending.len();
    Ok(Start::Streaming(ScanStream {
        state,
        incoming: Some(body),
        ended,
        first: Some(first.slice(..first.len() - keep)),
        tail: first.slice(first.len() - keep..),
        pending,
        job: None,
        total,
        limit,
        verdict,
        done: false,
    }))
}

/// A request body forwarded as its windows pass the DLP (see the module doc).
pub struct ScanStream {
    state: Arc<State>,
    incoming: Option<Incoming>,
    ended: bool,
    /// The first window less its held-back tail: the first frame sent.
    first: Option<Bytes>,
    /// Scanned, clean, held back until the next window is scanned too.
    tail: Bytes,
    /// Read, not scanned yet.
    pending: BytesMut,
    /// The window being scanned: its bytes and the hit, if any.
    job: Option<JoinHandle<(Bytes, Option<dlp::Hit>)>>,
    total: usize,
    limit: usize,
    verdict: Verdict,
    done: bool,
}

/// The error a refused stream ends with (the upstream request is aborted; the handler answers
/// from the [`Verdict`]).
#[derive(Debug, thiserror::Error)]
#[error("request body refused by egress's DLP")]
struct Refused;

impl ScanStream {
    fn refuse(&mut self, refusal: Refusal) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.verdict.set(refusal, self.incoming.take());
        Poll::Ready(Some(Err(Box::new(Refused))))
    }

    /// Start scanning the held-back tail and the next (at most) [`WINDOW`] bytes read.
    fn scan_next(&mut self) {
        let next = self.pending.split_to(self.pending.len().min(WINDOW));
        let mut window = BytesMut::with_capacity(self.tail.len() + next.len());
        window.extend_from_slice(&self.tail);
        window.extend_from_slice(&next);
        self.tail = Bytes::new();
        let window = window.freeze();
        let state = self.state.clone();
        self.job = Some(tokio::task::spawn_blocking(move || {
            let hit = dlp::scan_body(&state.scanner, &window);
            (window, hit)
        }));
    }
}

impl hyper::body::Body for ScanStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            // Read ahead, up to a window, while the previous one is scanned.
            let mut read_pending = false;
            if !this.ended && this.pending.len() < WINDOW {
                if let Some(incoming) = this.incoming.as_mut() {
                    match Pin::new(incoming).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data() {
                                this.total += data.len();
                                if this.total > this.limit {
                                    let limit = this.limit;
                                    return this
                                        .refuse(Refusal::Body(ReadBodyError::TooLarge { limit }));
                                }
                                this.pending.extend_from_slice(&data);
                            }
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            return this.refuse(Refusal::Body(ReadBodyError::Io(e.into())))
                        }
                        Poll::Ready(None) => {
                            this.ended = true;
                            continue;
                        }
                        Poll::Pending => read_pending = true,
                    }
                }
            }
            if let Some(job) = this.job.as_mut() {
                let (window, hit) = match Pin::new(job).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(done)) => done,
                    Poll::Ready(Err(e)) => {
                        return this.refuse(Refusal::Body(ReadBodyError::Io(Box::new(e))))
                    }
                };
                this.job = None;
                if let Some(hit) = hit {
                    return this.refuse(Refusal::Secret(hit));
                }
                let last = this.ended && this.pending.is_empty();
                let keep = if last { 0 } else { OVERLAP.min(window.len()) };
                this.tail = window.slice(window.len() - keep..);
                let send = window.slice(..window.len() - keep);
                if !send.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(send))));
                }
                continue;
            }
            if this.pending.len() >= WINDOW || (this.ended && !this.pending.is_empty()) {
                this.scan_next();
                continue;
            }
            if this.ended {
                this.done = true;
                let rest = std::mem::take(&mut this.tail);
                return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
            }
            // Waiting for the client: its body registered the waker.
            debug_assert!(read_pending);
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
