"""Real MCP clients inside a bottle's agent for the supervise tests and benchmark.

The agent image carries no MCP SDK (an agent needs none: Claude Code has its own client), so the
tests copy the SDK the bundle runs on (/opt/supervise's site-packages, same Debian python) and
sidecars/supervise/mcp_call.py into the agent's /tmp, and run them there as the agent user.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from .bottles import Bottle, sh

SDK_IN_AGENT = "/tmp/mcp-sdk"
SUPERVISE_URL = "http://supervise:8765/mcp"
CALLER = Path(__file__).resolve().parents[2] / "sidecars" / "supervise" / "mcp_call.py"


def install_mcp_client(bottle: Bottle) -> None:
    with tempfile.TemporaryDirectory(prefix="mcp-sdk-") as tmp:
        dest = Path(tmp) / "mcp-sdk"
        dest.mkdir()
        sh("docker", "cp", f"{bottle.sidecars}:/opt/supervise/lib/python3.11/site-packages", str(dest))
        shutil.copy(CALLER, dest / "mcp_call.py")
        sh("docker", "cp", str(dest), f"{bottle.agent}:/tmp/")


def client_argv(bottle: Bottle, *args: str) -> list[str]:
    return [
        "docker",
        "exec",
        "-e",
        f"PYTHONPATH={SDK_IN_AGENT}/site-packages",
        bottle.agent,
        "python3",
        f"{SDK_IN_AGENT}/mcp_call.py",
        SUPERVISE_URL,
        *args,
    ]


def call_tool(bottle: Bottle, tool: str, arguments: dict, timeout: float = 60) -> dict:
    out = sh(*client_argv(bottle, tool, json.dumps(arguments)), timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_call(bottle: Bottle, tool: str, arguments: dict) -> subprocess.Popen[str]:
    """A tool call left running (a request waiting for the operator)."""
    return subprocess.Popen(
        client_argv(bottle, tool, json.dumps(arguments)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish_call(proc: subprocess.Popen[str], timeout: float = 30) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])
