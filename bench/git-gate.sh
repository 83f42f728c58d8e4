#!/usr/bin/env bash
# git-gate benchmarks, each against a baseline measured in the same run:
#  1. clone of a ~50 MB repository through git-gate vs. a plain `git daemon` serving the same
#     mirror directory (goal: git-gate ≥ 90% of the plain daemon's throughput);
#  2. the pre-receive scanning path (diff parsing + shared secret scanner, one core) over a
#     large realistic diff (Rust sources from the cargo registry), in MB/s (goal ≥ 100 MB/s),
#     with the bare scanner over the same bytes as reference.
# Writes the table to bench/RESULTS.md (section git-gate).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p sidecars
cargo build --release -q -p git-gate --example scan_throughput
BIN=$CARGO_TARGET_DIR/release/sidecars
SCAN=$CARGO_TARGET_DIR/release/examples/scan_throughput
ROUNDS=${ROUNDS:-5}

T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=b@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=b@example.com
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# --- a ~50 MB upstream: incompressible blobs plus text, over 20 commits -----------------------
git init -q --initial-branch=main "$T/seed"
for i in $(seq 1 20); do
  head -c 2200000 /dev/urandom > "$T/seed/blob-$i.bin"
  head -c 300000 /dev/urandom | base64 > "$T/seed/text-$i.txt"
  git -C "$T/seed" add -A && git -C "$T/seed" commit -q -m "commit $i"
done
git clone -q --bare "$T/seed" "$T/upstream.git"
rm -rf "$T/seed"
pack_mb=$(du -sm "$T/upstream.git/objects" | cut -f1)

gport=$(free_port); dport=$(free_port)
cat > "$T/git-gate.json" <<JSON
{"listen":"127.0.0.1:$gport","base_dir":"$T/mirrors","credentials_dir":"$T/creds",
 "hooks_dir":"$PWD/sidecars/git-gate/hooks",
 "repos":[{"name":"big","upstream":"$T/upstream.git"}]}
JSON
SIDECARS_LOG=warn "$BIN" git-gate --config "$T/git-gate.json" & pids+=($!)
wait_port "$gport"
git ls-remote "git://127.0.0.1:$gport/big" >/dev/null   # mirror ready
git daemon --reuseaddr --export-all --listen=127.0.0.1 --port="$dport" --base-path="$T/mirrors" "$T/mirrors" & pids+=($!)
wait_port "$dport"

clone_time() { # url -> seconds
  rm -rf "$T/c"
  local s e; s=$(date +%s.%N)
  git clone -q --bare "$1" "$T/c"
  e=$(date +%s.%N); echo "$e - $s" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
gate_times=(); daemon_times=()
for _ in $(seq "$ROUNDS"); do   # interleaved, so drift hits both alike
  daemon_times+=("$(clone_time "git://127.0.0.1:$dport/big.git")")
  gate_times+=("$(clone_time "git://127.0.0.1:$gport/big")")
done
gate_med=$(printf '%s\n' "${gate_times[@]}" | median)
daemon_med=$(printf '%s\n' "${daemon_times[@]}" | median)
gate_mbs=$(echo "$pack_mb / $gate_med" | bc -l)
daemon_mbs=$(echo "$pack_mb / $daemon_med" | bc -l)
ratio=$(echo "100 * $daemon_med / $gate_med" | bc -l)

# --- scanning throughput over a large realistic diff -------------------------------------------
. bench/lib/diff.sh
difftree_s=$(make_diff "$T/code" "$T/diff.txt")
scan_json=$("$SCAN" "$T/diff.txt")
jq_() { echo "$scan_json" | jq -r "$1"; }
diff_mb=$(jq_ .mb)
difftree_mbs=$(echo "$diff_mb / $difftree_s" | bc -l)

table=$(cat <<MD
Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores; $ROUNDS interleaved clone rounds, medians.

| what | git-gate | baseline (same run) | ratio | goal |
| --- | --- | --- | --- | --- |
| \`git clone\` of a ${pack_mb} MB repo (git://, loopback) | $(printf '%.2f s (%.0f MB/s)' "$gate_med" "$gate_mbs") | plain \`git daemon\` on the same mirror: $(printf '%.2f s (%.0f MB/s)' "$daemon_med" "$daemon_mbs") | $(printf '%.0f%%' "$ratio") | ≥ 90% |
| pre-receive scan path (diff parsing + secret scanner, 1 core) over a $(printf '%.0f' "$diff_mb") MB diff ($(jq_ .added_lines) added lines, $(jq_ .commits) commits) | $(printf '%.0f MB/s' "$(jq_ .path_mb_s)") | bare scanner over the same bytes: $(printf '%.0f MB/s' "$(jq_ .raw_scanner_mb_s)") | $(printf '%.0f%%' "$(echo "100 * $(jq_ .path_mb_s) / $(jq_ .raw_scanner_mb_s)" | bc -l)") | ≥ 100 MB/s |
| (context) \`git diff-tree -p\` producing that diff | $(printf '%.0f MB/s' "$difftree_mbs") | | | |
MD
)
echo "$table" | tee /dev/stderr | python3 bench/update_results.py git-gate
