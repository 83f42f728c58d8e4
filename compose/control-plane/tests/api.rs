//! The HTTP API (`control-plane serve`) over an in-memory runtime: every endpoint, auth, the
//! error answers the API promises (400 naming fields, 401, 404, 405, 409, 413, 503), pack
//! calls, installs and deletes relayed unchanged (installs and deletes through pack-exec's
//! operator listener with the bottle's operator token), credential files checked before
//! anything starts, the agent network's subnet chosen around taken ones, and that no token
//! appears in a log line. Docker is not
//! needed: the fake runtime records what the controller asks for. The same server against
//! real Docker is tested in tests/e2e/tests/api.rs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bottle_compose::model::Project;
use bottle_spec::Daemon;
use bottle_spec::Subnet;
use bytes::Bytes;
use control_plane::api::{DownReport, PublishedPort, ServiceStatus};
use control_plane::approvals::SIDECARS_BINARY;
use control_plane::core::{Controller, Settings};
use control_plane::runtime::{
    ExecOutput, ExecStream, LogLine, LogOptions, Runtime, RuntimeError, Stream as LogStream,
};
use control_plane::server::auth::Token;
use control_plane::server::{serve_on, ServeConfig};
use control_plane::source::Source;
use control_plane::state::StateDir;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sidecars_common::shutdown::{Shutdown, ShutdownTrigger};
use tokio::sync::mpsc;

const TOKEN: &str = "test-token-0123456789abcdef";

/// What the fake knows about one project.
#[derive(Default)]
struct FakeState {
    projects: BTreeMap<String, Vec<ServiceStatus>>,
    /// Where "pack-exec" of every project listens (a test HTTP server).
    pack_exec: Option<SocketAddr>,
    /// Answer every call with "Docker is unreachable".
    unreachable: bool,
    /// `up` calls seen.
    ups: usize,
    /// The one approval request once decided (JSON).
    approval: Option<String>,
    /// Where the relay reaches pack-exec's operator listener of every project.
    pack_operator: Option<SocketAddr>,
    /// Docker networks that exist: (compose project, subnet).
    networks: Vec<(String, Subnet)>,
    /// Every exec: (argv, user).
    execs: Vec<(Vec<String>, Option<String>)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);

impl Fake {
    fn check(&self) -> Result<(), RuntimeError> {
        if self.0.lock().unwrap().unreachable {
            return Err(RuntimeError::Unreachable(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Runtime for Fake {
    async fn describe(&self) -> Result<String, RuntimeError> {
        Ok("fake".into())
    }

    async fn up(&self, project: &Project, dir: &Path, _: Duration) -> Result<(), RuntimeError> {
        self.check()?;
        assert!(
            dir.join("compose.yaml").is_file(),
            "compose.yaml written first"
        );
        // Slow enough that two concurrent creates overlap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut st = self.0.lock().unwrap();
        st.ups += 1;
        // The operator listener is not published (the relay reaches it).
        let ports: Vec<PublishedPort> = [(9000, st.pack_exec)]
            .into_iter()
            .filter_map(|(container_port, host)| {
                Some(PublishedPort {
                    container_port,
                    host: host?,
                })
            })
            .collect();
        let services = project
            .services
            .iter()
            .map(|(name, svc)| ServiceStatus {
                service: name.clone(),
                container: svc.container_name.clone(),
                state: "running".into(),
                health: (name == "sidecars").then(|| "healthy".to_string()),
                exit_code: None,
                ports: if name == "sidecars" {
                    ports.clone()
                } else {
                    vec![]
                },
            })
            .collect();
        st.projects.insert(project.name.clone(), services);
        Ok(())
    }

    async fn bottles(&self) -> Result<Vec<control_plane::runtime::FoundBottle>, RuntimeError> {
        self.check()?;
        Ok(self
            .0
            .lock()
            .unwrap()
            .projects
            .iter()
            .map(|(p, services)| control_plane::runtime::FoundBottle {
                project: p.clone(),
                slug: p.trim_start_matches("bot-bottle-").to_string(),
                services: services.clone(),
            })
            .collect())
    }

    async fn down(&self, project: &str, _: Option<&Path>) -> Result<DownReport, RuntimeError> {
        self.check()?;
        let removed = self.0.lock().unwrap().projects.remove(project);
        Ok(DownReport {
            containers: removed.map(|s| s.len()).unwrap_or(0),
            ..DownReport::default()
        })
    }

    async fn containers(&self, project: &str) -> Result<Vec<ServiceStatus>, RuntimeError> {
        self.check()?;
        Ok(self
            .0
            .lock()
            .unwrap()
            .projects
            .get(project)
            .cloned()
            .unwrap_or_default())
    }

    async fn logs(
        &self,
        _: &str,
        _: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        self.check()?;
        let lines = [
            "init | starting pack-exec",
            "pack-exec | listening on 0.0.0.0:9000",
            "pipelock | not this one",
            "pack-exec | ran cmd.upper",
        ];
        let skip = options
            .tail
            .map(|n| lines.len().saturating_sub(n as usize))
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(8);
        for l in &lines[skip..] {
            tx.send(LogLine {
                stream: LogStream::Stdout,
                line: l.as_bytes().to_vec(),
            })
            .await
            .unwrap();
        }
        if options.follow {
            // Keep the stream open like `docker logs -f`.
            tokio::spawn(async move {
                tx.closed().await;
            });
        }
        Ok(rx)
    }

    async fn exec(
        &self,
        _: &str,
        _: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError> {
        self.check()?;
        self.0
            .lock()
            .unwrap()
            .execs
            .push((argv.to_vec(), user.map(String::from)));
        if argv.get(1).map(String::as_str) == Some("supervise-ctl") {
            return Ok(self.supervise_ctl(&argv[4..]));
        }
        if argv == ["/sidecar-init", "reload"] {
            assert_eq!(user, Some("0:0"), "reload runs as root (init's tool)");
            return Ok(ExecOutput {
                code: 0,
                stdout: vec![],
                stderr: vec![],
            });
        }
        assert_eq!(argv, ["/sidecar-init", "status", "--json"]);
        assert_eq!(
            user, None,
            "sidecar-init status runs as the container's user"
        );
        Ok(ExecOutput {
            code: 0,
            stdout: br#"[{"name":"pack-exec","state":"running","ready":true}]"#.to_vec(),
            stderr: vec![],
        })
    }

    /// The relay, as the sidecars image runs it: a connection to the fake pack-exec's agent
    /// or operator listener, chosen by the relay's argv.
    async fn exec_stream(
        &self,
        _: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecStream, RuntimeError> {
        self.check()?;
        assert_eq!(service, "sidecars");
        let addr = {
            let mut st = self.0.lock().unwrap();
            st.execs.push((argv.to_vec(), user.map(String::from)));
            match argv {
                [bin, relay] if bin == SIDECARS_BINARY && relay == "pack-exec-relay" => {
                    st.pack_exec
                }
                [bin, relay, flag]
                    if bin == SIDECARS_BINARY
                        && relay == "pack-exec-relay"
                        && flag == "--operator" =>
                {
                    st.pack_operator
                }
                other => panic!("unexpected exec_stream {other:?}"),
            }
        };
        assert_eq!(
            user,
            Some(Daemon::PackExec.user().as_str()),
            "the relay runs as pack-exec"
        );
        let addr = addr.expect("the test started a fake pack-exec");
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(Box::pin(stream))
    }

    async fn network_subnets(&self, project: &str) -> Result<Vec<Subnet>, RuntimeError> {
        self.check()?;
        Ok(self.taken(project))
    }
}

impl Fake {
    /// The subnets the fake's networks hold, except `project`'s own.
    fn taken(&self, project: &str) -> Vec<Subnet> {
        self.0
            .lock()
            .unwrap()
            .networks
            .iter()
            .filter(|(p, _)| p != project)
            .map(|(_, s)| *s)
            .collect()
    }

    /// A stand-in for `sidecars supervise-ctl` over one pending request `1-ab` (`argv` is what
    /// follows `--queue-dir DIR`).
    fn supervise_ctl(&self, argv: &[String]) -> ExecOutput {
        let mut st = self.0.lock().unwrap();
        let approval = |status: &str, note: &str| {
            format!(
                r#"{{"id":"1-ab","status":"{status}","kind":"deploy","summary":"ship it","details":{{}},"created_at":"2026-11-23T00:00:00Z","note":{note},"decided_at":null,"decided_by":null}}"#
            )
        };
        let ok = |out: String| ExecOutput {
            code: 0,
            stdout: out.into_bytes(),
            stderr: vec![],
        };
        let fail = |msg: &str| ExecOutput {
            code: 1,
            stdout: vec![],
            stderr: format!("supervise-ctl: {msg}\n").into_bytes(),
        };
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["list", "--json", ..] => ok(format!(
                "[{}]",
                st.approval
                    .clone()
                    .unwrap_or_else(|| approval("pending", "null"))
            )),
            ["show", "1-ab"] => ok(st
                .approval
                .clone()
                .unwrap_or_else(|| approval("pending", "null"))),
            ["approve", "1-ab", rest @ ..] => {
                if st.approval.is_some() {
                    return fail("approval 1-ab was already approved");
                }
                let note = match rest {
                    ["--note", n] => format!("\"{n}\""),
                    _ => "null".to_string(),
                };
                st.approval = Some(approval("approved", &note));
                ok(String::new())
            }
            [_, id, ..] => fail(&format!("no approval request with id {id}")),
            _ => fail("usage"),
        }
    }
}

struct Server {
    addr: SocketAddr,
    fake: Fake,
    ctl: Arc<Controller<Fake>>,
    _trigger: ShutdownTrigger,
    _state: tempfile::TempDir,
}

impl Server {
    /// A bottle's project directory.
    fn dir(&self, slug: &str) -> std::path::PathBuf {
        self._state.path().join("bottles").join(slug)
    }

    /// The agent-network subnet in a bottle's state record.
    fn subnet(&self, slug: &str) -> Option<Subnet> {
        let text = std::fs::read_to_string(self.dir(slug).join("bottle.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        Some(Subnet::parse(v["subnet"].as_str()?).unwrap())
    }
}

async fn start(token: Option<&str>, max_body: usize) -> Server {
    start_with(token, max_body, Settings::default()).await
}

async fn start_with(token: Option<&str>, max_body: usize, settings: Settings) -> Server {
    let state = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let settings = Settings {
        host_guard: control_plane::host_guard::Mode::Off,
        up_timeout: Duration::from_secs(5),
        ..settings
    };
    let ctl = Arc::new(Controller::new(
        fake.clone(),
        StateDir::new(state.path()),
        settings,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown): (ShutdownTrigger, Shutdown) = Shutdown::new();
    let cfg = ServeConfig {
        listen: addr,
        token: token.map(|t| Token::new("test", t).unwrap()),
        max_body_bytes: max_body,
    };
    tokio::spawn(serve_on(listener, ctl.clone(), cfg, shutdown));
    Server {
        addr,
        fake,
        ctl,
        _trigger: trigger,
        _state: state,
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn call(
    srv: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Answer {
    call_bytes(
        srv,
        method,
        path,
        auth,
        content_type,
        Bytes::from(body.to_string()),
    )
    .await
}

async fn call_bytes(
    srv: &Server,
    method: &str,
    path: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", srv.addr));
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(srv: &Server, path: &str) -> Answer {
    call(srv, "GET", path, Some(TOKEN), None, "").await
}

fn manifest(slug: &str) -> String {
    format!(
        "slug = \"{slug}\"\ndaemons = [\"pack-exec\"]\npacks = [\"packs/cmd.upper\"]\n[agent]\nimage = \"agent:test\"\n"
    )
}

async fn create(srv: &Server, slug: &str) -> Answer {
    call(
        srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/toml"),
        &manifest(slug),
    )
    .await
}

#[tokio::test]
async fn requests_without_the_right_token_get_401_and_healthz_needs_none() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    for auth in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
        let a = call(&srv, "GET", "/v1/bottles", auth, None, "").await;
        assert_eq!(a.status, 401, "{auth:?}: {}", a.body);
        assert_eq!(
            a.headers.get("www-authenticate").unwrap(),
            "Bearer realm=\"control-plane\""
        );
        assert_eq!(a.json()["error"], "unauthorized");
        assert!(a.json()["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }
    // A create without auth must not have started anything.
    let a = call(&srv, "POST", "/v1/bottles", None, None, &manifest("x")).await;
    assert_eq!(a.status, 401);
    assert_eq!(srv.fake.0.lock().unwrap().ups, 0);
    let h = call(&srv, "GET", "/healthz", None, None, "").await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn create_inspect_compose_logs_delete() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    let a = create(&srv, "alpha").await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.headers.get("location").unwrap(), "/v1/bottles/alpha");
    let j = a.json();
    assert_eq!(j["slug"], "alpha");
    assert_eq!(j["state"], "running");
    assert_eq!(j["project"], "bot-bottle-alpha");

    let list = get(&srv, "/v1/bottles").await.json();
    assert_eq!(list["bottles"].as_array().unwrap().len(), 1);
    assert_eq!(list["bottles"][0]["slug"], "alpha");

    let d = get(&srv, "/v1/bottles/alpha").await;
    assert_eq!(d.status, 200, "{}", d.body);
    let d = d.json();
    assert_eq!(d["state"], "running");
    assert_eq!(d["daemons"][0]["name"], "pack-exec");
    assert_eq!(d["services"].as_array().unwrap().len(), 2);

    let y = get(&srv, "/v1/bottles/alpha/compose.yaml").await;
    assert_eq!(y.status, 200);
    assert_eq!(y.headers.get("content-type").unwrap(), "application/yaml");
    assert!(
        y.body.contains("container_name: bot-bottle-sidecars-alpha"),
        "{}",
        y.body
    );

    let l = get(&srv, "/v1/bottles/alpha/logs?daemon=pack-exec").await;
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(
        l.body,
        "pack-exec | listening on 0.0.0.0:9000\npack-exec | ran cmd.upper\n"
    );
    let l = get(&srv, "/v1/bottles/alpha/logs?tail=1").await;
    assert_eq!(l.body, "pack-exec | ran cmd.upper\n");
    let bad = get(&srv, "/v1/bottles/alpha/logs?daemon=nope").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"]
        .as_str()
        .unwrap()
        .contains("pack-exec"));
    let bad = get(&srv, "/v1/bottles/alpha/logs?lines=3").await;
    assert_eq!(
        (bad.status, bad.json()["error"].as_str()),
        (400, Some("invalid_query"))
    );

    let del = call(&srv, "DELETE", "/v1/bottles/alpha", Some(TOKEN), None, "").await;
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(del.json()["existed"], true);
    let again = call(&srv, "DELETE", "/v1/bottles/alpha", Some(TOKEN), None, "").await;
    assert_eq!(again.status, 200, "DELETE is idempotent: {}", again.body);
    assert_eq!(again.json()["existed"], false);
    assert_eq!(get(&srv, "/v1/bottles/alpha").await.status, 404);
    assert!(srv.fake.0.lock().unwrap().projects.is_empty());
}

#[tokio::test]
async fn bad_input_answers_name_the_problem() {
    let srv = start(Some(TOKEN), 4096).await;
    // Every bad field is named, in one answer.
    let bad = call(
        &srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/json"),
        r#"{"slug": "Bad Slug", "daemons": ["pack-exec"], "agent": {"image": ""}}"#,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let j = bad.json();
    assert_eq!(j["error"], "invalid_manifest");
    let msg = j["message"].as_str().unwrap();
    for field in ["slug", "agent.image"] {
        assert!(msg.contains(field), "{field} missing from: {msg}");
    }
    // A value of the wrong kind is named by its path.
    let typo = call(
        &srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/json"),
        r#"{"slug": "ok", "daemons": ["pack-exec", "nope"], "agent": {"image": "x"}}"#,
    )
    .await;
    assert_eq!(typo.status, 400);
    assert!(typo.body.contains("daemons[1]"), "{}", typo.body);
    let empty = call(&srv, "POST", "/v1/bottles", Some(TOKEN), None, "  ").await;
    assert_eq!(empty.status, 400);
    let unknown_key = call(
        &srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/toml"),
        "slug = \"a\"\nsurprise = 1\n[agent]\nimage = \"x\"\n",
    )
    .await;
    assert_eq!(unknown_key.status, 400);
    assert!(
        unknown_key.body.contains("surprise"),
        "{}",
        unknown_key.body
    );

    let big = "x".repeat(5000);
    let too_big = call(&srv, "POST", "/v1/bottles", Some(TOKEN), None, &big).await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);

    assert_eq!(get(&srv, "/v1/bottles/ghost").await.status, 404);
    assert_eq!(
        get(&srv, "/v1/bottles/ghost").await.json()["error"],
        "unknown_bottle"
    );
    assert_eq!(get(&srv, "/v1/bottles/..%2Fetc").await.status, 400);
    assert_eq!(get(&srv, "/v1/nothing").await.status, 404);
    let m = call(&srv, "PUT", "/v1/bottles", Some(TOKEN), None, "").await;
    assert_eq!(m.status, 405);
    assert_eq!(m.headers.get("allow").unwrap(), "GET, POST");
    assert_eq!(srv.fake.0.lock().unwrap().ups, 0, "nothing was started");
}

#[tokio::test]
async fn an_existing_or_concurrently_created_slug_is_a_409() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    let (a, b) = tokio::join!(create(&srv, "twin"), create(&srv, "twin"));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.body, b.body);
    let again = create(&srv, "twin").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"], "conflict");
    assert_eq!(srv.fake.0.lock().unwrap().ups, 1, "brought up exactly once");
}

#[tokio::test]
async fn docker_unreachable_is_503_with_the_reason() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    srv.fake.0.lock().unwrap().unreachable = true;
    let a = create(&srv, "down-docker").await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        a.body.contains("Cannot connect to the Docker daemon"),
        "{}",
        a.body
    );
    let l = get(&srv, "/v1/bottles").await;
    assert_eq!(l.status, 503, "listing asks Docker too: {}", l.body);
    assert_eq!(l.json()["error"], "runtime");
}

/// One request a fake pack-exec listener saw.
#[derive(Debug, Clone)]
struct Seen {
    listener: &'static str,
    method: String,
    path_and_query: String,
    authorization: Option<String>,
    body: Bytes,
}

/// What the fake pack-exec shares with the test.
#[derive(Default)]
struct PackExecState {
    seen: Vec<Seen>,
    /// The operator token pack-exec "loaded" (the test copies it from the project dir).
    token: Option<String>,
    installed: Vec<String>,
}

type PackExec = Arc<Mutex<PackExecState>>;

/// Serve `answer` on a fresh loopback port.
async fn listen(
    listener: &'static str,
    state: PackExec,
    answer: fn(&Seen, &mut PackExecState) -> (u16, String),
) -> SocketAddr {
    use hyper::service::service_fn;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = tcp.accept().await.unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let method = req.method().to_string();
                        let path_and_query = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let authorization = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let seen = Seen {
                            listener,
                            method,
                            path_and_query,
                            authorization,
                            body,
                        };
                        let (status, text) = {
                            let mut st = state.lock().unwrap();
                            st.seen.push(seen.clone());
                            answer(&seen, &mut st)
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn error(code: &str) -> String {
    format!(r#"{{"error":"{code}","message":"{code}","request_id":"r1"}}"#)
}

/// pack-exec's agent listener: `cmd.upper` upper-cases `text`; another pack is a 404 in
/// pack-exec's own error shape; install and delete are refused (403 `forbidden`).
fn agent_listener(seen: &Seen, _: &mut PackExecState) -> (u16, String) {
    match (seen.method.as_str(), seen.path_and_query.as_str()) {
        ("POST", "/v1/packs/cmd.upper") => {
            let v: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
            let up = v["text"].as_str().unwrap().to_uppercase();
            (200, format!("{{\"text\":\"{up}\"}}"))
        }
        ("PUT" | "DELETE", _) => (403, error("forbidden")),
        _ => (
            404,
            r#"{"error":"unknown_pack","message":"no pack","request_id":"r1"}"#.to_string(),
        ),
    }
}

/// pack-exec's operator listener: the bottle's token or 401; install (201 new, 200 replaced),
/// delete (204, 404 when not installed).
fn operator_listener(seen: &Seen, st: &mut PackExecState) -> (u16, String) {
    let wanted = st.token.as_ref().map(|t| format!("Bearer {t}"));
    if wanted.is_none() || seen.authorization != wanted {
        return (401, error("unauthorized"));
    }
    let path = seen.path_and_query.split('?').next().unwrap();
    let Some(name) = path.strip_prefix("/v1/packs/") else {
        return (404, error("not_found"));
    };
    match seen.method.as_str() {
        "PUT" if name == "cmd.shipped" && !seen.path_and_query.contains("replace_shipped=true") => {
            (409, error("conflict"))
        }
        "PUT" => {
            let status = if st.installed.iter().any(|n| n == name) {
                200
            } else {
                st.installed.push(name.to_string());
                201
            };
            (status, format!(r#"{{"name":"{name}","version":"1.0.0"}}"#))
        }
        "DELETE" => match st.installed.iter().position(|n| n == name) {
            Some(i) => {
                st.installed.remove(i);
                (204, String::new())
            }
            None => (404, error("pack_not_found")),
        },
        _ => (405, error("method_not_allowed")),
    }
}

/// Both listeners of a fake pack-exec, published for every bottle of the fake runtime.
async fn fake_pack_exec(fake: &Fake) -> PackExec {
    let state = PackExec::default();
    let agent = listen("agent", state.clone(), agent_listener).await;
    let operator = listen("operator", state.clone(), operator_listener).await;
    let mut st = fake.0.lock().unwrap();
    st.pack_exec = Some(agent);
    st.pack_operator = Some(operator);
    state
}

#[tokio::test]
async fn pack_calls_reach_the_bottles_pack_exec_and_come_back_unchanged() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    fake_pack_exec(&srv.fake).await;
    assert_eq!(create(&srv, "packs").await.status, 201);
    let ok = call(
        &srv,
        "POST",
        "/v1/bottles/packs/packs/cmd.upper",
        Some(TOKEN),
        Some("application/json"),
        r#"{"text":"hello"}"#,
    )
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, r#"{"text":"HELLO"}"#));
    let missing = call(
        &srv,
        "POST",
        "/v1/bottles/packs/packs/cmd.nope",
        Some(TOKEN),
        Some("application/json"),
        "{}",
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body,
        r#"{"error":"unknown_pack","message":"no pack","request_id":"r1"}"#
    );
    let ghost = call(
        &srv,
        "POST",
        "/v1/bottles/ghost/packs/cmd.upper",
        Some(TOKEN),
        None,
        "{}",
    )
    .await;
    assert_eq!(ghost.status, 404);
}

/// Collects everything the server logs (the test runtime is single-threaded, so spawned
/// tasks log into this thread's default subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_access_line_per_request_and_never_the_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let srv = start(Some(TOKEN), 1 << 20).await;
    let pack_exec = fake_pack_exec(&srv.fake).await;
    // tracing caches each callsite's interest when it is first hit; a test thread without a
    // subscriber can hit the access-log callsite first and race this thread's scoped
    // subscriber into a cached "never". Once every test thread has made its first requests
    // (a create takes 200 ms), recompute the interest with this subscriber in place.
    assert_eq!(create(&srv, "warmup").await.status, 201);
    tracing::callsite::rebuild_interest_cache();
    assert_eq!(create(&srv, "logged").await.status, 201);
    let operator_token = read_token(&srv, "logged");
    pack_exec.lock().unwrap().token = Some(operator_token.clone());
    let installed = put_pack(&srv, "logged", "cmd.logged", "").await;
    assert_eq!(installed.status, 201, "{}", installed.body);
    // A refused token is reported without the token in the answer either.
    pack_exec.lock().unwrap().token = Some("0".repeat(64));
    let refused = put_pack(&srv, "logged", "cmd.logged", "").await;
    assert!(!refused.body.contains(&operator_token), "{}", refused.body);
    let _ = get(&srv, "/v1/bottles/logged?x=1").await;
    let _ = call(
        &srv,
        "GET",
        "/v1/bottles",
        Some("wrong-token-0123456789abcdef"),
        None,
        "",
    )
    .await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let requests: Vec<&str> = text.lines().filter(|l| l.contains("request")).collect();
    assert!(
        requests
            .iter()
            .any(|l| l.contains("POST") && l.contains("status=201") && l.contains("ms=")),
        "{text}"
    );
    assert!(requests.iter().any(|l| l.contains("status=401")), "{text}");
    assert!(
        !text.contains(TOKEN),
        "the token leaked into the log:\n{text}"
    );
    assert!(
        !text.contains(&operator_token),
        "the operator token leaked into the log:\n{text}"
    );
    assert!(
        !text.contains("wrong-token"),
        "a presented token leaked:\n{text}"
    );
    assert!(
        !text.contains("agent:test"),
        "the manifest body leaked:\n{text}"
    );
}

#[tokio::test]
async fn approvals_are_listed_shown_and_decided_over_http() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    let m = "slug = \"ops\"\ndaemons = [\"supervise\"]\n[agent]\nimage = \"agent:test\"\n";
    let a = call(
        &srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/toml"),
        m,
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let list = get(&srv, "/v1/bottles/ops/approvals?pending=1").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.json()[0]["status"], "pending");
    let one = get(&srv, "/v1/bottles/ops/approvals/1-ab").await;
    assert_eq!(one.json()["summary"], "ship it");
    let decide = |verb: &'static str, body: &'static str| {
        let srv = &srv;
        async move {
            call(
                srv,
                "POST",
                &format!("/v1/bottles/ops/approvals/1-ab/{verb}"),
                Some(TOKEN),
                Some("application/json"),
                body,
            )
            .await
        }
    };
    let approved = decide("approve", r#"{"note":"go"}"#).await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.json()["status"], "approved");
    assert_eq!(approved.json()["note"], "go");
    let twice = decide("approve", "").await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    assert!(twice.body.contains("already approved"), "{}", twice.body);
    let bad = decide("deny", r#"{"nope":1}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let unknown = get(&srv, "/v1/bottles/ops/approvals/2-cd").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let malformed = get(&srv, "/v1/bottles/ops/approvals/NOT_AN_ID").await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    // supervise-ctl ran as supervise's uid (its queue is its own, 0700).
    let execs = srv.fake.0.lock().unwrap().execs.clone();
    let ctl: Vec<_> = execs
        .iter()
        .filter(|(argv, _)| argv[1] == "supervise-ctl")
        .collect();
    assert!(!ctl.is_empty());
    for (argv, user) in ctl {
        assert_eq!(user.as_deref(), Some("10004:10004"), "{argv:?}");
    }
    // A bottle without supervise: a usage error, not a failed exec.
    assert_eq!(create(&srv, "nosup").await.status, 201);
    let none = get(&srv, "/v1/bottles/nosup/approvals").await;
    assert_eq!(none.status, 400, "{}", none.body);
}

#[tokio::test]
async fn bottles_without_a_state_record_are_found_by_their_labels() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    assert_eq!(create(&srv, "kept").await.status, 201);
    assert_eq!(create(&srv, "lost").await.status, 201);
    // The state record of one bottle is lost (a wiped state dir, an interrupted create).
    std::fs::remove_dir_all(srv._state.path().join("bottles/lost")).unwrap();
    let list = get(&srv, "/v1/bottles").await.json();
    let slugs: Vec<&str> = list["bottles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["kept", "lost"], "each bottle exactly once: {list}");
    assert_eq!(get(&srv, "/v1/bottles/lost").await.status, 200);
    // A bottle of another prefix (another control plane) is not ours.
    srv.fake
        .0
        .lock()
        .unwrap()
        .projects
        .insert("other-x".into(), vec![]);
    assert_eq!(
        get(&srv, "/v1/bottles").await.json()["bottles"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // It is still deleted completely, and a new create of the slug works again.
    let del = call(&srv, "DELETE", "/v1/bottles/lost", Some(TOKEN), None, "").await;
    assert_eq!(del.json()["existed"], true, "{}", del.body);
    assert_eq!(create(&srv, "lost").await.status, 201);
}

/// The operator token `up` wrote into a bottle's project directory.
fn read_token(srv: &Server, slug: &str) -> String {
    std::fs::read_to_string(srv.dir(slug).join("secrets/pack-exec-operator-token")).unwrap()
}

/// A pack directory as the tar.gz the API takes.
fn pack_archive(name: &str) -> Bytes {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pack.json"),
        format!(r#"{{"name":"{name}","version":"1.0.0"}}"#),
    )
    .unwrap();
    Bytes::from(control_plane::packs::tar_gz(dir.path()).unwrap())
}

async fn put_pack(srv: &Server, slug: &str, name: &str, query: &str) -> Answer {
    call_bytes(
        srv,
        "PUT",
        &format!("/v1/bottles/{slug}/packs/{name}{query}"),
        Some(TOKEN),
        Some("application/gzip"),
        pack_archive(name),
    )
    .await
}

fn owner_mode(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[tokio::test]
async fn packs_are_installed_and_removed_through_the_operator_listener_with_the_bottles_token() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    let pack_exec = fake_pack_exec(&srv.fake).await;
    assert_eq!(create(&srv, "ops").await.status, 201);
    // One token per bottle, generated at up, readable by root alone.
    let token_file = srv.dir("ops").join("secrets/pack-exec-operator-token");
    assert_eq!(owner_mode(&token_file), (0, 0, 0o400));
    let token = read_token(&srv, "ops");
    assert_eq!(token.len(), 64);
    pack_exec.lock().unwrap().token = Some(token.clone());

    let new = put_pack(&srv, "ops", "cmd.new", "?allow_unsigned=1").await;
    assert_eq!(new.status, 201, "{}", new.body);
    assert_eq!(new.body, r#"{"name":"cmd.new","version":"1.0.0"}"#);
    assert_eq!(new.headers.get("content-type").unwrap(), "application/json");
    let last = pack_exec.lock().unwrap().seen.last().cloned().unwrap();
    assert_eq!(last.listener, "operator");
    assert_eq!(last.method, "PUT");
    assert_eq!(last.path_and_query, "/v1/packs/cmd.new?allow_unsigned=true");
    assert_eq!(last.authorization, Some(format!("Bearer {token}")));
    assert_eq!(last.body, pack_archive("cmd.new"), "the archive as sent");

    let again = put_pack(&srv, "ops", "cmd.new", "").await;
    assert_eq!(again.status, 200, "a replace: {}", again.body);

    // pack-exec's refusals come back as they are.
    let shipped = put_pack(&srv, "ops", "cmd.shipped", "").await;
    assert_eq!(shipped.status, 409, "{}", shipped.body);
    assert_eq!(shipped.json()["error"], "conflict");
    let shipped = put_pack(&srv, "ops", "cmd.shipped", "?replace_shipped=true").await;
    assert_eq!(shipped.status, 201, "{}", shipped.body);
    assert!(pack_exec
        .lock()
        .unwrap()
        .seen
        .last()
        .unwrap()
        .path_and_query
        .ends_with("?replace_shipped=true"));

    // Refused by the control plane itself: nothing reaches pack-exec.
    let before = pack_exec.lock().unwrap().seen.len();
    let bad = put_pack(&srv, "ops", "cmd.new", "?force=1").await;
    assert_eq!(
        (bad.status, bad.json()["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let empty = call(
        &srv,
        "PUT",
        "/v1/bottles/ops/packs/cmd.x",
        Some(TOKEN),
        None,
        "",
    )
    .await;
    assert_eq!(empty.status, 400, "{}", empty.body);
    let odd = call(
        &srv,
        "DELETE",
        "/v1/bottles/ops/packs/CMD.X",
        Some(TOKEN),
        None,
        "",
    )
    .await;
    assert_eq!(
        (odd.status, odd.json()["error"].as_str()),
        (400, Some("usage"))
    );
    assert_eq!(pack_exec.lock().unwrap().seen.len(), before);

    let del = call(
        &srv,
        "DELETE",
        "/v1/bottles/ops/packs/cmd.new",
        Some(TOKEN),
        None,
        "",
    )
    .await;
    assert_eq!((del.status, del.body.as_str()), (204, ""));
    let gone = call(
        &srv,
        "DELETE",
        "/v1/bottles/ops/packs/cmd.new",
        Some(TOKEN),
        None,
        "",
    )
    .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"], "pack_not_found");

    // A token pack-exec does not hold is our problem, not the API client's: 502, not 401.
    pack_exec.lock().unwrap().token = Some("f".repeat(64));
    let refused = put_pack(&srv, "ops", "cmd.new", "").await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(refused.json()["error"], "operator_token_refused");

    // Calls still go to the agent listener; nothing but calls ever did.
    let ok = call(
        &srv,
        "POST",
        "/v1/bottles/ops/packs/cmd.upper",
        Some(TOKEN),
        Some("application/json"),
        r#"{"text":"hi"}"#,
    )
    .await;
    assert_eq!((ok.status, ok.body.as_str()), (200, r#"{"text":"HI"}"#));
    for seen in &pack_exec.lock().unwrap().seen {
        match seen.listener {
            "agent" => {
                assert_eq!(seen.method, "POST", "{seen:?}");
                assert_eq!(seen.authorization, None, "no token to the agent listener");
            }
            _ => assert_ne!(seen.method, "POST", "{seen:?}"),
        }
    }

    // The token is kept across re-ups: the running pack-exec holds it.
    srv.ctl
        .up(Source::Inline {
            text: manifest("ops"),
            name: Some("request.toml".into()),
        })
        .await
        .unwrap();
    assert_eq!(read_token(&srv, "ops"), token);
}

/// A manifest whose route uses every credential named.
fn credentials_manifest(slug: &str, files: &[(&str, &Path)]) -> String {
    let mut m = format!(
        "slug = \"{slug}\"\ndaemons = [\"pipelock\", \"egress\"]\n[agent]\nimage = \"agent:test\"\n[[allowlist]]\nhost = \"api.example.com\"\n"
    );
    for (name, path) in files {
        m.push_str(&format!(
            "[credentials.{name}]\nfile = \"{}\"\n",
            path.display()
        ));
    }
    let headers: Vec<String> = files
        .iter()
        .map(|(name, _)| format!("X-{name} = \"${{vault:{name}}}\""))
        .collect();
    m.push_str(&format!(
        "[[routes]]\nhost = \"api.example.com\"\nheaders = {{ {} }}\n",
        headers.join(", ")
    ));
    m
}

#[tokio::test]
async fn credential_files_are_checked_before_anything_starts() {
    use std::os::unix::fs::PermissionsExt;
    let srv = start(Some(TOKEN), 1 << 20).await;
    let files = tempfile::tempdir().unwrap();
    let make = |name: &str, mode: u32, uid: u32| {
        let path = files.path().join(name);
        std::fs::write(&path, "secret\n").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let good = make("good", 0o400, 0);
    let loose = make("loose", 0o644, 0);
    let nobody = make("nobody", 0o400, 65534);
    let missing = files.path().join("missing");
    let link = files.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let manifest = credentials_manifest(
        "creds",
        &[
            ("GOOD", &good),
            ("LINKED", &link),
            ("LOOSE", &loose),
            ("NOBODY", &nobody),
            ("MISSING", &missing),
        ],
    );
    let post = |m: String| {
        let srv = &srv;
        async move {
            call(
                srv,
                "POST",
                "/v1/bottles",
                Some(TOKEN),
                Some("application/toml"),
                &m,
            )
            .await
        }
    };
    let refused = post(manifest.clone()).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_credential");
    let msg = refused.json()["message"].as_str().unwrap().to_string();
    for needle in [
        format!("credentials.LOOSE.file: {}", loose.display()),
        format!("chmod 0400 {}", loose.display()),
        format!("credentials.NOBODY.file: {}", nobody.display()),
        format!("chown root:root {}", nobody.display()),
        format!("credentials.MISSING.file: {}", missing.display()),
    ] {
        assert!(msg.contains(&needle), "{needle:?} not in:\n{msg}");
    }
    assert!(!msg.contains("GOOD") && !msg.contains("LINKED"), "{msg}");
    assert_eq!(srv.fake.0.lock().unwrap().ups, 0, "nothing was started");
    assert!(!srv.dir("creds").exists(), "nothing was written");

    // Fixed as the messages say: the bottle comes up.
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::chown(&nobody, Some(0), Some(0)).unwrap();
    make("missing", 0o400, 0);
    let created = post(manifest).await;
    assert_eq!(created.status, 201, "{}", created.body);

    // Each daemon's config is its own, the secrets root's, the public CA files read-only.
    let dir = srv.dir("creds");
    let uid = |d: bottle_spec::Daemon| d.uid();
    assert_eq!(owner_mode(&dir.join("config/init.json")), (0, 0, 0o400));
    for d in [bottle_spec::Daemon::Egress, bottle_spec::Daemon::Pipelock] {
        let path = dir.join(format!("config/{}.json", d.name()));
        assert_eq!(owner_mode(&path), (uid(d), uid(d), 0o400), "{d}");
    }
    let dns = dir.join("config/dns.json");
    if dns.exists() {
        let dns_uid = bottle_spec::DNS_UID;
        assert_eq!(owner_mode(&dns), (dns_uid, dns_uid, 0o400));
    }
    assert_eq!(owner_mode(&dir.join("secrets")), (0, 0, 0o700));
    assert_eq!(owner_mode(&dir.join("secrets/ca.key")), (0, 0, 0o400));
    assert_eq!(owner_mode(&dir.join("ca/ca.crt")).2, 0o444);
    assert_eq!(owner_mode(&dir.join("ca/ca-bundle.crt")).2, 0o444);
    assert!(!dir.join("ca/ca.key").exists());
    // The credential files themselves were never copied.
    for entry in walk(&dir) {
        let text = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains("secret\n"),
            "{} holds a secret",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn the_agent_network_gets_a_free_subnet_and_keeps_it() {
    let srv = start(Some(TOKEN), 1 << 20).await;
    let pool = bottle_spec::DEFAULT_SUBNET_POOL;
    let hashed = Subnet::for_project(pool, "bot-bottle-net", &[]).unwrap();
    // Another network already holds the slot the name hashes to.
    srv.fake
        .0
        .lock()
        .unwrap()
        .networks
        .push(("someone-else".into(), hashed));
    assert_eq!(create(&srv, "net").await.status, 201);
    let chosen = srv.subnet("net").expect("the record keeps the subnet");
    assert_eq!(
        chosen,
        Subnet::for_project(pool, "bot-bottle-net", &[hashed]).unwrap()
    );
    assert!(!chosen.overlaps(hashed) && pool.overlaps(chosen));
    let yaml = get(&srv, "/v1/bottles/net/compose.yaml").await.body;
    assert!(yaml.contains(&chosen.to_string()), "{yaml}");
    assert!(!yaml.contains(&hashed.to_string()), "{yaml}");

    // The bottle's own network exists now; the other one went away. A re-up keeps the subnet
    // (the sidecars' address must not move), it does not go back to the hash slot.
    {
        let mut st = srv.fake.0.lock().unwrap();
        st.networks.clear();
        st.networks.push(("bot-bottle-net".into(), chosen));
    }
    srv.ctl
        .up(Source::Inline {
            text: manifest("net"),
            name: Some("request.toml".into()),
        })
        .await
        .unwrap();
    assert_eq!(srv.subnet("net"), Some(chosen));

    // A bottle with no competition gets the hash slot.
    assert_eq!(create(&srv, "free").await.status, 201);
    assert_eq!(
        srv.subnet("free"),
        Subnet::for_project(pool, "bot-bottle-free", &[chosen])
    );
}

#[tokio::test]
async fn a_full_subnet_pool_is_a_clear_error_and_starts_nothing() {
    let settings = Settings {
        subnet_pool: control_plane::core::subnet_pool(Some("10.99.0.0/27")).unwrap(),
        ..Settings::default()
    };
    let srv = start_with(Some(TOKEN), 1 << 20, settings).await;
    srv.fake
        .0
        .lock()
        .unwrap()
        .networks
        .push(("other".into(), Subnet::parse("10.99.0.0/24").unwrap()));
    let a = create(&srv, "crowded").await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.json()["error"], "no_subnet");
    let msg = a.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("BOT_BOTTLE_SUBNET_POOL=10.99.0.0/27"), "{msg}");
    assert_eq!(srv.fake.0.lock().unwrap().ups, 0);
    // One /28 of the pool free again: it is taken.
    srv.fake.0.lock().unwrap().networks[0].1 = Subnet::parse("10.99.0.16/28").unwrap();
    assert_eq!(create(&srv, "crowded").await.status, 201);
    assert_eq!(srv.subnet("crowded"), Subnet::parse("10.99.0.0/28").ok());
}

/// A bottle of pipelock (allowing `host`) and git-gate (one repository at `upstream`).
fn policy_manifest(slug: &str, host: &str, upstream: &str) -> String {
    format!(
        "slug = \"{slug}\"\ndaemons = [\"pipelock\", \"git-gate\"]\n[[allowlist]]\nhost = \"{host}\"\n[[git]]\nname = \"app\"\nupstream = \"{upstream}\"\n[agent]\nimage = \"agent:test\"\n"
    )
}

fn reloads(srv: &Server) -> usize {
    srv.fake
        .0
        .lock()
        .unwrap()
        .execs
        .iter()
        .filter(|(argv, _)| argv == &["/sidecar-init", "reload"])
        .count()
}

async fn reload(srv: &Server, slug: &str, body: &str) -> Answer {
    call(
        srv,
        "POST",
        &format!("/v1/bottles/{slug}/reload"),
        Some(TOKEN),
        Some("application/toml"),
        body,
    )
    .await
}

/// `reload` of bottle `pol` with [`policy_manifest`]`(host, upstream)` as the body.
async fn reload_policy(srv: &Server, host: &str, upstream: &str) -> Answer {
    reload(srv, "pol", &policy_manifest("pol", host, upstream)).await
}

#[tokio::test]
async fn reload_rewrites_the_proxies_configs_in_place_and_refuses_what_only_up_applies() {
    use std::os::unix::fs::MetadataExt;
    let srv = start(Some(TOKEN), 1 << 20).await;
    let first = policy_manifest("pol", "a.example", "git://up.example/app.git");
    let created = call(
        &srv,
        "POST",
        "/v1/bottles",
        Some(TOKEN),
        Some("application/toml"),
        &first,
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let dir = srv.dir("pol");
    let pipelock = dir.join("config/pipelock.json");
    let git_gate = dir.join("config/git-gate.json");
    let inode = std::fs::metadata(&pipelock).unwrap().ino();
    let ups = srv.fake.0.lock().unwrap().ups;
    assert_eq!(reloads(&srv), 0, "a first up has nothing to reload");

    // A new allowlist reaches the running container: the same inode (its bind mount follows
    // it), the daemon's owner and mode, and then the reload signal; no container is touched.
    let a = reload_policy(&srv, "b.example", "git://up.example/app.git").await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(
        a.json()["changed"],
        serde_json::json!(["config/pipelock.json"])
    );
    let text = std::fs::read_to_string(&pipelock).unwrap();
    assert!(
        text.contains("b.example") && !text.contains("a.example"),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&pipelock).unwrap().ino(), inode);
    assert_eq!(
        owner_mode(&pipelock),
        (Daemon::Pipelock.uid(), Daemon::Pipelock.uid(), 0o400)
    );
    assert_eq!(reloads(&srv), 1);
    assert_eq!(
        srv.fake.0.lock().unwrap().ups,
        ups,
        "reload started nothing"
    );

    // No body: the manifest kept from the last reload, unchanged, so only the signal.
    let a = reload(&srv, "pol", "").await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["changed"], serde_json::json!([]));
    assert_eq!(reloads(&srv), 2);

    // git-gate reads its config only at start, and a new daemon changes init's table: both
    // are refused with what to do, before anything is written or signalled.
    let git_before = std::fs::read(&git_gate).unwrap();
    let refused = reload_policy(&srv, "c.example", "git://up.example/other.git").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let v = refused.json();
    assert_eq!(v["error"], "needs_up", "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("config/git-gate.json") && message.contains("control-plane up"),
        "{message}"
    );
    let more = policy_manifest("pol", "c.example", "git://up.example/app.git")
        .replace("\"git-gate\"]", "\"git-gate\", \"supervise\"]");
    let refused = reload(&srv, "pol", &more).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("config/init.json"),
        "{}",
        refused.body
    );
    assert!(std::fs::read_to_string(&pipelock)
        .unwrap()
        .contains("b.example"));
    assert_eq!(std::fs::read(&git_gate).unwrap(), git_before);
    assert_eq!(reloads(&srv), 2, "a refused reload signals nothing");

    // Another bottle's manifest, and a bottle that does not exist.
    let other = reload(
        &srv,
        "pol",
        &policy_manifest("nope", "b.example", "git://up.example/app.git"),
    )
    .await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert!(other.body.contains("\\\"nope\\\""), "{}", other.body);
    assert_eq!(reload(&srv, "ghost", "").await.status, 404);

    // `up` with only pipelock's config changed keeps the container (compose.yaml, and so
    // the service's definition, is unchanged) and reloads the proxies.
    let yaml = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let report = srv
        .ctl
        .up(Source::Inline {
            text: policy_manifest("pol", "d.example", "git://up.example/app.git"),
            name: Some("request.toml".into()),
        })
        .await
        .unwrap();
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("config/pipelock.json")),
        "{:?}",
        report.notes
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("compose.yaml")).unwrap(),
        yaml
    );
    assert_eq!(std::fs::metadata(&pipelock).unwrap().ino(), inode);
    assert_eq!(reloads(&srv), 3);

    // `up` with git-gate's config changed changes the sidecars service's restart digest, so
    // the runtime recreates the container (no reload needed).
    srv.ctl
        .up(Source::Inline {
            text: policy_manifest("pol", "d.example", "git://up.example/other.git"),
            name: Some("request.toml".into()),
        })
        .await
        .unwrap();
    let after = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    assert_ne!(
        after, yaml,
        "the definition must change with git-gate's config"
    );
    assert!(after.contains("io.bot-bottle.restart-digest"), "{after}");
    assert_eq!(reloads(&srv), 3);
}
