#!/usr/bin/env bash
# Secret-scanner throughput, one core, the current rules against the scanner of BASE (the
# 32-rule scanner before the rule families grew) in the same run, on two inputs:
#  - a benign corpus: third-party code and its files from the cargo registry (sources, READMEs,
#    manifests, lockfiles, JSON) plus pipelock's benign request corpus, to ~64 MB (code, prose,
#    lockfile hashes, URLs, UUIDs, base64) — not the project's own sources, whose tests are
#    full of secrets on purpose;
#  - a ~62 MB diff of real Rust code (bench/lib/diff.sh, as bench/git-gate.sh makes it).
# Goals (issue "scanner breadth"): ≥ 250 MB/s per core on both, and no more than 20% slower
# than BASE. Each figure is the best of 3 scans within a round, median over the rounds.
# Writes the `scanner` section of bench/RESULTS.md.
#
# usage: bench/scanner.sh         env: BASE (commit, default 9b15db5), ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}"); export CARGO_TARGET_DIR
BASE=${BASE:-9b15db5}
ROUNDS=${ROUNDS:-3}
T=$(mktemp -d)
cleanup() { git worktree remove --force "$T/base" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=b@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=b@example.com

echo "bench/scanner: building the current scanner and the one of $BASE" >&2
cargo build --release -q -p scanner --example throughput
cp "$CARGO_TARGET_DIR/release/examples/throughput" "$T/new"
git worktree add -q --detach "$T/base" "$BASE"
# The same driver for both (the scanner's API is unchanged since BASE).
mkdir -p "$T/base/sidecars/scanner/examples"
cp sidecars/scanner/examples/throughput.rs "$T/base/sidecars/scanner/examples/"
(cd "$T/base" && cargo build --release -q -p scanner --example throughput)
cp "$CARGO_TARGET_DIR/release/examples/throughput" "$T/old"
rules_new=$("$T/new" --rules)
rules_old=$("$T/old" --rules)

echo "bench/scanner: making the inputs" >&2
corpus=$T/benign.txt
src=${CARGO_HOME:-$HOME/.cargo}/registry/src
cat sidecars/pipelock/tests/fixtures/benign.jsonl > "$corpus"
find "$src" -type f \( -name '*.rs' -o -name '*.md' -o -name '*.toml' -o -name '*.json' -o -name '*.lock' -o -name '*.txt' \) -size -200k -print0 \
  | sort -z | xargs -0 cat 2>/dev/null | head -c 64000000 >> "$corpus" || true
. bench/lib/diff.sh
make_diff "$T/code" "$T/diff.txt" >/dev/null

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A runs
for r in $(seq 1 "$ROUNDS"); do
  for input in benign diff; do
    file=$corpus; [ "$input" = diff ] && file=$T/diff.txt
    for side in old new; do
      out=$("$T/$side" "$file")
      runs[$input.$side]+="$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_s"])') "
      mb=$(echo "$out" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["mb"]))')
      eval "mb_$input=$mb"
    done
    echo "bench/scanner: round $r $input: old ${runs[$input.old]}| new ${runs[$input.new]}" >&2
  done
done
row() { # input label
  local old new
  old=$(printf '%s\n' ${runs[$1.old]} | median); new=$(printf '%s\n' ${runs[$1.new]} | median)
  python3 - "$2" "$old" "$new" <<'PY'
import sys
label, old, new = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
share = new / old
ok = lambda b: "met" if b else "**missed**"
print(f"| {label} | {new:.0f} MB/s | {old:.0f} MB/s | {share:.0%} | {ok(new >= 250)}, {ok(share >= 0.8)} |")
PY
}
table=$(cat <<MD
## Secret scanner (bench/scanner.sh)

Measured on $(nproc) cores, $(date -u +%Y-%m-%d): one thread, \`Scanner::scan_all\` with the default config (every rule, no configured values) over the input in pieces of at most 1 MiB cut at line ends (how the proxies scan bodies: \`max_body_scan_bytes\` defaults to 1 MiB), best of 3 scans per round, median of ${ROUNDS} rounds alternating with the baseline: the scanner of \`$BASE\` ($rules_old rules) built from the same driver in the same run. Now: $rules_new rules.

| input | now | baseline ($BASE) | now as % of baseline | goals: ≥ 250 MB/s, ≥ 80% of baseline |
| --- | --- | --- | --- | --- |
$(row benign "benign corpus: cargo-registry code, docs, manifests and lockfiles plus pipelock's benign requests, ${mb_benign} MB")
$(row diff "diff of real Rust code (git diff-tree -p), ${mb_diff} MB")
MD
)
echo "$table" | tee /dev/stderr | python3 bench/update_results.py scanner
