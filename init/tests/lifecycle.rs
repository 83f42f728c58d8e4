//! docs/init.md "Dependencies and readiness", "Shutdown", "Exit codes", "Restarts", "Notify
//! events", "Environment": the supervisor driven through real processes.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(20);

fn pos(hay: &str, needle: &str) -> usize {
    hay.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not found in:\n{hay}"))
}

#[test]
fn dependents_start_after_their_dependency_is_ready() {
    let dir = Dir::new();
    let port = free_port();
    // `db` takes 0.5 s to listen; `app` connects once at start and reports what it saw.
    let app = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 1)\n    print('app: db reachable at start')\nexcept OSError as e:\n    print('app: db NOT reachable', e)\n"
    );
    dir.config(json!({"daemons": [
        {"name": "app", "argv": [PYTHON, "-c", app], "depends_on": ["db"], "restart": "never"},
        {"name": "db", "argv": http_daemon(port, 0.5), "ready": {"http": format!("{port}/health")}},
        {"name": "solo", "argv": ["/bin/sh", "-c", "echo solo up; exec sleep 60"]}
    ]}));
    let init = Init::supervise(Mode::Pid1, &dir, &[]);
    init.wait_for("app: db", T);
    init.signal(15);
    let f = init.finish(T);
    let (out, err) = (f.out_text(), f.err);
    assert!(
        out.contains("app | app: db reachable at start"),
        "{out}\n{err}"
    );
    assert!(
        pos(&err, "db is ready (http://127.0.0.1:") < pos(&err, "started app"),
        "{err}"
    );
    // Daemons without dependencies start at once, in parallel: solo does not wait for db.
    assert!(
        pos(&err, "started solo") < pos(&err, "db is ready"),
        "{err}"
    );
    assert_eq!(f.code, Some(0), "{err}");
}

#[test]
fn ready_timeout_is_logged_then_start_anyway_or_fail() {
    let port = free_port(); // nobody listens here
    for (policy, dependent_starts) in [("start-anyway", true), ("fail", false)] {
        let dir = Dir::new();
        dir.config(json!({"daemons": [
            {"name": "slow", "argv": ["/bin/sh", "-c", "exec sleep 60"], "ready": {"tcp": port},
             "ready_timeout_ms": 300, "on_ready_timeout": policy, "grace_ms": 500},
            {"name": "dep", "argv": ["/bin/sh", "-c", "echo dep running; exec sleep 60"], "depends_on": ["slow"]},
            {"name": "other", "argv": ["/bin/sh", "-c", "exec sleep 60"]}
        ]}));
        let init = Init::supervise(Mode::Subreaper, &dir, &[]);
        let line = format!("slow not ready after 300 ms (probed tcp 127.0.0.1:{port})");
        init.wait_for(&line, T);
        if dependent_starts {
            init.wait_for("dep | dep running", T);
        } else {
            init.wait_for("dep not started: dependency slow failed", T);
            init.wait_for("slow (failed) stopped", T);
            let h = run(
                Mode::Subreaper,
                &["health", "--socket", s(&dir.socket())],
                &[],
                T,
            );
            assert_eq!(h.code, Some(1), "health is red");
            assert!(
                h.out_text()
                    .contains("slow: FAIL (failed: not ready after 300 ms"),
                "{}",
                h.out_text()
            );
        }
        init.signal(15);
        let f = init.finish(T);
        assert!(
            !dependent_starts || f.code == Some(0),
            "{policy}: {:?}\n{}",
            f.code,
            f.err
        );
        if !dependent_starts {
            assert_eq!(
                f.code,
                Some(1),
                "a failed daemon makes the exit non-zero\n{}",
                f.err
            );
            assert!(!f.out_text().contains("dep running"));
        }
    }
}

#[test]
fn sigterm_stops_in_reverse_dependency_order_and_kills_a_stubborn_group() {
    let dir = Dir::new();
    let stop = |name: &str| {
        json!(["/bin/sh", "-c", format!("trap 'echo {name} got TERM; exit 0' TERM; echo {name} up; while :; do sleep 0.05; done")])
    };
    dir.config(json!({"grace_ms": 8000, "daemons": [
        {"name": "db", "argv": stop("db")},
        {"name": "app", "argv": stop("app"), "depends_on": ["db"]},
        // Ignores SIGTERM and has a child in its group that ignores it too.
        {"name": "stubborn", "argv": ["/bin/sh", "-c", "trap '' TERM; sh -c \"trap '' TERM; echo child up; while :; do sleep 0.05; done\" & echo stubborn up; while :; do sleep 0.05; done"],
         "grace_ms": 1000}
    ]}));
    let init = Init::supervise(Mode::Pid1, &dir, &[]);
    for n in ["db up", "app up", "stubborn up", "child up"] {
        init.wait_for(n, T);
    }
    let t0 = Instant::now();
    init.signal(15);
    let f = init.finish(T);
    let took = t0.elapsed();
    let err = &f.err;
    assert!(
        pos(err, "app stopped") < pos(err, "stopping db"),
        "app before db:\n{err}"
    );
    assert!(
        err.contains("stubborn did not stop within 1000 ms: SIGKILL to its process group"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(1000),
        "grace was honoured: {took:?}"
    );
    assert!(took < Duration::from_millis(2000), "grace + 1 s: {took:?}");
    assert_eq!(f.code, Some(0), "stopped by us counts 0\n{err}");
}

#[test]
fn well_behaved_bundle_stops_at_once_not_after_a_fixed_sleep() {
    let dir = Dir::new();
    let daemons: Vec<_> = (0..5)
        .map(|i| json!({"name": format!("d{i}"), "argv": ["/bin/sh", "-c", format!("echo d{i} up; exec sleep 60")]}))
        .collect();
    dir.config(json!({"daemons": daemons}));
    let init = Init::supervise(Mode::Pid1, &dir, &[]);
    for i in 0..5 {
        init.wait_for(&format!("d{i} up"), T);
    }
    let t0 = Instant::now();
    init.signal(15);
    let f = init.finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn exit_code_is_the_worst_own_exit() {
    // One daemon exits 3 on its own before shutdown -> 3.
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "three", "argv": ["/bin/sh", "-c", "exit 3"], "restart": "never"},
        {"name": "runner", "argv": ["/bin/sh", "-c", "echo runner up; exec sleep 60"]}
    ]}));
    let init = Init::supervise(Mode::Pid1, &dir, &[]);
    init.wait_for("three exited: code 3", T);
    init.wait_for("runner up", T);
    init.signal(15);
    let f = init.finish(T);
    assert_eq!(f.code, Some(3), "{}", f.err);

    // One daemon killed by SIGSEGV, the other clean; nothing left -> init exits by itself, 139.
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "segv", "argv": ["/bin/sh", "-c", "kill -SEGV $$"], "restart": "never"},
        {"name": "clean", "argv": ["/bin/sh", "-c", "sleep 0.2"], "restart": "never"}
    ]}));
    let f = Init::supervise(Mode::Subreaper, &dir, &[]).finish(T);
    assert_eq!(f.code, Some(139), "{}", f.err);
    assert!(
        f.err.contains("segv exited: signal 11 (SIGSEGV)"),
        "{}",
        f.err
    );
    assert!(f
        .err
        .contains("no daemon left running or to restart; exiting with code 139"));
}

/// Collects request bodies POSTed to a local listener (the notify_url target).
fn notify_sink() -> (u16, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers + body (Content-Length), then answer.
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(h) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..h]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= h + 4 + len {
                        if let Ok(v) = serde_json::from_slice(&buf[h + 4..h + 4 + len]) {
                            g.lock().expect("lock").push(v);
                        }
                        break;
                    }
                }
            }
            use std::io::Write;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn crash_loop_marks_failed_and_health_red_while_a_sibling_keeps_serving() {
    let dir = Dir::new();
    let port = free_port();
    let (nport, events) = notify_sink();
    dir.config(json!({
        "notify_url": format!("http://127.0.0.1:{nport}/internal/events"),
        "crash_loop": {"max_restarts": 2, "window_ms": 60000},
        "daemons": [
            {"name": "crasher", "argv": ["/bin/sh", "-c", "echo crashing; exit 1"], "restart": "on-failure"},
            {"name": "web", "argv": http_daemon(port, 0.0), "ready": {"http": format!("{port}/health")}}
        ]}));
    let init = Init::supervise(Mode::Subreaper, &dir, &[]);
    init.wait_for(
        "crasher failed (crash loop: 2 restarts within 60000 ms, last exit code 1)",
        T,
    );
    let err = init.err.text();
    assert!(
        err.contains("restarting crasher in 100 ms (restart 1)"),
        "{err}"
    );
    assert!(
        err.contains("restarting crasher in 200 ms (restart 2)"),
        "{err}"
    );
    assert_eq!(err.matches("started crasher").count(), 3);
    init.wait_for("web is ready", T);
    let h = run(
        Mode::Subreaper,
        &["health", "--socket", s(&dir.socket())],
        &[],
        T,
    );
    assert_eq!(h.code, Some(1), "health red while crasher is failed");
    let out = h.out_text();
    assert!(out.contains("crasher: FAIL (failed: crash loop"), "{out}");
    assert!(out.contains("web: ok (running, pid "), "{out}");
    assert_eq!(daemon_state(&dir, "web").as_deref(), Some("running"));
    // Every start, exit, restart and the failure reached notify_url.
    let evs = poll("notify events", T, || {
        let e = events.lock().ok()?.clone();
        e.iter().any(|v| v["event"] == "failed").then_some(e)
    });
    let crasher: Vec<String> = evs
        .iter()
        .filter(|v| v["daemon"] == "crasher")
        .map(|v| v["event"].as_str().unwrap_or("").to_string())
        .collect();
    for kind in ["started", "exited", "restarting", "failed"] {
        assert!(
            crasher.iter().any(|k| k == kind),
            "{kind} missing: {crasher:?}"
        );
    }
    let failed = evs
        .iter()
        .find(|v| v["event"] == "failed")
        .expect("failed event");
    assert_eq!(failed["code"], 1);
    assert_eq!(failed["restarts"], 2);
    assert!(failed["ts"].is_string() && failed.get("signal").is_some());
    init.signal(15);
    let f = init.finish(T);
    assert_eq!(f.code, Some(1), "{}", f.err);
}

#[test]
fn missing_binary_is_that_daemons_failure_and_others_start() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "ghost", "argv": ["/nonexistent/bin/ghost", "--flag"], "restart": "never"},
        {"name": "fine", "argv": ["/bin/sh", "-c", "echo fine up; exec sleep 60"]}
    ]}));
    let init = Init::supervise(Mode::Subreaper, &dir, &[]);
    init.wait_for("fine up", T);
    init.wait_for(
        "ghost: cannot start: /nonexistent/bin/ghost: No such file or directory",
        T,
    );
    init.signal(15);
    let f = init.finish(T);
    assert_eq!(f.code, Some(127), "{}", f.err);
    assert!(!f.err.contains("panic"));
}

#[test]
fn daemons_get_only_their_own_env() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "a", "argv": ["/bin/sh", "-c", "env | sort"], "env": {"ONLY_A": "1"}, "restart": "never"},
        {"name": "b", "argv": ["/bin/sh", "-c", "env | sort"], "env": {"ONLY_B": "2"}, "restart": "never"}
    ]}));
    let f = Init::supervise(Mode::Subreaper, &dir, &[("INIT_SECRET", "hunter2")]).finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    let out = f.out_text();
    assert!(
        !out.contains("INIT_SECRET") && !out.contains("hunter2"),
        "{out}"
    );
    assert!(
        out.contains("a | ONLY_A=1") && !out.contains("a | ONLY_B"),
        "{out}"
    );
    assert!(
        out.contains("b | ONLY_B=2") && !out.contains("b | ONLY_A"),
        "{out}"
    );
    assert!(
        out.contains("a | PATH=/usr/local/sbin:/usr/local/bin"),
        "{out}"
    );
    assert!(out.contains("a | HOME="), "{out}");
    // Nothing but the base, the daemon's own, and what sh itself sets.
    for line in out.lines() {
        let var = line.split_once(" | ").map(|x| x.1).unwrap_or("");
        let key = var.split('=').next().unwrap_or("");
        assert!(
            ["PATH", "HOME", "ONLY_A", "ONLY_B", "PWD", "SHLVL", "_", "OLDPWD"].contains(&key),
            "unexpected {line}"
        );
    }
}
