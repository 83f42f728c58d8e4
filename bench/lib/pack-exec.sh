# Sourced by bench/pack-exec.sh and bench/mcp-packs.sh: a standalone release pack-exec on
# loopback serving the `bench.cat` pack (command ["cat"], the trivial handler) from
# "$work/packs", plus whatever the caller put there. Sets `port` and `server`; waits for
# /health. Needs `bin` (the release `sidecars`) and `work` (a 0755 temp dir).
start_pack_exec() {
  mkdir -p "$work/packs/bench.cat"
  cat > "$work/packs/bench.cat/pack.json" <<'JSON'
{"name": "bench.cat", "version": "1", "description": "echo the input (the trivial handler)",
 "handler": {"type": "command", "command": ["cat"], "timeout_s": 5}}
JSON
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat > "$work/pack-exec.json" <<JSON
{"listen": "127.0.0.1:$port", "state_dir": "$work/state", "packs_dir": "$work/packs"}
JSON
  "$bin" pack-exec --config "$work/pack-exec.json" 2>"$work/pack-exec.log" &
  server=$!
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench: pack-exec did not become healthy:" >&2
  cat "$work/pack-exec.log" >&2
  return 1
}
