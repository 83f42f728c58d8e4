//! `BOT_BOTTLE_FILES=volumes` on real Docker, from the host CLI: a bottle's files arrive in
//! read-only, content-named volumes; an unchanged re-up reuses them; a fill interrupted by a
//! killed control plane (its loader container left behind, the volume empty) is filled again
//! instead of being mounted half-empty; `down` removes leftover loaders and every files volume.

use std::path::PathBuf;
use std::time::Duration;

use e2e::{cmd, control_plane, require_docker, run, workspace_root, Output};

const MANIFEST: &str = r#"
slug = "{slug}"
daemons = ["pack-exec"]
packs = ["{packs}/cmd.upper"]

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#;

/// One bottle of this test, run with volumes delivery; `down` on drop.
struct VolumesBottle {
    slug: String,
    project: String,
    state: tempfile::TempDir,
    manifest: PathBuf,
}

impl VolumesBottle {
    fn new() -> VolumesBottle {
        let slug = format!("e2e-files-{}", std::process::id() % 100_000);
        let state = tempfile::tempdir().expect("state dir");
        let manifest = state.path().join("bottle.toml");
        let text = MANIFEST.replace("{slug}", &slug).replace(
            "{packs}",
            &workspace_root().join("packs").display().to_string(),
        );
        std::fs::write(&manifest, text).expect("manifest");
        let b = VolumesBottle {
            project: format!("bot-bottle-{slug}"),
            slug,
            state,
            manifest,
        };
        let _ = b.cp(&["down", &b.slug]);
        b
    }

    fn cp(&self, args: &[&str]) -> Output {
        cmd(control_plane())
            .args(args)
            .env("BOT_BOTTLE_STATE_DIR", self.state.path())
            .env("BOT_BOTTLE_RUNTIME", "engine")
            .env("BOT_BOTTLE_FILES", "volumes")
            .timeout(Duration::from_secs(180))
            .run()
    }

    fn up(&self) {
        let out = self.cp(&["up", &self.manifest.display().to_string()]);
        assert_eq!(out.code, 0, "up:\n{}\n{}", out.stdout, out.stderr);
    }

    /// The sidecars container's mounts: (type, name, destination, rw).
    fn mounts(&self) -> Vec<(String, String, String, bool)> {
        let out = run(
            "docker",
            &[
                "inspect",
                "-f",
                "{{json .Mounts}}",
                &format!("bot-bottle-sidecars-{}", self.slug),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("mounts JSON");
        v.as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                (
                    m["Type"].as_str().unwrap_or_default().to_string(),
                    m["Name"].as_str().unwrap_or_default().to_string(),
                    m["Destination"].as_str().unwrap_or_default().to_string(),
                    m["RW"].as_bool().unwrap_or(true),
                )
            })
            .collect()
    }

    fn files_volume(&self, destination: &str) -> String {
        self.mounts()
            .into_iter()
            .find(|m| m.2 == destination)
            .map(|m| m.1)
            .unwrap_or_else(|| panic!("no volume at {destination}: {:?}", self.mounts()))
    }

    fn call_upper(&self) -> Output {
        self.cp(&[
            "packs",
            "call",
            &self.slug,
            "cmd.upper",
            r#"{"text":"filled"}"#,
        ])
    }

    /// What a control plane killed in the middle of filling `volume` leaves: the volume,
    /// labelled, empty, still held by its loader container.
    fn interrupted_fill(&self, volume: &str) {
        run(
            "docker",
            &[
                "create",
                "--name",
                &format!("{volume}-loader"),
                "--label",
                &format!("io.bot-bottle.files-loader={}", self.project),
                "--network",
                "none",
                "--mount",
                &format!(
                    "type=volume,src={volume},dst=/fill,volume-nocopy,volume-label=com.docker.compose.project={}",
                    self.project
                ),
                "sidecar-bundle/sidecars:dev",
                "never-run",
            ],
        )
        .ok("docker create a leftover loader");
    }

    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let loader = format!("label=io.bot-bottle.files-loader={}", self.project);
        let mut left = Vec::new();
        for args in [
            vec!["ps", "-aq", "--filter", &label],
            vec!["ps", "-aq", "--filter", &loader],
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["volume", "ls", "-q", "--filter", &label],
        ] {
            left.extend(run("docker", &args).stdout.lines().map(String::from));
        }
        left
    }
}

impl Drop for VolumesBottle {
    fn drop(&mut self) {
        let _ = self.cp(&["down", &self.slug]);
    }
}

#[test]
fn files_volumes_are_reused_refilled_after_an_interrupted_fill_and_removed_by_down() {
    if !require_docker() {
        return;
    }
    let b = VolumesBottle::new();
    b.up();
    let mounts = b.mounts();
    assert!(
        mounts.iter().all(|m| m.0 == "volume"),
        "no bind mount: {mounts:?}"
    );
    for m in mounts.iter().filter(|m| m.1.contains("_files-")) {
        assert!(!m.3, "files volumes are read-only: {m:?}");
    }
    let etc = b.files_volume("/etc/sidecars");
    assert!(etc.starts_with(&format!("{}_files-", b.project)), "{etc}");
    let out = b.call_upper();
    assert!(out.stdout.contains("FILLED"), "{out:?}");

    // A marketplace catalog (the repository's packs/), one named pack, self-tested in the
    // bottle's jail before it replaces the shipped one.
    let catalog = workspace_root().join("packs").display().to_string();
    let out = b.cp(&[
        "packs",
        "install",
        &b.slug,
        "--catalog",
        &catalog,
        "cmd.lower",
        "--allow-unsigned",
        "--replace-shipped",
        "--self-test",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("\"source\":\"installed\""), "{out:?}");
    let out = b.cp(&[
        "packs",
        "install",
        &b.slug,
        "--catalog",
        &catalog,
        "cmd.nope",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("cmd.wordcount"),
        "the catalog's names are listed: {out:?}"
    );

    // Unchanged: the same volumes, the container kept.
    let id = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("bot-bottle-sidecars-{}", b.slug),
        ],
    )
    .stdout;
    b.up();
    assert_eq!(b.files_volume("/etc/sidecars"), etc);
    let again = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("bot-bottle-sidecars-{}", b.slug),
        ],
    )
    .stdout;
    assert_eq!(id, again, "an unchanged bottle is not recreated");

    // Killed mid-fill: the next up must not mount the empty volume.
    let down = b.cp(&["down", &b.slug]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
    b.interrupted_fill(&etc);
    b.up();
    assert_eq!(
        b.files_volume("/etc/sidecars"),
        etc,
        "same contents, same name"
    );
    let out = b.call_upper();
    assert!(
        out.stdout.contains("FILLED"),
        "refilled, pack-exec has its config: {out:?}"
    );
    let loader = run(
        "docker",
        &["ps", "-aq", "--filter", &format!("name={etc}-loader")],
    );
    assert!(
        loader.stdout.trim().is_empty(),
        "the leftover loader is gone"
    );

    // A loader left behind while the bottle runs: down removes it and its volume.
    let stray = format!("{}_files-00000000deadbeef", b.project);
    b.interrupted_fill(&stray);
    let down = b.cp(&["down", &b.slug]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(b.leftovers().is_empty(), "{:?}", b.leftovers());
}
