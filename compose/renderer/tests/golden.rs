//! Golden files: every manifest under `tests/golden` renders byte-for-byte to the committed
//! `<stem>.compose.yaml` and `<stem>.config.<daemon>.json`. `UPDATE_GOLDEN=1` rewrites them
//! (review the diff before committing).

mod support;

use support::{golden_manifests, golden_path, render_files};

#[test]
fn rendered_output_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let manifests = golden_manifests();
    assert!(manifests.len() >= 3, "golden manifests missing");
    let mut mismatches = Vec::new();
    for manifest in &manifests {
        for (rel, contents) in render_files(manifest) {
            let path = golden_path(manifest, &rel);
            if update {
                std::fs::write(&path, &contents).expect("write golden");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == contents => {}
                Ok(expected) => mismatches.push(format!(
                    "{} differs from the rendering:\n--- golden\n{expected}\n--- rendered\n{contents}",
                    path.display()
                )),
                Err(e) => mismatches.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(run with UPDATE_GOLDEN=1 to accept)",
        mismatches.join("\n\n")
    );
}
