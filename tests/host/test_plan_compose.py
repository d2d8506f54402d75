"""The pure plan, preflight and compose renderers, against golden files (no docker).

Regenerate the golden files after an intended change with: UPDATE_GOLDEN=1 make test-unit
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bottle_tui.backends.docker.compose import render_compose, render_routes, to_yaml
from bottle_tui.errors import BottleError
from bottle_tui.manifest import Manifests, parse_bottle
from bottle_tui.plan import BottlePlan, missing_secrets, placeholder, preflight_text, resolve
from tests.support.manifests import plan_of
from tests.support.sidecars import egress_module

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def plan() -> BottlePlan:
    return plan_of()


def check_golden(name: str, data: object) -> None:
    text = to_yaml(data)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, regenerate with UPDATE_GOLDEN=1"


def test_compose_golden(plan: BottlePlan) -> None:
    check_golden("compose.yaml", render_compose(plan, host_uid=1000, host_gid=1000))


def test_routes_golden(plan: BottlePlan) -> None:
    check_golden("routes.yaml", render_routes(plan))


def test_rendered_routes_are_what_egress_reads(plan: BottlePlan) -> None:
    """The manifest resolves every default; egress (which refuses a route missing any key) reads
    back exactly the routes of the plan."""
    policy = egress_module("routes").parse_routes(to_yaml(render_routes(plan)))
    assert policy.bottle == plan.bottle.name
    got = [
        (r.host, r.ports, r.methods, r.paths, r.schemes, r.auth and (r.auth.scheme, r.auth.token_env, r.auth.header))
        for r in policy.routes
    ]
    want = [
        (r.host, r.ports, r.methods, r.paths, r.schemes, r.auth and (r.auth.scheme, r.auth.token_env, r.auth.header))
        for r in plan.routes
    ]
    assert got == want and len(got) == 2


def test_sidecars_have_memory_and_pid_limits(plan: BottlePlan) -> None:
    sidecars = render_compose(plan, host_uid=1000, host_gid=1000)["services"]["sidecars"]
    assert sidecars["mem_limit"] and sidecars["pids_limit"] > 0


def test_agent_is_only_on_the_internal_network_and_it_has_no_way_out(plan: BottlePlan) -> None:
    spec = render_compose(plan, host_uid=1000, host_gid=1000)
    agent, sidecars = spec["services"]["agent"], spec["services"]["sidecars"]
    assert agent["networks"] == ["internal"]
    internal = spec["networks"]["internal"]
    assert internal["internal"] is True
    assert internal["driver_opts"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    assert set(sidecars["networks"]) == {"internal", "egress"}
    assert "egress" in sidecars["networks"]["internal"]["aliases"]
    assert agent["init"] is True and agent["user"] != "0" and not agent["user"].startswith("0:")
    assert agent["cap_drop"] == ["ALL"] and sidecars["cap_drop"] == ["ALL"]
    # Folders are bind-mounted, never single files (a file mount pins the inode).
    for svc in (agent, sidecars):
        for vol in svc["volumes"]:
            assert not Path(vol["source"]).suffix, vol


def test_secrets_reach_only_the_sidecars_by_name(plan: BottlePlan) -> None:
    spec = render_compose(plan, host_uid=1000, host_gid=1000)
    agent_env = spec["services"]["agent"]["environment"]
    assert agent_env["EXAMPLE_KEY"] == placeholder("EXAMPLE_KEY")
    assert agent_env["GIT_TOKEN"] == placeholder("GIT_TOKEN")
    sidecar_env = spec["services"]["sidecars"]["environment"]
    assert sidecar_env["EXAMPLE_KEY"] is None and sidecar_env["GIT_TOKEN"] is None  # taken from compose's env
    assert agent_env["HTTPS_PROXY"] == "http://egress:8080"
    assert agent_env["TZ"] == "UTC" and agent_env["DEBUG"] == "1"


def test_labels_identify_the_bottle(plan: BottlePlan) -> None:
    spec = render_compose(plan, host_uid=1000, host_gid=1000)
    assert spec["name"] == "claude-bottle-coder-0a1b2c"
    labels = spec["services"]["agent"]["labels"]
    assert labels["dev.bottle-tui.slug"] == "coder-0a1b2c" and labels["dev.bottle-tui.agent"] == "coder"


def test_preflight_names_everything_but_no_secret_values(plan: BottlePlan, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_KEY", "sk-super-secret")
    text = preflight_text(plan)
    for needle in (
        "coder",
        "web",
        "docker",
        "api.example.com",
        "*.docs.example.com",
        "EXAMPLE_KEY",
        "GIT_TOKEN",
        "https://git.example.com/org/repo.git",
        "trunk",
        "TZ",
        "DEBUG",
        "bottle-tui/agent:aaa",
        "/home/op/.claude-bottle/state/coder-0a1b2c",
        "supervise  on",
        "claude --model sonnet",
    ):
        assert needle in text, needle
    assert "sk-super-secret" not in text and "UTC" not in text
    assert missing_secrets(plan, {"EXAMPLE_KEY": "x"}) == ["GIT_TOKEN"]


def test_claude_argv(plan: BottlePlan) -> None:
    assert plan.claude_argv() == ["claude", "--model", "sonnet", "--append-system-prompt", "Be careful.", "--verbose"]


def test_unknown_agent_suggests_a_name(plan: BottlePlan) -> None:
    manifests = Manifests(
        home=plan.home, agents={"coder": plan.agent}, bottles={"web": plan.bottle}, agents_from_defaults=False
    )
    with pytest.raises(BottleError, match="did you mean 'coder'"):
        resolve(manifests, "codr", slug="x-1", images={}, started_at="", state=plan.state)


def test_smolvm_bottle_resolves_to_a_smolvm_plan(plan: BottlePlan) -> None:
    bottle = parse_bottle(Path("/h/bottles/vm.md"), "---\nbackend: smolvm\n---\n")
    manifests = Manifests(
        home=plan.home, agents={"coder": plan.agent}, bottles={"web": bottle}, agents_from_defaults=False
    )
    assert resolve(manifests, "coder", slug="x-1", images={}, started_at="", state=plan.state).backend == "smolvm"
