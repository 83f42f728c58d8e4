//! Shared plumbing for every sidecar daemon, written once.
//!
//! Every daemon of the bundle (`sidecars pack-exec`, `pipelock`, `egress`, `git-gate`,
//! `supervise`) is an HTTP-ish server with the same needs: load a JSON config whose errors name
//! the bad field, log through `tracing` (text or JSON), serve HTTP with request ids, a health
//! endpoint and JSON error bodies, and shut down cleanly on SIGTERM.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | load a daemon's JSON config; errors carry the JSON path of the bad field |
//! | [`logging`] | `tracing` setup: human text by default, JSON with `SIDECARS_LOG_FORMAT=json` |
//! | [`shutdown`] | one future for "SIGTERM/SIGINT arrived", and a cloneable shutdown token |
//! | [`http`] | hyper 1 server scaffold: accept loop, request ids, access log, graceful drain |
//! | [`body`] | response-body helpers and size-limited request-body reading |
//! | [`error`] | the JSON error body `{"error","message","request_id"}` every daemon answers with |
//! | [`daemon`] | `daemon_main`: the shared `main` of a daemon (logging, config, runtime, exit codes) |
//! | [`ssrf`] | the address policy both proxies apply: odd IPv4 spellings, forbidden ranges, checked resolution |
//! | [`dlp`] | DLP over a request's target, headers and body; where a secret was found (pipelock, egress) |
//! | [`proxy`] | forward-proxy plumbing shared by pipelock and egress: targets, hop-by-hop headers, tunnels |
//! | [`kill_switch`] | the operator's kill switch both proxies obey: a file read at start and on SIGUSR1 |
//! | [`splice`] | zero-copy tunnel relay with `splice(2)` through a pipe per direction |
//! | [`mcp`] | MCP over streamable HTTP: JSON-RPC, sessions, the `/mcp` endpoint, SSE notifications |
//! | [`random`] | unpredictable ids from the OS's CSPRNG |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod daemon;
pub mod dlp;
pub mod error;
pub mod http;
pub mod kill_switch;
pub mod logging;
pub mod mcp;
pub mod proxy;
pub mod random;
pub mod shutdown;
pub mod splice;
pub mod ssrf;
