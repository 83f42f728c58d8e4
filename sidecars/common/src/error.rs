//! The JSON error body every daemon answers with.
//!
//! One shape everywhere — `{"error": "<code>", "message": "<sentence>", "request_id": "<id>"}` —
//! so the control plane and agents can branch on `error` and show `message` to a person, and an
//! operator can find the matching log line by `request_id`.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{json, Body};

/// An error answer: HTTP status, a machine-readable code from the daemon's closed set, and a
/// human sentence that says what went wrong (never a secret value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status to answer with.
    pub status: StatusCode,
    /// Stable, machine-readable code, e.g. `invalid_input`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for a `Retry-After` header (for 429/503 answers).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    /// A new error with no `Retry-After`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Add a `Retry-After` hint in seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Render as a response carrying `request_id`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut resp = json(
            self.status,
            &ErrorBody {
                error: self.code,
                message: &self.message,
                request_id,
            },
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
