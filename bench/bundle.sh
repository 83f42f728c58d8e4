#!/usr/bin/env bash
# Bundle start → every daemon ready, vs the five-container layout it replaces, same run.
#
# Both layouts use the same image and the same daemons with minimal configs (the five guards
# plus the always-on dns responder), each under its own uid with its credentials handed out by
# init, as in a bottle:
#   bundle: ONE container, sidecar-init supervising all six daemons;
#   five:   one container per daemon, each sidecar-init supervising one.
# The clock runs from `docker start` until `sidecar-init health` (run on the host against the
# init control socket, bind-mounted out of each container) reports every daemon ready. Polling
# the socket costs ~1 ms, unlike `docker exec` (~50 ms) or the 1 s healthcheck interval.
# Prints a markdown table and writes the `bundle` section of bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${BOT_BOTTLE_SIDECAR_IMAGE:-sidecar-bundle/sidecars:dev}
ROUNDS=${ROUNDS:-9}
DAEMONS=(dns egress pipelock git-gate supervise pack-exec)
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
INIT="$target/x86_64-unknown-linux-musl/release/sidecar-init"
[ -x "$INIT" ] || { echo "bench/bundle.sh: $INIT missing: run scripts/images.sh first" >&2; exit 1; }
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "bench/bundle.sh: image $IMAGE missing: run scripts/images.sh" >&2; exit 1; }

work=$(mktemp -d)
names=()
cleanup() { for n in "${names[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done; rm -rf "$work"; }
trap cleanup EXIT

mounts=()
for d in "${DAEMONS[@]}"; do
  echo '{}' > "$work/$d.json"
  mounts+=(-v "$work/$d.json:/etc/sidecars/$d.json:ro")
done
chmod -R a+rX "$work"
# The secrets the image's init.json hands out (egress's CA key, pack-exec's operator token), as
# the control plane mounts them: root:root 0400.
mkdir -p "$work/secrets"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secrets/pack-exec-operator-token"
cp "$work/secrets/pack-exec-operator-token" "$work/secrets/ca.key"
chmod 0400 "$work/secrets"/*
mounts+=(-v "$work/secrets:/run/secrets/bundle:ro")

# create NAME SOCKDIR [DAEMONS]: a stopped container whose init socket lands in SOCKDIR.
create() {
  local name=$1 sock=$2 which=${3:-}
  mkdir -p "$sock"; chmod 0777 "$sock"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker create --name "$name" "${mounts[@]}" -v "$sock:/run/sidecars" \
    --cap-drop ALL --cap-add CHOWN --cap-add KILL --cap-add SETGID --cap-add SETUID \
    ${which:+-e SIDECARS_DAEMONS=$which} "$IMAGE" >/dev/null
  names+=("$name")
}

# ready SOCKDIR...: true when every init behind these sockets reports healthy.
ready() {
  local s
  for s in "$@"; do
    SIDECAR_INIT_SOCKET="$s/init.sock" "$INIT" health >/dev/null 2>&1 || return 1
  done
}

# measure "START COMMAND" SOCKDIR...: ms from the start command to all ready.
measure() {
  local start=$1; shift
  local t0 t1
  for s in "$@"; do rm -f "$s/init.sock"; done
  t0=$(date +%s%N)
  $start >/dev/null
  until ready "$@"; do :; done
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}

create bench-bundle "$work/sock-bundle"
five_names=(); five_socks=()
for d in "${DAEMONS[@]}"; do
  create "bench-five-$d" "$work/sock-$d" "$d"
  five_names+=("bench-five-$d"); five_socks+=("$work/sock-$d")
done

bundle=(); five=()
for ((i = 0; i < ROUNDS; i++)); do
  bundle+=("$(measure "docker start bench-bundle" "$work/sock-bundle")")
  docker stop -t 10 bench-bundle >/dev/null
  five+=("$(measure "docker start ${five_names[*]}" "${five_socks[@]}")")
  docker stop -t 10 "${five_names[@]}" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
best() { printf '%s\n' "$@" | sort -n | head -1; }
mb=$(median "${bundle[@]}"); mf=$(median "${five[@]}")
verdict=$([ "$mb" -le 300 ] && echo met || echo "NOT met")

cat > "$work/table.md" <<MD
### Bundle start → all daemons ready (bench/bundle.sh)

Same image, six daemons (dns, egress, pipelock, git-gate, supervise, pack-exec), each under its
own uid with its credentials handed out by init and init's capabilities only (CHOWN KILL SETGID
SETUID), $ROUNDS alternating rounds; from \`docker start\` until \`sidecar-init health\` passes for
every daemon.

| layout | median ms | best ms | vs bundle |
| --- | --- | --- | --- |
| bundle: 1 container, 6 daemons under sidecar-init | $mb | $(best "${bundle[@]}") | 1.00× |
| six containers, one daemon each | $mf | $(best "${five[@]}") | $(python3 -c "print(f'{$mf/$mb:.2f}×')") |

Goal: bundle ≤ 300 ms from container start — **$verdict**.
Raw (ms): bundle ${bundle[*]}; five ${five[*]}.
MD
cat "$work/table.md"
bench/update_results.py bundle < "$work/table.md"
