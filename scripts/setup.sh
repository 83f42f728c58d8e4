#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine (root): Debian packages from
# scripts/apt-packages.txt, the musl Rust target, cargo-nextest if missing. Idempotent and quick
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want=()
while read -r pkg; do
  pkg=${pkg%%#*}; pkg=$(echo "$pkg" | xargs)
  [ -n "$pkg" ] || continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || want+=("$pkg")
done < scripts/apt-packages.txt
if [ ${#want[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "setup: adding the x86_64-unknown-linux-musl Rust target"
  rustup target add x86_64-unknown-linux-musl || echo "setup: musl target unavailable; static glibc fallback will be used" >&2
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
if [ -f scripts/pip-requirements.txt ]; then
  python3 -m pip install -q -r scripts/pip-requirements.txt
fi
