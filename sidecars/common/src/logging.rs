//! `tracing` setup shared by every daemon.
//!
//! Under sidecar-init each line is prefixed with the daemon's name, so the default text format
//! leaves out the target and colours. `SIDECARS_LOG_FORMAT=json` switches to one JSON object a
//! line for log shippers. The level comes from `SIDECARS_LOG` (an `EnvFilter` string), default
//! `info`.

use tracing_subscriber::EnvFilter;

/// The environment variable that selects JSON logs (`json`) over text (anything else).
pub const FORMAT_ENV: &str = "SIDECARS_LOG_FORMAT";
/// The environment variable holding the filter directives (e.g. `debug`, `pack_exec=trace`).
pub const FILTER_ENV: &str = "SIDECARS_LOG";

/// Install the global subscriber. Safe to call more than once (later calls are no-ops), which
/// lets tests start several daemons in one process.
pub fn init() {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(FORMAT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    // Err only means a subscriber is already installed (second daemon in a test process).
    let _ = result;
}
