#!/usr/bin/env python3
"""Drive pack-exec's /mcp with the official MCP Python SDK (`mcp` from PyPI).

usage: mcp_client.py URL --operator URL --token TOKEN --install NAME=TARBALL

Lists the tools, calls `cmd-upper` (the pack `cmd.upper`), a failing pack and an unknown
tool, then installs a pack through the operator listener (a real HTTP PUT with the bearer
token) and waits for `notifications/tools/list_changed` on the SDK's GET stream. Prints one
JSON object with what it saw; the Rust test (sidecars/pack-exec/tests/mcp.rs) asserts on it.
"""
import argparse
import asyncio
import json
import urllib.request

from mcp import Client
from mcp.shared.exceptions import MCPError


def method_of(message) -> str | None:
    """The JSON-RPC method of a notification, whichever wrapper the SDK hands over."""
    for candidate in (message, getattr(message, "root", None)):
        method = getattr(candidate, "method", None)
        if isinstance(method, str):
            return method
    return None


def install(operator: str, token: str, name: str, tarball: str) -> int:
    with open(tarball, "rb") as f:
        body = f.read()
    req = urllib.request.Request(
        f"{operator}/v1/packs/{name}?allow_unsigned=true&replace_shipped=true",
        data=body, method="PUT",
        headers={"authorization": f"Bearer {token}", "content-type": "application/x-tar"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        return resp.status


def tool_result(result) -> dict:
    return {"is_error": result.is_error, "structured": result.structured_content,
            "text": result.content[0].text if result.content else None}


async def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--operator", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--install", required=True)
    args = parser.parse_args()
    new_name, tarball = args.install.split("=", 1)

    changed = asyncio.Event()
    seen: list[str] = []

    async def on_message(message) -> None:
        method = method_of(message)
        if method:
            seen.append(method)
        if method == "notifications/tools/list_changed":
            changed.set()

    out: dict = {}
    async with Client(args.url, message_handler=on_message) as client:
        out["protocol"] = str(getattr(client, "protocol_version", ""))
        listed = await client.list_tools()
        out["tools"] = {t.name: {"title": t.title, "description": t.description,
                                 "input_schema": t.input_schema,
                                 "output_schema": t.output_schema} for t in listed.tools}

        out["upper"] = tool_result(await client.call_tool("cmd-upper", {"text": "Hello, MCP"}))
        out["bad_input"] = tool_result(await client.call_tool("cmd-upper", {"txt": 1}))
        out["failing"] = tool_result(await client.call_tool("x-fail", {}))
        try:
            await client.call_tool("no-such", {})
            out["unknown"] = {"raised": False}
        except MCPError as err:
            out["unknown"] = {"raised": True, "code": err.code}

        # The SDK opens its GET stream after `initialized`; an install before the stream is up
        # would announce to nobody, so install again (a replace is a change too) until the
        # announcement arrives.
        statuses = []
        for _ in range(20):
            statuses.append(install(args.operator, args.token, new_name, tarball))
            try:
                await asyncio.wait_for(changed.wait(), timeout=0.5)
                break
            except asyncio.TimeoutError:
                continue
        out["install_statuses"] = statuses
        out["list_changed"] = changed.is_set()
        out["notifications"] = seen
        relisted = await client.list_tools()
        out["tools_after"] = sorted(t.name for t in relisted.tools)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
