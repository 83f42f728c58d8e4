#!/usr/bin/env bash
# `control-plane up` → agent container running, both backends, against the floor of
# `docker run` of the two bare containers on fresh networks, alternating, same run.
#
#   floor:    docker network create ×2 (internal, egress), docker run -d of the sidecars image
#             (sleep) on both, docker run -d of the agent image (sleep) on the internal one;
#   engine:   BOT_BOTTLE_RUNTIME=engine  control-plane up MANIFEST
#   compose:  BOT_BOTTLE_RUNTIME=compose control-plane up MANIFEST
#
# MANIFEST is a two-service bottle (pack-exec + a sleeping agent: the shape of the floor). The
# clock runs from just before the command to the agent container's State.StartedAt (Docker's
# own timestamp, so no polling error); `up`'s return time is reported too. Where the time goes
# in `up` comes from the control plane's own trace (RUST_LOG=control_plane::timing=info).
# Prints a markdown table and writes the `up` section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
CP="$target/x86_64-unknown-linux-musl/release/control-plane"
[ -x "$CP" ] || { echo "bench/up.sh: $CP missing: run scripts/images.sh first" >&2; exit 1; }
SIDECARS=${BOT_BOTTLE_SIDECAR_IMAGE:-sidecar-bundle/sidecars:dev}
AGENT=sidecar-bundle/agent-test:dev
for img in "$SIDECARS" "$AGENT"; do
  docker image inspect "$img" >/dev/null 2>&1 || { echo "bench/up.sh: image $img missing: run scripts/images.sh" >&2; exit 1; }
done

work=$(mktemp -d)
export BOT_BOTTLE_STATE_DIR="$work/state" BOT_BOTTLE_PREFIX=bench-up
cat > "$work/bottle.toml" <<'TOML'
slug = "up"
daemons = ["pack-exec"]

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
TOML
floor_down() {
  docker rm -f bench-floor-agent bench-floor-sidecars >/dev/null 2>&1 || true
  docker network rm bench-floor-internal bench-floor-egress >/dev/null 2>&1 || true
}
cleanup() { floor_down; "$CP" down up >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
cleanup_between() { floor_down; "$CP" down up >/dev/null 2>&1 || true; }

now_ns() { date +%s%N; }
# ms from $1 (ns) to the container's StartedAt
started_ms() {
  docker inspect -f '{{.State.StartedAt}}' "$1" | python3 -c '
import sys, datetime
s = sys.stdin.read().strip()
head, frac = s.rstrip("Z").split(".")
t = datetime.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
ns = int(t) * 10**9 + int(frac.ljust(9, "0")[:9])
print((ns - int(sys.argv[1])) // 10**6)' "$2"
}

floor() {
  local t0; t0=$(now_ns)
  docker network create --internal bench-floor-internal >/dev/null
  docker network create bench-floor-egress >/dev/null
  docker run -d --name bench-floor-sidecars --network bench-floor-internal --entrypoint /bin/sleep "$SIDECARS" infinity >/dev/null
  docker network connect bench-floor-egress bench-floor-sidecars
  docker run -d --name bench-floor-agent --network bench-floor-internal "$AGENT" sleep infinity >/dev/null
  started_ms bench-floor-agent "$t0"
}

# up BACKEND: "agent_ms return_ms"
up() {
  local t0 t1 agent
  t0=$(now_ns)
  BOT_BOTTLE_RUNTIME=$1 "$CP" up "$work/bottle.toml" > "$work/up-$1.log" 2>&1 \
    || { cat "$work/up-$1.log" >&2; exit 1; }
  t1=$(now_ns)
  agent=$(started_ms bench-up-agent-up "$t0")
  echo "$agent $(( (t1 - t0) / 1000000 ))"
}

# One warm-up of each (image cache, first network creation), not counted.
cleanup_between; floor >/dev/null; cleanup_between
up engine >/dev/null; cleanup_between; up compose >/dev/null; cleanup_between

fl=(); ea=(); er=(); ca=(); cr=()
for ((i = 0; i < ROUNDS; i++)); do
  fl+=("$(floor)"); cleanup_between
  read -r a r < <(up engine); ea+=("$a"); er+=("$r"); cleanup_between
  read -r a r < <(up compose); ca+=("$a"); cr+=("$r"); cleanup_between
done

# Where the time goes: one traced up per backend.
phases() {
  RUST_LOG=control_plane::timing=info BOT_BOTTLE_RUNTIME=$1 "$CP" up "$work/bottle.toml" > /dev/null 2> "$work/trace-$1.log" || true
  cleanup_between
  sed 's/\x1b\[[0-9;]*m//g' "$work/trace-$1.log" | python3 -c '
import re, sys
for line in sys.stdin:
    m = re.search(r"phase=\"([^\"]*)\" ms=\"([^\"]*)\"", line)
    if m:
        print(f"| {sys.argv[1]} | {m.group(1)} | {m.group(2)} |")' "$1"
}
trace=$(phases engine; phases compose)

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mf=$(median "${fl[@]}"); mea=$(median "${ea[@]}"); mer=$(median "${er[@]}")
mca=$(median "${ca[@]}"); mcr=$(median "${cr[@]}")
ratio() { python3 -c "print(f'{$1/$2:.2f}×')"; }
goal() { [ "$1" -le "$2" ] && echo met || echo "NOT met"; }

cat > "$work/table.md" <<MD
### \`up\` → agent running (bench/up.sh)

A two-service bottle (pack-exec + a sleeping agent), $ROUNDS alternating rounds, everything
removed between rounds; from just before the command to the agent container's
\`State.StartedAt\`. Floor: \`docker network create\` ×2 and \`docker run -d\` of the two bare
containers (sleep) on them.

| path | agent running, median ms | vs floor | \`up\` returns, median ms | goal |
| --- | --- | --- | --- | --- |
| floor: docker CLI, bare containers | $mf | 1.00× | — | — |
| \`control-plane up\`, Engine API backend | $mea | $(ratio "$mea" "$mf") | $mer | ≤ 1000 ms — **$(goal "$mea" 1000)** |
| \`control-plane up\`, compose CLI backend | $mca | $(ratio "$mca" "$mf") | $mcr | ≤ 1500 ms — **$(goal "$mca" 1500)** |

Where the time goes (one traced \`up\` per backend, \`RUST_LOG=control_plane::timing=info\`;
the compose backend's creation, start and health wait are all inside compose's one \`up -d\`,
which starts the agent only once Docker's first healthcheck — one 1 s interval after the
start — has passed):

| backend | phase | ms |
| --- | --- | --- |
$trace

Raw (ms): floor ${fl[*]}; engine agent ${ea[*]}, return ${er[*]}; compose agent ${ca[*]}, return ${cr[*]}.
MD
cat "$work/table.md"
bench/update_results.py up < "$work/table.md"
