//! The floor pack-exec is measured against (bench/pack-exec.sh): spawning the same handler
//! directly, the way pack-exec does (clean env, own process group, piped stdin/stdout/stderr,
//! uid 65534 when run as root), writing the input and reading the output — with no HTTP, no
//! schema checks and no temp dir.
//!
//! usage: spawn_floor <iterations> <workers> <input-json> <program> [args...]
//! prints: `p50_us=<n> p99_us=<n> rps=<n>`

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: spawn_floor <iterations> <workers> <input-json> <program> [args...]");
        std::process::exit(2);
    }
    let iterations: usize = args[1].parse().expect("iterations");
    let workers: usize = args[2].parse().expect("workers");
    let input = args[3].clone();
    let program = args[4].clone();
    let rest: Vec<String> = args[5..].to_vec();
    let root = nix::unistd::geteuid().is_root();
    let dir = std::env::temp_dir().join(format!("spawn-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let per_worker = iterations.div_ceil(workers);
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (input, program, rest, dir) =
                (input.clone(), program.clone(), rest.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut times = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let t = Instant::now();
                    let mut cmd = Command::new(&program);
                    cmd.args(&rest)
                        .env_clear()
                        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                        .env("HOME", &dir)
                        .env("LANG", "C.UTF-8")
                        .current_dir(&dir)
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .process_group(0);
                    if root {
                        cmd.uid(65534).gid(65534);
                    }
                    let mut child = cmd.spawn().expect("spawn");
                    let mut stdin = child.stdin.take().expect("stdin");
                    stdin.write_all(input.as_bytes()).expect("write");
                    drop(stdin);
                    let mut out = Vec::new();
                    child
                        .stdout
                        .take()
                        .expect("stdout")
                        .read_to_end(&mut out)
                        .expect("read");
                    let status = child.wait().expect("wait");
                    assert!(status.success() && !out.is_empty(), "handler failed");
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("worker"))
        .collect();
    let wall = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_micros();
    println!(
        "p50_us={} p99_us={} rps={:.1}",
        pct(0.50),
        pct(0.99),
        all.len() as f64 / wall.as_secs_f64()
    );
}
