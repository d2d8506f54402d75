"""Metering and budgets in a real bottle (issue 19): the fake Messages API (fake_messages_api.py)
runs on the fake internet behind a route with ``usage: anthropic``; a real `claude -p` through
egress is counted per model with its cache tokens, JSON and streamed answers alike; a budget
reached mid-session lets the answer that crossed it arrive whole, refuses the next call with a
429 that claude shows, queues a budget proposal (supervise is off: egress queues it), and
approving the proposal reopens the bottle. One bottle for the module."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from bottle_contract import proposal as contract
from bottle_contract.usage import Budget, load_metering, read_usage, write_metering
from tests.support.bottles import MODELS, MODELS_PORT, Bottle, cli, connect_fake_internet, sh, start_bottle, stop_bottle

from .fake_messages_api import USAGE

pytestmark = pytest.mark.integration

FAKE_API = Path(__file__).with_name("fake_messages_api.py")
MODEL = "claude-sonnet-4-5-20250929"
BASE = f"http://{MODELS}:{MODELS_PORT}"
# What one fake answer costs at the shipped Sonnet 4.5 prices (USD per million tokens).
ONE = (
    USAGE["input_tokens"] * 3.0
    + USAGE["output_tokens"] * 15.0
    + USAGE["cache_creation"]["ephemeral_5m_input_tokens"] * 3.75
    + USAGE["cache_creation"]["ephemeral_1h_input_tokens"] * 6.0
    + USAGE["cache_read_input_tokens"] * 0.3
) / 1e6


@pytest.fixture(scope="module")
def metered(home: Path, fake_internet: str):
    subprocess.run(
        ["docker", "exec", "-i", fake_internet, "sh", "-c", "cat > /tmp/fake_messages_api.py"],
        input=FAKE_API.read_text(),
        text=True,
        check=True,
        capture_output=True,
        timeout=60,
    )
    sh("docker", "exec", "-d", fake_internet, "python3", "/tmp/fake_messages_api.py", str(MODELS_PORT), "0.0.0.0")
    b = start_bottle(home, "meter")
    connect_fake_internet(b, fake_internet, extra_hosts=(MODELS,))
    yield b
    stop_bottle(b, fake_internet)


def usage_of(b: Bottle, calls: int, timeout: float = 10) -> dict:
    """usage.json once it counts ``calls`` model calls (egress writes it a moment after)."""
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        doc = read_usage(b.state / "egress" / "usage.json")
        if doc is not None and doc["totals"]["requests"] >= calls:
            return doc
        time.sleep(0.1)
    raise AssertionError(f"usage.json never counted {calls} calls: {doc}")


def seen(fake_internet: str) -> list[dict]:
    script = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{MODELS_PORT}/fake/seen').read().decode())"
    return json.loads(sh("docker", "exec", fake_internet, "python3", "-c", script).stdout)


def call(b: Bottle, *, stream: bool = True) -> tuple[int, str]:
    """One Messages API call from the agent through egress (curl honours the proxy variables)."""
    body = json.dumps(
        {"model": MODEL, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    r = b.exec(
        "sh",
        "-c",
        f"curl -sS -N -w '\\n%{{http_code}}' -H 'content-type: application/json' -H 'x-api-key: sk-fake' "
        f"-d {shlex.quote(body)} {BASE}/v1/messages",
        timeout=60,
    )
    text, _, status = r.stdout.rpartition("\n")
    assert status.isdigit(), r.stdout + r.stderr
    return int(status), text


def test_claude_p_and_direct_calls_are_metered_per_model(metered: Bottle, fake_internet: str) -> None:
    script = (
        f"ANTHROPIC_BASE_URL={BASE} ANTHROPIC_API_KEY=sk-fake-for-tests "
        f"timeout 90 claude -p --model {MODEL} 'say hi' 2>&1"
    )
    r = metered.exec("sh", "-c", script, timeout=120)
    assert "pong" in r.stdout, r.stdout[-2000:]
    assert call(metered, stream=False)[0] == 200  # a JSON answer, read whole
    posts = [s for s in seen(fake_internet) if s["path"].split("?")[0] == "/v1/messages"]
    doc = usage_of(metered, len(posts))
    models = doc["models"]
    assert sum(m["requests"] for m in models.values()) == len(posts) >= 2
    m = models[MODEL]
    n = m["requests"]
    assert m["input_tokens"] == n * USAGE["input_tokens"] and m["output_tokens"] == n * USAGE["output_tokens"]
    assert m["cache_read_input_tokens"] == n * USAGE["cache_read_input_tokens"]
    assert m["cache_creation_input_tokens"] == n * USAGE["cache_creation_input_tokens"]
    assert m["usd"] == pytest.approx(n * ONE, rel=1e-4) and m["errors"] == 0
    assert doc["budget"]["usd"] == 5.0 and doc["budget"]["level"] == "ok"
    # The operator sees it: `usage` and `ls --json`.
    out = cli(metered.home, "usage", metered.slug).stdout
    assert MODEL in out and "of $5.00" in out
    [mine] = [x for x in json.loads(cli(metered.home, "ls", "--json").stdout) if x["slug"] == metered.slug]
    assert mine["usage"]["totals"]["requests"] == doc["totals"]["requests"]


def test_a_budget_reached_mid_session_refuses_the_next_call_until_approved(metered: Bottle) -> None:
    assert call(metered)[0] == 200
    before = usage_of(metered, 1)["totals"]
    time.sleep(0.5)  # the last write settles
    before = usage_of(metered, before["requests"])["totals"]
    calls, spent = before["requests"], before["usd"]
    # The operator lowers the budget to 2.5 answers from here (as a host edit of metering.json would).
    path = metered.state / "egress" / "metering.json"
    m = load_metering(path)
    limit = round(spent + 2.5 * ONE, 6)
    write_metering(path, type(m)(m.slug, m.metered, m.prices, m.prices_date, Budget(usd=limit)))
    answers = [call(metered) for _ in range(3)]
    for status, text in answers:  # the third crossed the line: it still came whole
        assert status == 200 and "event: message_start" in text and text.rstrip().endswith("}"), text[-300:]
        assert "event: message_stop" in text
    status, text = call(metered)
    assert status == 429, text
    err = json.loads(text)["error"]
    assert err["type"] == "rate_limit_error"
    assert err["message"] == (
        f"budget: spent ${spent + 3 * ONE:,.2f} of ${limit:,.2f} for bottle {metered.slug}; the operator has been asked"
    )
    doc = usage_of(metered, calls + 3)
    assert (
        doc["budget"]["level"] == "reached" and doc["totals"]["requests"] == calls + 3
    )  # the refused one is not a call
    # claude shows the refusal (the SDK does not retry: x-should-retry: false).
    script = (
        f"ANTHROPIC_BASE_URL={BASE} ANTHROPIC_API_KEY=sk-fake-for-tests timeout 90 claude -p --model {MODEL} hi 2>&1"
    )
    shown = metered.exec("sh", "-c", script, timeout=120).stdout
    assert f"budget: spent ${spent + 3 * ONE:,.2f} of ${limit:,.2f} for bottle {metered.slug}" in shown, shown[-1500:]
    # The proposal is in the queue (egress wrote it: supervise is off in this bottle).
    [p] = [p for p in contract.Queue(metered.state / "supervise" / "queue").all() if p["kind"] == "budget"]
    assert p["status"] == "pending" and p["change"]["usd"] == pytest.approx(limit * 2)
    listed = cli(metered.home, "proposals", "ls").stdout
    assert p["id"] in listed and "raise the budget to" in listed
    cli(metered.home, "proposals", "approve", p["id"])
    assert load_metering(path).budget == Budget(usd=limit * 2)
    assert call(metered)[0] == 200
    assert usage_of(metered, calls + 4)["budget"]["level"] in ("ok", "warn")
