//! The "try it" block `up` prints for the default bottle (the embedded example): one command
//! per guard, each working as printed on the bottle just started. An e2e test
//! (`tests/e2e/tests/default_bottle.rs`) runs every command of it; the README shows it.
//!
//! Commands address the bottle by the names in the `up` report (container names, the agent's
//! environment), so a bottle brought up with another `BOT_BOTTLE_PREFIX` gets its own names.

use crate::api::UpReport;

/// The placeholder the operator replaces with the id `approvals list` shows.
pub const ID_PLACEHOLDER: &str = "<ID>";

/// What the block needs to know about the bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The bottle's slug.
    pub slug: String,
    /// The agent's container name.
    pub agent: String,
    /// The sidecars container's name.
    pub sidecars: String,
    /// The agent's `PACK_EXEC_URL`.
    pub pack_exec_url: String,
    /// The agent's `GIT_GATE_URL`.
    pub git_gate_url: String,
}

impl Names {
    /// The names in an `up` report.
    pub fn of(report: &UpReport) -> Names {
        let b = &report.bottle;
        let container = |service: &str| {
            b.services
                .iter()
                .find(|s| s.service == service)
                .map(|s| s.container.clone())
                .unwrap_or_else(|| format!("{}-{service}", b.project))
        };
        let env = |key: &str| {
            report
                .agent_env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Names {
            slug: b.slug.clone(),
            agent: container(bottle_compose::render::AGENT),
            sidecars: container(bottle_compose::render::SIDECARS),
            pack_exec_url: env("PACK_EXEC_URL"),
            git_gate_url: env("GIT_GATE_URL"),
        }
    }
}

/// The block for the bottle `n`; `cp` is how the operator invoked the control plane.
pub fn text(n: &Names, cp: &str) -> String {
    let (agent, sidecars) = (&n.agent, &n.sidecars);
    let slug = &n.slug;
    let exec = format!("docker exec {agent}");
    let git = "git -c user.name=agent -c user.email=agent@bottle";
    let upstream = format!(
        "http://{}:{}",
        bottle_compose::render::DEMO_UPSTREAM,
        bottle_compose::render::DEMO_UPSTREAM_HTTP_PORT
    );
    let steps: Vec<(&str, String)> = vec![
        (
            "allowed: agent -> pipelock -> egress (adds the demo credential) -> demo upstream",
            format!("{exec} curl -sS {upstream}/hello"),
        ),
        (
            "refused by pipelock: not on the allowlist",
            format!("{exec} curl -sS http://example.com/"),
        ),
        (
            "a command pack, run warm by pack-exec in its jail",
            format!(
                "{exec} curl -sS -d '{{\"text\":\"hello\"}}' {}/v1/packs/cmd.upper",
                n.pack_exec_url
            ),
        ),
        (
            "the same pack as an MCP tool (pack-exec's /mcp, the agent's MCP_PACKS_URL)",
            format!("{exec} bottle-mcp call cmd-upper '{{\"text\":\"hello\"}}'"),
        ),
        (
            "git through git-gate: clone, then a clean push (forwarded upstream)",
            format!(
                "{exec} sh -c 'cd /tmp && git clone -q {} demo && cd demo && echo hi > hi.txt && git add hi.txt && {git} commit -qm hi && git push -q origin HEAD'",
                n.git_gate_url
            ),
        ),
        (
            "a push carrying a token is refused (the message names file and line, not the token)",
            format!(
                "{exec} sh -c 'cd /tmp/demo && echo aws_key=AKIAQWERTYUIOPASDFGH > cfg.py && git add cfg.py && {git} commit -qm key && git push origin HEAD'"
            ),
        ),
        (
            "an approval: the agent asks over MCP (supervise) ...",
            format!("{exec} bottle-mcp request-approval deploy 'ship v1'"),
        ),
        (
            "... and you decide (the id is in the list)",
            format!("{cp} approvals list {slug} --pending"),
        ),
        ("", format!("{cp} approvals approve {slug} {ID_PLACEHOLDER}")),
        (
            "logs: every daemon in one container, prefixed; or one daemon's lines",
            format!("docker logs {sidecars}"),
        ),
        ("", format!("{cp} logs {slug} --daemon pipelock")),
        ("done: remove it all", format!("{cp} down {slug}")),
    ];
    let mut t = String::from("\ntry it:\n");
    for (note, command) in steps {
        if !note.is_empty() {
            t.push_str(&format!("  # {note}\n"));
        }
        t.push_str(&format!("  {command}\n"));
    }
    t
}

/// The control plane as the operator invoked it: the path they typed (it works from where
/// they are), or `control-plane` when found on `PATH`.
pub fn invocation() -> String {
    std::env::args()
        .next()
        .filter(|a| a.contains('/'))
        .unwrap_or_else(|| "control-plane".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_compose::render::{container_name, AGENT, DEFAULT_PREFIX, SIDECARS};

    /// The block `make up` prints: the embedded example under the default prefix, the control
    /// plane invoked as the Makefile does.
    fn make_up_block() -> String {
        let m =
            bottle_compose::Manifest::parse(crate::source::EXAMPLE_MANIFEST, Some("bottle.toml"))
                .expect("the embedded example parses");
        let env = bottle_compose::render::agent_env(&m);
        let names = Names {
            agent: container_name(DEFAULT_PREFIX, AGENT, &m.slug),
            sidecars: container_name(DEFAULT_PREFIX, SIDECARS, &m.slug),
            pack_exec_url: env["PACK_EXEC_URL"].clone(),
            git_gate_url: env["GIT_GATE_URL"].clone(),
            slug: m.slug,
        };
        text(
            &names,
            "target/x86_64-unknown-linux-musl/release/control-plane",
        )
    }

    #[test]
    fn the_readme_shows_the_block_make_up_prints() {
        let readme = include_str!("../../../README.md");
        for line in make_up_block()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.contains("try it:"))
        {
            assert!(
                readme.contains(line.trim_start()),
                "README.md's quick start lacks this line of the try-it block:\n{line}"
            );
        }
    }

    #[test]
    fn every_guard_of_the_default_bottle_has_a_command() {
        let block = make_up_block();
        for (what, needle) in [
            (
                "pipelock/egress",
                "curl -sS http://demo-upstream:8080/hello",
            ),
            ("allowlist refusal", "http://example.com/"),
            ("pack-exec", "http://sidecars:9000/v1/packs/cmd.upper"),
            ("packs over MCP", "bottle-mcp call cmd-upper"),
            ("git-gate", "git clone -q git://sidecars:9418/demo"),
            ("supervise", "bottle-mcp request-approval"),
            ("approvals", "approvals approve example <ID>"),
            ("logs", "docker logs bot-bottle-sidecars-example"),
        ] {
            assert!(
                block.contains(needle),
                "{what}: {needle} missing from\n{block}"
            );
        }
    }
}
