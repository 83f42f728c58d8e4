#!/usr/bin/env bash
# A pack called as an MCP tool (`tools/call` at /mcp) vs the same pack over its HTTP API
# (`POST /v1/packs/{name}`), same server, same run; writes the `mcp-packs` section of
# bench/RESULTS.md. Goal: MCP adds ≤ 0.3 ms at p50.
#
# The handler is `cat` (the trivial handler, so the difference is the protocol layer, not the
# handler). pack-exec runs standalone (release, loopback, handlers spawned by pack-exec itself):
# the jail costs the same on both paths and its per-call noise would hide a 0.3 ms difference.
# wrk drives both with bench/pack-exec.lua, 1 connection, in alternating rounds; medians.
#
# usage: bench/mcp-packs.sh        env: ROUNDS (default 5), SECS (wrk seconds per round, default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/pack-exec}
rounds=${ROUNDS:-5}
secs=${SECS:-3}
input='{"text":"hello warm packs"}'

command -v wrk >/dev/null || { echo "bench/mcp-packs: wrk missing (apt-get install wrk)" >&2; exit 1; }
echo "bench/mcp-packs: building the release binary" >&2
cargo build --release -q -p sidecars >&2
bin="$CARGO_TARGET_DIR/release/sidecars"

work=$(mktemp -d)
chmod 0755 "$work"
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/packs"
. bench/lib/pack-exec.sh
start_pack_exec
url="http://127.0.0.1:$port"
session=$(curl -fsS -D - -o /dev/null -H 'content-type: application/json' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}' \
  "$url/mcp" | tr -d '\r' | sed -n 's/^mcp-session-id: //Ip')
[ -n "$session" ] || { echo "bench/mcp-packs: initialize gave no session" >&2; exit 1; }
call='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"bench-cat","arguments":'"$input"'}}'
# Both paths must answer the pack's output, not an error, before anything is timed.
curl -fsS -d "$input" "$url/v1/packs/bench.cat" | grep -q '"output":{"text":"hello warm packs"}'
answer=$(curl -fsS -H 'content-type: application/json' -H "mcp-session-id: $session" -d "$call" "$url/mcp")
case "$answer" in *'"isError":false'*'hello warm packs'*|*'hello warm packs'*'"isError":false'*) ;;
  *) echo "bench/mcp-packs: tools/call did not return the output: $answer" >&2; exit 1 ;; esac

wrk_run() { # path body [session] -> "p50_us=.. p99_us=.. rps=.. requests=.. errors=.."
  local out
  out=$(BODY="$2" MCP_SESSION="${3:-}" wrk -t 1 -c 1 -d "${secs}s" --timeout 10s -s bench/pack-exec.lua \
    "$url$1" | sed -n 's/^RESULT //p')
  case "$out" in *"errors=0"*) ;; *) echo "bench/mcp-packs: wrk saw errors: $out" >&2; exit 1 ;; esac
  echo "$out"
}
# The HTTP path gets MCP_SESSION=""; the Lua script treats only a non-empty one as MCP.
http=(); mcp=()
wrk_run /v1/packs/bench.cat "$input" >/dev/null   # warm-up, discarded
wrk_run /mcp "$call" "$session" >/dev/null
for r in $(seq 1 "$rounds"); do
  http+=("$(wrk_run /v1/packs/bench.cat "$input")")
  mcp+=("$(wrk_run /mcp "$call" "$session")")
  echo "bench/mcp-packs: round $r: POST ${http[-1]} | tools/call ${mcp[-1]}" >&2
done
row=$(python3 - "$(IFS=';'; echo "${http[*]}")" "$(IFS=';'; echo "${mcp[*]}")" <<'PY'
import statistics, sys
def med(runs):
    dicts = [{k: float(v) for k, v in (p.split("=") for p in run.split())} for run in runs.split(";")]
    return {k: statistics.median(d[k] for d in dicts) for k in dicts[0]}
h, m = map(med, sys.argv[1:])
ms = lambda us: f"{us / 1000:.3f} ms"
added = (m["p50_us"] - h["p50_us"]) / 1000
print(f"| `cat` | {ms(h['p50_us'])} / {ms(h['p99_us'])} | {ms(m['p50_us'])} / {ms(m['p99_us'])} "
      f"| {added:+.3f} ms | {h['rps']:.0f} /s | {m['rps']:.0f} /s ({m['rps'] / h['rps']:.0%}) | {'met' if added <= 0.3 else '**missed**'} |")
PY
)
{
  echo "## Packs as MCP tools"
  echo
  echo "Measured by \`bench/mcp-packs.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d): release \`sidecars pack-exec\` (standalone) on loopback, the \`cat\` handler, wrk with 1 connection, ${rounds} alternating rounds of ${secs} s, medians. \`tools/call\` runs in an established MCP session (2025-11-25: JSON-RPC classification, the session lookup, the result built as text and structured content)."
  echo
  echo "| handler | \`POST /v1/packs/bench.cat\` p50 / p99 | MCP \`tools/call bench-cat\` p50 / p99 | added at p50 | POST calls/s | tools/call calls/s (% of POST) | goal: ≤ 0.3 ms added at p50 |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  echo "$row"
} | tee /dev/stderr | python3 bench/update_results.py mcp-packs
