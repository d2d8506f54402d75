"""Real clients inside the agent reach what the bottle allows, through egress, and nothing else."""

from __future__ import annotations

import json

import pytest

from tests.support.bottles import ALLOWED, ANTHROPIC, BLOCKED, NPM, PYPI, SECRET, Bottle

from .fake_internet.services import PROBE, PROBE_MESSAGE

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


def test_python_urllib_over_tls(bottle: Bottle) -> None:
    code = f"import urllib.request, json; print(json.load(urllib.request.urlopen('https://{ALLOWED}/urllib', timeout=20))['path'])"
    r = bottle.exec("python3", "-c", code, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "/urllib", r.stderr


INSTALLS = {
    "pip": (
        f"python3 -m venv /tmp/pipvenv && /tmp/pipvenv/bin/pip install --disable-pip-version-check --no-cache-dir "
        f"-q --index-url https://{PYPI}/simple {PROBE} && /tmp/pipvenv/bin/python -c 'import bottle_probe; print(bottle_probe.MESSAGE)'"
    ),
    "npm": (
        f"mkdir -p /tmp/npmp && cd /tmp/npmp && npm install --no-audit --no-fund --loglevel=error "
        f"--registry https://{NPM}/ {PROBE} && node -e 'console.log(require(\"{PROBE}\"))'"
    ),
}


@pytest.mark.parametrize("client", sorted(INSTALLS))
def test_package_managers_install_from_allowed_indexes(bottle: Bottle, client: str) -> None:
    r = bottle.exec("sh", "-c", INSTALLS[client], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith(PROBE_MESSAGE)


def test_claude_p_reaches_the_api_with_the_real_key_injected(bottle: Bottle) -> None:
    # claude holds the placeholder; egress puts the real key into x-api-key; the fake Messages API
    # answers "key-ok" only for the real key's sha256.
    script = (
        f'ANTHROPIC_BASE_URL=https://{ANTHROPIC} ANTHROPIC_API_KEY="$BOTTLE_TEST_TOKEN" '
        "timeout 90 claude -p 'say hi' 2>&1"
    )
    r = bottle.exec("sh", "-c", script, timeout=120)
    assert "fake-anthropic says key-ok" in r.stdout, r.stdout[-2000:]
    assert SECRET not in r.stdout
    log = [json.loads(line) for line in (bottle.state / "egress" / "requests.jsonl").read_text().splitlines()]
    assert any(
        e["host"] == ANTHROPIC and e["decision"] == "allow" and e["path"].startswith("/v1/messages") for e in log
    )
