#!/usr/bin/env bash
# Benchmarks of sidecar-init against Debian's tini and dumb-init and a direct pipe, in one run.
# Builds the static musl release binary, measures, prints a markdown table and writes it into
# bench/RESULTS.md (section "init").
#
#   bash bench/init.sh            # full run (1 GiB relay)
#   RELAY_MB=256 RELAY_RUNS=3 bash bench/init.sh   # quicker relay measurement
set -euo pipefail
cd "$(dirname "$0")/.."

RELAY_MB=${RELAY_MB:-1024}
RUNS=${RUNS:-30}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/init}
[ -d "$(dirname "$CARGO_TARGET_DIR")" ] || export CARGO_TARGET_DIR="$PWD/target"

need=()
for t in tini dumb-init hyperfine file python3; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  pkgs=("${need[@]}")
  apt-get install -y "${pkgs[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "${pkgs[@]}" >/dev/null; }
fi

echo "building static release binary..." >&2
cargo build --release --target x86_64-unknown-linux-musl -p sidecar-init >&2
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/sidecar-init"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cp "$BIN" "$W/sidecar-init"
strip "$W/sidecar-init" 2>/dev/null || true
INIT="$W/sidecar-init"
SOCK="$W/init.sock"

median() { sort -n | awk '{a[NR]=$1} END {printf "%d\n", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

# ---- 1. launch to first child exec ------------------------------------------------------------
# The child is `date +%s%6N` (its own clock at exec); the launcher reads EPOCHREALTIME first.
cat > "$W/one.json" <<EOF
{"daemons": [{"name": "d", "argv": ["/bin/date", "+%s%6N"], "restart": "never"}]}
EOF
startup() { # command... -> median microseconds from launch to the child's exec
  local i t0 out
  for ((i = 0; i < RUNS; i++)); do
    t0=$(now_us)
    out=$("$@" 2>/dev/null | grep -Eo '[0-9]{16}' | head -1)
    echo $((out - t0))
  done | median
}
s_direct=$(startup /bin/date +%s%6N)
s_init_single=$(startup "$INIT" -- /bin/date +%s%6N)
s_init_sup=$(startup "$INIT" --config "$W/one.json" --socket "$SOCK")
s_tini=$(startup tini -s -- /bin/date +%s%6N)
s_dumb=$(startup dumb-init /bin/date +%s%6N)

# ---- 2. RSS supervising idle daemons ----------------------------------------------------------
cat > "$W/five.json" <<EOF
{"daemons": [
  {"name": "d1", "argv": ["/bin/sleep", "600"]}, {"name": "d2", "argv": ["/bin/sleep", "600"]},
  {"name": "d3", "argv": ["/bin/sleep", "600"]}, {"name": "d4", "argv": ["/bin/sleep", "600"]},
  {"name": "d5", "argv": ["/bin/sleep", "600"]}]}
EOF
rss_of() { # pid -> VmRSS in KiB
  awk '/^VmRSS/ {print $2}' "/proc/$1/status"
}
wait_started() { # wait until the init has N children
  local pid=$1 n=$2 i
  for ((i = 0; i < 500; i++)); do
    [ "$(cat /proc/"$pid"/task/*/children 2>/dev/null | wc -w)" -ge "$n" ] && return 0
    sleep 0.01
  done
  return 1
}
"$INIT" --config "$W/five.json" --socket "$SOCK" >/dev/null 2>&1 &
p=$!; wait_started $p 5; sleep 0.3
"$INIT" health --socket "$SOCK" >/dev/null   # exercise the control path once
rss_init=$(rss_of $p); kill -TERM $p; wait $p || true
tini -s -- sleep 600 & p=$!; wait_started $p 1; rss_tini=$(rss_of $p); kill -TERM $p; wait $p 2>/dev/null || true
dumb-init sleep 600 & p=$!; wait_started $p 1; rss_dumb=$(rss_of $p); kill -TERM $p; wait $p 2>/dev/null || true

# ---- 3. log relay throughput ------------------------------------------------------------------
# Every variant uses the SAME generator and the SAME sink; only what sits between them differs:
#   direct: gen | sink        cat: gen | cat | sink        init: init[gen] | sink
# `cat` is the cheapest possible relaying process (read + write, no framing): the bound for
# anything that, like init, must read every byte from one pipe and write it to another.
# Two generators: "fast" (python writing 101-byte lines 1 MiB per write, so only the relay can
# be the bottleneck) and "yes" (`yes LINE | head -n N`: small writes through a second process).
# The sink reads 1 MiB at a time and counts bytes; the count is checked exactly. Variants
# alternate run by run; medians of RELAY_RUNS. CPU of the middle process comes from wait4(2);
# init's also counts its reaped child, so the generator's own CPU (which it reports) is taken out.
RELAY_RUNS=${RELAY_RUNS:-7}
PY=$(python3 -c 'import sys; print(sys.executable)')
cat > "$W/gen.py" <<'PYEOF'
import os, sys
line = sys.argv[2].encode() + b"\n"
n = int(sys.argv[1])
per = (1 << 20) // len(line)
block = memoryview(line * per)
while n > 0:
    k = min(n, per)
    mv = block[: k * len(line)]
    while mv:
        mv = mv[os.write(1, mv):]
    n -= k
import resource  # report this generator's own CPU time for the harness
r = resource.getrusage(resource.RUSAGE_SELF)
with open(sys.argv[3], "w") as f:
    f.write(str(r.ru_utime + r.ru_stime))
PYEOF
cat > "$W/sink.py" <<'PYEOF'
import os
mv, n = memoryview(bytearray(1 << 20)), 0
while True:
    r = os.readv(0, [mv])
    if r == 0:
        break
    n += r
print(n)
PYEOF
cat > "$W/relay.py" <<'PYEOF'
import json, os, statistics, subprocess, sys, time
py, init, w, mb, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
line = "level=info msg=request-served path=/v1/resource/000042 status=200 bytes=1234 dur=0.12ms client=10.0.0.7"
n = mb * 2**20 // (len(line) + 1)
size = n * (len(line) + 1)
cpu_file = f"{w}/gen.cpu"  # each generator writes its own CPU seconds here when done
gens = {
    "fast": [py, f"{w}/gen.py", str(n), line, cpu_file],
    # `times`: CPU of the shell and of its children (yes, head) as [user sys] pairs.
    "yes": ["/bin/sh", "-c", f"yes '{line}' | head -n {n}; times > {cpu_file}"],
}


def gen_cpu():
    with open(cpu_file) as f:
        words = f.read().split()
    if len(words) == 1:
        return float(words[0])
    return sum(int(m) * 60 + float(s.rstrip("s")) for m, s in (x.split("m") for x in words))
sink = [py, f"{w}/sink.py"]


def run(gen, middle):
    """One pipeline; returns (seconds, CPU seconds of the generator, of the middle process)."""
    if os.path.exists(cpu_file):
        os.unlink(cpu_file)
    t0 = time.monotonic()
    procs = []
    if middle == "init":
        cfg = f"{w}/relay-{gen}.json"
        with open(cfg, "w") as f:
            json.dump({"daemons": [{"name": "gen", "argv": gens[gen], "restart": "never"}]}, f)
        procs.append(subprocess.Popen([init, "--config", cfg, "--socket", f"{w}/relay.sock"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    else:
        procs.append(subprocess.Popen(gens[gen], stdout=subprocess.PIPE))
        if middle == "cat":
            procs.append(subprocess.Popen(["cat"], stdin=procs[-1].stdout, stdout=subprocess.PIPE))
    procs.append(subprocess.Popen(sink, stdin=procs[-1].stdout, stdout=subprocess.PIPE))
    for p in procs[:-1]:
        p.stdout.close()
    out = procs[-1].communicate()[0]
    usage = []
    for p in procs[:-1]:
        ru = os.wait4(p.pid, 0)[2]
        usage.append(ru.ru_utime + ru.ru_stime)
    g = gen_cpu()
    # init reaped the generator, so wait4 counted it too: take the generator's own CPU out.
    middle_cpu = usage[0] - g if middle == "init" else usage[-1]
    dt = time.monotonic() - t0
    want = size + n * len("gen | ") if middle == "init" else size
    if int(out) != want:
        sys.exit(f"relay {gen}/{middle}: sink got {int(out)} bytes, expected {want}")
    return dt, g, middle_cpu


res = {}
for gen in gens:
    r = {m: [] for m in ("direct", "cat", "init")}
    for _ in range(runs):
        for m in r:
            r[m].append(run(gen, m))
    med = lambda m, i: statistics.median(x[i] for x in r[m])
    res[gen] = {
        "mbps": {m: size / med(m, 0) / 1e6 for m in r},
        "runs_mbps": {m: [round(size / x[0] / 1e6) for x in r[m]] for m in r},
        "cpu": {"gen": med("direct", 1), "cat": med("cat", 2), "init": med("init", 2)},
    }
json.dump({"size": size, "res": res}, sys.stdout)
PYEOF
relay_json=$("$PY" "$W/relay.py" "$PY" "$INIT" "$W" "$RELAY_MB" "$RELAY_RUNS")
echo "relay measurements: $relay_json" >&2
relay_rows=$(python3 - "$relay_json" "$RELAY_MB" "$RELAY_RUNS" <<'PYEOF'
import json, sys
d, mb, runs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
gib = d["size"] / 2**30
names = {"fast": "fast generator (1 MiB writes)", "yes": "`yes \\| head -n` generator"}
for g, r in d["res"].items():
    m, c = r["mbps"], r["cpu"]
    pct = round(100 * m["init"] / m["direct"])
    ok = "met" if pct >= 90 else "**missed**"
    print(f"| log relay, {mb} MiB of 101-byte lines, {names[g]}, median of {runs} "
          f"| {m['init']:.0f} MB/s, CPU ≈ {c['init'] / gib:.2f} s/GiB "
          f"| direct pipe {m['direct']:.0f} MB/s; `cat` as the relay {m['cat']:.0f} MB/s "
          f"= {round(100 * m['cat'] / m['direct'])} % of direct, CPU {c['cat'] / gib:.2f} s/GiB; "
          f"generator CPU {c['gen'] / gib:.2f} s/GiB "
          f"| ≥ 90 % of direct | {pct} % {ok} ({round(100 * m['init'] / m['cat'])} % of `cat`) |")
PYEOF
)

# ---- 4. SIGTERM to exit with 5 well-behaved daemons -------------------------------------------
term_times=()
for ((i = 0; i < 10; i++)); do
  "$INIT" --config "$W/five.json" --socket "$SOCK" >/dev/null 2>&1 &
  p=$!; wait_started $p 5; sleep 0.05
  t0=$(now_us); kill -TERM $p; wait $p || true; t1=$(now_us)
  term_times+=($((t1 - t0)))
done
term_us=$(printf '%s\n' "${term_times[@]}" | median)

# ---- 5. binary size ---------------------------------------------------------------------------
size=$(stat -c %s "$INIT")
linkage=$(file -b "$INIT" | grep -Eo 'static-pie linked|statically linked' || echo "DYNAMIC")
tini_size=$(stat -c %s "$(command -v tini-static || command -v tini)")
dumb_size=$(stat -c %s "$(command -v dumb-init)")

# ---- 6. start overhead (hyperfine) ------------------------------------------------------------
hyperfine -N --warmup 50 --runs 500 --export-json "$W/hf.json" \
  -n "true" "/bin/true" \
  -n "sidecar-init -- true" "$INIT -- /bin/true" \
  -n "tini -- true" "tini -s -- /bin/true" \
  -n "dumb-init true" "dumb-init /bin/true" >&2
read -r hf_true hf_init hf_tini hf_dumb < <(python3 - "$W/hf.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(" ".join("%.0f" % (x["median"] * 1e6) for x in r))
EOF
)

ok() { if [ "${1:-0}" = 1 ]; then echo "met"; else echo "**missed**"; fi; }
kib() { awk -v k="$1" 'BEGIN {printf "%.2f MiB", k / 1024}'; }
{
  echo "## sidecar-init"
  echo
  echo "Measured by \`bench/init.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d), against Debian's tini $(tini --version 2>&1 | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -1) and dumb-init $(dumb-init --version 2>&1 | grep -Eo '[0-9]+\.[0-9]+\.[0-9]+' | head -1). Medians unless noted."
  echo
  echo "| what | sidecar-init | reference | goal | |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| launch to first child exec | ${s_init_single} µs single mode, ${s_init_sup} µs supervisor | direct ${s_direct} µs, tini ${s_tini} µs, dumb-init ${s_dumb} µs | — | |"
  echo "| RSS, supervising 5 idle daemons | $(kib "$rss_init") | tini $(kib "$rss_tini"), dumb-init $(kib "$rss_dumb") (1 child each) | ≤ 2 MiB | $(ok $([ "$rss_init" -le 2048 ] && echo 1)) |"
  echo "$relay_rows"
  echo "| SIGTERM to exit, 5 well-behaved daemons | $((term_us / 1000)).$(((term_us % 1000) / 100)) ms | — | ≤ 50 ms | $(ok $([ "$term_us" -le 50000 ] && echo 1)) |"
  echo "| stripped binary | $((size / 1024)) KiB, ${linkage} | tini-static $((tini_size / 1024)) KiB, dumb-init $((dumb_size / 1024)) KiB | — | |"
  echo "| \`X -- true\` wall time (hyperfine, 500 runs) | ${hf_init} µs | \`true\` ${hf_true} µs, tini ${hf_tini} µs, dumb-init ${hf_dumb} µs | ≤ tini | $(ok $([ "$hf_init" -le "$hf_tini" ] && echo 1)) |"
} | tee /dev/stderr | python3 bench/update_results.py init
