//! The supervision state machine: `handle(event, now) -> Vec<Action>`.
//!
//! Why a pure state machine: every policy decision (start order, readiness gates, restart and
//! backoff, crash loops, shutdown order, signal routing, the exit code) lives here and is
//! unit-tested without forking a single process. [`crate::driver`] turns actions into syscalls
//! and timers and feeds what happened back in as events; it makes no decisions of its own.
//!
//! Daemon life cycle:
//!
//! ```text
//! Waiting --deps open--> Starting --Spawned--> Running --exit--> Backoff --due--> Starting
//!                                                 |  \--exit, no restart--> Exited
//!                                                 |  \--crash loop--------> Failed
//!                                                 \--shutdown: SIGTERM--> Stopping --exit--> Stopped
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::config::{OnReadyTimeout, RestartPolicy};
use crate::control::DaemonStatus;
use crate::notify::EventKind;
use crate::reaper::ExitStatus;
use crate::signals::SHUTDOWN;
use crate::validate::{DaemonPlan, Plan};

/// First restart delay; doubles on each consecutive restart.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A daemon that ran this long before exiting starts its backoff from the beginning again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Something that happened, fed to [`Supervisor::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Init is up: start what can start.
    Start,
    /// A daemon's process was started.
    Spawned {
        /// Daemon index.
        daemon: usize,
        /// Its pid (and process group id).
        pid: i32,
    },
    /// A daemon's process could not be started (the error names the path).
    SpawnFailed {
        /// Daemon index.
        daemon: usize,
        /// What failed, for the log.
        error: String,
        /// Exit code it counts as: 127 not found, 126 not executable.
        code: i32,
    },
    /// The reaper collected a process (a daemon or an orphan).
    Exited {
        /// Its pid.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
    },
    /// A daemon's ready probe passed.
    Ready {
        /// Daemon index.
        daemon: usize,
        /// Spawn generation the probe was started for.
        gen: u64,
    },
    /// A daemon's `ready_timeout_ms` since its first start ran out.
    ReadyDeadline {
        /// Daemon index.
        daemon: usize,
    },
    /// A daemon's restart backoff ran out.
    RestartDue {
        /// Daemon index.
        daemon: usize,
        /// Generation the restart was scheduled for.
        gen: u64,
    },
    /// Init received a signal (other than SIGCHLD, which becomes `Exited` events).
    Signal(Signal),
    /// A stopping daemon's grace ran out.
    GraceExpired {
        /// Daemon index.
        daemon: usize,
        /// Generation it was stopped in.
        gen: u64,
    },
    /// The whole-shutdown budget ran out.
    ShutdownDeadline,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start daemon `daemon` and report `Spawned`/`SpawnFailed`.
    Spawn {
        /// Daemon index.
        daemon: usize,
    },
    /// Probe daemon `daemon` until it is ready (report `Ready`) or `within` passes.
    Probe {
        /// Daemon index.
        daemon: usize,
        /// Generation to report with `Ready`.
        gen: u64,
        /// Give up after this long.
        within: Duration,
    },
    /// Feed `event` back after `after`.
    Timer {
        /// Delay.
        after: Duration,
        /// Event to deliver.
        event: Event,
    },
    /// `kill(pid, signal)`; a negative pid is a process group.
    Kill {
        /// Target (negative = group).
        pid: i32,
        /// Signal.
        signal: Signal,
    },
    /// Notify the operator.
    Notify {
        /// Daemon index.
        daemon: usize,
        /// What happened.
        kind: EventKind,
        /// How it ended, for exits.
        status: Option<ExitStatus>,
        /// Restarts so far.
        restarts: u32,
    },
    /// Everything is done: exit with this code.
    Exit(i32),
}

/// A daemon's state, as shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for its dependencies to be ready.
    Waiting,
    /// Spawn requested.
    Starting,
    /// Its process is running.
    Running,
    /// Exited; will be restarted after a delay.
    Backoff,
    /// Exited on its own and will not be restarted.
    Exited,
    /// Given up on (crash loop, not ready in time, dependency failed).
    Failed,
    /// SIGTERM sent at shutdown, waiting for it to exit.
    Stopping,
    /// Stopped by shutdown.
    Stopped,
}

impl State {
    /// Name shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "backoff",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

/// Whether dependents may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Pending,
    Open,
    Broken,
}

#[derive(Debug)]
struct Daemon {
    spec: DaemonPlan,
    state: State,
    pid: Option<i32>,
    gen: u64,
    restarts: u32,
    backoff_step: u32,
    recent_restarts: VecDeque<Instant>,
    started_at: Option<Instant>,
    last_exit: Option<ExitStatus>,
    ready: bool,
    gate: Gate,
    deadline_armed: bool,
    term_sent: bool,
    final_code: i32,
    reason: Option<String>,
}

/// The supervisor's whole state.
#[derive(Debug)]
pub struct Supervisor {
    daemons: Vec<Daemon>,
    grace: Duration,
    max_restarts: u32,
    crash_window: Duration,
    shutting_down: bool,
    done: bool,
}

impl Supervisor {
    /// A supervisor for `plan`, nothing started yet.
    pub fn new(plan: &Plan) -> Self {
        Supervisor {
            daemons: plan
                .daemons
                .iter()
                .map(|spec| Daemon {
                    spec: spec.clone(),
                    state: State::Waiting,
                    pid: None,
                    gen: 0,
                    restarts: 0,
                    backoff_step: 0,
                    recent_restarts: VecDeque::new(),
                    started_at: None,
                    last_exit: None,
                    ready: false,
                    gate: Gate::Pending,
                    deadline_armed: false,
                    term_sent: false,
                    final_code: 0,
                    reason: None,
                })
                .collect(),
            grace: plan.grace,
            max_restarts: plan.max_restarts,
            crash_window: plan.crash_window,
            shutting_down: false,
            done: false,
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// The state of daemon `i` (tests and status).
    pub fn state(&self, i: usize) -> State {
        self.daemons[i].state
    }

    /// Applies one event and returns what to do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut acts = Vec::new();
        if self.done {
            return acts;
        }
        match event {
            Event::Start => {}
            Event::Spawned { daemon, pid } => self.on_spawned(daemon, pid, now, &mut acts),
            Event::SpawnFailed {
                daemon,
                error,
                code,
            } => {
                tracing::error!("{}: cannot start: {error}", self.daemons[daemon].spec.name);
                self.on_own_exit(daemon, ExitStatus::Code(code), now, &mut acts);
            }
            Event::Exited { pid, status } => self.on_exited(pid, status, now, &mut acts),
            Event::Ready { daemon, gen } => {
                let d = &mut self.daemons[daemon];
                if d.gen == gen && d.pid.is_some() && !d.ready {
                    d.ready = true;
                    if d.gate == Gate::Pending {
                        d.gate = Gate::Open;
                    }
                    let probe = d
                        .spec
                        .probe
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    tracing::info!("{} is ready ({probe})", d.spec.name);
                }
            }
            Event::ReadyDeadline { daemon } => {
                let d = &self.daemons[daemon];
                if d.gate == Gate::Pending {
                    let probe = d
                        .spec
                        .probe
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let why = format!(
                        "not ready after {} ms (probed {probe})",
                        d.spec.ready_timeout.as_millis()
                    );
                    self.give_up_waiting(daemon, &why, now, &mut acts);
                }
            }
            Event::RestartDue { daemon, gen } => {
                let d = &mut self.daemons[daemon];
                if d.state == State::Backoff && d.gen == gen && !self.shutting_down {
                    d.state = State::Starting;
                    acts.push(Action::Spawn { daemon });
                }
            }
            Event::Signal(sig) => self.on_signal(sig, now, &mut acts),
            Event::GraceExpired { daemon, gen } => {
                let d = &self.daemons[daemon];
                if let (Some(pid), true) = (d.pid, d.gen == gen) {
                    tracing::warn!(
                        "{} did not stop within {} ms: SIGKILL to its process group",
                        d.spec.name,
                        d.spec.grace.as_millis()
                    );
                    acts.push(Action::Kill {
                        pid: -pid,
                        signal: Signal::SIGKILL,
                    });
                }
            }
            Event::ShutdownDeadline => {
                for d in &self.daemons {
                    if let Some(pid) = d.pid {
                        tracing::warn!(
                            "shutdown budget of {} ms spent: SIGKILL to {}'s process group",
                            self.grace.as_millis(),
                            d.spec.name
                        );
                        acts.push(Action::Kill {
                            pid: -pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
            }
        }
        self.advance(now, &mut acts);
        acts
    }

    fn on_spawned(&mut self, i: usize, pid: i32, now: Instant, acts: &mut Vec<Action>) {
        let d = &mut self.daemons[i];
        d.pid = Some(pid);
        d.gen += 1;
        d.state = State::Running;
        d.started_at = Some(now);
        d.ready = d.spec.probe.is_none();
        d.term_sent = false;
        tracing::info!(
            "started {} (pid {pid}): {}",
            d.spec.name,
            d.spec.argv.first().map(String::as_str).unwrap_or("")
        );
        acts.push(Action::Notify {
            daemon: i,
            kind: EventKind::Started,
            status: None,
            restarts: d.restarts,
        });
        if d.spec.probe.is_some() {
            acts.push(Action::Probe {
                daemon: i,
                gen: d.gen,
                within: d.spec.ready_timeout,
            });
        } else if d.gate == Gate::Pending {
            d.gate = Gate::Open;
        }
    }

    fn on_exited(&mut self, pid: i32, status: ExitStatus, now: Instant, acts: &mut Vec<Action>) {
        let Some(i) = self.daemons.iter().position(|d| d.pid == Some(pid)) else {
            tracing::debug!("reaped orphan pid {pid} ({status})");
            return;
        };
        let d = &mut self.daemons[i];
        d.pid = None;
        d.ready = false;
        // The process group is the daemon's unit: leftovers of a dead leader are killed.
        acts.push(Action::Kill {
            pid: -pid,
            signal: Signal::SIGKILL,
        });
        if d.state == State::Failed {
            tracing::info!("{} (failed) stopped: {status}", d.spec.name);
            return;
        }
        if d.term_sent || self.shutting_down {
            tracing::info!("{} stopped: {status}", d.spec.name);
            d.state = State::Stopped;
            d.final_code = 0;
            return;
        }
        self.on_own_exit(i, status, now, acts);
    }

    /// A daemon ended (or could not start) on its own: restart, leave exited, or fail.
    fn on_own_exit(&mut self, i: usize, status: ExitStatus, now: Instant, acts: &mut Vec<Action>) {
        let (max_restarts, window) = (self.max_restarts, self.crash_window);
        let d = &mut self.daemons[i];
        d.last_exit = Some(status);
        tracing::info!("{} exited: {status}", d.spec.name);
        acts.push(Action::Notify {
            daemon: i,
            kind: EventKind::Exited,
            status: Some(status),
            restarts: d.restarts,
        });
        let restart = match d.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => status != ExitStatus::Code(0),
            RestartPolicy::Never => false,
        };
        if !restart || self.shutting_down {
            d.state = State::Exited;
            d.final_code = status.code();
            if d.gate == Gate::Pending {
                self.give_up_waiting(i, "exited before it was ready", now, acts);
            }
            return;
        }
        while d
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            d.recent_restarts.pop_front();
        }
        if d.recent_restarts.len() >= max_restarts as usize {
            let reason = format!(
                "crash loop: {} restarts within {} ms, last exit {status}",
                d.recent_restarts.len(),
                window.as_millis()
            );
            tracing::error!("{} failed ({reason}); not restarting it", d.spec.name);
            d.reason = Some(reason);
            d.state = State::Failed;
            d.final_code = status.code().max(1);
            acts.push(Action::Notify {
                daemon: i,
                kind: EventKind::Failed,
                status: Some(status),
                restarts: d.restarts,
            });
            if d.gate == Gate::Pending {
                self.give_up_waiting(i, "failed before it was ready", now, acts);
            }
            return;
        }
        if d.started_at
            .is_some_and(|s| now.saturating_duration_since(s) >= STABLE_AFTER)
        {
            d.backoff_step = 0;
        }
        let delay = BACKOFF_START
            .saturating_mul(1u32 << d.backoff_step.min(20))
            .min(BACKOFF_MAX);
        d.backoff_step += 1;
        d.restarts += 1;
        d.recent_restarts.push_back(now);
        d.state = State::Backoff;
        d.gen += 1;
        tracing::info!(
            "restarting {} in {} ms (restart {})",
            d.spec.name,
            delay.as_millis(),
            d.restarts
        );
        acts.push(Action::Notify {
            daemon: i,
            kind: EventKind::Restarting,
            status: Some(status),
            restarts: d.restarts,
        });
        acts.push(Action::Timer {
            after: delay,
            event: Event::RestartDue {
                daemon: i,
                gen: d.gen,
            },
        });
    }

    /// Dependents of `i` stop waiting for it: they start anyway, or `i` (and so they) fail.
    fn give_up_waiting(&mut self, i: usize, why: &str, _now: Instant, acts: &mut Vec<Action>) {
        let has_dependents = !self.daemons[i].spec.dependents.is_empty();
        let d = &mut self.daemons[i];
        match d.spec.on_ready_timeout {
            OnReadyTimeout::StartAnyway => {
                d.gate = Gate::Open;
                if has_dependents {
                    tracing::warn!("{} {why}; starting its dependents anyway", d.spec.name);
                } else {
                    tracing::warn!("{} {why}", d.spec.name);
                }
            }
            OnReadyTimeout::Fail => {
                d.gate = Gate::Broken;
                tracing::error!(
                    "{} {why}; marking it failed (on_ready_timeout: fail)",
                    d.spec.name
                );
                if d.state != State::Failed {
                    d.state = State::Failed;
                    d.reason = Some(why.to_string());
                    d.final_code = d.last_exit.map(|s| s.code()).unwrap_or(1).max(1);
                    acts.push(Action::Notify {
                        daemon: i,
                        kind: EventKind::Failed,
                        status: d.last_exit,
                        restarts: d.restarts,
                    });
                }
                if let Some(pid) = d.pid {
                    d.term_sent = true;
                    acts.push(Action::Kill {
                        pid: -pid,
                        signal: Signal::SIGTERM,
                    });
                    acts.push(Action::Timer {
                        after: d.spec.grace,
                        event: Event::GraceExpired {
                            daemon: i,
                            gen: d.gen,
                        },
                    });
                }
            }
        }
    }

    fn on_signal(&mut self, sig: Signal, now: Instant, acts: &mut Vec<Action>) {
        if SHUTDOWN.contains(&sig) {
            if self.shutting_down {
                tracing::warn!(
                    "{} again during shutdown: SIGKILL to every daemon",
                    sig.as_str()
                );
                for d in &self.daemons {
                    if let Some(pid) = d.pid {
                        acts.push(Action::Kill {
                            pid: -pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
                return;
            }
            self.start_shutdown(sig, now, acts);
            return;
        }
        let mut told = Vec::new();
        for d in &self.daemons {
            let Some(pid) = d.pid else { continue };
            let send = if sig == Signal::SIGHUP {
                d.spec.reload_signal
            } else {
                d.spec.forward_signals.contains(&sig).then_some(sig)
            };
            if let Some(s) = send {
                acts.push(Action::Kill { pid, signal: s });
                told.push(format!("{} ({})", d.spec.name, s.as_str()));
            }
        }
        if told.is_empty() {
            tracing::info!("{}: no running daemon takes it; ignored", sig.as_str());
        } else {
            tracing::info!("{}: sent to {}", sig.as_str(), told.join(", "));
        }
    }

    fn start_shutdown(&mut self, sig: Signal, _now: Instant, acts: &mut Vec<Action>) {
        self.shutting_down = true;
        tracing::info!(
            "{}: stopping daemons in reverse dependency order (budget {} ms)",
            sig.as_str(),
            self.grace.as_millis()
        );
        for d in &mut self.daemons {
            match d.state {
                State::Waiting | State::Starting => d.state = State::Stopped,
                State::Backoff => {
                    // It crashed on its own before shutdown and had not recovered.
                    d.state = State::Stopped;
                    d.final_code = d.last_exit.map(|s| s.code()).unwrap_or(0);
                }
                _ => {}
            }
        }
        acts.push(Action::Timer {
            after: self.grace,
            event: Event::ShutdownDeadline,
        });
    }

    /// Starts what may start, stops what may stop, and exits when nothing is left.
    fn advance(&mut self, now: Instant, acts: &mut Vec<Action>) {
        if !self.shutting_down {
            loop {
                let mut changed = false;
                for i in 0..self.daemons.len() {
                    if self.daemons[i].state != State::Waiting {
                        continue;
                    }
                    let gates: Vec<(Gate, usize)> = self.daemons[i]
                        .spec
                        .deps
                        .iter()
                        .map(|&k| (self.daemons[k].gate, k))
                        .collect();
                    if let Some(&(_, k)) = gates.iter().find(|(g, _)| *g == Gate::Broken) {
                        let why = format!("dependency {} failed", self.daemons[k].spec.name);
                        let d = &mut self.daemons[i];
                        tracing::error!("{} not started: {why}", d.spec.name);
                        d.state = State::Failed;
                        d.reason = Some(why);
                        d.final_code = 1;
                        d.gate = Gate::Broken;
                        acts.push(Action::Notify {
                            daemon: i,
                            kind: EventKind::Failed,
                            status: None,
                            restarts: 0,
                        });
                        changed = true;
                    } else if gates.iter().all(|(g, _)| *g == Gate::Open) {
                        let d = &mut self.daemons[i];
                        d.state = State::Starting;
                        if d.spec.probe.is_some() && !d.deadline_armed {
                            d.deadline_armed = true;
                            acts.push(Action::Timer {
                                after: d.spec.ready_timeout,
                                event: Event::ReadyDeadline { daemon: i },
                            });
                        }
                        acts.push(Action::Spawn { daemon: i });
                    }
                }
                if !changed {
                    break;
                }
            }
        } else {
            for i in 0..self.daemons.len() {
                let d = &self.daemons[i];
                let Some(pid) = d.pid else { continue };
                if d.term_sent {
                    continue;
                }
                let dependents_alive = d
                    .spec
                    .dependents
                    .iter()
                    .any(|&k| self.daemons[k].pid.is_some());
                if dependents_alive {
                    continue;
                }
                let d = &mut self.daemons[i];
                d.term_sent = true;
                d.state = State::Stopping;
                tracing::info!("stopping {} (SIGTERM to process group {pid})", d.spec.name);
                acts.push(Action::Kill {
                    pid: -pid,
                    signal: Signal::SIGTERM,
                });
                acts.push(Action::Timer {
                    after: d.spec.grace,
                    event: Event::GraceExpired {
                        daemon: i,
                        gen: d.gen,
                    },
                });
            }
        }
        let _ = now;
        let all_done = self.daemons.iter().all(|d| {
            d.pid.is_none() && matches!(d.state, State::Exited | State::Failed | State::Stopped)
        });
        if all_done {
            self.done = true;
            let code = self.exit_code();
            if self.shutting_down {
                tracing::info!("all daemons stopped; exiting with code {code}");
            } else {
                tracing::info!("no daemon left running or to restart; exiting with code {code}");
            }
            acts.push(Action::Exit(code));
        }
    }

    /// The worst final code over all daemons (0 for those our shutdown stopped).
    pub fn exit_code(&self) -> i32 {
        self.daemons.iter().map(|d| d.final_code).max().unwrap_or(0)
    }

    /// Per-daemon status for `status` and `health`.
    pub fn snapshot(&self, now: Instant) -> Vec<DaemonStatus> {
        self.daemons
            .iter()
            .map(|d| DaemonStatus {
                name: d.spec.name.clone(),
                state: d.state,
                pid: d.pid,
                restarts: d.restarts,
                last_exit: d.last_exit.map(|s| s.to_string()),
                uptime_ms: d
                    .pid
                    .and(d.started_at)
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                ready: d.ready,
                probe: d.spec.probe.as_ref().map(|p| p.to_string()),
                reason: d.reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::validate::plan;

    fn sup(json: &str) -> Supervisor {
        let c = parse(json.as_bytes()).unwrap();
        Supervisor::new(&plan(&c, None).unwrap())
    }

    fn spawns(acts: &[Action]) -> Vec<usize> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Spawn { daemon } => Some(*daemon),
                _ => None,
            })
            .collect()
    }

    fn kills(acts: &[Action]) -> Vec<(i32, Signal)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Kill { pid, signal } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }

    fn timers(acts: &[Action]) -> Vec<(Duration, Event)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Timer { after, event } => Some((*after, event.clone())),
                _ => None,
            })
            .collect()
    }

    fn exit(acts: &[Action]) -> Option<i32> {
        acts.iter().find_map(|a| match a {
            Action::Exit(c) => Some(*c),
            _ => None,
        })
    }

    const CHAIN: &str = r#"{"grace_ms": 8000, "daemons": [
        {"name": "egress", "argv": ["x"], "ready": {"tcp": 9099}, "grace_ms": 1000},
        {"name": "pipelock", "argv": ["x"], "depends_on": ["egress"]},
        {"name": "solo", "argv": ["x"]}
    ]}"#;

    #[test]
    fn starts_in_dependency_order_after_readiness() {
        let t = Instant::now();
        let mut s = sup(CHAIN);
        let a = s.handle(Event::Start, t);
        assert_eq!(spawns(&a), vec![0, 2], "no-deps daemons start together");
        assert!(timers(&a).contains(&(Duration::from_secs(30), Event::ReadyDeadline { daemon: 0 })));
        let a = s.handle(Event::Spawned { daemon: 0, pid: 10 }, t);
        assert!(a.contains(&Action::Probe {
            daemon: 0,
            gen: 1,
            within: Duration::from_secs(30)
        }));
        assert!(spawns(&a).is_empty(), "pipelock waits for egress's probe");
        s.handle(Event::Spawned { daemon: 2, pid: 12 }, t);
        // A stale probe result (older generation) does not count.
        assert!(spawns(&s.handle(Event::Ready { daemon: 0, gen: 0 }, t)).is_empty());
        let a = s.handle(Event::Ready { daemon: 0, gen: 1 }, t);
        assert_eq!(spawns(&a), vec![1]);
    }

    #[test]
    fn ready_timeout_starts_dependents_anyway_or_fails_them() {
        let t = Instant::now();
        let mut s = sup(CHAIN);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 10 }, t);
        let a = s.handle(Event::ReadyDeadline { daemon: 0 }, t);
        assert_eq!(spawns(&a), vec![1]);

        let mut s = sup(&CHAIN.replace(
            r#""grace_ms": 1000}"#,
            r#""grace_ms": 1000, "on_ready_timeout": "fail"}"#,
        ));
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 10 }, t);
        let a = s.handle(Event::ReadyDeadline { daemon: 0 }, t);
        assert!(spawns(&a).is_empty());
        assert_eq!(kills(&a), vec![(-10, Signal::SIGTERM)]);
        assert_eq!(s.state(0), State::Failed);
        assert_eq!(s.state(1), State::Failed);
        let a = s.handle(Event::GraceExpired { daemon: 0, gen: 1 }, t);
        assert_eq!(kills(&a), vec![(-10, Signal::SIGKILL)]);
    }

    #[test]
    fn restart_backoff_doubles_then_crash_loop_fails() {
        let t = Instant::now();
        let mut s = sup(r#"{"crash_loop": {"max_restarts": 3, "window_ms": 60000},
            "daemons": [{"name": "c", "argv": ["x"], "restart": "on-failure"},
                        {"name": "ok", "argv": ["x"]}]}"#);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 1, pid: 99 }, t);
        let mut pid = 10;
        let mut delays = Vec::new();
        for k in 0..3 {
            s.handle(Event::Spawned { daemon: 0, pid }, t);
            let a = s.handle(
                Event::Exited {
                    pid,
                    status: ExitStatus::Code(1),
                },
                t + Duration::from_millis(k),
            );
            let (d, ev) = timers(&a)[0].clone();
            delays.push(d.as_millis());
            assert_eq!(s.state(0), State::Backoff);
            assert_eq!(spawns(&s.handle(ev, t)), vec![0]);
            pid += 1;
        }
        assert_eq!(delays, vec![100, 200, 400]);
        s.handle(Event::Spawned { daemon: 0, pid }, t);
        let a = s.handle(
            Event::Exited {
                pid,
                status: ExitStatus::Code(1),
            },
            t,
        );
        assert_eq!(s.state(0), State::Failed);
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Notify {
                kind: EventKind::Failed,
                ..
            }
        )));
        assert_eq!(exit(&a), None, "the sibling keeps running");
        assert_eq!(s.state(1), State::Running);
        // Shutdown: the failed daemon's last code is the exit code.
        let a = s.handle(Event::Signal(Signal::SIGTERM), t);
        assert_eq!(kills(&a), vec![(-99, Signal::SIGTERM)]);
        let a = s.handle(
            Event::Exited {
                pid: 99,
                status: ExitStatus::Signal(15),
            },
            t,
        );
        assert_eq!(exit(&a), Some(1));
    }

    #[test]
    fn backoff_resets_after_a_stable_minute_and_caps_at_30s() {
        let t = Instant::now();
        let mut s = sup(r#"{"crash_loop": {"max_restarts": 100, "window_ms": 1000},
            "daemons": [{"name": "c", "argv": ["x"], "restart": "always"}]}"#);
        s.handle(Event::Start, t);
        let mut now = t;
        let mut last = Duration::ZERO;
        for pid in 1..12 {
            s.handle(Event::Spawned { daemon: 0, pid }, now);
            now += Duration::from_secs(2);
            let a = s.handle(
                Event::Exited {
                    pid,
                    status: ExitStatus::Code(0),
                },
                now,
            );
            last = timers(&a)[0].0;
        }
        assert_eq!(last, BACKOFF_MAX);
        s.handle(Event::Spawned { daemon: 0, pid: 50 }, now);
        now += STABLE_AFTER;
        let a = s.handle(
            Event::Exited {
                pid: 50,
                status: ExitStatus::Code(0),
            },
            now,
        );
        assert_eq!(timers(&a)[0].0, BACKOFF_START);
    }

    #[test]
    fn shutdown_is_reverse_dependency_order_with_grace_then_kill() {
        let t = Instant::now();
        let mut s = sup(CHAIN);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 10 }, t);
        s.handle(Event::Spawned { daemon: 2, pid: 12 }, t);
        s.handle(Event::Ready { daemon: 0, gen: 1 }, t);
        s.handle(Event::Spawned { daemon: 1, pid: 11 }, t);
        let a = s.handle(Event::Signal(Signal::SIGTERM), t);
        assert_eq!(
            kills(&a),
            vec![(-11, Signal::SIGTERM), (-12, Signal::SIGTERM)]
        );
        assert!(timers(&a).contains(&(Duration::from_millis(8000), Event::ShutdownDeadline)));
        let a = s.handle(
            Event::Exited {
                pid: 11,
                status: ExitStatus::Signal(15),
            },
            t,
        );
        assert_eq!(
            kills(&a),
            vec![(-11, Signal::SIGKILL), (-10, Signal::SIGTERM)]
        );
        assert!(timers(&a).contains(&(
            Duration::from_millis(1000),
            Event::GraceExpired { daemon: 0, gen: 1 }
        )));
        let a = s.handle(Event::GraceExpired { daemon: 0, gen: 1 }, t);
        assert_eq!(kills(&a), vec![(-10, Signal::SIGKILL)]);
        s.handle(
            Event::Exited {
                pid: 10,
                status: ExitStatus::Signal(9),
            },
            t,
        );
        let a = s.handle(
            Event::Exited {
                pid: 12,
                status: ExitStatus::Code(0),
            },
            t,
        );
        assert_eq!(exit(&a), Some(0), "daemons stopped by us count 0");
    }

    #[test]
    fn exit_code_matrix() {
        let t = Instant::now();
        let two = r#"{"daemons": [{"name": "a", "argv": ["x"], "restart": "never"},
                                  {"name": "b", "argv": ["x"], "restart": "never"}]}"#;
        // a exits 3 on its own; b stopped by SIGTERM later -> 3.
        let mut s = sup(two);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 1 }, t);
        s.handle(Event::Spawned { daemon: 1, pid: 2 }, t);
        assert_eq!(
            exit(&s.handle(
                Event::Exited {
                    pid: 1,
                    status: ExitStatus::Code(3)
                },
                t
            )),
            None
        );
        s.handle(Event::Signal(Signal::SIGTERM), t);
        assert_eq!(
            exit(&s.handle(
                Event::Exited {
                    pid: 2,
                    status: ExitStatus::Signal(15)
                },
                t
            )),
            Some(3)
        );
        // Both exit on their own, one by SIGSEGV -> 139, init exits by itself.
        let mut s = sup(two);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 1 }, t);
        s.handle(Event::Spawned { daemon: 1, pid: 2 }, t);
        s.handle(
            Event::Exited {
                pid: 1,
                status: ExitStatus::Code(0),
            },
            t,
        );
        assert_eq!(
            exit(&s.handle(
                Event::Exited {
                    pid: 2,
                    status: ExitStatus::Signal(11)
                },
                t
            )),
            Some(139)
        );
        // All clean -> 0.
        let mut s = sup(two);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 1 }, t);
        s.handle(Event::Spawned { daemon: 1, pid: 2 }, t);
        s.handle(
            Event::Exited {
                pid: 1,
                status: ExitStatus::Code(0),
            },
            t,
        );
        assert_eq!(
            exit(&s.handle(
                Event::Exited {
                    pid: 2,
                    status: ExitStatus::Code(0)
                },
                t
            )),
            Some(0)
        );
        // Orphans are ignored.
        let mut s = sup(two);
        s.handle(Event::Start, t);
        assert!(s
            .handle(
                Event::Exited {
                    pid: 777,
                    status: ExitStatus::Code(0)
                },
                t
            )
            .is_empty());
    }

    #[test]
    fn missing_binary_counts_as_127_and_others_still_start() {
        let t = Instant::now();
        let mut s = sup(
            r#"{"daemons": [{"name": "a", "argv": ["/nope"], "restart": "never"},
                                         {"name": "b", "argv": ["x"]}]}"#,
        );
        assert_eq!(spawns(&s.handle(Event::Start, t)), vec![0, 1]);
        s.handle(
            Event::SpawnFailed {
                daemon: 0,
                error: "/nope: No such file".into(),
                code: 127,
            },
            t,
        );
        assert_eq!(s.state(0), State::Exited);
        s.handle(Event::Spawned { daemon: 1, pid: 5 }, t);
        s.handle(Event::Signal(Signal::SIGTERM), t);
        assert_eq!(
            exit(&s.handle(
                Event::Exited {
                    pid: 5,
                    status: ExitStatus::Code(0)
                },
                t
            )),
            Some(127)
        );
    }

    #[test]
    fn signals_are_routed_only_to_daemons_that_ask() {
        let t = Instant::now();
        let mut s = sup(r#"{"daemons": [
            {"name": "a", "argv": ["x"], "reload_signal": "SIGUSR1"},
            {"name": "b", "argv": ["x"], "forward_signals": ["SIGUSR2", "SIGWINCH"]},
            {"name": "c", "argv": ["x"]}]}"#);
        s.handle(Event::Start, t);
        for (d, pid) in [(0, 1), (1, 2), (2, 3)] {
            s.handle(Event::Spawned { daemon: d, pid }, t);
        }
        assert_eq!(
            kills(&s.handle(Event::Signal(Signal::SIGHUP), t)),
            vec![(1, Signal::SIGUSR1)]
        );
        assert_eq!(
            kills(&s.handle(Event::Signal(Signal::SIGUSR2), t)),
            vec![(2, Signal::SIGUSR2)]
        );
        assert!(kills(&s.handle(Event::Signal(Signal::SIGUSR1), t)).is_empty());
    }

    #[test]
    fn second_shutdown_signal_kills_at_once_and_backoff_daemons_do_not_restart() {
        let t = Instant::now();
        let mut s =
            sup(r#"{"daemons": [{"name": "a", "argv": ["x"]}, {"name": "b", "argv": ["x"]}]}"#);
        s.handle(Event::Start, t);
        s.handle(Event::Spawned { daemon: 0, pid: 1 }, t);
        s.handle(Event::Spawned { daemon: 1, pid: 2 }, t);
        let a = s.handle(
            Event::Exited {
                pid: 2,
                status: ExitStatus::Code(4),
            },
            t,
        );
        let (_, due) = timers(&a)[0].clone();
        s.handle(Event::Signal(Signal::SIGINT), t);
        assert!(spawns(&s.handle(due, t)).is_empty());
        let a = s.handle(Event::Signal(Signal::SIGTERM), t);
        assert_eq!(kills(&a), vec![(-1, Signal::SIGKILL)]);
        let a = s.handle(
            Event::Exited {
                pid: 1,
                status: ExitStatus::Signal(9),
            },
            t,
        );
        assert_eq!(
            exit(&a),
            Some(4),
            "b crashed on its own and never recovered"
        );
    }
}
