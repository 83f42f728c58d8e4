//! Bounded capture of a handler's stderr: the last 4 KiB for the error message, and the lines
//! to the log (tagged with pack and call id) up to a per-call budget, so a chatty or hostile
//! handler can fill neither memory nor the log.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stderr kept for `handler_failed` messages.
pub const TAIL_BYTES: usize = 4096;
/// Bytes of stderr logged per call; the rest is counted, not logged.
const LOG_BUDGET: usize = 16 * 1024;
/// Longest logged line; longer lines are cut.
const MAX_LINE: usize = 1024;

/// What was kept of a handler's stderr.
#[derive(Debug, Default)]
pub struct Captured {
    tail: Vec<u8>,
}

impl Captured {
    /// The last [`TAIL_BYTES`] of stderr as text (lossy UTF-8, trimmed).
    pub fn tail(&self) -> String {
        let start = self.tail.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&self.tail[start..])
            .trim()
            .to_string()
    }
}

/// Read `stream` to EOF, logging lines and keeping the tail.
pub async fn capture<R: AsyncRead + Unpin>(mut stream: R, pack: &str, call_id: &str) -> Captured {
    let mut captured = Captured::default();
    let mut chunk = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut logged = 0usize;
    let mut dropped = 0usize;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &chunk[..n];
        captured.tail.extend_from_slice(data);
        if captured.tail.len() > 2 * TAIL_BYTES {
            let cut = captured.tail.len() - TAIL_BYTES;
            captured.tail.drain(..cut);
        }
        for &b in data {
            if b == b'\n' {
                emit(&mut line, &mut logged, &mut dropped, pack, call_id);
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut logged, &mut dropped, pack, call_id);
    }
    if dropped > 0 {
        tracing::info!(
            pack,
            call_id,
            dropped_bytes = dropped,
            "handler stderr over the log budget; not logged"
        );
    }
    captured
}

fn emit(line: &mut Vec<u8>, logged: &mut usize, dropped: &mut usize, pack: &str, call_id: &str) {
    if *logged + line.len() <= LOG_BUDGET {
        *logged += line.len();
        tracing::info!(pack, call_id, stderr = %String::from_utf8_lossy(line), "handler stderr");
    } else {
        *dropped += line.len() + 1;
    }
    line.clear();
}
