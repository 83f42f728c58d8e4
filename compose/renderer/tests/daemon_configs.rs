//! Every config file the renderer writes is accepted by the daemon that reads it: parsed with
//! the daemon crate's own parser (`sidecars_common::config::parse`, the one `daemon_main`
//! uses), so an unknown key (`deny_unknown_fields`), a wrong type or a value the daemon's
//! validation refuses fails here, not at `up`.
//!
//! The files name container paths (`/run/secrets/bottle/...`, `/etc/sidecars/ca/...`) that
//! egress and pipelock read at startup. The test first parses each file strictly as rendered
//! (shape only), then maps those container paths onto a temp dir holding real files (a real CA
//! from `egress::generate_ca`, credential files) and runs the daemon's full validation.

mod support;

use std::path::Path;

use bottle_compose::configs::{CA_CERT, CA_KEY, SECRETS_DIR};
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
        .replace(SECRETS_DIR, &root.join("secrets").display().to_string())
        .replace(CA_CERT, &root.join("ca.crt").display().to_string())
        .replace(CA_KEY, &root.join("ca.key").display().to_string());
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

fn fixtures(m: &Manifest) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("secrets")).unwrap();
    for name in m.credentials.keys() {
        std::fs::write(
            root.path().join("secrets").join(name),
            format!("value-of-{name}-0123456789\n"),
        )
        .unwrap();
    }
    let (cert, key) = egress::generate_ca("test bottle").unwrap();
    std::fs::write(root.path().join("ca.crt"), cert).unwrap();
    std::fs::write(root.path().join("ca.key"), key).unwrap();
    root
}

/// Parse every rendered daemon config with its daemon's parser; returns how many were checked.
fn check_all(m: &Manifest) -> usize {
    let root = fixtures(m);
    let mut checked = 0;
    for (path, text) in files(m) {
        match path.as_str() {
            "config/pipelock.json" => {
                shape::<pipelock::config::Config>(&text, &path);
                let c: pipelock::config::Config = full(&text, &path, root.path());
                assert_eq!(c.listen, "0.0.0.0:8888".parse().unwrap());
                assert_eq!(c.allow.len(), m.allowlist.len());
                assert_eq!(c.secret_files.len(), m.credentials.len());
            }
            "config/egress.json" => {
                shape::<egress::Config>(&text, &path);
                let c: egress::Config = full(&text, &path, root.path());
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
                shape::<git_gate::config::Config>(&text, &path);
                let c: git_gate::config::Config = full(&text, &path, root.path());
                assert_eq!(c.base_dir, Path::new("/git"));
                assert_eq!(c.listen.port(), 9418);
                assert_eq!(c.repos.len(), m.git.len());
            }
            "config/supervise.json" => {
                shape::<supervise::config::Config>(&text, &path);
                let c: supervise::config::Config = full(&text, &path, root.path());
                assert_eq!(c.queue_dir, Path::new("/run/supervise/queue"));
                assert_eq!(c.operator_listen, "127.0.0.1:9101".parse().unwrap());
            }
            "config/pack-exec.json" => {
                shape::<pack_exec::Config>(&text, &path);
                let c: pack_exec::Config = full(&text, &path, root.path());
                assert_eq!(c.listen.port(), 9000);
            }
            "config/init.json" => continue,
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
    assert!(total >= 8, "only {total} daemon configs checked");
}

#[test]
fn minimal_configs_of_each_daemon_are_accepted() {
    // Each daemon alone (egress with pipelock, which it needs), no optional inputs.
    for daemons in [
        r#"["pipelock"]"#,
        r#"["pipelock", "egress"]"#,
        r#"["git-gate"]"#,
        r#"["supervise"]"#,
    ] {
        let m = Manifest::parse(
            &format!("slug = \"m\"\ndaemons = {daemons}\n[agent]\nimage = \"i\"\n"),
            Some("t.toml"),
        )
        .unwrap();
        assert!(check_all(&m) >= 1, "{daemons}");
    }
}
