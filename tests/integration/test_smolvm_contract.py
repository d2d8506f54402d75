"""Contract tests on the real smolvm CLI from the pinned smolmachines wheel: what the wrapper
assumes about flags, `ls --json`, exit codes and error documents. Nothing here boots a VM (that
is test_smolvm_launch.py), so these run on every host, CI included, in an isolated state folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bottle_tui.backends.smolvm import vm_lifecycle as lifecycle
from bottle_tui.backends.smolvm.install import find_smolvm
from bottle_tui.backends.smolvm.render import create_flags, machine_labels, render_smolfile, vm_name
from bottle_tui.backends.smolvm.smolvm_cli import (
    ConfigError,
    MachineNotFound,
    Smolvm,
    SmolvmError,
    UsageError,
    check_version,
    create_args,
)
from bottle_tui.errors import BottleError
from bottle_tui.manifest import Manifests, parse_agent, parse_bottle
from bottle_tui.plan import BottlePlan, resolve
from bottle_tui.state import StateDir
from tests.support.manifests import AGENT, BOTTLE

PINNED = (1, 32, 2)
BUNDLE_IP = "172.31.250.2"  # only written into a machine's allow-list here; nothing connects to it


@pytest.fixture
def smol(tmp_path: Path) -> Smolvm:
    # Fails, not skips, without the wheel: it is a test dependency (make venv installs it).
    return Smolvm(find_smolvm(), state_dir=tmp_path / "smolvm-state")


@pytest.fixture
def plan(tmp_path: Path) -> BottlePlan:
    home = tmp_path / "home"
    agent = parse_agent(home / "agents" / "coder.md", AGENT)
    bottle = dataclasses.replace(parse_bottle(home / "bottles" / "web.md", BOTTLE), backend="smolvm")
    manifests = Manifests(home=home, agents={"coder": agent}, bottles={"web": bottle}, agents_from_defaults=False)
    state = StateDir(home / "state" / "coder-c0ffee")
    state.create()
    return resolve(
        manifests,
        "coder",
        slug="coder-c0ffee",
        images={"agent": "bottle-tui/agent:x", "sidecars": "bottle-tui/sidecars:y"},
        started_at="2026-11-27T08:00:00+00:00",
        state=state,
    )


async def _names(smol: Smolvm) -> list[str]:
    return sorted(m.name for m in await smol.machine_ls())


async def test_pinned_version_is_supported(smol: Smolvm) -> None:
    found = await smol.version()
    assert found == PINNED
    check_version(found)


async def test_rendered_smolfile_and_flags_are_accepted_and_listed(smol: Smolvm, plan: BottlePlan) -> None:
    smolfile = plan.state.path / "Smolfile"
    smolfile.write_text(render_smolfile(plan))
    name = vm_name(plan.slug)
    # With a Smolfile instead of --from (no pack can be built without booting a VM): every key of
    # the pack-time Smolfile and every create-time flag is one this smolvm takes.
    await smol.machine_create(
        name=name, flags=create_flags(plan, address=BUNDLE_IP), smolfile=smolfile, labels=machine_labels(plan)
    )
    (vm,) = await smol.machine_ls()
    assert (vm.name, vm.state, vm.cpus, vm.memory_mib, vm.network) == (name, "created", 2, 2048, True)
    assert vm.labels["dev.bottle-tui.slug"] == plan.slug and vm.labels["dev.bottle-tui.home"] == str(plan.home)
    assert vm.pid is None
    # Discovery sees it as a bottle (its bundle missing), from the real `ls --json`.
    (found,) = lifecycle.join([], await smol.machine_ls())
    assert (found.slug, found.agent, found.backend, found.services) == (
        plan.slug,
        "coder",
        "smolvm",
        {"agent": "created", "sidecars": "missing"},
    )


async def test_create_flags_parse_together_with_from(smol: Smolvm, plan: BottlePlan, tmp_path: Path) -> None:
    # No pack can be built here (packing boots a VM), so the pack is missing: smolvm gets past its
    # argument parser (a usage error would be exit 2) and stops at the file.
    missing = tmp_path / "agent.smolmachine"
    with pytest.raises(ConfigError) as err:
        await smol.machine_create(
            name=vm_name(plan.slug),
            flags=create_flags(plan, address=BUNDLE_IP),
            from_pack=missing,
            labels=machine_labels(plan),
        )
    assert err.value.returncode == 1 and f"file not found: {missing}" in err.value.detail


async def test_stop_then_delete_removes_the_machine(smol: Smolvm) -> None:
    await smol.machine_create(name="claude-bottle-t-1", flags=["--cpus", "1", "--mem", "256"])
    await smol.machine_stop(name="claude-bottle-t-1")  # not running: nothing to stop, not an error
    await smol.machine_delete(name="claude-bottle-t-1")
    assert await _names(smol) == []


async def test_delete_without_force_deletes_nothing(smol: Smolvm) -> None:
    # Why the wrapper always passes -f: with stdin closed, smolvm asks and does not delete.
    await smol.machine_create(name="claude-bottle-t-2", flags=["--cpus", "1", "--mem", "256"])
    with pytest.raises(SmolvmError):
        await smol._run("machine", "delete", "--name", "claude-bottle-t-2", timeout=60)
    assert await _names(smol) == ["claude-bottle-t-2"]


@pytest.mark.parametrize("call", ["start", "stop", "delete", "exec", "cp"])
async def test_missing_machine(smol: Smolvm, call: str, tmp_path: Path) -> None:
    calls = {
        "start": lambda: smol.machine_start(name="nosuch"),
        "stop": lambda: smol.machine_stop(name="nosuch"),
        "delete": lambda: smol.machine_delete(name="nosuch"),
        "exec": lambda: smol.machine_exec(name="nosuch", argv=["true"], timeout=5),
        "cp": lambda: smol.machine_cp(src="nosuch:/etc/hostname", dst=str(tmp_path / "h")),
    }
    with pytest.raises(MachineNotFound) as err:
        await calls[call]()
    assert err.value.code == "NOT_FOUND" and err.value.returncode == 1
    assert str(smol.binary) == err.value.argv[0] and "nosuch" in " ".join(err.value.argv)
    assert "vm not found: nosuch" in err.value.stderr
    assert "\n" not in str(err.value)


async def test_exec_on_a_machine_that_is_not_running_is_an_error_not_a_status(smol: Smolvm) -> None:
    await smol.machine_create(name="claude-bottle-t-3", flags=["--cpus", "1", "--mem", "256"])
    with pytest.raises(SmolvmError) as err:
        await smol.machine_exec(name="claude-bottle-t-3", argv=["true"], timeout=5)
    assert err.value.returncode == 1 and "not running" in err.value.detail


async def test_unknown_smolfile_key_is_a_config_error(smol: Smolvm, tmp_path: Path) -> None:
    bad = tmp_path / "Smolfile"
    bad.write_text('entrypoint = ["sleep", "infinity"]\nworkdir_typo = "/w"\n')
    with pytest.raises(ConfigError) as err:
        await smol.machine_create(name="claude-bottle-t-4", smolfile=bad)
    assert err.value.code == "CONFIG_ERROR" and "unknown field `workdir_typo`" in err.value.stderr
    assert await _names(smol) == []


async def test_usage_errors_exit_2(smol: Smolvm) -> None:
    # A positional machine name (the pre-1.1 style) is refused.
    with pytest.raises(UsageError) as err:
        await smol._run("machine", "create", "claude-bottle-t-5", timeout=60)
    assert err.value.returncode == 2 and "unexpected argument" in err.value.stderr
    # An exec timeout without a unit is refused (the wrapper always gives one).
    with pytest.raises(UsageError, match="time unit"):
        await smol._run("machine", "exec", "--name", "x", "--timeout", "30", "--", "true", timeout=60)


async def test_from_with_smolfile_is_refused_by_smolvm_and_never_sent(smol: Smolvm, tmp_path: Path) -> None:
    smolfile = tmp_path / "Smolfile"
    smolfile.write_text('entrypoint = ["sleep", "infinity"]\n')
    with pytest.raises(UsageError, match="cannot be used with"):
        await smol._run(
            "machine",
            "create",
            "--name",
            "claude-bottle-t-6",
            "--from",
            str(tmp_path / "a.smolmachine"),
            "--smolfile",
            str(smolfile),
            timeout=60,
        )
    with pytest.raises(BottleError, match="not both"):
        create_args(name="claude-bottle-t-6", from_pack=tmp_path / "a.smolmachine", smolfile=smolfile)


async def test_cleanup_removes_only_this_homes_prefixed_machines(smol: Smolvm, tmp_path: Path) -> None:
    home = tmp_path / "home"
    small = ["--cpus", "1", "--mem", "256"]
    await smol.machine_create(name="claude-bottle-mine-1", flags=small, labels={"dev.bottle-tui.home": str(home)})
    await smol.machine_create(
        name="claude-bottle-theirs-1", flags=small, labels={"dev.bottle-tui.home": str(tmp_path / "other")}
    )
    await smol.machine_create(name="claude-bottle-probe-0a0a0a", flags=small)
    await smol.machine_create(name="someone-elses", flags=small)
    plan = lifecycle.VmCleanup(lifecycle.cleanup_targets(await smol.machine_ls(), home))
    assert plan.describe().splitlines() == [f"microVM claude-bottle-mine-1 (home {home})"]
    assert await lifecycle.cleanup(smol, plan, lambda _m: None) == []
    assert await _names(smol) == ["claude-bottle-probe-0a0a0a", "claude-bottle-theirs-1", "someone-elses"]
    # --all-homes takes every prefixed machine, the unlabelled leftover probe included, never others.
    everything = lifecycle.VmCleanup(lifecycle.cleanup_targets(await smol.machine_ls(), home, all_homes=True))
    assert await lifecycle.cleanup(smol, everything, lambda _m: None) == []
    assert await _names(smol) == ["someone-elses"]
