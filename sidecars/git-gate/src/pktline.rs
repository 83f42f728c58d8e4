//! The git:// front: the one pkt-line a client sends first, and `ERR` answers.
//!
//! A git:// connection opens with `<4 hex length>git-upload-pack /app.git\0host=h:9418\0`,
//! optionally followed by `\0version=2\0` (protocol v2). Everything after this line belongs to
//! `git upload-pack`/`git receive-pack`, which git-gate spawns and wires to the socket.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest pkt-line git allows (65520 bytes including the 4-byte header).
pub const MAX_PKT: usize = 65520;

/// Which git service the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Fetch/clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    /// The git subcommand that implements it.
    pub fn git_subcommand(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::ReceivePack => "receive-pack",
        }
    }
}

/// A parsed git:// request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// Fetch or push.
    pub service: Service,
    /// The requested path as sent, e.g. `/app.git`.
    pub path: String,
    /// Extra parameters (protocol v2's `version=2`), for `GIT_PROTOCOL`.
    pub extra: Vec<String>,
}

/// Why the first line was refused (the text goes back to the client as `ERR`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The client closed before sending anything (TCP health probes do this).
    #[error("connection closed before a request")]
    Closed,
    /// Not a well-formed pkt-line request.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A service other than upload-pack/receive-pack (e.g. upload-archive).
    #[error("service not offered: {0}")]
    Service(String),
}

/// Read and parse the request line.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<GitRequest, RequestError> {
    let mut len = [0u8; 4];
    if let Err(err) = r.read_exact(&mut len).await {
        return Err(if err.kind() == std::io::ErrorKind::UnexpectedEof {
            RequestError::Closed
        } else {
            RequestError::Malformed("unreadable length")
        });
    }
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or(RequestError::Malformed("bad pkt-line length"))?;
    if !(5..=MAX_PKT).contains(&len) {
        return Err(RequestError::Malformed("pkt-line length out of range"));
    }
    let mut payload = vec![0u8; len - 4];
    r.read_exact(&mut payload)
        .await
        .map_err(|_| RequestError::Malformed("truncated request"))?;
    parse(&payload)
}

/// Parse a request payload (without its length header).
pub fn parse(payload: &[u8]) -> Result<GitRequest, RequestError> {
    let mut fields = payload.split(|&b| b == 0);
    let first = fields.next().ok_or(RequestError::Malformed("empty"))?;
    let first = std::str::from_utf8(first).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let first = first.trim_end_matches('\n');
    let (command, path) = first
        .split_once(' ')
        .ok_or(RequestError::Malformed("expected `<service> <path>`"))?;
    let service = match command {
        "git-upload-pack" => Service::UploadPack,
        "git-receive-pack" => Service::ReceivePack,
        other => return Err(RequestError::Service(other.chars().take(40).collect())),
    };
    // host=..., then an empty field, then extra parameters.
    let mut extra = Vec::new();
    let mut after_empty = false;
    for field in fields {
        if field.is_empty() {
            after_empty = true;
            continue;
        }
        if after_empty {
            if let Ok(s) = std::str::from_utf8(field) {
                extra.push(s.to_string());
            }
        }
    }
    Ok(GitRequest {
        service,
        path: path.to_string(),
        extra,
    })
}

/// The `GIT_PROTOCOL` value to hand the service, like `git daemon` does: only the `version=N`
/// parameter is passed on.
pub fn git_protocol(extra: &[String]) -> Option<String> {
    extra
        .iter()
        .find(|e| {
            e.strip_prefix("version=")
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        })
        .cloned()
}

/// An `ERR` pkt-line: the client prints `fatal: remote error: <msg>`.
pub fn err_packet(msg: &str) -> Vec<u8> {
    let body = format!("ERR {msg}\n");
    let mut out = format!("{:04x}", body.len() + 4).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v0_and_v2_requests() {
        let r = parse(b"git-upload-pack /app.git\0host=sidecars:9418\0").unwrap();
        assert_eq!(r.service, Service::UploadPack);
        assert_eq!(r.path, "/app.git");
        assert!(r.extra.is_empty());
        let r = parse(b"git-receive-pack /app\0host=x\0\0version=2\0").unwrap();
        assert_eq!(r.service, Service::ReceivePack);
        assert_eq!(git_protocol(&r.extra).as_deref(), Some("version=2"));
        assert_eq!(git_protocol(&["version=2;rm -rf".into()]), None);
    }

    #[test]
    fn refuses_other_services_and_garbage() {
        assert!(matches!(
            parse(b"git-upload-archive /app\0"),
            Err(RequestError::Service(_))
        ));
        assert!(matches!(parse(b"nospace"), Err(RequestError::Malformed(_))));
    }

    #[tokio::test]
    async fn reads_one_pkt_line() {
        let mut data: &[u8] = b"0031git-upload-pack /app.git\0host=localhost:9418\0rest";
        let r = read_request(&mut data).await.unwrap();
        assert_eq!(r.path, "/app.git");
        let mut empty: &[u8] = b"";
        assert_eq!(read_request(&mut empty).await, Err(RequestError::Closed));
        let mut bad: &[u8] = b"zzzz";
        assert!(read_request(&mut bad).await.is_err());
    }

    #[test]
    fn err_packet_is_a_pkt_line() {
        assert_eq!(err_packet("no"), b"000bERR no\n");
    }
}
