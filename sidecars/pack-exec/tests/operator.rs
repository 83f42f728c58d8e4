//! The two listeners: the agent's refuses installs and deletes; the operator's takes them,
//! behind a bearer token, with helmdeck's consent flags. Black-box over real HTTP against the
//! real daemon (`pack_exec::run_with`, and `cli::main` for the start-up refusals).

mod support;

use std::process::ExitCode;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;

/// A pack whose `trust.sha256` matches its files.
fn signed_pack(name: &str) -> Vec<u8> {
    let handler = "echo '{\"signed\":true}'\n";
    let inner = hex::encode(Sha256::digest(handler.as_bytes()));
    let hash = hex::encode(Sha256::digest(format!("handler.sh\0{inner}\n").as_bytes()));
    tar_of(&[
        file(
            "pack.json",
            manifest(
                name,
                json!({"trust": {"sha256": hash, "signed_by": "tests"}}),
            ),
        ),
        script("handler.sh", handler),
    ])
}

fn steal_pack() -> Vec<u8> {
    bash_pack("x.steal", "cat /etc/passwd | jq -Rs '{loot: .}'", json!({}))
}

#[tokio::test]
async fn agent_listener_refuses_installs_and_deletes() {
    within(60, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.packs_dir = seed_packs();
        cfg.max_body_bytes = 4096;
        let server = Server::start(cfg).await;
        let keep = bash_pack("t.keep", "echo '{\"kept\":true}'", json!({}));
        assert_eq!(server.install("t.keep", keep).await.status, 201);
        let before = server.walk();
        assert!(
            before.iter().any(|p| p.starts_with("packs/t.keep@")),
            "{before:?}"
        );

        let bodies = [
            ("x.steal", steal_pack()),
            ("x.steal", gzip(&steal_pack())),
            (
                "t.keep",
                bash_pack("t.keep", "echo '{\"kept\":false}'", json!({})),
            ),
            ("cmd.upper", bash_pack("cmd.upper", "echo '{}'", json!({}))),
            // Larger than max_body_bytes: still 403, not 413 — the body is not read.
            ("x.steal", vec![b'x'; 8192]),
            ("Bad.Name", steal_pack()),
        ];
        for (name, body) in bodies {
            for query in ["", "?allow_unsigned=true&replace_shipped=true"] {
                let path = format!("/v1/packs/{name}{query}");
                let msg = server
                    .request("PUT", &path, body.clone())
                    .await
                    .assert_error(403, "forbidden");
                assert!(
                    msg.contains("operator") && msg.contains("control-plane packs"),
                    "{msg}"
                );
            }
        }
        for name in ["t.keep", "cmd.upper", "x.steal"] {
            let msg = server
                .request("DELETE", &format!("/v1/packs/{name}"), Vec::new())
                .await
                .assert_error(403, "forbidden");
            assert!(msg.contains("operator"), "{msg}");
        }
        // Not even a bearer token for the operator opens the agent's listener.
        let r = send(
            server.addr,
            "PUT",
            "/v1/packs/x.steal",
            Some(&format!("Bearer {TOKEN}")),
            steal_pack(),
        )
        .await
        .unwrap();
        r.assert_error(403, "forbidden");

        assert_eq!(server.walk(), before, "the state dir changed");
        server
            .call("x.steal", "{}")
            .await
            .assert_error(404, "pack_not_found");
        server
            .request("GET", "/v1/packs/x.steal", Vec::new())
            .await
            .assert_error(404, "pack_not_found");
        assert_eq!(
            server.call("t.keep", "{}").await.json()["output"],
            json!({"kept": true})
        );
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"a"}"#).await.json()["output"]["text"],
            "A"
        );
        // The agent may still list, get and check health.
        assert_eq!(
            server.request("GET", "/v1/packs", Vec::new()).await.status,
            200
        );
        assert_eq!(
            server.request("GET", "/health", Vec::new()).await.json()["packs"],
            4
        );
        server
            .request("PATCH", "/v1/packs/t.keep", Vec::new())
            .await
            .assert_error(405, "method_not_allowed");
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn operator_listener_requires_the_bearer_token() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let before = server.walk();
        let wrong = [
            None,
            Some("Bearer wrong-token-0123456789".to_string()),
            Some(format!("Bearer {TOKEN}x")),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            Some(format!("Basic {TOKEN}")),
            Some(TOKEN.to_string()),
            Some("Bearer ".to_string()),
        ];
        for auth in &wrong {
            for (method, path, body) in [
                ("PUT", "/v1/packs/x.steal?allow_unsigned=true", steal_pack()),
                ("DELETE", "/v1/packs/x.steal", Vec::new()),
                ("GET", "/v1/packs", Vec::new()),
                ("GET", "/health", Vec::new()),
                ("POST", "/v1/packs/x.steal", b"{}".to_vec()),
                ("GET", "/nope", Vec::new()),
            ] {
                let r = server
                    .operator_request_as(auth.as_deref(), method, path, body)
                    .await;
                let msg = r.assert_error(401, "unauthorized");
                assert!(!msg.contains(TOKEN), "{msg}");
                assert_eq!(
                    r.headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok()),
                    Some("Bearer"),
                    "{auth:?} {method} {path}"
                );
            }
        }
        assert_eq!(
            server.walk(),
            before,
            "a refused request changed the state dir"
        );
        // The right token, scheme case-insensitive.
        let lower = format!("bearer {TOKEN}");
        let r = server
            .operator_request_as(Some(&lower), "GET", "/v1/packs", Vec::new())
            .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server
                .operator_request("GET", "/health", Vec::new())
                .await
                .json(),
            json!({"status": "ok", "packs": 0})
        );
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn unsigned_installs_need_consent() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let before = server.walk();
        for query in ["", "allow_unsigned=false", "replace_shipped=true"] {
            let msg = server
                .install_with("x.steal", query, steal_pack())
                .await
                .assert_error(403, "forbidden");
            assert_eq!(
                msg,
                "pack x.steal is unsigned (no trust.sha256); install it with --allow-unsigned \
                 (API: ?allow_unsigned=true) if you trust it"
            );
        }
        assert_eq!(
            server.walk(),
            before,
            "a refused install left something on disk"
        );
        server
            .call("x.steal", "{}")
            .await
            .assert_error(404, "pack_not_found");

        // A pack with a matching trust.sha256 needs no flag.
        let r = server
            .install_with("t.signed", "", signed_pack("t.signed"))
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server.call("t.signed", "{}").await.json()["output"],
            json!({"signed": true})
        );

        // With consent: installed, and callable on the agent's listener.
        let r = server
            .install_with("x.steal", "allow_unsigned=true", steal_pack())
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["source"], "installed");
        let r = server.call("x.steal", "{}").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["output"]["loot"].is_string());
        // Replacing it needs consent again.
        server
            .install_with("x.steal", "", steal_pack())
            .await
            .assert_error(403, "forbidden");
        server.stop().await;

        // The config's allow_unsigned consents for every operator install.
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.allow_unsigned = true;
        let server = Server::start(cfg).await;
        let r = server.install_with("x.steal", "", steal_pack()).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn shadowing_a_shipped_pack_needs_replace_shipped() {
    within(60, async {
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.packs_dir = seed_packs();
        let server = Server::start(cfg).await;
        let ours = || {
            bash_pack(
                "cmd.upper",
                "echo '{\"text\":\"ours\"}'",
                json!({"version": "9"}),
            )
        };
        let before = server.walk();
        for query in [
            "allow_unsigned=true",
            "allow_unsigned=true&replace_shipped=false",
        ] {
            let msg = server
                .install_with("cmd.upper", query, ours())
                .await
                .assert_error(409, "conflict");
            assert!(
                msg.contains("cmd.upper") && msg.contains("replace_shipped=true"),
                "{msg}"
            );
        }
        // Signed or not, the shipped name is protected.
        server
            .install_with("cmd.upper", "", signed_pack("cmd.upper"))
            .await
            .assert_error(409, "conflict");
        assert_eq!(
            server.walk(),
            before,
            "a refused install left something on disk"
        );
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"x"}"#).await.json()["output"]["text"],
            "X"
        );
        // Both consents: the installed pack overrides the shipped one.
        let r = server
            .install_with(
                "cmd.upper",
                "replace_shipped=true&allow_unsigned=true",
                ours(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"x"}"#).await.json()["output"]["text"],
            "ours"
        );
        // replace_shipped alone does not waive the unsigned check.
        server
            .install_with(
                "cmd.lower",
                "replace_shipped=true",
                bash_pack("cmd.lower", "echo '{}'", json!({})),
            )
            .await
            .assert_error(403, "forbidden");
        // Deleting through the operator brings the shipped one back.
        assert_eq!(server.delete("cmd.upper").await.status, 204);
        assert_eq!(
            server.call("cmd.upper", r#"{"text":"x"}"#).await.json()["output"]["text"],
            "X"
        );
        server
            .delete("cmd.upper")
            .await
            .assert_error(409, "pack_read_only");
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn operator_installs_calls_and_deletes() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let tar = bash_pack("t.echo", "echo '{\"v\":1}'", json!({}));
        assert_eq!(server.install("t.echo", tar).await.status, 201);
        // The operator listener serves the agent API too.
        let r = server
            .operator_request("POST", "/v1/packs/t.echo", "{}")
            .await;
        assert_eq!(r.json()["output"], json!({"v": 1}));
        assert_eq!(
            server
                .operator_request("GET", "/v1/packs/t.echo", Vec::new())
                .await
                .json()["source"],
            "installed"
        );
        assert_eq!(
            server.call("t.echo", "{}").await.json()["output"],
            json!({"v": 1})
        );
        assert_eq!(server.delete("t.echo").await.status, 204);
        server
            .call("t.echo", "{}")
            .await
            .assert_error(404, "pack_not_found");
        server
            .delete("t.echo")
            .await
            .assert_error(404, "pack_not_found");
        assert!(
            !server
                .entries("packs")
                .iter()
                .any(|e| e.starts_with("t.echo@")),
            "{:?}",
            server.entries("packs")
        );
        server
            .operator_request("PATCH", "/v1/packs/t.echo", Vec::new())
            .await
            .assert_error(405, "method_not_allowed");
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn operator_query_parameters_are_checked() {
    within(60, async {
        let state = open_tempdir();
        let server = Server::start(config(state.path())).await;
        let before = server.walk();
        let cases = [
            (
                "PUT",
                "/v1/packs/x.steal?allow_unsigned=true&force=1",
                "`force`",
            ),
            (
                "PUT",
                "/v1/packs/x.steal?allowunsigned=true",
                "`allowunsigned`",
            ),
            (
                "PUT",
                "/v1/packs/x.steal?allow_unsigned=yes",
                "`allow_unsigned`",
            ),
            (
                "PUT",
                "/v1/packs/x.steal?allow_unsigned",
                "`allow_unsigned`",
            ),
            (
                "PUT",
                "/v1/packs/x.steal?allow_unsigned=true&allow_unsigned=true",
                "twice",
            ),
            ("DELETE", "/v1/packs/x.steal?force=true", "`force`"),
            (
                "DELETE",
                "/v1/packs/x.steal?allow_unsigned=true",
                "`allow_unsigned`",
            ),
            ("GET", "/v1/packs?a=1&b=2", "`a`, `b`"),
        ];
        for (method, path, want) in cases {
            let msg = server
                .operator_request(method, path, steal_pack())
                .await
                .assert_error(400, "invalid_input");
            assert!(msg.contains(want), "{method} {path}: want {want} in {msg}");
        }
        assert_eq!(server.walk(), before);
        server.stop().await;
    })
    .await
}

#[tokio::test]
async fn operator_listen_from_the_config_binds_and_serves() {
    within(60, async {
        // `run` itself binds `operator_listen` (here a free loopback port).
        let state = open_tempdir();
        let mut cfg = config(state.path());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        cfg.operator_listen = Some(format!("127.0.0.1:{port}").try_into().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (trigger, shutdown) = sidecars_common::shutdown::Shutdown::new();
        let task = tokio::spawn(pack_exec::run(listener, cfg, shutdown));
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let auth = format!("Bearer {TOKEN}");
        let mut ok = false;
        for _ in 0..200 {
            if let Ok(r) = send(addr, "GET", "/health", Some(&auth), Vec::new()).await {
                assert_eq!(r.status, 200);
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(ok, "the operator listener never answered");
        send(addr, "GET", "/health", None, Vec::new())
            .await
            .unwrap()
            .assert_error(401, "unauthorized");
        trigger.trigger();
        within(30, task).await.unwrap().unwrap();
    })
    .await
}

#[tokio::test]
async fn default_route_listener_is_on_the_default_route_interface() {
    within(60, async {
        let table = std::fs::read_to_string(pack_exec::operator::ROUTE_TABLE).unwrap();
        if pack_exec::operator::parse_default_route(&table)
            .unwrap()
            .is_none()
        {
            eprintln!("no default route on this machine; covered by the unit tests");
            return;
        }
        let ip = pack_exec::operator::default_route_ipv4().unwrap();
        let state = open_tempdir();
        let mut cfg = config(state.path());
        cfg.operator_listen = Some("default-route:0".to_string().try_into().unwrap());
        let server = Server::start(cfg).await;
        let addr = server.operator_addr();
        assert_eq!(addr.ip(), std::net::IpAddr::V4(ip));
        assert_eq!(
            server
                .operator_request("GET", "/health", Vec::new())
                .await
                .status,
            200
        );
        // Bound on that address only: not on loopback.
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
        assert!(tokio::net::TcpStream::connect(loopback).await.is_err());
        server.stop().await;
    })
    .await
}

// ---- start-up refusals: the real entry point exits 2 naming the field --------------------------

fn start_with(config: serde_json::Value) -> (ExitCode, tempfile::TempDir) {
    let dir = open_tempdir();
    let path = dir.path().join("pack-exec.json");
    let mut config = config;
    config["state_dir"] = json!(dir.path().join("state"));
    config["listen"] = json!("127.0.0.1:0");
    std::fs::write(&path, config.to_string()).unwrap();
    let args = pack_exec::cli::Args { config: Some(path) };
    (pack_exec::cli::main(args), dir)
}

#[test]
fn operator_listen_without_a_good_token_file_refuses_to_start() {
    let exit2 = ExitCode::from(sidecars_common::daemon::EXIT_CONFIG);
    let (code, _d) = start_with(json!({"operator_listen": "127.0.0.1:0"}));
    assert_eq!(code, exit2, "operator_listen without operator_token_file");
    let (code, _d) = start_with(json!({
        "operator_listen": "127.0.0.1:0",
        "operator_token_file": "/nonexistent/operator-token",
    }));
    assert_eq!(code, exit2, "unreadable token file");
    let dir = open_tempdir();
    let short = dir.path().join("short");
    std::fs::write(&short, "fifteen-bytes!!\n").unwrap();
    let (code, _d) = start_with(json!({
        "operator_listen": "127.0.0.1:0",
        "operator_token_file": short,
    }));
    assert_eq!(code, exit2, "a 15-byte token");
    let (code, _d) = start_with(json!({
        "operator_listen": "default-route:",
        "operator_token_file": short,
    }));
    assert_eq!(code, exit2, "default-route: without a port");
}
