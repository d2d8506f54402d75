"""The escape suite (bottle_tui/escape_suite.py) against a real bottle and the tests' fake internet:
every attack from inside the agent is blocked, and the controls pass."""

from __future__ import annotations

import json
import time

import pytest

from bottle_tui import escape_suite as selftest
from tests.support.bottles import ALLOWED, AUTHED, BLOCKED, SECRET, Bottle, cli, labelled, sh

pytestmark = pytest.mark.integration


def test_every_attack_is_blocked_and_every_control_passes(bottle: Bottle) -> None:
    targets = selftest.Targets(
        allowed=ALLOWED, blocked=BLOCKED, direct_ip=bottle.fake_ip, authed=AUTHED, placeholder_env="BOTTLE_TEST_TOKEN"
    )
    attacks = selftest.build_suite(targets)
    assert sum(a.expect != "control" for a in attacks) >= 30
    run = sh("docker", "exec", bottle.agent, "bash", "-c", selftest.suite_script(attacks), check=False, timeout=600)
    outcomes = selftest.judge_all(
        attacks,
        run.stdout,
        real_secrets={"BOTTLE_TEST_TOKEN": SECRET},
        log=selftest.read_log(bottle.state / "egress" / "requests.jsonl"),
    )
    report = selftest.report(outcomes)
    print(report)
    bad = [o.line() for o in outcomes if not o.ok]
    assert not bad, "\n".join(bad)


def test_selftest_cli_against_a_live_bottle_reports_every_attack_blocked(bottle: Bottle) -> None:
    r = cli(bottle.home, "selftest", bottle.slug, check=False, timeout=900)
    print(r.stdout)
    assert "credentials-in-agent" in r.stdout and "blocked  credentials-in-agent" in r.stdout
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # The canary is gone and the bottle's own policy is back.
    assert not labelled("ps", "dev.bottle-tui.selftest=true")
    assert "selftest.invalid" not in (bottle.state / "egress" / "routes.yaml").read_text()
    # Its attacks' blocks leave the operator no drafts, once supervise has read all of egress's log.
    log, cursor = bottle.state / "egress" / "requests.jsonl", bottle.state / "supervise" / "egress-cursor.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if json.loads(cursor.read_text())["offset"] >= log.stat().st_size:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    else:
        pytest.fail(f"supervise did not read all of {log} within 30 s")
    queue = [json.loads(f.read_text()) for f in (bottle.state / "supervise" / "queue").glob("*.json")]
    assert not [p for p in queue if str((p.get("change") or {}).get("host", "")).endswith(".invalid")]
