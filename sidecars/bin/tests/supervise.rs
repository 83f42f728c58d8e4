//! `sidecars supervise` and `sidecars supervise-ctl` as real processes: the official MCP
//! Python SDK as client, operator decisions through the real ctl binary, kill -9 durability,
//! and events from sidecar-init's side.

#[path = "../../supervise/tests/support/http.rs"]
mod http;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sidecars");

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    agent: SocketAddr,
    operator: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the real daemon on fresh ports and wait until /health answers.
async fn start(dir: &Path) -> Daemon {
    let agent: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let operator: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("supervise.json");
    std::fs::write(
        &config,
        json!({"listen": agent, "operator_listen": operator, "queue_dir": dir.join("queue")})
            .to_string(),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["supervise", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        agent,
        operator,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http::request(agent, "GET", "/health", &[], b"").await {
            if r.status == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "supervise did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon
}

fn ctl(queue_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("supervise-ctl")
        .arg("--queue-dir")
        .arg(queue_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_client_uses_every_tool_and_sees_a_ctl_approval() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../supervise/tests/mcp_client.py"
    );
    let queue = dir.path().join("queue");
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(format!("http://{}/mcp", d.agent))
            .arg("--sidecars")
            .arg(BIN)
            .arg("--queue-dir")
            .arg(&queue)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python client timed out")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python client failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["tools"],
        json!(["request_approval", "get_approval", "wait_for_approval"])
    );
    assert_eq!(v["request"]["is_error"], false);
    assert_eq!(v["request"]["structured"]["status"], "pending");
    assert_eq!(v["get"]["structured"]["status"], "pending");
    assert_eq!(v["get"]["structured"]["kind"], "deploy");
    assert_eq!(v["wait_timeout"]["status"], "pending");
    assert_eq!(v["wait"]["ctl_exit"], 0);
    assert_eq!(v["wait"]["structured"]["status"], "approved");
    assert_eq!(v["wait"]["structured"]["note"], "ship it");
    assert!(v["wait"]["latency_s"].as_f64().unwrap() < 2.0, "{v}");
    assert_eq!(v["missing"]["is_error"], true);
    assert_eq!(v["unknown_tool"], json!({"raised": true, "code": -32602}));
    assert_eq!(v["wrong_type"], json!({"raised": true, "code": -32602}));

    // The operator's view through the real ctl binary.
    let (code, listed, _) = ctl(&queue, &["list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"], "approved");
    assert_eq!(listed[0]["decided_by"], "supervise-ctl");
    let id = listed[0]["id"].as_str().unwrap();
    let (code, _, err) = ctl(&queue, &["deny", id]);
    assert_eq!(code, 1);
    assert!(err.contains("already approved"), "{err}");
    let (code, _, err) = ctl(&queue, &["show", "../../etc/passwd"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid approval id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path()).await;
    let addr = d.agent;
    let sid = http::mcp_session(addr, "2025-06-18").await;
    // Four clients submit as fast as they can; each records the ids it got an answer for.
    let mut clients = Vec::new();
    for c in 0..4 {
        let sid = sid.clone();
        clients.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/call","params":{
                    "name":"request_approval","arguments":{"kind":"load","summary":format!("client {c} #{i}")}}});
                let resp = http::request(
                    addr,
                    "POST",
                    "/mcp",
                    &[("content-type", "application/json"), ("mcp-session-id", &sid)],
                    body.to_string().as_bytes(),
                )
                .await;
                match resp {
                    Ok(r) if r.status == 200 => {
                        let v = r.json();
                        acked.push(v["result"]["structuredContent"]["id"].as_str().unwrap().to_string());
                    }
                    _ => break, // the daemon is gone
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        acked.len() > 10,
        "too few requests before the kill: {}",
        acked.len()
    );
    let (code, listed, _) = ctl(&dir.path().join("queue"), &["list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let stored: std::collections::HashSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    for id in &acked {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged {id} is missing after kill -9"
        );
    }
    // And a restarted daemon serves them.
    let d2 = start(dir.path()).await;
    let sid = http::mcp_session(d2.agent, "2025-06-18").await;
    let r = http::call_tool(d2.agent, &sid, "get_approval", json!({"id": acked[0]})).await;
    assert_eq!(r["result"]["structuredContent"]["status"], "pending", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_init_reach_the_operator_and_not_the_agent_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path()).await;
    for (event, restarts) in [("exited", 0), ("restarting", 1), ("failed", 5)] {
        let body = json!({"ts":"2025-05-01T10:00:00Z","daemon":"egress","event":event,"code":1,"signal":null,"restarts":restarts});
        let r = http::request(
            d.operator,
            "POST",
            "/v1/events",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 201);
    }
    let r = http::request(
        d.agent,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        b"{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    let queue = dir.path().join("queue");
    let (code, table, _) = ctl(&queue, &["events"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("egress") && table.contains("failed"),
        "{table}"
    );
    let (_, listed, _) = ctl(&queue, &["list"]);
    assert!(listed.contains("3 daemon event(s)"), "{listed}");
    let (_, json_events, _) = ctl(&queue, &["events", "--json"]);
    let v: Value = serde_json::from_str(&json_events).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[2]["restarts"], 5);
}
