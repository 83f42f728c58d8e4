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
