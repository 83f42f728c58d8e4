//! Choosing the runtime backend from the environment, once, at start-up.
//!
//! `BOT_BOTTLE_RUNTIME`:
//! - `compose`: the compose CLI backend ([`ComposeCli`]; `BOT_BOTTLE_COMPOSE` names the
//!   command, else it is detected on first use);
//! - `engine`: the Docker Engine API backend ([`Engine`]; socket from `DOCKER_HOST` when it is
//!   `unix://…`, else `/var/run/docker.sock`);
//! - `auto` (the default, also when empty): the Engine backend when Docker is a local unix
//!   socket (`DOCKER_HOST` unset or `unix://…`) and no compose command is named; the compose
//!   CLI backend when `BOT_BOTTLE_COMPOSE` names one or `DOCKER_HOST` is another kind of host
//!   (`tcp://`, `ssh://`: the Engine backend speaks unix sockets only). Why the Engine first:
//!   it makes the same bottle (tests/e2e/tests/backends.rs) without a subprocess per call, and
//!   starts the agent as soon as the sidecars' healthcheck passes instead of after Docker's
//!   first 1 s interval (bench/up.sh: ~1.0 s vs ~2.9 s per `up`).
//!
//! `BOT_BOTTLE_FILES` (`bind`, the default, or `volumes`) says how bottles get their files
//! ([`super::files`]); `volumes` needs the Engine backend, and asking for it with the compose
//! CLI is an error naming both settings.
//!
//! Selection makes no Docker request: both backends reach the daemon lazily, so a control plane
//! started while Docker is down reports [`RuntimeError::Unreachable`] per request instead of
//! not starting.

use super::compose_cli::ComposeCli;
use super::engine::Engine;
use super::files::{FileDelivery, FILES_VAR};
use super::{Runtime, RuntimeError};

/// Environment variable choosing the backend.
pub const RUNTIME_VAR: &str = "BOT_BOTTLE_RUNTIME";

/// A chosen backend, before boxing (so callers and tests can see which one it is).
pub enum Backend {
    /// The compose CLI backend.
    Compose(ComposeCli),
    /// The Docker Engine API backend.
    Engine(Engine),
}

impl Backend {
    /// `compose` or `engine`: for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Compose(_) => "compose",
            Backend::Engine(_) => "engine",
        }
    }

    /// The backend as a trait object, for `Controller<Box<dyn Runtime>>`.
    pub fn boxed(self) -> Box<dyn Runtime> {
        match self {
            Backend::Compose(c) => Box::new(c),
            Backend::Engine(e) => Box::new(e),
        }
    }
}

/// The backend named by `BOT_BOTTLE_RUNTIME` (see the module doc); `env` reads the
/// environment (`|k| std::env::var(k).ok()` in production). Only `auto` runs anything (the
/// compose `version` probe).
pub async fn choose(env: impl Fn(&str) -> Option<String>) -> Result<Backend, RuntimeError> {
    let value = env(RUNTIME_VAR).unwrap_or_default();
    let compose = || ComposeCli::new(env("BOT_BOTTLE_COMPOSE"));
    let engine = || Engine::new(env("DOCKER_HOST"));
    let backend = match value.trim().to_ascii_lowercase().as_str() {
        "compose" => Backend::Compose(compose()),
        "engine" => Backend::Engine(engine()),
        "" | "auto" => {
            let named_compose = env("BOT_BOTTLE_COMPOSE").is_some_and(|c| !c.trim().is_empty());
            let remote = env("DOCKER_HOST")
                .is_some_and(|h| !h.trim().is_empty() && !h.starts_with("unix://"));
            if named_compose || remote {
                Backend::Compose(compose())
            } else {
                Backend::Engine(engine())
            }
        }
        _ => return Err(RuntimeError::UnknownBackend { value }),
    };
    let files = FileDelivery::from_value(env(FILES_VAR).as_deref())?;
    let backend = match backend {
        Backend::Engine(e) => Backend::Engine(e.with_files(files)),
        Backend::Compose(_) if files == FileDelivery::Volumes => {
            return Err(RuntimeError::Setting(format!(
                "{FILES_VAR}=volumes needs the Docker Engine backend (the compose CLI bind-mounts the state directory): unset BOT_BOTTLE_COMPOSE and set {RUNTIME_VAR}=engine with a local unix socket, or use {FILES_VAR}=bind"
            )))
        }
        compose => compose,
    };
    tracing::debug!(backend = backend.name(), "runtime backend selected");
    Ok(backend)
}

/// The runtime backend for this process, chosen by [`choose`] and boxed for
/// `Controller<Box<dyn Runtime>>`.
pub async fn select(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Box<dyn Runtime>, RuntimeError> {
    Ok(choose(env).await?.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[tokio::test]
    async fn explicit_choices_are_taken_as_they_are() {
        let b = choose(env(&[
            (RUNTIME_VAR, "engine"),
            ("DOCKER_HOST", "unix:///x.sock"),
        ]))
        .await
        .unwrap();
        match b {
            Backend::Engine(e) => assert_eq!(e.socket(), "/x.sock"),
            Backend::Compose(_) => panic!("engine expected"),
        }
        let b = choose(env(&[(RUNTIME_VAR, "Compose")])).await.unwrap();
        assert_eq!(b.name(), "compose");
    }

    #[tokio::test]
    async fn volumes_delivery_goes_to_the_engine_and_is_refused_with_compose() {
        let b = choose(env(&[(FILES_VAR, "volumes")])).await.unwrap();
        assert_eq!(b.boxed().file_delivery(), FileDelivery::Volumes);
        let b = choose(env(&[])).await.unwrap();
        assert_eq!(b.boxed().file_delivery(), FileDelivery::Bind);
        let err = choose(env(&[(FILES_VAR, "volumes"), (RUNTIME_VAR, "compose")]))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("needs the Docker Engine backend"), "{err}");
        assert!(choose(env(&[(FILES_VAR, "nfs")])).await.is_err());
    }

    #[tokio::test]
    async fn auto_takes_the_engine_for_a_local_socket_and_compose_when_named_or_remote() {
        for local in [&[][..], &[("DOCKER_HOST", "unix:///run/docker.sock")][..]] {
            assert_eq!(
                choose(env(local)).await.unwrap().name(),
                "engine",
                "{local:?}"
            );
        }
        let named = choose(env(&[
            (RUNTIME_VAR, "auto"),
            ("BOT_BOTTLE_COMPOSE", "docker-compose"),
        ]));
        assert_eq!(named.await.unwrap().name(), "compose");
        let remote = choose(env(&[("DOCKER_HOST", "ssh://builder@host")]));
        assert_eq!(remote.await.unwrap().name(), "compose");
    }

    #[tokio::test]
    async fn unknown_values_are_refused() {
        let err = choose(env(&[(RUNTIME_VAR, "podman")]))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("podman") && err.contains("compose, engine or auto"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn select_boxes_a_runtime() {
        let r = select(env(&[
            (RUNTIME_VAR, "engine"),
            ("DOCKER_HOST", "unix:///nonexistent.sock"),
        ]))
        .await
        .unwrap();
        let err = r.describe().await.unwrap_err();
        assert!(matches!(err, RuntimeError::Unreachable(_)), "{err}");
    }
}
