//! The bundle on real Docker: `control-plane up` of a bottle, the agent using the sidecars,
//! network isolation, logs, stop, crash restart, exit codes and `down`.
//! Needs the images from `scripts/images.sh`; fails under CI when Docker is missing.

use std::time::{Duration, Instant};

use e2e::{docker0_ip, require_docker, run, wait_until, Bottle};

const PACKS_BOTTLE: &str = r#"
slug = "{slug}"
daemons = ["pack-exec"]
packs = ["{packs}/cmd.upper", "{packs}/cmd.lower", "{packs}/cmd.wordcount"]

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#;

fn call_upper_from_agent(b: &Bottle, text: &str) -> String {
    let body = format!(r#"{{"text":"{text}"}}"#);
    b.exec(
        &b.agent(),
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            &body,
            "http://sidecars:9000/v1/packs/cmd.upper",
        ],
    )
    .stdout
}

fn project_filter(b: &Bottle) -> String {
    format!("label=com.docker.compose.project={}", b.project)
}

#[test]
fn bottle_up_agent_runs_a_pack_logs_are_prefixed_stop_is_clean_and_down_leaves_nothing() {
    if !require_docker() {
        return;
    }
    let b = Bottle::up("basic", PACKS_BOTTLE);

    // Both containers are up; `up` reported the bundle healthy (it runs the healthcheck
    // command itself), and Docker's own healthcheck agrees at its first check.
    let sidecars_report = b.report["bottle"]["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "sidecars").cloned())
        .unwrap_or_default();
    assert_eq!(sidecars_report["health"], "healthy", "{}", b.report);
    wait_until(
        "Docker's healthcheck reports the bundle healthy",
        Duration::from_secs(15),
        || b.inspect(&b.sidecars(), "{{.State.Health.Status}}") == "healthy",
    );
    assert_eq!(b.inspect(&b.agent(), "{{.State.Running}}"), "true");
    // Exactly two services in the project.
    let services = run(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &project_filter(&b),
            "--format",
            "{{.Label \"com.docker.compose.service\"}}",
        ],
    )
    .stdout;
    let mut services: Vec<&str> = services.lines().collect();
    services.sort();
    assert_eq!(services, vec!["agent", "sidecars"]);

    // The agent reaches pack-exec by the bundle's name and runs the upper pack.
    let answer = call_upper_from_agent(&b, "hello bottle");
    assert!(
        answer.contains(r#""text":"HELLO BOTTLE""#),
        "upper pack answer: {answer}"
    );
    let env = b.exec(&b.agent(), &["printenv", "PACK_EXEC_URL"]).stdout;
    assert_eq!(env.trim(), "http://sidecars:9000");

    // Network isolation: a server on the egress network is reachable from the sidecars
    // container (positive control) but not from the agent.
    let nets = run(
        "docker",
        &["network", "ls", "-q", "--filter", &project_filter(&b)],
    )
    .stdout;
    let infos: Vec<String> = nets
        .lines()
        .map(|id| {
            run(
                "docker",
                &["network", "inspect", "-f", "{{.Name}} {{.Internal}}", id],
            )
            .stdout
            .trim()
            .to_string()
        })
        .collect();
    assert_eq!(infos.len(), 2, "two networks: {infos:?}");
    assert_eq!(
        infos.iter().filter(|i| i.ends_with(" true")).count(),
        1,
        "exactly one internal network: {infos:?}"
    );
    let egress_net = infos
        .iter()
        .find(|i| i.ends_with(" false"))
        .and_then(|i| i.split_whitespace().next())
        .expect("a non-internal egress network")
        .to_string();
    let outside = format!("e2e-outside-{}", b.slug);
    let _ = run("docker", &["rm", "-f", &outside]);
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &outside,
            "--network",
            &egress_net,
            "sidecar-bundle/agent-test:dev",
            "python3",
            "-m",
            "http.server",
            "8080",
        ],
    )
    .ok("start the outside server");
    let ip = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &outside,
        ],
    )
    .stdout
    .trim()
    .to_string();
    let url = format!("http://{ip}:8080/");
    wait_until(
        "the outside server answers the sidecars container",
        Duration::from_secs(20),
        || {
            b.exec(
                &b.sidecars(),
                &["curl", "-s", "-o", "/dev/null", "--max-time", "2", &url],
            )
            .code
                == 0
        },
    );
    let probe =
        format!("timeout 5 bash -c '</dev/tcp/{ip}/8080' && echo CONNECTED || echo REFUSED");
    let from_agent = b.exec(&b.agent(), &["bash", "-c", &probe]).stdout;
    let _ = run("docker", &["rm", "-f", &outside]);
    assert!(
        from_agent.contains("REFUSED"),
        "agent reached the egress network directly: {from_agent}"
    );

    // The host itself: a service listening on every host address is out of the agent's reach
    // (Docker's internal network alone would deliver packets addressed to the host), while
    // the sidecars container, on the normal egress network, reaches it.
    let host_server = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a host port");
    let host_port = host_server.local_addr().expect("addr").port();
    let gateways = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}",
            &b.agent(),
        ],
    )
    .stdout;
    let mut host_ips: Vec<String> = gateways.split_whitespace().map(str::to_string).collect();
    let docker0 = docker0_ip();
    host_ips.push(docker0.clone());
    for ip in &host_ips {
        let probe = format!(
            "timeout 5 bash -c '</dev/tcp/{ip}/{host_port}' && echo CONNECTED || echo REFUSED"
        );
        let out = b.exec(&b.agent(), &["bash", "-c", &probe]).stdout;
        assert!(
            out.contains("REFUSED"),
            "agent reached the host at {ip}:{host_port}: {out}"
        );
    }
    // Positive control: the kernel completes the handshake from the listen backlog.
    let control = format!("timeout 5 bash -c '</dev/tcp/{docker0}/{host_port}' && echo CONNECTED");
    let out = b.exec(&b.sidecars(), &["bash", "-c", &control]).stdout;
    assert!(
        out.contains("CONNECTED"),
        "positive control: sidecars reach the host: {out}"
    );
    drop(host_server);
    let bridge = bottle_compose::render::internal_bridge_name(&b.project);
    assert!(
        run("iptables", &["-S", "INPUT"])
            .stdout
            .contains(&format!("-i {bridge} -j DROP")),
        "host guard rule for {bridge} is missing"
    );

    // docker logs shows every daemon's lines, prefixed by its name.
    let logs = run("docker", &["logs", &b.sidecars()]);
    let all = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        all.lines().any(|l| l.starts_with("init | ")),
        "no init lines:\n{all}"
    );
    assert!(
        all.lines().any(|l| l.starts_with("pack-exec | ")),
        "no pack-exec lines:\n{all}"
    );
    // The control plane's filter shows only that daemon's lines.
    let filtered = b
        .cp(&["logs", &b.slug, "--daemon", "pack-exec"])
        .ok("logs --daemon");
    // Lines keep their stream (like `docker logs`): read both.
    let both = format!("{}{}", filtered.stdout, filtered.stderr);
    let lines: Vec<&str> = both.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "logs --daemon pack-exec printed nothing");
    for line in &lines {
        assert!(
            line.starts_with("pack-exec | ") || line.starts_with("pack-exec |+ "),
            "foreign line: {line}"
        );
    }

    // docker stop: down within the default 10 s grace, exit code 0.
    let started = Instant::now();
    run("docker", &["stop", &b.sidecars()]).ok("docker stop");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "docker stop took {took:?}");
    assert_eq!(b.inspect(&b.sidecars(), "{{.State.ExitCode}}"), "0");

    // down removes containers, networks and volumes; a second down is a no-op.
    b.cp(&["down", &b.slug]).ok("down");
    assert_eq!(
        b.leftovers(),
        Vec::<String>::new(),
        "down left objects behind"
    );
    assert!(
        !run("iptables", &["-S", "INPUT"]).stdout.contains(&bridge),
        "down left the host guard rule behind"
    );
    b.cp(&["down", &b.slug]).ok("second down");
}

#[test]
fn killed_daemon_is_restarted_and_the_bottle_stays_healthy() {
    if !require_docker() {
        return;
    }
    let b = Bottle::up("restart", PACKS_BOTTLE);
    let pid = b.daemon_status("pack-exec")["pid"]
        .as_i64()
        .expect("pack-exec has a pid");
    b.exec(&b.sidecars(), &["bash", "-c", &format!("kill -9 {pid}")])
        .ok("kill pack-exec");
    wait_until(
        "pack-exec restarted and ready",
        Duration::from_secs(30),
        || {
            let s = b.daemon_status("pack-exec");
            s["restarts"].as_u64().unwrap_or(0) >= 1
                && s["ready"] == true
                && s["pid"].as_i64() != Some(pid)
        },
    );
    b.exec(&b.sidecars(), &["/sidecar-init", "health"])
        .ok("health after restart");
    let answer = call_upper_from_agent(&b, "again");
    assert!(
        answer.contains("AGAIN"),
        "pack call after restart: {answer}"
    );
    let logs = run("docker", &["logs", &b.sidecars()]);
    let all = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        all.lines()
            .any(|l| l.starts_with("init | ") && l.contains("pack-exec") && l.contains("restart")),
        "no init line about the restart:\n{all}"
    );
    assert_eq!(b.inspect(&b.sidecars(), "{{.State.Running}}"), "true");
}

#[test]
fn daemon_dying_with_restart_never_sets_the_container_exit_code() {
    if !require_docker() {
        return;
    }
    let manifest = format!("{PACKS_BOTTLE}\n[daemon_settings.pack-exec]\nrestart = \"never\"\n");
    let b = Bottle::up("never", &manifest);
    let pid = b.daemon_status("pack-exec")["pid"]
        .as_i64()
        .expect("pack-exec has a pid");
    b.exec(&b.sidecars(), &["bash", "-c", &format!("kill -9 {pid}")])
        .ok("kill pack-exec");
    // Nothing restarts it; the bundle's other daemon (the always-on dns responder) keeps init
    // running, so stop the container: init's exit code is still the worst daemon code.
    wait_until("pack-exec is exited", Duration::from_secs(30), || {
        b.daemon_status("pack-exec")["state"] == "exited"
    });
    run("docker", &["stop", &b.sidecars()]).ok("docker stop");
    wait_until(
        "the sidecars container exits",
        Duration::from_secs(30),
        || b.inspect(&b.sidecars(), "{{.State.Running}}") == "false",
    );
    assert_eq!(
        b.inspect(&b.sidecars(), "{{.State.ExitCode}}"),
        "137",
        "128 + SIGKILL"
    );
}
