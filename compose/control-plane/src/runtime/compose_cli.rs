//! The compose CLI backend: `docker compose` (v2) or `docker-compose` (v1) for `up`/`down`,
//! the `docker` CLI for inspection, logs and exec.
//!
//! - The compose command is detected once, lazily: `BOT_BOTTLE_COMPOSE` (e.g.
//!   `docker-compose`, split on whitespace) if set, else `docker compose version`, else
//!   `docker-compose version`.
//! - The project name always goes on the command line (`-p`), since compose v1 rejects a
//!   top-level `name:`; `up` also writes `.env` with `COMPOSE_PROJECT_NAME`, so a user running
//!   compose by hand in the project directory addresses the same project.
//! - Containers are found by compose's own labels (`com.docker.compose.project`/`.service`),
//!   which both compose versions set; so inspection and a label sweep in `down` work even when
//!   the project directory is gone.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use bottle_compose::model::Project;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, OnceCell};

use super::command::{self, display, run, Finished};
use super::{
    statuses, ContainerFacts, ExecOutput, ExecStream, FoundBottle, LogLine, LogOptions, Runtime,
    RuntimeError, Stream, PROJECT_LABEL, SERVICE_LABEL,
};
use crate::api::{DownReport, ServiceStatus};

/// File name of the compose file in the project directory.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// Deadline of quick docker queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of `down` (stop grace 10 s per container, plus removal).
const DOWN_TIMEOUT: Duration = Duration::from_secs(90);

/// Drives the compose and docker CLIs.
pub struct ComposeCli {
    docker: String,
    compose_override: Option<String>,
    compose: OnceCell<Vec<String>>,
}

impl ComposeCli {
    /// A backend using `docker` and the compose command named by `compose_override`
    /// (`BOT_BOTTLE_COMPOSE`), or the detected one.
    pub fn new(compose_override: Option<String>) -> ComposeCli {
        ComposeCli {
            docker: "docker".to_string(),
            compose_override: compose_override.filter(|s| !s.trim().is_empty()),
            compose: OnceCell::new(),
        }
    }

    /// The compose command (argv prefix), detected on first use.
    pub async fn compose(&self) -> Result<&[String], RuntimeError> {
        self.compose
            .get_or_try_init(|| async {
                let candidates: Vec<Vec<String>> = match &self.compose_override {
                    Some(cmd) => vec![cmd.split_whitespace().map(String::from).collect()],
                    None => vec![
                        vec![self.docker.clone(), "compose".to_string()],
                        vec!["docker-compose".to_string()],
                    ],
                };
                for argv in &candidates {
                    let mut probe = argv.clone();
                    probe.push("version".to_string());
                    if let Ok(f) = run(&probe, None, QUERY_TIMEOUT).await {
                        if f.code == Some(0) {
                            return Ok(argv.clone());
                        }
                    }
                }
                Err(RuntimeError::ComposeNotFound {
                    tried: candidates
                        .iter()
                        .map(|c| format!("`{} version`", display(c)))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })
            .await
            .map(Vec::as_slice)
    }

    fn docker(&self, args: &[&str]) -> Vec<String> {
        std::iter::once(self.docker.clone())
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    }

    async fn compose_argv(
        &self,
        project: &str,
        args: &[&str],
    ) -> Result<Vec<String>, RuntimeError> {
        let mut argv = self.compose().await?.to_vec();
        argv.extend(["-p", project, "-f", COMPOSE_FILE].map(String::from));
        argv.extend(args.iter().map(|s| s.to_string()));
        Ok(argv)
    }

    /// Ids of docker objects (`ps -a`, `network ls`, `volume ls`) labelled with the project.
    async fn ids(
        &self,
        list: &[&str],
        project: &str,
        service: Option<&str>,
    ) -> Result<Vec<String>, RuntimeError> {
        let mut args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--filter".to_string(),
            format!("label={PROJECT_LABEL}={project}"),
        ]);
        if let Some(s) = service {
            args.extend(["--filter".to_string(), format!("label={SERVICE_LABEL}={s}")]);
        }
        args.push("-q".to_string());
        let argv: Vec<String> = std::iter::once(self.docker.clone()).chain(args).collect();
        let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    async fn container_of(&self, project: &str, service: &str) -> Result<String, RuntimeError> {
        let ids = self.ids(&["ps", "-a"], project, Some(service)).await?;
        ids.into_iter().next().ok_or_else(|| {
            RuntimeError::Unhealthy(format!(
                "project {project} has no {service} container (is the bottle up?)"
            ))
        })
    }
}

#[async_trait]
impl Runtime for ComposeCli {
    async fn describe(&self) -> Result<String, RuntimeError> {
        let mut argv = self.compose().await?.to_vec();
        argv.push("version".to_string());
        let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        Ok(format!(
            "compose CLI `{}`: {first}",
            display(&argv[..argv.len() - 1])
        ))
    }

    async fn up(
        &self,
        project: &Project,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        write_compose_files(project, dir)?;
        let argv = self
            .compose_argv(&project.name, &["up", "-d", "--remove-orphans"])
            .await?;
        run_ok(&argv, Some(dir), timeout).await?;
        Ok(())
    }

    async fn down(&self, project: &str, dir: Option<&Path>) -> Result<DownReport, RuntimeError> {
        let containers = self.ids(&["ps", "-a"], project, None).await?;
        let networks = self.ids(&["network", "ls"], project, None).await?;
        let volumes = self.ids(&["volume", "ls"], project, None).await?;
        let report = DownReport {
            containers: containers.len(),
            networks: networks.len(),
            volumes: volumes.len(),
            state_removed: false,
        };
        if report.nothing() {
            return Ok(report);
        }
        // The orderly way first (stop grace, then removal), when the compose file is there.
        if let Some(dir) = dir.filter(|d| d.join(COMPOSE_FILE).is_file()) {
            let argv = self
                .compose_argv(
                    project,
                    &["down", "--volumes", "--remove-orphans", "--timeout", "10"],
                )
                .await?;
            run_ok(&argv, Some(dir), DOWN_TIMEOUT).await?;
        }
        // Then whatever is left, by label (no compose file, or something compose missed).
        let containers = self.ids(&["ps", "-a"], project, None).await?;
        if !containers.is_empty() {
            let mut argv = self.docker(&["rm", "-f", "-v"]);
            argv.extend(containers);
            run_ok(&argv, None, DOWN_TIMEOUT).await?;
        }
        for (list, rm) in [
            (["network", "ls"], ["network", "rm"]),
            (["volume", "ls"], ["volume", "rm"]),
        ] {
            let ids = self.ids(&list, project, None).await?;
            if !ids.is_empty() {
                let mut argv = self.docker(&rm);
                argv.extend(ids);
                run_ok(&argv, None, QUERY_TIMEOUT).await?;
            }
        }
        Ok(report)
    }

    async fn bottles(&self) -> Result<Vec<FoundBottle>, RuntimeError> {
        let filter = format!("label={}", bottle_compose::render::LABEL_SLUG);
        let argv = self.docker(&["ps", "-aq", "--filter", &filter]);
        let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = self.docker(&["inspect"]);
        argv.extend(ids);
        let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
        let facts = parse_facts(&out.stdout).map_err(|message| RuntimeError::Output {
            command: display(&argv),
            message,
        })?;
        Ok(FoundBottle::group(facts))
    }

    async fn containers(&self, project: &str) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let ids = self.ids(&["ps", "-a"], project, None).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut argv = self.docker(&["inspect"]);
        argv.extend(ids);
        let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
        parse_inspect(&out.stdout).map_err(|message| RuntimeError::Output {
            command: display(&argv),
            message,
        })
    }

    async fn logs(
        &self,
        project: &str,
        service: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        let id = self.container_of(project, service).await?;
        let mut argv = self.docker(&["logs"]);
        if options.follow {
            argv.push("--follow".to_string());
        }
        if let Some(n) = options.tail {
            argv.extend(["--tail".to_string(), n.to_string()]);
        }
        argv.push(id);
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: display(&argv),
                source,
            })?;
        let (tx, rx) = mpsc::channel(256);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let a = tokio::spawn(pump(stdout, Stream::Stdout, tx.clone()));
            let b = tokio::spawn(pump(stderr, Stream::Stderr, tx));
            let _ = a.await;
            let _ = b.await;
            // Both pipes closed (EOF) or the reader went away: dropping `child` kills it.
            let _ = child.start_kill();
            let _ = child.wait().await;
        });
        Ok(rx)
    }

    async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError> {
        let id = self.container_of(project, service).await?;
        let mut full = self.docker(&["exec"]);
        if let Some(user) = user {
            full.extend(["-u".to_string(), user.to_string()]);
        }
        full.push(id);
        full.extend(argv.iter().cloned());
        let out = run(&full, None, QUERY_TIMEOUT).await?;
        if out.code != Some(0) {
            if let Some(why) = daemon_unreachable(&out.stderr) {
                return Err(RuntimeError::Unreachable(why));
            }
        }
        Ok(ExecOutput {
            code: out.code.unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn exec_stream(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecStream, RuntimeError> {
        let id = self.container_of(project, service).await?;
        let mut full = self.docker(&["exec", "-i"]);
        if let Some(user) = user {
            full.extend(["-u".to_string(), user.to_string()]);
        }
        full.push(id);
        full.extend(argv.iter().cloned());
        command::spawn_stream(&full)
    }

    async fn network_subnets(
        &self,
        project: &str,
    ) -> Result<Vec<bottle_spec::Subnet>, RuntimeError> {
        network_subnets_cli(self, project).await
    }
}

/// `docker network ls`, then `docker network inspect` of every network: the subnets of all but
/// `project`'s own. A network removed between the two commands is not taken any more: its
/// "No such network" is ignored as long as the others were inspected.
async fn network_subnets_cli(
    cli: &ComposeCli,
    project: &str,
) -> Result<Vec<bottle_spec::Subnet>, RuntimeError> {
    let argv = cli.docker(&["network", "ls", "-q", "--no-trunc"]);
    let out = run_ok(&argv, None, QUERY_TIMEOUT).await?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut argv = cli.docker(&["network", "inspect"]);
    argv.extend(ids);
    let out = run(&argv, None, QUERY_TIMEOUT).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let vanished_only = !stderr.trim().is_empty()
        && stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.contains("No such network"));
    if out.code != Some(0) && !vanished_only {
        if let Some(why) = daemon_unreachable(&out.stderr) {
            return Err(RuntimeError::Unreachable(why));
        }
        return Err(RuntimeError::Failed {
            command: display(&argv),
            status: format!("exit code {}", out.code.unwrap_or(-1)),
            stderr: stderr.trim().to_string(),
        });
    }
    parse_network_subnets(&out.stdout, project).map_err(|message| RuntimeError::Output {
        command: display(&argv),
        message,
    })
}

/// `docker network inspect` output → the subnets of every network but `project`'s.
fn parse_network_subnets(json: &[u8], project: &str) -> Result<Vec<bottle_spec::Subnet>, String> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    // The CLI prints the Engine API's own objects: parse them with the API's types.
    let items: Vec<bollard::models::Network> =
        serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(super::foreign_subnets(&items, project))
}

async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, stream: Stream, tx: mpsc::Sender<LogLine>) {
    let Some(reader) = reader else { return };
    let mut lines = BufReader::new(reader).split(b'\n');
    while let Ok(Some(mut line)) = lines.next_segment().await {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if tx.send(LogLine { stream, line }).await.is_err() {
            return;
        }
    }
}

/// [`command::run_ok`], but "the docker CLI cannot reach the daemon" becomes
/// [`RuntimeError::Unreachable`] (the same variant the Engine backend uses), so front ends can
/// tell a host problem from a failed operation.
async fn run_ok(
    argv: &[String],
    cwd: Option<&Path>,
    timeout: Duration,
) -> Result<Finished, RuntimeError> {
    command::run_ok(argv, cwd, timeout)
        .await
        .map_err(|e| match e {
            RuntimeError::Failed { ref stderr, .. } => {
                match daemon_unreachable(stderr.as_bytes()) {
                    Some(why) => RuntimeError::Unreachable(why),
                    None => e,
                }
            }
            e => e,
        })
}

/// The daemon-unreachable messages of the docker CLI and of docker-compose v1/v2, turned into
/// one message saying what to check.
fn daemon_unreachable(stderr: &[u8]) -> Option<String> {
    const MARKERS: [&str; 4] = [
        "Cannot connect to the Docker daemon",
        "permission denied while trying to connect to the Docker daemon",
        "Couldn't connect to Docker daemon",
        "Error while fetching server API version",
    ];
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| MARKERS.iter().any(|m| l.contains(m)))?;
    Some(format!(
        "cannot reach the Docker daemon: {} (is Docker running, and is its socket readable by this user?)",
        line.trim()
    ))
}

/// Write what makes the project directory a compose project: the compose file rendered from
/// the model and `.env` naming the project, so compose run by hand in the directory addresses
/// the same project. Both backends write them (the Engine backend too, so the directory stays
/// usable with compose and the containers' `config_files` label points at a real file).
pub fn write_compose_files(project: &Project, dir: &Path) -> Result<(), RuntimeError> {
    let yaml = bottle_compose::to_yaml(project).map_err(|e| RuntimeError::Model(e.to_string()))?;
    write(&dir.join(COMPOSE_FILE), yaml.as_bytes())?;
    write(
        &dir.join(".env"),
        format!("COMPOSE_PROJECT_NAME={}\n", project.name).as_bytes(),
    )
}

fn write(path: &Path, contents: &[u8]) -> Result<(), RuntimeError> {
    std::fs::write(path, contents).map_err(|source| RuntimeError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    name: String,
    state: InspectState,
    config: InspectConfig,
    network_settings: InspectNetwork,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: String,
    exit_code: i64,
    #[serde(default)]
    health: Option<InspectHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectNetwork {
    #[serde(default)]
    ports: Option<HashMap<String, Option<Vec<InspectBinding>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectBinding {
    host_ip: String,
    host_port: String,
}

/// `docker inspect` output → statuses, sorted by service.
fn parse_inspect(json: &[u8]) -> Result<Vec<ServiceStatus>, String> {
    Ok(statuses(parse_facts(json)?))
}

/// `docker inspect` output → the facts of each container.
fn parse_facts(json: &[u8]) -> Result<Vec<ContainerFacts>, String> {
    let items: Vec<Inspect> = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(items
        .into_iter()
        .map(|i| ContainerFacts {
            name: i.name,
            labels: i.config.labels.unwrap_or_default(),
            status: i.state.status,
            exit_code: i.state.exit_code,
            health: i.state.health.map(|h| h.status),
            ports: i
                .network_settings
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|(key, bindings)| {
                    let bindings = bindings
                        .unwrap_or_default()
                        .into_iter()
                        .map(|b| (b.host_ip, b.host_port))
                        .collect();
                    (key, bindings)
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PublishedPort;

    #[test]
    fn unreachable_daemon_is_recognised() {
        let why = daemon_unreachable(
            b"Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n",
        )
        .unwrap();
        assert!(why.contains("cannot reach the Docker daemon"), "{why}");
        assert!(daemon_unreachable(b"Error: No such container: x").is_none());
    }

    #[test]
    fn network_inspect_output_is_parsed() {
        let json = br#"[
            {"Name":"bridge","Labels":{},"IPAM":{"Driver":"default","Config":[{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]}},
            {"Name":"host","Labels":{},"IPAM":{"Driver":"default","Config":[]}},
            {"Name":"none","Labels":null,"IPAM":{"Driver":"default","Config":null}},
            {"Name":"bb-a_a-internal","Labels":{"com.docker.compose.project":"bb-a"},"IPAM":{"Config":[{"Subnet":"10.213.0.16/28"}]}},
            {"Name":"bb-b_b-internal","Labels":{"com.docker.compose.project":"bb-b"},"IPAM":{"Config":[{"Subnet":"10.213.0.32/28"},{"Subnet":"fd00::/64"}]}}
        ]"#;
        let found: Vec<String> = parse_network_subnets(json, "bb-a")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["10.213.0.32/28", "172.17.0.0/16"]);
        assert!(parse_network_subnets(b"", "x").unwrap().is_empty());
        assert!(parse_network_subnets(b"{", "x").is_err());
    }

    #[test]
    fn inspect_output_is_parsed() {
        let json = br#"[{"Name":"/bot-bottle-sidecars-x","State":{"Status":"running","ExitCode":0,"Health":{"Status":"healthy"}},
            "Config":{"Labels":{"com.docker.compose.service":"sidecars"}},
            "NetworkSettings":{"Ports":{"9000/tcp":[{"HostIp":"127.0.0.1","HostPort":"49153"}],"9099/tcp":null}}},
            {"Name":"/bot-bottle-agent-x","State":{"Status":"exited","ExitCode":137},
            "Config":{"Labels":{"com.docker.compose.service":"agent"}},"NetworkSettings":{"Ports":{}}}]"#;
        let s = parse_inspect(json).unwrap();
        assert_eq!(s[0].service, "agent");
        assert_eq!(s[0].exit_code, Some(137));
        assert_eq!(s[1].container, "bot-bottle-sidecars-x");
        assert_eq!(s[1].health.as_deref(), Some("healthy"));
        assert_eq!(
            s[1].ports,
            [PublishedPort {
                container_port: 9000,
                host: "127.0.0.1:49153".parse().unwrap()
            }]
        );
        assert_eq!(s[1].exit_code, None);
    }
}
