//! Waking `wait_for_approval` callers when a decision lands.
//!
//! Decisions made through this daemon (the operator API) bump a `watch` counter, which wakes
//! every waiter at once. Decisions written by another process (`supervise-ctl` editing the
//! queue directly while the daemon runs) are seen by a cheap `stat` of the decision file every
//! [`POLL_INTERVAL`] — only while someone is actually waiting, so an idle daemon does nothing.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use sidecars_common::shutdown::Shutdown;

use crate::queue::{Approval, Queue, QueueError};

/// How often a waiter re-checks the queue directory for out-of-process decisions.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Fan-out of "some decision was just made".
#[derive(Debug)]
pub struct Decisions {
    tx: watch::Sender<u64>,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            tx: watch::channel(0).0,
        }
    }
}

impl Decisions {
    /// Wake every waiter (they re-read their request and go back to sleep if it wasn't theirs).
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Return `id` as soon as it is decided, or as it stands at `deadline` or on shutdown.
    pub async fn wait(
        &self,
        queue: &Queue,
        id: &str,
        deadline: Instant,
        shutdown: &Shutdown,
    ) -> Result<Approval, QueueError> {
        let mut rx = self.tx.subscribe();
        loop {
            // Subscribe before reading so a decision between the read and the sleep wakes us.
            rx.mark_unchanged();
            let current = read(queue, id).await?;
            if current.status != crate::queue::Status::Pending
                || Instant::now() >= deadline
                || shutdown.is_triggered()
            {
                return Ok(current);
            }
            let mut next_check = Instant::now() + POLL_INTERVAL;
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    _ = tokio::time::sleep_until(next_check.min(deadline)) => {
                        if Instant::now() >= deadline || queue.is_decided(id) {
                            break;
                        }
                        next_check = Instant::now() + POLL_INTERVAL;
                    }
                    _ = shutdown.wait() => break,
                }
            }
        }
    }
}

/// Read an approval off the async runtime's worker threads.
pub async fn read(queue: &Queue, id: &str) -> Result<Approval, QueueError> {
    let queue = queue.clone();
    let id = id.to_string();
    blocking(move || queue.get(&id)).await
}

/// Run blocking queue I/O on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueueError> + Send + 'static,
) -> Result<T, QueueError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(QueueError::Io {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("queue task failed: {join}")),
        }),
    }
}
