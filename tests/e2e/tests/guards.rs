//! The guards of a bottle on real Docker: the agent's only way out is pipelock → egress (with a
//! credential injected that the agent never sees), its git remote is git-gate (secrets refused,
//! clean pushes forwarded upstream), and it asks for approvals over MCP at supervise.
//!
//! The "world" is servers this test runs on the host, reached from the bottle's egress network
//! through the host's docker0 address; the agent's internal network has no route there.

use std::time::Duration;

use e2e::{
    docker0_ip, require_docker, root_credential, run, start_git_world, wait_until, Bottle,
    WorldContainer,
};

#[test]
fn agent_egress_git_and_approvals_go_through_the_guards() {
    if !require_docker() {
        return;
    }
    let world = tempfile::tempdir().expect("tempdir");
    let host = docker0_ip();
    let headers_log = world.path().join("headers.jsonl");
    let (_http, http_port) = e2e::http_world(e2e::World {
        headers_log: Some(&headers_log),
        ..Default::default()
    });
    let (_git, git_port) = start_git_world(world.path());
    // A credential only the sidecars container gets: root:root 0400, as an operator keeps it.
    let token = "e2e-token-5f1c2b7a9d3e";
    let cred = root_credential(world.path(), "token", token);

    let manifest = format!(
        r#"
slug = "{{slug}}"
daemons = ["egress", "pipelock", "git-gate", "supervise", "pack-exec"]
packs = ["{{packs}}/cmd.upper"]
allow_cidrs = ["{host}/32", "172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"]

[[allowlist]]
host = "{host}"
ports = [{http_port}]

[[allowlist]]
host = "world"
ports = [8000]

[[routes]]
host = "{host}"
headers = {{ Authorization = "Bearer ${{cred:TOKEN}}" }}

[credentials.TOKEN]
file = "{cred}"

[[git]]
name = "app"
upstream = "git://{host}:{git_port}/upstream.git"

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#,
        cred = cred.display()
    );
    let b = Bottle::up("guards", &manifest);
    let agent = b.agent();
    let sh = |script: &str| b.exec(&agent, &["bash", "-c", script]);

    // --- egress: through the chain, with a credential the agent never sees -----------------
    let url = format!("http://{host}:{http_port}/hello");
    let via_proxy = sh(&format!(
        "curl -sS --max-time 10 -H 'Authorization: Bearer agent-own' {url}"
    ));
    assert!(
        via_proxy.stdout.contains(e2e::WORLD_BODY),
        "agent → pipelock → egress → world failed: {via_proxy:?}"
    );
    // The "world" on the bottle's egress network: a server container the sidecars can reach
    // and the agent can't, except through the proxy chain.
    let world_name = format!("e2e-world-{}", b.slug);
    let _ = run("docker", &["rm", "-f", &world_name]);
    let egress_net = b.egress_network();
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &world_name,
            "--network",
            &egress_net,
            "--network-alias",
            "world",
            "sidecar-bundle/agent-test:dev",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    )
    .ok("start the world container");
    let _world = WorldContainer(world_name.clone());
    let world_ip = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &world_name,
        ],
    )
    .stdout
    .trim()
    .to_string();
    wait_until(
        "the world container serves",
        Duration::from_secs(20),
        || {
            b.exec(
                &b.sidecars(),
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "2",
                    &format!("http://{world_ip}:8000/"),
                ],
            )
            .code
                == 0
        },
    );
    // Plain HTTP through pipelock → egress.
    let out = sh(
        "curl -sS --max-time 10 -o /tmp/world.out -w '%{http_code}' http://world:8000/; cat /tmp/world.out",
    );
    assert!(
        out.stdout.starts_with("200"),
        "agent → world via the chain: {out:?}"
    );
    // The kill switch: one operator command, everything refused; off, it works again.
    b.cp(&["kill-switch", &b.slug, "on"]).ok("kill-switch on");
    let to_world = "curl -sS --max-time 10 -w ' %{http_code}' http://world:8000/";
    e2e::wait_until(
        "the kill switch refuses",
        std::time::Duration::from_secs(10),
        || {
            let out = sh(to_world);
            out.stdout.contains("kill switch engaged") && out.stdout.ends_with(" 503")
        },
    );
    b.cp(&["kill-switch", &b.slug, "off"]).ok("kill-switch off");
    e2e::wait_until(
        "the kill switch released",
        std::time::Duration::from_secs(10),
        || sh(to_world).stdout.ends_with(" 200"),
    );
    // Plain HTTP inside a CONNECT tunnel to a name (curl -p) would skip pipelock's plain-HTTP
    // DLP and carry any Host: egress closes a blind tunnel that does not open with a TLS
    // ClientHello for its host (sni-mismatch).
    let out = sh(
        "curl -sS --max-time 10 -p -o /dev/null -w '%{http_code}' http://world:8000/ || echo ' REFUSED'",
    );
    assert!(
        out.stdout.contains("REFUSED"),
        "a plain-HTTP CONNECT tunnel to a name got through: {out:?}"
    );
    // Directly, without the proxy, the world is unreachable from the agent.
    let direct = sh(&format!(
        "curl -sS --noproxy '*' --max-time 5 http://{world_ip}:8000/ >/dev/null && echo REACHED || echo BLOCKED"
    ));
    assert!(direct.stdout.contains("BLOCKED"), "{direct:?}");
    let seen = std::fs::read_to_string(&headers_log).unwrap_or_default();
    let first = seen.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!("Bearer {token}")),
        "the upstream did not see the injected credential: {first}"
    );
    assert!(
        !first.contains("agent-own"),
        "the agent's own Authorization reached the upstream: {first}"
    );
    // The agent can't read the credential: not in its env, not in its files.
    let leak = sh(&format!(
        "env | grep -c {token}; grep -rs -l {token} / --exclude-dir=proc --exclude-dir=sys | head -1"
    ));
    assert!(
        leak.stdout.trim_start().starts_with('0') && !leak.stdout.contains('/'),
        "the credential is visible in the agent: {leak:?}"
    );
    // Rotation without a restart: the operator rewrites the credential file in place (the
    // mount follows the inode) and asks for a reload; egress injects the new value next.
    let started = || {
        run(
            "docker",
            &["inspect", "-f", "{{.State.StartedAt}}", &b.sidecars()],
        )
        .stdout
    };
    let before = started();
    let rotated = "e2e-token-rotated-8c4d1e";
    std::fs::write(&cred, format!("{rotated}\n")).expect("rotate the credential in place");
    b.cp(&["reload", &b.slug]).ok("reload");
    wait_until(
        "egress injects the rotated credential",
        Duration::from_secs(15),
        || {
            sh(&format!("curl -sS --max-time 10 {url}"))
                .stdout
                .contains(e2e::WORLD_BODY)
                && std::fs::read_to_string(&headers_log)
                    .unwrap_or_default()
                    .lines()
                    .last()
                    .is_some_and(|l| l.contains(&format!("Bearer {rotated}")))
        },
    );
    assert_eq!(started(), before, "the sidecars container was restarted");
    let logs = run("docker", &["logs", &b.sidecars()]);
    let logs = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        logs.contains("credentials of egress read again"),
        "init did not hand out the credentials again"
    );
    assert!(
        !logs.contains(rotated) && !logs.contains(token),
        "a credential value in the logs"
    );
    // Not on the allowlist → 403 with the reason.
    let denied = sh("curl -s --max-time 10 -o /dev/null -w '%{http_code}' http://example.org/");
    assert_eq!(denied.stdout.trim(), "403", "{denied:?}");
    // A policy change without a restart: the manifest file loses `world` from the allowlist;
    // `reload` re-renders it, rewrites pipelock's config under the running container's bind
    // mount and signals pipelock, and the same container refuses world from then on.
    let original = std::fs::read_to_string(&b.manifest).expect("read the manifest");
    let narrowed = original.replace("[[allowlist]]\nhost = \"world\"\nports = [8000]\n", "");
    assert_ne!(
        narrowed, original,
        "the test's manifest lost its world entry"
    );
    std::fs::write(&b.manifest, &narrowed).expect("narrow the allowlist");
    let out = b.cp(&["reload", &b.slug]).ok("reload a narrowed allowlist");
    assert!(out.stderr.contains("config/pipelock.json"), "{out:?}");
    wait_until(
        "pipelock refuses world after the reload",
        Duration::from_secs(15),
        || sh(to_world).stdout.ends_with(" 403"),
    );
    // git-gate reads its config only at start: reload refuses, naming it, and changes nothing.
    let moved = narrowed.replace("/upstream.git", "/elsewhere.git");
    std::fs::write(&b.manifest, &moved).expect("move the git upstream");
    let refused = b.cp(&["reload", &b.slug]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("config/git-gate.json")
            && refused.stderr.contains("control-plane up"),
        "{refused:?}"
    );
    // `up` of the original manifest: only pipelock's config differs from what runs, so the
    // container is kept and the proxies reloaded; world answers again.
    std::fs::write(&b.manifest, &original).expect("restore the manifest");
    let up = b
        .cp(&["up", &b.manifest.display().to_string()])
        .ok("up with the allowlist restored");
    assert!(up.stderr.contains("reloaded the running proxies"), "{up:?}");
    wait_until(
        "world answers again after the up",
        Duration::from_secs(15),
        || sh(to_world).stdout.ends_with(" 200"),
    );
    assert_eq!(
        started(),
        before,
        "an up that changed only pipelock's config recreated the sidecars container"
    );

    // --- git-gate: clone, clean push forwarded upstream, secret push refused ------------------
    let git = "git -c user.name=agent -c user.email=agent@bottle";
    let clone = sh("cd /tmp && git clone -q \"$GIT_GATE_URL\" app && cat app/README.md");
    assert!(
        clone.stdout.contains("hello"),
        "clone via git-gate: {clone:?}"
    );
    let push = sh(&format!(
        "cd /tmp/app && echo clean > clean.txt && git add . && {git} commit -qm clean && git push -q origin main 2>&1"
    ));
    assert_eq!(push.code, 0, "clean push refused: {push:?}");
    let upstream_log = run(
        "git",
        &[
            "--git-dir",
            &world.path().join("upstream.git").display().to_string(),
            "log",
            "--format=%s",
            "main",
        ],
    )
    .stdout;
    assert!(
        upstream_log.starts_with("clean"),
        "clean push did not land upstream: {upstream_log}"
    );
    let dirty = sh(&format!(
        "cd /tmp/app && printf 'a\\nb\\naws_key = AKIAQWERTYUIOPASDFGH\\n' > cfg.py && git add . && {git} commit -qm dirty && git push origin main 2>&1"
    ));
    assert_ne!(dirty.code, 0, "secret push accepted: {dirty:?}");
    assert!(
        dirty.stdout.contains("file cfg.py line 3") && dirty.stdout.contains("aws-access-key"),
        "refusal names file and line: {dirty:?}"
    );
    assert!(
        !dirty.stdout.contains("AKIAQWERTYUIOPASDFGH"),
        "refusal echoes the secret: {dirty:?}"
    );

    // --- supervise: MCP from the agent, decision from the operator ----------------------------
    let mcp = r#"
set -e
H=$(mktemp)
post() { curl -sS --max-time 10 -D "$H" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' ${SID:+-H "mcp-session-id: $SID"} \
  -H 'mcp-protocol-version: 2025-03-26' --data "$1" "$MCP_SUPERVISE_URL"; }
post '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}' >/dev/null
SID=$(grep -i '^mcp-session-id:' "$H" | cut -d' ' -f2 | tr -d '\r')
post '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
post '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"request_approval","arguments":{"kind":"deploy","summary":"ship it","details":"e2e"}}}'
"#;
    let asked = sh(mcp);
    assert_eq!(asked.code, 0, "MCP request_approval: {asked:?}");
    let id = asked
        .stdout
        .split("\\\"id\\\":\\\"")
        .nth(1)
        .or_else(|| asked.stdout.split("\"id\":\"").nth(1))
        .and_then(|rest| rest.split(['\\', '"']).next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no approval id in {}", asked.stdout));
    let listed = b.cp(&["approvals", "list", &b.slug]).ok("approvals list");
    assert!(listed.stdout.contains(&id), "{listed:?}");
    b.cp(&["approvals", "approve", &b.slug, &id, "--note", "go"])
        .ok("approvals approve");
    let decided = b
        .cp(&["approvals", "show", &b.slug, &id])
        .ok("approvals show");
    assert!(decided.stdout.contains("approved"), "{decided:?}");

    // Every daemon's lines are in the one container log, prefixed.
    let logs = run("docker", &["logs", &b.sidecars()]);
    let all = format!("{}{}", logs.stdout, logs.stderr);
    for daemon in [
        "init",
        "egress",
        "pipelock",
        "git-gate",
        "supervise",
        "pack-exec",
    ] {
        assert!(
            all.lines().any(|l| l.starts_with(&format!("{daemon} | "))),
            "no `{daemon} | ` lines in docker logs"
        );
    }
    assert!(!all.contains(token), "the credential reached the logs");

    // `up` with git-gate's config changed recreates the sidecars container: its daemons read
    // that file only at start, and a bind mount alone would leave git-gate on the old one.
    std::fs::write(
        &b.manifest,
        original.replace("/upstream.git", "/elsewhere.git"),
    )
    .expect("move the git upstream");
    b.cp(&["up", &b.manifest.display().to_string()])
        .ok("up with git-gate's upstream moved");
    assert_ne!(
        started(),
        before,
        "git-gate's config changed but the sidecars container was kept"
    );
}
