//! Every config file the renderer writes is accepted by the daemon that reads it: parsed with
//! the daemon crate's own parser (`sidecars_common::config::parse`, the one `daemon_main`
//! uses), so an unknown key (`deny_unknown_fields`), a wrong type or a value the daemon's
//! validation refuses fails here, not at `up`.
//!
//! The files name container paths that the daemons read at startup: their own credentials
//! directory (`/run/sidecars/credentials/<daemon>/...`) and the CA certificate. The test first
//! parses each file strictly as rendered (shape only), then does what sidecar-init does at
//! start — copies each daemon's declared `credentials` (from the rendered `init.json`) out of
//! the mounted secrets into that daemon's directory — on a temp dir holding real files (a real
//! CA from `egress::generate_ca`, credential files), maps the container paths onto it and runs
//! the daemon's full validation. So a path a config names that init does not put there fails
//! here too.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bottle_compose::configs::{CA_CERT, CA_KEY_MOUNT, OPERATOR_TOKEN_MOUNT, SECRETS_DIR};
use bottle_compose::{render, Manifest, RenderOptions};
use serde::de::DeserializeOwned;
use sidecars_common::config::{parse, Validate};

/// Strict shape check: every key known, every type right (no validation, no file access).
fn shape<T: DeserializeOwned>(text: &str, origin: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{origin}: {e}\n{text}"))
}

/// Full parse and validation, with container paths mapped into `root`.
fn full<T: DeserializeOwned + Validate>(text: &str, origin: &str, root: &Path) -> T {
    let mapped = text
        .replace(
            bottle_spec::CREDENTIALS_ROOT,
            &root.join("credentials").display().to_string(),
        )
        .replace(CA_CERT, &root.join("ca.crt").display().to_string());
    parse(&mapped, origin).unwrap_or_else(|e| panic!("{e}\n{mapped}"))
}

fn files(m: &Manifest) -> Vec<(String, String)> {
    render(m, &RenderOptions::default())
        .expect("render")
        .files
        .into_iter()
        .map(|f| (f.path, f.contents))
        .collect()
}

/// Where a mounted secret of the sidecars container lives in the fixture.
fn source_in(root: &Path, container_path: &str) -> PathBuf {
    if let Some(name) = container_path.strip_prefix(&format!("{SECRETS_DIR}/")) {
        root.join("secrets").join(name)
    } else if container_path == CA_KEY_MOUNT {
        root.join("bundle/ca.key")
    } else if container_path == OPERATOR_TOKEN_MOUNT {
        root.join("bundle/operator-token")
    } else {
        panic!("init.json names a credential source that is not a mounted secret: {container_path}")
    }
}

/// The mounted secrets (operator credentials, the CA key, the operator token), then what
/// sidecar-init does with them: each daemon's declared credentials copied into its directory.
fn fixtures(m: &Manifest, init: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("secrets")).unwrap();
    std::fs::create_dir(root.path().join("bundle")).unwrap();
    for name in m.credentials.keys() {
        std::fs::write(
            root.path().join("secrets").join(name),
            format!("value-of-{name}-0123456789\n"),
        )
        .unwrap();
    }
    let (cert, key) = egress::generate_ca("test bottle").unwrap();
    std::fs::write(root.path().join("ca.crt"), cert).unwrap();
    std::fs::write(root.path().join("bundle/ca.key"), key).unwrap();
    std::fs::write(
        root.path().join("bundle/operator-token"),
        "operator-token-0123456789abcdef\n",
    )
    .unwrap();

    let init: serde_json::Value = serde_json::from_str(init).unwrap();
    for daemon in init["daemons"].as_array().unwrap() {
        let name = daemon["name"].as_str().unwrap();
        let dir = root.path().join("credentials").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let declared: BTreeMap<String, String> =
            serde_json::from_value(daemon.get("credentials").cloned().unwrap_or_default())
                .unwrap_or_default();
        for (file, source) in declared {
            assert!(
                !file.contains('/') && !file.starts_with('.'),
                "{name}: credential file name {file:?}"
            );
            std::fs::copy(source_in(root.path(), &source), dir.join(&file))
                .unwrap_or_else(|e| panic!("{name}: copy {source} to {file}: {e}"));
        }
    }
    root
}

/// Parse every rendered daemon config with its daemon's parser; returns how many were checked.
fn check_all(m: &Manifest) -> usize {
    let files = files(m);
    let init = &files
        .iter()
        .find(|(p, _)| p == "config/init.json")
        .expect("init.json")
        .1;
    let root = fixtures(m, init);
    let mut checked = 0;
    for (path, text) in &files {
        let (path, text) = (path.as_str(), text.as_str());
        // A daemon cannot read the mounted secrets (sidecar-init alone can): no config may
        // name them.
        assert!(
            !text.contains("/run/secrets/") || path == "config/init.json",
            "{path} names a mounted secret instead of the daemon's own copy:\n{text}"
        );
        match path {
            "config/pipelock.json" => {
                shape::<pipelock::config::Config>(text, path);
                let c: pipelock::config::Config = full(text, path, root.path());
                assert_eq!(c.listen, "0.0.0.0:8888".parse().unwrap());
                assert_eq!(c.allow.len(), m.allowlist.len());
                assert_eq!(c.secret_files.len(), m.credentials.len());
            }
            "config/egress.json" => {
                shape::<egress::Config>(text, path);
                let c: egress::Config = full(text, path, root.path());
                assert_eq!(c.listen, "127.0.0.1:9099".parse().unwrap());
                assert_eq!(c.allow_from, vec!["127.0.0.1/32".parse().unwrap()]);
                assert_eq!(c.routes.len(), m.routes.len());
                assert_eq!(c.vault.len(), m.vault.len());
                // The route's credential reference is egress's `${cred:NAME}`.
                for r in &c.routes {
                    for v in r.headers.values() {
                        assert!(!v.contains("${vault:"), "{v}");
                    }
                }
                // egress builds its whole runtime state (reads credentials, loads the CA).
                egress::state::State::build(&c).expect("egress state");
            }
            "config/git-gate.json" => {
                shape::<git_gate::config::Config>(text, path);
                let c: git_gate::config::Config = full(text, path, root.path());
                assert_eq!(c.base_dir, Path::new("/git"));
                assert_eq!(c.listen.port(), 9418);
                assert_eq!(c.repos.len(), m.git.len());
                for repo in c.repos.iter().filter_map(|r| r.credential.as_ref()) {
                    assert!(
                        c.credentials_dir.join(repo).is_file(),
                        "git-gate's credential {repo} is not in its directory"
                    );
                }
            }
            "config/supervise.json" => {
                shape::<supervise::config::Config>(text, path);
                let c: supervise::config::Config = full(text, path, root.path());
                assert_eq!(c.queue_dir, Path::new("/run/supervise/queue"));
                assert_eq!(c.operator_listen, "127.0.0.1:9101".parse().unwrap());
            }
            "config/pack-exec.json" => {
                shape::<pack_exec::Config>(text, path);
                let c: pack_exec::Config = full(text, path, root.path());
                assert_eq!(c.listen.port(), 9000);
            }
            "config/dns.json" => {
                shape::<dns::Config>(text, path);
                let c: dns::Config = full(text, path, root.path());
                assert_eq!(c.listen.port(), bottle_spec::DNS_PORT);
                assert_eq!(c.names.keys().collect::<Vec<_>>(), ["sidecars"]);
            }
            "config/init.json" => {
                // sidecar-init's own parser and validation (deny_unknown_fields).
                let c = sidecar_init::config::parse(text.as_bytes())
                    .unwrap_or_else(|p| panic!("{path}: {p:?}\n{text}"));
                assert_eq!(c.daemons[0].name, "dns");
                for d in &c.daemons {
                    let uid = match bottle_compose::Daemon::from_name(&d.name) {
                        Some(daemon) => daemon.uid(),
                        None => bottle_spec::DNS_UID,
                    };
                    assert_eq!(d.user, Some(format!("{uid}:{uid}")), "{}", d.name);
                }
                let handlers = c.handlers.as_ref().map(|h| h.client_uid);
                let pack_exec = m.daemons.contains(&bottle_compose::Daemon::PackExec);
                assert_eq!(handlers.is_some(), pack_exec);
                continue;
            }
            other => panic!("no parser for {other}"),
        }
        checked += 1;
    }
    checked
}

#[test]
fn every_golden_bottle_config_is_accepted_by_its_daemon() {
    let mut total = 0;
    for manifest in support::golden_manifests() {
        let text = std::fs::read_to_string(&manifest).unwrap();
        let name = manifest.file_name().and_then(|n| n.to_str());
        let m = Manifest::parse(&text, name).unwrap();
        total += check_all(&m);
    }
    assert!(total >= 13, "only {total} daemon configs checked");
}

#[test]
fn minimal_configs_of_each_daemon_are_accepted() {
    // Each daemon alone (egress with pipelock, which it needs), no optional inputs.
    for daemons in [
        r#"["pipelock"]"#,
        r#"["pipelock", "egress"]"#,
        r#"["git-gate"]"#,
        r#"["supervise"]"#,
        r#"["pack-exec"]"#,
    ] {
        let m = Manifest::parse(
            &format!("slug = \"m\"\ndaemons = {daemons}\n[agent]\nimage = \"i\"\n"),
            Some("t.toml"),
        )
        .unwrap();
        assert!(check_all(&m) >= 2, "{daemons}");
    }
}
