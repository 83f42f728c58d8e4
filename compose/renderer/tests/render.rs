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
fn only_the_sidecars_of_a_bottle_with_packs_get_the_jails_seccomp_profile() {
    let b = render(&manifest(""), &RenderOptions::default()).unwrap();
    let profile = b
        .seccomp_profile
        .as_ref()
        .expect("pack-exec is on by default");
    assert_eq!(profile.path, bottle_compose::seccomp::PROFILE_FILE);
    assert_eq!(
        b.project.services["sidecars"].security_opt,
        ["no-new-privileges:true", "seccomp=./seccomp-sidecars.json"]
    );
    assert_eq!(
        b.project.services["agent"].security_opt,
        ["no-new-privileges:true"],
        "the agent keeps Docker's default profile"
    );
    let b = render(
        &manifest("daemons = [\"pipelock\"]\n[[allowlist]]\nhost = \"a.test\""),
        &RenderOptions::default(),
    )
    .unwrap();
    assert!(b.seccomp_profile.is_none());
    assert_eq!(
        b.project.services["sidecars"].security_opt,
        ["no-new-privileges:true"]
    );
}

#[test]
fn both_services_are_hardened() {
    let b = render(&manifest(""), &RenderOptions::default()).unwrap();
    for (name, s) in &b.project.services {
        assert!(s.read_only, "{name}");
        assert_eq!(s.cap_drop, ["ALL"], "{name}");
        assert_eq!(s.security_opt[0], "no-new-privileges:true", "{name}");
        assert!(s.tmpfs.iter().any(|t| t.starts_with("/tmp:")), "{name}");
        assert!(s.pids_limit.is_some(), "{name}");
        assert_eq!(s.stop_grace_period, "10s", "{name}");
        assert_eq!(s.labels["io.bot-bottle.slug"], "demo");
        assert_eq!(s.labels["io.bot-bottle.role"], name.as_str());
    }
    let agent = &b.project.services[AGENT];
    assert_eq!(agent.user, "65534:65534");
    assert!(
        agent.cap_add.is_empty(),
        "the agent gets no capability back"
    );
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
    assert_eq!(sc.environment["SIDECARS_DAEMONS"], "dns,pack-exec");
    // The agent listener, loopback only, ephemeral host port. The operator listener (9001)
    // binds the container's loopback and is not published: the control plane execs a relay.
    assert_eq!(
        sc.ports,
        [9000].map(|container_port| PortBinding {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: None,
            container_port
        })
    );
    let agent = &b.project.services[AGENT];
    assert_eq!(agent.environment["PACK_EXEC_URL"], "http://sidecars:9000");
    assert_eq!(
        agent.environment["MCP_PACKS_URL"],
        "http://sidecars:9000/mcp"
    );
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
            ("/etc/sidecars/dns.json", true),
            ("/etc/sidecars/pack-exec.json", true),
            ("/etc/sidecars/packs", true),
            ("/var/lib/sidecars/packs", false),
            ("/run/secrets/bundle/pack-exec-operator-token", true),
        ]
    );
    let packs = b.packs.clone().unwrap();
    assert_eq!(packs[0].dest, "packs/cmd.x");
    let cfg = config(&b, "pack-exec");
    assert_eq!(cfg["packs_dir"], "/etc/sidecars/packs");
    assert_eq!(cfg["listen"], "0.0.0.0:9000");
    assert_eq!(cfg["spawner"], "/run/sidecars/spawn.sock");
    assert_eq!(cfg["operator_listen"], "127.0.0.1:9001");
    assert_eq!(
        cfg["operator_token_file"],
        "/run/sidecars/credentials/pack-exec/operator-token"
    );
    assert_eq!(cfg["allow_unsigned"], false);
    assert_eq!(
        b.pack_exec_operator_token.as_deref(),
        Some("./secrets/pack-exec-operator-token")
    );
}

/// A rendered config file (`init`, `dns` or a daemon's), parsed.
fn config(b: &bottle_compose::Bundle, stem: &str) -> serde_json::Value {
    let path = format!("config/{stem}.json");
    let f = b
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"));
    serde_json::from_str(&f.contents).unwrap()
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
        deny_paths: None,
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
    assert_eq!(env["MCP_PACKS_URL"], "http://sidecars:9000/mcp");
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
        "dns,egress,pipelock,git-gate,supervise,pack-exec"
    );
    let files: Vec<_> = b.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        files,
        [
            "config/init.json",
            "config/dns.json",
            "config/egress.json",
            "config/pipelock.json",
            "config/git-gate.json",
            "config/supervise.json",
            "config/pack-exec.json"
        ]
    );
    // egress is not published: only pipelock reaches it. The operator listeners of supervise
    // and pack-exec stay on the container's loopback (the control plane execs into it).
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
        "/run/secrets/bundle/ca.key".into(),
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
            "/run/sidecars/credentials/pipelock/GITHUB_TOKEN",
            "/run/sidecars/credentials/pipelock/OPENAI_KEY"
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
    assert_eq!(v["credentials_dir"], "/run/sidecars/credentials/egress");
    assert_eq!(v["ca_key"], "/run/sidecars/credentials/egress/ca.key");
    assert_eq!(v["ca_cert"], "/etc/sidecars/ca/ca.crt");
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

// --- the bundle's walls (docs/security.md) ------------------------------------------------

#[test]
fn the_sidecars_container_is_root_with_only_inits_capabilities() {
    let b = render(&full(), &RenderOptions::default()).unwrap();
    let sc = &b.project.services[SIDECARS];
    assert_eq!(sc.user, "0:0");
    assert_eq!(sc.cap_drop, ["ALL"]);
    assert_eq!(sc.cap_add, bottle_spec::INIT_CAPABILITIES);
    assert_eq!(sc.cap_add, ["CHOWN", "KILL", "SETGID", "SETUID"]);
    assert_eq!(
        sc.security_opt,
        ["no-new-privileges:true", "seccomp=./seccomp-sidecars.json"]
    );
    assert!(sc.read_only);
}

#[test]
fn every_init_entry_runs_as_its_own_uid_and_dns_always_runs_first() {
    for m in [manifest(""), full()] {
        let cfg = init::render(&m);
        assert_eq!(cfg.daemons[0].name, "dns");
        for entry in &cfg.daemons {
            let expected = match Daemon::from_name(&entry.name) {
                Some(d) => d.user(),
                None => {
                    assert_eq!(entry.name, bottle_spec::DNS_NAME);
                    "10006:10006".to_string()
                }
            };
            assert_eq!(
                entry.user.as_deref(),
                Some(expected.as_str()),
                "{}",
                entry.name
            );
        }
        let b = render(&m, &RenderOptions::default()).unwrap();
        assert!(b.project.services[SIDECARS].environment["SIDECARS_DAEMONS"].starts_with("dns,"));
    }
    let dns = serde_json::to_value(init::dns_daemon()).unwrap();
    assert_eq!(
        dns,
        serde_json::json!({
            "name": "dns",
            "argv": ["/usr/local/bin/sidecars", "dns", "--config", "/etc/sidecars/dns.json"],
            "env": {},
            "user": "10006:10006",
            "ready": {"tcp": 53},
            "depends_on": [],
            "restart": "on-failure",
            "grace_ms": 5000,
            "reload_signal": null,
            "forward_signals": []
        })
    );
    // Not a manifest daemon: it cannot be listed or configured.
    assert!(Daemon::from_name("dns").is_none());
}

fn init_entry(cfg: &serde_json::Value, name: &str) -> serde_json::Value {
    cfg["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in init.json"))
        .clone()
}

#[test]
fn each_daemon_declares_exactly_the_credentials_it_uses() {
    let b = render(&full(), &RenderOptions::default()).unwrap();
    let cfg = config(&b, "init");
    let creds = |name: &str| init_entry(&cfg, name)["credentials"].clone();
    assert_eq!(
        creds("egress"),
        serde_json::json!({
            "GITHUB_TOKEN": "/run/secrets/bottle/GITHUB_TOKEN",
            "OPENAI_KEY": "/run/secrets/bottle/OPENAI_KEY",
            "ca.key": "/run/secrets/bundle/ca.key"
        })
    );
    assert_eq!(
        creds("pipelock"),
        serde_json::json!({
            "GITHUB_TOKEN": "/run/secrets/bottle/GITHUB_TOKEN",
            "OPENAI_KEY": "/run/secrets/bottle/OPENAI_KEY"
        })
    );
    assert_eq!(
        creds("git-gate"),
        serde_json::json!({"GITHUB_TOKEN": "/run/secrets/bottle/GITHUB_TOKEN"})
    );
    assert_eq!(
        creds("pack-exec"),
        serde_json::json!({"operator-token": "/run/secrets/bundle/pack-exec-operator-token"})
    );
    assert_eq!(
        creds("supervise"),
        serde_json::Value::Null,
        "omitted when none"
    );
    assert_eq!(creds("dns"), serde_json::Value::Null);

    // Every source init copies from is mounted read-only into the sidecars container.
    let sc = mounts(&b.project.services[SIDECARS]);
    for entry in cfg["daemons"].as_array().unwrap() {
        for source in entry["credentials"]
            .as_object()
            .into_iter()
            .flat_map(|o| o.values())
        {
            let source = source.as_str().unwrap();
            assert!(
                sc.iter().any(|(_, t, ro)| t == source && *ro),
                "{source} is not mounted"
            );
        }
    }
    // The paths the daemons' configs name are in their own credentials directories.
    assert_eq!(
        config(&b, "egress")["vault"]["OPENAI_KEY"]["file"],
        "/run/sidecars/credentials/egress/OPENAI_KEY"
    );
    assert_eq!(
        config(&b, "git-gate")["credentials_dir"],
        "/run/sidecars/credentials/git-gate"
    );

    // A disabled daemon declares nothing (its secrets are not mounted).
    let cfg = init::render(&manifest(""));
    for d in [Daemon::Egress, Daemon::Pipelock, Daemon::GitGate] {
        let entry = cfg.daemons.iter().find(|e| e.name == d.name()).unwrap();
        assert!(entry.credentials.is_empty(), "{d}");
    }
    // The bundle paths are the contract's.
    assert_eq!(
        bottle_compose::configs::CA_KEY_MOUNT,
        format!(
            "{}/{}",
            bottle_spec::BUNDLE_SECRETS_MOUNT,
            bottle_spec::CA_KEY_CREDENTIAL
        )
    );
    assert!(bottle_compose::configs::OPERATOR_TOKEN_MOUNT
        .starts_with(&format!("{}/", bottle_spec::BUNDLE_SECRETS_MOUNT)));
}

#[test]
fn handlers_come_with_pack_exec_and_take_the_manifests_limits() {
    let cfg = config(
        &render(&manifest(""), &RenderOptions::default()).unwrap(),
        "init",
    );
    assert_eq!(
        cfg["handlers"],
        serde_json::json!({
            "socket": "/run/sidecars/spawn.sock",
            "client_uid": 10005,
            "first_uid": 10100,
            "last_uid": 10163,
            "tmp_dir": "/tmp",
            "limits": {
                "processes": 64,
                "address_space_bytes": 1073741824u64,
                "file_size_bytes": 67108864,
                "open_files": 256
            },
            // the default bottle has no pipelock: a handler gets no way out at all
            "proxy": null,
            "env": {},
            "pack_roots": bottle_spec::PACK_ROOTS,
            "jail": "required"
        })
    );
    // With pipelock and egress: the relay to pipelock's pack listener, the bottle's CA bundle,
    // pipelock listening for pack traffic with the packs' own allowlist.
    let m = manifest(
        "daemons = [\"egress\", \"pipelock\", \"pack-exec\"]\nunsafe_allow_unjailed_packs = true\n[[allowlist]]\nhost = \"a.test\"\n[[pack_allowlist]]\nhost = \"b.test\"",
    );
    let b = render(&m, &RenderOptions::default()).unwrap();
    let h = &config(&b, "init")["handlers"];
    assert_eq!(h["proxy"], "127.0.0.1:8889");
    assert_eq!(h["env"]["SSL_CERT_FILE"], bottle_spec::HANDLER_CA_BUNDLE);
    assert_eq!(
        h["env"]["NODE_EXTRA_CA_CERTS"],
        bottle_spec::HANDLER_CA_BUNDLE
    );
    assert_eq!(h["jail"], "unsafe-fallback");
    let p = config(&b, "pipelock");
    assert_eq!(p["pack_listen"], "127.0.0.1:8889");
    assert_eq!(
        p["pack_allow"],
        serde_json::json!([{"host": "b.test", "ports": [443]}])
    );
    let sidecars = &b.project.services["sidecars"];
    assert!(sidecars.volumes.iter().any(|v| matches!(v,
        bottle_compose::model::Mount::Bind { target, read_only: true, .. } if target == bottle_spec::HANDLER_CA_BUNDLE)));
    let m = manifest(
        "[resources.handlers]\nprocesses = 8\naddress_space = \"512m\"\nfile_size = \"1m\"\nopen_files = 64",
    );
    let cfg = config(&render(&m, &RenderOptions::default()).unwrap(), "init");
    assert_eq!(
        cfg["handlers"]["limits"],
        serde_json::json!({
            "processes": 8,
            "address_space_bytes": 536870912,
            "file_size_bytes": 1048576,
            "open_files": 64
        })
    );
    // Partly set: the rest keep their defaults.
    let m = manifest("[resources.handlers]\nopen_files = 100");
    let cfg = config(&render(&m, &RenderOptions::default()).unwrap(), "init");
    assert_eq!(cfg["handlers"]["limits"]["open_files"], 100);
    assert_eq!(cfg["handlers"]["limits"]["processes"], 64);
    // No pack-exec, no spawner.
    let m = manifest("daemons = [\"supervise\"]");
    let cfg = config(&render(&m, &RenderOptions::default()).unwrap(), "init");
    assert_eq!(cfg.get("handlers"), None);
}

#[test]
fn allow_unsigned_packs_reaches_pack_exec() {
    let b = render(
        &manifest("allow_unsigned_packs = true"),
        &RenderOptions::default(),
    )
    .unwrap();
    assert_eq!(config(&b, "pack-exec")["allow_unsigned"], true);
}

#[test]
fn pids_and_tmpfs_sizes_have_defaults_the_manifest_can_change() {
    let b = render(&manifest(""), &RenderOptions::default()).unwrap();
    let (agent, sc) = (&b.project.services[AGENT], &b.project.services[SIDECARS]);
    assert_eq!(agent.pids_limit, Some(1024));
    assert_eq!(sc.pids_limit, Some(512));
    assert_eq!(agent.tmpfs, ["/tmp:size=256m,mode=1777"]);
    assert_eq!(
        sc.tmpfs,
        [
            "/tmp:size=64m,mode=1777",
            "/run/sidecars:size=16m,mode=0755"
        ]
    );
    let m = manifest(
        "[resources.agent]\npids = 100\ntmp_size = \"1g\"\n[resources.sidecars]\npids = 2000\ntmp_size = \"1536k\"",
    );
    let b = render(&m, &RenderOptions::default()).unwrap();
    let (agent, sc) = (&b.project.services[AGENT], &b.project.services[SIDECARS]);
    assert_eq!(agent.pids_limit, Some(100));
    assert_eq!(sc.pids_limit, Some(2000));
    assert_eq!(agent.tmpfs, ["/tmp:size=1g,mode=1777"]);
    assert_eq!(sc.tmpfs[0], "/tmp:size=1536k,mode=1777");
    // A size in bytes is written without a unit (tmpfs takes no `b`).
    let m = manifest("[resources.agent]\ntmp_size = \"1048577b\"");
    let b = render(&m, &RenderOptions::default()).unwrap();
    assert_eq!(
        b.project.services[AGENT].tmpfs,
        ["/tmp:size=1048577,mode=1777"]
    );
}

#[test]
fn the_agent_network_has_a_fixed_subnet_and_the_agent_resolves_through_the_sidecars() {
    use bottle_spec::Subnet;
    let m = manifest("");
    let b = render(&m, &RenderOptions::default()).unwrap();
    // Default: the hash choice for the project, no taken list.
    let expected =
        Subnet::for_project(bottle_spec::DEFAULT_SUBNET_POOL, "bot-bottle-demo", &[]).unwrap();
    assert_eq!(b.internal_subnet, expected);
    let check = |b: &bottle_compose::Bundle, subnet: Subnet| {
        let ip = subnet.sidecars_ip();
        let net = &b.project.networks["demo-internal"];
        let ipam = net.ipam.as_ref().expect("ipam");
        assert_eq!(ipam.config.len(), 1);
        assert_eq!(ipam.config[0].subnet, subnet.to_string());
        assert_eq!(ipam.config[0].gateway, subnet.gateway());
        assert!(b.project.networks["demo-egress"].ipam.is_none());
        let sc = &b.project.services[SIDECARS];
        assert_eq!(sc.networks["demo-internal"].ipv4_address, Some(ip));
        assert_eq!(sc.networks["demo-egress"].ipv4_address, None);
        assert!(sc.dns.is_empty());
        let agent = &b.project.services[AGENT];
        assert_eq!(agent.dns, [std::net::IpAddr::V4(ip)]);
        assert_eq!(agent.networks["demo-internal"].ipv4_address, None);
        assert_eq!(
            config(b, "dns"),
            serde_json::json!({
                "listen": "0.0.0.0:53",
                "names": {"sidecars": [ip.to_string()]},
                "ttl_s": 60
            })
        );
    };
    check(&b, expected);
    // The control plane's pick wins.
    let picked = Subnet::parse("10.99.0.16/28").unwrap();
    let opts = RenderOptions {
        internal_subnet: Some(picked),
        ..RenderOptions::default()
    };
    let b = render(&m, &opts).unwrap();
    assert_eq!(b.internal_subnet, picked);
    check(&b, picked);
    let yaml = bottle_compose::to_yaml(&b.project).unwrap();
    assert!(yaml.contains("ipv4_address: 10.99.0.18"), "{yaml}");
    assert!(
        yaml.contains("subnet: 10.99.0.16/28\n        gateway: 10.99.0.17"),
        "{yaml}"
    );
    // Too small for the gateway, the sidecars and the agent.
    let opts = RenderOptions {
        internal_subnet: Some(Subnet::parse("10.99.0.16/30").unwrap()),
        ..RenderOptions::default()
    };
    match render(&m, &opts) {
        Err(RenderError::Options(p)) => assert_eq!(p[0].path, "internal_subnet", "{p:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_operator_token_is_mounted_only_with_pack_exec() {
    let opts = RenderOptions {
        pack_exec_operator_token: "/state/tok".into(),
        ..RenderOptions::default()
    };
    let b = render(&manifest(""), &opts).unwrap();
    assert_eq!(b.pack_exec_operator_token.as_deref(), Some("/state/tok"));
    assert!(mounts(&b.project.services[SIDECARS]).contains(&(
        "/state/tok".into(),
        "/run/secrets/bundle/pack-exec-operator-token".into(),
        true
    )));
    assert!(mounts(&b.project.services[AGENT])
        .iter()
        .all(|(s, t, _)| s != "/state/tok" && !t.contains("operator")));
    let b = render(&manifest("daemons = [\"supervise\"]"), &opts).unwrap();
    assert_eq!(b.pack_exec_operator_token, None);
    assert!(mounts(&b.project.services[SIDECARS])
        .iter()
        .all(|(s, _, _)| s != "/state/tok"));
    assert!(b.project.services[SIDECARS]
        .ports
        .iter()
        .all(|p| p.container_port != 9001));
}

/// The demo upstream is a third service on the egress network only: the agent shares no
/// network with it, and it runs unprivileged and read-only; the sidecars start after it.
#[test]
fn the_demo_upstream_is_on_the_egress_network_only_unprivileged_and_started_first() {
    use bottle_compose::render::DEMO_UPSTREAM;
    let b = render(&manifest("[demo_upstream]\n"), &RenderOptions::default()).unwrap();
    let p = &b.project;
    assert_eq!(
        p.services.keys().collect::<Vec<_>>(),
        [AGENT, DEMO_UPSTREAM, SIDECARS]
    );
    let demo = &p.services[DEMO_UPSTREAM];
    assert_eq!(demo.networks.keys().collect::<Vec<_>>(), ["demo-egress"]);
    assert_eq!(demo.image, "sidecar-bundle/agent-test:dev");
    assert_eq!(
        demo.command.as_deref(),
        Some(&["demo-upstream".to_string()][..])
    );
    assert_eq!(demo.user, "65534:65534");
    assert!(demo.read_only && demo.cap_drop == ["ALL"] && demo.ports.is_empty());
    assert_eq!(demo.container_name, "bot-bottle-demo-upstream-demo");
    assert_eq!(
        p.services[SIDECARS].depends_on[DEMO_UPSTREAM].condition,
        "service_started"
    );
    // Not the agent's: it reaches the demo upstream only through the sidecars.
    assert!(!p.services[AGENT].networks.contains_key("demo-egress"));
    // Absent by default.
    let plain = render(&manifest(""), &RenderOptions::default()).unwrap();
    assert!(!plain.project.services.contains_key(DEMO_UPSTREAM));
}

/// A generated credential mounts from the project dir (the control plane writes it), an
/// operator's from its absolute host path.
#[test]
fn a_generated_credential_mounts_from_the_project_dir() {
    let m = manifest(
        "daemons = [\"pipelock\", \"egress\"]\n[[allowlist]]\nhost = \"a.example\"\n[[routes]]\nhost = \"a.example\"\nheaders = { Authorization = \"Bearer ${vault:DEMO}\" }\n[credentials.DEMO]\ngenerate = true\n",
    );
    let b = render(&m, &RenderOptions::default()).unwrap();
    let c = &b.credentials[0];
    assert!(c.generated);
    assert_eq!(c.host_path, "./secrets/credentials/DEMO");
    assert!(b.project.services[SIDECARS]
        .volumes
        .iter()
        .any(|v| matches!(
            v,
            Mount::Bind { source, target, read_only: true }
                if source == "./secrets/credentials/DEMO" && target == "/run/secrets/bottle/DEMO"
        )));
}

#[test]
fn upstream_roots_are_egress_trust_not_dlp_values() {
    let m = manifest(
        "daemons = [\"pipelock\", \"egress\"]\nupstream_roots = [\"CORP_CA\"]\n\
         [credentials.CORP_CA]\nfile = \"/etc/corp/root-ca.pem\"\n\
         [credentials.TOKEN]\nfile = \"/etc/t\"\n\
         [[allowlist]]\nhost = \"api.corp.example\"\n\
         [[routes]]\nhost = \"api.corp.example\"\nheaders = { Authorization = \"Bearer ${vault:TOKEN}\" }\n",
    );
    let b = render(&m, &RenderOptions::default()).unwrap();
    let egress = config(&b, "egress");
    assert_eq!(
        egress["extra_roots"],
        serde_json::json!(["/run/sidecars/credentials/egress/CORP_CA"])
    );
    assert_eq!(
        egress["secret_files"],
        serde_json::json!(["/run/sidecars/credentials/egress/TOKEN"])
    );
    assert_eq!(egress["intercept_all"], true);
    let pipelock = config(&b, "pipelock");
    assert_eq!(
        pipelock["secret_files"],
        serde_json::json!(["/run/sidecars/credentials/pipelock/TOKEN"])
    );
    let init = config(&b, "init");
    assert!(init_entry(&init, "pipelock")["credentials"]
        .get("CORP_CA")
        .is_none());
    assert!(init_entry(&init, "egress")["credentials"]
        .get("CORP_CA")
        .is_some());
}

/// The sidecars service's restart digest follows exactly the configs its daemons read only at
/// start: an allowlist change (pipelock reloads it) leaves the definition as it is, a
/// git-gate change alters it, so `up` recreates the container rather than leaving git-gate
/// on its old config behind an unchanged bind mount.
#[test]
fn the_restart_digest_changes_with_start_only_configs_and_not_with_reloadable_ones() {
    use bottle_compose::render::LABEL_RESTART_DIGEST;
    let with = |host: &str, upstream: &str| {
        let m = manifest(&format!(
            "daemons = [\"pipelock\", \"egress\", \"git-gate\"]\n[[allowlist]]\nhost = \"{host}\"\n[[git]]\nname = \"app\"\nupstream = \"{upstream}\"\n"
        ));
        let b = render(&m, &RenderOptions::default()).unwrap();
        let reloadable: Vec<String> = b
            .files
            .iter()
            .filter(|f| f.reloadable)
            .map(|f| f.path.clone())
            .collect();
        assert_eq!(reloadable, ["config/egress.json", "config/pipelock.json"]);
        b.project.services[SIDECARS].labels[LABEL_RESTART_DIGEST].clone()
    };
    let base = with("a.example", "git://up.example/app.git");
    assert_eq!(base.len(), 64, "{base}");
    assert_eq!(with("b.example", "git://up.example/app.git"), base);
    assert_ne!(with("a.example", "git://up.example/other.git"), base);
}
