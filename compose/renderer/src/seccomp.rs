//! The sidecars container's seccomp profile: Docker's default policy, plus the one call the
//! pack handler jail needs.
//!
//! Why a profile of our own: each handler call gets its own user and network namespace, made
//! by the handler's child with `unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC)` before it
//! drops into the jail. Docker's default profile refuses `unshare` to a container without
//! `CAP_SYS_ADMIN` (and granting that capability would unlock `mount`, `setns` and more for
//! every process). This profile is the default's allowlist — same default action (`EPERM`),
//! same argument rules for `clone`, `personality` and `socket` — with `unshare` allowed for
//! exactly those three namespace flags, and `setns` into a user or network namespace (a uid
//! slot's later calls enter the namespaces its first call made). sidecar-init takes both away
//! again with its own filter on every daemon and on every handler after its jail is made, so
//! only init's child code between fork and exec ever uses them. An e2e test probes every
//! syscall number under Docker's default and under this profile and requires the answers to
//! differ only in `unshare` (with arguments of -1, `setns` is refused by both).

use serde_json::{json, Value};

/// Where the control plane writes the profile in the project dir (compose reads the file and
/// sends its contents to the engine; the Engine API backend does the same).
pub const PROFILE_FILE: &str = "seccomp-sidecars.json";

/// The namespace flags a handler's child may unshare: CLONE_NEWUSER | CLONE_NEWNET |
/// CLONE_NEWIPC.
pub const JAIL_UNSHARE_FLAGS: u64 = 0x1000_0000 | 0x4000_0000 | 0x0800_0000;

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET: what a `clone` without `CAP_SYS_ADMIN` may not ask for (Docker's rule).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Calls allowed with any arguments (Docker's default allowlist for a container without extra
/// capabilities, on every architecture; names a kernel lacks are skipped by the engine).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_llseek",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
];

/// The profile, as Docker's `--security-opt seccomp=<file>` reads it.
pub fn profile() -> Value {
    let allow = |names: &[&str]| json!({"names": names, "action": "SCMP_ACT_ALLOW"});
    let masked = |index: u32, mask: u64, value: u64| json!({"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"});
    let eq = |index: u32, value: u64| json!({"index": index, "value": value, "op": "SCMP_CMP_EQ"});
    let mut syscalls = vec![allow(ALLOWED)];
    // personality: the values Docker allows (query, Linux, UNAME26 and READ_IMPLIES_EXEC...).
    for persona in [0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [eq(0, persona)]}),
        );
    }
    // socket: every family but AF_VSOCK (40).
    syscalls.push(
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 40, "op": "SCMP_CMP_NE"}
        ]}),
    );
    // clone without namespace flags (the flags are argument 0 on x86 and arm; s390x differs,
    // which the engine's own default handles the same way).
    syscalls.push(
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
            masked(0, CLONE_NAMESPACE_FLAGS, 0)
        ]}),
    );
    // clone3 cannot be argument-checked (its flags are in memory): ENOSYS makes libcs fall
    // back to clone.
    syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    // The jail's additions: new namespaces for a handler uid's first call, entering them for
    // its later calls (setns to a user or network namespace only).
    syscalls.push(
        json!({"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "args": [
            masked(0, !JAIL_UNSHARE_FLAGS & 0xffff_ffff, 0)
        ]}),
    );
    for nstype in [0x1000_0000u64, 0x4000_0000] {
        syscalls
            .push(json!({"names": ["setns"], "action": "SCMP_ACT_ALLOW", "args": [eq(1, nstype)]}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": syscalls,
    })
}

/// The profile file's contents (pretty JSON with a final newline).
pub fn profile_text() -> String {
    let mut text = serde_json::to_string_pretty(&profile()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshare_is_allowed_for_the_jails_flags_only() {
        let p = profile();
        let rules = p["syscalls"].as_array().unwrap();
        let unshare: Vec<&Value> = rules
            .iter()
            .filter(|r| {
                r["names"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n == "unshare")
            })
            .collect();
        assert_eq!(unshare.len(), 1);
        let arg = &unshare[0]["args"][0];
        let mask = arg["value"].as_u64().unwrap();
        assert_eq!(mask & JAIL_UNSHARE_FLAGS, 0, "the jail's flags pass");
        // CLONE_NEWNS (mounts) and CLONE_NEWPID are refused.
        assert_ne!(mask & 0x0002_0000, 0);
        assert_ne!(mask & 0x2000_0000, 0);
        // Nothing the default refuses outright is in the allowlist.
        for name in [
            "mount",
            "setns",
            "bpf",
            "keyctl",
            "unshare",
            "kexec_load",
            "clone",
        ] {
            assert!(!ALLOWED.contains(&name), "{name}");
        }
    }

    #[test]
    fn no_name_is_listed_twice() {
        let mut names = ALLOWED.to_vec();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
