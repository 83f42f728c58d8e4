//! helmdeck marketplace packs as they are published: a YAML manifest (`helmdeck-pack.yaml`)
//! beside an extension-less handler (`command: ["./upper"]`, `version: v1`), with the
//! `trust.sha256` the marketplace computes — over every file but `helmdeck-pack.yaml`. The
//! expected hash is computed here by the documented shell pipeline (docs/packs.md), not by
//! pack-exec's code. Black-box over real HTTP against the real daemon.

mod support;

use std::path::Path;

use serde_json::json;
use support::*;

const UPPER: &str = "#!/usr/bin/env bash\n# Upper-case {\"text\": ...}\nset -euo pipefail\njq -c '{text: (.text | ascii_upcase)}'\n";

fn yaml(name: &str, trust: Option<&str>) -> String {
    let mut text = format!(
        r#"name: {name}
version: v1
author: marketplace
description: Upper-case a string.
input_schema:
  required: [text]
  properties:
    text: {{type: string}}
output_schema:
  required: [text]
  properties:
    text: {{type: string}}
handler:
  type: command
  command: ["./upper"]
  timeout_s: 5
requires:
  binaries: [bash, jq]
examples:
  - name: short
    input: {{text: hello}}
    expected_output_subset: {{text: HELLO}}
"#
    );
    if let Some(hash) = trust {
        text.push_str(&format!(
            "trust:\n  sha256: {hash}\n  signed_by: marketplace\n"
        ));
    }
    text
}

/// The marketplace pack's files in `dir` (manifest without trust).
fn write_pack(dir: &Path, name: &str) {
    std::fs::write(dir.join("helmdeck-pack.yaml"), yaml(name, None)).unwrap();
    std::fs::write(dir.join("upper"), UPPER).unwrap();
    std::fs::create_dir(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/NOTICE"), "data file\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("upper"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// docs/packs.md's pipeline, leaving out the YAML manifest.
fn shell_hash(dir: &Path) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            r#"find . -type f ! -path ./helmdeck-pack.yaml -printf '%P\n' | LC_ALL=C sort \
  | while IFS= read -r f; do printf '%s\0%s\n' "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"; done \
  | sha256sum | cut -d' ' -f1"#,
        )
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn a_published_marketplace_pack_installs_unchanged_and_its_trust_hash_verifies() {
    within(60, async {
        let pack = tempfile::tempdir().unwrap();
        write_pack(pack.path(), "cmd.shout");
        let hash = shell_hash(pack.path());
        std::fs::write(
            pack.path().join("helmdeck-pack.yaml"),
            yaml("cmd.shout", Some(&hash)),
        )
        .unwrap();
        assert_eq!(
            hash,
            shell_hash(pack.path()),
            "the manifest is outside the hash"
        );

        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        // Signed: no consent flag needed.
        let resp = server
            .install_with("cmd.shout", "", tar_dir(pack.path()))
            .await;
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["version"], "v1", "{}", resp.json());
        let resp = server.call("cmd.shout", r#"{"text":"market"}"#).await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["output"], json!({"text": "MARKET"}));

        // One byte changed in a data file: refused, with both hashes.
        std::fs::write(pack.path().join("lib/NOTICE"), "data file!\n").unwrap();
        let changed = shell_hash(pack.path());
        let resp = server
            .install_with("cmd.shout", "allow_unsigned=true", tar_dir(pack.path()))
            .await;
        let message = resp.assert_error(400, "trust_mismatch");
        assert!(
            message.contains(&hash) && message.contains(&changed),
            "{message}"
        );
        // The installed version is untouched.
        let resp = server.call("cmd.shout", r#"{"text":"still"}"#).await;
        assert_eq!(resp.json()["output"], json!({"text": "STILL"}));
    })
    .await;
}

#[tokio::test]
async fn an_unsigned_marketplace_pack_needs_consent_and_survives_a_restart() {
    within(60, async {
        let pack = tempfile::tempdir().unwrap();
        write_pack(pack.path(), "cmd.shout");
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let resp = server
            .install_with("cmd.shout", "", tar_dir(pack.path()))
            .await;
        resp.assert_error(403, "forbidden");
        let resp = server
            .install_with("cmd.shout", "allow_unsigned=true", tar_dir(pack.path()))
            .await;
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        server.stop().await;
        // Loaded again from the state dir, by its YAML manifest.
        let server = Server::start(config(state.path())).await;
        let resp = server.call("cmd.shout", r#"{"text":"again"}"#).await;
        assert_eq!(resp.json()["output"], json!({"text": "AGAIN"}));
        // Deleting retires the YAML manifest like pack.json.
        assert_eq!(server.delete("cmd.shout").await.status, 204);
        server.stop().await;
        let server = Server::start(config(state.path())).await;
        server
            .call("cmd.shout", "{}")
            .await
            .assert_error(404, "pack_not_found");
    })
    .await;
}

#[tokio::test]
async fn two_manifests_or_a_bad_yaml_field_are_refused_naming_the_file() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let both = tar_of(&[
            file("helmdeck-pack.yaml", yaml("cmd.shout", None)),
            file("pack.json", manifest("cmd.shout", json!({}))),
            script("upper", UPPER),
        ]);
        let resp = server
            .install_with("cmd.shout", "allow_unsigned=true", both)
            .await;
        let message = resp.assert_error(400, "invalid_pack");
        assert!(
            message.contains("helmdeck-pack.yaml") && message.contains("pack.json"),
            "{message}"
        );
        let bad = yaml("cmd.shout", None).replace("timeout_s: 5", "timeout_s: soon");
        let resp = server
            .install_with(
                "cmd.shout",
                "allow_unsigned=true",
                tar_of(&[file("helmdeck-pack.yaml", bad), script("upper", UPPER)]),
            )
            .await;
        let message = resp.assert_error(400, "invalid_pack");
        assert!(
            message.contains("helmdeck-pack.yaml") && message.contains("handler.timeout_s"),
            "{message}"
        );
        // A numeric version is its text, as helmdeck's Go decoder reads a string field.
        let numeric = yaml("cmd.shout", None).replace("version: v1", "version: 2");
        let resp = server
            .install_with(
                "cmd.shout",
                "allow_unsigned=true",
                tar_of(&[file("helmdeck-pack.yaml", numeric), script("upper", UPPER)]),
            )
            .await;
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["version"], "2");
    })
    .await;
}

/// The marketplace pack with its example expecting `want` for input `hello`.
fn pack_expecting(want: &str) -> Vec<u8> {
    tar_of(&[
        file(
            "helmdeck-pack.yaml",
            yaml("cmd.shout", None).replace("{text: HELLO}", &format!("{{text: {want}}}")),
        ),
        script("upper", UPPER),
    ])
}

#[tokio::test]
async fn self_test_runs_the_examples_and_a_failing_one_installs_nothing() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let resp = server
            .install_with(
                "cmd.shout",
                "allow_unsigned=true&self_test=true",
                pack_expecting("HELLO"),
            )
            .await;
        assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
        let before = server.walk();

        // The new version's example fails: refused, naming the example and the difference.
        let resp = server
            .install_with(
                "cmd.shout",
                "allow_unsigned=true&self_test=true",
                pack_expecting("hello"),
            )
            .await;
        let message = resp.assert_error(400, "self_test_failed");
        assert!(
            message.contains("example `short`")
                && message.contains("output.text is \"HELLO\", expected \"hello\""),
            "{message}"
        );
        assert_eq!(
            server.walk(),
            before,
            "nothing of the refused version is left"
        );
        let resp = server.call("cmd.shout", r#"{"text":"kept"}"#).await;
        assert_eq!(
            resp.json()["output"],
            json!({"text": "KEPT"}),
            "the old version runs"
        );

        // Without self_test the same pack installs: the examples are the operator's choice.
        let resp = server
            .install_with("cmd.shout", "allow_unsigned=true", pack_expecting("hello"))
            .await;
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    })
    .await;
}

#[tokio::test]
async fn a_staged_pack_interrupted_before_its_self_test_passed_is_gone_after_a_restart() {
    use pack_exec::store::{InstallPolicy, Store};
    use std::sync::Arc;
    let state = open_tempdir();
    let packs_dir = state.path().join("no-shipped");
    let store = Arc::new(Store::open(state.path(), &packs_dir).unwrap());
    let policy = InstallPolicy {
        allow_unsigned: true,
        replace_shipped: false,
    };
    let staged = store
        .stage(
            "cmd.shout".into(),
            pack_expecting("HELLO").into(),
            policy,
            true,
        )
        .await
        .unwrap();
    assert!(store.get("cmd.shout").is_none(), "not visible while staged");
    // The daemon dies here: neither published nor abandoned.
    std::mem::forget(staged);
    drop(store);
    let store = Store::open(state.path(), &packs_dir).unwrap();
    assert!(
        store.get("cmd.shout").is_none(),
        "an unverified pack never comes back"
    );
    let left: Vec<_> = std::fs::read_dir(state.path().join("packs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "its directory is removed: {left:?}");
}
