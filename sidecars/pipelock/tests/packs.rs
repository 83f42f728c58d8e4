//! pipelock's pack listener over real TCP: traffic relayed by sidecar-init from a handler's
//! jail, announced by its preamble, is checked like the agent's (its own `pack_allow` when
//! set, DLP, SSRF) and logged with the pack's name and call id.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Log lines of this test process (nextest runs each test in a process of its own).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// One proxied request as a handler's relayed connection: preamble, then `request`.
async fn from_pack(pack_listen: std::net::SocketAddr, preamble: &str, request: &str) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(pack_listen).await.unwrap();
        s.write_all(preamble.as_bytes()).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("pack request timed out")
}

async fn pipelock_with_packs(extra: serde_json::Value) -> (Daemon, std::net::SocketAddr) {
    let port = closed_port().await;
    let pack_listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut config = json!({
        "upstream": null,
        "allow_cidrs": ["127.0.0.0/8"],
        "pack_listen": pack_listen,
        "rate_limit_per_minute": 0,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        config[k] = v;
    }
    let d = start_pipelock(config).await;
    for _ in 0..100 {
        if TcpStream::connect(pack_listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (d, pack_listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_traffic_follows_pack_allow_and_is_logged_with_the_pack_and_call() {
    let logs = Logs::install();
    let up = upstream(None).await;
    let host = format!("127.0.0.1:{}", up.port());
    // The agent may reach nothing; packs may reach the upstream.
    let (agent, packs) = pipelock_with_packs(json!({
        "allow": [],
        "pack_allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
    }))
    .await;
    let get = format!(
        "GET http://{host}/from-pack HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let out = from_pack(packs, "SIDECARS-PACK t.fetch call-0042\n", &get).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(up.requests(), 1);
    let denied = raw(agent.addr, &get).await;
    assert_eq!(denied.status, 403, "the agent must not get the packs' list");
    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("allowed")
            && l.contains("pack=t.fetch")
            && l.contains("call=call-0042")),
        "the allowed pack request is logged with its pack and call: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_pack_request_is_refused_and_logged_with_the_pack() {
    let logs = Logs::install();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("agent.env");
    std::fs::write(&secret_file, "API_TOKEN=zq8-very-secret-value-91\n").unwrap();
    let up = upstream(None).await;
    let host = format!("127.0.0.1:{}", up.port());
    let (_agent, packs) = pipelock_with_packs(json!({
        "allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
        "secret_files": [secret_file],
    }))
    .await;
    let body = "exfil=zq8-very-secret-value-91";
    let post = format!(
        "POST http://{host}/upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let out = from_pack(packs, "SIDECARS-PACK t.leaky call-7\n", &post).await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert_eq!(up.requests(), 0, "the secret reached the upstream");
    let text = logs.text();
    assert!(
        text.lines().any(|l| l.contains("denied")
            && l.contains("pack=t.leaky")
            && l.contains("call=call-7")),
        "the DLP denial is logged with the pack: {text}"
    );
    assert!(
        !text.contains("zq8-very-secret-value-91"),
        "the secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_valid_preamble_get_nothing() {
    let up = upstream(None).await;
    let host = format!("127.0.0.1:{}", up.port());
    let (_agent, packs) = pipelock_with_packs(json!({
        "allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
    }))
    .await;
    let get = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    for bad in [
        "",
        "SIDECARS-PACK NotAPack call\n",
        "SIDECARS-PACK t.x bad/id\n",
        "HELLO t.x c1\n",
    ] {
        let out = from_pack(packs, bad, &get).await;
        assert!(out.is_empty(), "{bad:?} was served: {out}");
    }
    assert_eq!(up.requests(), 0);
}

#[test]
fn pack_listen_must_be_loopback() {
    let err = sidecars_common::config::parse::<pipelock::Config>(
        r#"{"pack_listen": "0.0.0.0:8889"}"#,
        "pipelock.json",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pack_listen"), "{err}");
}
