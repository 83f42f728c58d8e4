//! Choosing the runtime backend from the environment, once, at start-up.
//!
//! `BOT_BOTTLE_RUNTIME`:
//! - `compose`: the compose CLI backend ([`ComposeCli`]; `BOT_BOTTLE_COMPOSE` names the
//!   command, else it is detected on first use);
//! - `engine`: the Docker Engine API backend ([`Engine`]; socket from `DOCKER_HOST` when it is
//!   `unix://…`, else `/var/run/docker.sock`);
//! - `auto` (the default, also when empty): the compose CLI backend when a compose command
//!   answers `version` (the same detection [`ComposeCli`] uses), else the Engine backend — so
//!   a host with compose keeps the behaviour it always had, and a container with only the
//!   socket mounted still works.
//!
//! Selection makes no Docker request: both backends reach the daemon lazily, so a control plane
//! started while Docker is down reports [`RuntimeError::Unreachable`] per request instead of
//! not starting.

use super::compose_cli::ComposeCli;
use super::engine::Engine;
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
            let cli = compose();
            match cli.compose().await {
                Ok(_) => Backend::Compose(cli),
                Err(e) => {
                    tracing::info!("{e}: using the Docker Engine API backend");
                    Backend::Engine(engine())
                }
            }
        }
        _ => return Err(RuntimeError::UnknownBackend { value }),
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
    async fn auto_prefers_a_working_compose_command() {
        // `true version` exits 0: a "working" compose command.
        let b = choose(env(&[("BOT_BOTTLE_COMPOSE", "true")]))
            .await
            .unwrap();
        assert_eq!(b.name(), "compose");
        let b = choose(env(&[
            (RUNTIME_VAR, "auto"),
            ("BOT_BOTTLE_COMPOSE", "/nonexistent/compose"),
        ]))
        .await
        .unwrap();
        assert_eq!(b.name(), "engine");
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
