"""The operations layer (bottle_tui/ops/) that the CLI and the console share: start runs the
backend's preflight before anything else, warnings before a start, decisions reload through the
bottle's backend, and the front ends reach backends only through ops."""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
from pathlib import Path

import pytest

from bottle_contract.files import atomic_write
from bottle_tui import ops, proposals
from bottle_tui.backends.smolvm.probe import CACHE_ENV, host_key
from bottle_tui.backends.smolvm.smolvm_cli import Smolvm
from bottle_tui.errors import BottleError
from bottle_tui.plan import MIN_CREDENTIAL_CHARS, credential_problem
from bottle_tui.state import StateDir
from tests.support.manifests import BOTTLE, write_home

ROOT = Path(__file__).resolve().parents[2]


def test_start_runs_the_backends_preflight_before_images_or_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the console's `n` does (ops.start without preflighted): a microVM bottle on a host
    where microVMs do not boot stops at smolvm's preflight, with its one-line reason, before an
    image is looked at or a state folder made. The real smolvm CLI (pinned wheel) answers the
    version check; the probe's answer for this host is the cached one we wrote."""
    try:
        smol = Smolvm.find()
        version = ".".join(map(str, asyncio.run(smol.version())))
    except BottleError as exc:
        pytest.skip(f"needs the smolvm CLI from the pinned wheel (pip install -e '.[test]'): {exc}")
    cache = tmp_path / "probe.json"
    cache.write_text(
        json.dumps(
            {
                "ok": False,
                "reason": "no /dev/kvm (written by this test)",
                "host": host_key(),
                "smolvm": version,
                "checked_at": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    monkeypatch.setenv(CACHE_ENV, str(cache))
    home = write_home(tmp_path / "home", BOTTLE.replace("description: a bottle for the tests", "backend: smolvm"))
    plan = ops.plan(home, "coder")
    said: list[str] = []
    with pytest.raises(BottleError, match="smolvm cannot start here: microVMs cannot boot on this host: no /dev/kvm"):
        asyncio.run(ops.start(plan, said.append))
    assert not plan.state.path.exists()
    assert not (home / "images.log").exists()


def test_plan_touches_nothing(tmp_path: Path) -> None:
    home = write_home(tmp_path / "home")
    plan = ops.plan(home, "coder")
    assert plan.slug.startswith("coder-") and plan.backend == "docker"
    assert set(plan.images) == {"agent", "sidecars"}
    assert "api.example.com" in ops.describe(plan)
    assert not (home / "state").exists()


def test_start_warns_about_missing_and_too_short_credentials(tmp_path: Path) -> None:
    bottle = BOTTLE.replace(
        '    - host: "*.docs.example.com"\n',
        '    - host: "*.docs.example.com"\n'
        "    - host: basic.example.com\n      auth: {scheme: basic, token_env: BASIC_CRED}\n",
    )
    plan = ops.plan(write_home(tmp_path / "home", bottle), "coder")
    warnings = ops.start_warnings(plan, {"EXAMPLE_KEY": "short", "BASIC_CRED": "someone-long-enough:pw"})
    assert any(w.startswith("$GIT_TOKEN is not set here") for w in warnings)
    short = [w for w in warnings if "too short" in w]
    assert len(short) == 2
    assert (
        short[0].startswith("$BASIC_CRED is too short")
        and f"its password is 2 characters, shorter than {MIN_CREDENTIAL_CHARS}" in short[0]
    )
    assert short[1].startswith("$EXAMPLE_KEY is too short") and "it is 5 characters" in short[1]
    # Long enough everywhere: only the unset one is left.
    assert (
        ops.start_warnings(plan, {"EXAMPLE_KEY": "k" * 12, "BASIC_CRED": "u:" + "p" * 12, "GIT_TOKEN": "g" * 40}) == []
    )


def test_credential_length_rule() -> None:
    assert credential_problem("bearer", "x" * (MIN_CREDENTIAL_CHARS - 1)) is not None
    assert credential_problem("bearer", "x" * MIN_CREDENTIAL_CHARS) is None
    assert credential_problem("basic", "a-long-user-name:" + "p" * MIN_CREDENTIAL_CHARS) is None
    assert credential_problem("basic", "a-long-user-name:pw") is not None


ROUTES = """version: 1
bottle: sandbox
dlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}
routes: []
"""


def bottle_state(home: Path, slug: str, backend: str) -> StateDir:
    state = StateDir(home / "state" / slug)
    state.create()
    atomic_write(state.routes, ROUTES)
    state.write_metadata({"slug": slug, "backend": backend})
    return state


@pytest.mark.parametrize("backend", ["docker", "smolvm"])
def test_decide_applies_and_asks_the_bottles_backend_to_reload(tmp_path: Path, backend: str) -> None:
    """No bundle runs for this state folder, so the (real) engine refuses the reload signal: the
    decision stands, routes.yaml has the route, and the warning says the reload did not happen."""
    if shutil.which("docker") is None:
        pytest.skip("needs the docker CLI (not an engine): `make engine` installs it")
    home = tmp_path / "home"
    slug = "tester-abcdef"
    state = bottle_state(home, slug, backend)
    p = proposals.create(
        state, "egress-route", {"host": "pypi.example.org", "ports": [443], "methods": [], "paths": []}, "r"
    )
    decided = asyncio.run(ops.decide(home, p.id, "approve", by=ops.operator("test")))
    assert decided.proposal.status == "approved" and decided.policy_changed
    assert (
        decided.reload_warning is not None
        and f"the bundle of {slug} did not take the reload signal" in decided.reload_warning
    )
    assert "pypi.example.org" in state.routes.read_text()
    assert decided.line().startswith(f"{p.id}: approved (routes.yaml updated); the policy is saved")
    again = asyncio.run(
        ops.decide(
            home,
            proposals.create(
                state, "egress-route", {"host": "pypi.example.org", "ports": [443], "methods": [], "paths": []}, "r"
            ).id,
            "reject",
            by="t",
        )
    )
    assert again.reload_warning is None and not again.policy_changed  # nothing changed: no reload asked


def test_save_policy_refuses_an_edit_of_a_policy_that_changed_meanwhile(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = bottle_state(home, "tester-abcdef", "docker")
    got_state, before = ops.read_policy(home, "tester-abcdef")
    assert got_state.path == state.path and before == ROUTES
    atomic_write(state.routes, ROUTES.replace("sandbox", "changed"))
    with pytest.raises(BottleError, match="changed while you edited it"):
        asyncio.run(ops.save_policy(home, "tester-abcdef", before, ROUTES, by="t"))


def test_check_change_refuses_a_wider_modification(tmp_path: Path) -> None:
    state = bottle_state(tmp_path / "home", "tester-abcdef", "docker")
    p = proposals.create(
        state, "egress-route", {"host": "a.example.org", "ports": [443], "methods": ["GET"], "paths": ["/x/*"]}, "r"
    )
    assert ops.check_change(p, {"host": "a.example.org", "ports": [443], "methods": ["GET"], "paths": ["/x/y"]})[
        "paths"
    ] == ["/x/y"]
    with pytest.raises(BottleError, match="paths"):
        ops.check_change(p, {"host": "a.example.org", "ports": [443], "methods": ["GET"], "paths": ["/*"]})


def _bottle_tui_imports(path: Path, level: int = 1) -> set[str]:
    """The bottle_tui modules ``path`` imports (``level``: the relative-import depth that means
    bottle_tui itself: 1 for a module of bottle_tui, 2 for one of its subpackages)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == level:
            found.add(node.module or "")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bottle_tui"):
            found.add((node.module or "").removeprefix("bottle_tui."))
    return found


def test_the_cli_calls_ops_and_nothing_below_it() -> None:
    """Besides ops, the CLI uses only the error type, the terminal hand-off and the console it opens."""
    used = set().union(*(_bottle_tui_imports(f, level=2) for f in (ROOT / "bottle_tui" / "cli").glob("*.py")))
    assert {m.split(".")[0] for m in used} <= {"", "ops", "errors", "runner", "console"}, used
    assert not any(m.startswith(("backends", "proposals", "manifest", "plan", "state")) for m in used), used
