//! The rendered files against the real compose CLI: every golden file must pass
//! `compose config`, the values compose reads must be the manifest's literal values, and (with
//! Docker and the test agent image) a container must see them unchanged — `$`, `yes`, newlines
//! and all.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use support::{compose_command, golden_manifests, run_with_timeout, write_project};

#[derive(Deserialize)]
struct ConfigOut {
    services: BTreeMap<String, ServiceOut>,
}

#[derive(Deserialize)]
struct ServiceOut {
    #[serde(default)]
    environment: BTreeMap<String, Option<String>>,
    #[serde(default)]
    command: Option<Vec<String>>,
    user: String,
}

/// compose v1 prints `$$` back escaped; v2 may print the interpolated value. Accept either.
fn same_literal(printed: &str, literal: &str) -> bool {
    printed == literal || printed.replace("$$", "$") == literal
}

#[test]
fn every_golden_file_passes_compose_config_with_literal_values() {
    let Some(compose) = compose_command() else {
        return;
    };
    for manifest in golden_manifests() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_project(&manifest, dir.path());
        let stem = manifest.file_stem().and_then(|s| s.to_str()).expect("stem");
        let mut argv = compose.clone();
        argv.extend(
            [
                "-p",
                &format!("bottle-golden-{stem}"),
                "-f",
                "compose.yaml",
                "config",
            ]
            .map(String::from),
        );
        let (ok, stdout, stderr) = run_with_timeout(&argv, dir.path(), Duration::from_secs(60));
        assert!(
            ok,
            "{}: compose config failed:\n{stderr}",
            manifest.display()
        );

        let text = std::fs::read_to_string(&manifest).expect("read");
        let m =
            bottle_compose::Manifest::parse(&text, manifest.file_name().and_then(|n| n.to_str()))
                .expect("parse");
        let bundle = bottle_compose::render(&m, &Default::default()).expect("render");
        let parsed: ConfigOut = serde_norway::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{}: cannot read compose config output: {e}\n{stdout}",
                manifest.display()
            )
        });
        for (name, service) in &bundle.project.services {
            let got = &parsed.services[name];
            assert_eq!(got.user, service.user, "{stem}: {name}.user");
            for (k, v) in &service.environment {
                let printed = got
                    .environment
                    .get(k)
                    .cloned()
                    .flatten()
                    .unwrap_or_default();
                assert!(
                    same_literal(&printed, v),
                    "{stem}: {name}.environment.{k}: compose read {printed:?}, manifest says {v:?}"
                );
            }
            if let Some(cmd) = &service.command {
                let printed = got.command.clone().unwrap_or_default();
                assert_eq!(printed.len(), cmd.len(), "{stem}: {name}.command");
                for (p, c) in printed.iter().zip(cmd) {
                    assert!(
                        same_literal(p, c),
                        "{stem}: {name}.command: compose read {p:?}, manifest says {c:?}"
                    );
                }
            }
        }
    }
}

const AGENT_IMAGE: &str = "sidecar-bundle/agent-test:dev";

fn docker_image_exists(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn literal_values_reach_the_container_unchanged() {
    let Some(compose) = compose_command() else {
        return;
    };
    if !docker_image_exists(AGENT_IMAGE) {
        if std::env::var_os("CI").is_some() {
            panic!("{AGENT_IMAGE} is missing and CI is set: scripts/images.sh builds it before the tests");
        }
        eprintln!("note: {AGENT_IMAGE} is missing (scripts/images.sh builds it); skipping");
        return;
    }
    let tricky = [
        "a${HOME}b",
        "$$",
        "price$",
        "$1 ${X:-y}",
        "yes",
        "on",
        "Off",
        "1_000",
        "0755",
        "2001-12-14",
        "1:20",
        "~",
        "null",
        "",
        "line one\nline two\n",
        "a: b",
        "- dash",
        "# hash",
        "'q' \"qq\"",
        "  padded  ",
        "tab\there",
        "héllo ✓",
        "C:\\path\\n",
    ];
    let mut env = BTreeMap::new();
    for (i, v) in tricky.iter().enumerate() {
        env.insert(format!("V{i:02}"), v.to_string());
    }
    let script = "import os,sys,json; print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in os.environ.items() if k.startswith('V') and k[1:].isdigit()}}))";
    let mut command = vec!["python3".to_string(), "-c".into(), script.into()];
    command.extend(tricky.iter().map(|s| s.to_string()));
    let manifest = serde_json::json!({
        "slug": "literal-test",
        "agent": {"image": AGENT_IMAGE, "command": command, "env": env},
    });
    let m = bottle_compose::Manifest::parse(&manifest.to_string(), Some("literal.json"))
        .expect("manifest");
    let bundle = bottle_compose::render(&m, &Default::default()).expect("render");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("compose.yaml"),
        bottle_compose::to_yaml(&bundle.project).expect("yaml"),
    )
    .expect("write");
    if let Some(p) = &bundle.seccomp_profile {
        std::fs::write(dir.path().join(&p.path), &p.contents).expect("write profile");
    }
    let project = format!("bottle-literal-test-{}", std::process::id());
    let base: Vec<String> = compose
        .iter()
        .cloned()
        .chain([
            "-p".into(),
            project.clone(),
            "-f".into(),
            "compose.yaml".into(),
        ])
        .collect();
    let mut run = base.clone();
    run.extend(["run", "--rm", "--no-deps", "-T", "agent"].map(String::from));
    let (ok, stdout, stderr) = run_with_timeout(&run, dir.path(), Duration::from_secs(120));
    let mut down = base.clone();
    down.extend(["down", "--volumes", "--remove-orphans", "--timeout", "1"].map(String::from));
    let _ = run_with_timeout(&down, dir.path(), Duration::from_secs(60));
    assert!(ok, "compose run failed:\n{stderr}");

    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in output:\n{stdout}\n{stderr}"));
    let seen: serde_json::Value = serde_json::from_str(line).expect("json");
    let argv: Vec<String> = serde_json::from_value(seen["argv"].clone()).expect("argv");
    assert_eq!(
        argv,
        tricky.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "command arguments changed on the way"
    );
    for (i, v) in tricky.iter().enumerate() {
        assert_eq!(
            seen["env"][format!("V{i:02}")],
            serde_json::Value::String(v.to_string()),
            "env V{i:02}"
        );
    }
}
