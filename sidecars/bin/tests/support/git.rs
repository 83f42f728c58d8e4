//! Git fixtures for tests that drive git-gate with a real git client: upstream repositories
//! (a bare path, or served by a plain `git daemon`), work clones and commits. Reusable by the
//! compose end-to-end tests (`#[path = ".../support/git.rs"] mod git;`).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `git` command isolated from the host's config, with a fixed identity.
pub fn cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    c
}

/// Run git; whatever the outcome.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    cmd(dir).args(args).output().expect("run git")
}

/// Run git and insist it succeeds; stdout, trimmed.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Create a bare upstream at `path` whose `main` has one commit (`README.md`).
pub fn bare_upstream(path: &Path) {
    let parent = path.parent().unwrap();
    ok(
        parent,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            path.to_str().unwrap(),
        ],
    );
    let seed = parent.join(format!(
        "seed-{}",
        path.file_name().unwrap().to_string_lossy()
    ));
    ok(
        parent,
        &[
            "init",
            "--quiet",
            "--initial-branch=main",
            seed.to_str().unwrap(),
        ],
    );
    std::fs::write(seed.join("README.md"), "hello\n").unwrap();
    ok(&seed, &["add", "."]);
    ok(&seed, &["commit", "--quiet", "-m", "initial"]);
    ok(&seed, &["push", "--quiet", path.to_str().unwrap(), "main"]);
    std::fs::remove_dir_all(&seed).unwrap();
}

/// Write `content` to `file` in work tree `work` and commit it; returns the commit id.
pub fn commit_file(work: &Path, file: &str, content: &str, message: &str) -> String {
    let path = work.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    ok(work, &["add", "--all"]);
    ok(work, &["commit", "--quiet", "-m", message]);
    ok(work, &["rev-parse", "HEAD"])
}

/// `git rev-parse <rev>` in a (bare) repository, `None` if it does not resolve.
pub fn rev(repo: &Path, rev: &str) -> Option<String> {
    let out = run(repo, &["rev-parse", "--verify", "--quiet", rev]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A free TCP port on 127.0.0.1 (bind-and-release; fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A plain `git daemon` serving every repository under `base`, pushes enabled; killed on drop.
pub struct GitDaemon {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl GitDaemon {
    /// Start it on a free port.
    pub fn start(base: &Path) -> GitDaemon {
        let port = free_port();
        let child = cmd(base)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ])
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr, Duration::from_secs(10));
        GitDaemon { child, addr }
    }

    /// `git://addr/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.addr)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `sidecars git-gate` (the real binary); killed on drop.
pub struct GitGate {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    /// Its `base_dir`.
    pub base_dir: PathBuf,
}

impl GitGate {
    /// Start `bin git-gate` with `repos` (the JSON array of the config) under `dir`.
    pub fn start(
        bin: &str,
        dir: &Path,
        repos: serde_json::Value,
        extra: serde_json::Value,
    ) -> GitGate {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let base_dir = dir.join("mirrors");
        let mut config = serde_json::json!({
            "listen": addr,
            "base_dir": base_dir,
            "credentials_dir": dir.join("credentials"),
            "repos": repos,
            // The hook as the image ships it (the source file of the image's copy).
            "hooks_dir": concat!(env!("CARGO_MANIFEST_DIR"), "/../git-gate/hooks"),
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let path = dir.join("git-gate.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut c = Command::new(bin);
        c.args(["git-gate", "--config"])
            .arg(&path)
            .stdin(Stdio::null());
        // The same isolated git environment as the test's own git commands.
        for (k, v) in cmd(dir).get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let child = c.spawn().expect("start git-gate");
        wait_for_port(addr, Duration::from_secs(30));
        GitGate {
            child,
            addr,
            base_dir,
        }
    }

    /// `git://addr/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}", self.addr)
    }
}

impl Drop for GitGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
