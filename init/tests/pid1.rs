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
