//! Packs as MCP tools at `/mcp` on the agent listener: the official MCP Python SDK as the
//! client, plus the transport rules and the notification stream checked on the wire.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{json, Value};

use support::*;

/// A server shipping the seed packs, with the failing pack `x.fail` installed.
async fn server_with_packs(state: &std::path::Path) -> Server {
    let mut cfg = config(state);
    cfg.packs_dir = seed_packs();
    let server = Server::start(cfg).await;
    let r = server
        .install_with(
            "x.fail",
            "allow_unsigned=true",
            bash_pack(
                "x.fail",
                "echo 'boom: no such thing' >&2; exit 3",
                json!({}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    server
}

const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

/// `initialize` at `version`; returns the session id and the result.
async fn initialize(addr: SocketAddr, version: &str) -> (String, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let r = send_with(
        addr,
        "POST",
        "/mcp",
        &[JSON, ACCEPT],
        body.to_string().into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    (sid, r.json()["result"].clone())
}

async fn rpc(addr: SocketAddr, sid: &str, method: &str, params: Value) -> Resp {
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params});
    send_with(
        addr,
        "POST",
        "/mcp",
        &[JSON, ACCEPT, ("mcp-session-id", sid)],
        body.to_string().into(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_lists_calls_and_hears_of_an_install() {
    let state = open_tempdir();
    let server = server_with_packs(state.path()).await;
    let tarball = state.path().join("x.echo.tar");
    std::fs::write(
        &tarball,
        bash_pack("x.echo", "cat", json!({"description": "echo the input"})),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(format!("http://{}/mcp", server.addr))
            .arg("--operator")
            .arg(format!("http://{}", server.operator_addr()))
            .arg("--token")
            .arg(TOKEN)
            .arg("--install")
            .arg(format!("x.echo={}", tarball.display()))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python client timed out")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    let tools = &v["tools"];
    for tool in ["cmd-upper", "cmd-lower", "cmd-wordcount", "x-fail"] {
        assert!(tools.get(tool).is_some(), "{tool} missing from {tools}");
    }
    assert_eq!(tools["cmd-upper"]["title"], "cmd.upper");
    assert!(tools["cmd-upper"]["description"]
        .as_str()
        .unwrap()
        .starts_with("Upper-case a string"));
    assert_eq!(tools["cmd-upper"]["input_schema"]["type"], "object");
    assert_eq!(
        tools["cmd-upper"]["input_schema"]["required"],
        json!(["text"])
    );
    assert_eq!(tools["cmd-upper"]["output_schema"]["type"], "object");

    assert_eq!(v["upper"]["is_error"], false, "{v}");
    assert_eq!(v["upper"]["structured"], json!({"text": "HELLO, MCP"}));
    let text: Value = serde_json::from_str(v["upper"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, json!({"text": "HELLO, MCP"}));

    assert_eq!(v["bad_input"]["is_error"], true, "{v}");
    let bad: Value = serde_json::from_str(v["bad_input"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(bad["error"], "invalid_input", "{bad}");

    assert_eq!(v["failing"]["is_error"], true, "{v}");
    let failing: Value = serde_json::from_str(v["failing"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(failing["error"], "handler_failed", "{failing}");
    assert!(
        failing["message"]
            .as_str()
            .unwrap()
            .contains("boom: no such thing"),
        "{failing}"
    );

    assert_eq!(v["unknown"], json!({"raised": true, "code": -32602}));

    assert_eq!(v["list_changed"], true, "{v}");
    assert_eq!(v["install_statuses"][0], 201, "{v}");
    assert!(v["tools_after"]
        .as_array()
        .unwrap()
        .contains(&json!("x-echo")));
    server.stop().await;
}

#[tokio::test]
async fn initialize_announces_list_changed_and_tools_follow_the_version() {
    within(60, async {
        let state = open_tempdir();
        let server = server_with_packs(state.path()).await;
        let (sid, result) = initialize(server.addr, "2025-06-18").await;
        assert_eq!(result["protocolVersion"], "2025-06-18");
        assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(result["serverInfo"]["name"], "sidecars-pack-exec");

        let listed = rpc(server.addr, &sid, "tools/list", json!({})).await.json();
        let upper = listed["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "cmd-upper")
            .cloned()
            .expect("cmd-upper listed");
        assert_eq!(upper["outputSchema"]["type"], "object");

        // 2025-03-26 has no outputSchema / structuredContent.
        let (old, _) = initialize(server.addr, "2025-03-26").await;
        let listed = rpc(server.addr, &old, "tools/list", json!({})).await.json();
        assert!(listed["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("outputSchema").is_none()));
        let called = rpc(
            server.addr,
            &old,
            "tools/call",
            json!({"name": "cmd-upper", "arguments": {"text": "a"}}),
        )
        .await
        .json();
        assert!(called["result"].get("structuredContent").is_none());
        assert_eq!(called["result"]["content"][0]["text"], r#"{"text":"A"}"#);

        // The dotted pack name is not a tool name, and arguments must be an object.
        let r = rpc(
            server.addr,
            &sid,
            "tools/call",
            json!({"name": "cmd.upper", "arguments": {"text": "a"}}),
        )
        .await
        .json();
        assert_eq!(r["error"]["code"], -32602, "{r}");
        let r = rpc(
            server.addr,
            &sid,
            "tools/call",
            json!({"name": "cmd-upper", "arguments": [1]}),
        )
        .await
        .json();
        assert_eq!(r["error"]["code"], -32602, "{r}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn mcp_is_the_agent_listeners_only_and_needs_a_session() {
    within(60, async {
        let state = open_tempdir();
        let server = server_with_packs(state.path()).await;
        // Without a session: 400; with an unknown one: 404 (POST and GET).
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
        let r = send_with(
            server.addr,
            "POST",
            "/mcp",
            &[JSON, ACCEPT],
            body.clone().into(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400);
        let r = send_with(
            server.addr,
            "POST",
            "/mcp",
            &[JSON, ACCEPT, ("mcp-session-id", "feedface")],
            body.into(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404);
        let r = send_with(
            server.addr,
            "GET",
            "/mcp",
            &[
                ("accept", "text/event-stream"),
                ("mcp-session-id", "feedface"),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404);
        // A GET that does not accept an event stream: 406.
        let (sid, _) = initialize(server.addr, "2025-11-25").await;
        let r = send_with(
            server.addr,
            "GET",
            "/mcp",
            &[("accept", "application/json"), ("mcp-session-id", &sid)],
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 406);
        // The operator listener has no /mcp: the agent's tools are the agent listener's.
        let r = server
            .operator_request(
                "POST",
                "/mcp",
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}).to_string(),
            )
            .await;
        r.assert_error(404, "not_found");
        server.stop().await;
    })
    .await;
}

/// The next data of an SSE body, or `None` when the stream ended; panics after `secs`.
async fn next_event(body: &mut hyper::body::Incoming, secs: u64) -> Option<String> {
    let frame = tokio::time::timeout(Duration::from_secs(secs), body.frame())
        .await
        .expect("no SSE frame in time")?;
    let data = frame.ok()?.into_data().ok()?;
    Some(String::from_utf8_lossy(&data).to_string())
}

#[tokio::test]
async fn installs_and_deletes_are_announced_and_a_stream_ends_with_its_session() {
    within(60, async {
        let state = open_tempdir();
        let server = server_with_packs(state.path()).await;
        let (sid, _) = initialize(server.addr, "2025-11-25").await;
        let stream_headers = [
            ("accept", "text/event-stream"),
            ("mcp-session-id", sid.as_str()),
        ];
        let resp = open(server.addr, "GET", "/mcp", &stream_headers, Vec::new())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut first = resp.into_body();

        let r = server
            .install_with(
                "x.new",
                "allow_unsigned=true",
                bash_pack("x.new", "cat", json!({})),
            )
            .await;
        assert_eq!(r.status, 201);
        let event = next_event(&mut first, 10).await.expect("an event");
        assert!(event.starts_with("event: message\ndata: "), "{event:?}");
        let data: Value =
            serde_json::from_str(event.trim_start_matches("event: message\ndata: ").trim())
                .unwrap();
        assert_eq!(
            data,
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        );

        // A newer stream of the same session takes over: the first one ends, and a delete
        // is announced on the new one only.
        let mut second = open(server.addr, "GET", "/mcp", &stream_headers, Vec::new())
            .await
            .unwrap()
            .into_body();
        assert_eq!(
            next_event(&mut first, 10).await,
            None,
            "replaced stream ends"
        );
        assert_eq!(server.delete("x.new").await.status, 204);
        let event = next_event(&mut second, 10).await.expect("an event");
        assert!(
            event.contains("notifications/tools/list_changed"),
            "{event:?}"
        );

        // DELETE of the session ends its stream.
        let r = send_with(
            server.addr,
            "DELETE",
            "/mcp",
            &[("mcp-session-id", &sid)],
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(next_event(&mut second, 10).await, None, "session ended");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_open_stream_does_not_hold_up_shutdown() {
    within(30, async {
        let state = open_tempdir();
        let server = server_with_packs(state.path()).await;
        let (sid, _) = initialize(server.addr, "2025-11-25").await;
        let mut stream = open(
            server.addr,
            "GET",
            "/mcp",
            &[("accept", "text/event-stream"), ("mcp-session-id", &sid)],
            Vec::new(),
        )
        .await
        .unwrap()
        .into_body();
        let started = std::time::Instant::now();
        server.stop().await;
        assert_eq!(next_event(&mut stream, 5).await, None);
        // The drain timeout is longer than this: the stream ended on shutdown, it was not cut.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}
