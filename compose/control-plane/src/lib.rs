//! The control plane of bot-bottle bottles: render a manifest into a compose project, bring
//! it up and down, inspect it, read its logs, and use its command packs — the `control-plane`
//! binary. User documentation: `docs/control-plane.md`.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`api`] | types shared by the CLI and the later HTTP API: summaries, states, the error type and its exit codes |
//! | [`core`] | the operations (render, up, down, ps, logs, packs, approvals), written once for every front end |
//! | [`runtime`] | the [`runtime::Runtime`] seam, its compose-CLI and Docker Engine API backends, and backend selection |
//! | [`state`] | the state directory: one project directory and record per bottle |
//! | [`source`] | where a manifest and its packs come from (a file, or the embedded example) |
//! | [`project`] | writing a rendered bottle into its project directory |
//! | [`logs`] | picking one daemon's lines from the sidecars container's output |
//! | [`packs`] | HTTP client for a bottle's pack-exec (agent and operator listeners), pack archives |
//! | [`catalog`] | a helmdeck marketplace catalog (`index.yaml`): one named pack's directory, checked |
//! | [`host_guard`] | the firewall rule that keeps the agent from services on the host |
//! | [`ca`] | the bottle's CA (egress): generated once, key `root:root 0400` under `secrets/`, the agent's bundle |
//! | [`secrets`] | the secrets the control plane generates (pack-exec's operator token), under `secrets/` |
//! | [`owners`] | who owns each file of the project directory (each daemon its config, root the secrets) |
//! | [`credentials`] | the operator's credential files, checked at `up` (root-owned, no group/other bits) |
//! | [`approvals`] | supervise's approval queue, through `supervise-ctl` in the sidecars container |
//! | [`server`] | `serve`: the HTTP API over the same controller (routes, bearer auth) |
//! | [`timing`] | one trace line per phase of `up` (where the time goes) |
//! | [`try_it`] | the "try it" commands `up` prints for the default bottle |
//! | [`cli`] | argh definitions and output formatting |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod approvals;
pub mod ca;
pub mod catalog;
pub mod cli;
pub mod core;
pub mod credentials;
pub mod host_guard;
pub mod logs;
pub mod owners;
pub mod packs;
pub mod project;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod source;
pub mod state;
pub mod timing;
pub mod try_it;
