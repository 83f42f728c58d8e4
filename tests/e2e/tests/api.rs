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
        project_leftovers(slug)
    }

    fn cleanup(&self) {
        let _ = run("docker", &["rm", "-f", &self.name]);
        for slug in &self.slugs {
            remove_project(slug);
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

/// `docker run -d -v /var/run/docker.sock:/var/run/docker.sock -v <named volume>:/var/lib/sidecar-bundle
/// -p 127.0.0.1::8080 --group-add <socket gid> IMAGE`: no host network, no same-path mount, the
/// image's own non-root user. The full default bottle (all five daemons, a generated
/// credential, the CA, the seed packs) comes up through the API; its files arrive in read-only
/// volumes with each daemon's owner (no bind mount at all); a pack is called and another
/// installed through pack-exec's listeners on the sidecars container's loopback (no published
/// operator port); the route's credential reaches the demo upstream; and `DELETE` leaves
/// nothing behind — files volumes and loaders included.
#[test]
fn the_control_plane_image_runs_the_conventional_way() {
    if !require_docker() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let n = std::process::id() % 100_000;
    let slug = format!("conv-{n}");
    let name = format!("e2e-cp-conv-{n}");
    let volume = format!("e2e-cp-state-{n}");
    let _gone = e2e::WorldContainer(name.clone());
    let cleanup = || {
        let _ = run("docker", &["rm", "-f", &name]);
        remove_project(&slug);
        let _ = run("docker", &["volume", "rm", &volume]);
    };
    cleanup();
    let gid = std::fs::metadata("/var/run/docker.sock")
        .expect("the Docker socket")
        .gid()
        .to_string();
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            &format!("CONTROL_PLANE_TOKEN={TOKEN}"),
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &format!("{volume}:/var/lib/sidecar-bundle"),
            "-p",
            "127.0.0.1::8080",
            "--group-add",
            &gid,
            IMAGE,
        ],
    )
    .ok("docker run control-plane, the conventional way");
    let addr = run("docker", &["port", &name, "8080/tcp"])
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let url = format!("http://{addr}");
    let curl = |args: &[&str]| {
        cmd("curl")
            .args(["-sS", "--max-time", "240", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .args(args)
            .timeout(Duration::from_secs(250))
            .run()
    };
    let logs = || {
        let l = run("docker", &["logs", &name]);
        format!("{}{}", l.stdout, l.stderr)
    };
    wait_until("the control plane answers", Duration::from_secs(30), || {
        run("curl", &["-fsS", &format!("{url}/healthz")]).code == 0
    });
    let user = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.Config.User}} {{.HostConfig.NetworkMode}}",
            &name,
        ],
    );
    assert_eq!(
        user.stdout.trim(),
        "65532:65532 default",
        "non-root, bridge network"
    );

    // The default bottle, through the API.
    let example = include_str!("../../../examples/bottle.toml")
        .replace("slug = \"example\"", &format!("slug = \"{slug}\""));
    assert!(example.contains(&slug), "the example names its slug");
    let (status, body) = split(curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/toml",
        "--data-binary",
        &example,
        &format!("{url}/v1/bottles"),
    ]));
    assert_eq!(status, 201, "create: {body}\n{}", logs());
    let detail = curl(&[&format!("{url}/v1/bottles/{slug}")]);
    let (status, detail) = split(detail);
    assert_eq!(status, 200, "{detail}");
    let detail: serde_json::Value = serde_json::from_str(&detail).expect("detail JSON");
    for daemon in ["pipelock", "egress", "git-gate", "supervise", "pack-exec"] {
        let d = detail["daemons"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == daemon).cloned())
            .unwrap_or_else(|| panic!("{daemon} in {detail}"));
        assert_eq!(d["ready"], true, "{daemon}: {d}");
    }

    // No bind mount: every file came in a read-only volume, owned as in the rooms table.
    let sidecars = format!("bot-bottle-sidecars-{slug}");
    let mounts = run("docker", &["inspect", "-f", "{{json .Mounts}}", &sidecars]);
    let mounts: serde_json::Value = serde_json::from_str(mounts.stdout.trim()).expect("mounts");
    let mounts = mounts.as_array().cloned().unwrap_or_default();
    assert!(
        mounts.iter().all(|m| m["Type"] == "volume"),
        "a bind mount depends on host paths: {mounts:?}"
    );
    let etc = mounts
        .iter()
        .find(|m| m["Destination"] == "/etc/sidecars")
        .unwrap_or_else(|| panic!("/etc/sidecars volume in {mounts:?}"));
    assert_eq!(etc["RW"], false, "{etc}");
    let etc_volume = etc["Name"].as_str().unwrap_or_default().to_string();
    let listing = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{etc_volume}:/v:ro"),
            "sidecar-bundle/debian-base:bookworm",
            "find",
            "/v",
            "-maxdepth",
            "1",
            "-name",
            "*.json",
            "-printf",
            "%f %U %m\n",
        ],
    )
    .ok("list the /etc/sidecars volume");
    for (file, uid) in [
        ("init.json", 0),
        (
            "pack-exec.json",
            bottle_compose::bottle_spec::Daemon::PackExec.uid(),
        ),
        (
            "egress.json",
            bottle_compose::bottle_spec::Daemon::Egress.uid(),
        ),
    ] {
        assert!(
            listing
                .stdout
                .lines()
                .any(|l| l == format!("{file} {uid} 400")),
            "{file} owned by {uid}, 0400: {}",
            listing.stdout
        );
    }

    // A shipped pack over the agent listener, through the relay.
    let (status, body) = split(curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"text":"conventional"}"#,
        &format!("{url}/v1/bottles/{slug}/packs/cmd.upper"),
    ]));
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert!(body.contains("CONVENTIONAL"), "{body}");

    // An install over the operator listener (unpublished: the relay reaches it), then a call.
    let pack = tempfile::tempdir().expect("pack dir");
    let upper = e2e::workspace_root().join("packs/cmd.upper");
    std::fs::copy(upper.join("upper"), pack.path().join("upper")).expect("handler");
    let manifest = std::fs::read_to_string(upper.join("helmdeck-pack.yaml"))
        .expect("helmdeck-pack.yaml")
        .replace("name: cmd.upper", "name: cmd.shout");
    std::fs::write(pack.path().join("helmdeck-pack.yaml"), manifest).expect("write the manifest");
    let archive = pack.path().join("pack.tar.gz");
    run(
        "tar",
        &[
            "-czf",
            &archive.display().to_string(),
            "-C",
            &pack.path().display().to_string(),
            "helmdeck-pack.yaml",
            "upper",
        ],
    )
    .ok("tar the pack");
    let (status, body) = split(curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/gzip",
        "--data-binary",
        &format!("@{}", archive.display()),
        &format!("{url}/v1/bottles/{slug}/packs/cmd.shout?allow_unsigned=1&self_test=1"),
    ]));
    assert_eq!(status, 201, "install: {body}\n{}", logs());
    let (status, body) = split(curl(&[
        "-X",
        "POST",
        "--data-binary",
        r#"{"text":"installed"}"#,
        &format!("{url}/v1/bottles/{slug}/packs/cmd.shout"),
    ]));
    assert_eq!((status, body.contains("INSTALLED")), (200, true), "{body}");
    let ports = run("docker", &["port", &sidecars]).stdout;
    assert!(
        !ports.contains(&format!(
            "{}/tcp",
            bottle_compose::bottle_spec::PACK_EXEC_OPERATOR_PORT
        )),
        "the operator listener is not published: {ports}"
    );

    // The route's generated credential (from the secrets volume) reaches the demo upstream.
    let agent = format!("bot-bottle-agent-{slug}");
    let through = run(
        "docker",
        &[
            "exec",
            &agent,
            "curl",
            "-sS",
            "-m",
            "10",
            "http://demo-upstream:8080/hello",
        ],
    );
    assert!(through.stdout.contains("received: Bearer"), "{through:?}");

    // Gone without a trace: containers, loaders, networks, every volume of the project.
    let (status, body) = split(curl(&["-X", "DELETE", &format!("{url}/v1/bottles/{slug}")]));
    assert_eq!(status, 200, "{body}");
    assert!(
        project_leftovers(&slug).is_empty(),
        "{:?}",
        project_leftovers(&slug)
    );
    cleanup();
}

/// Containers (loaders included), networks and volumes of bottle `slug`'s project.
fn project_leftovers(slug: &str) -> Vec<String> {
    let project = format!("bot-bottle-{slug}");
    let label = format!("label=com.docker.compose.project={project}");
    let loader = format!("label=io.bot-bottle.files-loader={project}");
    let mut left = Vec::new();
    for args in [
        vec!["ps", "-aq", "--filter", &label],
        vec!["ps", "-aq", "--filter", &loader],
        vec!["network", "ls", "-q", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
    ] {
        left.extend(run("docker", &args).stdout.lines().map(String::from));
    }
    left
}

/// Remove whatever bottle `slug`'s project left (a failed run).
fn remove_project(slug: &str) {
    let project = format!("bot-bottle-{slug}");
    let label = format!("label=com.docker.compose.project={project}");
    let loader = format!("label=io.bot-bottle.files-loader={project}");
    for (list, rm) in [
        (
            vec!["ps", "-aq", "--filter", &label],
            vec!["rm", "-f", "-v"],
        ),
        (
            vec!["ps", "-aq", "--filter", &loader],
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
