//! docs/init.md "Config reference", "check-config", "Selecting daemons" and "health / status":
//! the command-line surface.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(20);

fn check(dir: &Dir, env: &[(&str, &str)]) -> Finished {
    let cfg = dir.path("init.json");
    run(
        Mode::Subreaper,
        &["check-config", "--config", s(&cfg)],
        env,
        T,
    )
}

#[test]
fn check_config_prints_every_problem_with_its_path() {
    let dir = Dir::new();
    dir.config(json!({"notify_url": "ftp://x", "daemons": [
        {"name": "a", "argv": ["x"], "depends_on": ["b"]},
        {"name": "b", "argv": ["x"], "depends_on": ["a", "ghost"]},
        {"name": "a", "argv": []},
        {"name": "c", "argv": ["x"], "user": "root", "reload_signal": "SIGNOPE",
         "forward_signals": ["SIGUSR1", "SIGKILL", "SIGWAT"], "ready": {"http": "port/x"}},
        {"name": "d", "argv": ["x"], "env": {"A=B": "top-secret-value"}}
    ]}));
    let f = check(&dir, &[]);
    assert_eq!(f.code, Some(2), "{}", f.err);
    for want in [
        "notify_url: \"ftp://x\" must start with http://",
        "daemons[2].name: duplicate name \"a\" (also daemons[0])",
        "daemons[0].depends_on: dependency cycle a -> b -> a",
        "daemons[1].depends_on[1]: unknown daemon \"ghost\"",
        "daemons[2].argv: must not be empty",
        "daemons[3].user: \"root\" is not \"UID\" or \"UID:GID\"",
        "daemons[3].reload_signal: unknown signal \"SIGNOPE\"",
        "daemons[3].forward_signals[1]: SIGKILL cannot be forwarded",
        "daemons[3].forward_signals[2]: unknown signal \"SIGWAT\"",
        "daemons[3].ready: http probe \"port/x\" must be \"PORT/PATH\"",
        "daemons[4].env.A=B: variable names must be non-empty",
    ] {
        assert!(f.err.contains(want), "missing {want:?} in:\n{}", f.err);
    }
    assert!(
        !f.err.contains("top-secret-value"),
        "env values are never printed"
    );
}

#[test]
fn check_config_structural_errors_have_paths_and_exit_2() {
    let dir = Dir::new();
    let cases: [(&str, &str); 5] = [
        (
            r#"{"daemons": [{"name": "a", "argv": ["x"], "restrat": "never"}]}"#,
            "daemons[0].restrat: unknown field `restrat`",
        ),
        (
            r#"{"daemons": [{"name": "a", "argv": ["x"], "restart": "sometimes"}]}"#,
            "daemons[0].restart: unknown variant `sometimes`",
        ),
        (
            r#"{"daemons": [{"name": "a", "argv": ["x"], "depends_on": [{"name": "b", "optional": "yes"}]}]}"#,
            "daemons[0].depends_on[0]",
        ),
        (r#"{"daemons": [], "extra": 1}"#, "unknown field `extra`"),
        (r#"{"daemons": [ "#, "not valid JSON"),
    ];
    for (text, want) in cases {
        dir.write("init.json", text);
        let f = check(&dir, &[]);
        assert_eq!(f.code, Some(2), "{text}");
        assert!(
            f.err.contains(want),
            "missing {want:?} for {text}:\n{}",
            f.err
        );
    }
    let f = run(
        Mode::Subreaper,
        &["check-config", "--config", "/nonexistent/init.json"],
        &[],
        T,
    );
    assert_eq!(f.code, Some(2));
    assert!(
        f.err
            .contains("cannot read config file /nonexistent/init.json"),
        "{}",
        f.err
    );
    // The supervisor refuses the same way, with one clear message and no panic.
    let f = run(
        Mode::Subreaper,
        &[],
        &[("SIDECAR_INIT_CONFIG", "/nonexistent/x.json")],
        T,
    );
    assert_eq!(f.code, Some(2));
    assert!(
        f.err
            .contains("cannot read config file /nonexistent/x.json")
            && !f.err.contains("panick"),
        "{}",
        f.err
    );

    dir.config(json!({"daemons": [{"name": "a", "argv": ["x"]}, {"name": "b", "argv": ["x"], "depends_on": ["a"]}]}));
    let f = check(&dir, &[]);
    assert_eq!(f.code, Some(0), "{}", f.err);
    assert!(
        f.out_text().contains("start order: a -> b"),
        "{}",
        f.out_text()
    );
}

#[test]
fn sidecars_daemons_selects_a_subset_and_refuses_unknown_names() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "egress", "argv": ["/bin/sh", "-c", "echo egress ran"], "restart": "never"},
        {"name": "gitgate", "argv": ["/bin/sh", "-c", "echo gitgate ran"], "restart": "never"},
        {"name": "pipelock", "argv": ["/bin/sh", "-c", "echo pipelock ran"], "restart": "never",
         "depends_on": ["egress", {"name": "gitgate", "optional": true}]}
    ]}));
    let f = Init::supervise(
        Mode::Subreaper,
        &dir,
        &[("SIDECARS_DAEMONS", "egress,pipelock")],
    )
    .finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    let out = f.out_text();
    assert!(
        out.contains("egress ran") && out.contains("pipelock ran") && !out.contains("gitgate ran"),
        "{out}"
    );

    let f = Init::supervise(
        Mode::Subreaper,
        &dir,
        &[("SIDECARS_DAEMONS", "egress,pipelok")],
    )
    .finish(T);
    assert_eq!(f.code, Some(2));
    assert!(
        f.err.contains(
            "SIDECARS_DAEMONS: unknown daemon \"pipelok\" (known: egress, gitgate, pipelock)"
        ),
        "{}",
        f.err
    );
    assert!(f.out.is_empty(), "nothing started");

    let f = Init::supervise(Mode::Subreaper, &dir, &[("SIDECARS_DAEMONS", "pipelock")]).finish(T);
    assert_eq!(f.code, Some(2));
    assert!(f.err.contains("daemons[2].depends_on[0]: \"pipelock\" needs \"egress\", which SIDECARS_DAEMONS does not enable"), "{}", f.err);
}

#[test]
fn health_and_status_over_the_socket() {
    let dir = Dir::new();
    let port = free_port();
    dir.config(json!({"daemons": [
        {"name": "web", "argv": http_daemon(port, 0.8), "ready": {"http": format!("{port}/health")}},
        {"name": "plain", "argv": ["/bin/sh", "-c", "exec sleep 60"]}
    ]}));
    let init = Init::supervise(Mode::Pid1, &dir, &[]);
    let sock = dir.socket();
    let health = || run(Mode::Subreaper, &["health", "--socket", s(&sock)], &[], T);
    // Not ready yet: red, and says why.
    let h = poll("socket up", T, || {
        let h = health();
        (h.code != Some(1) || h.out_text().contains("web:")).then_some(h)
    });
    assert_eq!(h.code, Some(1), "{}{}", h.out_text(), h.err);
    assert!(
        h.out_text()
            .contains("web: FAIL (running but not ready (http://127.0.0.1:"),
        "{}",
        h.out_text()
    );
    assert!(
        h.out_text().contains("plain: ok (running, pid "),
        "{}",
        h.out_text()
    );
    // Ready: green. The socket can also come from the environment.
    let h = poll("healthy", T, || {
        let h = run(
            Mode::Subreaper,
            &["health"],
            &[("SIDECAR_INIT_SOCKET", s(&sock))],
            T,
        );
        (h.code == Some(0)).then_some(h)
    });
    assert!(h.out_text().contains("/health ok)"), "{}", h.out_text());
    assert!(
        h.out_text().contains("web: ok (running, pid "),
        "{}",
        h.out_text()
    );

    let st = run(Mode::Subreaper, &["status", "--socket", s(&sock)], &[], T);
    assert_eq!(st.code, Some(0));
    let text = st.out_text();
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        text.contains("LAST EXIT") && text.contains("UPTIME"),
        "{text}"
    );
    // The supervisor's own probe loop may lag the live health probe by one interval.
    let v = poll("status shows web ready", T, || {
        status_json(&dir).filter(|v| v[0]["ready"] == true)
    });
    let web = &v.as_array().expect("array")[0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["state"], "running");
    assert_eq!(web["ready"], true);
    assert_eq!(web["restarts"], 0);
    assert!(web["pid"].as_i64().is_some() && web["uptime_ms"].as_u64().is_some());
    assert!(web.get("last_exit").is_some());

    // A daemon that is down makes health red again.
    init.signal(15);
    let f = init.finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    let h = health();
    assert_eq!(h.code, Some(1));
    assert!(h.err.contains("cannot reach sidecar-init at"), "{}", h.err);
}

#[test]
fn unwritable_socket_directory_fails_with_a_clear_message() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [{"name": "a", "argv": ["/bin/sh", "-c", "exec sleep 60"]}]}));
    let cfg = dir.path("init.json");
    // /proc/self is not a place a socket can be created, even as root.
    let f = run(
        Mode::Subreaper,
        &["--config", s(&cfg), "--socket", "/proc/self/x/init.sock"],
        &[],
        T,
    );
    assert_eq!(f.code, Some(2), "{}", f.err);
    assert!(
        f.err
            .contains("cannot create control socket /proc/self/x/init.sock"),
        "{}",
        f.err
    );
    assert!(
        f.err.contains("tmpfs on /run") && f.err.contains("SIDECAR_INIT_SOCKET"),
        "{}",
        f.err
    );
    assert!(f.out.is_empty());
}
