"""Real clients inside the agent reach what the bottle allows, through egress, and nothing else."""

from __future__ import annotations

import json

import pytest

from .support import ALLOWED, BLOCKED, Bottle

pytestmark = pytest.mark.integration

NODE_FETCH = """
const url = process.argv[1];
fetch(url, {method: "POST", body: "hello from node"})
  .then(async r => { console.log(JSON.stringify({status: r.status, body: await r.text()})); })
  .catch(e => { console.log(JSON.stringify({error: String(e && (e.cause || e))})); process.exit(3); });
"""


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_node_fetch_uses_the_proxy_for_allowed_hosts(bottle: Bottle, scheme: str) -> None:
    r = bottle.exec("node", "-e", NODE_FETCH, f"{scheme}://{ALLOWED}/node-fetch", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == 200
    doc = json.loads(out["body"])
    assert doc["fake_internet"] is True and doc["path"] == "/node-fetch" and doc["body_len"] == len("hello from node")
    log = (bottle.state / "egress" / "requests.jsonl").read_text()
    assert '"path": "/node-fetch"' in log


def test_node_fetch_to_a_blocked_host_gets_egress_403(bottle: Bottle) -> None:
    r = bottle.exec("node", "-e", NODE_FETCH, f"http://{BLOCKED}/x", timeout=60)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == 403 and out["body"].startswith("egress: blocked")


def test_claude_runs_with_the_node_preload_in_its_environment(bottle: Bottle) -> None:
    env = bottle.exec("printenv", "NODE_OPTIONS").stdout.strip()
    assert env == "--require /opt/bottle/node/proxy-preload.js"
    r = bottle.exec("claude", "--version", timeout=60)
    assert r.returncode == 0 and "Claude Code" in r.stdout, r.stderr
