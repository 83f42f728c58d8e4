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
