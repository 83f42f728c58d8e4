//! The two runtime backends against real Docker, for what the fake runtimes of tests/api.rs
//! cannot show: `network_subnets` sees every network but the project's own, and `exec` runs as
//! the user asked for — the same answers from the compose CLI backend and the Engine API one.
//! Skipped (with a note) without Docker, except under CI.

use std::process::{Command, Stdio};

use bottle_spec::Subnet;
use control_plane::runtime::compose_cli::ComposeCli;
use control_plane::runtime::engine::Engine;
use control_plane::runtime::{Runtime, PROJECT_LABEL, SERVICE_LABEL};

/// The test agent image `scripts/images.sh` builds (has `id`).
const IMAGE: &str = "sidecar-bundle/agent-test:dev";

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

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes what a test created, by id, even when it fails.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for argv in self.0.iter().rev() {
            let _ = Command::new("docker")
                .args(argv)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn backends() -> Vec<(&'static str, Box<dyn Runtime>)> {
    vec![
        ("compose CLI", Box::new(ComposeCli::new(None))),
        ("Engine API", Box::new(Engine::new(None))),
    ]
}

#[tokio::test]
async fn both_backends_see_every_network_but_the_projects_own() {
    if !docker_available() {
        return;
    }
    let project = format!("cp-subnets-{}", std::process::id());
    let mut cleanup = Cleanup(Vec::new());
    let own = format!("{project}_internal");
    let other = format!("{project}-foreign");
    // Subnets away from Docker's default pools (172.17+/16, 192.168+/20) and the bottle pool.
    docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.251.7.0/28",
        "--label",
        &format!("{PROJECT_LABEL}={project}"),
        &own,
    ]);
    cleanup
        .0
        .push(vec!["network".into(), "rm".into(), own.clone()]);
    docker(&["network", "create", "--subnet", "10.251.8.0/28", &other]);
    cleanup
        .0
        .push(vec!["network".into(), "rm".into(), other.clone()]);
    let own_subnet = Subnet::parse("10.251.7.0/28").unwrap();
    let other_subnet = Subnet::parse("10.251.8.0/28").unwrap();
    for (name, rt) in backends() {
        let mine = rt.network_subnets(&project).await.unwrap();
        assert!(mine.contains(&other_subnet), "{name}: {mine:?}");
        assert!(
            !mine.contains(&own_subnet),
            "{name}: its own network: {mine:?}"
        );
        let theirs = rt.network_subnets("some-other-project").await.unwrap();
        assert!(
            theirs.contains(&own_subnet) && theirs.contains(&other_subnet),
            "{name}: {theirs:?}"
        );
    }
}

#[tokio::test]
async fn both_backends_exec_as_the_user_asked_for() {
    if !docker_available() {
        return;
    }
    if Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| !s.success())
    {
        if std::env::var_os("CI").is_some() {
            panic!("{IMAGE} is missing and CI is set (scripts/images.sh builds it)");
        }
        eprintln!("note: {IMAGE} is missing; skipping (scripts/images.sh builds it)");
        return;
    }
    let project = format!("cp-exec-{}", std::process::id());
    let name = format!("{project}-box");
    let _cleanup = Cleanup(vec![vec!["rm".into(), "-f".into(), name.clone()]]);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "--label",
        &format!("{PROJECT_LABEL}={project}"),
        "--label",
        &format!("{SERVICE_LABEL}=sidecars"),
        "--user",
        "0:0",
        IMAGE,
        "sleep",
        "120",
    ]);
    let argv: Vec<String> = ["id", "-u"].map(String::from).to_vec();
    for (backend, rt) in backends() {
        let as_root = rt.exec(&project, "sidecars", &argv, None).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&as_root.stdout).trim(),
            "0",
            "{backend}: the container's user"
        );
        let user = bottle_spec::Daemon::Supervise.user();
        let as_supervise = rt
            .exec(&project, "sidecars", &argv, Some(&user))
            .await
            .unwrap();
        assert_eq!(as_supervise.code, 0, "{backend}: {as_supervise:?}");
        assert_eq!(
            String::from_utf8_lossy(&as_supervise.stdout).trim(),
            "10004",
            "{backend}: supervise's uid"
        );
    }
}

/// The Engine backend meets `service_healthy` when the service's own healthcheck command
/// passes, not only when Docker's status says so: Docker runs its first check one `interval`
/// after the start (here an hour), and `up` still starts the dependent at once. Docker's own
/// status is still `starting` when it does — so nothing but the backend's probe can have let
/// it through.
#[tokio::test]
async fn the_engine_backend_starts_a_dependent_once_the_healthcheck_command_passes() {
    if !docker_available() {
        return;
    }
    let slug = format!("cp-probe-{}", std::process::id() % 100_000);
    let manifest = bottle_compose::Manifest::parse(
        &format!("slug = \"{slug}\"\n[agent]\nimage = \"{IMAGE}\"\ncommand = [\"sleep\", \"infinity\"]\n"),
        Some("t.toml"),
    )
    .expect("manifest");
    let mut bundle = bottle_compose::render(&manifest, &bottle_compose::RenderOptions::default())
        .expect("render");
    let sidecars = bundle
        .project
        .services
        .get_mut("sidecars")
        .expect("sidecars");
    // A stand-in with the same wiring: the test image, a trivially passing check, an hour apart.
    sidecars.image = IMAGE.to_string();
    sidecars.command = Some(vec!["sleep".into(), "infinity".into()]);
    sidecars.user = "65534:65534".into();
    sidecars.volumes.clear();
    sidecars.ports.clear();
    sidecars.cap_add.clear();
    sidecars.security_opt.retain(|o| !o.starts_with("seccomp="));
    sidecars.healthcheck = Some(bottle_compose::model::Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        interval: "1h".into(),
        timeout: "5s".into(),
        retries: 3,
        start_period: "1h".into(),
    });
    bundle.project.volumes.clear();
    let project = bundle.project.clone();
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::new(None);
    struct Down<'a>(&'a Engine, String);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let (engine, project) = (self.0, self.1.clone());
            let _ = std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Runtime::new()
                        .map(|rt| rt.block_on(engine.down(&project, None)))
                })
                .join()
            });
        }
    }
    let _down = Down(&engine, project.name.clone());
    engine
        .up(&project, dir.path(), std::time::Duration::from_secs(30))
        .await
        .expect("up: the dependent starts although Docker has not checked yet");
    let agent = &project.services["agent"].container_name;
    let side = &project.services["sidecars"].container_name;
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", agent]),
        "true"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Health.Status}}", side]),
        "starting",
        "Docker's own first check is an hour away"
    );
}
