//! Shutdown signalling.
//!
//! A daemon's `run(listener, config, shutdown)` takes any future as its shutdown trigger, so
//! tests decide when a server stops and production passes [`signal`]. [`Shutdown`] fans one
//! trigger out to every task that must notice it (accept loops, in-flight work).

use std::future::Future;

use tokio::sync::watch;

/// Resolves when the process receives SIGTERM or SIGINT (what `docker stop` and Ctrl-C send).
///
/// The handlers are installed when this is *called*, not when the future is first polled: a
/// daemon that logs "listening" must already own SIGTERM, or a stop arriving right then would
/// kill it with the default action (seen in a test that signalled right after "listening").
/// Must be called inside a tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            // Installing a handler only fails without a tokio runtime's signal driver; then
            // waiting forever (until killed) is the honest behaviour.
            _ => std::future::pending::<()>().await,
        }
    }
}

/// Run `f` on every `kind` signal (SIGHUP: reload) until `shutdown` fires. The handler is
/// installed when this is called, before the daemon serves: a signal's default action (for
/// SIGHUP and SIGUSR1: terminate) must never reach a running daemon.
pub fn on_signal(
    kind: tokio::signal::unix::SignalKind,
    shutdown: Shutdown,
    f: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let mut signals = tokio::signal::unix::signal(kind)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = signals.recv() => match got {
                    Some(()) => f(),
                    None => break,
                },
                _ = shutdown.wait() => break,
            }
        }
    });
    Ok(())
}

/// A cloneable "we are shutting down" flag that tasks can await.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half of [`Shutdown`]: trigger it once, every clone notices.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new flag and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A flag that is triggered when `fut` completes (e.g. [`signal`] or a test's oneshot).
    pub fn from_future(fut: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            fut.await;
            trigger.trigger();
        });
        shutdown
    }

    /// True once shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has begun (immediately if it already has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger was dropped without firing: treat as shutdown too, so no
        // task waits forever on a flag nobody can set.
        let _ = rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    /// Begin shutdown.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}
