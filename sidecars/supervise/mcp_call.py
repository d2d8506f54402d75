"""A small MCP client on the official SDK: call one tool of a streamable-HTTP server, print the result
as JSON ({"is_error", "text", "sent_at"}), or with ``--list`` print the tools and their input schemas.

Used by the integration tests and the benchmark from inside the agent container (the SDK is copied
in for them), and handy for an operator checking a bundle: ``mcp_call.py URL TOOL '{"arg": 1}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from mcp import Client


async def main_async(args: argparse.Namespace) -> int:
    async with Client(args.url, read_timeout_seconds=args.timeout) as client:
        if args.list:
            tools = await client.list_tools()
            print(
                json.dumps(
                    [
                        {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                        for t in tools.tools
                    ],
                    indent=2,
                )
            )
            return 0
        for _ in range(args.repeat):
            sent_at = time.time()
            result = await client.call_tool(args.tool, json.loads(args.arguments or "{}"))
            text = "\n".join(getattr(c, "text", "") for c in result.content)
            print(json.dumps({"is_error": bool(result.is_error), "text": text, "sent_at": sent_at}), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("tool", nargs="?")
    ap.add_argument("arguments", nargs="?", help="the tool's arguments as a JSON object")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=None)
    args = ap.parse_args()
    if not args.list and not args.tool:
        ap.error("name a tool, or pass --list")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
