//! Running an external command (docker, compose) with a deadline, capturing its output, and
//! turning failures into [`RuntimeError`]s that carry the command line and its stderr.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::RuntimeError;

/// A finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// The command line as a user would type it, for messages.
pub fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `argv` (in `cwd` if given) and wait at most `timeout`; the child is killed on timeout.
pub async fn run(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<Finished, RuntimeError> {
    let command = display(argv);
    let (program, args) = argv.split_first().ok_or_else(|| RuntimeError::Spawn {
        command: command.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    tracing::debug!(%command, "running");
    let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
        command: command.clone(),
        source,
    })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Finished {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }),
        Ok(Err(source)) => Err(RuntimeError::Spawn { command, source }),
        Err(_) => Err(RuntimeError::Timeout {
            command,
            seconds: timeout.as_secs(),
        }),
    }
}

/// Start `argv` with its stdin and stdout as one stream ([`super::Runtime::exec_stream`]).
/// Its stderr, if it writes any, becomes the stream's read error once stdout has ended; the
/// child is killed when the stream is dropped.
pub fn spawn_stream(argv: &[String]) -> Result<super::ExecStream, RuntimeError> {
    use tokio::io::AsyncReadExt;

    let command = display(argv);
    let (program, args) = argv.split_first().ok_or_else(|| RuntimeError::Spawn {
        command: command.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
    })?;
    tracing::debug!(%command, "running with a stream");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            command: command.clone(),
            source,
        })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(RuntimeError::Spawn {
            command,
            source: std::io::Error::other("the child's pipes are missing"),
        });
    };
    // stdout, then (when stdout ends) an error made of whatever stderr said.
    let stderr_tail = futures_util::stream::once(async move {
        let mut said = Vec::new();
        let _ = stderr.read_to_end(&mut said).await;
        // Keeps the child (kill_on_drop) as long as the stream is read.
        let _ = child.wait().await;
        if said.is_empty() {
            None
        } else {
            Some(Err::<bytes::Bytes, _>(super::stderr_as_error(&said)))
        }
    });
    let stdout = tokio_util::io::ReaderStream::new(stdout);
    let tail = futures_util::StreamExt::filter_map(stderr_tail, std::future::ready);
    let reader = tokio_util::io::StreamReader::new(futures_util::StreamExt::chain(stdout, tail));
    Ok(Box::pin(tokio::io::join(reader, stdin)))
}

/// Like [`run`], but a non-zero exit is an error carrying the stderr.
pub async fn run_ok(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<Finished, RuntimeError> {
    let finished = run(argv, cwd, timeout).await?;
    if finished.code == Some(0) {
        Ok(finished)
    } else {
        Err(RuntimeError::Failed {
            command: display(argv),
            status: match finished.code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".to_string(),
            },
            stderr: String::from_utf8_lossy(&finished.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn display_quotes_what_a_shell_would_need() {
        assert_eq!(
            display(&argv(&["docker", "a b", "$x", ""])),
            "docker 'a b' '$x' ''"
        );
    }

    #[tokio::test]
    async fn failure_carries_command_and_stderr() {
        let err = run_ok(
            &argv(&["sh", "-c", "echo boom >&2; exit 3"]),
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sh -c 'echo boom >&2; exit 3'")
                && err.contains("exit code 3")
                && err.contains("boom"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn timeout_kills() {
        let t = std::time::Instant::now();
        let err = run(&argv(&["sleep", "30"]), None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let err = run(&argv(&["/nonexistent/prog"]), None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::Spawn { .. }), "{err}");
    }
}
