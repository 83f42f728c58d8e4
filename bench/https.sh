#!/usr/bin/env bash
# HTTPS through the proxy chain: intercepted with DLP vs blind (passthrough) vs direct, in the
# same run, with the release `sidecars` binary as pipelock and egress (the bench client is
# sidecars/pipelock/benches/https.rs). Writes the `https` section of bench/RESULTS.md.
# HTTPS_BENCH_UPLOAD_MIB sets the upload body size (default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
cargo build --release -q -p sidecars
{
  echo "### HTTPS: intercepted with DLP vs blind vs direct (bench/https.sh)"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores: release \`sidecars\` as pipelock and egress on loopback, a hyper + rustls client, an HTTPS upstream of the bench's own; 3 rounds alternating the three ways, medians. *blind*: the host in egress's \`passthrough\` (SNI checked, then relayed). *intercepted*: \`intercept_all\`, TLS terminated with a bottle-CA leaf, DLP on request line, headers and the body (streamed in 1 MiB windows), re-encrypted upstream."
  echo
  cargo bench -q -p pipelock --bench https -- --sidecars "$CARGO_TARGET_DIR/release/sidecars"
} | tee /dev/stderr | python3 bench/update_results.py https
