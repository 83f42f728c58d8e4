//! The two runtime backends side by side on real Docker: one manifest brought up with the
//! compose CLI backend (`BOT_BOTTLE_RUNTIME=compose`) and then with the Docker Engine API
//! backend (`BOT_BOTTLE_RUNTIME=engine`) must give the same containers, networks and volumes as
//! Docker reports them (`docker inspect`), field by field, apart from what legitimately differs
//! between any two runs (ids, addresses, host ports, timestamps, compose's config hash).
//!
//! It also checks that each backend can take down what the other made, and that compose itself
//! recognises an Engine-made bottle (`docker-compose ps` / `down`), since both promise compose's
//! names and labels. Needs the images from `scripts/images.sh`; fails under CI when Docker is
//! missing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{cmd, control_plane, require_docker, run, Bottle, Output};
use serde_json::{json, Value};

/// Every kind of thing the model carries: two networks (one internal, with driver options and
/// a fixed subnet), a fixed address, named volumes, bind mounts (relative config files, an
/// absolute credential file, the CA, the operator token), published ports, sized tmpfs,
/// limits (cpus, memory, pids), added capabilities, `dns`, a healthcheck, `init`, a command
/// and an env value with `$`.
const MANIFEST: &str = r#"
slug = "{slug}"
daemons = ["egress", "pipelock", "supervise", "pack-exec"]
packs = ["{packs}/cmd.upper"]

[[allowlist]]
host = "example.com"
ports = [443]

[[routes]]
host = "example.com"
headers = { Authorization = "Bearer ${cred:TOKEN}" }

[credentials.TOKEN]
file = "{cred}"

[resources.agent]
cpus = 0.5
memory = "256m"
pids = 300
tmp_size = "128m"

[resources.sidecars]
cpus = 1.5
memory = "512m"

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
env = { PRICE = "$5 and ${HOME}", PLAIN = "x" }
"#;

/// Labels that differ between any two `up`s of the same model: compose hashes its own view of
/// the service, the Engine backend the model (see docs/runtime.md).
const VOLATILE_LABELS: [&str; 1] = ["com.docker.compose.config-hash"];

/// Run the control plane for bottle `b` with backend `runtime`.
fn cp(b: &Bottle, runtime: &str, args: &[&str]) -> Output {
    cmd(control_plane())
        .args(args)
        .env("BOT_BOTTLE_STATE_DIR", b.state.path())
        .env("BOT_BOTTLE_RUNTIME", runtime)
        .timeout(Duration::from_secs(180))
        .run()
}

/// The compose command of this host (`docker compose` or `docker-compose`).
fn compose_command() -> Vec<String> {
    for argv in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let mut probe = argv.clone();
        probe.push("version");
        let ok = std::process::Command::new(probe[0])
            .args(&probe[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return argv.into_iter().map(String::from).collect();
        }
    }
    panic!("neither `docker compose` nor `docker-compose` works: the compose backend needs one");
}

fn inspect(kind: &[&str], names: &[String]) -> Vec<Value> {
    let mut args: Vec<&str> = kind.to_vec();
    args.extend(names.iter().map(String::as_str));
    let out = run("docker", &args).ok("docker inspect");
    serde_json::from_str(&out.stdout).expect("docker inspect prints JSON")
}

fn project_ids(list: &[&str], project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut args = list.to_vec();
    args.extend(["--filter", &label, "-q"]);
    let mut ids: Vec<String> = run("docker", &args)
        .ok("docker ls")
        .stdout
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// `value` with every occurrence of `from` in its strings replaced by `to`.
fn replace_in(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_in(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_in(v, from, to)),
        _ => {}
    }
}

fn sorted_by(mut items: Vec<Value>, key: &str) -> Value {
    items.sort_by_key(|v| v[key].to_string());
    Value::Array(items)
}

/// What must be equal about one container, whichever backend made it.
fn container_view(c: &Value) -> Value {
    let id = c["Id"].as_str().unwrap_or_default();
    let short = &id[..12.min(id.len())];
    let mut config = c["Config"].clone();
    // An unset hostname is the container's short id.
    if config["Hostname"] == short {
        config["Hostname"] = json!("<id>");
    }
    if let Some(env) = config["Env"].as_array_mut() {
        env.sort_by_key(|v| v.to_string());
    }
    if let Some(labels) = config["Labels"].as_object_mut() {
        for l in VOLATILE_LABELS {
            labels.remove(l);
        }
    }
    let mut host = c["HostConfig"].clone();
    if let Some(mounts) = host["Mounts"].as_array() {
        host["Mounts"] = sorted_by(mounts.clone(), "Target");
    }
    // A seccomp profile is sent as JSON text: compose re-serialises the file, the Engine backend
    // sends it as written, so the two are compared as JSON values, not as text.
    if let Some(opts) = host["SecurityOpt"].as_array_mut() {
        for opt in opts {
            let parsed = opt
                .as_str()
                .and_then(|o| o.strip_prefix("seccomp="))
                .and_then(|j| serde_json::from_str::<Value>(j).ok());
            if let Some(profile) = parsed {
                *opt = json!({ "seccomp": profile });
            }
        }
    }
    let networks: BTreeMap<String, Value> = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(name, e)| {
                    let mut aliases: Vec<String> = e["Aliases"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(|s| if s == short { "<id>" } else { s }.to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    aliases.sort();
                    // Addresses on the agent network are fixed (its subnet is the model's, the
                    // sidecars' address too); elsewhere Docker picks them per creation.
                    let address = if name.ends_with("-internal") {
                        e["IPAddress"].clone()
                    } else {
                        json!("<dynamic>")
                    };
                    let view = json!({
                        "Aliases": aliases,
                        "IPAMConfig": e["IPAMConfig"],
                        "IPAddress": address,
                        "Links": e["Links"],
                        "DriverOpts": e["DriverOpts"],
                    });
                    (name.clone(), view)
                })
                .collect()
        })
        .unwrap_or_default();
    // Published ports: the container port and the host address; host ports are ephemeral.
    let ports: BTreeMap<String, Value> = c["NetworkSettings"]["Ports"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(port, bindings)| {
                    let ips: Vec<Value> = bindings
                        .as_array()
                        .map(|b| b.iter().map(|x| x["HostIp"].clone()).collect())
                        .unwrap_or_default();
                    (port.clone(), Value::Array(ips))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "Name": c["Name"],
        "Image": c["Config"]["Image"],
        "Config": config,
        "HostConfig": host,
        "Networks": networks,
        "PublishedPorts": ports,
        "Mounts": sorted_by(c["Mounts"].as_array().cloned().unwrap_or_default(), "Destination"),
        "Running": c["State"]["Running"],
        "Health": c["State"]["Health"]["Status"],
    })
}

fn network_view(n: &Value) -> Value {
    let mut n = n.clone();
    if let Some(map) = n.as_object_mut() {
        for volatile in ["Id", "Created", "Containers"] {
            map.remove(volatile);
        }
    }
    // The agent network's subnet is the model's; others are handed out per creation. The
    // IPAM driver and options are the model's everywhere.
    if n["Internal"] != json!(true) {
        n["IPAM"] = json!({ "Driver": n["IPAM"]["Driver"], "Options": n["IPAM"]["Options"] });
    }
    n
}

/// The walls the renderer asks for, as Docker reports them (whichever backend made them):
/// the sidecars run as root with only init's capabilities, both containers are bounded, the
/// agent network has its fixed subnet with the sidecars at its second host, and the agent's
/// resolver is the sidecars' DNS responder.
fn check_walls(snap: &Value, b: &Bottle, runtime: &str) {
    let container = |name: &str| {
        snap["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["Name"] == format!("/{name}")))
            .unwrap_or_else(|| panic!("{runtime}: no container {name}"))
            .clone()
    };
    let (sidecars, agent) = (container(&b.sidecars()), container(&b.agent()));
    let internal = snap["networks"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["Internal"] == json!(true)))
        .unwrap_or_else(|| panic!("{runtime}: no internal network"))
        .clone();
    let subnet = internal["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or_else(|| panic!("{runtime}: the agent network has no fixed subnet: {internal}"));
    let subnet = bottle_compose::bottle_spec::Subnet::parse(subnet).expect("a subnet");
    assert_eq!(
        internal["IPAM"]["Config"][0]["Gateway"],
        json!(subnet.gateway().to_string()),
        "{runtime}"
    );
    let ip = subnet.sidecars_ip().to_string();
    let internal_name = internal["Name"].as_str().unwrap_or_default();

    let host = &sidecars["HostConfig"];
    assert_eq!(sidecars["Config"]["User"], "0:0", "{runtime}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{runtime}");
    assert_eq!(
        host["CapAdd"],
        json!(bottle_compose::bottle_spec::INIT_CAPABILITIES),
        "{runtime}"
    );
    // no_new_privs, and the jail's seccomp profile sent as its contents by both backends.
    let opts = host["SecurityOpt"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        opts.first(),
        Some(&json!("no-new-privileges:true")),
        "{runtime}"
    );
    // (`container_view` parsed the `seccomp=<json>` option into `{"seccomp": <value>}`.)
    assert_eq!(
        opts.get(1).map(|o| &o["seccomp"]),
        Some(&bottle_compose::seccomp::profile()),
        "{runtime}: the sidecars' seccomp profile"
    );
    assert_eq!(opts.len(), 2, "{runtime}");
    assert_eq!(host["PidsLimit"], 512, "{runtime}");
    assert_eq!(
        host["Tmpfs"],
        json!({"/tmp": "size=64m,mode=1777", "/run/sidecars": "size=16m,mode=0755"}),
        "{runtime}"
    );
    let endpoint = &sidecars["Networks"][internal_name];
    assert_eq!(endpoint["IPAddress"], json!(ip), "{runtime}: {endpoint}");
    assert_eq!(
        endpoint["IPAMConfig"]["IPv4Address"],
        json!(ip),
        "{runtime}"
    );
    let operator = bottle_compose::bottle_spec::PACK_EXEC_OPERATOR_PORT;
    assert!(
        sidecars["PublishedPorts"][format!("{operator}/tcp")].is_null(),
        "{runtime}: the operator port is not published: {}",
        sidecars["PublishedPorts"]
    );
    assert_eq!(
        sidecars["PublishedPorts"]["9000/tcp"],
        json!(["127.0.0.1"]),
        "{runtime}: the agent listener is published on loopback"
    );

    let host = &agent["HostConfig"];
    assert_eq!(host["Dns"], json!([ip]), "{runtime}");
    assert_eq!(host["PidsLimit"], 300, "{runtime}");
    assert_eq!(
        host["Tmpfs"],
        json!({"/tmp": "size=128m,mode=1777"}),
        "{runtime}"
    );
    assert!(
        host["CapAdd"].is_null() || host["CapAdd"] == json!([]),
        "{runtime}: the agent gets no capability: {}",
        host["CapAdd"]
    );
}

fn volume_view(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("CreatedAt");
    }
    v
}

/// Everything Docker reports about the bottle, normalised (the state dir path is replaced, so
/// two runs in different temporary directories compare equal).
///
/// `up` may return before Docker's own first healthcheck (the control plane runs the same
/// check itself, back to back): the snapshot waits for Docker's status to catch up, so the
/// two backends' health states compare.
fn snapshot(b: &Bottle) -> Value {
    e2e::wait_until(
        "Docker reports the sidecars healthy",
        Duration::from_secs(30),
        || b.inspect(&b.sidecars(), "{{.State.Health.Status}}") == "healthy",
    );
    let containers = inspect(&["inspect"], &[b.sidecars(), b.agent()]);
    let networks = project_ids(&["network", "ls"], &b.project);
    let volumes = project_ids(&["volume", "ls"], &b.project);
    let mut snap = json!({
        "containers": containers.iter().map(container_view).collect::<Vec<_>>(),
        "networks": sorted_by(
            inspect(&["network", "inspect"], &networks).iter().map(network_view).collect(),
            "Name",
        ),
        "volumes": sorted_by(
            inspect(&["volume", "inspect"], &volumes).iter().map(volume_view).collect(),
            "Name",
        ),
    });
    replace_in(&mut snap, &b.state.path().display().to_string(), "<state>");
    snap
}

/// Leaf-by-leaf differences of two JSON values, as `path: compose=… engine=…` lines.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff(&format!("{path}.{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}:\n    compose: {a}\n    engine:  {b}")),
        _ => {}
    }
}

/// The `services` of an `up --json` report without host ports (ephemeral).
fn services_view(report: &Value) -> Value {
    let mut services = report["bottle"]["services"].clone();
    if let Some(list) = services.as_array_mut() {
        for s in list {
            if let Some(ports) = s["ports"].as_array_mut() {
                for p in ports {
                    let host = p["host"].as_str().unwrap_or_default();
                    let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip).to_string();
                    p["host"] = json!(ip);
                }
            }
        }
    }
    services
}

struct Run {
    snapshot: Value,
    /// The containers' config-hash labels: compose's and the Engine backend's differ, which
    /// proves which backend made the containers.
    hashes: Vec<Value>,
    services: Value,
    approvals: String,
    up_secs: f64,
}

/// `up` with `runtime`, then what every other command sees of the bottle with that backend.
fn up_and_look(b: &mut Bottle, runtime: &str) -> Run {
    let start = Instant::now();
    let out = cp(
        b,
        runtime,
        &["up", &b.manifest.display().to_string(), "--json"],
    );
    let up_secs = start.elapsed().as_secs_f64();
    assert_eq!(
        out.code, 0,
        "control-plane up ({runtime}) failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    b.report = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("up --json printed no JSON ({e}): {}", out.stdout));
    assert_eq!(b.report["bottle"]["state"], "running", "{}", b.report);
    let snap = snapshot(b);
    check_walls(&snap, b, runtime);

    // ps, logs and exec (approvals run supervise-ctl in the sidecars container) through it.
    let ps = cp(b, runtime, &["ps", "--json"]).ok("ps");
    assert!(
        ps.stdout.contains(&b.sidecars()),
        "ps ({runtime}): {}",
        ps.stdout
    );
    let logs = cp(b, runtime, &["logs", &b.slug, "--tail", "50"]).ok("logs");
    assert!(
        !logs.stdout.trim().is_empty() || !logs.stderr.trim().is_empty(),
        "logs ({runtime}) printed nothing"
    );
    let approvals = cp(b, runtime, &["approvals", "list", &b.slug, "--json"]).ok("approvals");
    let hashes = inspect(&["inspect"], &[b.sidecars(), b.agent()])
        .iter()
        .map(|c| c["Config"]["Labels"][VOLATILE_LABELS[0]].clone())
        .collect();
    Run {
        snapshot: snap,
        hashes,
        services: services_view(&b.report),
        approvals: approvals.stdout,
        up_secs,
    }
}

#[test]
fn compose_and_engine_backends_make_the_same_bottle_and_take_down_each_others() {
    if !require_docker() {
        return;
    }
    let compose = compose_command();
    let world = tempfile::tempdir().expect("tempdir");
    let cred = e2e::root_credential(world.path(), "token", "e2e-backends-token");

    let slug = format!("e2e-backends-{}", std::process::id() % 100_000);
    let state = tempfile::tempdir().expect("state dir");
    let text = MANIFEST
        .replace("{slug}", &slug)
        .replace("{cred}", &cred.display().to_string())
        .replace(
            "{packs}",
            &e2e::workspace_root().join("packs").display().to_string(),
        );
    let manifest = state.path().join("bottle.toml");
    std::fs::write(&manifest, text).expect("write manifest");
    // Dropping it takes the bottle down whatever happens below.
    let mut b = Bottle {
        project: format!("bot-bottle-{slug}"),
        slug,
        state,
        manifest,
        report: Value::Null,
    };
    let _ = cp(&b, "engine", &["down", &b.slug]);

    // --- compose CLI backend -----------------------------------------------------------------
    let by_compose = up_and_look(&mut b, "compose");
    // The Engine backend takes down what compose made.
    let out = cp(&b, "engine", &["down", &b.slug]).ok("down (engine) of a compose bottle");
    assert!(
        out.stdout
            .contains("removed 2 containers, 2 networks, 2 volumes"),
        "down report: {}",
        out.stdout
    );
    assert!(
        b.leftovers().is_empty(),
        "left after down: {:?}",
        b.leftovers()
    );

    // --- Docker Engine API backend -----------------------------------------------------------
    let by_engine = up_and_look(&mut b, "engine");

    assert_ne!(
        by_compose.hashes, by_engine.hashes,
        "both bottles carry compose's config hashes: BOT_BOTTLE_RUNTIME=engine did not select the Engine backend"
    );
    let mut differences = Vec::new();
    diff(
        "",
        &by_compose.snapshot,
        &by_engine.snapshot,
        &mut differences,
    );
    diff(
        ".up.services",
        &by_compose.services,
        &by_engine.services,
        &mut differences,
    );
    assert!(
        differences.is_empty(),
        "the backends made different bottles ({} differences):\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert_eq!(by_compose.approvals, by_engine.approvals, "approvals list");

    // A second engine `up` of the same model keeps the running containers.
    let ids_before = project_ids(&["ps", "-a"], &b.project);
    let again = cp(&b, "engine", &["up", &b.manifest.display().to_string()]);
    assert_eq!(
        again.code, 0,
        "second up: {}\n{}",
        again.stdout, again.stderr
    );
    assert_eq!(
        project_ids(&["ps", "-a"], &b.project),
        ids_before,
        "an unchanged bottle was recreated"
    );

    // compose recognises the Engine-made project and takes it down.
    let dir = b.report["dir"]
        .as_str()
        .expect("up reports the project dir")
        .to_string();
    let file = Path::new(&dir).join("compose.yaml").display().to_string();
    let compose_args = |extra: &[&str]| {
        let mut argv: Vec<String> = compose[1..].to_vec();
        argv.extend(["-p", &b.project, "-f", &file].map(String::from));
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    };
    // From the project dir, as a user runs compose there: docker-compose 1.29 resolves the
    // seccomp profile's path against its working directory, not the compose file's.
    let ps = cmd(&compose[0])
        .current_dir(&dir)
        .args(compose_args(&["ps"]))
        .run()
        .ok("compose ps of the Engine-made bottle");
    for name in [b.sidecars(), b.agent()] {
        assert!(
            ps.stdout.contains(&name),
            "compose ps does not list {name}:\n{}",
            ps.stdout
        );
    }
    cmd(&compose[0])
        .current_dir(&dir)
        .args(compose_args(&["down", "--volumes", "--timeout", "10"]))
        .timeout(Duration::from_secs(120))
        .run()
        .ok("compose down of the Engine-made bottle");
    assert!(
        b.leftovers().is_empty(),
        "left after compose down: {:?}",
        b.leftovers()
    );
    eprintln!(
        "up took {:.1} s with compose, {:.1} s with the Engine API",
        by_compose.up_secs, by_engine.up_secs
    );
}
