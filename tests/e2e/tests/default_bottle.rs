//! The first run: `control-plane up` with no manifest brings up the default bottle — all five
//! guards healthy, offline, with a demo upstream and a generated demo credential — and prints a
//! "try it" block. This test runs every command of that block, as printed, and checks what
//! each one shows; a command the block gains without an expectation here fails the test.

use std::path::Path;
use std::time::Duration;

use e2e::{cmd, control_plane, require_docker, Output};

/// What one printed command must show. `marker` picks the command (a substring of it).
struct Expect {
    marker: &'static str,
    succeeds: bool,
    shows: &'static [&'static str],
}

const EXPECTED: &[Expect] = &[
    Expect {
        marker: "demo-upstream:8080/hello",
        succeeds: true,
        shows: &["\"upstream\": \"demo-upstream\"", "received: Bearer"],
    },
    Expect {
        marker: "http://example.com/",
        succeeds: true,
        shows: &["host not on allowlist: example.com"],
    },
    Expect {
        marker: "/v1/packs/cmd.upper",
        succeeds: true,
        shows: &["HELLO"],
    },
    Expect {
        marker: "bottle-mcp call cmd-upper",
        succeeds: true,
        shows: &["{\"text\": \"HELLO\"}"],
    },
    Expect {
        marker: "git clone",
        succeeds: true,
        shows: &[],
    },
    Expect {
        marker: "aws_key=",
        succeeds: false,
        shows: &["cfg.py", "aws-access-key"],
    },
    Expect {
        marker: "bottle-mcp request-approval",
        succeeds: true,
        shows: &["\"status\": \"pending\""],
    },
    Expect {
        marker: "approvals list",
        succeeds: true,
        shows: &["ship v1"],
    },
    Expect {
        marker: "approvals approve",
        succeeds: true,
        shows: &[],
    },
    Expect {
        marker: "docker logs",
        succeeds: true,
        shows: &[
            "init | ",
            "pipelock | ",
            "egress | ",
            "git-gate | ",
            "supervise | ",
            "pack-exec | ",
        ],
    },
    Expect {
        marker: "--daemon pipelock",
        succeeds: true,
        shows: &["pipelock | "],
    },
    Expect {
        marker: " down ",
        succeeds: true,
        shows: &[],
    },
];

/// Runs the control plane's `down` for the default bottle when the test ends, however.
struct Down<'a> {
    env: &'a [(&'a str, String)],
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = with_env(cmd(control_plane()).args(["down", "example"]), self.env).run();
    }
}

fn with_env(mut c: e2e::Cmd, env: &[(&str, String)]) -> e2e::Cmd {
    for (k, v) in env {
        c = c.env(k, v);
    }
    c.timeout(Duration::from_secs(180))
}

/// The printed commands: the lines of the block that are not comments.
fn commands(up: &str) -> Vec<String> {
    let block = up
        .split_once("\ntry it:\n")
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("`up` printed no try-it block:\n{up}"));
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn approval_id(out: &Output) -> String {
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("bottle-mcp printed no JSON ({e}): {out:?}"));
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval id in {out:?}"))
        .to_string()
}

#[test]
fn the_default_bottle_runs_every_guard_offline_and_every_printed_command_works() {
    if !require_docker() {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    // Its own name prefix: a bottle `make up` started on this machine is left alone.
    let prefix = format!("e2e-dflt-{}", std::process::id() % 100_000);
    let env = [
        ("BOT_BOTTLE_STATE_DIR", state.path().display().to_string()),
        ("BOT_BOTTLE_PREFIX", prefix.clone()),
    ];
    let _down = Down { env: &env };
    let up = with_env(cmd(control_plane()).args(["up"]), &env).run();
    assert_eq!(up.code, 0, "control-plane up (no manifest) failed: {up:?}");
    assert!(up.stdout.contains("is running"), "{up:?}");

    // All five guards (and the DNS responder) run, healthy.
    let sidecars = format!("{prefix}-sidecars-example");
    let status = cmd("docker")
        .args(["exec", &sidecars, "/sidecar-init", "status", "--json"])
        .run();
    let status: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("sidecar-init status ({e}): {status:?}"));
    for daemon in ["pipelock", "egress", "git-gate", "supervise", "pack-exec"] {
        let entry = status
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == daemon))
            .unwrap_or_else(|| panic!("{daemon} is not in the bundle: {status}"));
        assert_eq!(
            (&entry["state"], &entry["ready"]),
            (&serde_json::json!("running"), &serde_json::json!(true)),
            "{daemon}: {entry}"
        );
    }
    // The demo credential: generated into the bottle's state, root-only.
    let token_file = state
        .path()
        .join("bottles/example")
        .join(bottle_compose::render::GENERATED_CREDENTIALS_DIR)
        .join("DEMO_TOKEN");
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()));
    assert_eq!(token.len(), 64, "a 32-byte hex value");
    assert_root_only(&token_file);

    // The demo upstream is the sidecars' world, not the agent's: without the proxy the agent
    // can neither resolve it nor reach its address.
    let agent = format!("{prefix}-agent-example");
    let demo_ip = cmd("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &format!("{prefix}-demo-upstream-example"),
        ])
        .run()
        .stdout
        .trim()
        .to_string();
    assert!(!demo_ip.is_empty(), "the demo upstream has an address");
    for target in ["demo-upstream", demo_ip.as_str()] {
        let direct = cmd("docker")
            .args([
                "exec",
                &agent,
                "curl",
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "3",
                &format!("http://{target}:8080/"),
            ])
            .run();
        assert_ne!(
            direct.code, 0,
            "the agent reached {target} directly: {direct:?}"
        );
        assert!(!direct.stdout.contains("demo-upstream"), "{direct:?}");
    }
    // Its SSRF exemption (Docker's address pools) opens no other private host: through the
    // proxy, an address in those pools is still refused by the allowlist.
    let private = cmd("docker")
        .args([
            "exec",
            &agent,
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{demo_ip}:8080/"),
        ])
        .run();
    assert!(
        private.stdout.contains("host not on allowlist"),
        "a private address through the proxy: {private:?}"
    );
    let printed = commands(&up.stdout);
    assert_eq!(
        printed.len(),
        EXPECTED.len(),
        "every printed command has an expectation here, and every expectation a command: {printed:#?}"
    );
    let mut id: Option<String> = None;
    for (line, expect) in printed.iter().zip(EXPECTED) {
        assert!(
            line.contains(expect.marker),
            "the block's commands changed order or wording: {line:?} (expected one with {:?})",
            expect.marker
        );
        let line = match &id {
            Some(id) => line.replace(control_plane::try_it::ID_PLACEHOLDER, id),
            None => line.clone(),
        };
        if expect.marker == " down " {
            // Before removing it: the clean push reached the demo upstream.
            let log = cmd("docker")
                .args([
                    "exec",
                    &format!("{prefix}-demo-upstream-example"),
                    "git",
                    "--git-dir",
                    "/tmp/git/demo.git",
                    "log",
                    "--format=%s",
                    "main",
                ])
                .run();
            assert!(
                log.stdout.starts_with("hi\n"),
                "clean push not upstream: {log:?}"
            );
            assert!(
                !log.stdout.contains("key"),
                "refused push upstream: {log:?}"
            );
        }
        let out = with_env(cmd("bash").args(["-c", &line]), &env).run();
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.code == 0,
            expect.succeeds,
            "`{line}` exited {}: {all}",
            out.code
        );
        for s in expect.shows {
            assert!(all.contains(s), "`{line}` does not show {s:?}: {all}");
        }
        assert!(
            !all.contains(token.trim()),
            "`{line}` showed the demo credential"
        );
        assert!(
            !all.contains("AKIAQWERTYUIOPASDFGH"),
            "`{line}` echoed the token: {all}"
        );
        if expect.marker == "bottle-mcp request-approval" {
            id = Some(approval_id(&out));
        }
        if expect.marker == "approvals approve" {
            let id = id.as_deref().unwrap_or_default();
            let seen = cmd("docker")
                .args(["exec", &agent, "bottle-mcp", "get-approval", id])
                .run();
            assert!(seen.stdout.contains("\"status\": \"approved\""), "{seen:?}");
        }
    }
    // `down` removed it all.
    let left = cmd("docker")
        .args(["ps", "-aq", "--filter", &format!("name={prefix}-")])
        .run();
    assert_eq!(left.stdout.trim(), "", "containers left after down");
}

fn assert_root_only(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o400),
        "{}",
        path.display()
    );
}
