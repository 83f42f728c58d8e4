//! Redacting injected credentials from what the upstream sends back, before the agent sees it.
//!
//! Some services echo request headers (debug endpoints, error pages). egress replaces every
//! occurrence of a credential it injected for the host with `[REDACTED]` in response headers
//! and bodies. Bodies are streamed, not buffered: each chunk is scanned together with the last
//! `longest value - 1` bytes held back from the chunk before, so a value split across chunks is
//! still caught; the held-back bytes are flushed at the end. For this to work the body must be
//! uncompressed, so egress asks intercepted upstreams for `Accept-Encoding: identity`.

use std::pin::Pin;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body as HttpBody, Frame};
use sidecars_common::body::{Body, BoxError};

/// The replacement text.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// The credential values of one host, compiled for searching.
#[derive(Debug)]
pub struct Redactor {
    ac: AhoCorasick,
    longest: usize,
}

impl Redactor {
    /// `None` when there is nothing to redact.
    pub fn new(values: &[String]) -> Option<Redactor> {
        let values: Vec<&str> = values
            .iter()
            .map(String::as_str)
            .filter(|v| v.len() >= 4)
            .collect();
        if values.is_empty() {
            return None;
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&values)
            .ok()?;
        let longest = values.iter().map(|v| v.len()).max().unwrap_or(1);
        Some(Redactor { ac, longest })
    }

    /// Replace every value in `data`.
    pub fn replace_all(&self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        self.ac.replace_all_with_bytes(data, &mut out, |_, _, dst| {
            dst.extend_from_slice(REDACTED);
            true
        });
        out
    }

    /// Redact header values in place.
    pub fn headers(&self, headers: &mut HeaderMap) {
        for value in headers.values_mut() {
            if self.ac.is_match(value.as_bytes()) {
                if let Ok(v) = HeaderValue::from_bytes(&self.replace_all(value.as_bytes())) {
                    *value = v;
                }
            }
        }
    }

    /// Wrap a response body so every value is replaced as it streams.
    pub fn body(self: std::sync::Arc<Self>, inner: Body) -> Body {
        use http_body_util::BodyExt;
        RedactingBody {
            inner,
            redactor: self,
            held: BytesMut::new(),
            done: false,
        }
        .boxed()
    }

    /// Process `held` (old tail + new chunk): return what is safe to emit and keep the tail that
    /// could still be the start of a value.
    fn step(&self, held: &mut BytesMut, last: bool) -> Bytes {
        let safe = if last {
            held.len()
        } else {
            held.len().saturating_sub(self.longest - 1)
        };
        let mut out = Vec::with_capacity(held.len());
        let mut pos = 0;
        for m in self.ac.find_iter(&held[..]) {
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&held[pos..m.start()]);
            out.extend_from_slice(REDACTED);
            pos = m.end();
        }
        let keep_from = pos.max(safe);
        out.extend_from_slice(&held[pos..keep_from]);
        let _ = held.split_to(keep_from);
        Bytes::from(out)
    }
}

struct RedactingBody {
    inner: Body,
    redactor: std::sync::Arc<Redactor>,
    held: BytesMut,
    done: bool,
}

impl HttpBody for RedactingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.redactor.step(&mut this.held, true);
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        let out = this.redactor.step(&mut this.held, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(mut frame) => {
                        if let Some(trailers) = frame.trailers_mut() {
                            this.redactor.headers(trailers);
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::Arc;

    async fn run(values: &[&str], chunks: Vec<&'static [u8]>) -> Vec<u8> {
        let r = Arc::new(
            Redactor::new(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
        );
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c)))),
        );
        let body: Body = StreamBody::new(stream).boxed();
        r.body(body).collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn values_split_across_chunks_are_replaced() {
        let out = run(
            &["supersecret"],
            vec![b"a super", b"sec", b"ret b supersecret", b"c super"],
        )
        .await;
        assert_eq!(out, b"a [REDACTED] b [REDACTED]c super");
        let out = run(
            &["tok-1234"],
            vec![b"t", b"o", b"k", b"-", b"1", b"2", b"3", b"4"],
        )
        .await;
        assert_eq!(out, b"[REDACTED]");
        let out = run(&["abcd"], vec![b"no match here"]).await;
        assert_eq!(out, b"no match here");
    }

    #[test]
    fn headers_are_redacted() {
        let r = Redactor::new(&["tok-1234".to_string()]).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-echo", "Bearer tok-1234".parse().unwrap());
        r.headers(&mut h);
        assert_eq!(h["x-echo"], "Bearer [REDACTED]");
    }
}
