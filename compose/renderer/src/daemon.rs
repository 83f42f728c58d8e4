//! The five daemons of the bundle. Their facts (ports, uids, config paths, what is published)
//! live in the contract crate `bottle-spec`, shared with the control plane and the image
//! checks; this module only re-exports them for the renderer's callers.

pub use bottle_spec::Daemon;
