//! The real `control-plane` binary: `render` of valid and invalid manifests, usage errors and
//! their exit codes, `down` of an unknown bottle, `ps` of an empty state dir. Each test runs in
//! its own temp dir with its own state dir and a hard timeout.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn control_plane(args: &[&str], state: &Path, cwd: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(args)
        .current_dir(cwd)
        .env("BOT_BOTTLE_STATE_DIR", state)
        .env_remove("BOT_BOTTLE_SIDECAR_IMAGE")
        .env_remove("BOT_BOTTLE_PREFIX")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn control-plane");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("control-plane {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn render_prints_the_compose_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = repo().join("examples/bottle.toml");
    let out = control_plane(
        &["render", manifest.to_str().unwrap()],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.contains("container_name: bot-bottle-sidecars-example"),
        "{yaml}"
    );
    assert!(
        yaml.contains("PACK_EXEC_URL: http://sidecars:9000"),
        "{yaml}"
    );
    assert!(
        !tmp.path().join("bottles").exists(),
        "render writes no state"
    );
}

#[test]
fn render_out_writes_the_project_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = repo().join("examples/bottle.toml");
    let out_dir = tmp.path().join("out");
    let out = control_plane(
        &[
            "render",
            manifest.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in [
        "compose.yaml",
        "config/init.json",
        "config/pack-exec.json",
        "packs/cmd.upper/helmdeck-pack.yaml",
        "packs/cmd.wordcount/wordcount",
        "manifest.toml",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(out_dir.join("compose.yaml")).unwrap(),
        text(&out.stdout)
    );
}

#[test]
fn render_of_a_json_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("b.json");
    std::fs::write(
        &m,
        r#"{"slug":"j","agent":{"image":"a:1","env":{"X":"$y"}}}"#,
    )
    .unwrap();
    let out = control_plane(&["render", m.to_str().unwrap()], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    // (the DNS responder, which every bottle runs, may lead the list)
    assert!(
        yaml.lines().any(|l| l.contains("SIDECARS_DAEMONS: ")
            && l.trim_end().rsplit([' ', ',']).next() == Some("pack-exec")
            && !l.contains("egress")),
        "{yaml}"
    );
    assert!(yaml.contains("X: $$y"), "{yaml}");
}

#[test]
fn invalid_manifest_exits_2_naming_every_bad_field() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("bad.toml");
    std::fs::write(
        &m,
        "slug = \"Bad\"\ndaemons = [\"pack-exec\", \"pack-exec\"]\n[agent]\nimage = \"\"\nuser = \"0\"\nenv = { PACK_EXEC_URL = \"x\" }\n[resources.agent]\nmemory = \"huge\"\n",
    )
    .unwrap();
    let out = control_plane(&["render", m.to_str().unwrap()], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    for field in [
        "slug:",
        "daemons[1]:",
        "agent.image:",
        "agent.user:",
        "agent.env.PACK_EXEC_URL:",
        "resources.agent.memory:",
    ] {
        assert!(err.contains(field), "{field} not named in:\n{err}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_field_exits_2_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("typo.toml");
    std::fs::write(&m, "slug = \"a\"\n[agent]\nimage = \"i\"\nimgae = \"j\"\n").unwrap();
    let out = control_plane(&["render", m.to_str().unwrap()], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("agent.imgae"), "{err}");
}

#[test]
fn missing_manifest_and_bad_usage_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = control_plane(
        &["render", "/nonexistent/bottle.toml"],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/bottle.toml"));
    let out = control_plane(&["frobnicate"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let out = control_plane(&["render"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let out = control_plane(
        &["packs", "call", "x", "cmd.upper", "{not json"],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = control_plane(&["--help"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("Usage: control-plane"));
}

#[test]
fn sidecar_image_env_override_reaches_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = repo().join("examples/bottle.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["render", manifest.to_str().unwrap()])
        .env("BOT_BOTTLE_STATE_DIR", tmp.path())
        .env("BOT_BOTTLE_SIDECAR_IMAGE", "mine/sidecars:1.2.3")
        .env("BOT_BOTTLE_PREFIX", "acme")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let yaml = text(&out.stdout);
    assert!(yaml.contains("image: mine/sidecars:1.2.3"), "{yaml}");
    assert!(
        yaml.contains("container_name: acme-sidecars-example"),
        "{yaml}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["render", manifest.to_str().unwrap()])
        .env("BOT_BOTTLE_STATE_DIR", tmp.path())
        .env("BOT_BOTTLE_SIDECAR_IMAGE", "not an image")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("BOT_BOTTLE_SIDECAR_IMAGE"));
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("Docker is not reachable and CI is set");
        }
        eprintln!("note: Docker is not reachable; skipping (this fails when CI is set)");
    }
    ok
}

#[test]
fn down_of_an_unknown_bottle_succeeds_with_a_note() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = control_plane(&["down", "never-was-up-here"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to do"),
        "{}",
        text(&out.stderr)
    );
    let out = control_plane(&["down", "Not A Slug"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ps_of_an_empty_state_dir_lists_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = control_plane(&["ps", "--json"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "[]");
}

#[test]
fn logs_and_packs_of_an_unknown_bottle_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [vec!["logs", "nope"], vec!["packs", "list", "nope"]] {
        let out = control_plane(&args, tmp.path(), tmp.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("no bottle \"nope\""),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn full_example_renders_and_writes_a_ca_but_no_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = repo().join("examples/full-bottle.toml");
    let out_dir = tmp.path().join("out");
    let out = control_plane(
        &[
            "render",
            manifest.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert!(
        yaml.lines().any(|l| l.contains("SIDECARS_DAEMONS: ")
            && l.trim_end()
                .ends_with("egress,pipelock,git-gate,supervise,pack-exec")),
        "{yaml}"
    );
    assert!(yaml.contains("target: /run/secrets/bottle/GITHUB_TOKEN"));
    for f in [
        "config/egress.json",
        "config/pipelock.json",
        "config/git-gate.json",
        "config/supervise.json",
        "ca/ca.crt",
        "secrets/ca.key",
        "secrets/pack-exec-operator-token",
        "ca/ca-bundle.crt",
    ] {
        assert!(out_dir.join(f).is_file(), "{f}");
    }
    // The tests run as root: every file went to its owner.
    use std::os::unix::fs::MetadataExt;
    let owner_mode = |f: &str| {
        let m = std::fs::metadata(out_dir.join(f)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner_mode("config/init.json"), (0, 0, 0o400));
    assert_eq!(owner_mode("config/egress.json"), (10001, 10001, 0o400));
    assert_eq!(owner_mode("config/pack-exec.json"), (10005, 10005, 0o400));
    assert_eq!(owner_mode("secrets"), (0, 0, 0o700));
    assert_eq!(owner_mode("secrets/ca.key"), (0, 0, 0o400));
    assert_eq!(
        owner_mode("secrets/pack-exec-operator-token"),
        (0, 0, 0o400)
    );
    assert_eq!(owner_mode("ca/ca.crt").2, 0o444);
    assert!(!text(&out.stderr).contains("not running as root"));
    let cert = std::fs::read_to_string(out_dir.join("ca/ca.crt")).unwrap();
    let bundle = std::fs::read_to_string(out_dir.join("ca/ca-bundle.crt")).unwrap();
    assert!(
        bundle.ends_with(&cert),
        "the bundle ends with the bottle CA"
    );
    let mut secrets: Vec<String> = std::fs::read_dir(out_dir.join("secrets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    secrets.sort();
    assert_eq!(
        secrets,
        ["ca.key", "pack-exec-operator-token"],
        "only generated secrets: credentials are mounted, never copied"
    );
    assert!(!out_dir.join("credentials").exists());
}

/// `up` with credential files that sidecar-init could not read, or that others could: every
/// problem named with its fix, exit 2, before Docker is asked anything (the runtime here is an
/// Engine API at a socket that does not exist: reaching it would be exit 1) and before
/// anything is written.
#[test]
fn up_refuses_unusable_credential_files_before_docker() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let secret = |name: &str, mode: u32, uid: u32| {
        let path = tmp.path().join(name);
        std::fs::write(&path, "s3cret\n").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    };
    let good = secret("good", 0o400, 0);
    let loose = secret("loose", 0o640, 0);
    let nobody = secret("nobody", 0o400, 65534);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&loose, &link).unwrap();
    let link = link.display().to_string();
    let manifest = tmp.path().join("bottle.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"slug = "creds"
daemons = ["pipelock", "egress"]
[agent]
image = "img:1"
[[allowlist]]
host = "api.example.com"
[credentials.GOOD]
file = "{good}"
[credentials.LOOSE]
file = "{loose}"
[credentials.NOBODY]
file = "{nobody}"
[credentials.LINK]
file = "{link}"
[credentials.TOKEN]
file = "/nonexistent/bot-bottle-token"
[[routes]]
host = "api.example.com"
headers = {{ Authorization = "Bearer ${{vault:TOKEN}}", X-A = "${{vault:GOOD}}", X-B = "${{vault:LOOSE}}", X-C = "${{vault:NOBODY}}", X-D = "${{vault:LINK}}" }}
"#
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["up", manifest.to_str().unwrap()])
        .env("BOT_BOTTLE_STATE_DIR", &state)
        .env("BOT_BOTTLE_RUNTIME", "engine")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("BOT_BOTTLE_HOST_GUARD", "off")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for needle in [
        "credentials.TOKEN.file: /nonexistent/bot-bottle-token: does not exist".to_string(),
        format!("credentials.LOOSE.file: {loose}: mode 0640"),
        format!("`chmod 0400 {loose}`"),
        format!("credentials.NOBODY.file: {nobody}: owned by uid 65534"),
        format!("`chown root:root {nobody}`"),
        format!("credentials.LINK.file: {link}: mode 0640 (a symlink to {loose})"),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in:\n{err}");
    }
    assert!(!err.contains("credentials.GOOD"), "{err}");
    assert!(!err.contains("Docker"), "Docker was asked: {err}");
    assert!(!state.join("bottles").exists(), "nothing was written");
}

#[test]
fn a_bad_subnet_pool_is_a_usage_error_naming_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = repo().join("examples/bottle.toml");
    for (pool, why) in [
        ("10.213.0.1/16", "host bits"),
        ("nonsense", "not an IPv4 subnet"),
        ("10.213.0.0/29", "smaller than one bottle"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .args(["render", manifest.to_str().unwrap()])
            .env("BOT_BOTTLE_STATE_DIR", tmp.path())
            .env("BOT_BOTTLE_SUBNET_POOL", pool)
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{pool}: {err}");
        assert!(
            err.contains("BOT_BOTTLE_SUBNET_POOL") && err.contains(why),
            "{err}"
        );
    }
    // `render` takes the pool's hash choice for the project (no Docker to ask).
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["render", manifest.to_str().unwrap()])
        .env("BOT_BOTTLE_STATE_DIR", tmp.path())
        .env("BOT_BOTTLE_SUBNET_POOL", "10.77.0.0/24")
        .env_remove("BOT_BOTTLE_PREFIX")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pool = bottle_spec::Subnet::parse("10.77.0.0/24").unwrap();
    let subnet = bottle_spec::Subnet::for_project(pool, "bot-bottle-example", &[]).unwrap();
    assert!(
        text(&out.stdout).contains(&subnet.to_string()),
        "{subnet} not in:\n{}",
        text(&out.stdout)
    );
}

#[test]
fn approvals_usage_and_unknown_bottles() {
    let tmp = tempfile::tempdir().unwrap();
    let out = control_plane(&["approvals", "list", "nope"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no bottle \"nope\""));
    let out = control_plane(
        &["approvals", "approve", "nope", "../../etc/passwd"],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not an approval id"));
    let out = control_plane(&["approvals", "show", "nope"], tmp.path(), tmp.path());
    assert_eq!(out.status.code(), Some(2), "missing id is a usage error");
}

#[test]
fn serve_refuses_to_start_without_a_usable_token() {
    let tmp = tempfile::tempdir().unwrap();
    let out = control_plane(
        &["serve", "--listen", "127.0.0.1:0"],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("CONTROL_PLANE_TOKEN"),
        "{}",
        text(&out.stderr)
    );
    let short = tmp.path().join("token");
    std::fs::write(&short, "tiny\n").unwrap();
    let out = control_plane(
        &["serve", "--token-file", short.to_str().unwrap()],
        tmp.path(),
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at least 16"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("tiny"), "the token was printed");
}

#[test]
fn serve_without_auth_says_so_in_every_line_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let socket = failing_docker_socket(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"])
        .env("BOT_BOTTLE_STATE_DIR", tmp.path())
        .env("BOT_BOTTLE_RUNTIME", "engine")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("CONTROL_PLANE_TOKEN")
        .env_remove("SIDECARS_LOG_FORMAT")
        .env_remove("SIDECARS_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn control-plane serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    assert!(seen.len() >= 2, "{seen:?}");
    for line in &seen {
        assert!(
            line.contains("auth=\"DISABLED"),
            "startup line without the warning: {line}"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "serve exits 0 on SIGTERM");
            break;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A unix socket that answers every HTTP request with `500`: a Docker that is there but
/// failing (serve starts and answers 503 per request), unlike a missing one (serve refuses).
fn failing_docker_socket(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::{Read, Write};
    let path = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0
                        || conn
                            .write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                            )
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    path
}

#[test]
fn serve_refuses_to_start_without_a_reachable_docker_socket_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("CONTROL_PLANE_TOKEN", "a-token-of-sixteen-bytes-or-more")
        .env("BOT_BOTTLE_STATE_DIR", tmp.path())
        .env("BOT_BOTTLE_RUNTIME", "engine")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "cannot reach the Docker Engine at /nonexistent/docker.sock: the socket does not exist"
        ),
        "{err}"
    );
}
