//! Where `up`'s time goes: one info line per phase, under the target `control_plane::timing`
//! (`RUST_LOG=control_plane::timing=info` shows them; `bench/up.sh` reads them).

use std::time::Instant;

/// The tracing target of the phase lines.
pub const TARGET: &str = "control_plane::timing";

/// Log that `phase` took from `since` until now; returns now, for the next phase.
pub fn phase(phase: &str, since: Instant) -> Instant {
    let now = Instant::now();
    tracing::info!(
        target: TARGET,
        phase,
        ms = format!("{:.1}", (now - since).as_secs_f64() * 1000.0),
        "timing"
    );
    now
}
