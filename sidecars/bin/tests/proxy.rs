//! `sidecars pipelock` and `sidecars egress` as real processes: config reload on a real SIGHUP,
//! and no secret in either daemon's logs after a run through the whole chain (curl as agent).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_sidecars");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain-HTTP upstream on 127.0.0.1 that answers every request with its own request head.
fn echo_upstream() -> u16 {
    recording_upstream().0
}

/// [`echo_upstream`], also keeping every request head it saw (what egress sent, before any
/// redaction of the answer).
fn recording_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                record.lock().unwrap().push(head.clone());
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
            });
        }
    });
    (port, seen)
}

struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(daemon: &str, config: &Path, log: PathBuf) -> Proc {
        let child = Command::new(BIN)
            .args([daemon, "--config"])
            .arg(config)
            .env("SIDECARS_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn stop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("daemon on port {port} never became healthy");
}

/// curl through `proxy`; stdout.
fn curl(proxy: u16, url: &str) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--proxy"])
        .arg(format!("http://127.0.0.1:{proxy}"))
        .arg(url)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A CONNECT tunnel through the proxy on `proxy` to `127.0.0.1:port`, its `200` head read.
fn open_tunnel(proxy: u16, port: u16) -> TcpStream {
    let mut tunnel = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    write!(
        tunnel,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tunnel.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    tunnel
}

/// Whether `tunnel` is closed by the other side within 10 s (reads end of stream).
fn closed(tunnel: &mut TcpStream) -> bool {
    tunnel
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    matches!(tunnel.read(&mut buf), Ok(0))
}

#[test]
fn pipelock_reloads_its_allowlist_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let up = echo_upstream();
    let port = free_port();
    let config = dir.path().join("pipelock.json");
    let write = |allow_host: &str| {
        std::fs::write(
            &config,
            json!({
                "listen": format!("127.0.0.1:{port}"),
                "upstream": null,
                "allow": [{"host": allow_host, "ports": [up]}],
                "allow_cidrs": ["127.0.0.0/8", "::1/128"],
            })
            .to_string(),
        )
        .unwrap()
    };
    write("127.0.0.1");
    let p = Proc::start("pipelock", &config, dir.path().join("pipelock.log"));
    wait_healthy(port);
    let by_ip = format!("http://127.0.0.1:{up}/a");
    let by_name = format!("http://localhost:{up}/b");
    assert!(curl(port, &by_ip).starts_with("GET /a HTTP/1.1"));
    assert!(curl(port, &by_name).contains("blocked: host not on allowlist: localhost"));
    // A tunnel open to the destination the next policy drops.
    let mut tunnel = open_tunnel(port, up);

    write("localhost");
    kill(p.pid(), Signal::SIGHUP).unwrap();
    wait_for("the new allowlist", || {
        curl(port, &by_name).starts_with("GET /b HTTP/1.1")
    });
    assert!(
        closed(&mut tunnel),
        "the tunnel to a destination the reloaded policy denies was closed"
    );
    assert!(p
        .log()
        .contains("the reloaded policy denies its destination"));
    assert!(curl(port, &by_ip).contains("blocked: host not on allowlist: 127.0.0.1"));
    assert!(p.log().contains("config reloaded"), "{}", p.log());

    // A bad config is rejected with a log line; the old one stays in force.
    std::fs::write(&config, r#"{"allow": [{"host": "a*b"}]}"#).unwrap();
    kill(p.pid(), Signal::SIGHUP).unwrap();
    wait_for("the rejection log line", || {
        p.log().contains("config reload rejected")
    });
    assert!(p.log().contains("allow[0].host"), "{}", p.log());
    assert!(curl(port, &by_name).starts_with("GET /b HTTP/1.1"));
}

#[test]
fn secrets_never_reach_the_logs_or_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let up = echo_upstream();
    let (pl_port, eg_port) = (free_port(), free_port());
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let token = "route-token-5Hq8Zr2Kx9Lm4Vt7";
    std::fs::write(creds.join("svc"), format!("{token}\n")).unwrap();
    let secret_env = dir.path().join("agent.env");
    let configured = "do-not-leak-4a7b9c2d";
    std::fs::write(&secret_env, format!("API_SECRET={configured}\n")).unwrap();
    let (ca_cert, ca_key) = egress::generate_ca("test bottle").unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca_cert).unwrap();
    std::fs::write(dir.path().join("ca.key"), ca_key).unwrap();
    let eg_config = dir.path().join("egress.json");
    std::fs::write(
        &eg_config,
        json!({
            "listen": format!("127.0.0.1:{eg_port}"),
            "allow_from": ["127.0.0.1/32"],
            "allow_cidrs": ["127.0.0.0/8"],
            "routes": [{"host": "localhost", "headers": {"Authorization": "Bearer ${cred:svc}"}}],
            "credentials_dir": creds,
            "ca_cert": dir.path().join("ca.crt"),
            "ca_key": dir.path().join("ca.key"),
        })
        .to_string(),
    )
    .unwrap();
    let pl_config = dir.path().join("pipelock.json");
    std::fs::write(
        &pl_config,
        json!({
            "listen": format!("127.0.0.1:{pl_port}"),
            "upstream": format!("127.0.0.1:{eg_port}"),
            "allow": [{"host": "localhost", "ports": [up]}],
            "allow_cidrs": ["127.0.0.0/8", "::1/128"],
            "secret_files": [secret_env],
        })
        .to_string(),
    )
    .unwrap();
    let mut egress = Proc::start("egress", &eg_config, dir.path().join("egress.log"));
    wait_healthy(eg_port);
    let mut pipelock = Proc::start("pipelock", &pl_config, dir.path().join("pipelock.log"));
    wait_healthy(pl_port);

    // Injection works and the echoed credential comes back redacted.
    let seen = curl(pl_port, &format!("http://localhost:{up}/echo"));
    assert!(seen.contains("authorization: Bearer [REDACTED]"), "{seen}");
    assert!(!seen.contains(token), "{seen}");
    // DLP refusals name the rule, not the secret.
    let r = curl(
        pl_port,
        &format!("http://localhost:{up}/x?k=AKIAIOSFODNN7EXAMPLE"),
    );
    assert!(
        r.contains("rule aws-access-key") && !r.contains("AKIAIOSFODNN7EXAMPLE"),
        "{r}"
    );
    let r = curl(pl_port, &format!("http://localhost:{up}/{configured}"));
    assert!(
        r.contains("rule configured-secret") && !r.contains(configured),
        "{r}"
    );
    // A secret in the host name itself.
    let r = curl(
        pl_port,
        &format!("http://AKIAIOSFODNN7EXAMPLE.localhost:{up}/"),
    );
    assert!(r.contains("in host"), "{r}");

    pipelock.stop();
    egress.stop();
    for (name, log) in [("pipelock", pipelock.log()), ("egress", egress.log())] {
        assert!(
            log.contains("allowed") || log.contains("ready"),
            "{name}: {log}"
        );
        for secret in [token, configured, "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!log.contains(secret), "{name} logged a secret:\n{log}");
        }
    }
}

/// `sidecars kill-switch on|off --file F --pid P`; its exit code.
fn kill_switch(state: &str, file: &Path, pid: Pid) -> i32 {
    let out = Command::new(BIN)
        .args(["kill-switch", state, "--file"])
        .arg(file)
        .args(["--pid", &pid.as_raw().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kill-switch {state}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().unwrap_or(-1)
}

#[test]
fn the_kill_switch_refuses_everything_closes_tunnels_survives_a_restart_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("kill-switch");
    let upstream = echo_upstream();
    let (pport, eport) = (free_port(), free_port());
    let egress_cfg = dir.path().join("egress.json");
    std::fs::write(
        &egress_cfg,
        json!({"listen": format!("127.0.0.1:{eport}"), "allow_cidrs": ["127.0.0.0/8"],
               "kill_switch_file": switch})
        .to_string(),
    )
    .unwrap();
    let pipelock_cfg = dir.path().join("pipelock.json");
    std::fs::write(
        &pipelock_cfg,
        json!({"listen": format!("127.0.0.1:{pport}"), "upstream": format!("127.0.0.1:{eport}"),
               "allow": [{"host": "127.0.0.1", "ports": [upstream]}],
               "allow_cidrs": ["127.0.0.0/8"], "kill_switch_file": switch})
        .to_string(),
    )
    .unwrap();
    let egress = Proc::start("egress", &egress_cfg, dir.path().join("egress.log"));
    wait_healthy(eport);
    let mut pipelock = Proc::start("pipelock", &pipelock_cfg, dir.path().join("pipelock.log"));
    wait_healthy(pport);
    let url = format!("http://127.0.0.1:{upstream}/x");
    assert!(curl(pport, &url).starts_with("GET "), "the chain works");

    // A blind tunnel, open before the switch.
    let mut tunnel = open_tunnel(pport, upstream);

    // On: both proxies hear it (as init forwards the signal to both).
    kill_switch("on", &switch, pipelock.pid());
    kill_switch("on", &switch, egress.pid());
    assert!(closed(&mut tunnel), "the open tunnel was closed");
    wait_for("pipelock refuses", || {
        curl(pport, &url).contains("blocked: kill switch engaged")
    });
    // egress refuses on its own too (a request that reached it some other way).
    let out = curl(eport, &url);
    assert!(out.contains("blocked: kill switch engaged"), "{out}");

    // A restarted pipelock comes back refusing.
    pipelock.stop();
    let mut pipelock = Proc::start("pipelock", &pipelock_cfg, dir.path().join("pipelock2.log"));
    wait_healthy(pport);
    assert!(curl(pport, &url).contains("blocked: kill switch engaged"));

    // Off: the policy applies again.
    kill_switch("off", &switch, pipelock.pid());
    kill_switch("off", &switch, egress.pid());
    wait_for("the chain works again", || {
        curl(pport, &url).starts_with("GET ")
    });
    assert!(pipelock.log().contains("kill switch engaged at start"));
    assert!(egress.log().contains("kill switch released"));
    pipelock.stop();
}

/// One absolute-form GET on an open connection to the proxy; the response's body.
fn get_on(conn: &mut TcpStream, url: &str) -> String {
    write!(conn, "GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Unbuffered reads: what is left on the connection belongs to the next response.
    let mut reader = conn.try_clone().unwrap();
    let line = |r: &mut TcpStream| {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\r\n") {
            r.read_exact(&mut b).unwrap();
            out.push(b[0]);
        }
        String::from_utf8_lossy(&out).to_string()
    };
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let l = line(&mut reader).to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
        if l == "\r\n" {
            break;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = usize::from_str_radix(line(&mut reader).trim(), 16).unwrap();
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(len, 0);
        reader.read_exact(&mut body).unwrap();
    }
    String::from_utf8_lossy(&body).to_string()
}

#[test]
fn egress_rotates_credentials_on_sighup_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let (old, new) = (
        "rotated-old-value-0123456789",
        "rotated-new-value-9876543210",
    );
    std::fs::write(creds.join("tok"), old).unwrap();
    let (upstream, heads) = recording_upstream();
    let last = || heads.lock().unwrap().last().cloned().unwrap_or_default();
    let (pport, eport) = (free_port(), free_port());
    let egress_cfg = dir.path().join("egress.json");
    let (cert, key) = egress::generate_ca("rotation-test-ca").unwrap();
    let (ca_cert, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    std::fs::write(&ca_cert, cert).unwrap();
    std::fs::write(&ca_key, key).unwrap();
    let config = json!({"listen": format!("127.0.0.1:{eport}"), "allow_cidrs": ["127.0.0.0/8"],
        "routes": [{"host": "127.0.0.1", "headers": {"Authorization": "Bearer ${cred:tok}"}}],
        "credentials_dir": creds, "ca_cert": ca_cert, "ca_key": ca_key});
    std::fs::write(&egress_cfg, config.to_string()).unwrap();
    let pipelock_cfg = dir.path().join("pipelock.json");
    std::fs::write(
        &pipelock_cfg,
        json!({"listen": format!("127.0.0.1:{pport}"), "upstream": format!("127.0.0.1:{eport}"),
               "allow": [{"host": "127.0.0.1", "ports": [upstream]}],
               "allow_cidrs": ["127.0.0.0/8"]})
        .to_string(),
    )
    .unwrap();
    let egress = Proc::start("egress", &egress_cfg, dir.path().join("egress.log"));
    wait_healthy(eport);
    let _pipelock = Proc::start("pipelock", &pipelock_cfg, dir.path().join("pipelock.log"));
    wait_healthy(pport);
    let url = format!("http://127.0.0.1:{upstream}/x");
    // One keep-alive connection of the agent's, open across the reloads.
    let mut conn = TcpStream::connect(("127.0.0.1", pport)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let answer = get_on(&mut conn, &url);
    assert!(last().contains(&format!("Bearer {old}")), "{}", last());
    assert!(!answer.contains(old), "echoed back, yet redacted: {answer}");

    std::fs::write(creds.join("tok"), new).unwrap();
    kill(egress.pid(), Signal::SIGHUP).unwrap();
    wait_for("egress reloaded", || {
        egress.log().contains("config reloaded")
    });
    get_on(&mut conn, &url);
    assert!(
        last().contains(&format!("Bearer {new}")),
        "the next request on the same connection carries the new value: {}\negress log:\n{}",
        last(),
        egress.log()
    );

    // A broken config (a credential file gone) is refused; the running state stays.
    std::fs::remove_file(creds.join("tok")).unwrap();
    kill(egress.pid(), Signal::SIGHUP).unwrap();
    wait_for("the bad reload is refused", || {
        egress.log().contains("config reload rejected")
    });
    get_on(&mut conn, &url);
    assert!(last().contains(&format!("Bearer {new}")), "{}", last());
    let log = egress.log();
    assert!(
        !log.contains(old) && !log.contains(new),
        "a credential value reached egress's log"
    );
}

/// `git ARGS` in `dir` with `env`; panics with its output unless it succeeds.
fn git_ok(dir: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "protocol.version=2",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "git {args:?}: {text}");
    text
}

#[test]
fn git_over_https_through_the_intercepting_chain_gets_the_credential_it_never_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A private root and a leaf for localhost, for the HTTPS git upstream.
    let p = |f: &str| d.join(f).display().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=git root",
        "-keyout",
        &p("up-ca.key"),
        "-out",
        &p("up-ca.crt"),
    ]);
    std::fs::write(d.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("up.key"),
        "-out",
        &p("up.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("up.csr"),
        "-CA",
        &p("up-ca.crt"),
        "-CAkey",
        &p("up-ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("up.crt"),
    ]);
    // The upstream repository, with one commit.
    let root = d.join("git-root");
    std::fs::create_dir_all(&root).unwrap();
    git_ok(
        d,
        &["init", "-q", "--bare", "-b", "main", &p("git-root/app.git")],
        &[],
    );
    git_ok(d, &["clone", "-q", &p("git-root/app.git"), &p("seed")], &[]);
    std::fs::write(d.join("seed/README"), "hello\n").unwrap();
    git_ok(&d.join("seed"), &["add", "README"], &[]);
    git_ok(&d.join("seed"), &["commit", "-qm", "first"], &[]);
    git_ok(&d.join("seed"), &["push", "-q", "origin", "HEAD:main"], &[]);
    let userpass = "gitbot:s3cr3t-git-pass-Qm81";
    let port_file = d.join("port");
    let log = d.join("requests.log");
    let mut upstream = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/git_http_upstream.py"
        ))
        .args([root.to_str().unwrap(), userpass])
        .args([&port_file, &log])
        .env(
            "GIT_UPSTREAM_TLS",
            format!("{}:{}", p("up.crt"), p("up.key")),
        )
        .spawn()
        .unwrap();
    wait_for("the HTTPS git upstream", || port_file.exists());
    let port: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // The chain: egress decrypts (intercept_all) and adds the Basic credential for localhost.
    let creds = d.join("creds");
    std::fs::create_dir(&creds).unwrap();
    let basic = {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        out.stdin
            .as_ref()
            .unwrap()
            .write_all(userpass.as_bytes())
            .unwrap();
        String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
    };
    std::fs::write(creds.join("git"), &basic).unwrap();
    let (cert, key) = egress::generate_ca("git-https-test").unwrap();
    std::fs::write(d.join("bottle.crt"), cert).unwrap();
    std::fs::write(d.join("bottle.key"), key).unwrap();
    let (pport, eport) = (free_port(), free_port());
    std::fs::write(
        d.join("egress.json"),
        json!({"listen": format!("127.0.0.1:{eport}"), "allow_cidrs": ["127.0.0.0/8"],
               "intercept_all": true, "ca_cert": d.join("bottle.crt"), "ca_key": d.join("bottle.key"),
               "extra_roots": [d.join("up-ca.crt")], "credentials_dir": creds,
               "routes": [{"host": "localhost", "headers": {"Authorization": "Basic ${cred:git}"}}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        d.join("pipelock.json"),
        json!({"listen": format!("127.0.0.1:{pport}"), "upstream": format!("127.0.0.1:{eport}"),
               "allow": [{"host": "localhost", "ports": [port]}], "allow_cidrs": ["127.0.0.0/8"]})
        .to_string(),
    )
    .unwrap();
    let egress = Proc::start("egress", &d.join("egress.json"), d.join("egress.log"));
    wait_healthy(eport);
    let pipelock = Proc::start("pipelock", &d.join("pipelock.json"), d.join("pipelock.log"));
    wait_healthy(pport);

    // git with only HTTPS_PROXY and the bottle CA: clone, commit, push.
    let env = [
        ("HTTPS_PROXY", format!("http://127.0.0.1:{pport}")),
        ("GIT_SSL_CAINFO", p("bottle.crt")),
    ];
    let url = format!("https://localhost:{port}/app.git");
    git_ok(d, &["clone", "-q", &url, &p("work")], &env);
    assert_eq!(
        std::fs::read_to_string(d.join("work/README")).unwrap(),
        "hello\n"
    );
    std::fs::write(d.join("work/CHANGES"), "second\n").unwrap();
    git_ok(&d.join("work"), &["add", "CHANGES"], &env);
    git_ok(&d.join("work"), &["commit", "-qm", "second"], &env);
    git_ok(
        &d.join("work"),
        &["push", "-q", "origin", "HEAD:main"],
        &env,
    );
    let head = git_ok(
        d,
        &[
            "--git-dir",
            &p("git-root/app.git"),
            "log",
            "--format=%s",
            "main",
        ],
        &[],
    );
    assert_eq!(head, "second\nfirst\n");
    let requests = std::fs::read_to_string(&log).unwrap();
    assert!(
        !requests.contains("401"),
        "every request carried the credential: {requests}"
    );
    assert!(
        requests.contains("200 POST /app.git/git-receive-pack"),
        "{requests}"
    );
    for log in [egress.log(), pipelock.log()] {
        assert!(
            !log.contains(userpass) && !log.contains(basic.trim()),
            "a log holds the credential"
        );
    }
    let _ = upstream.kill();
    let _ = upstream.wait();
}
