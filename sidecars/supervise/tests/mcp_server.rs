//! supervise over real TCP, in process: MCP transport rules, tools, the operator listener and
//! a JSON-RPC fuzz corpus. (The real binary, `supervise-ctl`, kill -9 and the official Python
//! SDK client are exercised in `sidecars/bin/tests/supervise.rs`.)

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use supervise::{Config, Queue, Verdict};
use support::http::{call_tool, mcp_post, mcp_session, request};
use tokio::net::TcpListener;

struct Server {
    agent: SocketAddr,
    operator: SocketAddr,
    queue_dir: tempfile::TempDir,
    _stop: sidecars_common::shutdown::ShutdownTrigger,
}

async fn start(max_body_bytes: usize) -> Server {
    let queue_dir = tempfile::tempdir().unwrap();
    let agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (agent_addr, operator_addr) = (agent.local_addr().unwrap(), operator.local_addr().unwrap());
    let config = Config {
        queue_dir: queue_dir.path().to_path_buf(),
        max_body_bytes,
        ..Config::default()
    };
    let (trigger, shutdown) = sidecars_common::shutdown::Shutdown::new();
    tokio::spawn(supervise::run_with_operator(
        agent, operator, config, shutdown,
    ));
    Server {
        agent: agent_addr,
        operator: operator_addr,
        queue_dir,
        _stop: trigger,
    }
}

fn structured(resp: &Value) -> &Value {
    assert_eq!(resp["result"]["isError"], json!(false), "{resp}");
    let s = &resp["result"]["structuredContent"];
    // The text content carries the same JSON.
    let text = resp["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(&serde_json::from_str::<Value>(text).unwrap(), s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_negotiates_and_issues_a_session() {
    let s = start(1 << 20).await;
    for (asked, answered) in [
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2024-11-05", "2025-11-25"),
        ("2999-01-01", "2025-11-25"),
    ] {
        let body = json!({"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":asked,"capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
        let resp = mcp_post(s.agent, None, body.to_string().as_bytes()).await;
        assert_eq!(resp.status, 200);
        assert!(resp.header("mcp-session-id").is_some());
        let v = resp.json();
        assert_eq!(v["id"], "i");
        assert_eq!(v["result"]["protocolVersion"], answered);
        assert!(v["result"]["capabilities"]["tools"].is_object());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_required_after_initialize_and_delete_ends_it() {
    let s = start(1 << 20).await;
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let resp = mcp_post(s.agent, None, ping).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"]["code"], -32600);
    assert_eq!(mcp_post(s.agent, Some("nope"), ping).await.status, 404);

    let sid = mcp_session(s.agent, "2025-06-18").await;
    let resp = mcp_post(s.agent, Some(&sid), ping).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"jsonrpc":"2.0","id":1,"result":{}}));

    // A mismatching MCP-Protocol-Version header is a 400.
    let resp = request(
        s.agent,
        "POST",
        "/mcp",
        &[
            ("content-type", "application/json"),
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "1999-01-01"),
        ],
        ping,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400);

    let del = request(s.agent, "DELETE", "/mcp", &[("mcp-session-id", &sid)], b"")
        .await
        .unwrap();
    assert_eq!(del.status, 204);
    assert_eq!(mcp_post(s.agent, Some(&sid), ping).await.status, 404);

    let get = request(
        s.agent,
        "GET",
        "/mcp",
        &[("accept", "text/event-stream")],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(get.status, 405);
    assert!(get.header("allow").unwrap().contains("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_request_get_and_wait_woken_by_operator_api() {
    let s = start(1 << 20).await;
    let sid = mcp_session(s.agent, "2025-06-18").await;
    let list = mcp_post(
        s.agent,
        Some(&sid),
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .await
    .json();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["request_approval", "get_approval", "wait_for_approval"]
    );

    let r = call_tool(
        s.agent,
        &sid,
        "request_approval",
        json!({"kind":"deploy","summary":"ship v2","details":{"env":"prod"}}),
    )
    .await;
    let created = structured(&r).clone();
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().unwrap().to_string();

    let g = call_tool(s.agent, &sid, "get_approval", json!({"id": id})).await;
    assert_eq!(structured(&g)["status"], "pending");

    // A short wait times out still pending.
    let w = call_tool(
        s.agent,
        &sid,
        "wait_for_approval",
        json!({"id": id, "timeout_s": 0.2}),
    )
    .await;
    assert_eq!(structured(&w)["status"], "pending");

    // A long wait is woken by the operator API's decision at once.
    let waiter = {
        let (addr, sid, id) = (s.agent, sid.clone(), id.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = call_tool(
                addr,
                &sid,
                "wait_for_approval",
                json!({"id": id, "timeout_s": 30}),
            )
            .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let decided = request(
        s.operator,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        &[("content-type", "application/json")],
        br#"{"note":"go ahead"}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        decided.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&decided.body)
    );
    let decided_at = Instant::now();
    let (r, took) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    let v = structured(&r);
    assert_eq!(v["status"], "approved");
    assert_eq!(v["note"], "go ahead");
    assert!(took < Duration::from_secs(5), "waited {took:?}");
    assert!(decided_at.elapsed() < Duration::from_secs(2));

    // Deciding twice is a conflict.
    let again = request(
        s.operator,
        "POST",
        &format!("/v1/approvals/{id}/deny"),
        &[],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(again.status, 409);
    let listed = request(s.operator, "GET", "/v1/approvals?status=approved", &[], b"")
        .await
        .unwrap()
        .json();
    assert_eq!(listed["approvals"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_written_to_the_queue_by_another_process_wakes_waiters() {
    let s = start(1 << 20).await;
    let sid = mcp_session(s.agent, "2025-11-25").await;
    let r = call_tool(
        s.agent,
        &sid,
        "request_approval",
        json!({"kind":"spend","summary":"buy"}),
    )
    .await;
    let id = structured(&r)["id"].as_str().unwrap().to_string();
    let waiter = {
        let (addr, sid, id) = (s.agent, sid.clone(), id.clone());
        tokio::spawn(async move {
            call_tool(
                addr,
                &sid,
                "wait_for_approval",
                json!({"id": id, "timeout_s": 30}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What supervise-ctl does: a second Queue handle on the same directory, no daemon involved.
    Queue::open(s.queue_dir.path())
        .unwrap()
        .decide(
            &id,
            Verdict::Denied,
            Some("too expensive".into()),
            "supervise-ctl",
        )
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(structured(&r)["status"], "denied");
    assert_eq!(structured(&r)["note"], "too expensive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_errors_and_argument_errors() {
    let s = start(1 << 20).await;
    let sid = mcp_session(s.agent, "2025-06-18").await;
    // Unknown tool, wrong argument types, missing arguments: JSON-RPC -32602.
    for (name, args) in [
        ("no_such_tool", json!({})),
        ("get_approval", json!({"id": 5})),
        ("get_approval", json!({})),
        ("wait_for_approval", json!({"id": "x", "timeout_s": "10"})),
        ("wait_for_approval", json!({"id": "x", "timeout_s": -1})),
        ("request_approval", json!({"kind": [], "summary": {}})),
        ("request_approval", json!({"kind": "", "summary": "x"})),
        (
            "request_approval",
            json!({"kind": "k", "summary": "x", "extra": 1}),
        ),
    ] {
        let r = call_tool(s.agent, &sid, name, args.clone()).await;
        assert_eq!(r["error"]["code"], -32602, "{name} {args}: {r}");
    }
    // A valid call that fails while running: isError.
    let r = call_tool(
        s.agent,
        &sid,
        "get_approval",
        json!({"id": "0000000000000-abcdef"}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = call_tool(
        s.agent,
        &sid,
        "get_approval",
        json!({"id": "../../etc/passwd"}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    // Unknown method.
    let r = mcp_post(
        s.agent,
        Some(&sid),
        br#"{"jsonrpc":"2.0","id":3,"method":"resources/list"}"#,
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32601);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_follow_the_negotiated_version() {
    let s = start(1 << 20).await;
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"ping"},
        {"jsonrpc":"2.0","method":"notifications/initialized"},
        {"jsonrpc":"2.0","id":2,"method":"nope"},
        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_approval","arguments":{"id":7}}},
        42
    ])
    .to_string();
    let old = mcp_session(s.agent, "2025-03-26").await;
    let r = mcp_post(s.agent, Some(&old), batch.as_bytes()).await;
    assert_eq!(r.status, 200);
    let answers = r.json();
    let codes: Vec<Value> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.get("error")
                .map(|e| e["code"].clone())
                .unwrap_or(json!("ok"))
        })
        .collect();
    assert_eq!(
        codes,
        vec![json!("ok"), json!(-32601), json!(-32602), json!(-32600)]
    );
    let only_notes = br#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
    assert_eq!(mcp_post(s.agent, Some(&old), only_notes).await.status, 202);

    let new = mcp_session(s.agent, "2025-06-18").await;
    let r = mcp_post(s.agent, Some(&new), batch.as_bytes()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_corpus_gets_only_errors_and_the_server_stays_healthy() {
    let limit = 64 * 1024;
    let s = start(limit).await;
    let sid = mcp_session(s.agent, "2025-03-26").await;
    let deep_array = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"request_approval","arguments":{{"kind":"k","summary":"s","details":{}1{}}}}}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let huge_string_id = format!(
        r#"{{"jsonrpc":"2.0","id":"{}","method":"ping"}}"#,
        "9".repeat(40_000)
    );
    let oversize = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(limit + 10)
    );
    let mut corpus: Vec<(Vec<u8>, &[i64])> = vec![
        (b"".to_vec(), &[-32700]),
        (b"{".to_vec(), &[-32700]),
        (b"not json".to_vec(), &[-32700]),
        (b"\xff\xfe\x00garbage".to_vec(), &[-32700]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping""#.to_vec(), &[-32700]),
        (br#"{"jsonrpc":"2.0","id":NaN,"method":"ping"}"#.to_vec(), &[-32700]),
        (br#"{"jsonrpc":"2.0","id":"\ud800","method":"ping"}"#.to_vec(), &[-32700]),
        (b"null".to_vec(), &[-32600]),
        (b"42".to_vec(), &[-32600]),
        (br#""ping""#.to_vec(), &[-32600]),
        (b"[]".to_vec(), &[-32600]),
        (br#"{}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":1e999,"method":"ping"}"#.to_vec(), &[-32700]),
        (br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":1,"method":null}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#.to_vec(), &[-32600]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1,2]}"#.to_vec(), &[-32602]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_vec(), &[-32602]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#.to_vec(), &[-32602]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_approval","arguments":"id"}}"#.to_vec(), &[-32602]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wait_for_approval","arguments":{"id":"1","timeout_s":1e308}}}"#.to_vec(), &[]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":5}}"#.to_vec(), &[-32602]),
        (br#"{"jsonrpc":"2.0","id":1,"method":"\u0000\u0001"}"#.to_vec(), &[-32601]),
        (br#"{"jsonrpc":"2.0","id":9223372036854775807,"method":"nope"}"#.to_vec(), &[-32601]),
        (br#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"nope","id":2}"#.to_vec(), &[-32601]),
        (br#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#.to_vec(), &[-32600]),
        (br#"[1,2,3]"#.to_vec(), &[-32600]),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}]"#.to_vec(), &[-32600]),
        (deep_array.into_bytes(), &[-32700]),
        (deep_object.into_bytes(), &[-32700]),
        (deep_params.into_bytes(), &[-32700]),
        (huge_string_id.into_bytes(), &[]),
        (oversize.into_bytes(), &[-32600]),
    ];
    // Many requests in one batch.
    let many: Vec<Value> = (0..500)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"ping"}))
        .collect();
    corpus.push((serde_json::to_vec(&many).unwrap(), &[]));

    for (i, (body, expected_codes)) in corpus.iter().enumerate() {
        let resp = mcp_post(s.agent, Some(&sid), body).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        assert!(
            [200, 202, 400, 404, 413].contains(&resp.status),
            "case {i} ({shown}): status {}",
            resp.status
        );
        if resp.status == 202 {
            continue;
        }
        let v = resp.json();
        let items = match &v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for item in &items {
            assert_eq!(item["jsonrpc"], "2.0", "case {i} ({shown}): {item}");
            if let Some(code) = item.get("error").map(|e| e["code"].as_i64().unwrap()) {
                assert!((-32768..=-32000).contains(&code), "case {i}: {code}");
                if !expected_codes.is_empty() {
                    assert!(
                        expected_codes.contains(&code),
                        "case {i} ({shown}): got {code}, want {expected_codes:?}"
                    );
                }
            } else {
                assert!(item.get("result").is_some(), "case {i}: {item}");
                assert!(
                    expected_codes.is_empty(),
                    "case {i} ({shown}): expected an error, got {item}"
                );
            }
        }
    }
    // Oversize is 413 specifically.
    let big = vec![b' '; limit + 1];
    assert_eq!(mcp_post(s.agent, Some(&sid), &big).await.status, 413);
    // Wrong content type.
    let r = request(
        s.agent,
        "POST",
        "/mcp",
        &[("content-type", "text/plain"), ("mcp-session-id", &sid)],
        b"{}",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["error"]["code"], -32600);

    // Still healthy, and the session still works.
    let health = request(s.agent, "GET", "/health", &[], b"").await.unwrap();
    assert_eq!(health.status, 200);
    let r = mcp_post(
        s.agent,
        Some(&sid),
        br#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#,
    )
    .await;
    assert_eq!(r.json()["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_recorded_on_the_operator_listener_only() {
    let s = start(1 << 20).await;
    let ev = br#"{"ts":"2025-05-01T10:00:00Z","daemon":"pipelock","event":"exited","code":1,"signal":null,"restarts":3}"#;
    let r = request(
        s.operator,
        "POST",
        "/v1/events",
        &[("content-type", "application/json")],
        ev,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let bad = request(
        s.operator,
        "POST",
        "/v1/events",
        &[],
        br#"{"daemon":"x","event":"exploded"}"#,
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "invalid_input");

    // Not on the agent listener: neither writing nor reading events or approvals.
    for (method, path) in [
        ("POST", "/v1/events"),
        ("GET", "/v1/events"),
        ("GET", "/v1/approvals"),
    ] {
        let r = request(s.agent, method, path, &[], ev).await.unwrap();
        assert_eq!(r.status, 404, "{method} {path}");
    }
    let listed = request(s.operator, "GET", "/v1/events", &[], b"")
        .await
        .unwrap()
        .json();
    let events = listed["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["daemon"], "pipelock");
    assert_eq!(events[0]["restarts"], 3);
    // Durable: visible through the queue files.
    assert_eq!(
        Queue::open(s.queue_dir.path())
            .unwrap()
            .events()
            .unwrap()
            .len(),
        1
    );
}
