"""The swarm backend's pure parts: the services rendered from the docker bottle's facts, the
home's swarm settings, placement, and the seed the bundle reads (no engine)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from bottle_tui.backends.docker.compose import render_compose
from bottle_tui.backends.swarm import render
from bottle_tui.backends.swarm.cluster import Node
from bottle_tui.backends.swarm.lifecycle import choose_node, seed_tar
from bottle_tui.config import SwarmSettings, load_config
from bottle_tui.errors import BottleError
from bottle_tui.plan import BottlePlan
from bottle_tui.state import StateDir
from tests.support.manifests import plan_of

BOTTLE = """---
description: a swarm bottle for the tests
backend: swarm
egress:
  routes:
    - host: api.example.com
      ports: [443]
      auth: {scheme: header, header: x-api-key, token_env: EXAMPLE_KEY}
    - host: other.example.com
      auth: {scheme: bearer, token_env: OTHER_KEY}
resources: {cpus: 1.5, memory: 2g, pids: 300}
---
"""


@pytest.fixture
def plan() -> BottlePlan:
    return plan_of(BOTTLE)


def flag_values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def rendered(plan: BottlePlan, **kw: object) -> render.SwarmBottle:
    return render.render_swarm(plan, node_id="nodeid1", node_hostname="node-a", registry=kw.get("registry"))  # type: ignore[arg-type]


def test_every_compose_key_of_the_docker_bottle_has_a_swarm_meaning(plan: BottlePlan) -> None:
    spec = render_compose(plan, host_uid=render.BUNDLE_UID, host_gid=render.BUNDLE_UID)
    for service in spec["services"].values():
        assert set(service) <= render.TRANSLATED | render.REPLACED, set(service) - render.TRANSLATED - render.REPLACED
    with pytest.raises(ValueError, match="does not know"):
        render._flags({"privileged": True})


def test_the_agent_is_the_docker_bottles_agent_on_the_internal_overlay_only(plan: BottlePlan) -> None:
    agent = rendered(plan).agent
    compose_agent = render_compose(plan, host_uid=1, host_gid=1)["services"]["agent"]
    assert flag_values(agent, "--user") == [compose_agent["user"]] == ["1000:1000"]
    assert "--init" in agent and flag_values(agent, "--cap-drop") == ["ALL"]
    assert flag_values(agent, "--limit-cpu") == ["1.5"] and flag_values(agent, "--limit-memory") == ["2048m"]
    assert flag_values(agent, "--limit-pids") == ["300"]
    assert flag_values(agent, "--network") == ["claude-bottle-coder-0a1b2c-internal"]
    assert agent[-3:] == ["bottle-tui/agent:aaa", "sleep", "infinity"]
    env = flag_values(agent, "--env")
    assert "EXAMPLE_KEY=bottle-placeholder-EXAMPLE_KEY" in env and "HTTPS_PROXY=http://egress:8080" in env
    assert flag_values(agent, "--constraint") == ["node.id==nodeid1"]
    assert not any(a.startswith("--publish") or a == "-p" for a in agent), "nothing is published: no routing mesh"
    assert flag_values(agent, "--config") == [
        "source=claude-bottle-coder-0a1b2c-ca,target=/etc/bottle/ca/egress-ca.pem,mode=0444"
    ]
    assert "--secret" not in agent, "the agent gets no secret"


def test_the_bundle_gets_its_credentials_as_secrets_and_none_in_its_environment(plan: BottlePlan) -> None:
    spec = rendered(plan)
    bundle = spec.bundle
    env = flag_values(bundle, "--env")
    assert not [e for e in env if e.startswith(("EXAMPLE_KEY=", "OTHER_KEY="))]
    assert "BOTTLE_EGRESS_SECRETS=EXAMPLE_KEY,OTHER_KEY" in env and "BOTTLE_SECRETS_DIR=/run/secrets" in env
    assert "BOTTLE_SEED_MARK=/state/.seeded" in env
    assert flag_values(bundle, "--secret") == [
        "source=claude-bottle-coder-0a1b2c-secret-EXAMPLE_KEY,target=EXAMPLE_KEY,uid=1001,gid=1001,mode=0400",
        "source=claude-bottle-coder-0a1b2c-secret-OTHER_KEY,target=OTHER_KEY,uid=1001,gid=1001,mode=0400",
    ]
    assert flag_values(bundle, "--user") == ["1001:1001"] and "--read-only" in bundle
    assert flag_values(bundle, "--network") == [
        "name=claude-bottle-coder-0a1b2c-internal,alias=egress,alias=status,alias=supervise",
        "claude-bottle-coder-0a1b2c-egress",
    ]
    mounts = flag_values(bundle, "--mount")
    assert mounts[-1].startswith("type=volume,source=bottle-tui-state-coder-0a1b2c,target=/state,")
    assert {"type=tmpfs,target=/tmp", "type=tmpfs,target=/run/bottle-init"} <= set(mounts)
    only_one = render.render_swarm(plan, node_id="n", node_hostname="h", registry=None, given=["OTHER_KEY"])
    assert [s.split(",")[1] for s in flag_values(only_one.bundle, "--secret")] == ["target=OTHER_KEY"]


def test_networks_internal_overlay_and_the_way_out(plan: BottlePlan) -> None:
    internal, egress = rendered(plan).networks
    assert internal[:5] == ["network", "create", "--driver", "overlay", "--internal"]
    assert "--internal" not in egress and egress[-1] == "claude-bottle-coder-0a1b2c-egress"
    assert "--label=dev.bottle-tui.slug=coder-0a1b2c" in internal


def test_a_registry_prefixes_the_images_and_lets_the_manager_resolve_them(plan: BottlePlan) -> None:
    local = rendered(plan)
    assert "--no-resolve-image" in local.bundle and "bottle-tui/sidecars:bbb" in local.bundle
    pushed = rendered(plan, registry="registry.internal:5000")
    assert "registry.internal:5000/bottle-tui/sidecars:bbb" in pushed.bundle
    assert "--no-resolve-image" not in pushed.agent and "--with-registry-auth" in pushed.agent


def test_swarm_settings_and_their_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "swarm: {context: lab, nodes: {n1: ctx-n1}}\nimages: {registry: reg.internal:5000}\n"
    )
    config = load_config(tmp_path)
    assert config.swarm == SwarmSettings("lab", (("n1", "ctx-n1"),)) and config.registry == "reg.internal:5000"
    assert config.swarm.node_contexts("n1") == ("ctx-n1",)
    assert config.swarm.node_contexts("n2") == ("lab-n2", "n2")
    for text, needle in (
        ("swarm: {nodes: {}}\n", "swarm.context: missing"),
        ("swarm: {context: 'no spaces'}\n", "swarm.context: expected a Docker context name"),
        ("swarm: {context: lab, where: x}\n", "swarm.where: unknown key"),
        ("images: {registry: 'http://x'}\n", "images.registry: expected a registry"),
    ):
        (tmp_path / "config.yaml").write_text(text)
        with pytest.raises(BottleError, match=needle) as err:
            load_config(tmp_path)
        assert "\n" not in str(err.value)


def test_placement_picks_the_ready_node_with_the_fewest_bottles() -> None:
    nodes = [
        Node("a", "alpha", "Ready", "Active"),
        Node("b", "beta", "Ready", "Active"),
        Node("c", "gamma", "Down", "Active"),
        Node("d", "delta", "Ready", "Drain"),
    ]
    assert choose_node(nodes, {"alpha": 2, "beta": 1}).hostname == "beta"
    assert {choose_node(nodes, {}).hostname for _ in range(50)} == {"alpha", "beta"}
    with pytest.raises(BottleError, match="no node of the swarm is ready"):
        choose_node(nodes[2:], {})


def test_the_seed_holds_the_sidecar_folders_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    state.create()
    state.routes.write_text("version: 1\n")
    (state.supervise / "settings.json").write_text("{}")
    state.write_metadata({"host": "only"})
    with tarfile.open(fileobj=io.BytesIO(seed_tar(state))) as tar:
        names = sorted(m.name for m in tar.getmembers())
        assert {m.uid for m in tar.getmembers()} == {render.BUNDLE_UID}
    assert names == ["egress/routes.yaml", "supervise/settings.json"]
