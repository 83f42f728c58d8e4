#!/usr/bin/env bash
# Proxy-chain benchmarks (pipelock → egress), each against a baseline measured in the same run:
# CONNECT tunnel throughput vs. direct TCP (goal ≥ 80%), p50 latency added per hop for small
# HTTP requests (goal ≤ 1 ms), plain-HTTP keep-alive requests/s through pipelock (goal ≥ 5k/s on
# 2 cores), RSS per 1,000 idle tunnels. Uses the release `sidecars` binary as the daemons and a
# small Rust load client (absolute-form requests, which wrk cannot send).
# Writes the table to bench/RESULTS.md (section proxy). PROXY_BENCH_BYTES sets the tunnel
# transfer size (default 2 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
cargo build --release -q -p sidecars
cargo bench -q -p pipelock --bench proxy -- --sidecars "$CARGO_TARGET_DIR/release/sidecars" \
  | tee /dev/stderr | bench/update_results.py proxy
