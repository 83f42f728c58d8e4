//! The control-plane image as a service: the distroless container (no shell, no docker CLI, no
//! compose) with the Docker socket mounted and a token, driven only over HTTP with curl.
//! Create a bottle, wait until healthy, call the `upper` pack through the API, read logs
//! filtered by daemon, 401 without or with a wrong token, kill the control plane mid-create and
//! restart it (it finds both bottles again, nothing duplicated or orphaned), delete — nothing
//! left behind.

use std::path::Path;
use std::time::Duration;

use e2e::{cmd, require_docker, run, wait_until, Output};

const IMAGE: &str = "sidecar-bundle/control-plane:dev";
const TOKEN: &str = "e2e-token-5f1c9a7b3d2e4f60";

/// The control-plane container; removed (with every bottle it made) on drop.
struct ControlPlane {
    name: String,
    url: String,
    state: tempfile::TempDir,
    slugs: Vec<String>,
}

impl ControlPlane {
    fn start(slugs: &[&str]) -> ControlPlane {
        let state = tempfile::tempdir().expect("state dir");
        // The bottles' files are bind-mounted by the Docker daemon: same path inside and out.
        let dir = state.path().display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let name = format!("e2e-control-plane-{}", std::process::id() % 100_000);
        let cp = ControlPlane {
            url: format!("http://127.0.0.1:{port}"),
            name,
            state,
            slugs: slugs.iter().map(|s| s.to_string()).collect(),
        };
        cp.cleanup();
        let listen = format!("127.0.0.1:{port}");
        run(
            "docker",
            &[
                "run",
                "-d",
                "--name",
                &cp.name,
                // Bottles publish their daemons on the host's loopback.
                "--network",
                "host",
                // The socket is root's; `--group-add <socket gid>` works too.
                "--user",
                "0:0",
                "-e",
                &format!("CONTROL_PLANE_TOKEN={TOKEN}"),
                "-e",
                &format!("BOT_BOTTLE_STATE_DIR={dir}"),
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                &format!("{dir}:{dir}"),
                IMAGE,
                "serve",
                "--listen",
                &listen,
            ],
        )
        .ok("docker run control-plane");
        cp.wait_ready();
        cp
    }

    fn wait_ready(&self) {
        wait_until(
            "the control plane answers /healthz",
            Duration::from_secs(30),
            || self.curl(&["-f", &format!("{}/healthz", self.url)]).code == 0,
        );
    }

    fn curl(&self, args: &[&str]) -> Output {
        cmd("curl")
            .args(["-sS", "--max-time", "240"])
            .args(args)
            .timeout(Duration::from_secs(250))
            .run()
    }

    /// `curl` with the token; returns (status, body).
    fn call(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Authorization: Bearer {TOKEN}");
        let mut args = vec!["-X", method, "-H", &auth, "-w", "\n%{http_code}", &url];
        let ct;
        if let Some((content_type, data)) = body {
            ct = format!("Content-Type: {content_type}");
            args.extend(["-H", &ct, "--data-binary", data]);
        }
        split(self.curl(&args))
    }

    fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn logs(&self) -> String {
        run("docker", &["logs", &self.name]).stderr
    }

    /// Every Docker object of this test's bottles.
    fn leftovers(&self, slug: &str) -> Vec<String> {
        let label = format!("label=com.docker.compose.project=bot-bottle-{slug}");
        let mut left = Vec::new();
        for args in [
            vec!["ps", "-aq", "--filter", &label],
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["volume", "ls", "-q", "--filter", &label],
        ] {
            left.extend(run("docker", &args).stdout.lines().map(String::from));
        }
        left
    }

    fn cleanup(&self) {
        let _ = run("docker", &["rm", "-f", &self.name]);
        for slug in &self.slugs {
            let label = format!("label=com.docker.compose.project=bot-bottle-{slug}");
            for (list, rm) in [
                (
                    vec!["ps", "-aq", "--filter", &label],
                    vec!["rm", "-f", "-v"],
                ),
                (
                    vec!["network", "ls", "-q", "--filter", &label],
                    vec!["network", "rm"],
                ),
                (
                    vec!["volume", "ls", "-q", "--filter", &label],
                    vec!["volume", "rm"],
                ),
            ] {
                let ids: Vec<String> = run("docker", &list)
                    .stdout
                    .lines()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let mut args: Vec<String> = rm.iter().map(|s| s.to_string()).collect();
                    args.extend(ids);
                    let _ = run("docker", &args);
                }
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("control-plane container log:\n{}", self.logs());
        }
        self.cleanup();
    }
}

fn split(out: Output) -> (u16, String) {
    let (body, status) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    let status = status
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl gave no status: {} {}", out.stdout, out.stderr));
    (status, body.to_string())
}

fn manifest(slug: &str) -> String {
    format!(
        r#"slug = "{slug}"
daemons = ["pack-exec"]
packs = ["packs/cmd.upper"]
[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#
    )
}

#[test]
fn the_control_plane_image_runs_bottles_over_http() {
    if !require_docker() {
        return;
    }
    let n = std::process::id() % 100_000;
    let (a, b) = (format!("api-a-{n}"), format!("api-b-{n}"));
    let cp = ControlPlane::start(&[&a, &b]);

    // No token, a wrong token: 401, nothing created.
    let list = format!("{}/v1/bottles", cp.url);
    let (status, body) = split(cp.curl(&["-w", "\n%{http_code}", &list]));
    assert_eq!(status, 401, "{body}");
    let wrong = "Authorization: Bearer wrong-token-000000000000";
    let (status, _) = split(cp.curl(&["-H", wrong, "-w", "\n%{http_code}", &list]));
    assert_eq!(status, 401);
    let (status, body) = split(cp.curl(&[
        "-X",
        "POST",
        "-H",
        wrong,
        "--data-binary",
        &manifest(&a),
        "-w",
        "\n%{http_code}",
        &list,
    ]));
    assert_eq!(status, 401, "{body}");
    assert!(
        cp.leftovers(&a).is_empty(),
        "a refused create started something"
    );

    // Create and wait healthy (the answer comes once the bundle is healthy).
    let (status, body) = cp.call(
        "POST",
        "/v1/bottles",
        Some(("application/toml", &manifest(&a))),
    );
    assert_eq!(status, 201, "create: {body}\n{}", cp.logs());
    let created: serde_json::Value = serde_json::from_str(&body).expect("create JSON");
    assert_eq!(created["state"], "running", "{body}");
    assert!(
        created["notes"].to_string().contains("host guard"),
        "no iptables in the image: the create says only the network layer applies: {body}"
    );
    let (status, body) = cp.call(
        "POST",
        "/v1/bottles",
        Some(("application/toml", &manifest(&a))),
    );
    assert_eq!(status, 409, "{body}");

    // The upper pack through the API.
    let (status, body) = cp.call(
        "POST",
        &format!("/v1/bottles/{a}/packs/cmd.upper"),
        Some(("application/json", r#"{"text":"hello from the api"}"#)),
    );
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("pack JSON");
    assert_eq!(answer["output"]["text"], "HELLO FROM THE API", "{body}");

    // Detail: daemon health from sidecar-init, endpoints.
    let detail = cp.json(&format!("/v1/bottles/{a}"));
    let daemons = detail["daemons"].as_array().cloned().unwrap_or_default();
    assert!(
        daemons.iter().any(|d| d["name"] == "pack-exec"),
        "sidecar-init status in the detail: {detail}"
    );
    assert_eq!(detail["endpoints"][0]["daemon"], "pack-exec", "{detail}");

    // Logs filtered by daemon: only pack-exec's lines, and the pack call is among them.
    let (status, logs) = cp.call(
        "GET",
        &format!("/v1/bottles/{a}/logs?daemon=pack-exec"),
        None,
    );
    assert_eq!(status, 200, "{logs}");
    assert!(!logs.trim().is_empty(), "no pack-exec lines");
    for line in logs.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with("pack-exec | "), "foreign line: {line:?}");
    }
    assert!(logs.contains("cmd.upper"), "{logs}");
    let (status, yaml) = cp.call("GET", &format!("/v1/bottles/{a}/compose.yaml"), None);
    assert_eq!(status, 200);
    assert!(yaml.contains(&format!("bot-bottle-sidecars-{a}")), "{yaml}");

    // The agent cannot reach the host, even without the iptables layer (none in the image).
    let agent = format!("bot-bottle-agent-{a}");
    let gw = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Gateway}} {{end}}",
            &agent,
        ],
    )
    .stdout;
    for host_ip in gw.split_whitespace().chain([e2e::docker0_ip().as_str()]) {
        let probe = run(
            "docker",
            &[
                "exec",
                &agent,
                "curl",
                "-s",
                "-m",
                "3",
                "-o",
                "/dev/null",
                &format!(
                    "http://{host_ip}:{}/healthz",
                    cp.url.rsplit(':').next().unwrap_or("8080")
                ),
            ],
        );
        assert_ne!(probe.code, 0, "the agent reached the host at {host_ip}");
    }

    // Kill the control plane in the middle of a create, then start it again.
    let cp_url = cp.url.clone();
    let b_manifest = manifest(&b);
    let creating = std::thread::spawn(move || {
        cmd("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
            ])
            .args([
                "-H",
                "Content-Type: application/toml",
                "--data-binary",
                &b_manifest,
            ])
            .args([format!("{cp_url}/v1/bottles")])
            .timeout(Duration::from_secs(60))
            .run()
    });
    let b_sidecars = format!("bot-bottle-sidecars-{b}");
    wait_until(
        "the second bottle's sidecars container exists",
        Duration::from_secs(60),
        || {
            !run(
                "docker",
                &["ps", "-aq", "--filter", &format!("name=^{b_sidecars}$")],
            )
            .stdout
            .trim()
            .is_empty()
        },
    );
    run("docker", &["kill", &cp.name]).ok("docker kill control-plane");
    let _ = creating.join();
    // And lose the interrupted bottle's state record: it is found again by its labels.
    let _ = std::fs::remove_dir_all(cp.state.path().join("bottles").join(&b));
    run("docker", &["start", &cp.name]).ok("docker start control-plane");
    cp.wait_ready();

    let listed = cp.json("/v1/bottles");
    let bottles = listed["bottles"].as_array().cloned().unwrap_or_default();
    for slug in [&a, &b] {
        let n = bottles
            .iter()
            .filter(|x| x["slug"] == slug.as_str())
            .count();
        assert_eq!(n, 1, "{slug} listed {n} times after the restart: {listed}");
    }
    let a_bottle = bottles
        .iter()
        .find(|x| x["slug"] == a.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(a_bottle["state"], "running", "{listed}");
    let a_containers = run(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project=bot-bottle-{a}"),
        ],
    );
    assert_eq!(a_containers.stdout.lines().count(), 2, "nothing duplicated");

    // Delete both: nothing left in Docker or in the state dir; DELETE again is a no-op.
    for slug in [&a, &b] {
        let (status, body) = cp.call("DELETE", &format!("/v1/bottles/{slug}"), None);
        assert_eq!(status, 200, "{body}");
        assert!(
            cp.leftovers(slug).is_empty(),
            "{slug} left {:?}",
            cp.leftovers(slug)
        );
        let (status, body) = cp.call("DELETE", &format!("/v1/bottles/{slug}"), None);
        assert_eq!(
            (status, body.contains("\"existed\":false")),
            (200, true),
            "{body}"
        );
    }
    let bottles_dir = Path::new(cp.state.path()).join("bottles");
    let remaining: Vec<_> = std::fs::read_dir(&bottles_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(remaining.is_empty(), "state left behind: {remaining:?}");
    assert_eq!(cp.json("/v1/bottles")["bottles"], serde_json::json!([]));
}

/// The image run the conventional way, as its own non-root user: without the socket's group it
/// refuses to start and says which `--group-add` fixes it; with that group it serves.
#[test]
fn the_control_plane_image_names_the_socket_group_it_needs_and_serves_with_it() {
    if !require_docker() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let gid = std::fs::metadata("/var/run/docker.sock")
        .expect("the Docker socket")
        .gid()
        .to_string();
    let name = format!("e2e-cp-group-{}", std::process::id() % 100_000);
    let _gone = e2e::WorldContainer(name.clone());
    let _ = run("docker", &["rm", "-f", &name]);
    let base = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "CONTROL_PLANE_TOKEN=e2e-token-group-0123456789",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-p",
            "127.0.0.1::8080",
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        run("docker", &args).ok("docker run control-plane");
    };
    // No group: the default user (65532) cannot use the socket.
    base(&[]);
    wait_until("the control plane exits", Duration::from_secs(20), || {
        run("docker", &["inspect", "-f", "{{.State.Running}}", &name])
            .stdout
            .trim()
            == "false"
    });
    let code = run("docker", &["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_ne!(code.stdout.trim(), "0", "it must refuse, not exit cleanly");
    let logs = run("docker", &["logs", &name]);
    let all = format!("{}{}", logs.stdout, logs.stderr);
    assert!(all.contains(&format!("--group-add {gid}")), "{all}");
    assert!(all.contains("permission denied"), "{all}");
    run("docker", &["rm", "-f", &name]).ok("rm");
    // With the socket's group it serves, still as 65532.
    base(&["--group-add", &gid]);
    let port = run("docker", &["port", &name, "8080/tcp"]);
    let addr = port
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    wait_until("the control plane answers", Duration::from_secs(20), || {
        run("curl", &["-fsS", &format!("http://{addr}/healthz")]).code == 0
    });
    let user = run("docker", &["inspect", "-f", "{{.Config.User}}", &name]);
    assert_eq!(user.stdout.trim(), "65532:65532");
}
