//! Test support for the end-to-end suite: real Docker, real images, the real `control-plane`.
//!
//! # Layout
//! | item | job |
//! | --- | --- |
//! | [`require_docker`] | skip outside CI when Docker is missing; fail inside CI |
//! | [`run`] / [`Cmd`] | run a command with a hard timeout, capturing output |
//! | [`control_plane`] | the static `control-plane` binary built by `scripts/images.sh` |
//! | [`Bottle`] | a bottle brought up for one test and always taken down on drop |
//! | [`wait_until`] | poll a condition with a deadline (never a fixed sleep as synchronisation) |
//! | [`HostServer`], [`WorldContainer`], [`start_git_world`] | the "world" a bottle talks to |
//! | [`root_credential`] | a credential file kept as an operator keeps it (`root:root 0400`) |
#![deny(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

/// The workspace root (tests run with the crate dir as cwd).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// True when Docker is usable. Outside CI a missing Docker skips the test (returns false, with a
/// note); with `CI` set it panics, because CI must run these tests.
pub fn require_docker() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("Docker is not reachable and CI is set: end-to-end tests must run in CI");
    }
    eprintln!("note: Docker is not reachable; skipping this end-to-end test (it fails under CI)");
    false
}

/// The result of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 if killed by a signal or by the timeout).
    pub code: i32,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl Output {
    /// Panic with the command's output unless it succeeded.
    pub fn ok(self, what: &str) -> Output {
        assert_eq!(
            self.code, 0,
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// A command to run with a hard timeout.
pub struct Cmd {
    cmd: Command,
    timeout: Duration,
    stdin: Option<Vec<u8>>,
}

/// Start building a command.
pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Cmd {
    Cmd {
        cmd: Command::new(program),
        timeout: Duration::from_secs(120),
        stdin: None,
    }
}

impl Cmd {
    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }
    /// Run in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }
    /// Set an environment variable.
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }
    /// Feed bytes on stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
    /// Kill the command after `t`.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Run to completion (or the timeout) and capture output.
    pub fn run(mut self) -> Output {
        let desc = format!("{:?}", self.cmd);
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        if let Some(bytes) = self.stdin.take() {
            if let Some(mut stdin) = child.stdin.take() {
                std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = stdin.write_all(&bytes);
                });
            }
        }
        let mut out = child.stdout.take().expect("stdout piped");
        let mut err = child.stderr.take().expect("stderr piped");
        let out_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let status = match child.wait_timeout(self.timeout) {
            Ok(Some(status)) => status,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{desc} did not finish within {:?}", self.timeout);
            }
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned(),
        }
    }
}

/// Run `program args…` with the default timeout.
pub fn run<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Output {
    cmd(program).args(args).run()
}

/// Path of the static `control-plane` binary (`E2E_CONTROL_PLANE` overrides; `scripts/images.sh`
/// builds the default into the workspace's target dir). Panics with what to run if it's missing.
pub fn control_plane() -> PathBuf {
    let p = control_plane_path();
    assert!(
        p.exists(),
        "{} is missing: run scripts/images.sh first (make images), or set E2E_CONTROL_PLANE",
        p.display()
    );
    p
}

fn control_plane_path() -> PathBuf {
    if let Some(p) = std::env::var_os("E2E_CONTROL_PLANE") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("x86_64-unknown-linux-musl/release/control-plane")
}

/// Poll `cond` every 100 ms until it returns true or `deadline` passes (then panic with `what`).
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// A bottle brought up by the real `control-plane` for one test, with its own state directory.
/// Dropping it runs `control-plane down` (also when the test panics), so no test leaves
/// containers, networks or volumes behind.
pub struct Bottle {
    /// The bottle's slug (unique per test).
    pub slug: String,
    /// Compose project name (`bot-bottle-<slug>`).
    pub project: String,
    /// The control plane's state directory for this test.
    pub state: tempfile::TempDir,
    /// The manifest file written for this test.
    pub manifest: PathBuf,
    /// The `up --json` report.
    pub report: serde_json::Value,
}

impl Bottle {
    /// Write `manifest_toml` (with `{slug}` and `{packs}` substituted) and bring it up.
    pub fn up(test: &str, manifest_toml: &str) -> Bottle {
        let slug = format!("e2e-{test}-{}", std::process::id() % 100_000);
        let state = tempfile::tempdir().expect("state dir");
        let packs = workspace_root().join("packs");
        let text = manifest_toml
            .replace("{slug}", &slug)
            .replace("{packs}", &packs.display().to_string());
        let manifest = state.path().join("bottle.toml");
        std::fs::write(&manifest, text).expect("write manifest");
        let mut bottle = Bottle {
            project: format!("bot-bottle-{slug}"),
            slug,
            state,
            manifest,
            report: serde_json::Value::Null,
        };
        // Clean up leftovers of an earlier, killed run of the same test.
        let _ = bottle.cp(&["down", &bottle.slug]);
        let out = bottle.cp(&["up", &bottle.manifest.display().to_string(), "--json"]);
        assert_eq!(
            out.code, 0,
            "control-plane up failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        bottle.report = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("up --json printed no JSON ({e}): {}", out.stdout));
        bottle
    }

    /// Run the control plane with this bottle's state directory.
    pub fn cp(&self, args: &[&str]) -> Output {
        cmd(control_plane())
            .args(args)
            .env("BOT_BOTTLE_STATE_DIR", self.state.path())
            .timeout(Duration::from_secs(180))
            .run()
    }

    /// Name of the sidecars container.
    pub fn sidecars(&self) -> String {
        format!("bot-bottle-sidecars-{}", self.slug)
    }

    /// Name of the bottle's egress network (where the sidecars reach the world; the test's
    /// own servers join it to be reachable by name).
    pub fn egress_network(&self) -> String {
        run(
            "docker",
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                &self.sidecars(),
            ],
        )
        .stdout
        .split_whitespace()
        .find(|n| n.ends_with("-egress"))
        .expect("the sidecars container is on the egress network")
        .to_string()
    }

    /// Name of the agent container.
    pub fn agent(&self) -> String {
        format!("bot-bottle-agent-{}", self.slug)
    }

    /// `docker exec CONTAINER args…`.
    pub fn exec(&self, container: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", container];
        all.extend_from_slice(args);
        cmd("docker")
            .args(all)
            .timeout(Duration::from_secs(60))
            .run()
    }

    /// `sidecar-init status --json` inside the bundle, parsed.
    pub fn init_status(&self) -> serde_json::Value {
        let out = self.exec(&self.sidecars(), &["/sidecar-init", "status", "--json"]);
        serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The status entry of one daemon.
    pub fn daemon_status(&self, daemon: &str) -> serde_json::Value {
        let status = self.init_status();
        let list = status
            .get("daemons")
            .cloned()
            .unwrap_or_else(|| status.clone());
        list.as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == daemon).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `docker inspect -f FORMAT CONTAINER`, trimmed.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        run("docker", &["inspect", "-f", format, container])
            .stdout
            .trim()
            .to_string()
    }

    /// Docker objects still labelled with this bottle's compose project.
    pub fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.project);
        let mut left = Vec::new();
        for (kind, args) in [
            ("container", vec!["ps", "-aq", "--filter", &label]),
            ("network", vec!["network", "ls", "-q", "--filter", &label]),
            ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ] {
            for id in run("docker", &args).stdout.lines() {
                left.push(format!("{kind} {id}"));
            }
        }
        left
    }
}

impl Drop for Bottle {
    fn drop(&mut self) {
        // Never panic here (a panic during unwinding aborts the test binary): best effort.
        let _ = Command::new(control_plane_path())
            .args(["down", &self.slug])
            .env("BOT_BOTTLE_STATE_DIR", self.state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The host's address on docker0: reachable from bridge networks (the bottle's egress side),
/// and exactly what the host guard must keep the agent away from.
pub fn docker0_ip() -> String {
    let out = run("ip", &["-4", "-o", "addr", "show", "docker0"]).stdout;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .expect("docker0 has an IPv4 address")
}

/// What [`http_world`] serves.
#[derive(Debug, Default, Clone, Copy)]
pub struct World<'a> {
    /// The port on 0.0.0.0 (0: any free one).
    pub port: u16,
    /// A file each request's headers are appended to (one JSON object per line).
    pub headers_log: Option<&'a Path>,
    /// A certificate and key to serve HTTPS with.
    pub tls: Option<(&'a Path, &'a Path)>,
}

/// The body every GET of an [`http_world`] gets.
pub const WORLD_BODY: &str = "hello from the world";

/// A host HTTP(S) server on 0.0.0.0 answering every GET with [`WORLD_BODY`]: an upstream of
/// the outside world that bottles reach through docker0. Returns it and its port.
pub fn http_world(world: World) -> (HostServer, u16) {
    use std::io::BufRead;
    let script = r#"
import http.server, json, ssl, sys
port, log, cert, key = sys.argv[1:5]
log = open(log, "a", buffering=1) if log else None
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if log:
            log.write(json.dumps(dict(self.headers)) + "\n")
        body = sys.argv[5].encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", int(port)), H)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let path = |p: Option<&Path>| p.map(|p| p.as_os_str().to_owned()).unwrap_or_default();
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(world.port.to_string())
        .arg(path(world.headers_log))
        .arg(path(world.tls.map(|t| t.0)))
        .arg(path(world.tls.map(|t| t.1)))
        .arg(WORLD_BODY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the python3 world server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the world server's port");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the world server did not start: {line:?}"));
    (HostServer(child), port)
}

/// A host process killed on drop.
pub struct HostServer(pub std::process::Child);

impl Drop for HostServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A container removed on drop.
pub struct WorldContainer(pub String);

impl Drop for WorldContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Writes `value` (plus a newline) to `dir/name` as `root:root 0400`: the secure default an
/// operator uses, and the only kind `control-plane up` accepts.
pub fn root_credential(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("write credential");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    // Tests run as root (CI does); elsewhere the control plane will refuse the owner, loudly.
    let _ = Command::new("chown").arg("0:0").arg(&path).status();
    path
}

/// A bare upstream repository `dir/upstream.git` with one commit (`README.md` = "hello"),
/// served by `git daemon` on 0.0.0.0 (receive-pack enabled). Returns the server and its port.
pub fn start_git_world(dir: &Path) -> (HostServer, u16) {
    let git = |args: &[&str]| {
        let out = run("git", args);
        assert_eq!(out.code, 0, "git {args:?}: {}", out.stderr);
    };
    let seed = dir.join("seed");
    let upstream = dir.join("upstream.git");
    git(&["init", "-q", "-b", "main", &seed.display().to_string()]);
    std::fs::write(seed.join("README.md"), "hello\n").expect("write");
    let s = seed.display().to_string();
    git(&["-C", &s, "add", "."]);
    git(&[
        "-C",
        &s,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@e",
        "commit",
        "-qm",
        "seed",
    ]);
    git(&["clone", "-q", "--bare", &s, &upstream.display().to_string()]);
    // Pick a free port, then hand it to git daemon.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            "--listen=0.0.0.0",
            &format!("--port={port}"),
            &format!("--base-path={}", dir.display()),
            &dir.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start git daemon");
    wait_until("git daemon listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (HostServer(child), port)
}

/// A certificate for `san` (`DNS:name` or `IP:addr`) signed by the CA `ca_crt`/`ca_key`, made
/// with openssl in `dir`: (leaf.crt, leaf.key).
pub fn sign_leaf(ca_crt: &Path, ca_key: &Path, san: &str, dir: &Path) -> (PathBuf, PathBuf) {
    let (key, csr, crt, ext) = (
        dir.join("leaf.key"),
        dir.join("leaf.csr"),
        dir.join("leaf.crt"),
        dir.join("leaf-ext.cnf"),
    );
    std::fs::write(&ext, format!("subjectAltName={san}\n")).expect("ext");
    let s = |p: &Path| p.display().to_string();
    let openssl = |args: &[&str]| run("openssl", args).ok("openssl");
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=leaf",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(ca_crt),
        "-CAkey",
        &s(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&crt),
    ]);
    (crt, key)
}

/// A self-signed CA named `cn`, made with openssl in `dir`: (ca.crt, ca.key).
pub fn make_ca(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &key.display().to_string(),
            "-out",
            &crt.display().to_string(),
        ],
    )
    .ok("openssl");
    (crt, key)
}
