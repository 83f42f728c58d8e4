//! Shared helpers of the renderer's integration tests: the golden directory and rendering a
//! golden manifest into the files a project directory gets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bottle_compose::{render, to_yaml, Manifest, RenderOptions};

/// `tests/golden`.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every `*.toml` / `*.json` manifest under `tests/golden`, sorted.
pub fn golden_manifests() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name.ends_with(".toml") || name.ends_with(".json")) && !name.contains(".config.")
        })
        .collect();
    out.sort();
    out
}

/// Render a manifest file to `(relative path, contents)` pairs: `compose.yaml` and each
/// config file.
pub fn render_files(manifest: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(manifest).expect("read manifest");
    let name = manifest.file_name().and_then(|n| n.to_str());
    let m = Manifest::parse(&text, name).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let bundle = render(&m, &RenderOptions::default()).expect("render");
    let mut files = vec![(
        "compose.yaml".to_string(),
        to_yaml(&bundle.project).expect("yaml"),
    )];
    for f in bundle.files {
        files.push((f.path, f.contents));
    }
    files
}

/// Where a rendered file of `manifest` is kept: `<stem>.compose.yaml`, `<stem>.config.<file>`.
pub fn golden_path(manifest: &Path, rel: &str) -> PathBuf {
    let stem = manifest.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
    let name = match rel {
        "compose.yaml" => format!("{stem}.compose.yaml"),
        other => format!("{stem}.config.{}", other.trim_start_matches("config/")),
    };
    golden_dir().join(name)
}

/// The compose command to test with: `BOT_BOTTLE_COMPOSE`, else `docker compose` (v2), else
/// `docker-compose` (v1). `None` when none works: outside CI the caller skips with a note; with
/// `CI` set that is a failure, because CI must run these checks.
pub fn compose_command() -> Option<Vec<String>> {
    let candidates: Vec<Vec<String>> = match std::env::var("BOT_BOTTLE_COMPOSE") {
        Ok(v) if !v.trim().is_empty() => vec![v.split_whitespace().map(String::from).collect()],
        _ => vec![
            vec!["docker".into(), "compose".into()],
            vec!["docker-compose".into()],
        ],
    };
    for argv in candidates {
        let ok = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .arg("version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(argv);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("neither `docker compose` nor `docker-compose` works, and CI is set: these checks must run in CI");
    }
    eprintln!(
        "note: no docker compose / docker-compose found; skipping (this fails when CI is set)"
    );
    None
}

/// Write a rendered manifest into `dir` like the control plane does (compose file, configs,
/// an empty packs directory).
pub fn write_project(manifest: &Path, dir: &Path) {
    for (rel, contents) in render_files(manifest) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }
    std::fs::create_dir_all(dir.join("packs")).expect("packs dir");
    // The seccomp profile compose reads (kept out of the golden files: it is one constant).
    let text = std::fs::read_to_string(manifest).expect("read manifest");
    let name = manifest.file_name().and_then(|n| n.to_str());
    let m = Manifest::parse(&text, name).expect("manifest");
    if let Some(p) = render(&m, &RenderOptions::default())
        .expect("render")
        .seccomp_profile
    {
        std::fs::write(dir.join(p.path), p.contents).expect("write profile");
    }
}

/// Run a command with a hard timeout; returns (success, stdout, stderr).
pub fn run_with_timeout(
    argv: &[String],
    cwd: &Path,
    timeout: std::time::Duration,
) -> (bool, String, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(s) => (s.success(), stdout, stderr),
        None => (
            false,
            stdout,
            format!("{stderr}\n(killed after {timeout:?})"),
        ),
    }
}
