"""A microVM bottle end to end, for real: pack, create, start, exec, cp, stop, delete, with the
agent's traffic only through the sidecar bundle. It runs where the probe VM boots; elsewhere
(hosts whose nested KVM kills the guest) it reports itself skipped with the probe's reason. It is
never replaced by a fake. Where VMs do not boot, `start` must refuse in one line and start nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from bottle_tui.backends.smolvm import vm_lifecycle as lifecycle
from bottle_tui.backends.smolvm.probe import CACHE_ENV, ProbeResult, probe
from bottle_tui.backends.smolvm.render import vm_name
from bottle_tui.backends.smolvm.smolvm_cli import STATE_DIR_ENV, Smolvm, machine_path
from bottle_tui.errors import BottleError
from bottle_tui.ops import plan as plan_for
from tests.support.bottles import ALLOWED, BLOCKED, Bottle, cli, connect_fake_internet, sh, stop_bottle

pytestmark = [pytest.mark.integration, pytest.mark.microvm]

VM_MANIFESTS = {
    "agents/vm-tester.md": "---\nbottle: vm-sandbox\n---\nYou are a test agent in a microVM.\n",
    "bottles/vm-sandbox.md": f"---\nbackend: smolvm\negress:\n  routes:\n    - host: {ALLOWED}\nresources: {{cpus: 1, memory: 1g, pids: 256}}\n---\n",
}
CURL = ("curl", "-sS", "--max-time", "10")


@pytest.fixture(scope="session")
def smolvm_state(tmp_path_factory: pytest.TempPathFactory):
    """Every smolvm call of these tests, the CLI's included, in a state folder of their own, with
    a probe cache of their own (so a session probes once, whatever an operator's cache says)."""
    folder = tmp_path_factory.mktemp("smolvm-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STATE_DIR_ENV, str(folder))
        mp.setenv(CACHE_ENV, str(folder.parent / "smolvm-probe.json"))
        yield folder
    # smolvm keeps the imported agent image there (a gigabyte): not worth keeping past the session.
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def probed(smolvm_state: Path) -> tuple[Smolvm, ProbeResult]:
    smol = Smolvm.find()
    version = ".".join(map(str, asyncio.run(smol.version())))
    return smol, asyncio.run(probe(smol, version))


@pytest.fixture(scope="session")
def microvms(probed: tuple[Smolvm, ProbeResult]) -> Smolvm:
    smol, result = probed
    if not result.ok:
        pytest.skip(f"the probe VM does not boot on this host: {result.reason}")
    return smol


def _vm_home(base: Path) -> Path:
    for rel, text in VM_MANIFESTS.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return base


def test_start_refuses_in_one_line_where_microvms_cannot_boot(
    probed: tuple[Smolvm, ProbeResult], docker_engine: None, tmp_path: Path
) -> None:
    smol, result = probed
    if result.ok:
        pytest.skip("microVMs boot on this host: the refusal is not what happens here")
    home = _vm_home(tmp_path / "home")
    out = cli(home, "start", "vm-tester", "--yes", check=False)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("bottle-tui: error:")]
    assert len(errors) == 1 and "microVMs cannot boot on this host" in errors[0] and "use backend: docker" in errors[0]
    assert result.reason in errors[0]
    assert "Traceback" not in out.stderr
    # Nothing started: no state folder, no machine, no bundle.
    assert not (home / "state").exists() or not any((home / "state").iterdir())
    assert asyncio.run(smol.machine_ls()) == []
    assert "claude-bottle-vm-tester" not in sh("docker", "compose", "ls", "--all").stdout


def test_bringup_where_vms_cannot_boot_fails_at_the_pack_and_leaves_nothing_running(
    probed: tuple[Smolvm, ProbeResult], built_images: dict[str, str], tmp_path: Path
) -> None:
    """Past preflight (called directly): the bundle comes up on a bridge the host routes to, the
    agent image is handed to `smolvm pack create`, whose pack VM cannot boot here; bring-up says
    so and takes the bundle down."""
    smol, result = probed
    if result.ok:
        pytest.skip("microVMs boot on this host: the end-to-end test covers bring-up")
    home = _vm_home(tmp_path / "home")
    manifests_plan = plan_for(home, "vm-tester")
    plan = dataclasses.replace(manifests_plan, images=built_images)
    seen: dict[str, str] = {}

    def progress(message: str) -> None:
        if "packing" in message:
            # The bundle is up at this point: running, with an address the host routes to a local bridge.
            seen["state"] = sh(
                "docker", "inspect", "--format", "{{.State.Running}}", f"{plan.project}-sidecars"
            ).stdout.strip()
            address = plan.state.bringup_log.read_text().split("bundle ready at ")[-1].split()[0]
            seen["route"] = sh("ip", "route", "get", address).stdout

    with pytest.raises(BottleError) as err:
        asyncio.run(lifecycle.start(smol, plan, progress))
    assert seen["state"] == "true" and " dev br-" in seen["route"]
    assert f"bringing up {plan.slug} failed" in str(err.value) and str(plan.state.bringup_log) in str(err.value)
    assert "\n" not in str(err.value)
    assert sh("docker", "ps", "-aq", "--filter", f"label=dev.bottle-tui.slug={plan.slug}").stdout.strip() == ""
    assert asyncio.run(smol.machine_ls()) == []


@pytest.fixture(scope="module")
def vm_bottle(microvms: Smolvm, fresh_module_home: Path, fake_internet: str):
    out = cli(fresh_module_home, "start", "vm-tester", "--yes", "--detach", timeout=1800)
    b = Bottle(out.stdout.strip().splitlines()[-1], fresh_module_home)
    b.fake_ip = connect_fake_internet(b, fake_internet)
    yield b
    stop_bottle(b, fake_internet)


@pytest.fixture(scope="module")
def fresh_module_home(tmp_path_factory: pytest.TempPathFactory, built_images: dict[str, str], fake_pki: Path) -> Path:
    return _vm_home(tmp_path_factory.mktemp("vm-home"))


def _run(smol: Smolvm, slug: str, *argv: str, timeout: float = 30):
    return asyncio.run(smol.machine_exec(name=vm_name(slug), argv=list(argv), timeout=timeout, user="1000:1000"))


def test_microvm_bottle_end_to_end(microvms: Smolvm, vm_bottle: Bottle, tmp_path: Path) -> None:
    smol, slug = microvms, vm_bottle.slug
    listed = {b["slug"]: b for b in json.loads(cli(vm_bottle.home, "ls", "--json").stdout)}
    assert listed[slug]["backend"] == "smolvm" and listed[slug]["services_up"] == 2

    allowed = _run(smol, slug, *CURL, f"http://{ALLOWED}/hello")
    assert allowed.status == 0 and json.loads(allowed.stdout)["fake_internet"] is True
    blocked = _run(smol, slug, *CURL, "-o", "/dev/null", "-w", "%{http_code}", f"http://{BLOCKED}/")
    assert blocked.stdout.strip() == "403"
    # Around the bundle: the fake internet's own address is not on the VM's allow-list.
    direct = _run(smol, slug, *CURL, "--noproxy", "*", f"http://{vm_bottle.fake_ip}/")
    assert direct.status != 0
    # Timeouts return 124, not an error.
    assert _run(smol, slug, "sleep", "30", timeout=1).status == 124

    local = tmp_path / "in.txt"
    local.write_text("through machine cp\n")
    asyncio.run(smol.machine_cp(src=str(local), dst=machine_path(vm_name(slug), "/tmp/in.txt")))
    assert _run(smol, slug, "cat", "/tmp/in.txt").stdout == "through machine cp\n"
    asyncio.run(smol.machine_cp(src=machine_path(vm_name(slug), "/tmp/in.txt"), dst=str(tmp_path / "out.txt")))
    assert (tmp_path / "out.txt").read_text() == "through machine cp\n"

    cli(vm_bottle.home, "stop", slug)
    assert vm_name(slug) not in [m.name for m in asyncio.run(smol.machine_ls())]
    assert vm_bottle.project not in sh("docker", "compose", "ls", "--all").stdout
    assert not vm_bottle.state.exists()
