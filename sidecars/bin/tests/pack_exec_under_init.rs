//! pack-exec as it runs in the bundle: under the real `sidecar-init`, as its own unprivileged
//! uid, with its credentials handed over by init and every handler started by init's
//! handler-spawn service under a uid of its own. Needs root (to switch uids), like the bundle's
//! init; fails when CI is set and the tests are not root.
//!
//! What would break without each wall: a handler under pack-exec's uid (or root) fails
//! `handler_runs_under_its_own_uid...`; a handler able to read pack-exec's credentials fails
//! `a_handler_cannot_read_the_daemons_credentials`; stragglers surviving a call fail
//! `a_timed_out_call_leaves_no_process_of_its_uid`; an unchecked spawn socket fails
//! `the_spawn_socket_refuses_other_uids`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACK_EXEC_UID: u32 = 10005;
/// Each test gets its own handler uid range: tests run in parallel, and a call's cleanup
/// kills every process of its uid (in the bundle, init's PID namespace is the container's).
const RANGE: u32 = 4;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root is needed; outside CI a non-root run says so and passes nothing silently: it panics
/// unless explicitly not in CI, where it returns false to let the caller skip loudly.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "these tests switch uids and must run as root in CI"
    );
    eprintln!("SKIPPED: not root (these tests switch uids)");
    false
}

fn init_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_sidecars")).with_file_name("sidecar-init");
    assert!(
        p.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        p.display()
    );
    p
}

struct Bundle {
    dir: PathBuf,
    init: Child,
    addr: SocketAddr,
    first: u32,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.init.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.init.kill();
        let _ = Command::new("chown")
            .args(["-R", "0:0"])
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn pack(packs: &Path, name: &str, timeout_s: u64, script: &str) {
    let dir = packs.join(name);
    std::fs::create_dir_all(&dir).expect("pack dir");
    write(
        &dir.join("pack.json"),
        &format!(
            r#"{{"name":"{name}","version":"1","handler":{{"type":"command","command":["bash","handler.sh"],"timeout_s":{timeout_s}}}}}"#
        ),
        0o644,
    );
    write(&dir.join("handler.sh"), script, 0o755);
}

fn start(tag: &str, first: u32) -> Bundle {
    start_with(tag, first, None)
}

/// [`start`] with init relaying handlers' proxy connections to `proxy` (a stand-in for
/// pipelock's pack listener).
fn start_with(tag: &str, first: u32, proxy: Option<SocketAddr>) -> Bundle {
    let last = first + RANGE - 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("under-init-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let packs = dir.join("packs");
    std::fs::create_dir_all(&packs).expect("packs");
    pack(
        &packs,
        "t.whoami",
        10,
        "read -r _; printf '{\"uid\":%s,\"cwd\":\"%s\",\"home\":\"%s\"}\\n' \"$(id -u)\" \"$PWD\" \"$HOME\"\n",
    );
    pack(
        &packs,
        "t.steal",
        10,
        "read -r line; p=$(printf '%s' \"$line\" | jq -r .path); if cat \"$p\" >/dev/null 2>&1; then echo '{\"read\":true}'; else echo '{\"read\":false}'; fi\n",
    );
    pack(
        &packs,
        "t.escape",
        1,
        "read -r _; setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 300\n",
    );
    pack(
        &packs,
        "t.litter",
        10,
        "read -r _; t=\"$TMPDIR/..\"; echo junk > \"$t/litter-$$\"; mkdir -p \"$t/litter-dir-$$/sub\" \"$TMPDIR/locked\"; touch \"$t/litter-dir-$$/sub/f\" \"$TMPDIR/locked/x\"; chmod 0 \"$t/litter-dir-$$/sub\" \"$TMPDIR/locked\"; ln -s \"$PACK_DIR/handler.sh\" \"$t/litter-link-$$\"; echo '{}'\n",
    );
    // Tries the network and the process table from inside the jail; prints one verdict each.
    pack(
        &packs,
        "t.net",
        10,
        r#"read -r line
tcp=$(printf '%s' "$line" | jq -r .tcp); udp=$(printf '%s' "$line" | jq -r .udp)
v() { if eval "$2" >/dev/null 2>&1; then printf '"%s":"LEAKED",' "$1"; else printf '"%s":"blocked",' "$1"; fi; }
printf '{'
v tcp_host_loopback "exec 3<>/dev/tcp/127.0.0.1/$tcp"
v udp_sent_to_host "echo probe > /dev/udp/127.0.0.1/$udp; sleep 0.2; true"
v list_proc "ls /proc"
v read_init_status "cat /proc/1/status"
v signal_init "kill -0 1"
v read_secret "cat $(printf '%s' "$line" | jq -r .secret)"
v list_tmp "ls /tmp"
own=0; while read -r l; do case $l in Uid:*) own=1;; esac; done < /proc/self/status
printf '"own_proc":"%s",' "$own"
printf '"netns":"%s",' "$(readlink /proc/$$/ns/net)"
printf '"proxy":"%s"}
' "$HTTPS_PROXY"
"#,
    );
    pack(
        &packs,
        "t.curl",
        10,
        "read -r _; body=$(curl -s -m 5 http://example.test/hello) || body=curl-failed; printf '{\"body\":\"%s\"}\n' \"$body\"\n",
    );
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    nix::unistd::chown(
        &state,
        Some(nix::unistd::Uid::from_raw(PACK_EXEC_UID)),
        Some(nix::unistd::Gid::from_raw(PACK_EXEC_UID)),
    )
    .expect("chown state");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    let secret = dir.join("secret-token");
    write(&secret, "s3cr3t-value-of-the-operator-0123456789\n", 0o400);
    let spawn_sock = dir.join("spawn.sock");
    let port = free_port();
    let pack_exec = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "state_dir": state,
        "packs_dir": packs,
        "spawner": spawn_sock,
    });
    write(&dir.join("pack-exec.json"), &pack_exec.to_string(), 0o644);
    let init = serde_json::json!({
        "socket": dir.join("init.sock"),
        "credentials_root": dir.join("credentials"),
        "handlers": {
            "socket": spawn_sock, "client_uid": PACK_EXEC_UID,
            "first_uid": first, "last_uid": last, "tmp_dir": tmp,
            "pack_roots": [packs],
            "proxy": proxy,
            "limits": {"processes": 32}
        },
        "daemons": [{
            "name": "pack-exec",
            "argv": [env!("CARGO_BIN_EXE_sidecars"), "pack-exec", "--config", dir.join("pack-exec.json")],
            "user": format!("{PACK_EXEC_UID}:{PACK_EXEC_UID}"),
            "credentials": {"operator-token": secret},
            "ready": {"http": format!("{port}/health")}
        }]
    });
    write(&dir.join("init.json"), &init.to_string(), 0o600);
    let child = Command::new(init_bin())
        .arg("--config")
        .arg(dir.join("init.json"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("init.log")).expect("init log"))
        .spawn()
        .expect("start sidecar-init");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let until = Instant::now() + Duration::from_secs(20);
    while http(addr, "GET", "/health", "").map(|r| r.0) != Ok(200) {
        assert!(Instant::now() < until, "pack-exec never became healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    Bundle {
        dir,
        init: child,
        addr,
        first,
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).map_err(|e| e.to_string())?;
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

fn call(b: &Bundle, pack: &str) -> (u16, serde_json::Value) {
    call_with(b, pack, "{}")
}

fn call_with(b: &Bundle, pack: &str, input: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(b.addr, "POST", &format!("/v1/packs/{pack}"), input).expect("call");
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::String(body));
    // A success carries the handler's output under "output"; errors are returned whole.
    match json.get("output") {
        Some(out) => (status, out.clone()),
        None => (status, json),
    }
}

/// Processes (pids) whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            if meta.uid() == uid {
                pids.push(pid);
            }
        }
    }
    pids
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

#[test]
fn a_handler_runs_under_its_own_uid_in_its_own_dir_which_is_removed_after() {
    if !require_root() {
        return;
    }
    let b = start("uid", 10100);
    let (status, out) = call(&b, "t.whoami");
    assert_eq!(status, 200, "{out}");
    let uid = out["uid"].as_u64().expect("uid") as u32;
    assert!(
        (b.first..b.first + RANGE).contains(&uid),
        "handler ran as uid {uid}: {out}"
    );
    let cwd = PathBuf::from(out["cwd"].as_str().expect("cwd"));
    assert!(cwd.starts_with(b.dir.join("tmp")), "{}", cwd.display());
    assert_eq!(out["home"].as_str(), out["cwd"].as_str());
    assert!(
        !cwd.exists(),
        "the call's temp dir {} was left behind",
        cwd.display()
    );
    // pack-exec itself: its own uid, no capabilities, no_new_privs, no core dumps.
    let pids: Vec<i32> = processes_of(PACK_EXEC_UID)
        .into_iter()
        .filter(|p| status_field(*p, "PPid").as_deref() == Some(&b.init.id().to_string()))
        .collect();
    assert_eq!(pids.len(), 1, "pack-exec processes: {pids:?}");
    for field in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(
            status_field(pids[0], field).as_deref(),
            Some("0000000000000000"),
            "{field} of pack-exec"
        );
    }
    assert_eq!(status_field(pids[0], "NoNewPrivs").as_deref(), Some("1"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pids[0])).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core line");
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
}

#[test]
fn the_daemons_credentials_are_its_own_and_no_handler_can_read_them() {
    if !require_root() {
        return;
    }
    let b = start("creds", 10110);
    let dir = b.dir.join("credentials/pack-exec");
    let meta = std::fs::metadata(&dir).expect("credentials dir");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (PACK_EXEC_UID, 0o500));
    let token = dir.join("operator-token");
    let meta = std::fs::metadata(&token).expect("token");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (PACK_EXEC_UID, 0o400));
    assert_eq!(
        std::fs::read_to_string(&token).expect("read"),
        "s3cr3t-value-of-the-operator-0123456789\n"
    );
    // The hostile handler tries the copy, the original and the directory listing.
    for target in [token, b.dir.join("secret-token"), dir] {
        let input = serde_json::json!({ "path": target }).to_string();
        let (status, body) = http(b.addr, "POST", "/v1/packs/t.steal", &input).expect("call");
        assert_eq!(status, 200, "{body}");
        let out: serde_json::Value = serde_json::from_str(body.trim()).expect("json");
        assert_eq!(
            out["output"]["read"],
            false,
            "a handler read {}: {out}",
            target.display()
        );
    }
}

#[test]
fn a_timed_out_call_leaves_no_process_of_its_uid() {
    if !require_root() {
        return;
    }
    let b = start("escape", 10120);
    let (status, out) = call(&b, "t.escape");
    assert_eq!(status, 504, "{out}");
    for uid in b.first..b.first + RANGE {
        let left = processes_of(uid);
        assert!(left.is_empty(), "uid {uid} still has processes {left:?}");
    }
    // and the bundle still answers
    assert_eq!(call(&b, "t.whoami").0, 200);
}

#[test]
fn the_spawn_socket_refuses_other_uids() {
    if !require_root() {
        return;
    }
    let b = start("peer", 10130);
    let sock = b.dir.join("spawn.sock");
    let meta = std::fs::metadata(&sock).expect("socket");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (PACK_EXEC_UID, 0o600));
    // root (this test) connects: init must not answer with anything but a hang-up.
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let body = br#"{"call_id":"x","argv":["/bin/true"],"env":{}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let _ = s.write_all(&frame);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "init answered a foreign uid: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn what_a_handler_leaves_in_the_shared_tmp_is_swept_after_the_call() {
    if !require_root() {
        return;
    }
    let b = start("litter", 10140);
    assert_eq!(call(&b, "t.litter").0, 200);
    let left: Vec<String> = std::fs::read_dir(b.dir.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left in the shared tmp: {left:?}");
    // a symlink is removed, never followed: its target (the pack's own file) is still there
    assert!(b.dir.join("packs/t.litter/handler.sh").exists());
}

/// The jail: a handler reaches nothing on the host's network (TCP to a listener on the host's
/// loopback, UDP to a socket that records what arrives), cannot list `/proc`, read another
/// process's files or signal init, cannot read outside its allowed trees — and still reads its
/// own `/proc/self`.
#[test]
fn a_jailed_handler_reaches_no_network_no_process_and_no_file_outside_its_room() {
    if !require_root() {
        return;
    }
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    tcp.set_nonblocking(true).expect("nonblocking");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    udp.set_nonblocking(true).expect("nonblocking");
    let b = start("jail", 10150);
    let input = serde_json::json!({
        "tcp": tcp.local_addr().expect("addr").port(),
        "udp": udp.local_addr().expect("addr").port(),
        "secret": b.dir.join("secret-token"),
    });
    // Twice: the second call enters the namespaces the first one made for the same uid.
    let (status, first) = call_with(&b, "t.net", &input.to_string());
    assert_eq!(status, 200, "{first}");
    let (status, out) = call_with(&b, "t.net", &input.to_string());
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        first, out,
        "the second call in the reused namespaces differs"
    );
    assert!(
        first["netns"]
            .as_str()
            .is_some_and(|n| n.starts_with("net:")),
        "{first}"
    );
    for key in [
        "tcp_host_loopback",
        "udp_sent_to_host",
        "list_proc",
        "read_init_status",
        "signal_init",
        "read_secret",
        "list_tmp",
    ] {
        if key == "udp_sent_to_host" {
            continue; // sending on the jail's own loopback succeeds; what arrived is checked below
        }
        assert_eq!(out[key], "blocked", "{key}: {out}");
    }
    assert_eq!(
        out["own_proc"], "1",
        "the handler cannot read its own /proc/self: {out}"
    );
    assert!(
        tcp.accept().is_err(),
        "a connection from the jail reached the host's loopback"
    );
    let mut buf = [0u8; 64];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a datagram from the jail reached the host's loopback"
    );
    // No proxy configured: no proxy variables either.
    assert_eq!(out["proxy"], "", "{out}");
}

/// init keeps a call's Landlock ruleset for the next call of the same uid and pack: another
/// pack run by that uid gets its own (it cannot read the first pack's files, nor the first
/// its), and a pack directory made anew at the same path is a new directory, given to the
/// next call in place of the old one.
#[test]
fn a_kept_ruleset_serves_one_pack_and_follows_a_pack_dir_made_anew() {
    if !require_root() {
        return;
    }
    let b = start("rulesets", 10170);
    let packs = b.dir.join("packs");
    let other =
        |name: &str| serde_json::json!({ "path": packs.join(name).join("handler.sh") }).to_string();
    // Serial calls: the pool's lowest free uid runs every one of them.
    let (status, out) = call(&b, "t.whoami");
    assert_eq!(status, 200, "{out}");
    let uid = out["uid"].clone();
    for _ in 0..2 {
        let (status, out) = call_with(&b, "t.steal", &other("t.whoami"));
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["read"], false, "t.steal read t.whoami's files: {out}");
        let (status, out) = call(&b, "t.whoami");
        assert_eq!(status, 200, "t.whoami after t.steal on the same uid: {out}");
        assert_eq!(out["uid"], uid, "{out}");
    }
    let (status, out) = call_with(&b, "t.steal", &other("t.steal"));
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["read"], true,
        "t.steal cannot read its own files: {out}"
    );

    // The same pack dir made anew (same path, same files, a new inode).
    let dir = packs.join("t.whoami");
    let fresh = packs.join("t.whoami.new");
    std::fs::create_dir(&fresh).expect("mkdir");
    for f in ["pack.json", "handler.sh"] {
        std::fs::copy(dir.join(f), fresh.join(f)).expect("copy");
    }
    std::fs::remove_dir_all(&dir).expect("remove the old pack dir");
    std::fs::rename(&fresh, &dir).expect("rename");
    let (status, out) = call(&b, "t.whoami");
    assert_eq!(status, 200, "the pack made anew at the same path: {out}");
    assert_eq!(out["uid"], uid, "{out}");
}

/// The one way out: the proxy variables name init's relay, which connects to pipelock's pack
/// listener (here a stand-in) and first says which pack and call the traffic belongs to.
#[test]
fn a_jailed_handlers_proxy_traffic_reaches_pipelock_with_its_pack_and_call() {
    if !require_root() {
        return;
    }
    let pipelock = TcpListener::bind("127.0.0.1:0").expect("pipelock stand-in");
    let addr = pipelock.local_addr().expect("addr");
    let seen = std::thread::spawn(move || {
        let (mut conn, _) = pipelock.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).expect("read");
            assert!(
                n > 0,
                "the relay closed early: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrelayed")
            .expect("answer");
        String::from_utf8_lossy(&got).into_owned()
    });
    let b = start_with("proxy", 10160, Some(addr));
    let (status, out) = call(&b, "t.curl");
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["body"], "relayed", "{out}");
    let seen = seen.join().expect("pipelock stand-in");
    // A second call of the same uid slot: its proxy listener is made again in the reused
    // namespace (nothing listens there between calls).
    let (status, out) = call(&b, "t.curl");
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["body"], "curl-failed",
        "nobody answers the stand-in now: {out}"
    );
    let first = seen.lines().next().unwrap_or("");
    let origin = bottle_spec::pack_proxy::parse(first).expect("a preamble");
    assert_eq!(origin.pack, "t.curl");
    assert!(
        seen.contains("GET http://example.test/hello HTTP/1.1"),
        "curl's proxied request: {seen}"
    );
}
