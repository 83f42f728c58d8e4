//! The single writer of init's stdout and stderr.
//!
//! Why one writer per stream: lines from many daemons (and init's own) must never be split or
//! interleaved, and a slow reader of init's stdout (a paused `docker logs` consumer) must not
//! freeze supervision. Every producer hands complete, already-prefixed batches of lines to the
//! stream's single writer, which writes one batch completely before the next.
//!
//! When the stream is a pipe (docker's case) the writer is a task on init's own thread: it
//! reopens the pipe through `/proc/self/fd/N` to get a private, non-blocking file description
//! (init never flips O_NONBLOCK on a description it shares) and waits for writability like any
//! socket, so no thread hand-off costs a wake-up per batch. Otherwise (terminal, file, or the
//! reopen is refused) the writer is a small thread doing blocking writes.
//!
//! Memory is bounded by a byte budget per stream (a fair FIFO semaphore): a daemon's relay
//! task waits for budget before handing over a batch, so a fast daemon is pushed back onto its
//! own pipe (and then blocks in `write`) instead of growing init's memory, and waiting relays
//! are served in arrival order so no daemon starves. Init's own lines bypass the budget: they
//! are few and must never be lost or block.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use std::sync::Arc;
use std::thread;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Bytes of daemon output that may wait for one stream's writer.
pub const BUDGET_BYTES: usize = 1 << 20;

/// Which of init's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// Name used in JSON log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

enum Msg {
    Data(Batch, Option<OwnedSemaphorePermit>),
    Barrier(oneshot::Sender<()>),
}

/// A batch of complete output lines on its way to a stream's writer.
///
/// Why not a plain `Vec<u8>`: batch buffers are reused, and a `Vec` that is cleared for reuse
/// must be zero-filled again before the relay's block copies may write into it, which cost a
/// full extra pass over every relayed byte. A batch keeps the bytes past its end initialized
/// (stale scratch), so [`Batch::scratch`] hands them out without touching them.
#[derive(Debug, Default)]
pub struct Batch {
    /// All initialized: `..len` is the batch, the rest stale scratch.
    buf: Vec<u8>,
    len: usize,
}

impl Batch {
    /// The batch's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends through a `Vec` (for the slow paths that format with `Vec` methods).
    pub fn append_with<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.buf.truncate(self.len);
        let r = f(&mut self.buf);
        self.len = self.buf.len();
        r
    }

    /// Appends `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.append_with(|v| v.extend_from_slice(bytes));
    }

    /// Writable space: returns the whole buffer, of which at least `need` bytes from
    /// [`Batch::len`] on may be written; then [`Batch::set_len`] says how far the batch now
    /// reaches. Only grows (zero-filling just the new part) when the buffer is too small.
    pub fn scratch(&mut self, need: usize) -> &mut [u8] {
        let want = self.len + need;
        if self.buf.len() < want {
            let grow = want.max(self.buf.len() * 2).max(4096);
            self.buf.resize(grow, 0);
        }
        &mut self.buf
    }

    /// Length of the batch in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Sets the batch's length after writing into [`Batch::scratch`]; clamped to the buffer.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len());
    }
}

impl From<Vec<u8>> for Batch {
    fn from(buf: Vec<u8>) -> Self {
        let len = buf.len();
        Batch { buf, len }
    }
}

/// Batch buffers kept for reuse per stream: big buffers come from `mmap` in musl's allocator,
/// and faulting in fresh pages for every batch would cost more than the relay itself.
const POOL_BUFFERS: usize = 8;

type Pool = Arc<std::sync::Mutex<Vec<Batch>>>;

/// Handle to one stream's writer.
#[derive(Clone)]
pub struct Sink {
    tx: UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    pool: Pool,
}

fn give_back(pool: &Pool, mut buf: Batch) {
    buf.len = 0; // keeps the bytes: see `Batch`
    if let Ok(mut p) = pool.lock() {
        if p.len() < POOL_BUFFERS {
            p.push(buf);
        }
    }
}

impl Sink {
    /// An empty batch, reusing an earlier batch's buffer when possible.
    pub fn buffer(&self) -> Batch {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    /// Hands a batch of complete lines to the writer, waiting (asynchronously) for budget.
    pub async fn send(&self, batch: Batch) {
        let want = batch.len().clamp(1, BUDGET_BYTES) as u32;
        let permit = self.budget.clone().acquire_many_owned(want).await.ok();
        let _ = self.tx.send(Msg::Data(batch, permit));
    }

    /// Hands over a line at once, outside the budget (init's own lines).
    pub fn send_now(&self, line: Vec<u8>) {
        let _ = self.tx.send(Msg::Data(line.into(), None));
    }

    /// Waits until everything handed over so far has been written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Both of init's streams.
#[derive(Clone)]
pub struct Output {
    /// Init's stdout.
    pub stdout: Sink,
    /// Init's stderr.
    pub stderr: Sink,
}

impl Output {
    /// Starts the two writers (must be called inside the tokio runtime).
    pub fn start() -> io::Result<Output> {
        Ok(Output {
            stdout: start_sink(Stream::Stdout)?,
            stderr: start_sink(Stream::Stderr)?,
        })
    }

    /// The sink for `stream`.
    pub fn sink(&self, stream: Stream) -> &Sink {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// Waits until both streams have written everything handed over so far.
    pub async fn flush(&self) {
        self.stdout.flush().await;
        self.stderr.flush().await;
    }
}

fn start_sink(stream: Stream) -> io::Result<Sink> {
    let (tx, rx) = unbounded_channel();
    let pool: Pool = Arc::default();
    let p = pool.clone();
    match private_nonblocking_pipe(stream) {
        Some(fd) => {
            tokio::spawn(async_writer(fd, rx, p));
        }
        None => {
            thread::Builder::new()
                .name(format!("out-{}", stream.as_str()))
                .stack_size(64 * 1024)
                .spawn(move || writer(stream, rx, p))?;
        }
    }
    Ok(Sink {
        tx,
        budget: Arc::new(Semaphore::new(BUDGET_BYTES)),
        pool,
    })
}

/// If `stream` is a pipe, a new private description of it, registered with the reactor.
fn private_nonblocking_pipe(stream: Stream) -> Option<pipe::Sender> {
    use nix::sys::stat::{fstat, SFlag};
    use std::os::unix::fs::OpenOptionsExt;
    let n = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    let st = fstat(n).ok()?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{n}"))
        .ok()?;
    let _ = nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(crate::relay::PIPE_SIZE),
    );
    pipe::Sender::from_file(file).ok()
}

async fn async_writer(mut out: pipe::Sender, mut rx: UnboundedReceiver<Msg>, pool: Pool) {
    let mut broken = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Data(buf, permit) => {
                if !broken {
                    broken = out.write_all(buf.as_slice()).await.is_err();
                }
                drop(permit);
                give_back(&pool, buf);
            }
            Msg::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn writer(stream: Stream, mut rx: UnboundedReceiver<Msg>, pool: Pool) {
    let out = io::stdout();
    let err = io::stderr();
    // When init's output is a pipe, a bigger pipe buffer means fewer, larger writes (best
    // effort; fails harmlessly on a terminal or file).
    let fd = match stream {
        Stream::Stdout => out.as_fd().as_raw_fd(),
        Stream::Stderr => err.as_fd().as_raw_fd(),
    };
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(crate::relay::PIPE_SIZE),
    );
    let mut broken = false;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(buf, permit) => {
                if !broken {
                    let r = match stream {
                        Stream::Stdout => write_all(out.as_fd(), buf.as_slice()),
                        Stream::Stderr => write_all(err.as_fd(), buf.as_slice()),
                    };
                    // EPIPE & co: nobody reads our output any more; keep supervising and keep
                    // draining (so budgets are released), but stop trying to write.
                    broken = r.is_err();
                }
                drop(permit);
                give_back(&pool, buf);
            }
            Msg::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// `write(2)` until all of `buf` is out; copes with EINTR and a non-blocking descriptor.
fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut buf: &[u8]) -> nix::Result<()> {
    use nix::errno::Errno;
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
