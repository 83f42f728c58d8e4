//! sidecar-init: the static PID 1 of the sidecar bundle. It starts a set of daemons in
//! dependency order, waits for their ready probes, relays their logs with a name prefix, reaps
//! every zombie, restarts crashed daemons with backoff, routes signals only to the daemons that
//! ask for them, and shuts everything down in reverse order inside the grace period. It also has
//! a tini-like single-command mode. User documentation: `docs/init.md`.
//!
//! # Layout
//!
//! | module | job |
//! | --- | --- |
//! | [`config`] | config file types (serde, `deny_unknown_fields`) and loading with JSON paths |
//! | [`validate`] | every semantic problem at once; the enabled-daemon [`validate::Plan`] |
//! | [`graph`] | dependency cycles, reverse edges, start levels |
//! | [`supervisor`] | the pure state machine `handle(event) -> Vec<Action>`: all policy |
//! | [`driver`] | the event loop executing actions; the one owner of `waitpid` |
//! | [`spawn`] | fork/exec and raw syscalls: the only `unsafe` in the crate |
//! | [`reaper`] | draining `waitpid(-1, WNOHANG)`, exit statuses, subreaper setup |
//! | [`signals`] | signal names, forwarding rules, handler registration |
//! | [`relay`] | framing daemon output into prefixed lines (chunking, partial flush) |
//! | [`output`] | the single writer per output stream, with a byte budget |
//! | [`log`] | init's own lines through `tracing`; text/JSON line formats |
//! | [`probe`] | TCP/HTTP ready probes and the tiny HTTP client |
//! | [`notify`] | fire-and-forget event POSTs to `notify_url` |
//! | [`control`] | control socket protocol (shared by server and `health`/`status`) |
//! | [`credentials`] | each daemon's private copy of the credentials it declares |
//! | [`handlers`] | the handler-spawn service: pack handlers started under their own uids |
//! | [`hardening`] | what every child gets before exec: no_new_privs, no core dumps, limits |
//! | [`single`] | `sidecar-init -- CMD ARGS...` (tini semantics) |
//! | [`error`] | typed errors and their exit codes |
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod credentials;
pub mod driver;
pub mod error;
pub mod graph;
pub mod handlers;
pub mod hardening;
pub mod jail;
pub mod log;
pub mod notify;
pub mod output;
pub mod pack_proxy;
pub mod probe;
pub mod reaper;
pub mod relay;
pub mod signals;
pub mod single;
pub mod spawn;
pub mod supervisor;
pub mod validate;
