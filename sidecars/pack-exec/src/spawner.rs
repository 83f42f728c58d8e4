//! Running a call through sidecar-init's handler-spawn service (`bottle_spec::spawn`).
//!
//! Why: in the bundle pack-exec runs under its own uid with no capability, so it cannot start
//! a handler under another uid — and a handler under pack-exec's uid could read its operator
//! token or signal it. init starts the handler under a free handler uid with the bottle's
//! per-call limits and, after it exits, removes every process and file it left. pack-exec keeps
//! its side of the work: it makes the three pipes (handing init the handler's ends), feeds the
//! input, reads the capped output, enforces the timeout by asking init to kill the call.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::pin;
use std::process::ExitStatus;

use bottle_spec::spawn::{Event, Op, Request};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use crate::exec::{describe, read_capped, End, ExecError};
use crate::manifest::{Pack, HANDLER_PATH};
use crate::stderr;

/// Run `pack` with `input` through init at `socket`.
pub async fn run(
    socket: &Path,
    pack: &Pack,
    input: &[u8],
    call_id: &str,
) -> Result<Vec<u8>, ExecError> {
    let unavailable = |e: io::Error| {
        ExecError::Unavailable(format!(
            "cannot reach sidecar-init's handler-spawn service at {}: {e}",
            socket.display()
        ))
    };
    // Already absolute: resolved once at install/startup (manifest::resolve_command).
    let mut argv = vec![pack.program.display().to_string()];
    argv.extend(pack.args.iter().map(|a| a.to_string_lossy().into_owned()));
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("PATH".to_string(), HANDLER_PATH.to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ]);
    env.extend(pack.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("PACK_NAME".into(), pack.name.clone());
    env.insert("PACK_CALL_ID".into(), call_id.to_string());
    env.insert("PACK_DIR".into(), pack.dir.display().to_string());
    let request = Request {
        call_id: call_id.to_string(),
        pack: pack.name.clone(),
        pack_dir: pack.dir.clone(),
        argv,
        env,
    };

    let internal = |what: &str, e: io::Error| ExecError::Internal(format!("{what}: {e}"));
    let (stdin_r, stdin_w) = pipe_pair().map_err(|e| internal("cannot make a pipe", e))?;
    let (stdout_r, stdout_w) = pipe_pair().map_err(|e| internal("cannot make a pipe", e))?;
    let (stderr_r, stderr_w) = pipe_pair().map_err(|e| internal("cannot make a pipe", e))?;

    let stream = UnixStream::connect(socket).await.map_err(unavailable)?;
    send_request(&stream, &request, [&stdin_r, &stdout_w, &stderr_w])
        .await
        .map_err(unavailable)?;
    // init holds the handler's ends now; ours must close so EOFs arrive.
    drop((stdin_r, stdout_w, stderr_w));

    let (read, mut write) = stream.into_split();
    let mut events = BufReader::new(read).lines();
    match next_event(&mut events).await? {
        Event::Started { .. } => {}
        Event::Error { code, message } if code == "busy" => {
            return Err(ExecError::Busy(message));
        }
        Event::Error { code, message } if code == "spawn" => {
            return Err(ExecError::Spawn(io::Error::other(message)));
        }
        Event::Error { code, message } if code == bottle_spec::spawn::SANDBOX_UNAVAILABLE => {
            return Err(ExecError::Unavailable(message));
        }
        other => return Err(ExecError::Internal(format!("init answered {other:?}"))),
    }

    let mut stdin = pipe::Sender::from_owned_fd(stdin_w).map_err(|e| internal("stdin", e))?;
    let stdout = pipe::Receiver::from_owned_fd(stdout_r).map_err(|e| internal("stdout", e))?;
    let stderr = pipe::Receiver::from_owned_fd(stderr_r).map_err(|e| internal("stderr", e))?;
    let write_input = async move {
        // EPIPE just means the handler did not read all of its input: its business.
        let _ = stdin.write_all(input).await;
        drop(stdin);
    };
    let mut stdin_fut = pin!(write_input);
    let mut stdout_fut = pin!(read_capped(stdout, pack.max_output_bytes));
    let mut stderr_fut = pin!(stderr::capture(stderr, &pack.name, call_id));
    let mut deadline = pin!(tokio::time::sleep(pack.timeout));

    let mut out: Option<Vec<u8>> = None;
    let mut err: Option<stderr::Captured> = None;
    let mut status: Option<ExitStatus> = None;
    let mut stdin_done = false;
    let mut end: Option<End> = None;
    loop {
        if status.is_some() && (end.is_some() || (out.is_some() && err.is_some())) {
            break;
        }
        tokio::select! {
            r = &mut stdout_fut, if out.is_none() && end.is_none() => match r {
                Ok(Some(bytes)) => out = Some(bytes),
                Ok(None) => end = Some(End::Overflow),
                Err(e) => end = Some(End::Broken(format!("reading the handler's stdout: {e}"))),
            },
            c = &mut stderr_fut, if err.is_none() && end.is_none() => err = Some(c),
            () = &mut stdin_fut, if !stdin_done => stdin_done = true,
            () = &mut deadline, if end.is_none() => end = Some(End::Timeout),
            ev = next_event(&mut events), if status.is_none() => match ev? {
                Event::Exited { code, signal } => {
                    status = Some(match (code, signal) {
                        (Some(c), _) => ExitStatus::from_raw((c & 0xff) << 8),
                        (None, Some(s)) => ExitStatus::from_raw(s & 0x7f),
                        (None, None) => ExitStatus::from_raw(libc_sigkill()),
                    });
                }
                other => return Err(ExecError::Internal(format!("init answered {other:?}"))),
            },
        }
        if matches!(end, Some(End::Timeout | End::Overflow | End::Broken(_))) && status.is_none() {
            // Ask once; init kills the whole uid and answers `exited` when it is all gone.
            let mut line = serde_json::to_vec(&Op::Kill).unwrap_or_default();
            line.push(b'\n');
            let _ = write.write_all(&line).await;
            // Wait for `exited` only: stdout/stderr are no longer interesting.
            let ev = next_event(&mut events).await?;
            if let Event::Exited { .. } = ev {
                status = Some(ExitStatus::from_raw(libc_sigkill()));
            }
        }
    }
    let status = status.unwrap_or_else(|| ExitStatus::from_raw(libc_sigkill()));
    match end {
        Some(End::Timeout) => Err(ExecError::Timeout(pack.timeout)),
        Some(End::Overflow) => Err(ExecError::OutputTooLarge(pack.max_output_bytes)),
        Some(End::Broken(msg)) => Err(ExecError::Internal(msg)),
        Some(End::Done) | None if status.success() => Ok(out.unwrap_or_default()),
        Some(End::Done) | None => Err(ExecError::Failed {
            status: describe(status),
            stderr: err.map(|c| c.tail()).unwrap_or_default(),
        }),
    }
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

async fn next_event(
    events: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<Event, ExecError> {
    match events.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line)
            .map_err(|e| ExecError::Internal(format!("bad answer from init: {e}"))),
        Ok(None) => Err(ExecError::Unavailable(
            "sidecar-init closed the handler-spawn connection".into(),
        )),
        Err(e) => Err(ExecError::Internal(format!("reading init's answer: {e}"))),
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// The request frame with the three descriptors attached.
async fn send_request(
    stream: &UnixStream,
    request: &Request,
    fds: [&OwnedFd; 3],
) -> io::Result<()> {
    let body = serde_json::to_vec(request).map_err(io::Error::other)?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
    let mut sent = 0;
    while sent < frame.len() {
        stream.writable().await?;
        let chunk = &frame[sent..];
        let attach = sent == 0;
        let result = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(chunk)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage] = if attach { &cmsg } else { &[] };
            sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
                .map_err(io::Error::from)
        });
        match result {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
