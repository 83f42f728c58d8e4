//! Properties of the rendered bundle that the golden files show but do not explain: networks,
//! ports, env per enabled daemon, hardening, names, image choice, the init table.

use bottle_compose::configs::init;
use bottle_compose::model::{Mount, PortBinding};
use bottle_compose::render::{agent_env, AGENT, SIDECARS};
use bottle_compose::{render, Daemon, Manifest, RenderError, RenderOptions, DEFAULT_SIDECAR_IMAGE};

fn manifest(extra: &str) -> Manifest {
    Manifest::parse(
        &format!("slug = \"demo\"\n{extra}\n[agent]\nimage = \"agent:1\"\n"),
        Some("t.toml"),
    )
    .expect("valid")
}

#[test]
fn two_services_two_networks_agent_only_internal() {
    let b = render(&manifest(""), &RenderOptions::default()).unwrap();
    let p = &b.project;
    assert_eq!(p.name, "bot-bottle-demo");
    assert_eq!(p.services.keys().collect::<Vec<_>>(), [AGENT, SIDECARS]);
    assert!(p.networks["demo-internal"].internal);
    assert!(!p.networks["demo-egress"].internal);
    let agent = &p.services[AGENT];
    let sidecars = &p.services[SIDECARS];
    assert_eq!(agent.networks.keys().collect::<Vec<_>>(), ["demo-internal"]);
    assert_eq!(
        sidecars.networks.keys().collect::<Vec<_>>(),
        ["demo-egress", "demo-internal"]
    );
    assert_eq!(sidecars.networks["demo-internal"].aliases, ["sidecars"]);
    assert_eq!(sidecars.container_name, "bot-bottle-sidecars-demo");
    assert_eq!(agent.container_name, "bot-bottle-agent-demo");
    assert_eq!(agent.depends_on["sidecars"].condition, "service_healthy");
    assert!(agent.ports.is_empty(), "the agent publishes nothing");
}

#[test]
fn both_services_are_hardened() {
    let b = render(&manifest(""), &RenderOptions::default()).unwrap();
    for (name, s) in &b.project.services {
        assert!(s.read_only, "{name}");
        assert_eq!(s.cap_drop, ["ALL"], "{name}");
        assert_eq!(s.security_opt, ["no-new-privileges:true"], "{name}");
        assert_eq!(s.user, "65534:65534", "{name}");
        assert!(s.tmpfs.iter().any(|t| t == "/tmp"), "{name}");
        assert_eq!(s.stop_grace_period, "10s", "{name}");
        assert_eq!(s.labels["io.bot-bottle.slug"], "demo");
        assert_eq!(s.labels["io.bot-bottle.role"], name.as_str());
    }
    let sc = &b.project.services[SIDECARS];
    assert!(sc.tmpfs.iter().any(|t| t.starts_with("/run/sidecars:")));
    // supervise's queue is a named volume (when enabled), not a tmpfs: approvals survive a
    // container restart.
    assert!(!sc.tmpfs.iter().any(|t| t.starts_with("/run/supervise")));
    let hc = sc.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, ["CMD", "/sidecar-init", "health"]);
    assert_eq!(hc.interval, "1s");
}

#[test]
fn pack_exec_env_ports_mounts_and_config() {
    let b = render(
        &manifest("packs = [\"a/cmd.x\"]"),
        &RenderOptions::default(),
    )
    .unwrap();
    let sc = &b.project.services[SIDECARS];
    assert_eq!(sc.environment["SIDECARS_DAEMONS"], "pack-exec");
    assert_eq!(
        sc.ports,
        [PortBinding {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: None,
            container_port: 9000
        }]
    );
    let agent = &b.project.services[AGENT];
    assert_eq!(agent.environment["PACK_EXEC_URL"], "http://sidecars:9000");
    assert!(
        !agent.environment.contains_key("HTTPS_PROXY"),
        "no pipelock, no proxy env"
    );
    assert!(!agent.environment.contains_key("GIT_GATE_URL"));
    assert!(!agent.environment.contains_key("MCP_SUPERVISE_URL"));
    let targets: Vec<_> = sc
        .volumes
        .iter()
        .map(|m| match m {
            Mount::Bind {
                target, read_only, ..
            } => (target.as_str(), *read_only),
            Mount::Volume {
                target, read_only, ..
            } => (target.as_str(), *read_only),
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("/etc/sidecars/init.json", true),
            ("/etc/sidecars/pack-exec.json", true),
            ("/etc/sidecars/packs", true),
            ("/var/lib/sidecars/packs", false),
        ]
    );
    let packs = b.packs.unwrap();
    assert_eq!(packs[0].dest, "packs/cmd.x");
    let cfg: serde_json::Value = serde_json::from_str(&b.files[1].contents).unwrap();
    assert_eq!(cfg["packs_dir"], "/etc/sidecars/packs");
    assert_eq!(cfg["listen"], "0.0.0.0:9000");
}

#[test]
fn no_daemons_is_refused() {
    // sidecar-init needs at least one daemon and reads an empty SIDECARS_DAEMONS as "all".
    let err = Manifest::parse(
        "slug = \"a\"\ndaemons = []\n[agent]\nimage = \"i\"\n",
        Some("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("daemons: must enable at least one daemon"),
        "{err}"
    );
}

#[test]
fn agent_env_per_daemon() {
    // Every daemon at once (built by hand: the env table alone, independent of validation).
    let mut m = manifest("");
    m.daemons = Daemon::ALL.to_vec();
    m.git = vec![bottle_compose::manifest::GitRepo {
        name: "repo".into(),
        upstream: "https://x/y".into(),
        credential: None,
    }];
    let env = agent_env(&m);
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        assert_eq!(env[k], "http://sidecars:8888");
    }
    assert_eq!(env["NO_PROXY"], "sidecars,localhost,127.0.0.1");
    assert_eq!(env["no_proxy"], env["NO_PROXY"]);
    assert_eq!(env["GIT_GATE_URL"], "git://sidecars:9418/repo");
    assert_eq!(env["MCP_SUPERVISE_URL"], "http://sidecars:9100/mcp");
    assert_eq!(env["PACK_EXEC_URL"], "http://sidecars:9000");
    m.git.clear();
    assert_eq!(agent_env(&m)["GIT_GATE_URL"], "git://sidecars:9418/");
    assert!(Daemon::ALL
        .iter()
        .filter(|d| d.published())
        .map(|d| d.port())
        .eq([8888, 9418, 9100, 9000]));
}

#[test]
fn image_precedence_env_then_manifest_then_default() {
    let m = manifest("");
    let b = render(&m, &RenderOptions::default()).unwrap();
    assert_eq!(b.project.services[SIDECARS].image, DEFAULT_SIDECAR_IMAGE);
    let m2 = manifest("sidecar_image = \"mine:2\"");
    let b = render(&m2, &RenderOptions::default()).unwrap();
    assert_eq!(b.project.services[SIDECARS].image, "mine:2");
    let opts = RenderOptions {
        sidecar_image: Some("env:3".into()),
        ..Default::default()
    };
    assert_eq!(
        render(&m2, &opts).unwrap().project.services[SIDECARS].image,
        "env:3"
    );
}

#[test]
fn prefix_changes_project_and_container_names() {
    let opts = RenderOptions {
        prefix: "acme".into(),
        ..Default::default()
    };
    let b = render(&manifest(""), &opts).unwrap();
    assert_eq!(b.project.name, "acme-demo");
    assert_eq!(
        b.project.services[SIDECARS].container_name,
        "acme-sidecars-demo"
    );
}

#[test]
fn bad_options_are_refused_with_their_names() {
    let opts = RenderOptions {
        prefix: "Bad Prefix".into(),
        sidecar_image: Some("a b".into()),
        ..RenderOptions::default()
    };
    match render(&manifest(""), &opts) {
        Err(RenderError::Options(p)) => {
            assert!(p.iter().any(|p| p.path == "prefix"));
            assert!(p.iter().any(|p| p.path == "BOT_BOTTLE_SIDECAR_IMAGE"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hand_built_invalid_manifest_is_refused() {
    let mut m = manifest("");
    m.slug = "NOPE".into();
    assert!(matches!(
        render(&m, &RenderOptions::default()),
        Err(RenderError::Manifest(_))
    ));
}

#[test]
fn rendering_is_deterministic() {
    let m = manifest("packs = [\"p/a\", \"p/b\"]");
    let a =
        bottle_compose::to_yaml(&render(&m, &RenderOptions::default()).unwrap().project).unwrap();
    let b =
        bottle_compose::to_yaml(&render(&m, &RenderOptions::default()).unwrap().project).unwrap();
    assert_eq!(a, b);
}

#[test]
fn default_init_table_matches_the_image() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/sidecars/init.json");
    let image: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("images/sidecars/init.json"))
            .unwrap();
    let ours = serde_json::to_value(init::default_config()).unwrap();
    assert_eq!(
        ours, image,
        "the renderer's default table and the image's init.json disagree"
    );
}

#[test]
fn daemon_settings_override_the_table() {
    let m = manifest(
        "[daemon_settings.pack-exec]\nrestart = \"never\"\ngrace_ms = 1000\nenv = { A = \"b\" }",
    );
    let cfg = init::render(&m);
    let pe = cfg.daemons.iter().find(|d| d.name == "pack-exec").unwrap();
    assert_eq!(serde_json::to_value(pe.restart).unwrap(), "never");
    assert_eq!(pe.grace_ms, 1000);
    assert_eq!(pe.env["A"], "b");
    assert!(cfg.notify_url.is_none(), "no supervise, no notify_url");
    let eg = cfg.daemons.iter().find(|d| d.name == "egress").unwrap();
    assert_eq!(eg.grace_ms, init::DAEMON_GRACE_MS, "others untouched");
}

/// The full golden manifest (every daemon, credentials, a route, a vault entry, a repo).
fn full() -> Manifest {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/full.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    Manifest::parse(&text, Some("full.toml")).unwrap()
}

fn mounts(s: &bottle_compose::model::Service) -> Vec<(String, String, bool)> {
    s.volumes
        .iter()
        .map(|m| match m {
            Mount::Bind {
                source,
                target,
                read_only,
            }
            | Mount::Volume {
                source,
                target,
                read_only,
            } => (source.clone(), target.clone(), *read_only),
        })
        .collect()
}

#[test]
fn every_daemon_can_be_enabled_in_dependency_order() {
    let b = render(&full(), &RenderOptions::default()).unwrap();
    let sc = &b.project.services[SIDECARS];
    assert_eq!(
        sc.environment["SIDECARS_DAEMONS"],
        "egress,pipelock,git-gate,supervise,pack-exec"
    );
    let files: Vec<_> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "config/init.json",
            "config/egress.json",
            "config/pipelock.json",
            "config/git-gate.json",
            "config/supervise.json",
            "config/pack-exec.json"
        ]
    );
    // egress is not published: only pipelock reaches it.
    let ports: Vec<_> = sc.ports.iter().map(|p| p.container_port).collect();
    assert_eq!(ports, [8888, 9418, 9100, 9000]);
    // The init table with pipelock enabled keeps the image's ordering and reload signal.
    let init: serde_json::Value = serde_json::from_str(&b.files[0].contents).unwrap();
    let pipelock = init["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "pipelock")
        .unwrap();
    assert_eq!(pipelock["reload_signal"], "SIGHUP");
    assert_eq!(
        pipelock["depends_on"],
        serde_json::json!([{"name": "egress", "optional": true}])
    );
    assert_eq!(init["notify_url"], "http://127.0.0.1:9101/v1/events");
}

#[test]
fn credentials_are_mounted_into_the_sidecars_only() {
    let b = render(&full(), &RenderOptions::default()).unwrap();
    let sc = mounts(&b.project.services[SIDECARS]);
    for (source, target) in [
        (
            "/etc/bot-bottle/credentials/github-token",
            "/run/secrets/bottle/GITHUB_TOKEN",
        ),
        (
            "/etc/bot-bottle/credentials/openai-key",
            "/run/secrets/bottle/OPENAI_KEY",
        ),
    ] {
        assert!(
            sc.contains(&(source.into(), target.into(), true)),
            "{target} read-only in sidecars: {sc:?}"
        );
    }
    let agent = mounts(&b.project.services[AGENT]);
    assert!(
        agent
            .iter()
            .all(|(s, t, _)| !s.contains("credentials") && !t.starts_with("/run/secrets")),
        "no credential reaches the agent: {agent:?}"
    );
    assert_eq!(b.credentials.len(), 2);
    assert_eq!(b.credentials[0].target, "/run/secrets/bottle/GITHUB_TOKEN");
}

#[test]
fn credential_contents_never_reach_a_rendered_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-that-must-stay-on-the-host";
    let file = dir.path().join("token");
    std::fs::write(&file, secret).unwrap();
    let m = manifest(&format!(
        "daemons = [\"pipelock\", \"egress\"]\n[[allowlist]]\nhost = \"api.example.com\"\n\
         [credentials.TOKEN]\nfile = {:?}\n[[routes]]\nhost = \"api.example.com\"\n\
         headers = {{ Authorization = \"Bearer ${{vault:TOKEN}}\" }}\n",
        file.display().to_string()
    ));
    let b = render(&m, &RenderOptions::default()).unwrap();
    let yaml = bottle_compose::to_yaml(&b.project).unwrap();
    assert!(!yaml.contains(secret));
    for f in &b.files {
        assert!(!f.contents.contains(secret), "{}", f.path);
    }
    assert!(
        yaml.contains(&file.display().to_string()),
        "mounted by path"
    );
}

#[test]
fn the_ca_goes_to_egress_and_only_the_certificate_to_the_agent() {
    let opts = RenderOptions {
        ca: bottle_compose::CaFiles {
            cert: "/state/ca/c.pem".into(),
            key: "/state/ca/k.pem".into(),
            bundle: "/state/ca/b.pem".into(),
        },
        ..RenderOptions::default()
    };
    let b = render(&full(), &opts).unwrap();
    assert_eq!(b.ca.as_ref(), Some(&opts.ca));
    let sc = mounts(&b.project.services[SIDECARS]);
    assert!(sc.contains(&(
        "/state/ca/c.pem".into(),
        "/etc/sidecars/ca/ca.crt".into(),
        true
    )));
    assert!(sc.contains(&(
        "/state/ca/k.pem".into(),
        "/etc/sidecars/ca/ca.key".into(),
        true
    )));
    let agent = mounts(&b.project.services[AGENT]);
    assert_eq!(
        agent,
        [
            (
                "/state/ca/c.pem".to_string(),
                "/etc/bot-bottle/ca.crt".to_string(),
                true
            ),
            (
                "/state/ca/b.pem".to_string(),
                "/etc/bot-bottle/ca-bundle.crt".to_string(),
                true
            ),
        ],
        "the key never reaches the agent"
    );
    let env = &b.project.services[AGENT].environment;
    assert_eq!(env["NODE_EXTRA_CA_CERTS"], "/etc/bot-bottle/ca.crt");
    for k in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        assert_eq!(env[k], "/etc/bot-bottle/ca-bundle.crt", "{k}");
    }
    // Without egress: no CA, no CA env, no agent mounts.
    let b = render(&manifest(""), &opts).unwrap();
    assert!(b.ca.is_none());
    assert!(b.project.services[AGENT].volumes.is_empty());
    assert!(!b.project.services[AGENT]
        .environment
        .contains_key("SSL_CERT_FILE"));
}

#[test]
fn git_gate_and_supervise_state_live_on_named_volumes() {
    let b = render(&full(), &RenderOptions::default()).unwrap();
    let sc = mounts(&b.project.services[SIDECARS]);
    assert!(sc.contains(&("git-gate-mirrors".into(), "/git".into(), false)));
    assert!(sc.contains(&(
        "supervise-queue".into(),
        "/run/supervise/queue".into(),
        false
    )));
    let vols: Vec<_> = b.project.volumes.keys().map(String::as_str).collect();
    assert_eq!(
        vols,
        ["git-gate-mirrors", "pack-exec-state", "supervise-queue"]
    );
}

#[test]
fn pipelock_goes_direct_without_egress() {
    let m = manifest("daemons = [\"pipelock\"]\n[[allowlist]]\nhost = \"example.com\"\n");
    let b = render(&m, &RenderOptions::default()).unwrap();
    let f = b
        .files
        .iter()
        .find(|f| f.path == "config/pipelock.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&f.contents).unwrap();
    assert_eq!(v["upstream"], serde_json::Value::Null, "written as null");
    assert!(f.contents.contains("\"upstream\": null"));
    assert_eq!(
        v["allow"],
        serde_json::json!([{"host": "example.com", "ports": [443]}])
    );
    let full = render(&full(), &RenderOptions::default()).unwrap();
    let f = full
        .files
        .iter()
        .find(|f| f.path == "config/pipelock.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&f.contents).unwrap();
    assert_eq!(v["upstream"], "127.0.0.1:9099");
    assert_eq!(
        v["secret_files"],
        serde_json::json!([
            "/run/secrets/bottle/GITHUB_TOKEN",
            "/run/secrets/bottle/OPENAI_KEY"
        ])
    );
}

#[test]
fn route_references_become_egress_cred_templates() {
    let m = manifest(
        "daemons = [\"pipelock\", \"egress\"]\n[[allowlist]]\nhost = \"a.example\"\n\
         [credentials.A]\nfile = \"/a\"\n[credentials.B]\nfile = \"/b\"\n\
         [[routes]]\nhost = \"a.example\"\n\
         headers = { X-A = \"${vault:A}\", X-B = \"k=${cred:B}\" }\n",
    );
    let b = render(&m, &RenderOptions::default()).unwrap();
    let f = b
        .files
        .iter()
        .find(|f| f.path == "config/egress.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&f.contents).unwrap();
    assert_eq!(
        v["routes"][0]["headers"],
        serde_json::json!({"X-A": "${cred:A}", "X-B": "k=${cred:B}"})
    );
    assert_eq!(v["credentials_dir"], "/run/secrets/bottle");
}

#[test]
fn internal_bridge_name_is_short_stable_and_distinct() {
    use bottle_compose::render::internal_bridge_name;
    let a = internal_bridge_name("bot-bottle-example");
    assert!(a.len() <= 15, "{a} is too long for a Linux interface name");
    assert!(a.starts_with("bb"));
    assert_eq!(a, internal_bridge_name("bot-bottle-example"), "stable");
    assert_ne!(a, internal_bridge_name("bot-bottle-example2"));
}
