//! The image follows the contract: every daemon's state directory is created in
//! `Dockerfile.sidecars` owned by that daemon's uid (a new named volume copies it), and the
//! git-gate hook is shipped read-only where git-gate looks for it.

use bottle_spec::Daemon;

fn dockerfile() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Dockerfile.sidecars");
    std::fs::read_to_string(path).expect("Dockerfile.sidecars")
}

#[test]
fn every_state_dir_is_created_owned_by_its_daemon_and_private() {
    let text = dockerfile();
    for d in Daemon::ALL {
        let Some(dir) = d.state_dir() else { continue };
        let uid = d.uid();
        let line = text
            .lines()
            .find(|l| {
                l.contains("install -d") && l.trim_end_matches(['\\', ';', ' ']).ends_with(dir)
            })
            .unwrap_or_else(|| panic!("no `install -d ... {dir}` line for {d}"));
        assert!(
            line.contains(&format!("-o {uid} -g {uid}")),
            "{dir} is not owned by {d}'s uid {uid}: {line}"
        );
        assert!(
            line.contains("-m 0700") || line.contains("-m 0711"),
            "{dir} must not be readable by other uids: {line}"
        );
    }
}

#[test]
fn the_image_runs_init_as_root_and_ships_the_git_hook() {
    let text = dockerfile();
    assert!(
        text.lines().any(|l| l.trim() == "USER 0:0"),
        "init must start as uid 0"
    );
    assert!(text.contains("/usr/share/sidecars/git-hooks/pre-receive"));
    assert!(
        !text.contains("65534"),
        "no daemon shares the nobody uid any more"
    );
}
