//! Bottle manifest → compose project: a pure renderer.
//!
//! A bottle is one compose project with two services: the `agent` and the `sidecars` container
//! (every daemon under sidecar-init). This crate turns the user's manifest into a typed compose
//! model, the per-daemon config files and the list of pack directories to copy — without any
//! I/O, clock or randomness, so the same manifest always renders the same bytes (golden tests).
//! The control plane does the I/O. User documentation: `docs/compose.md`.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`manifest`] | the manifest's types; TOML/JSON parsing with field paths |
//! | [`validate`] | every semantic problem of a manifest at once, each with its path |
//! | [`daemon`] | the five daemons (re-exported from the contract crate `bottle-spec`) |
//! | [`render`] | manifest + options → [`Bundle`] (compose model, config files, packs) |
//! | [`model`] | typed compose model (services, networks, volumes) |
//! | [`configs`] | one module per daemon config file, plus sidecar-init's `init.json` |
//! | [`yaml`] | model → YAML through `serde_norway`, with compose's `$` escaping |
//! | [`error`] | typed errors: parse errors with a path, lists of problems |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod configs;
pub mod daemon;
pub mod error;
pub mod manifest;
pub mod model;
pub mod render;
pub mod seccomp;
pub mod validate;
pub mod yaml;

/// The contract crate (daemon table, bundle paths, subnets), for callers of the renderer that
/// need its types (e.g. `RenderOptions::internal_subnet`) without depending on it themselves.
pub use bottle_spec;
pub use daemon::Daemon;
pub use error::{ManifestError, Problem, RenderError};
pub use manifest::Manifest;
pub use render::{render, Bundle, CaFiles, RenderOptions, DEFAULT_SIDECAR_IMAGE};
pub use yaml::to_yaml;
