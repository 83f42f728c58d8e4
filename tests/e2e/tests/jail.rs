//! The pack handler jail on real Docker: the sidecars container's seccomp profile (Docker's
//! default plus the jail's `unshare`, probed syscall by syscall against the engine's own
//! default), and the jail failing closed where the runtime cannot give it.

use std::collections::BTreeMap;

use e2e::{cmd, require_docker, workspace_root};

const BASE: &str = "sidecar-bundle/debian-base:bookworm";

/// errno of every syscall number (all arguments -1) as uid 10100 with no capabilities, under
/// `seccomp` (`None`: the engine's default profile).
fn probe(seccomp: Option<&std::path::Path>) -> BTreeMap<u32, i64> {
    let script = workspace_root().join("tests/e2e/probes/syscalls.py");
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--user".into(),
        "10100:10100".into(),
        "--cap-drop".into(),
        "ALL".into(),
        "--network".into(),
        "none".into(),
        "-v".into(),
        format!("{}:/probe.py:ro", script.display()),
    ];
    if let Some(p) = seccomp {
        args.push("--security-opt".into());
        args.push(format!("seccomp={}", p.display()));
    }
    args.extend([BASE.to_string(), "python3".into(), "/probe.py".into()]);
    let out = cmd("docker").args(&args).run().ok("the syscall probe");
    let map: BTreeMap<String, i64> = serde_json::from_str(out.stdout.trim()).expect("probe JSON");
    map.into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .collect()
}

#[test]
fn the_sidecars_profile_is_dockers_default_plus_the_jails_unshare() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join(bottle_compose::seccomp::PROFILE_FILE);
    std::fs::write(&profile, bottle_compose::seccomp::profile_text()).expect("profile");
    let default = probe(None);
    let ours = probe(Some(&profile));
    assert!(
        default.len() > 400,
        "the probe ran too few calls: {}",
        default.len()
    );
    let unshare = libc::SYS_unshare as u32;
    let mut differ = Vec::new();
    for (nr, errno) in &default {
        let mine = ours.get(nr).copied().unwrap_or(-999);
        if mine != *errno && *nr != unshare {
            differ.push(format!("syscall {nr}: default errno {errno}, ours {mine}"));
        }
    }
    assert!(
        differ.is_empty(),
        "the profile differs from Docker's default beyond unshare:\n  {}",
        differ.join("\n  ")
    );
    // unshare(-1): refused by the default (EPERM), and by ours too — those flags are not the
    // jail's; the jail's own flags are checked by the bundle's tests.
    assert_eq!(default[&unshare], libc::EPERM as i64);
}

/// A server certificate for `ip`, signed by the bottle's own CA (found in the control plane's
/// state): what a handler trusting the bottle's CA bundle accepts, as it accepts egress's
/// intercepted certificates.
fn cert_signed_by_the_bottle_ca(
    b: &e2e::Bottle,
    ip: &str,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let find = |name: &str, parent: &str| {
        walk(b.state.path())
            .into_iter()
            .find(|p| {
                p.file_name().is_some_and(|n| n == name)
                    && p.parent().is_some_and(|d| d.ends_with(parent))
            })
            .unwrap_or_else(|| panic!("no {parent}/{name} in the control plane's state"))
    };
    let ca_key = find("ca.key", "secrets");
    let ca_crt = find("ca.crt", "ca");
    e2e::sign_leaf(&ca_crt, &ca_key, &format!("IP:{ip}"), dir)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A legitimate handler: curl and Python's urllib, through nothing but the proxy variables
/// its jail sets, reach an allowlisted HTTP and HTTPS world through pipelock (HTTPS trusted
/// through the bottle's CA bundle); a host off the allowlist gets pipelock's 403; a request
/// carrying a bottle credential is refused by DLP — and pipelock's log names the pack.
#[test]
fn a_pack_reaches_the_world_through_pipelock_under_the_bottles_policy() {
    if !require_docker() {
        return;
    }
    let host = e2e::docker0_ip();
    let world_dir = tempfile::tempdir().expect("tempdir");
    let secret = "e2e-jail-secret-6d2a9c41f7";
    let cred = e2e::root_credential(world_dir.path(), "token", secret);
    let (_http, http_port) = e2e::http_world(e2e::World::default());
    // The HTTPS world's certificate needs the bottle's CA: start it after `up`.
    let https_port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let manifest = format!(
        r#"
slug = "{{slug}}"
daemons = ["egress", "pipelock", "pack-exec"]
allow_cidrs = ["{host}/32"]

[[allowlist]]
host = "{host}"
ports = [{http_port}, {https_port}]

[[allowlist]]
host = "vault.example.test"

[credentials.TOKEN]
file = "{cred}"

# The credential is the bottle's (pipelock's DLP knows it); the world is not intercepted.
[vault.TOKEN]
hosts = ["vault.example.test"]

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#,
        cred = cred.display()
    );
    let b = e2e::Bottle::up("jail-net", &manifest);
    e2e::wait_until("bottle healthy", std::time::Duration::from_secs(60), || {
        b.inspect(&b.sidecars(), "{{.State.Health.Status}}") == "healthy"
    });
    let (crt, key) = cert_signed_by_the_bottle_ca(&b, &host, world_dir.path());
    // The port picked above (free again: its probe listener is gone).
    let (_https, https_actual) = e2e::http_world(e2e::World {
        port: https_port,
        tls: Some((&crt, &key)),
        ..Default::default()
    });
    let pack = workspace_root().join("tests/e2e/packs/x.fetch");
    b.cp(&[
        "packs",
        "install",
        &b.slug,
        &pack.display().to_string(),
        "--allow-unsigned",
    ])
    .ok("install x.fetch");
    let http_url = format!("http://{host}:{http_port}/hello");
    let https_url = format!("https://{host}:{https_actual}/hello");
    let denied_url = "http://not-on-the-allowlist.test/".to_string();
    let leak_url = format!("http://{host}:{http_port}/upload?t={secret}");
    let input = serde_json::json!({"urls": [http_url, https_url, denied_url, leak_url]});
    let script = format!(
        "curl -s --max-time 120 --data-binary @- \"$PACK_EXEC_URL/v1/packs/x.fetch\" <<'EOF'\n{input}\nEOF"
    );
    let out = b.exec(&b.agent(), &["bash", "-c", &script]);
    let body: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("pack-exec answered {e}: {out:?}"));
    let r = &body["output"];
    for client in ["curl", "urllib"] {
        for url in [&http_url, &https_url] {
            let got = &r[format!("{client} {url}")];
            assert_eq!(got["status"], 200, "{client} {url}: {got}");
            assert_eq!(got["body"], e2e::WORLD_BODY, "{client} {url}: {got}");
        }
        let denied = &r[format!("{client} {denied_url}")];
        assert_eq!(
            denied["status"], 403,
            "{client} off the allowlist: {denied}"
        );
        let leak = &r[format!("{client} {leak_url}")];
        assert_eq!(
            leak["status"], 403,
            "{client} with a credential in the URL: {leak}"
        );
    }
    // pipelock's log: the pack's traffic, named; the DLP denial, named; never the secret.
    let logs = e2e::run("docker", &["logs", &b.sidecars()]);
    let all = format!("{}{}", logs.stdout, logs.stderr);
    let pipelock: Vec<&str> = all.lines().filter(|l| l.contains("pipelock")).collect();
    assert!(
        pipelock
            .iter()
            .any(|l| l.contains("pack=x.fetch") && l.contains("allowed")),
        "pipelock logs the pack's allowed requests with its name:\n{}",
        pipelock.join("\n")
    );
    assert!(
        pipelock.iter().any(|l| l.contains("pack=x.fetch")
            && l.contains("denied")
            && l.contains("configured-secret")),
        "pipelock logs the DLP denial with the pack's name:\n{}",
        pipelock.join("\n")
    );
    assert!(!all.contains(secret), "a log line holds the credential");
}

/// The sidecars image with only pack-exec, run by hand under Docker's *default* seccomp
/// profile (which refuses `unshare`): the jail cannot be had. Returns the container's name.
fn sidecars_under_the_default_profile(tag: &str, unsafe_unjailed: bool) -> e2e::WorldContainer {
    let manifest = format!(
        "slug = \"jail-{tag}\"\ndaemons = [\"pack-exec\"]\nunsafe_allow_unjailed_packs = {unsafe_unjailed}\n[agent]\nimage = \"x\"\n"
    );
    let m = bottle_compose::Manifest::parse(&manifest, Some("m.toml")).expect("manifest");
    let bundle = bottle_compose::render(&m, &Default::default()).expect("render");
    let dir = tempfile::Builder::new()
        .prefix("e2e-jail-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        format!("e2e-jail-{tag}-{}", std::process::id()),
        "--cap-drop".into(),
        "ALL".into(),
    ];
    for cap in bottle_spec::INIT_CAPABILITIES {
        args.extend(["--cap-add".to_string(), cap.to_string()]);
    }
    args.extend([
        "--security-opt".into(),
        "no-new-privileges:true".into(),
        "-e".into(),
        "SIDECARS_DAEMONS=dns,pack-exec".into(),
    ]);
    for f in &bundle.files {
        let path = dir.join(f.path.replace('/', "_"));
        std::fs::write(&path, &f.contents).expect("config");
        args.extend(["-v".into(), format!("{}:{}:ro", path.display(), f.target)]);
    }
    let token = e2e::root_credential(&dir, "token", "e2e-operator-token-0123456789abcdef");
    args.extend([
        "-v".into(),
        format!(
            "{}:{}:ro",
            token.display(),
            bottle_compose::configs::OPERATOR_TOKEN_MOUNT
        ),
        "-v".into(),
        format!(
            "{}:{}:ro",
            workspace_root().join("packs").display(),
            bottle_spec::BOTTLE_PACKS_DIR
        ),
        "sidecar-bundle/sidecars:dev".into(),
    ]);
    let name = args[3].clone();
    let _ = cmd("docker").args(["rm", "-f", &name]).run();
    cmd("docker")
        .args(&args)
        .run()
        .ok("start the sidecars image");
    let guard = e2e::WorldContainer(name.clone());
    e2e::wait_until("pack-exec up", std::time::Duration::from_secs(30), || {
        cmd("docker")
            .args(["exec", &name, "curl", "-sf", "http://127.0.0.1:9000/health"])
            .run()
            .code
            == 0
    });
    guard
}

fn call_upper(container: &str) -> (u16, serde_json::Value) {
    let out = cmd("docker")
        .args([
            "exec",
            container,
            "curl",
            "-s",
            "-o",
            "/tmp/out.json",
            "-w",
            "%{http_code}",
            "--data-binary",
            "{\"text\": \"jail\"}",
            "http://127.0.0.1:9000/v1/packs/cmd.upper",
        ])
        .run();
    let body = cmd("docker")
        .args(["exec", container, "cat", "/tmp/out.json"])
        .run();
    (
        out.stdout.trim().parse().unwrap_or(0),
        serde_json::from_str(body.stdout.trim()).unwrap_or_default(),
    )
}

/// Fail closed: without the profile's `unshare`, every call is refused with
/// `sandbox_unavailable` naming what is missing, and `sidecar-init health` fails saying so.
#[test]
fn without_the_bundles_profile_the_jail_fails_closed() {
    if !require_docker() {
        return;
    }
    let c = sidecars_under_the_default_profile("closed", false);
    let (status, body) = call_upper(&c.0);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "sandbox_unavailable", "{body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.contains("unshare"),
        "the refusal names what is missing: {message}"
    );
    let health = cmd("docker")
        .args(["exec", &c.0, "/sidecar-init", "health"])
        .run();
    assert_ne!(
        health.code, 0,
        "health must fail while calls are refused: {health:?}"
    );
    assert!(
        health.stdout.contains("handler-jail: FAIL (unavailable"),
        "{}",
        health.stdout
    );
    let status = cmd("docker")
        .args(["exec", &c.0, "/sidecar-init", "status"])
        .run();
    assert!(
        status.stdout.contains("handler-jail: unavailable"),
        "{}",
        status.stdout
    );
}

/// The operator's unsafe opt-out: calls run unjailed, health says UNSAFE, and init warns on
/// every call.
#[test]
fn the_unsafe_opt_out_runs_unjailed_and_warns_on_every_call() {
    if !require_docker() {
        return;
    }
    let c = sidecars_under_the_default_profile("unsafe", true);
    for _ in 0..2 {
        let (status, body) = call_upper(&c.0);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["output"]["text"], "JAIL", "{body}");
    }
    let health = cmd("docker")
        .args(["exec", &c.0, "/sidecar-init", "health"])
        .run();
    assert_eq!(health.code, 0, "{health:?}");
    assert!(
        health.stdout.contains("handler-jail: ok (UNSAFE"),
        "{}",
        health.stdout
    );
    let logs = cmd("docker").args(["logs", &c.0]).run();
    let all = format!("{}{}", logs.stdout, logs.stderr);
    let warnings = all
        .lines()
        .filter(|l| l.contains("UNSAFE: running the handler unjailed") && l.contains("cmd.upper"))
        .count();
    assert_eq!(warnings, 2, "one warning per call:\n{all}");
}
