//! pack-exec under the real `sidecars` binary: SIGTERM lets an in-flight call finish, then the
//! process exits 0. Lives here because only this package has `CARGO_BIN_EXE_sidecars`.
//! Uses std only (raw HTTP/1.1 over TcpStream), so the bin crate needs no dev-dependencies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("pack-exec-sigterm-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Handlers run as 65534 when the tests run as root: they must traverse it.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    TempDir(dir)
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn write_pack(dir: &Path) {
    let pack = dir.join("t.slow");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(
        pack.join("pack.json"),
        r#"{"name":"t.slow","version":"1","handler":{"type":"command","command":["bash","handler.sh"],"timeout_s":30}}"#,
    )
    .unwrap();
    std::fs::write(pack.join("handler.sh"), "sleep 1; echo '{\"done\":true}'\n").unwrap();
}

#[test]
fn sigterm_lets_in_flight_calls_finish_then_exits_0() {
    let tmp = temp_dir();
    let packs = tmp.0.join("packs");
    write_pack(&packs);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = tmp.0.join("pack-exec.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"listen":"{addr}","state_dir":"{}","packs_dir":"{}"}}"#,
            tmp.0.join("state").display(),
            packs.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecars"))
        .args(["pack-exec", "--config"])
        .arg(&config)
        .spawn()
        .unwrap();
    let ready = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        matches!(http(addr, "GET", "/health", ""), Ok((200, _)))
    });
    if !ready {
        let _ = child.kill();
        panic!("pack-exec did not become healthy on {addr}");
    }

    let call = std::thread::spawn(move || http(addr, "POST", "/v1/packs/t.slow", "{}"));
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, body) = call.join().unwrap().expect("the in-flight call failed");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""output":{"done":true}"#), "{body}");
    let Some(exit) = wait_exit(&mut child, Duration::from_secs(15)) else {
        let _ = child.kill();
        panic!("pack-exec did not exit after SIGTERM");
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // It stopped listening.
    assert!(http(addr, "GET", "/health", "").is_err());
}
