//! Init's own log lines (`init | ...` or JSON) through `tracing`, and the line formats shared
//! with the daemon log relay.
//!
//! Why a custom layer: init's lines must come out in exactly the same shape as the daemons'
//! (`<name> | <msg>`, or one JSON object with `ts`, `daemon`, `stream`, `msg`) and through the
//! same writer as the daemons' stderr, so they can never interleave with a daemon's line.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::output::{Sink, Stream};

/// Environment variable selecting the log format (`json` or anything else for text).
pub const FORMAT_ENV: &str = "SIDECARS_LOG_FORMAT";

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<name> | <line>`; bytes pass through unchanged.
    Text,
    /// One JSON object per line; non-UTF-8 bytes are replaced (U+FFFD).
    Json,
}

impl Format {
    /// Reads [`FORMAT_ENV`].
    pub fn from_env() -> Format {
        match std::env::var(FORMAT_ENV) {
            Ok(v) if v.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: &'a str,
    daemon: &'a str,
    stream: &'a str,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
}

/// Appends one JSON log line (with its newline) to `out`.
pub fn push_json_line(
    out: &mut Vec<u8>,
    daemon: &str,
    stream: Stream,
    msg: &[u8],
    level: Option<&str>,
    partial: bool,
) {
    let ts = now_rfc3339();
    let msg = String::from_utf8_lossy(msg);
    let line = JsonLine {
        ts: &ts,
        daemon,
        stream: stream.as_str(),
        msg: &msg,
        level,
        partial,
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (no time-zone database needed).
pub fn now_rfc3339() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The `tracing` layer that writes init's own events to init's stderr writer.
pub struct InitLayer {
    sink: Sink,
    format: Format,
    max_level: Level,
}

impl InitLayer {
    /// A layer writing to `sink` in `format`, dropping events more verbose than `max_level`.
    pub fn new(sink: Sink, format: Format, max_level: Level) -> Self {
        InitLayer {
            sink,
            format,
            max_level,
        }
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for InitLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *meta.level() <= self.max_level
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        let mut line = Vec::with_capacity(v.0.len() + 16);
        match self.format {
            Format::Text => {
                line.extend_from_slice(b"init | ");
                match level {
                    Level::ERROR => line.extend_from_slice(b"error: "),
                    Level::WARN => line.extend_from_slice(b"warning: "),
                    _ => {}
                }
                line.extend_from_slice(v.0.as_bytes());
                line.push(b'\n');
            }
            Format::Json => {
                let lvl = level.as_str().to_ascii_lowercase();
                push_json_line(
                    &mut line,
                    "init",
                    Stream::Stderr,
                    v.0.as_bytes(),
                    Some(&lvl),
                    false,
                );
            }
        }
        self.sink.send_now(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400 + 3661, 5), "2000-02-29T01:01:01.005Z");
        assert_eq!(rfc3339(1_704_067_199, 999), "2023-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_line_is_lossy_and_marks_partial() {
        let mut out = Vec::new();
        push_json_line(&mut out, "a", Stream::Stdout, b"x\xffy\"", None, true);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msg"], "x\u{fffd}y\"");
        assert_eq!(v["daemon"], "a");
        assert_eq!(v["stream"], "stdout");
        assert_eq!(v["partial"], true);
        assert!(v.get("level").is_none());
        assert!(out.ends_with(b"\n"));
    }
}
