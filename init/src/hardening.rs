//! What every supervised child gets before exec, and what init applies to itself.
//!
//! - `PR_SET_NO_NEW_PRIVS`: no exec can ever gain privileges (setuid binaries, file caps),
//!   whatever the container runtime set.
//! - `RLIMIT_CORE` = 0: a daemon holding a credential never leaves a core file with it.
//! - For pack handlers, the per-call limits (processes per uid, address space, file size,
//!   open files): a fork bomb or a disk filler in a handler stays inside its call.
//!
//! Capabilities need no code here: a child that switches from uid 0 to another uid loses its
//! permitted, effective and ambient sets (no `SECBIT_KEEP_CAPS`), so only init keeps any.
//! Every function here is a thin syscall wrapper, safe to call between fork and exec.

use std::io;

use nix::sys::resource::{setrlimit, Resource};

use crate::config::HandlerLimits;

/// Hardens the calling (child) process; `limits` for pack handlers.
pub fn in_child(limits: Option<&HandlerLimits>) -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(io::Error::from)?;
    if let Some(l) = limits {
        setrlimit(Resource::RLIMIT_NPROC, l.processes, l.processes).map_err(io::Error::from)?;
        setrlimit(
            Resource::RLIMIT_AS,
            l.address_space_bytes,
            l.address_space_bytes,
        )
        .map_err(io::Error::from)?;
        setrlimit(Resource::RLIMIT_FSIZE, l.file_size_bytes, l.file_size_bytes)
            .map_err(io::Error::from)?;
        setrlimit(Resource::RLIMIT_NOFILE, l.open_files, l.open_files).map_err(io::Error::from)?;
    }
    Ok(())
}

/// init itself dumps no core: it holds credentials in memory while handing them out.
pub fn no_core_dumps() {
    if let Err(e) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!("cannot disable core dumps of init: {e}");
    }
}
