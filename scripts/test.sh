#!/usr/bin/env bash
# The project's one test command (README: `make test`; CI: .ci/run). On a fresh Debian machine
# it installs what it needs, checks formatting and lints, builds the images the end-to-end tests
# run, and runs every test of the workspace (unit, integration, real processes, real Docker).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup (Debian packages, Rust targets, test tools)"
scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# A machine whose Docker daemon is installed but not running (stopped, or killed) gets it
# started here, as root, so the end-to-end tests can run.
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null && [ "$(id -u)" = 0 ]; then
  step "starting the Docker daemon (installed, not running)"
  (setsid nohup dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi

if docker info >/dev/null 2>&1; then
  step "images (offline: static binaries + local Debian base)"
  scripts/images.sh
elif [ -n "${CI:-}" ]; then
  echo "Docker is not reachable, and CI is set: the end-to-end tests need it." >&2
  exit 1
else
  echo "note: Docker is not reachable; end-to-end tests will skip (they fail when CI is set)."
fi

step "cargo nextest (whole workspace)"
cargo nextest run --workspace --locked --profile ci
