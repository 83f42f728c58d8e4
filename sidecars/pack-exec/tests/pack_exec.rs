//! Black-box tests of pack-exec over real HTTP with real handler processes (bash, jq).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;

// ---- install → call → uninstall, persistence, shipped packs -----------------------------------

#[tokio::test]
async fn seed_packs_install_call_uninstall() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        for name in ["cmd.upper", "cmd.lower", "cmd.wordcount"] {
            let r = server
                .install(name, tar_dir(&seed_packs().join(name)))
                .await;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["source"], "installed");
        }
        let r = server.call("cmd.upper", r#"{"text":"Hello, world"}"#).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        assert_eq!(body["pack"], "cmd.upper");
        assert_eq!(body["version"], "v1");
        assert_eq!(body["output"], json!({"text": "HELLO, WORLD"}));
        assert!(body["duration_ms"].is_number(), "{body}");

        let r = server.call("cmd.lower", r#"{"text":"MiXeD"}"#).await;
        assert_eq!(r.json()["output"], json!({"text": "mixed"}));
        let r = server
            .call("cmd.wordcount", r#"{"text":"hello world\nfoo bar baz"}"#)
            .await;
        assert_eq!(
            r.json()["output"],
            json!({"lines": 2, "words": 5, "characters": 23})
        );

        let r = server.request("GET", "/v1/packs", Vec::new()).await;
        let names: Vec<Value> = r.json()["packs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec![
                json!("cmd.lower"),
                json!("cmd.upper"),
                json!("cmd.wordcount")
            ]
        );
        let r = server
            .request("GET", "/v1/packs/cmd.wordcount", Vec::new())
            .await;
        assert_eq!(
            r.json()["output_schema"]["required"],
            json!(["lines", "words", "characters"])
        );
        assert_eq!(
            server.request("GET", "/health", Vec::new()).await.json(),
            json!({"status": "ok", "packs": 3})
        );

        let r = server.delete("cmd.upper").await;
        assert_eq!(r.status, 204);
        server
            .call("cmd.upper", "{}")
            .await
            .assert_error(404, "pack_not_found");
        server
            .delete("cmd.upper")
            .await
            .assert_error(404, "pack_not_found");
        server
            .request("GET", "/v1/packs/cmd.upper", Vec::new())
            .await
            .assert_error(404, "pack_not_found");
        // The deleted version's directory is gone from disk.
        assert!(
            !server
                .entries("packs")
                .iter()
                .any(|e| e.starts_with("cmd.upper@")),
            "{:?}",
            server.entries("packs")
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn gzip_and_parent_dir_tarballs_install() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        // tar.gz, detected by magic bytes
        let r = server
            .install("cmd.upper", gzip(&tar_dir(&seed_packs().join("cmd.upper"))))
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        // `tar -C packs -c cmd.lower`: one top-level directory
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all("cmd.lower", seed_packs().join("cmd.lower"))
            .unwrap();
        let r = server.install("cmd.lower", b.into_inner().unwrap()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server.call("cmd.lower", r#"{"text":"AB"}"#).await.json()["output"]["text"],
            "ab"
        );
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"ab"}"#).await.json()["output"]["text"],
            "AB"
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn installs_survive_a_restart_and_replace_is_atomic() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let v1 = bash_pack("t.echo", "echo '{\"v\":1}'", json!({"version": "1"}));
        assert_eq!(server.install("t.echo", v1).await.status, 201);
        let v2 = bash_pack("t.echo", "echo '{\"v\":2}'", json!({"version": "2"}));
        assert_eq!(
            server.install("t.echo", v2).await.status,
            200,
            "replace answers 200"
        );
        assert_eq!(
            server.call("t.echo", "").await.json()["output"],
            json!({"v": 2})
        );
        // One version on disk: the replaced one was removed.
        let versions: Vec<_> = server
            .entries("packs")
            .into_iter()
            .filter(|e| e.starts_with("t.echo@"))
            .collect();
        assert_eq!(versions.len(), 1, "{versions:?}");
        server.stop().await;

        let server = Server::start(config(state.path())).await;
        let r = server.call("t.echo", "{}").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["version"], "2");
        assert_eq!(r.json()["output"], json!({"v": 2}));
        assert_eq!(server.entries("staging"), Vec::<String>::new());
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn shipped_packs_are_served_overridable_and_not_deletable() {
    within(60, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.packs_dir = seed_packs();
        let server = Server::start(cfg).await;
        assert_eq!(
            server.request("GET", "/health", Vec::new()).await.json()["packs"],
            3
        );
        let list = server.request("GET", "/v1/packs", Vec::new()).await.json();
        assert!(
            list["packs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["source"] == "shipped"),
            "{list}"
        );
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"x"}"#).await.json()["output"]["text"],
            "X"
        );

        let msg = server
            .delete("cmd.upper")
            .await
            .assert_error(409, "pack_read_only");
        assert!(msg.contains("shipped"), "{msg}");

        // An installed pack of the same name overrides the shipped one...
        let ours = bash_pack(
            "cmd.upper",
            "echo '{\"text\":\"ours\"}'",
            json!({"version": "9"}),
        );
        assert_eq!(
            server
                .install_with(
                    "cmd.upper",
                    "allow_unsigned=true&replace_shipped=true",
                    ours
                )
                .await
                .status,
            201
        );
        let r = server.call("cmd.upper", r#"{"text":"x"}"#).await.json();
        assert_eq!(
            (r["version"].clone(), r["output"]["text"].clone()),
            (json!("9"), json!("ours"))
        );
        assert_eq!(
            server
                .request("GET", "/v1/packs/cmd.upper", Vec::new())
                .await
                .json()["source"],
            "installed"
        );
        assert_eq!(
            server.request("GET", "/health", Vec::new()).await.json()["packs"],
            3
        );
        // ...and deleting it brings the shipped one back.
        assert_eq!(server.delete("cmd.upper").await.status, 204);
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"x"}"#).await.json()["output"]["text"],
            "X"
        );
        server.stop().await;
    })
    .await
}

// ---- error codes -----------------------------------------------------------------------------

#[tokio::test]
async fn input_errors() {
    within(60, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.packs_dir = seed_packs();
        cfg.max_body_bytes = 4096;
        let server = Server::start(cfg).await;
        server
            .call("cmd.upper", "not json")
            .await
            .assert_error(400, "invalid_input");
        server
            .call("cmd.upper", "[1]")
            .await
            .assert_error(400, "invalid_input");
        let msg = server
            .call("cmd.upper", "{}")
            .await
            .assert_error(400, "invalid_input");
        assert!(msg.contains("text"), "{msg}");
        let msg = server
            .call("cmd.upper", r#"{"text": 5}"#)
            .await
            .assert_error(400, "invalid_input");
        assert!(msg.contains("expected string"), "{msg}");
        server
            .call("no.such", "{}")
            .await
            .assert_error(404, "pack_not_found");
        let big = format!(r#"{{"text":"{}"}}"#, "a".repeat(5000));
        server
            .call("cmd.upper", &big)
            .await
            .assert_error(413, "payload_too_large");
        server
            .install("t.big", vec![0u8; 5000])
            .await
            .assert_error(413, "payload_too_large");
        server
            .request("PATCH", "/v1/packs/cmd.upper", Vec::new())
            .await
            .assert_error(405, "method_not_allowed");
        server
            .request("GET", "/nope", Vec::new())
            .await
            .assert_error(404, "not_found");
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn empty_body_is_an_empty_object() {
    within(30, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        assert_eq!(
            server
                .install("t.cat", bash_pack("t.cat", "cat", json!({})))
                .await
                .status,
            201
        );
        assert_eq!(server.call("t.cat", "").await.json()["output"], json!({}));
        assert_eq!(
            server.call("t.cat", r#" {"a":[1,2]} "#).await.json()["output"],
            json!({"a": [1, 2]})
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn handler_failure_carries_the_stderr_tail() {
    within(30, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.packs_dir = seed_packs();
        let server = Server::start(cfg).await;
        let body = "head -c 10000 /dev/zero | tr '\\0' 'x' >&2; echo; echo 'it broke: bad thing' >&2; exit 3";
        assert_eq!(server.install("t.fail", bash_pack("t.fail", body, json!({}))).await.status, 201);
        let msg = server.call("t.fail", "{}").await.assert_error(502, "handler_failed");
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.ends_with("it broke: bad thing"), "{msg}");
        assert!(msg.len() < 4096 + 100, "stderr tail is capped: {} bytes", msg.len());
        // The seed pack's jq error (no schema on this copy) reaches the message too.
        let no_schema =
            std::fs::read_to_string(seed_packs().join("cmd.upper/helmdeck-pack.yaml")).unwrap();
        let mut m: Value = serde_norway::from_str(&no_schema).unwrap();
        m["name"] = json!("t.upper");
        m.as_object_mut().unwrap().remove("input_schema");
        let handler = std::fs::read_to_string(seed_packs().join("cmd.upper/upper")).unwrap();
        let tar = tar_of(&[file("pack.json", m.to_string()), script("upper", &handler)]);
        assert_eq!(server.install("t.upper", tar).await.status, 201);
        let msg = server.call("t.upper", r#"{"text": 7}"#).await.assert_error(502, "handler_failed");
        assert!(msg.contains("input.text must be a string"), "{msg}");
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn invalid_outputs() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let schema =
            json!({"output_schema": {"required": ["n"], "properties": {"n": {"type": "integer"}}}});
        let cases = [
            (
                "t.nojson",
                "echo 'hello there'",
                "not exactly one JSON value",
            ),
            (
                "t.two",
                "echo '{\"n\":1}'; echo '{\"n\":2}'",
                "not exactly one JSON value",
            ),
            ("t.empty", "true", "printed nothing"),
            ("t.schema", "echo '{\"n\":\"one\"}'", "output_schema"),
            ("t.missing", "echo '{}'", "missing required property `n`"),
        ];
        for (name, body, want) in cases {
            assert_eq!(
                server
                    .install(name, bash_pack(name, body, schema.clone()))
                    .await
                    .status,
                201
            );
            let msg = server
                .call(name, "{}")
                .await
                .assert_error(502, "invalid_output");
            assert!(msg.contains(want), "{name}: {msg}");
        }
        // Whitespace around the one value is fine.
        assert_eq!(
            server
                .install(
                    "t.ok",
                    bash_pack("t.ok", "printf '\\n  {\"n\": 3}\\n\\n'", schema.clone())
                )
                .await
                .status,
            201
        );
        assert_eq!(
            server.call("t.ok", "{}").await.json()["output"],
            json!({"n": 3})
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn install_validation_codes() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let bad = |extra: Value| bash_pack("t.bad", "echo '{}'", extra);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (bad(json!({"name": "t.other"})), "URL names"),
            (bad(json!({"handler": {"type": "builtin"}})), "handler.type"),
            (bad(json!({"handler": {"timeout_s": 0}})), "timeout_s"),
            (bad(json!({"handler": {"timeout_s": 3601}})), "timeout_s"),
            (bad(json!({"handler": {"env": ["NOVALUE"]}})), "handler.env[0]"),
            (bad(json!({"handler": {"env": ["PACK_NAME=x"]}})), "cannot be overridden"),
            (bad(json!({"handler": {"command": ["../outside.sh"]}})), "handler.command[0]"),
            (bad(json!({"handler": {"command": ["/bin/sh", "handler.sh"]}})), "handler.command[0]"),
            (bad(json!({"handler": {"command": []}})), "must not be empty"),
            (bad(json!({"input_schema": {"properties": {"x": {"type": "string", "pattern": "a"}}}})), "pattern"),
            (bad(json!({"handler": {"bogus": 1}})), "bogus"),
            (tar_of(&[file("pack.json", manifest("t.bad", json!({"handler": {"command": ["./handler.sh"]}}))), file("handler.sh", "echo")]), "not executable"),
            (tar_of(&[script("handler.sh", "echo")]), "no `helmdeck-pack.yaml` or `pack.json`"),
            (tar_of(&[file("pack.json", "{not json")]), "pack.json"),
            (b"this is not a tarball at all, not even close..........".repeat(20), "tar"),
        ];
        for (tar, want) in cases {
            let msg = server.install("t.bad", tar).await.assert_error(400, "invalid_pack");
            assert!(msg.contains(want), "want {want:?} in {msg}");
        }
        server.install("Bad.Name", bad(json!({}))).await.assert_error(400, "invalid_pack");
        // Nothing was installed and no staging was left behind.
        assert_eq!(server.entries("packs"), Vec::<String>::new());
        assert_eq!(server.entries("staging"), Vec::<String>::new());
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn missing_dependency_is_422() {
    within(30, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let tar = bash_pack(
            "t.dep",
            "echo '{}'",
            json!({"requires": {"binaries": ["jq", "no-such-tool-xyz"]}}),
        );
        let msg = server
            .install("t.dep", tar)
            .await
            .assert_error(422, "missing_dependency");
        assert!(
            msg.contains("no-such-tool-xyz") && !msg.contains("jq,"),
            "{msg}"
        );
        let tar = bash_pack(
            "t.dep",
            "echo '{}'",
            json!({"handler": {"command": ["no-such-interp-xyz", "handler.sh"]}}),
        );
        server
            .install("t.dep", tar)
            .await
            .assert_error(422, "missing_dependency");
        // jq is there: accepted
        let tar = bash_pack(
            "t.dep",
            "echo '{}'",
            json!({"requires": {"binaries": ["jq", "bash"]}}),
        );
        assert_eq!(server.install("t.dep", tar).await.status, 201);
        server.stop().await;
    })
    .await
}

fn trust_hash(files: &[(&str, &[u8])]) -> String {
    let mut sorted: Vec<_> = files.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut outer = Sha256::new();
    for (path, data) in sorted {
        outer.update(format!("{path}\0{}\n", hex::encode(Sha256::digest(data))));
    }
    hex::encode(outer.finalize())
}

#[tokio::test]
async fn trust_hash_checked() {
    within(30, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let handler = b"cat lib/answer.json\n".as_slice();
        let answer = br#"{"answer":42}"#.as_slice();
        let good = trust_hash(&[("handler.sh", handler), ("lib/answer.json", answer)]);
        let make = |hash: &str| {
            let m = manifest(
                "t.trust",
                json!({"trust": {"sha256": hash, "signed_by": "tests"},
                "handler": {"command": ["bash", "-c", "cd \"$PACK_DIR\" && bash handler.sh"]}}),
            );
            tar_of(&[
                file("pack.json", m),
                script("handler.sh", std::str::from_utf8(handler).unwrap()),
                file("lib/answer.json", answer),
            ])
        };
        let wrong = "0".repeat(64);
        let msg = server
            .install("t.trust", make(&wrong))
            .await
            .assert_error(400, "trust_mismatch");
        assert!(msg.contains(&good) && msg.contains(&wrong), "{msg}");
        assert_eq!(
            server.entries("packs"),
            Vec::<String>::new(),
            "nothing left on disk"
        );
        assert_eq!(
            server.entries("staging"),
            Vec::<String>::new(),
            "nothing left on disk"
        );
        let r = server.install("t.trust", make(&good)).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server.call("t.trust", "{}").await.json()["output"],
            json!({"answer": 42})
        );
        server.stop().await;
    })
    .await
}

// ---- hostile tarballs ------------------------------------------------------------------------

#[tokio::test]
async fn hostile_tarballs_write_nothing_outside() {
    within(60, async {
        let state = open_tempdir();
        let outside = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let target = outside.path().join("pwned");
        let pack_json = manifest("t.evil", json!({}));
        let base = |b: &mut tar::Builder<Vec<u8>>| {
            let mut h = tar::Header::new_gnu();
            raw_name(&mut h, "pack.json");
            h.set_size(pack_json.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, pack_json.as_bytes()).unwrap();
        };
        let rel_escape = format!("../../../../../../../..{}", target.display());
        let mut cases: Vec<(String, Vec<u8>, &str)> = Vec::new();
        // `../` traversal and an absolute path
        for (label, path) in [
            ("dotdot", rel_escape.as_str()),
            ("absolute", target.to_str().unwrap()),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            base(&mut b);
            let mut h = tar::Header::new_gnu();
            raw_name(&mut h, path);
            h.set_size(4);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, b"evil".as_slice()).unwrap();
            cases.push((
                label.into(),
                b.into_inner().unwrap(),
                if label == "dotdot" { ".." } else { "absolute" },
            ));
        }
        // a symlink to the outside dir, then a file written through it
        let mut b = tar::Builder::new(Vec::new());
        base(&mut b);
        append_link(
            &mut b,
            tar::EntryType::Symlink,
            "escape",
            outside.path().to_str().unwrap(),
        );
        let mut h = tar::Header::new_gnu();
        raw_name(&mut h, "escape/pwned");
        h.set_size(4);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, b"evil".as_slice()).unwrap();
        cases.push(("symlink".into(), b.into_inner().unwrap(), "symlink"));
        // a relative symlink pointing up
        let mut b = tar::Builder::new(Vec::new());
        base(&mut b);
        append_link(&mut b, tar::EntryType::Symlink, "up", "../../..");
        cases.push(("symlink-rel".into(), b.into_inner().unwrap(), "symlink"));
        // hard links pointing outside (absolute and relative)
        std::fs::write(target.with_extension("src"), b"secret").unwrap();
        for (label, link) in [
            (
                "hardlink-abs",
                target.with_extension("src").display().to_string(),
            ),
            ("hardlink-rel", "../../../../etc/passwd".into()),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            base(&mut b);
            append_link(&mut b, tar::EntryType::Link, "stolen", &link);
            cases.push((label.into(), b.into_inner().unwrap(), "hard link"));
        }
        // a device node
        let mut b = tar::Builder::new(Vec::new());
        base(&mut b);
        let mut h = tar::Header::new_gnu();
        raw_name(&mut h, "dev");
        h.set_entry_type(tar::EntryType::Char);
        h.set_size(0);
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
        cases.push(("device".into(), b.into_inner().unwrap(), "refused type"));

        for (label, tar, want) in cases {
            for body in [tar.clone(), gzip(&tar)] {
                let msg = server
                    .install("t.evil", body)
                    .await
                    .assert_error(400, "invalid_pack");
                assert!(msg.contains(want), "{label}: want {want:?} in {msg}");
                assert!(!target.exists(), "{label}: wrote outside the state dir");
                assert_eq!(server.entries("packs"), Vec::<String>::new(), "{label}");
                assert_eq!(server.entries("staging"), Vec::<String>::new(), "{label}");
            }
        }
        let outside_entries: Vec<_> = std::fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside_entries.len(),
            1,
            "only the fixture file: {outside_entries:?}"
        );

        // A hard link to a file inside the same archive is fine (copied).
        let mut b = tar::Builder::new(Vec::new());
        base(&mut b);
        let mut h = tar::Header::new_gnu();
        raw_name(&mut h, "handler.sh");
        let body = b"echo '{\"ok\":true}'\n";
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, body.as_slice()).unwrap();
        append_link(&mut b, tar::EntryType::Link, "copy.sh", "handler.sh");
        let r = server.install("t.evil", b.into_inner().unwrap()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server.call("t.evil", "{}").await.json()["output"],
            json!({"ok": true})
        );
        server.stop().await;
    })
    .await
}

// ---- the sandbox: processes, limits, env, temp dirs ------------------------------------------

/// A directory the handler (uid 65534 under root) can write pid files into.
fn pid_dir() -> tempfile::TempDir {
    let dir = open_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn read_pid(path: &std::path::Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    within(30, async {
        let state = open_tempdir();
        let pids = pid_dir();
        let server = Server::start(config(state.path())).await;
        let pidfile = pids.path().join("grandchild");
        let body = format!(
            "sleep 300 & echo $! > {}; echo $$ > {}.leader; wait",
            pidfile.display(),
            pidfile.display()
        );
        let tar = bash_pack("t.hang", &body, json!({"handler": {"timeout_s": 1}}));
        assert_eq!(server.install("t.hang", tar).await.status, 201);
        let started = Instant::now();
        let msg = server
            .call("t.hang", "{}")
            .await
            .assert_error(504, "timeout");
        assert!(msg.contains("1s"), "{msg}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let grandchild = read_pid(&pidfile);
        let leader = read_pid(&pidfile.with_extension("leader"));
        assert!(
            wait_dead(grandchild).await,
            "grandchild {grandchild} survived the timeout"
        );
        assert!(
            wait_dead(leader).await,
            "leader {leader} survived the timeout"
        );
        assert_eq!(
            server.entries("tmp"),
            Vec::<String>::new(),
            "temp dir removed after a timeout"
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn background_stragglers_die_when_the_handler_exits() {
    within(30, async {
        let state = open_tempdir();
        let pids = pid_dir();
        let server = Server::start(config(state.path())).await;
        let pidfile = pids.path().join("straggler");
        // Detached from stdout/stderr, so nothing but the group kill can stop it.
        let body = format!(
            "sleep 300 >/dev/null 2>&1 </dev/null & echo $! > {}; echo '{{}}'",
            pidfile.display()
        );
        assert_eq!(
            server
                .install("t.bg", bash_pack("t.bg", &body, json!({})))
                .await
                .status,
            201
        );
        let started = Instant::now();
        assert_eq!(server.call("t.bg", "{}").await.status, 200);
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = read_pid(&pidfile);
        assert!(
            wait_dead(pid).await,
            "background process {pid} outlived its call"
        );
        server.stop().await;
    })
    .await
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn huge_output_stops_at_the_cap() {
    within(30, async {
        let state = open_tempdir();
        let pids = pid_dir();
        let server = Server::start(config(state.path())).await;
        let pidfile = pids.path().join("writer");
        // 100 MB of output against a 1 MiB cap.
        let body = format!(
            "echo $$ > {}; head -c 100000000 /dev/zero | tr '\\0' 'a'",
            pidfile.display()
        );
        let tar = bash_pack(
            "t.flood",
            &body,
            json!({"handler": {"max_output_bytes": 1048576, "timeout_s": 60}}),
        );
        assert_eq!(server.install("t.flood", tar).await.status, 201);
        let before = vm_hwm_kib();
        let started = Instant::now();
        let msg = server
            .call("t.flood", "{}")
            .await
            .assert_error(502, "invalid_output");
        let took = started.elapsed();
        assert!(msg.contains("max_output_bytes"), "{msg}");
        assert!(
            took < Duration::from_secs(3),
            "took {took:?}: reading must stop at the cap"
        );
        let grown_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
        assert!(
            grown_mib < 32,
            "peak memory grew by {grown_mib} MiB for a 1 MiB cap"
        );
        assert!(
            wait_dead(read_pid(&pidfile)).await,
            "the writer was not killed"
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn concurrency_limit_answers_busy() {
    within(30, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.concurrency = 2;
        let server = std::sync::Arc::new(Server::start(cfg).await);
        let tar = bash_pack("t.slow", "sleep 1; echo '{}'", json!({}));
        assert_eq!(server.install("t.slow", tar).await.status, 201);
        let running: Vec<_> = (0..2)
            .map(|_| {
                let s = server.clone();
                tokio::spawn(async move { s.call("t.slow", "{}").await.status })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = server.call("t.slow", "{}").await;
        r.assert_error(429, "busy");
        assert_eq!(
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
        for t in running {
            assert_eq!(t.await.unwrap(), 200);
        }
        // Slots are released after the calls.
        assert_eq!(server.call("t.slow", "{}").await.status, 200);
    })
    .await
}

#[tokio::test]
async fn handler_environment_is_minimal_and_isolated() {
    within(30, async {
        // SAFETY of the test: nextest runs each test in its own process.
        std::env::set_var("PACK_EXEC_TEST_SECRET", "do-not-leak");
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let body = r#"echo scratch > file.txt; mkdir -p sub/dir; echo x > sub/dir/y
jq -n --arg uid "$(id -u)" --arg gid "$(id -g)" --arg cwd "$PWD" --arg pgid "$(ps -o pgid= $$ | tr -d ' ')" --arg pid "$$" \
  '{env: env, uid: $uid, gid: $gid, cwd: $cwd, pgid: $pgid, pid: $pid}'"#;
        let tar = bash_pack("t.env", body, json!({"handler": {"env": ["GREETING=hello", "EMPTY="]}}));
        assert_eq!(server.install("t.env", tar).await.status, 201);
        let out = server.call("t.env", "{}").await.json()["output"].clone();
        let env = out["env"].as_object().unwrap();
        assert!(!env.contains_key("PACK_EXEC_TEST_SECRET"), "{out}");
        assert_eq!(env["GREETING"], "hello");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["PACK_NAME"], "t.env");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert!(env["PACK_CALL_ID"].as_str().is_some_and(|s| s.len() == 16), "{out}");
        assert_eq!(env["HOME"], out["cwd"]);
        let cwd = out["cwd"].as_str().unwrap();
        let tmp_root = std::fs::canonicalize(state.path().join("tmp")).unwrap();
        assert!(cwd.starts_with(tmp_root.to_str().unwrap()), "{cwd}");
        assert!(env["PACK_DIR"].as_str().unwrap().contains("/packs/t.env@"), "{out}");
        // Allowed: PATH, HOME, TMPDIR, LANG, PACK_*, the pack's env (+ what bash itself sets).
        let allowed = ["PATH", "HOME", "TMPDIR", "LANG", "PACK_NAME", "PACK_CALL_ID", "PACK_DIR", "GREETING", "EMPTY", "PWD", "SHLVL", "_", "OLDPWD"];
        for key in env.keys() {
            assert!(allowed.contains(&key.as_str()), "unexpected env var {key} in {out}");
        }
        assert_eq!(out["pgid"], out["pid"], "the handler leads its own process group");
        if nix::unistd::geteuid().is_root() {
            assert_eq!((out["uid"].as_str(), out["gid"].as_str()), (Some("65534"), Some("65534")));
        }
        // The temp dir (with the files the handler made) is gone.
        assert!(!std::path::Path::new(cwd).exists());
        assert_eq!(server.entries("tmp"), Vec::<String>::new());
        // Also after a failure.
        let tar = bash_pack("t.fail", "echo x > f; exit 1", json!({}));
        assert_eq!(server.install("t.fail", tar).await.status, 201);
        server.call("t.fail", "{}").await.assert_error(502, "handler_failed");
        assert_eq!(server.entries("tmp"), Vec::<String>::new());
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    within(30, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let tar = bash_pack("t.slow", "sleep 1; echo '{\"done\":true}'", json!({}));
        assert_eq!(server.install("t.slow", tar).await.status, 201);
        let addr = server.addr;
        let call = tokio::spawn(async move {
            let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let req = http::Request::post(format!("http://{addr}/v1/packs/t.slow"))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            use http_body_util::BodyExt;
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.stop().await;
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["output"], json!({"done": true}));
    })
    .await
}

/// Run as root with `state_dir` under a `0700` directory, handlers (uid 65534) could not reach
/// the installed packs: pack-exec refuses to start and names the directory and the fix, rather
/// than accepting installs and failing every call with `Permission denied`.
#[tokio::test]
async fn as_root_a_state_dir_handlers_cannot_reach_is_refused_at_start_up() {
    within(30, async {
        let root = open_tempdir();
        let private = root.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let state = private.join("state");
        std::fs::create_dir(&state).unwrap();
        let config = config(&state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_trigger, shutdown) = sidecars_common::shutdown::Shutdown::new();
        let outcome = tokio::time::timeout(
            Duration::from_secs(2),
            pack_exec::run_with(listener, None, config, shutdown),
        )
        .await;
        if !nix::unistd::geteuid().is_root() {
            // Not root: handlers run as this uid, which reaches its own dirs; it serves.
            assert!(outcome.is_err(), "pack-exec stopped: {outcome:?}");
            return;
        }
        let err = outcome
            .expect("pack-exec must refuse at once, not serve")
            .expect_err("pack-exec must refuse an unreachable state_dir");
        let msg = err.to_string();
        let private = std::fs::canonicalize(&private).unwrap();
        assert!(
            msg.contains(&format!("{} is mode 0700", private.display())),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("chmod o+x {}", private.display())),
            "{msg}"
        );
        assert!(msg.contains("65534:65534"), "{msg}");
    })
    .await
}
