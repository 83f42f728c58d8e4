//! docs/init.md "Signals", "Reaping" and "Single-command mode": PID-1 duties, tested both as
//! PID 1 of a new PID namespace and as a plain subreaper.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn sighup_reaches_only_the_declared_daemon_and_forward_signals_only_their_takers() {
    for mode in [Mode::Pid1, Mode::Subreaper] {
        let dir = Dir::new();
        let script = |name: &str| {
            json!(["/bin/sh", "-c", format!(
                "for s in HUP USR1 USR2 WINCH; do trap \"echo {name} got $s\" $s; done; echo {name} up; while :; do sleep 0.05; done"
            )])
        };
        dir.config(json!({"daemons": [
            {"name": "reloader", "argv": script("reloader"), "reload_signal": "SIGHUP"},
            {"name": "usr2", "argv": script("usr2"), "forward_signals": ["SIGUSR2", "WINCH"]},
            {"name": "deaf", "argv": script("deaf")}
        ]}));
        let init = Init::supervise(mode, &dir, &[]);
        for n in ["reloader up", "usr2 up", "deaf up"] {
            init.wait_for(n, T);
        }
        init.signal(1); // SIGHUP
        init.wait_for("reloader | reloader got HUP", T);
        init.signal(12); // SIGUSR2
        init.wait_for("usr2 | usr2 got USR2", T);
        init.signal(28); // SIGWINCH
        init.wait_for("usr2 | usr2 got WINCH", T);
        // SIGUSR1 is nobody's: dropped, and init (even as PID 1, even not PID 1) survives it.
        init.signal(10);
        init.wait_for("SIGUSR1: no running daemon takes it; ignored", T);
        init.signal(15);
        let f = init.finish(T);
        let out = f.out_text();
        assert_eq!(f.code, Some(0), "{mode:?}\n{}", f.err);
        assert_eq!(out.matches("got HUP").count(), 1, "{mode:?}: {out}");
        assert_eq!(out.matches("got USR2").count(), 1, "{mode:?}: {out}");
        assert!(!out.contains("got USR1"), "{mode:?}: {out}");
        assert!(!out.contains("deaf got"), "{mode:?}: {out}");
    }
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    for mode in [Mode::Pid1, Mode::Subreaper] {
        let dir = Dir::new();
        // Each subshell forks a short sleep and exits at once: the sleeps become orphans,
        // re-parented to init, and exit 0.3 s later. One escapes the process group (setsid).
        dir.config(json!({"daemons": [
            {"name": "forker", "argv": ["/bin/sh", "-c",
                "for i in 1 2 3 4 5; do (sleep 0.3 &); done; (setsid sleep 0.3 &); echo forked; exec sleep 60"]}
        ]}));
        let init = Init::supervise(mode, &dir, &[]);
        init.wait_for("forker | forked", T);
        let pid = init.init_pid();
        // Orphans appear as init's children, then exit; none may stay a zombie.
        poll("orphans re-parented to init", T, || {
            (children_of(pid).len() >= 2).then_some(())
        });
        poll("orphans reaped", T, || {
            let kids = children_of(pid);
            let zombies = kids.iter().filter(|&&k| proc_state(k) == Some('Z')).count();
            (kids.len() == 1 && zombies == 0).then_some(())
        });
        init.signal(15);
        let f = init.finish(T);
        assert_eq!(f.code, Some(0), "{mode:?}: {}", f.err);
    }
}

fn single(mode: Mode, args: &[&str]) -> Finished {
    let mut a = vec!["--"];
    a.extend_from_slice(args);
    run(mode, &a, &[], T)
}

#[test]
fn single_command_mode_passes_exit_codes_through() {
    let dir = Dir::new();
    let not_exec = dir.write("not-executable", "#!/bin/sh\nexit 0\n");
    for mode in [Mode::Subreaper, Mode::Pid1] {
        for (args, want) in [
            (vec!["/bin/sh", "-c", "exit 0"], 0),
            (vec!["/bin/sh", "-c", "exit 3"], 3),
            (vec!["/bin/sh", "-c", "exit 255"], 255),
            (vec!["/bin/sh", "-c", "kill -SEGV $$"], 139),
            (vec!["/nonexistent/cmd"], 127),
            (vec!["no-such-command-anywhere"], 127),
            (vec![s(&not_exec)], 126),
        ] {
            let f = single(mode, &args);
            assert_eq!(f.code, Some(want), "{mode:?} {args:?}: {}", f.err);
            if (126..128).contains(&want) {
                assert!(f.err.contains("init | cannot run"), "{}", f.err);
            }
        }
    }
    let f = single(
        Mode::Subreaper,
        &["/bin/sh", "-c", "echo out; echo err >&2"],
    );
    assert_eq!(
        f.out_text(),
        "out\n",
        "child output is not prefixed or captured"
    );
    assert_eq!(f.err, "err\n");
}

#[test]
fn single_command_mode_forwards_signals_and_reaps() {
    for mode in [Mode::Subreaper, Mode::Pid1] {
        let init = Init::start(
            mode,
            &["--", "/bin/sh", "-c", "trap 'echo got USR1; exit 7' USR1; (sleep 0.1 &); echo ready; while :; do sleep 0.05; done"],
            &[],
        );
        init.wait_for("ready", T);
        init.signal(10);
        let f = init.finish(T);
        assert_eq!(f.code, Some(7), "{mode:?}: {}", f.err);
        assert!(f.out_text().contains("got USR1"));

        // SIGTERM to init reaches a child that does not handle it: 128 + 15.
        let init = Init::start(
            mode,
            &[
                "--",
                "/bin/sh",
                "-c",
                "echo ready; while :; do sleep 0.05; done",
            ],
            &[],
        );
        init.wait_for("ready", T);
        init.signal(15);
        let f = init.finish(T);
        assert_eq!(f.code, Some(143), "{mode:?}: {}", f.err);
    }
}

/// A `/proc/<pid>/status` bit set field (`SigIgn`, `SigBlk`, …) of `status`.
fn signal_field(status: &str, field: &str) -> u64 {
    // The standard signals only: the libc keeps the first real-time ones for itself (and its
    // sigaction refuses them), so their state is whatever the test runner had.
    const STANDARD: u64 = (1 << 31) - 1;
    STANDARD
        & status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
}

fn bits(signals: &[i32]) -> u64 {
    signals.iter().fold(0, |acc, s| acc | 1 << (s - 1))
}

/// As tini: the command starts with the signal dispositions and mask init itself was started
/// with (its parent's choice), not with init's own (everything blocked) nor cleared ones.
/// SIGPIPE is the telling case: Rust's runtime ignores it before `main`, so init must have
/// recorded the parent's choice before that.
#[test]
fn single_command_mode_hands_the_command_the_signal_state_init_was_started_with() {
    use std::os::unix::process::CommandExt;
    let (sigint, sigpipe, sigttou, sigsegv, sigttin, sigusr1, sighup) = (
        libc::SIGINT,
        libc::SIGPIPE,
        libc::SIGTTOU,
        libc::SIGSEGV,
        libc::SIGTTIN,
        libc::SIGUSR1,
        libc::SIGHUP,
    );
    for mode in [Mode::Subreaper, Mode::Pid1] {
        for pipe_ignored in [false, true] {
            let mut ignored = vec![sigint, sigttou, sigsegv];
            if pipe_ignored {
                ignored.push(sigpipe);
            }
            let blocked = vec![sigttin, sigusr1, sighup];
            let (ign, blk) = (ignored.clone(), blocked.clone());
            let init = Init::start_with(mode, &["--", "cat", "/proc/self/status"], &[], |cmd| {
                // SAFETY: runs in the forked child before exec; sigaction and sigprocmask are
                // async-signal-safe and nothing is allocated (the vectors were moved in).
                unsafe {
                    cmd.pre_exec(move || {
                        for &sig in &ign {
                            libc::signal(sig, libc::SIG_IGN);
                        }
                        let mut mask: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut mask);
                        for &sig in &blk {
                            libc::sigaddset(&mut mask, sig);
                        }
                        libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
                        Ok(())
                    });
                }
            });
            let f = init.finish(T);
            assert_eq!(f.code, Some(0), "{mode:?}: {}", f.err);
            let status = f.out_text();
            assert_eq!(
                signal_field(&status, "SigIgn"),
                bits(&ignored),
                "{mode:?}, SIGPIPE ignored by the parent: {pipe_ignored}: the ignored set"
            );
            assert_eq!(
                signal_field(&status, "SigBlk"),
                bits(&blocked),
                "{mode:?}: the mask"
            );
        }
    }
}

/// `/proc/<pid>/stat`: the pid, and the numeric fields after the command name and state:
/// ppid, pgrp, session, tty_nr, tpgid, … (`fields[1]` is pgrp, `fields[4]` tpgid).
fn stat_fields(stat: &str) -> (i64, Vec<i64>) {
    let pid = stat
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stat:?}"));
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(-1))
        .collect();
    (pid, fields)
}

/// As tini and dumb-init: the command gets a process group of its own (so `kill 0`, job
/// control and a terminal's ^C reach the command's group, not init), made the terminal's
/// foreground group when init runs on one.
#[test]
fn single_command_mode_gives_the_command_its_own_foreground_process_group() {
    for mode in [Mode::Subreaper, Mode::Pid1] {
        // Without a terminal: its own group, not init's.
        let init = Init::start(
            mode,
            &[
                "--",
                "/bin/sh",
                "-c",
                "cat /proc/self/stat; cat /proc/$$/stat; cat /proc/$PPID/stat",
            ],
            &[],
        );
        let f = init.finish(T);
        assert_eq!(f.code, Some(0), "{mode:?}: {}", f.err);
        let out = f.out_text();
        let mut lines = out.lines();
        let (cat, cat_fields) = stat_fields(lines.next().unwrap_or_default());
        let (sh, sh_fields) = stat_fields(lines.next().unwrap_or_default());
        let (init_pid, init_fields) = stat_fields(lines.next().unwrap_or_default());
        assert_ne!(cat, sh);
        assert_eq!(
            sh_fields[1], sh,
            "{mode:?}: the command leads its own process group: {out}"
        );
        assert_eq!(cat_fields[1], sh, "{mode:?}: {out}");
        assert_ne!(
            init_fields[1], sh,
            "{mode:?}: init ({init_pid}) is not in it: {out}"
        );

        // On a terminal: that group is the terminal's foreground group.
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let init = Init::start_on_terminal(
            mode,
            &["--", "cat", "/proc/self/stat"],
            std::fs::File::from(pty.slave),
        );
        let f = init.finish(T);
        drop(pty.master);
        assert_eq!(f.code, Some(0), "{mode:?} on a terminal: {}", f.err);
        let (cat, fields) = stat_fields(f.out_text().trim());
        assert_eq!(fields[1], cat, "{mode:?}: its own group on the terminal");
        assert_eq!(
            fields[4], cat,
            "{mode:?}: the command's group is the terminal's foreground group"
        );
    }
}
