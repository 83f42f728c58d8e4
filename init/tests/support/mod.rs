//! Test fixtures: run the real `sidecar-init` binary (as PID 1 of a new PID namespace, or as a
//! plain subreaper) in a temp dir, capture its output, signal it, and never hang: every wait
//! has a deadline, and a test that overruns kills the whole process tree.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sidecar-init")
}

/// Interpreter used by the fixture daemons that need to listen on TCP.
pub const PYTHON: &str = "/usr/bin/python3";

/// How init is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`).
    Pid1,
    /// A plain child of the test that makes itself a subreaper.
    Subreaper,
}

/// A per-test directory with a config and helper files.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    pub fn config(&self, json: serde_json::Value) -> PathBuf {
        self.write("init.json", &json.to_string())
    }
    pub fn socket(&self) -> PathBuf {
        self.path("init.sock")
    }
}

/// Captured output of a stream, shared with its reader thread.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
    fn spawn_reader(&self, mut r: impl Read + Send + 'static) -> thread::JoinHandle<()> {
        let buf = self.0.clone();
        thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.lock().expect("lock").extend_from_slice(&chunk[..n]),
                }
            }
        })
    }
}

/// A running init under test. Dropping it kills whatever is left.
pub struct Init {
    child: Child,
    pub mode: Mode,
    pub out: Captured,
    pub err: Captured,
    readers: Vec<thread::JoinHandle<()>>,
    pub started: Instant,
}

/// Result of a finished init.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub out: Vec<u8>,
    pub err: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn out_text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

/// The environment every test init gets: nothing from the test runner except PATH.
fn base_command(mode: Mode, args: &[&str]) -> Command {
    let mut cmd = ungrouped_command(mode, args);
    // Own process group, so a timeout can kill the whole tree.
    cmd.process_group(0);
    cmd
}

/// [`base_command`] still in the test's process group (for a caller that makes a session).
fn ungrouped_command(mode: Mode, args: &[&str]) -> Command {
    let mut cmd = match mode {
        Mode::Pid1 => {
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
            c.arg(bin());
            c
        }
        Mode::Subreaper => Command::new(bin()),
    };
    cmd.args(args);
    cmd.env_clear();
    cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    cmd.stdin(Stdio::null());
    cmd.stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    cmd
}

impl Init {
    /// Starts `sidecar-init ARGS` with extra environment `env`.
    pub fn start(mode: Mode, args: &[&str], env: &[(&str, &str)]) -> Init {
        Init::start_with(mode, args, env, |_| {})
    }

    /// [`Init::start`] with `prepare` changing the command first (stdin, a `pre_exec` hook).
    pub fn start_with(
        mode: Mode,
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Init {
        let mut cmd = base_command(mode, args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        prepare(&mut cmd);
        Init::spawn(mode, cmd)
    }

    /// Starts `sidecar-init ARGS` in a session of its own whose controlling terminal is `tty`
    /// (also its stdin).
    pub fn start_on_terminal(mode: Mode, args: &[&str], tty: std::fs::File) -> Init {
        use std::os::unix::process::CommandExt;
        let mut cmd = ungrouped_command(mode, args);
        cmd.stdin(tty);
        // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe syscalls; the session
        // (also a process group) lets a timeout kill the whole tree.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Init::spawn(mode, cmd)
    }

    fn spawn(mode: Mode, mut cmd: Command) -> Init {
        let mut child = cmd.spawn().expect("spawn sidecar-init");
        let out = Captured::default();
        let err = Captured::default();
        let readers = vec![
            out.spawn_reader(child.stdout.take().expect("stdout")),
            err.spawn_reader(child.stderr.take().expect("stderr")),
        ];
        Init {
            child,
            mode,
            out,
            err,
            readers,
            started: Instant::now(),
        }
    }

    /// Supervises `config` with the control socket in `dir`.
    pub fn supervise(mode: Mode, dir: &Dir, env: &[(&str, &str)]) -> Init {
        let config = dir.path("init.json");
        let socket = dir.socket();
        let args = [
            "--config",
            config.to_str().expect("utf8"),
            "--socket",
            socket.to_str().expect("utf8"),
        ];
        Init::start(mode, &args, env)
    }

    /// Pid of init itself as seen from the test (inside the namespace it is PID 1).
    pub fn init_pid(&self) -> i32 {
        let outer = self.child.id() as i32;
        match self.mode {
            Mode::Subreaper => outer,
            Mode::Pid1 => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    if let Some(p) = children_of(outer).first() {
                        return *p;
                    }
                    assert!(Instant::now() < deadline, "unshare never forked init");
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Sends `sig` to init itself.
    pub fn signal(&self, sig: i32) {
        let pid = self.init_pid();
        kill(pid, sig);
    }

    /// Waits until init's stderr+stdout satisfy `pred`, or panics with the output so far.
    pub fn wait_output(&self, what: &str, timeout: Duration, pred: impl Fn(&str, &str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let (o, e) = (self.out.text(), self.err.text());
            if pred(&o, &e) {
                return;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n--- stdout ---\n{o}\n--- stderr ---\n{e}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `needle` on stdout or stderr.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        self.wait_output(needle, timeout, |o, e| {
            o.contains(needle) || e.contains(needle)
        });
    }

    /// Waits for init to exit within `timeout`; on timeout kills the tree and panics.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill_tree();
                    panic!(
                        "sidecar-init did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        self.out.text(),
                        self.err.text()
                    );
                }
            }
        };
        let elapsed = self.started.elapsed();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        use std::os::unix::process::ExitStatusExt;
        Finished {
            code: status.code().or(status.signal().map(|s| 128 + s)),
            out: self.out.bytes(),
            err: self.err.text(),
            elapsed,
        }
    }

    fn kill_tree(&mut self) {
        let pid = self.child.id() as i32;
        // Init's daemons live in their own sessions: kill descendants first, then the group.
        for p in descendants(pid) {
            kill(p, 9);
        }
        kill(-pid, 9);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_tree();
        }
    }
}

/// Runs a short-lived `sidecar-init ARGS` (check-config, health, status, single mode) with a
/// hard timeout.
pub fn run(mode: Mode, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Finished {
    Init::start(mode, args, env).finish(timeout)
}

/// `kill(pid, sig)`, ignoring errors.
pub fn kill(pid: i32, sig: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// Direct children of `pid` (from /proc).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// All descendants of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, ...), if it exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = s.rfind(')')?;
    s[after + 2..].chars().next()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// argv for a daemon that sleeps `delay_s` then serves HTTP 200 on `/health` at `port`.
pub fn http_daemon(port: u16, delay_s: f64) -> serde_json::Value {
    let script = format!(
        r#"
import http.server, time, sys
time.sleep({delay_s})
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", {port}), H)
print("listening on", {port}, flush=True)
s.serve_forever()
"#
    );
    serde_json::json!([PYTHON, "-c", script])
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// `sidecar-init status --json` against `dir`'s socket, parsed.
pub fn status_json(dir: &Dir) -> Option<serde_json::Value> {
    let sock = dir.socket();
    let f = run(
        Mode::Subreaper,
        &["status", "--json", "--socket", sock.to_str()?],
        &[],
        Duration::from_secs(10),
    );
    if f.code != Some(0) {
        return None;
    }
    serde_json::from_slice(&f.out).ok()
}

/// State of daemon `name` from `status --json`.
pub fn daemon_state(dir: &Dir, name: &str) -> Option<String> {
    let v = status_json(dir)?;
    v.as_array()?
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["state"].as_str().map(String::from))
}

/// Path as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}
