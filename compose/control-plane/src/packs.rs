//! Talking to a bottle's pack-exec from the host, through its port published on 127.0.0.1:
//! list packs, install a pack directory (sent as a tar.gz), call a pack. Plain HTTP/1.1 over
//! loopback with hyper-util's client; no TLS involved.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::ControlError;

/// The pack manifest file inside a pack directory.
pub const PACK_MANIFEST: &str = "pack.json";

/// A client for one bottle's pack-exec.
pub struct PackClient {
    addr: SocketAddr,
    timeout: Duration,
}

impl PackClient {
    /// A client for pack-exec published at `addr`; each request is bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> PackClient {
        PackClient { addr, timeout }
    }

    /// Send one request; a non-2xx answer is a [`ControlError::Daemon`] with the body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, ControlError> {
        let unreachable = |message: String| ControlError::Unreachable {
            daemon: "pack-exec".into(),
            addr: self.addr.to_string(),
            message,
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let fut = async {
            let resp = client
                .request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ControlError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", self.timeout.as_secs())))??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ControlError::Daemon {
                daemon: "pack-exec".into(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).trim().to_string(),
            })
        }
    }

    /// `GET /v1/packs`.
    pub async fn list(&self) -> Result<Bytes, ControlError> {
        self.request(Method::GET, "/v1/packs", "application/json", Bytes::new())
            .await
    }

    /// `PUT /v1/packs/{name}` with the directory as a tar.gz; the name comes from its
    /// `pack.json`.
    pub async fn install(&self, dir: &Path) -> Result<(String, Bytes), ControlError> {
        let name = pack_name(dir)?;
        let archive = tar_gz(dir)?;
        let answer = self
            .request(
                Method::PUT,
                &format!("/v1/packs/{name}"),
                "application/gzip",
                Bytes::from(archive),
            )
            .await?;
        Ok((name, answer))
    }

    /// `POST /v1/packs/{name}` with the input JSON.
    pub async fn call(&self, name: &str, input: Bytes) -> Result<Bytes, ControlError> {
        self.request(
            Method::POST,
            &format!("/v1/packs/{name}"),
            "application/json",
            input,
        )
        .await
    }
}

/// The `name` of the pack in `dir` (from its `pack.json`).
pub fn pack_name(dir: &Path) -> Result<String, ControlError> {
    let path = dir.join(PACK_MANIFEST);
    let text = std::fs::read(&path).map_err(|e| ControlError::io("cannot read", &path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| ControlError::Usage(format!("{}: not JSON: {e}", path.display())))?;
    value
        .get("name")
        .and_then(|n| n.as_str())
        .map(String::from)
        .ok_or_else(|| ControlError::Usage(format!("{}: no string `name`", path.display())))
}

/// The directory's contents as a tar.gz (paths relative to the directory, modes kept).
pub fn tar_gz(dir: &Path) -> Result<Vec<u8>, ControlError> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(enc);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(|e| ControlError::io("cannot archive", dir, e))?;
    builder
        .into_inner()
        .and_then(|enc| enc.finish())
        .map_err(|e| ControlError::io("cannot archive", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_the_pack_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pack.json"), r#"{"name":"cmd.x"}"#).unwrap();
        std::fs::write(tmp.path().join("handler.sh"), "echo").unwrap();
        assert_eq!(pack_name(tmp.path()).unwrap(), "cmd.x");
        let bytes = tar_gz(tmp.path()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .filter(|n| n.ends_with(".json") || n.ends_with(".sh"))
            .collect();
        names.sort();
        assert_eq!(names, ["handler.sh", "pack.json"]);
    }

    #[test]
    fn missing_name_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pack.json"), "{}").unwrap();
        assert_eq!(pack_name(tmp.path()).unwrap_err().exit_code(), 2);
    }

    #[tokio::test]
    async fn unreachable_daemon_is_reported_with_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = PackClient::new(addr, Duration::from_secs(5))
            .list()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
