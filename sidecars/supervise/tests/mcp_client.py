#!/usr/bin/env python3
"""Drive supervise with the official MCP Python SDK (`mcp` from PyPI) over streamable HTTP.

usage: mcp_client.py URL --sidecars PATH --queue-dir DIR

Connects, lists the tools, calls each one, and while `wait_for_approval` is blocked approves
the request with the real `sidecars supervise-ctl` binary. Prints one JSON object with what it
saw; the Rust test (sidecars/bin/tests/supervise.rs) asserts on it. Exit 0 unless something
raised.
"""
import argparse
import asyncio
import json
import time

from mcp import Client
from mcp.shared.exceptions import MCPError


async def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--sidecars", required=True)
    parser.add_argument("--queue-dir", required=True)
    args = parser.parse_args()

    out: dict = {}
    async with Client(args.url) as client:
        listed = await client.list_tools()
        out["tools"] = [t.name for t in listed.tools]

        created = await client.call_tool(
            "request_approval",
            {"kind": "deploy", "summary": "ship v2 to prod", "details": {"env": "prod"}},
        )
        out["request"] = {"is_error": created.is_error, "structured": created.structured_content,
                          "text": created.content[0].text}
        approval_id = created.structured_content["id"]

        got = await client.call_tool("get_approval", {"id": approval_id})
        out["get"] = {"is_error": got.is_error, "structured": got.structured_content}

        timed_out = await client.call_tool("wait_for_approval", {"id": approval_id, "timeout_s": 0.3})
        out["wait_timeout"] = timed_out.structured_content

        async def approve_with_ctl() -> tuple[int, float]:
            await asyncio.sleep(0.5)
            proc = await asyncio.create_subprocess_exec(
                args.sidecars, "supervise-ctl", "--queue-dir", args.queue_dir,
                "approve", approval_id, "--note", "ship it",
                stdout=asyncio.subprocess.DEVNULL,
            )
            code = await proc.wait()
            return code, time.monotonic()

        approver = asyncio.create_task(approve_with_ctl())
        waited = await client.call_tool("wait_for_approval", {"id": approval_id, "timeout_s": 30})
        returned_at = time.monotonic()
        ctl_code, approved_at = await approver
        out["wait"] = {"is_error": waited.is_error, "structured": waited.structured_content,
                       "ctl_exit": ctl_code, "latency_s": returned_at - approved_at}

        missing = await client.call_tool("get_approval", {"id": "0000000000000-abcdef"})
        out["missing"] = {"is_error": missing.is_error, "text": missing.content[0].text}

        try:
            await client.call_tool("no_such_tool", {})
            out["unknown_tool"] = {"raised": False}
        except MCPError as err:
            out["unknown_tool"] = {"raised": True, "code": err.code}
        try:
            await client.call_tool("get_approval", {"id": 5})
            out["wrong_type"] = {"raised": False}
        except MCPError as err:
            out["wrong_type"] = {"raised": True, "code": err.code}
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
