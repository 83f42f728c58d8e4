#!/usr/bin/env bash
# supervise benchmark: MCP `tools/call` round-trips per second over streamable HTTP, with wrk
# as the load client (keep-alive, 2 threads, 16 connections) against the release binary.
# Baseline in the same run: `GET /health` on the same listener (the HTTP stack's floor), so
# the ratio shows what JSON-RPC + MCP + the queue read cost. `request_approval` (two fsyncs
# per call) is reported too. Writes the table to bench/RESULTS.md (section supervise).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p sidecars
BIN=$CARGO_TARGET_DIR/release/sidecars
DURATION=${DURATION:-5}

T=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); oport=$(free_port)
echo "{\"listen\":\"127.0.0.1:$port\",\"operator_listen\":\"127.0.0.1:$oport\",\"queue_dir\":\"$T/queue\"}" > "$T/supervise.json"
SIDECARS_LOG=warn "$BIN" supervise --config "$T/supervise.json" & pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done

URL=http://127.0.0.1:$port/mcp
sid=$(curl -s -D - -o /dev/null -H 'content-type: application/json' "$URL" \
  -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}' \
  | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}' | tr -d '\r')
call() { curl -s -H 'content-type: application/json' -H "mcp-session-id: $sid" "$URL" -d "$1"; }
call '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
id=$(call '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"request_approval","arguments":{"kind":"bench","summary":"load test"}}}' | jq -r .result.structuredContent.id)

lua() { # body -> lua script path
  local f; f=$(mktemp -p "$T" --suffix .lua)
  cat > "$f" <<LUA
wrk.method = "POST"
wrk.body = [[$1]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Mcp-Session-Id"] = "$sid"
LUA
  echo "$f"
}
rps() { awk '/Requests\/sec/ {print $2}'; }
p50() { awk '/^ +50%/ {print $2}'; }
run() { wrk -t2 -c16 -d"${DURATION}s" --latency "$@" 2>&1; }

get=$(run -s "$(lua "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"get_approval\",\"arguments\":{\"id\":\"$id\"}}}")" "$URL")
ping=$(run -s "$(lua '{"jsonrpc":"2.0","id":8,"method":"ping"}')" "$URL")
health=$(run "http://127.0.0.1:$port/health")
create=$(run -s "$(lua '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"request_approval","arguments":{"kind":"bench","summary":"load"}}}')" "$URL")
errors=$(echo "$get$ping$create" | grep -c "Non-2xx" || true)

g=$(echo "$get" | rps); h=$(echo "$health" | rps)
table=$(cat <<MD
Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores (load client on the same cores); wrk, 2 threads, 16 keep-alive connections, ${DURATION} s each.

| what | requests/s | p50 latency | vs. \`GET /health\` (same run) |
| --- | --- | --- | --- |
| \`tools/call get_approval\` | $(printf '%.0f' "$g") | $(echo "$get" | p50) | $(printf '%.0f%%' "$(echo "100 * $g / $h" | bc -l)") |
| \`ping\` (JSON-RPC + session only) | $(printf '%.0f' "$(echo "$ping" | rps)") | $(echo "$ping" | p50) | $(printf '%.0f%%' "$(echo "100 * $(echo "$ping" | rps) / $h" | bc -l)") |
| \`tools/call request_approval\` (2 fsyncs + rename per call) | $(printf '%.0f' "$(echo "$create" | rps)") | $(echo "$create" | p50) | $(printf '%.0f%%' "$(echo "100 * $(echo "$create" | rps) / $h" | bc -l)") |
| baseline: \`GET /health\` | $(printf '%.0f' "$h") | $(echo "$health" | p50) | 100% |

`GET /health` stats the queue directory on the blocking pool, which is why `ping` outruns it. Runs with non-2xx answers: $errors.
MD
)
echo "$table" | tee /dev/stderr | python3 bench/update_results.py supervise
