//! The supervision loop: turns [`Action`]s into syscalls, tasks and timers, and what happens
//! (signals, reaped children, probe results, timers, control queries) back into [`Event`]s.
//!
//! Why it decides nothing: all policy is in [`crate::supervisor`]. This loop is the only place
//! that reaps (`waitpid(-1, WNOHANG)` drained on every SIGCHLD) and it runs on one thread, so
//! no other wait can race it. Everything is event-driven: shutdown ends the moment the last
//! daemon is reaped, not at the next poll.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::net::UnixListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinSet;

use crate::control::{self, Query};
use crate::log::Format;
use crate::notify::{self, Notifier};
use crate::output::{Output, Stream};
use crate::reaper;
use crate::relay::{self, Framer};
use crate::signals;
use crate::spawn::{spawn, ChildSignals, Group, SpawnSpec};
use crate::supervisor::{Action, Event, Supervisor};
use crate::validate::Plan;

/// After the last daemon exits, how long init waits for its log pipes to drain (a grandchild
/// that escaped the process group may hold one open).
pub const LOG_DRAIN: Duration = Duration::from_millis(500);

/// Supervises `plan` until everything has exited; returns init's exit code. Signal handlers
/// are installed before the first spawn so no SIGCHLD is lost.
pub async fn run(
    plan: Plan,
    listener: UnixListener,
    socket_path: PathBuf,
    output: Output,
    format: Format,
) -> std::io::Result<i32> {
    let (sig_tx, mut sig_rx) = unbounded_channel::<Signal>();
    let mut sigs = vec![
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
    ];
    // Every signal a daemon might want forwarded is handled, even when none does: as PID 1 an
    // unhandled signal is dropped silently, and when not PID 1 its default action would kill
    // or stop init. SIGPIPE stays ignored unless asked for (init's own writes would raise it).
    for s in Signal::iterator() {
        let asked = plan.daemons.iter().any(|d| d.forward_signals.contains(&s));
        let wanted = signals::why_not_forwardable(s).is_none() && (s != Signal::SIGPIPE || asked);
        if wanted && !sigs.contains(&s) {
            sigs.push(s);
        }
    }
    signals::listen(&sigs, sig_tx)?;

    let (ev_tx, mut ev_rx) = unbounded_channel::<Event>();
    let (q_tx, mut q_rx) = unbounded_channel::<Query>();
    let probes = plan
        .daemons
        .iter()
        .map(|d| (d.name.clone(), d.probe.clone()))
        .collect();
    // The jail is decided before `status`/`health` can be asked, so they always say it.
    let jail = plan.handlers.as_ref().map(crate::handlers::prepare_jail);
    tokio::spawn(control::serve(
        listener,
        q_tx,
        probes,
        jail.as_ref().map(|(_, state)| state.clone()),
    ));
    let handlers = crate::handlers::Registry::default();
    if let (Some(config), Some((jail, state))) = (plan.handlers.clone(), jail) {
        match crate::handlers::bind(&config) {
            Ok(l) => {
                tracing::info!(
                    "serving handler spawns on {}; handler jail {}",
                    config.socket.display(),
                    state.describe().1
                );
                tokio::spawn(crate::handlers::serve(
                    l,
                    config,
                    handlers.clone(),
                    jail,
                    state,
                ));
            }
            // pack-exec then fails its calls with a clear error; the guards keep running.
            Err(e) => tracing::error!(
                "cannot serve handler spawns on {}: {e}",
                config.socket.display()
            ),
        }
    }

    let notifier = plan.notify.clone().map(Notifier::new);
    let framers: Vec<(Framer, Framer)> = plan
        .daemons
        .iter()
        .map(|d| {
            (
                Framer::new(&d.name, Stream::Stdout, format),
                Framer::new(&d.name, Stream::Stderr, format),
            )
        })
        .collect();
    let mut sup = Supervisor::new(&plan);
    let mut relays = JoinSet::new();
    let mut queue = VecDeque::from([Event::Start]);
    // hand_out wrote generation 1 of every daemon's credentials.
    let mut credential_generation: u64 = 1;
    let code = 'run: loop {
        while let Some(ev) = queue.pop_front() {
            for act in sup.handle(ev, Instant::now()) {
                match act {
                    Action::Exit(code) => break 'run code,
                    Action::Spawn { daemon } => {
                        let d = &plan.daemons[daemon];
                        let spec = SpawnSpec {
                            argv: &d.argv,
                            env: Some(&d.env),
                            user: d.user,
                            group: Group::NewSession,
                            signals: ChildSignals::Default,
                            capture: true,
                            harden: true,
                        };
                        match spawn(&spec) {
                            Ok(child) => {
                                let (fo, fe) = &framers[daemon];
                                if let Some(fd) = child.stdout {
                                    relays.spawn(relay::relay(
                                        fd,
                                        fo.clone(),
                                        output.stdout.clone(),
                                    ));
                                }
                                if let Some(fd) = child.stderr {
                                    relays.spawn(relay::relay(
                                        fd,
                                        fe.clone(),
                                        output.stderr.clone(),
                                    ));
                                }
                                queue.push_back(Event::Spawned {
                                    daemon,
                                    pid: child.pid,
                                });
                            }
                            Err(e) => {
                                let code = if e.kind() == std::io::ErrorKind::NotFound {
                                    127
                                } else {
                                    126
                                };
                                queue.push_back(Event::SpawnFailed {
                                    daemon,
                                    error: format!(
                                        "{}: {e}",
                                        d.argv.first().map(String::as_str).unwrap_or("")
                                    ),
                                    code,
                                });
                            }
                        }
                    }
                    Action::Probe {
                        daemon,
                        gen,
                        within,
                    } => {
                        if let Some(probe) = plan.daemons[daemon].probe.clone() {
                            let tx = ev_tx.clone();
                            tokio::spawn(async move {
                                let deadline = tokio::time::Instant::now() + within;
                                if probe.wait_ready(deadline).await {
                                    let _ = tx.send(Event::Ready { daemon, gen });
                                }
                            });
                        }
                    }
                    Action::Timer { after, event } => timer(&ev_tx, after, event),
                    Action::Kill { pid, signal } => {
                        crate::spawn::kill_raw(pid, signal as i32);
                    }
                    Action::Notify {
                        daemon,
                        kind,
                        status,
                        restarts,
                    } => {
                        if let Some(n) = &notifier {
                            n.send(&notify::Event {
                                ts: crate::log::now_rfc3339(),
                                daemon: plan.daemons[daemon].name.clone(),
                                event: kind,
                                code: match status {
                                    Some(reaper::ExitStatus::Code(c)) => Some(c),
                                    _ => None,
                                },
                                signal: status.and_then(|s| s.signal_name()),
                                restarts,
                            });
                        }
                    }
                }
            }
        }
        tokio::select! {
            Some(sig) = sig_rx.recv() => {
                if sig == Signal::SIGCHLD {
                    for (pid, status) in reaper::reap_all() {
                        if !handlers.claim(pid, status) {
                            queue.push_back(Event::Exited { pid, status });
                        }
                    }
                } else {
                    if sig == Signal::SIGHUP {
                        // A reload: hand out the credentials again before the daemons are told
                        // to reload, so they read the rotated ones.
                        credential_generation += 1;
                        crate::credentials::refresh(&plan, credential_generation);
                    }
                    queue.push_back(Event::Signal(sig));
                }
            }
            Some(ev) = ev_rx.recv() => queue.push_back(ev),
            Some(q) = q_rx.recv() => {
                let _ = q.send(sup.snapshot(Instant::now()));
            }
        }
    };
    // Reap anything left (orphans that exited meanwhile), let the log pipes drain, flush.
    reaper::reap_all();
    let _ = tokio::time::timeout(LOG_DRAIN, async {
        while relays.join_next().await.is_some() {}
    })
    .await;
    relays.abort_all();
    let _ = std::fs::remove_file(&socket_path);
    output.flush().await;
    Ok(code)
}

fn timer(tx: &UnboundedSender<Event>, after: Duration, event: Event) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = tx.send(event);
    });
}
