//! The pack handler jail: what a handler may touch, prepared by init (safe code); the steps
//! that must run in the forked child live in [`crate::spawn`].
//!
//! A handler gets, per call:
//! - **its own user and network namespace** (`unshare(CLONE_NEWUSER | CLONE_NEWNET |
//!   CLONE_NEWIPC)` as the call's uid, mapped to itself): only a loopback interface, so no
//!   TCP, UDP (DNS included), raw or netlink traffic can leave, and abstract unix sockets are
//!   the jail's own. On that loopback, `127.0.0.1:`[`bottle_spec::HANDLER_PROXY_PORT`] is a
//!   listener the child creates and hands to init; init relays each connection to pipelock's
//!   pack listener ([`crate::pack_proxy`]), so the proxy variables are the one way out. Port
//!   rules alone (Landlock's TCP rules) would not do: they cannot tell pipelock from an
//!   outside host on the same port.
//! - **Landlock** (files; TCP connect to the proxy port only; signal and abstract-socket
//!   scoping where the kernel has them): read and execute the system directories, except
//!   `/etc/sidecars` and the shipped packs; read its own pack directory; read and write its
//!   temp dir; a few `/dev` nodes; its own `/proc/<pid>`.
//! - **a seccomp filter** installed last before `exec`: no `ptrace`/`process_vm_*`, no new
//!   namespaces, mounts, keyrings, BPF, perf, io_uring, module or kexec calls, and sockets of
//!   the unix and IP families only, never raw.
//!
//! Fail closed: [`Jail::prepare`] probes the whole sequence once at start (a child that runs
//! every step, then execs a path that does not exist). If any step fails, every call is
//! refused with `sandbox_unavailable` naming the step, and `sidecar-init health` says so —
//! unless the operator set the unsafe opt-out, which runs handlers unjailed with a warning
//! on every call.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// System trees a handler may read and execute (those that exist).
const SYSTEM_ROOTS: [&str; 9] = [
    "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
];
/// Device nodes a handler may read and write.
const DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];
/// Machine-wide `/proc` files a handler may read (no process's own files).
const PROC_FILES: [&str; 6] = [
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
];

/// Whether handlers are jailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailState {
    /// Every step works here.
    Ready {
        /// The kernel's Landlock ABI.
        landlock_abi: i32,
    },
    /// The kernel or runtime cannot give the jail: calls are refused.
    Unavailable(String),
    /// The operator opted out (`unsafe-fallback` where the jail cannot be had, or
    /// `unsafe-off`): handlers run unjailed.
    Unjailed(String),
}

impl JailState {
    /// One line for `status`/`health`, and whether it counts as healthy.
    pub fn describe(&self) -> (bool, String) {
        match self {
            JailState::Ready { landlock_abi } => (
                true,
                format!(
                    "ready: user+network namespace per call, Landlock ABI {landlock_abi}, seccomp filter"
                ),
            ),
            JailState::Unavailable(why) => (false, format!("unavailable, calls refused: {why}")),
            JailState::Unjailed(why) => (
                true,
                format!("UNSAFE: handlers run unjailed: {why}"),
            ),
        }
    }
}

/// What init prepared once for every call's jail.
#[derive(Debug)]
pub struct Jail {
    abi: ABI,
    landlock_abi: i32,
    /// Read/execute rules on the system trees (O_PATH descriptors opened at start).
    system: Vec<(OwnedFd, BitFlags<AccessFs>)>,
    filters: Vec<BpfProgram>,
    pack_roots: Vec<PathBuf>,
    /// Built rulesets by handler uid and pack dir (see [`RulesetCache`]).
    rulesets: std::sync::Mutex<RulesetCache>,
}

/// How many calls one cached ruleset serves before it is built afresh. Each call's child adds
/// two rules to it (its temp dir, its `/proc/<pid>`), so this bounds its growth.
const RULESET_USES: u32 = 128;
/// Cached rulesets kept at most (handler uids × packs); past it the cache starts over.
const RULESETS_CACHED: usize = 1024;

/// Landlock rulesets kept between calls: building one adds a rule per system tree (≈150
/// `landlock_add_rule` calls, half a millisecond of init's time per call), the same each time
/// for a given uid and pack. One ruleset serves one handler uid and one pack directory only,
/// so the rules a call's child adds (its temp dir and `/proc/<pid>`, both gone when the call
/// ends: init kills the uid's processes and removes the dir) are never seen by another
/// uid's or another pack's handler, and a later call of the same uid and pack reaches
/// nothing through them: a rule names an inode, and those inodes no longer have a path.
#[derive(Debug, Default)]
struct RulesetCache {
    entries: HashMap<(u32, PathBuf), CachedRuleset>,
}

impl RulesetCache {
    /// A new descriptor of the ruleset for `uid` and `pack_dir`, built by `build` when there
    /// is none, it has served [`RULESET_USES`] calls, or the pack dir is another directory.
    fn get_or_build(
        &mut self,
        uid: u32,
        pack_dir: &Path,
        pack_inode: (u64, u64),
        build: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<OwnedFd> {
        let key = (uid, pack_dir.to_path_buf());
        if let Some(cached) = self.entries.get_mut(&key) {
            if cached.pack_inode == pack_inode && cached.uses < RULESET_USES {
                cached.uses += 1;
                return cached.ruleset.try_clone();
            }
        }
        let ruleset = build()?;
        if self.entries.len() >= RULESETS_CACHED {
            self.entries.clear();
        }
        let given = ruleset.try_clone()?;
        self.entries.insert(
            key,
            CachedRuleset {
                ruleset,
                pack_inode,
                uses: 1,
            },
        );
        Ok(given)
    }
}

#[derive(Debug)]
struct CachedRuleset {
    ruleset: OwnedFd,
    /// The pack dir's (device, inode) when the ruleset was built: a reinstalled pack is a new
    /// directory, whose rule must be made anew.
    pack_inode: (u64, u64),
    uses: u32,
}

/// A uid slot's user and network namespaces, kept by init between the slot's calls: making
/// them costs milliseconds per call (mostly the network namespace, created and torn down),
/// entering them (`setns`) microseconds. What a call could leave in them dies with its
/// processes, which init kills before the slot is reused: sockets (abstract ones included)
/// close; the handler never holds a capability in them (exec as a non-root uid of the
/// namespace clears them; seccomp refuses new namespaces) so it cannot change their
/// configuration. Each call still gets a fresh IPC namespace.
#[derive(Debug)]
pub struct SlotNamespaces {
    /// `/proc/<pid>/ns/user` of the first call's child.
    pub user: OwnedFd,
    /// `/proc/<pid>/ns/net` of the first call's child.
    pub net: OwnedFd,
}

/// Everything the forked child needs for its part of the jail, made before the fork.
#[derive(Debug)]
pub struct ChildJail {
    /// The call's Landlock ruleset (system, pack dir, proxy port); the child adds its temp dir
    /// and `/proc/<pid>`, then restricts itself.
    pub ruleset: OwnedFd,
    /// Access bits the temp dir gets (everything the ruleset handles).
    pub dir_access: u64,
    /// Access bits of the child's own `/proc/<pid>`.
    pub proc_access: u64,
    /// `/proc/self/uid_map` and `gid_map` contents.
    pub id_map: CString,
    /// Create the proxy listener on the jail's loopback.
    pub proxy: bool,
    /// The uid slot's namespaces from an earlier call, entered instead of made anew.
    pub reuse: Option<std::sync::Arc<SlotNamespaces>>,
    /// seccomp programs, installed in order.
    pub filters: Vec<BpfProgram>,
}

impl Jail {
    /// Opens the system trees and compiles the filters; `Err` says what the kernel lacks.
    pub fn prepare(pack_roots: &[PathBuf]) -> Result<Jail, String> {
        let landlock_abi = crate::spawn::landlock_abi();
        if landlock_abi < 1 {
            return Err(
                "the kernel has no Landlock (Linux ≥ 5.13 with landlock in the lsm= list)".into(),
            );
        }
        let abi = ABI::from(landlock_abi);
        let read_exec = AccessFs::from_read(abi);
        let excludes: Vec<PathBuf> = pack_roots
            .iter()
            .cloned()
            .chain([PathBuf::from(bottle_spec::CONFIG_DIR)])
            .collect();
        let mut system = Vec::new();
        for root in SYSTEM_ROOTS {
            allow_except(Path::new(root), &excludes, read_exec, abi, &mut system);
        }
        let read_write = AccessFs::ReadFile | AccessFs::WriteFile;
        for dev in DEVICES {
            if let Some(fd) = open_path(Path::new(dev)) {
                system.push((fd, read_write));
            }
        }
        for file in PROC_FILES {
            if let Some(fd) = open_path(Path::new(file)) {
                system.push((fd, BitFlags::from(AccessFs::ReadFile)));
            }
        }
        let filters = filters().map_err(|e| format!("cannot compile the seccomp filter: {e}"))?;
        Ok(Jail {
            abi,
            landlock_abi,
            system,
            filters,
            pack_roots: pack_roots.to_vec(),
            rulesets: std::sync::Mutex::default(),
        })
    }

    /// The kernel's Landlock ABI.
    pub fn landlock_abi(&self) -> i32 {
        self.landlock_abi
    }

    /// Checks that `pack_dir` is a pack directory (a child of a pack root), so a handler can
    /// be given no other tree.
    pub fn check_pack_dir(&self, pack_dir: &Path) -> Result<(), String> {
        let normal = pack_dir.is_absolute()
            && pack_dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let parent_ok = pack_dir
            .parent()
            .is_some_and(|p| self.pack_roots.iter().any(|r| r == p));
        if normal && parent_ok {
            Ok(())
        } else {
            Err(format!(
                "pack_dir {} is not a directory directly under one of {:?}",
                pack_dir.display(),
                self.pack_roots
            ))
        }
    }

    /// The child's part for one call of `uid` running the pack at `pack_dir`.
    pub fn for_call(
        &self,
        uid: u32,
        pack_dir: &Path,
        proxy: bool,
        reuse: Option<std::sync::Arc<SlotNamespaces>>,
    ) -> io::Result<ChildJail> {
        let ruleset = self.ruleset(uid, pack_dir)?;
        let id_map = CString::new(format!("{uid} {uid} 1\n"))
            .map_err(|_| io::Error::other("uid map with NUL"))?;
        Ok(ChildJail {
            ruleset,
            dir_access: AccessFs::from_all(self.abi).bits(),
            proc_access: (AccessFs::ReadFile | AccessFs::ReadDir).bits(),
            id_map,
            proxy,
            reuse,
            filters: self.filters.clone(),
        })
    }

    /// The ruleset for `uid` running the pack at `pack_dir`: the cached one (a new descriptor
    /// of it) while it has uses left and the pack dir is the same directory, else a new one.
    fn ruleset(&self, uid: u32, pack_dir: &Path) -> io::Result<OwnedFd> {
        use std::os::unix::fs::MetadataExt;
        let pack = open_path(pack_dir).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot open the pack dir {}", pack_dir.display()),
            )
        })?;
        let meta = std::fs::File::from(pack.try_clone()?).metadata()?;
        let inode = (meta.dev(), meta.ino());
        let mut cache = self
            .rulesets
            .lock()
            .map_err(|_| io::Error::other("the ruleset cache is poisoned"))?;
        cache.get_or_build(uid, pack_dir, inode, || self.build_ruleset(&pack))
    }

    /// A new ruleset: the system trees, the pack dir (read), TCP connect to the proxy port,
    /// and the signal and abstract-socket scopes where the kernel has them.
    fn build_ruleset(&self, pack: &OwnedFd) -> io::Result<OwnedFd> {
        let fs = AccessFs::from_all(self.abi);
        let ll = |e: RulesetError| io::Error::other(format!("Landlock: {e}"));
        let mut ruleset = Ruleset::default()
            .handle_access(fs)
            .map_err(ll)?
            .handle_access(AccessNet::ConnectTcp)
            .map_err(ll)?;
        if self.landlock_abi >= 6 {
            ruleset = ruleset
                .scope(Scope::Signal | Scope::AbstractUnixSocket)
                .map_err(ll)?;
        }
        let created = ruleset
            .create()
            .map_err(ll)?
            .add_rules(
                self.system
                    .iter()
                    .map(|(fd, access)| Ok::<_, RulesetError>(PathBeneath::new(fd, *access))),
            )
            .map_err(ll)?
            .add_rule(PathBeneath::new(pack, AccessFs::from_read(self.abi)))
            .map_err(ll)?
            .add_rule(NetPort::new(
                bottle_spec::HANDLER_PROXY_PORT,
                AccessNet::ConnectTcp,
            ))
            .map_err(ll)?;
        let ruleset: Option<OwnedFd> = created.into();
        ruleset.ok_or_else(|| io::Error::other("Landlock ruleset not created"))
    }
}

/// Adds a rule for `path` with `access`, or — when an excluded path lies beneath it — for
/// each of its entries instead (recursively), so the excluded trees get no rule. Symlinks get
/// none either: their targets are judged by the rules on the targets (a link such as
/// `/etc/mtab` → `/proc/self/mounts` opened here would name init's own `/proc`).
fn allow_except(
    path: &Path,
    excludes: &[PathBuf],
    access: BitFlags<AccessFs>,
    abi: ABI,
    out: &mut Vec<(OwnedFd, BitFlags<AccessFs>)>,
) {
    if excludes.iter().any(|e| e == path) {
        return;
    }
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    if meta.is_dir() && excludes.iter().any(|e| e.starts_with(path)) {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        children.sort();
        for child in children {
            allow_except(&child, excludes, access, abi, out);
        }
        return;
    }
    let access = if meta.is_dir() {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    if let Some(fd) = open_path(path) {
        out.push((fd, access));
    }
}

/// `open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC)`.
fn open_path(path: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()
        .map(OwnedFd::from)
}

/// The handler's seccomp programs: the deny list (EPERM), then `clone3` answered ENOSYS so
/// that libcs fall back to `clone`, whose flags the first program can inspect.
fn filters() -> Result<Vec<BpfProgram>, seccompiler::Error> {
    programs(&DENIED, true)
}

/// Every supervised daemon's seccomp programs: no new namespaces. The sidecars container's
/// profile allows `unshare` for the handler jail only; this takes it away from the daemons.
pub fn daemon_filters() -> &'static [BpfProgram] {
    static FILTERS: std::sync::OnceLock<Vec<BpfProgram>> = std::sync::OnceLock::new();
    FILTERS.get_or_init(|| {
        programs(&[libc::SYS_unshare, libc::SYS_setns], false).unwrap_or_else(|e| {
            tracing::error!("cannot compile the daemons' seccomp filter: {e}");
            Vec::new()
        })
    })
}

/// A deny program for `denied` (plus `clone` with a namespace flag, and with `sockets` the
/// socket-family rules), then the `clone3` → ENOSYS program.
fn programs(denied: &[libc::c_long], sockets: bool) -> Result<Vec<BpfProgram>, seccompiler::Error> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(seccompiler::Error::Backend)?;
    let always = |nr: libc::c_long| (nr, Vec::new());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied.iter().map(|&n| always(n)).collect();
    let arg = |index, op, value| SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value);
    if sockets {
        // Sockets: the unix and IP families only, never raw or packet.
        rules.insert(
            libc::SYS_socket,
            vec![
                SeccompRule::new(vec![
                    arg(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?,
                    arg(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?,
                    arg(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?,
                ])?,
                SeccompRule::new(vec![arg(
                    1,
                    SeccompCmpOp::MaskedEq(0xf),
                    libc::SOCK_RAW as u64,
                )?])?,
                SeccompRule::new(vec![arg(1, SeccompCmpOp::MaskedEq(0xf), SOCK_PACKET)?])?,
            ],
        );
        rules.insert(
            libc::SYS_socketpair,
            vec![SeccompRule::new(vec![arg(
                0,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])?],
        );
    }
    // clone with any namespace flag.
    let ns_flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
    ];
    let mut clone = Vec::new();
    for flag in ns_flags {
        let flag = flag as u64;
        clone.push(SeccompRule::new(vec![arg(
            0,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?);
    }
    rules.insert(libc::SYS_clone, clone);
    let deny: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?
    .try_into()?;
    let clone3: BpfProgram = SeccompFilter::new(
        [always(libc::SYS_clone3)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?
    .try_into()?;
    Ok(vec![deny, clone3])
}

/// The obsolete packet socket type (`SOCK_PACKET`; libc deprecates the name, not the kernel).
const SOCK_PACKET: u64 = 10;

/// Calls a handler never needs and an attacker would want: other processes' memory, new
/// namespaces and mounts, keyrings, BPF, perf, io_uring (it would bypass the socket rule),
/// modules, kexec, handles to files by number, and the host's clock and identity.
const DENIED: [libc::c_long; 44] = [
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_syslog,
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A stand-in ruleset: any descriptor, numbered by the builds so far.
    fn built(count: &mut u32) -> io::Result<OwnedFd> {
        *count += 1;
        Ok(OwnedFd::from(std::fs::File::open("/dev/null")?))
    }

    #[test]
    fn a_cached_ruleset_serves_one_uid_and_one_pack_dir_only() {
        let mut cache = RulesetCache::default();
        let mut builds = 0;
        let (a, b) = (Path::new("/packs/a"), Path::new("/packs/b"));
        for _ in 0..3 {
            cache
                .get_or_build(20000, a, (1, 10), || built(&mut builds))
                .expect("ruleset");
        }
        assert_eq!(builds, 1, "the same uid and pack reuse the ruleset");
        cache
            .get_or_build(20001, a, (1, 10), || built(&mut builds))
            .expect("ruleset");
        assert_eq!(builds, 2, "another uid gets a ruleset of its own");
        cache
            .get_or_build(20000, b, (1, 11), || built(&mut builds))
            .expect("ruleset");
        assert_eq!(builds, 3, "another pack gets a ruleset of its own");
        cache
            .get_or_build(20000, a, (1, 12), || built(&mut builds))
            .expect("ruleset");
        assert_eq!(
            builds, 4,
            "a reinstalled pack (new inode) gets a new ruleset"
        );
    }

    #[test]
    fn a_cached_ruleset_is_built_afresh_after_its_uses_and_the_cache_is_bounded() {
        let mut cache = RulesetCache::default();
        let mut builds = 0;
        let dir = Path::new("/packs/a");
        for _ in 0..RULESET_USES {
            cache
                .get_or_build(20000, dir, (1, 10), || built(&mut builds))
                .expect("ruleset");
        }
        assert_eq!(builds, 1);
        cache
            .get_or_build(20000, dir, (1, 10), || built(&mut builds))
            .expect("ruleset");
        assert_eq!(builds, 2, "a ruleset past its uses is rebuilt");
        for uid in 0..(RULESETS_CACHED as u32 * 2) {
            cache
                .get_or_build(uid, dir, (1, 10), || built(&mut builds))
                .expect("ruleset");
            assert!(cache.entries.len() <= RULESETS_CACHED);
        }
    }

    #[test]
    fn filters_compile_for_this_arch() {
        let f = filters().expect("filters");
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn pack_dirs_must_be_children_of_a_pack_root() {
        let jail = Jail {
            abi: ABI::V1,
            landlock_abi: 1,
            system: Vec::new(),
            filters: Vec::new(),
            pack_roots: vec![PathBuf::from("/usr/share/sidecars/packs")],
            rulesets: std::sync::Mutex::default(),
        };
        assert!(jail
            .check_pack_dir(Path::new("/usr/share/sidecars/packs/cmd.upper"))
            .is_ok());
        for bad in [
            "/usr/share/sidecars/packs",
            "/usr/share/sidecars/packs/../../../../etc",
            "/usr/share/sidecars/packs/a/b",
            "/",
            "relative/pack",
            "/etc/sidecars",
        ] {
            assert!(jail.check_pack_dir(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn excluded_trees_get_no_rule_and_their_siblings_do() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        for d in ["a/keep", "a/secret/inner", "b"] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        std::fs::write(r.join("a/file"), b"x").expect("write");
        std::os::unix::fs::symlink("/proc/self", r.join("a/link")).expect("symlink");
        let excludes = vec![r.join("a/secret")];
        let mut out = Vec::new();
        let abi = ABI::V5;
        allow_except(r, &excludes, AccessFs::from_read(abi), abi, &mut out);
        let mut named: Vec<String> = out
            .iter()
            .map(|(fd, _)| {
                std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .expect("readlink")
                    .strip_prefix(r)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        named.sort();
        // `a` itself is split; the secret tree and the symlink get nothing.
        assert_eq!(named, ["a/file", "a/keep", "b"]);
        let file = out
            .iter()
            .find(|(fd, _)| {
                std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .is_ok_and(|p| p.ends_with("a/file"))
            })
            .expect("file rule");
        assert!(
            !file.1.contains(AccessFs::ReadDir),
            "file rules carry file rights only"
        );
    }
}
