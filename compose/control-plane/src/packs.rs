//! Talking to a bottle's pack-exec through the Docker Engine: each request is one exec of
//! `sidecars pack-exec-relay` in the sidecars container ([`crate::runtime::Runtime::exec_stream`]),
//! whose stdin/stdout carry one HTTP/1.1 exchange (hyper's client, `Connection: close`) to a
//! listener on the container's loopback. No port published on the host and no host network
//! are involved, so the same client works from the host and from a control plane that runs as
//! a container on a bridge network.
//!
//! - the agent listener (`:9000`): list packs, call a pack — what the agent may do too;
//! - the operator listener ([`bottle_spec::PACK_EXEC_OPERATOR_PORT`], bound only on the
//!   container's loopback and never published): install (a directory sent as a tar.gz) and
//!   delete, each with `Authorization: Bearer <the bottle's operator token>` (see
//!   [`crate::secrets`]). The agent listener refuses both (403 `forbidden`). The token is never
//!   logged: it is held in an [`OperatorToken`] whose `Debug` hides it, and no error message
//!   carries a header.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::api::ControlError;
use crate::approvals::SIDECARS_BINARY;
use crate::runtime::Runtime;
use crate::secrets::OperatorToken;

/// Flags of an install (pack-exec's query parameters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallFlags {
    /// `allow_unsigned=true`: install a pack without a valid signature.
    pub allow_unsigned: bool,
    /// `replace_shipped=true`: an installed pack may override a pack shipped in the image.
    pub replace_shipped: bool,
    /// `self_test=true`: pack-exec runs the pack's `examples` before the install takes
    /// effect; a failing one refuses it (`self_test_failed`, naming the example).
    pub self_test: bool,
}

impl InstallFlags {
    /// The query string (with its `?`), empty when no flag is set.
    pub fn query(self) -> String {
        let mut flags = Vec::new();
        if self.allow_unsigned {
            flags.push("allow_unsigned=true");
        }
        if self.replace_shipped {
            flags.push("replace_shipped=true");
        }
        if self.self_test {
            flags.push("self_test=true");
        }
        if flags.is_empty() {
            String::new()
        } else {
            format!("?{}", flags.join("&"))
        }
    }
}

/// pack-exec's answer to an operator request, relayed as it is (status and body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackAnswer {
    /// HTTP status (`201` new install, `200` replaced, `204` deleted).
    pub status: u16,
    /// The body (the pack's summary; empty for a delete).
    pub body: Bytes,
}

/// Where [`PackClient`] execs the relay: a bottle's sidecars service in a runtime.
pub struct Relay<'a> {
    /// The runtime the bottle runs in.
    pub runtime: &'a dyn Runtime,
    /// The bottle's compose project.
    pub project: String,
    /// The service pack-exec runs in.
    pub service: String,
    /// Whom the relay runs as (`UID:GID`): pack-exec's own uid, no capability.
    pub user: String,
}

impl Relay<'_> {
    /// The relay's argv for the agent or the operator listener.
    pub fn argv(operator: bool) -> Vec<String> {
        let mut argv = vec![SIDECARS_BINARY.to_string(), "pack-exec-relay".to_string()];
        if operator {
            argv.push("--operator".to_string());
        }
        argv
    }
}

/// A client for one listener of one bottle's pack-exec.
pub struct PackClient<'a> {
    relay: Relay<'a>,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` (the operator listener).
    token: Option<OperatorToken>,
}

impl<'a> PackClient<'a> {
    /// A client for pack-exec's agent listener; each request is bounded by `timeout`.
    pub fn new(relay: Relay<'a>, timeout: Duration) -> PackClient<'a> {
        PackClient {
            relay,
            timeout,
            token: None,
        }
    }

    /// A client for pack-exec's operator listener, sending `token`.
    pub fn operator(relay: Relay<'a>, token: OperatorToken, timeout: Duration) -> PackClient<'a> {
        PackClient {
            relay,
            timeout,
            token: Some(token),
        }
    }

    /// Which listener the client talks to, for messages.
    fn listener(&self) -> String {
        let port = if self.token.is_some() {
            bottle_spec::PACK_EXEC_OPERATOR_PORT
        } else {
            bottle_spec::Daemon::PackExec.port()
        };
        format!(
            "{}/{} 127.0.0.1:{port}",
            self.relay.project, self.relay.service
        )
    }

    /// Send one request; a non-2xx answer is a [`ControlError::Daemon`] with the body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Bytes, ControlError> {
        self.send(method, path, content_type, body)
            .await
            .map(|a| a.body)
    }

    /// Send one request; the status of a 2xx answer is kept, anything else is a
    /// [`ControlError::Daemon`] with the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<PackAnswer, ControlError> {
        let listener = self.listener();
        let unreachable = |message: String| ControlError::Unreachable {
            daemon: "pack-exec".into(),
            addr: listener.clone(),
            message,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONNECTION, "close")
            .header(http::header::CONTENT_TYPE, content_type);
        if let Some(token) = &self.token {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| unreachable("the operator token is not a header value".into()))?;
            value.set_sensitive(true);
            req = req.header(http::header::AUTHORIZATION, value);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let fut = async {
            let argv = Relay::argv(self.token.is_some());
            let io = self
                .relay
                .runtime
                .exec_stream(
                    &self.relay.project,
                    &self.relay.service,
                    &argv,
                    Some(&self.relay.user),
                )
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            exchange(io, req).await.map_err(unreachable)
        };
        let (status, body) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", self.timeout.as_secs())))??;
        if status.is_success() {
            Ok(PackAnswer {
                status: status.as_u16(),
                body,
            })
        } else if status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            // Not the API client's token: ours, as the running pack-exec sees it. A 401 relayed
            // as it is would tell an API client its own bearer token is wrong.
            Err(ControlError::OperatorToken(format!(
                "pack-exec's operator listener at {} refused the bottle's operator token ({}): the running bottle holds another one; `control-plane up` the bottle again to restart it with the token in its project directory",
                self.listener(),
                String::from_utf8_lossy(&body).trim()
            )))
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
    pub async fn install(
        &self,
        dir: &Path,
        flags: InstallFlags,
    ) -> Result<(String, PackAnswer), ControlError> {
        let name = pack_name(dir)?;
        let archive = tar_gz(dir)?;
        let answer = self
            .install_archive(&name, Bytes::from(archive), flags)
            .await?;
        Ok((name, answer))
    }

    /// `PUT /v1/packs/{name}` with a tar or tar.gz the caller already has (the API's body).
    pub async fn install_archive(
        &self,
        name: &str,
        archive: Bytes,
        flags: InstallFlags,
    ) -> Result<PackAnswer, ControlError> {
        check_name(name)?;
        self.send(
            Method::PUT,
            &format!("/v1/packs/{name}{}", flags.query()),
            "application/gzip",
            archive,
        )
        .await
    }

    /// `DELETE /v1/packs/{name}`.
    pub async fn delete(&self, name: &str) -> Result<PackAnswer, ControlError> {
        check_name(name)?;
        self.send(
            Method::DELETE,
            &format!("/v1/packs/{name}"),
            "application/json",
            Bytes::new(),
        )
        .await
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

/// One HTTP/1.1 request and its answer over `io` (a relay's stdin/stdout).
async fn exchange(
    io: crate::runtime::ExecStream,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| error_chain(&e))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {}", error_chain(&e)))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

/// An error with its sources (hyper's top-level message alone says little: "connection
/// closed before message completed" hides the relay's own words).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A pack name goes into a URL path: only the characters pack names are made of (pack-exec
/// checks the full rule, `^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`), so no `/`, `?` or `%` can
/// change which request is sent.
pub fn check_name(name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ControlError::Usage(format!(
            "{name:?} is not a pack name (like cmd.upper)"
        )))
    }
}

/// The `name` of the pack in `dir`, from its manifest (`helmdeck-pack.yaml` or `pack.json`,
/// exactly one: pack-exec's rule, checked here first for a clear CLI error).
pub fn pack_name(dir: &Path) -> Result<String, ControlError> {
    let (name, _) = pack_identity(dir)?;
    Ok(name)
}

/// The `name` and `version` of the pack in `dir`, from its manifest.
pub fn pack_identity(dir: &Path) -> Result<(String, String), ControlError> {
    use bottle_spec::pack_manifest;
    let present: Vec<&str> = pack_manifest::ALL
        .into_iter()
        .filter(|m| dir.join(m).is_file())
        .collect();
    let file = match present.as_slice() {
        [one] => *one,
        [] => {
            return Err(ControlError::Usage(format!(
                "{}: no {} or {} (is it a pack directory?)",
                dir.display(),
                pack_manifest::YAML,
                pack_manifest::JSON
            )))
        }
        _ => {
            return Err(ControlError::Usage(format!(
                "{}: both {} and {} are there: a pack keeps one",
                dir.display(),
                pack_manifest::YAML,
                pack_manifest::JSON
            )))
        }
    };
    let path = dir.join(file);
    let text = std::fs::read(&path).map_err(|e| ControlError::io("cannot read", &path, e))?;
    let value: serde_json::Value = if file == pack_manifest::YAML {
        serde_norway::from_slice(&text)
            .map_err(|e| ControlError::Usage(format!("{}: not YAML: {e}", path.display())))?
    } else {
        serde_json::from_slice(&text)
            .map_err(|e| ControlError::Usage(format!("{}: not JSON: {e}", path.display())))?
    };
    let name = value
        .get("name")
        .and_then(|n| n.as_str())
        .map(String::from)
        .ok_or_else(|| ControlError::Usage(format!("{}: no string `name`", path.display())))?;
    check_name(&name)?;
    let version = match value.get("version") {
        Some(serde_json::Value::String(v)) => v.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    Ok((name, version))
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
    fn flags_become_pack_execs_query_and_names_stay_in_their_segment() {
        assert_eq!(InstallFlags::default().query(), "");
        assert_eq!(
            InstallFlags {
                allow_unsigned: true,
                replace_shipped: true,
                self_test: true,
            }
            .query(),
            "?allow_unsigned=true&replace_shipped=true&self_test=true"
        );
        assert_eq!(
            InstallFlags {
                replace_shipped: true,
                ..Default::default()
            }
            .query(),
            "?replace_shipped=true"
        );
        check_name("cmd.upper").unwrap();
        for bad in [
            "",
            "..",
            "a/b",
            "x?replace_shipped=true",
            "%2e",
            "A.B",
            "../x y",
        ] {
            assert_eq!(check_name(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn missing_name_is_a_usage_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pack.json"), "{}").unwrap();
        assert_eq!(pack_name(tmp.path()).unwrap_err().exit_code(), 2);
    }

    fn request() -> Request<Full<Bytes>> {
        Request::builder()
            .uri("/v1/packs")
            .header(http::header::HOST, "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn the_relays_own_words_reach_the_error() {
        // What an exec stream gives when the relay cannot connect: its stderr as a read error.
        let said = futures_util::stream::iter([Err::<Bytes, _>(crate::runtime::stderr_as_error(
            b"pack-exec-relay: 127.0.0.1:9001: Connection refused (os error 111)\n",
        ))]);
        let io = tokio::io::join(tokio_util::io::StreamReader::new(said), tokio::io::sink());
        let err = exchange(Box::pin(io), request()).await.unwrap_err();
        assert!(err.contains("127.0.0.1:9001: Connection refused"), "{err}");
    }

    #[tokio::test]
    async fn an_answer_over_the_stream_comes_back_whole() {
        let (client, mut server) = tokio::io::duplex(4096);
        let daemon = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut got = vec![0u8; 1024];
            let n = server.read(&mut got).await.unwrap();
            let head = String::from_utf8_lossy(&got[..n]).to_string();
            server
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]")
                .await
                .unwrap();
            head
        });
        let (status, body) = exchange(Box::pin(client), request()).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"[]"[..]));
        assert!(daemon
            .await
            .unwrap()
            .starts_with("GET /v1/packs HTTP/1.1\r\n"));
    }
}
