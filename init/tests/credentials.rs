//! Credentials handed out by init: each daemon's private copy, and refusals that start
//! nothing. Needs root to give files to another uid (CI runs as root; fails there otherwise).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use support::{Dir, Init, Mode};

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "credential tests need root in CI"
    );
    eprintln!("SKIPPED: not root");
    false
}

fn secret(dir: &Dir, name: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.write(name, "the-secret-value\n");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn config(dir: &Dir, source: &std::path::Path) {
    dir.config(serde_json::json!({
        "credentials_root": dir.path("creds"),
        "daemons": [{
            "name": "d", "argv": ["/bin/sleep", "30"], "user": "10050:10050",
            "credentials": {"token": source}
        }]
    }));
}

#[test]
fn a_daemon_gets_its_credentials_in_a_private_directory() {
    if !root_or_skip() {
        return;
    }
    let dir = Dir::new();
    let src = secret(&dir, "src", 0o400);
    config(&dir, &src);
    let init = Init::supervise(Mode::Subreaper, &dir, &[]);
    let copy = dir.path("creds/d/token");
    support::poll("the copy", Duration::from_secs(5), || {
        copy.exists().then_some(())
    });
    let m = std::fs::metadata(&copy).expect("copy");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (10050, 10050, 0o400));
    let d = std::fs::metadata(dir.path("creds/d")).expect("dir");
    assert_eq!((d.uid(), d.mode() & 0o777), (10050, 0o500));
    let root = std::fs::metadata(dir.path("creds")).expect("root");
    assert_eq!(root.mode() & 0o777, 0o711);
    assert_eq!(
        std::fs::read_to_string(&copy).expect("read"),
        "the-secret-value\n"
    );
    // the daemon is told where
    let pid = support::poll("daemon pid", Duration::from_secs(5), || {
        support::daemon_state(&dir, "d").filter(|s| s == "running")?;
        support::descendants(init.init_pid()).into_iter().next()
    });
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let want = format!("CREDENTIALS_DIRECTORY={}", dir.path("creds/d").display());
    assert!(
        environ.split(|b| *b == 0).any(|v| v == want.as_bytes()),
        "{}",
        String::from_utf8_lossy(&environ)
    );
    init.signal(15);
    let f = init.finish(Duration::from_secs(10));
    assert_eq!(f.code, Some(0), "{}", f.err);
}

#[test]
fn a_loose_or_missing_credential_starts_nothing_and_names_the_fix() {
    if !root_or_skip() {
        return;
    }
    for (mode, needle) in [(0o640, "chmod 0400"), (0o404, "chmod 0400")] {
        let dir = Dir::new();
        let src = secret(&dir, "src", mode);
        config(&dir, &src);
        let f = Init::supervise(Mode::Subreaper, &dir, &[]).finish(Duration::from_secs(10));
        assert_eq!(f.code, Some(2), "{}", f.err);
        assert!(
            f.err.contains(src.to_str().expect("utf8")) && f.err.contains(needle),
            "{}",
            f.err
        );
        assert!(
            !dir.path("creds/d").exists(),
            "a copy was made of a loose file"
        );
    }
    let dir = Dir::new();
    config(&dir, &dir.path("absent"));
    let f = Init::supervise(Mode::Subreaper, &dir, &[]).finish(Duration::from_secs(10));
    assert_eq!(f.code, Some(2), "{}", f.err);
    assert!(
        f.err.contains("absent") && f.err.contains("cannot read"),
        "{}",
        f.err
    );
}

#[test]
fn check_config_refuses_credentials_without_a_user_and_bad_names() {
    let dir = Dir::new();
    dir.config(serde_json::json!({
        "daemons": [
            {"name": "a", "argv": ["/bin/true"], "credentials": {"t": "/x"}},
            {"name": "b", "argv": ["/bin/true"], "user": "10051", "credentials": {"../t": "rel"}}
        ],
        "handlers": {"socket": "/s", "client_uid": 10100, "first_uid": 10100, "last_uid": 10101}
    }));
    let config = dir.path("init.json");
    let f = support::run(
        Mode::Subreaper,
        &["check-config", "--config", config.to_str().expect("utf8")],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(f.code, Some(2), "{}", f.err);
    for needle in [
        "daemons[0].credentials: a daemon holding credentials needs its own non-root",
        "daemons[1].credentials.../t",
        "the source must be an absolute path",
        "handlers.client_uid",
    ] {
        assert!(f.err.contains(needle), "missing {needle:?} in\n{}", f.err);
    }
}

#[test]
fn sighup_hands_out_rotated_credentials_before_the_reload_and_keeps_them_on_a_bad_source() {
    if !root_or_skip() {
        return;
    }
    let dir = Dir::new();
    let src = secret(&dir, "src", 0o400);
    dir.config(serde_json::json!({
        "credentials_root": dir.path("creds"),
        "daemons": [{
            "name": "d", "user": "10050:10050", "reload_signal": "SIGHUP",
            "argv": ["/bin/sh", "-c", "trap '' HUP; while :; do sleep 1; done"],
            "credentials": {"token": src}
        }]
    }));
    let init = Init::supervise(Mode::Subreaper, &dir, &[]);
    let copy = dir.path("creds/d/token");
    let read = || std::fs::read_to_string(&copy).ok();
    support::poll("the first copy", Duration::from_secs(5), || {
        (read().as_deref() == Some("the-secret-value\n")).then_some(())
    });
    support::poll("the daemon", Duration::from_secs(5), || {
        support::daemon_state(&dir, "d").filter(|s| s == "running")
    });
    // Rotated in place on the host (the file stays root's 0400), then a reload.
    std::fs::write(&src, "the-rotated-value\n").expect("rotate");
    init.signal(1);
    support::poll("the rotated copy", Duration::from_secs(5), || {
        (read().as_deref() == Some("the-rotated-value\n")).then_some(())
    });
    let link = std::fs::read_link(dir.path("creds/d")).expect("a link");
    assert_eq!(link, std::path::PathBuf::from("d.2"));
    assert!(
        !dir.path("creds/d.1").exists(),
        "the old generation is removed"
    );
    let m = std::fs::metadata(&copy).expect("copy");
    assert_eq!((m.uid(), m.mode() & 0o777), (10050, 0o400));
    let d = std::fs::metadata(dir.path("creds/d")).expect("generation dir");
    assert_eq!((d.uid(), d.mode() & 0o777), (10050, 0o500));
    // A source made loose is refused: the daemon keeps what it has.
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(&src, "a-value-never-handed-out\n").expect("write");
    init.signal(1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read().as_deref(), Some("the-rotated-value\n"));
    assert_eq!(support::daemon_state(&dir, "d").as_deref(), Some("running"));
    init.signal(15);
    let f = init.finish(Duration::from_secs(10));
    assert_eq!(f.code, Some(0), "{}", f.err);
    assert!(
        f.err.contains("credentials of d kept as they were") && f.err.contains("chmod 0400"),
        "{}",
        f.err
    );
    assert!(
        !f.err.contains("rotated-value") && !f.err.contains("never-handed-out"),
        "{}",
        f.err
    );
}
