//! The log line of a refused query, and its rate limit.
//!
//! One line at info per refused query:
//!
//! ```text
//! INFO refused a name that is not the bottle's rule="not-a-bottle-name" proto="udp" qtype=TXT qclass=IN name_len=51 labels=4 name_tail="attacker.example"
//! ```
//!
//! The rest of the name is never logged: it is where exfiltrated data sits
//! (`<hex-secret>.attacker.example`), and the project's rule is that no log line carries a
//! secret. See [`crate::names::log_tail`] for how the last two labels are shown.
//!
//! A flood of refused queries (an agent trying to push data out name by name) must not
//! become a flood of log lines: at most [`LINES_PER_SECOND`] are written a second; the
//! number left out is reported in one line with the next one written.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::message::Transport;
use crate::names;

/// The `rule` field of a refused query's log line.
pub const RULE: &str = "not-a-bottle-name";
/// Most refused-query lines written per second.
pub const LINES_PER_SECOND: u32 = 50;

/// Counts refused queries and writes their log lines, rate-limited.
#[derive(Debug)]
pub struct Refusals {
    window: Mutex<Window>,
    per_second: u32,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals::with_limit(LINES_PER_SECOND)
    }
}

impl Refusals {
    /// A log writing at most `per_second` lines a second.
    pub fn with_limit(per_second: u32) -> Refusals {
        Refusals {
            window: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
            per_second,
        }
    }

    /// Record one refused query, logging it unless over the rate limit.
    pub fn refused(&self, name: &Name, qtype: RecordType, qclass: DNSClass, transport: Transport) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::info!(
                rule = RULE,
                suppressed,
                "refused queries not logged (over {} lines a second)",
                self.per_second
            );
        }
        tracing::info!(
            rule = RULE,
            proto = transport.as_str(),
            qtype = %qtype,
            qclass = %qclass,
            name_len = names::presentation_len(name),
            labels = names::label_count(name),
            name_tail = %names::log_tail(name),
            "refused a name that is not the bottle's"
        );
    }

    /// `Some(lines suppressed since the last written one)` if a line may be written now.
    fn admit(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere while counting; the counts are still
        // usable.
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.written = 0;
        }
        if w.written >= self.per_second {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_lines_are_counted_and_reported_later() {
        let r = Refusals::with_limit(3);
        let t0 = Instant::now();
        assert_eq!(r.admit(t0), Some(0));
        assert_eq!(r.admit(t0), Some(0));
        assert_eq!(r.admit(t0), Some(0));
        assert_eq!(r.admit(t0), None);
        assert_eq!(r.admit(t0 + Duration::from_millis(900)), None);
        assert_eq!(r.admit(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(r.admit(t0 + Duration::from_millis(1001)), Some(0));
    }
}
