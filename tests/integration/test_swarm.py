"""Swarm bottles on a real multi-node swarm (the lab: three dockerds in network namespaces):
bring-up, placement, what each service is given, discovery, a restarted bundle, isolation of the
agent, teardown and a failed bring-up that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.bottles import SECRET
from tests.support.swarm import (
    LAB_DIR,
    NODE_ADDRESSES,
    SwarmBottle,
    lab_up,
    leftovers,
    manager,
    on_node,
    start_swarm_bottle,
    swarm_cli,
    write_swarm_home,
)
from tests.support.waiting import wait_for

BAD_POLICY = "dlp: {disabled_rules: [no-such-gitleaks-rule]}"


@pytest.fixture(scope="module")
def swarm_home(swarm_lab: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_swarm_home(tmp_path_factory.mktemp("swarm-home"), extra={"broken": BAD_POLICY, "other": ""})


@pytest.fixture(scope="module")
def bottles(swarm_home: Path):
    """Two swarm bottles: placement puts the second on another node than the first."""
    first = start_swarm_bottle(swarm_home)
    second = start_swarm_bottle(swarm_home, "other")
    yield first, second
    for b in (first, second):
        swarm_cli(swarm_home, "stop", b.slug, check=False)


def spec(service: str) -> dict:  # type: ignore[type-arg]
    return json.loads(manager("service", "inspect", service).stdout)[0]["Spec"]


def test_both_services_of_a_bottle_run_on_one_node_and_bottles_spread(bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    first, second = bottles
    assert first.node != second.node, "placement should put the second bottle on a node with fewer bottles"
    for b in bottles:
        for role in ("agent", "sidecars"):
            tasks = manager(
                "service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}}", b.service(role)
            )
            assert tasks.stdout.split() == [b.node]


def test_ls_lists_swarm_bottles_with_their_services(swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    listed = {b["slug"]: b for b in json.loads(swarm_cli(swarm_home, "ls", "--json").stdout)}
    for b in bottles:
        entry = listed[b.slug]
        assert entry["backend"] == "swarm" and entry["services"] == {"agent": "running", "sidecars": "running"}
        assert entry["home"] == str(swarm_home)


def test_the_logs_view_reads_both_services_logs_through_the_manager(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from bottle_tui import ops

    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(swarm_home))
    b = bottles[0]
    text = asyncio.run(ops.bundle_logs(asyncio.run(ops.find(b.slug))))
    assert f"{b.service('sidecars')}.1@{b.node}" in text and "error:" not in text


def test_services_are_the_docker_bottles_hardened_and_the_credential_only_a_secret(
    bottles: tuple[SwarmBottle, SwarmBottle],
) -> None:
    b = bottles[0]
    agent, bundle = spec(b.service("agent")), spec(b.service("sidecars"))
    for s in (agent, bundle):
        container = s["TaskTemplate"]["ContainerSpec"]
        assert container["CapabilityDrop"] == ["ALL"] and "Ports" not in s.get("EndpointSpec", {})
        assert SECRET not in json.dumps(s), "a credential's value is in a service spec"
    assert (
        agent["TaskTemplate"]["ContainerSpec"]["User"] == "1000:1000" and agent["TaskTemplate"]["ContainerSpec"]["Init"]
    )
    assert "Secrets" not in agent["TaskTemplate"]["ContainerSpec"]
    assert [s["File"]["Name"] for s in bundle["TaskTemplate"]["ContainerSpec"]["Secrets"]] == ["BOTTLE_TEST_TOKEN"]
    assert bundle["TaskTemplate"]["ContainerSpec"]["ReadOnly"]
    # The secret is a file in the bundle only; the agent holds the placeholder.
    assert b.exec("cat", "/run/secrets/BOTTLE_TEST_TOKEN", role="sidecars").stdout == SECRET
    assert b.exec("ls", "/run/secrets").returncode != 0
    assert b.exec("printenv", "BOTTLE_TEST_TOKEN").stdout.strip() == "bottle-placeholder-BOTTLE_TEST_TOKEN"


def test_the_agent_has_no_route_out_and_no_node_answers(bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    b, other = bottles
    routes = b.exec("cat", "/proc/net/route").stdout.splitlines()[1:]
    assert routes and all(line.split()[1] != "00000000" for line in routes), f"a default route: {routes}"
    other_bundle = json.loads(on_node(other.node, "inspect", other.container("sidecars")).stdout)[0]["NetworkSettings"][
        "Networks"
    ]
    targets = [(addr, port) for addr in NODE_ADDRESSES for port in (2375, 2376, 2377, 7946, 4789, 22, 80)]
    targets += [(net["IPAddress"], 8080) for net in other_bundle.values() if net.get("IPAddress")]
    probe = (
        "import socket, sys\n"
        "for t in sys.argv[1:]:\n"
        "    h, p = t.rsplit(':', 1)\n"
        "    s = socket.socket(); s.settimeout(1.5)\n"
        "    try:\n"
        "        s.connect((h, int(p))); print('OPEN', t)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    out = b.exec("python3", "-c", probe, *(f"{h}:{p}" for h, p in targets), timeout=120)
    assert out.returncode == 0 and "OPEN" not in out.stdout, out.stdout


def test_dns_on_the_internal_overlay_resolves_only_the_bundles_names(bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    b, other = bottles
    # The bundle's aliases and its own service name (the swarm names a service on its networks).
    names = ["egress", "supervise", "status", b.service("sidecars")]
    others = [other.service("sidecars"), other.service("agent"), f"tasks.{other.service('sidecars')}",
              "bottle-tui-lab-manager", "allowed.fake.test", "host.docker.internal"]  # fmt: skip
    # A name the overlay does not hold goes nowhere (the node has no resolver the task can reach):
    # each lookup is bounded, in parallel, and one that does not answer did not resolve.
    script = 'for n in "$@"; do (timeout 5 getent hosts "$n" >/dev/null && echo "$n") & done; wait'
    out = b.exec("sh", "-c", script, "x", *names, *others, timeout=60)
    assert sorted(out.stdout.split()) == sorted(names)


def test_egress_in_the_bundle_answers_the_agent(bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    out = bottles[0].exec(
        "curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "https://blocked.fake.test/"
    )
    assert out.stdout == "403"


def test_selftest_blocks_every_attack_from_a_swarm_bottle_and_leaves_nothing(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle]
) -> None:
    """The escape suite through `bottle-tui selftest`: its canary is a service on the bottle's
    egress overlay (the bundle's way out, where the internet would be), pinned to its node."""
    b = bottles[0]
    policy = b.exec("cat", "/state/egress/routes.yaml", role="sidecars").stdout
    out = swarm_cli(swarm_home, "selftest", b.slug, check=False, timeout=600)
    print(out.stdout)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    summary = next(line for line in out.stdout.splitlines() if " attacks: " in line)
    attacks = int(summary.split()[0])
    assert attacks >= 30 and summary.startswith(f"{attacks} attacks: {attacks} blocked, 0 LEAKED, 0 unclear")
    assert "controls: 3 pass" in summary and "blocked  credentials-in-agent" in out.stdout
    assert "canary service" in out.stderr and "warning" not in out.stderr
    # The bottle's own policy is back, and nothing of the canary stays on the swarm.
    assert b.exec("cat", "/state/egress/routes.yaml", role="sidecars").stdout == policy
    for kind in ("service", "secret", "config"):
        assert not manager(kind, "ls", "-q", "--filter", "label=dev.bottle-tui.selftest=true").stdout.split()
    assert not on_node(b.node, "ps", "-aq", "--filter", "label=dev.bottle-tui.selftest=true").stdout.split()


def test_a_restarted_bundle_keeps_its_state(bottles: tuple[SwarmBottle, SwarmBottle]) -> None:
    b = bottles[1]
    seeded = b.exec("cat", "/state/.seeded", role="sidecars").stdout
    old = b.container("sidecars")
    on_node(b.node, "kill", old)

    def restarted() -> bool:
        try:
            return b.container("sidecars") != old
        except IndexError:
            return False

    wait_for(restarted, timeout=60, what="the swarm to restart the bundle's task")
    wait_for(
        lambda: b.exec("test", "-f", "/state/egress/ready", role="sidecars").returncode == 0, timeout=60, what="egress"
    )
    assert b.exec("cat", "/state/.seeded", role="sidecars").stdout == seeded
    assert "waiting for the host" not in manager("service", "logs", "--since", "1m", b.service("sidecars")).stdout


def test_a_failed_bring_up_leaves_nothing_behind(swarm_home: Path) -> None:
    out = swarm_cli(swarm_home, "start", "broken", "--yes", "--detach", check=False)
    assert out.returncode == 1
    line = [x for x in out.stderr.splitlines() if x.startswith("bottle-tui: error:")]
    assert len(line) == 1 and "refused its policy" in line[0], out.stderr
    slug = line[0].split("egress of ", 1)[1].split(" ", 1)[0]
    wait_for(lambda: not leftovers(slug), timeout=30, what=f"nothing of {slug} left: {leftovers(slug)}")


def test_a_home_naming_no_such_context_is_one_line(tmp_path: Path, swarm_lab: None) -> None:
    home = write_swarm_home(tmp_path / "home")
    (home / "config.yaml").write_text("swarm: {context: no-such-context}\n")
    out = swarm_cli(home, "start", "tester", "--yes", "--detach", check=False)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("bottle-tui: error: config.yaml")
    assert "no Docker context 'no-such-context'" in out.stderr


def test_a_node_without_the_images_is_found_from_its_engines_own_listing(swarm_lab: None) -> None:
    """The listing the bring-up reads, from a real node: what it holds is found, what it lacks is
    named (test_swarm_refusals.py checks the line that says what to run)."""
    from bottle_tui.backends.docker.images import image_refs
    from bottle_tui.backends.swarm import lifecycle

    listing = on_node("worker2", "image", "ls", "--format", lifecycle.IMAGE_LS_FORMAT).stdout
    refs = list(image_refs().values())
    absent = refs[0].rsplit(":", 1)[0] + ":000000000000"
    assert lifecycle.missing_images(listing, refs) == []
    assert lifecycle.missing_images(listing, [*refs, absent]) == [absent]


def test_stop_removes_the_bottle_from_the_swarm(swarm_home: Path) -> None:
    """Its canary too, when a selftest was killed before it removed its own (stop finds it by label)."""
    b = start_swarm_bottle(swarm_home)
    env = {**os.environ, "CLAUDE_BOTTLE_HOME": str(swarm_home), "BOTTLE_TEST_TOKEN": SECRET}
    argv = [sys.executable, "-m", "bottle_tui", "selftest", b.slug]
    with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as selftest:
        assert selftest.stderr is not None
        said = []
        for line in selftest.stderr:  # killed once its attacks run: the canary is up
            said.append(line)
            if line.startswith("running"):
                break
        selftest.kill()
    assert "starting canary service" in "".join(said), said
    assert manager("service", "ls", "-q", "--filter", "label=dev.bottle-tui.selftest=true").stdout.split()
    t0 = time.monotonic()
    stopped = swarm_cli(swarm_home, "stop", b.slug)
    print(f"stop took {time.monotonic() - t0:.1f} s")
    assert not leftovers(b.slug), stopped.stderr[-2000:]
    assert (swarm_home / "archive" / b.slug / "compose.log").exists()
    # What it spent comes from the node's volume to the archive, where `usage` reads it.
    assert json.loads((swarm_home / "archive" / b.slug / "egress" / "usage.json").read_text())["totals"] is not None
    assert not (swarm_home / "state" / b.slug).exists()


def test_a_blocked_request_becomes_a_proposal_and_approving_it_makes_the_route_live(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle]
) -> None:
    """The engine as the control channel: the draft that supervise queued on the node's volume
    is listed and decided from the host through `docker exec`, and egress in the bundle reloads."""
    b = bottles[0]
    url = "http://newroute.fake.test/v1/x"

    def code() -> str:
        return b.exec("curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", url, timeout=30).stdout

    assert code() == "403"

    def draft() -> dict | None:  # type: ignore[type-arg]
        listed = json.loads(swarm_cli(swarm_home, "proposals", "ls", "--json").stdout)
        return next((p for p in listed if p["slug"] == b.slug and p["change"]["host"] == "newroute.fake.test"), None)

    found = wait_for(draft, timeout=30, what="egress's block to become a draft proposal")
    out = swarm_cli(swarm_home, "proposals", "approve", found["id"])
    assert "approved (routes.yaml updated)" in out.stderr and "warning" not in out.stderr
    assert "newroute.fake.test" in b.exec("cat", "/state/egress/routes.yaml", role="sidecars").stdout
    # Allowed now: egress lets it through to an upstream that the lab does not have (no 403).
    assert code() != "403"
    again = swarm_cli(swarm_home, "proposals", "reject", found["id"], check=False)
    assert again.returncode == 1 and "already approved" in again.stderr


def test_an_operators_policy_edit_reaches_the_bundle(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from bottle_tui import ops
    from bottle_tui.errors import BottleError

    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(swarm_home))
    b = bottles[1]
    state, before = ops.read_policy(swarm_home, b.slug)
    after = before.replace("max_body_bytes: 8388608", "max_body_bytes: 4096", 1)
    assert after != before
    assert asyncio.run(ops.save_policy(swarm_home, b.slug, before, after, by="test")) is None
    assert b.exec("cat", "/state/egress/routes.yaml", role="sidecars").stdout == after
    with pytest.raises(BottleError, match="changed while you edited it"):
        asyncio.run(ops.save_policy(swarm_home, b.slug, before, before, by="test"))
    assert "policy-edit" in (state.audit_log).read_text()


async def test_the_console_shows_a_swarm_bottles_proposal_as_it_is_queued_on_the_node(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll is pushed out of reach: only the bottle's watch stream (the bundle's control
    command through the node's context) can bring the row in time."""
    import asyncio

    from bottle_tui.console.app import BottleConsole

    monkeypatch.setenv("CLAUDE_BOTTLE_HOME", str(swarm_home))
    b = bottles[0]
    app = BottleConsole(swarm_home, poll_seconds=3600)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#bottles")
        deadline = time.monotonic() + 30
        while b.slug not in {k.value for k in table.rows} and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # the watch has started and said its first snapshot
        host = "console-watch.fake.test"
        await asyncio.to_thread(b.exec, "curl", "-s", "-m", "3", "-o", "/dev/null", f"http://{host}/")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(p.change.get("host") == host for p in app.proposals_pane.pending.values()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the swarm bottle's proposal did not reach the console")
        await pilot.press("q")


def test_a_node_that_goes_away_shows_its_bottles_as_node_down_and_stop_and_cleanup_finish_later(
    swarm_home: Path, bottles: tuple[SwarmBottle, SwarmBottle]
) -> None:
    """Last in the module: one worker's engine is stopped and brought back by the lab script."""
    on_worker = next(b for b in bottles if b.node != "bottle-tui-lab-manager")
    node = on_worker.node.removeprefix("bottle-tui-lab-")
    pid = int((LAB_DIR / node / "docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, what=f"the engine of {node} to stop")
    try:
        listed = {b["slug"]: b for b in json.loads(swarm_cli(swarm_home, "ls", "--json").stdout)}
        assert listed[on_worker.slug]["status"] == "node down"
        others = [b for b in bottles if b is not on_worker]
        assert all(listed[b.slug]["status"] == "running(2)" for b in others)
        out = swarm_cli(swarm_home, "stop", on_worker.slug, check=False)
        assert f"the volumes of {on_worker.slug} stay on node {on_worker.node}" in out.stderr
        assert (swarm_home / "state" / on_worker.slug).is_dir(), "the state folder goes before the volumes"
        assert not manager(
            "service", "ls", "-q", "--filter", f"label=dev.bottle-tui.slug={on_worker.slug}"
        ).stdout.split()
    finally:
        lab_up()
    swarm_cli(swarm_home, "cleanup", "--yes")
    assert not leftovers(on_worker.slug)
    assert not (swarm_home / "state" / on_worker.slug).exists()
