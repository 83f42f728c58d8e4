//! Test support: a pack-exec server on 127.0.0.1:0 (agent listener) plus its operator listener
//! (127.0.0.1:0, bearer token), a real HTTP client (hyper-util's), pack fixtures and tarball
//! builders (including hostile ones written header by header).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinHandle;

use pack_exec::Config;
use sidecars_common::shutdown::{Shutdown, ShutdownTrigger};

/// The seed packs shipped in the repository.
pub fn seed_packs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packs")
}

/// Run a test body with a hard timeout, so nothing can hang.
pub async fn within<F: Future<Output = T>, T>(secs: u64, f: F) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

/// A temp dir every uid can traverse (handlers run as 65534 when the tests run as root).
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The operator token the test configs use.
pub const TOKEN: &str = "test-operator-token-0123456789";

/// A running server.
pub struct Server {
    /// The agent listener.
    pub addr: SocketAddr,
    /// The operator listener, when the config has one.
    pub operator: Option<SocketAddr>,
    pub state_dir: PathBuf,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<()>>,
}

/// A config for tests: state in `state_dir`, no shipped packs unless set, an operator
/// listener on 127.0.0.1:0 with [`TOKEN`] (its file is `state_dir/operator-token`).
pub fn config(state_dir: &Path) -> Config {
    let token_file = state_dir.join("operator-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: state_dir.to_path_buf(),
        packs_dir: state_dir.join("no-shipped-packs"),
        operator_listen: Some("127.0.0.1:0".to_string().try_into().unwrap()),
        operator_token_file: Some(token_file),
        ..Config::default()
    }
}

impl Server {
    pub async fn start(config: Config) -> Server {
        sidecars_common::logging::init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let state_dir = config.state_dir.clone();
        let operator = pack_exec::bind_operator(&config)
            .await
            .expect("operator listener");
        let operator_addr = operator.as_ref().map(|o| o.local_addr().unwrap());
        let task = tokio::spawn(async move {
            pack_exec::run_with(listener, operator, config, shutdown)
                .await
                .expect("server failed");
        });
        let server = Server {
            addr,
            operator: operator_addr,
            state_dir,
            trigger: Some(trigger),
            task: Some(task),
        };
        // Ready once /health answers.
        for _ in 0..200 {
            if let Ok(r) = server.try_request("GET", "/health", Vec::new()).await {
                if r.status == 200 {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server did not become healthy");
    }

    /// Stop and wait until it has drained.
    pub async fn stop(mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(task) = self.task.take() {
            within(30, task).await.unwrap();
        }
    }

    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Resp, String> {
        send(self.addr, method, path, None, body).await
    }

    pub async fn request(&self, method: &str, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        within(60, self.try_request(method, path, body.into()))
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The operator listener's address (the test config always has one).
    pub fn operator_addr(&self) -> SocketAddr {
        self.operator.expect("this server has no operator listener")
    }

    /// A request to the operator listener with `authorization` as the header (none if `None`).
    pub async fn operator_request_as(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Resp {
        within(
            60,
            send(
                self.operator_addr(),
                method,
                path,
                authorization,
                body.into(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("operator {method} {path}: {e}"))
    }

    /// A request to the operator listener with the right token.
    pub async fn operator_request(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        self.operator_request_as(Some(&auth), method, path, body)
            .await
    }

    /// POST a JSON input to a pack.
    pub async fn call(&self, pack: &str, input: &str) -> Resp {
        self.request(
            "POST",
            &format!("/v1/packs/{pack}"),
            input.as_bytes().to_vec(),
        )
        .await
    }

    /// PUT a tarball through the operator listener, consenting to unsigned packs (the test
    /// packs have no `trust.sha256`).
    pub async fn install(&self, pack: &str, tar: Vec<u8>) -> Resp {
        self.install_with(pack, "allow_unsigned=true", tar).await
    }

    /// PUT a tarball through the operator listener with the query `query` ("" for none).
    pub async fn install_with(&self, pack: &str, query: &str, tar: Vec<u8>) -> Resp {
        let path = if query.is_empty() {
            format!("/v1/packs/{pack}")
        } else {
            format!("/v1/packs/{pack}?{query}")
        };
        self.operator_request("PUT", &path, tar).await
    }

    /// DELETE a pack through the operator listener.
    pub async fn delete(&self, pack: &str) -> Resp {
        self.operator_request("DELETE", &format!("/v1/packs/{pack}"), Vec::new())
            .await
    }

    /// Every path under `state_dir` with its kind, size and (for files) content hash, sorted.
    pub fn walk(&self) -> Vec<String> {
        walk(&self.state_dir)
    }

    /// Entries of `state_dir/<sub>`.
    pub fn entries(&self, sub: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state_dir.join(sub))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Every path under `root` (recursively) with its kind, size and (for files) SHA-256, sorted.
pub fn walk(root: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push(format!("{rel}/"));
                go(root, &path, out);
            } else if meta.is_file() {
                let hash = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                out.push(format!("{rel} {} {hash}", meta.len()));
            } else {
                out.push(format!("{rel} {:?}", meta.file_type()));
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// One HTTP request to `addr`, with an optional `Authorization` header.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Result<Resp, String> {
    let auth = authorization.map(|a| ("authorization", a));
    send_with(addr, method, path, auth.as_slice(), body).await
}

/// One HTTP request to `addr` with `headers`.
pub async fn send_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Resp, String> {
    let resp = open(addr, method, path, headers, body).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Send a request and return the response with its body unread (for streams).
pub async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    client.request(req).await.map_err(|e| e.to_string())
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Assert an error answer: status, code, and the common error body shape.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        let body = self.json();
        assert_eq!(self.status, status, "{body}");
        assert_eq!(body["error"], code, "{body}");
        assert!(
            body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{body}"
        );
        body["message"].as_str().unwrap().to_string()
    }
}

/// One file of a pack fixture.
pub struct File {
    pub path: String,
    pub data: Vec<u8>,
    pub exec: bool,
}

pub fn file(path: &str, data: impl Into<Vec<u8>>) -> File {
    File {
        path: path.into(),
        data: data.into(),
        exec: false,
    }
}

pub fn script(path: &str, data: &str) -> File {
    File {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        exec: true,
    }
}

/// A tar of `files` (paths written raw, so hostile names are possible).
pub fn tar_of(files: &[File]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for f in files {
        let mut header = tar::Header::new_gnu();
        raw_name(&mut header, &f.path);
        header.set_size(f.data.len() as u64);
        header.set_mode(if f.exec { 0o755 } else { 0o644 });
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, f.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Write a path into the header's name field without the tar crate's sanitising.
pub fn raw_name(header: &mut tar::Header, path: &str) {
    let name = &mut header.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
}

/// Append a link entry (symlink or hard link) with a raw target.
pub fn append_link(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    target: &str,
) {
    let mut header = tar::Header::new_gnu();
    raw_name(&mut header, path);
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(0o777);
    let link = &mut header.as_old_mut().linkname;
    link.fill(0);
    link[..target.len()].copy_from_slice(target.as_bytes());
    header.set_cksum();
    builder.append(&header, std::io::empty()).unwrap();
}

/// A tar of the directory `dir` (recursively), as `tar -C dir -c .` would make it.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(".", dir).unwrap();
    builder.into_inner().unwrap()
}

/// gzip `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A manifest for a test pack running `script` via bash.
pub fn manifest(name: &str, extra: Value) -> String {
    let mut m = serde_json::json!({
        "name": name,
        "version": "1",
        "description": "test pack",
        "handler": {"type": "command", "command": ["bash", "handler.sh"], "timeout_s": 10},
    });
    merge(&mut m, extra);
    m.to_string()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// A tarball for a pack whose handler is the bash `body`.
pub fn bash_pack(name: &str, body: &str, extra: Value) -> Vec<u8> {
    tar_of(&[
        file("pack.json", manifest(name, extra)),
        script("handler.sh", body),
    ])
}

/// Whether `pid` is still a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}
