#!/usr/bin/env bash
# The control plane as a service (issue: HTTP API + Docker Engine backend), same run:
#   1. bottle create → healthy through the API (`POST /v1/bottles`, answered once healthy) vs
#      through the CLI (`control-plane up`), alternating, same backend and manifest;
#   2. `GET /v1/bottles` requests/s with 20 bottles registered (wrk), against `GET /healthz`
#      of the same server as the baseline (what the HTTP layer alone costs);
#   3. the control-plane image size and the idle RSS of `serve` in that image.
# Prints markdown tables and writes the `api` section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
BOTTLES=${BOTTLES:-20}
IMAGE=sidecar-bundle/control-plane:dev
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CP="$target/x86_64-unknown-linux-musl/release/control-plane"
[ -x "$CP" ] || { echo "bench/api.sh: $CP missing: run scripts/images.sh first" >&2; exit 1; }
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "bench/api.sh: image $IMAGE missing: run scripts/images.sh" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/api.sh: wrk missing: run scripts/setup.sh" >&2; exit 1; }

work=$(mktemp -d)
export BOT_BOTTLE_STATE_DIR="$work/state" BOT_BOTTLE_PREFIX=bench
export CONTROL_PLANE_TOKEN=bench-token-0123456789abcdef
AUTH="Authorization: Bearer $CONTROL_PLANE_TOKEN"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$port"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  docker rm -f bench-cp-idle >/dev/null 2>&1 || true
  for c in $(docker ps -aq --filter label=io.bot-bottle.slug --filter name=bench-); do docker rm -f -v "$c" >/dev/null 2>&1 || true; done
  for n in $(docker network ls -q --filter name=bench-); do docker network rm "$n" >/dev/null 2>&1 || true; done
  for v in $(docker volume ls -q --filter name=bench-); do docker volume rm "$v" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

manifest() {
  cat <<EOF
slug = "$1"
daemons = ["pack-exec"]
packs = ["packs/cmd.upper"]
[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
EOF
}

SIDECARS_LOG=warn "$CP" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
until curl -sf "$URL/healthz" >/dev/null; do sleep 0.05; done
backend=${BOT_BOTTLE_RUNTIME:-auto}
mkdir -p "$work/m"; cp -r packs "$work/"

ms() { echo $(( ($2 - $1) / 1000000 )); }
api=(); cli=()
for ((i = 0; i < ROUNDS; i++)); do
  manifest "api-$i" > "$work/api.toml"
  t0=$(date +%s%N)
  code=$(curl -s -o "$work/create.json" -w '%{http_code}' -H "$AUTH" -H 'Content-Type: application/toml' --data-binary @"$work/api.toml" "$URL/v1/bottles")
  t1=$(date +%s%N)
  [ "$code" = 201 ] || { echo "create failed ($code): $(cat "$work/create.json")" >&2; exit 1; }
  api+=("$(ms "$t0" "$t1")")
  curl -s -X DELETE -H "$AUTH" "$URL/v1/bottles/api-$i" >/dev/null

  manifest "cli-$i" | sed 's#"packs/cmd.upper"#"../packs/cmd.upper"#' > "$work/m/cli.toml"
  t0=$(date +%s%N)
  "$CP" up "$work/m/cli.toml" >/dev/null
  t1=$(date +%s%N)
  cli+=("$(ms "$t0" "$t1")")
  "$CP" down "cli-$i" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ma=$(median "${api[@]}"); mc=$(median "${cli[@]}")

# 20 bottles registered, then the list endpoint under load.
for ((i = 0; i < BOTTLES; i++)); do
  manifest "list-$i" | curl -s -o /dev/null -w '' -H "$AUTH" -H 'Content-Type: application/toml' --data-binary @- "$URL/v1/bottles"
done
n=$(curl -s -H "$AUTH" "$URL/v1/bottles" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["bottles"]))')
[ "$n" -ge "$BOTTLES" ] || { echo "only $n bottles registered" >&2; exit 1; }
rps() { wrk -t2 -c4 -d8s -H "$AUTH" "$1" | awk '/Requests\/sec/ {print int($2)}'; }
lat() { wrk -t1 -c1 -d5s --latency -H "$AUTH" "$1" | awk '$1=="50%" {print $2}'; }
list_rps=$(rps "$URL/v1/bottles"); health_rps=$(rps "$URL/healthz")
list_p50=$(lat "$URL/v1/bottles")
# The same state dir and bottles, served through the Docker Engine API backend (what the
# distroless image uses): one list + one inspect per container over the socket, no processes.
port2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SIDECARS_LOG=warn BOT_BOTTLE_RUNTIME=engine "$CP" serve --listen "127.0.0.1:$port2" >"$work/serve2.log" 2>&1 &
server2=$!
until curl -sf "http://127.0.0.1:$port2/healthz" >/dev/null; do sleep 0.05; done
engine_rps=$(rps "http://127.0.0.1:$port2/v1/bottles"); engine_p50=$(lat "http://127.0.0.1:$port2/v1/bottles")
kill "$server2"
for ((i = 0; i < BOTTLES; i++)); do curl -s -X DELETE -H "$AUTH" "$URL/v1/bottles/list-$i" >/dev/null; done

# The image: size, and idle RSS of `serve` running in it.
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
size_mb=$(python3 -c "print(f'{$size/1e6:.1f}')")
docker run -d --name bench-cp-idle -e CONTROL_PLANE_TOKEN "$IMAGE" >/dev/null
sleep 2
pid=$(docker inspect -f '{{.State.Pid}}' bench-cp-idle)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
rss_mb=$(python3 -c "print(f'{$rss_kb/1024:.1f}')")
size_verdict=$(python3 -c "print('met' if $size <= 20e6 else 'NOT met')")

cat > "$work/table.md" <<MD
### Control plane as a service (bench/api.sh)

Create → healthy, one bottle (pack-exec + a sleeping agent), $ROUNDS alternating rounds, same
backend (\`BOT_BOTTLE_RUNTIME=$backend\`), same manifest; the API answers 201 once the bottle is healthy.

| path | median ms | raw ms |
| --- | --- | --- |
| \`POST /v1/bottles\` | $ma | ${api[*]} |
| \`control-plane up\` (CLI) | $mc | ${cli[*]} |
| API / CLI | $(python3 -c "print(f'{$ma/$mc:.2f}×')") | |

\`GET /v1/bottles\` with $n bottles registered (wrk, 2 threads, 4 connections, 8 s):

| endpoint | requests/s | vs /healthz |
| --- | --- | --- |
| \`GET /healthz\` (HTTP layer only) | $health_rps | 1.00× |
| \`GET /v1/bottles\` ($n bottles), compose CLI backend (\`docker ps\` + one \`docker inspect\`) | $list_rps | $(python3 -c "print(f'{$list_rps/$health_rps:.4f}×')") |
| \`GET /v1/bottles\` ($n bottles), Docker Engine API backend | $engine_rps | $(python3 -c "print(f'{$engine_rps/$health_rps:.4f}×')") |

\`GET /v1/bottles\` p50 latency, one connection: compose CLI backend $list_p50, Engine API backend $engine_p50.

| image | size | goal | idle RSS of \`serve\` |
| --- | --- | --- | --- |
| $IMAGE | $size_mb MB | ≤ 20 MB — **$size_verdict** | $rss_mb MiB |
MD
cat "$work/table.md"
bench/update_results.py api < "$work/table.md"
