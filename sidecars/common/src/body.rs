//! Response-body helpers and size-limited request-body reading.
//!
//! All daemons share one boxed body type so handlers can return a fixed JSON answer, a stream
//! from a child process or a proxied upstream body through the same signature.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use serde::Serialize;

/// Boxed error type carried by response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one response body type every daemon's handlers return.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response with `status`. Serialising our own types cannot fail in practice; if it
/// does, the client gets a 500 with a plain message rather than a panic.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            let mut resp = Response::new(full(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(err) => {
            tracing::error!(%err, "failed to serialise a JSON response");
            let mut resp = Response::new(full("internal error\n"));
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadBodyError {
    /// The body is larger than the limit; the caller answers 413.
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error("failed to read the request body: {0}")]
    Io(BoxError),
}

/// Read a whole body, refusing (without buffering further) once it exceeds `limit` bytes.
/// A declared `Content-Length` over the limit is refused before reading anything.
pub async fn read_limited<B>(
    headers: &http::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ReadBodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ReadBodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            if err.is::<http_body_util::LengthLimitError>() {
                Err(ReadBodyError::TooLarge { limit })
            } else {
                Err(ReadBodyError::Io(err))
            }
        }
    }
}
