-- wrk script for bench/pack-exec.sh and bench/mcp-packs.sh: POST the JSON in $BODY (with
-- $MCP_SESSION: as an MCP request of that session), print exact percentiles.
wrk.method = "POST"
wrk.body = os.getenv("BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
local session = os.getenv("MCP_SESSION")
if session and session ~= "" then
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["Mcp-Session-Id"] = session
  wrk.headers["Mcp-Protocol-Version"] = os.getenv("MCP_VERSION") or "2025-11-25"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT p50_us=%d p99_us=%d rps=%.1f requests=%d errors=%d\n",
    latency:percentile(50), latency:percentile(99),
    summary.requests / (summary.duration / 1e6), summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
