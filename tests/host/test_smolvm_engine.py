"""The smolvm backend's pure parts: version range, timeouts with units, discovery's join of
machines with bundles and state folders, cleanup's choice of machines, the probe's cache, and
finding the CLI. The real CLI's behaviour is pinned by tests/integration/test_smolvm_contract.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bottle_tui.backends.docker.engine import BottleInfo
from bottle_tui.backends.smolvm import install, probe
from bottle_tui.backends.smolvm.engine import Machine, check_version, duration, parse_ls, parse_version
from bottle_tui.backends.smolvm.lifecycle import cleanup_targets, join
from bottle_tui.errors import BottleError
from bottle_tui.state import StateDir


def test_supported_versions() -> None:
    check_version((1, 8, 0))
    check_version((1, 32, 2))


@pytest.mark.parametrize(
    "found, words",
    [
        ((1, 7, 9), ["smolvm 1.7.9 is too old", ">= 1.8.0"]),
        ((1, 1, 0), ["smolvm 1.1.0 is too old", ">= 1.8.0"]),
        ((2, 0, 0), ["smolvm 2.0.0 is newer", "< 2.0.0"]),
    ],
)
def test_unsupported_versions_name_found_and_needed(found: tuple[int, int, int], words: list[str]) -> None:
    with pytest.raises(BottleError) as err:
        check_version(found)
    for word in words:
        assert word in str(err.value)
    assert "\n" not in str(err.value)


def test_version_parsing() -> None:
    assert parse_version("smolvm 1.32.2\n") == (1, 32, 2)
    with pytest.raises(BottleError, match="names no version"):
        parse_version("smolvm dev")


@pytest.mark.parametrize("seconds, text", [(30, "30s"), (1, "1s"), (0.5, "500ms"), (2.25, "2250ms")])
def test_timeouts_carry_a_unit(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ls_json_bad_output_is_one_line() -> None:
    with pytest.raises(BottleError, match="not JSON"):
        parse_ls("Error: nope")
    with pytest.raises(BottleError, match="JSON array"):
        parse_ls('{"name": "x"}')


LABELS = {
    "dev.bottle-tui.managed": "true",
    "dev.bottle-tui.agent": "coder",
    "dev.bottle-tui.bottle": "vm",
    "dev.bottle-tui.started-at": "2026-11-27T08:00:00+00:00",
}


def _vm(slug: str, state: str = "running", home: str = "/h", **extra: str) -> Machine:
    return Machine(
        name=f"claude-bottle-{slug}",
        state=state,
        labels={**LABELS, "dev.bottle-tui.slug": slug, "dev.bottle-tui.home": home, **extra},
    )


def _bundle(slug: str, backend: str = "smolvm", state: str = "running") -> BottleInfo:
    return BottleInfo(
        slug=slug,
        project=f"claude-bottle-{slug}",
        agent="coder",
        bottle="vm",
        backend=backend,
        started_at="2026-11-27T08:00:00+00:00",
        home="/h",
        status="running(1)",
        services={"sidecars": state},
    )


def test_join_pairs_machines_with_their_bundles() -> None:
    found = join([_bundle("coder-1"), _bundle("other-2", backend="docker")], [_vm("coder-1")])
    assert [b.slug for b in found] == ["coder-1"]
    assert found[0].backend == "smolvm" and found[0].services == {"agent": "running", "sidecars": "running"}
    assert found[0].services_up == 2


def test_join_shows_half_dead_bottles() -> None:
    found = {b.slug: b for b in join([_bundle("lost-vm")], [_vm("lost-bundle", state="stopped")])}
    assert found["lost-vm"].services == {"agent": "missing", "sidecars": "running"}
    assert found["lost-bundle"].services == {"agent": "stopped", "sidecars": "missing"}
    assert found["lost-bundle"].agent == "coder" and found["lost-bundle"].home == "/h"


def test_join_without_a_machine_listing_says_unknown_not_missing() -> None:
    (found,) = join([_bundle("coder-1")], None)
    assert found.services == {"agent": "unknown", "sidecars": "running"}


def test_join_trusts_only_our_names_and_labels() -> None:
    strangers = [
        Machine(name="claude-bottle-probe-abc123", state="stopped"),  # the probe: no labels
        Machine(name="someones-vm", state="running", labels={**LABELS, "dev.bottle-tui.slug": "someones-vm"}),
        Machine(name="claude-bottle-x-1", state="running", labels={**LABELS, "dev.bottle-tui.slug": "y-2"}),
    ]
    assert join([], strangers) == []


def test_join_reads_what_labels_lack_from_the_state_folder(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state" / "coder-9")
    state.create()
    state.write_metadata({"agent": "from-metadata", "bottle": "vm", "started_at": "2026-11-27T09:00:00+00:00"})
    vm = Machine(
        name="claude-bottle-coder-9",
        state="running",
        labels={
            "dev.bottle-tui.managed": "true",
            "dev.bottle-tui.slug": "coder-9",
            "dev.bottle-tui.home": str(tmp_path),
        },
    )
    (found,) = join([], [vm])
    assert found.agent == "from-metadata" and found.started_at == "2026-11-27T09:00:00+00:00"


MACHINES = [
    _vm("mine-1", home="/h"),
    _vm("theirs-1", home="/runs/t1/home"),
    Machine(name="claude-bottle-probe-abc123", state="stopped"),
    Machine(name="not-ours", state="running"),
]


def test_cleanup_takes_this_homes_machines_by_default() -> None:
    assert cleanup_targets(MACHINES, Path("/h")) == [("claude-bottle-mine-1", "/h")]


def test_cleanup_scope_widens_like_dockers() -> None:
    # Unlabelled machines (a leftover probe) only with --all-homes, as for docker's unlabelled leftovers.
    assert [n for n, _ in cleanup_targets(MACHINES, Path("/h"), all_homes=True)] == [
        "claude-bottle-mine-1",
        "claude-bottle-probe-abc123",
        "claude-bottle-theirs-1",
    ]
    assert cleanup_targets(MACHINES, Path("/h"), homes_under=Path("/runs")) == [
        ("claude-bottle-theirs-1", "/runs/t1/home")
    ]
    assert cleanup_targets(MACHINES, Path("/h"), homes_under=Path("/run")) == []


def test_probe_cache_is_per_host_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "probe.json"
    monkeypatch.setenv(probe.CACHE_ENV, str(cache))
    assert probe.cached_probe() is None
    doc = {
        "ok": False,
        "reason": "KVM_EXIT_INTERNAL_ERROR",
        "host": probe.host_key(),
        "smolvm": "1.32.2",
        "checked_at": "t",
    }
    cache.write_text(json.dumps(doc))
    assert probe.cached_probe("1.32.2").summary == "microVMs cannot boot on this host: KVM_EXIT_INTERNAL_ERROR"
    assert probe.cached_probe() is not None
    assert probe.cached_probe("1.33.0") is None
    cache.write_text(json.dumps({**doc, "host": "another-host Linux 1.0"}))
    assert probe.cached_probe() is None
    cache.write_text("{not json")
    assert probe.cached_probe() is None


def test_probe_reason_is_one_short_line() -> None:
    raw = (
        "agent operation failed: start machine: agent operation failed: monitor agent: "
        "[2026-11-27T07:46:33.920852Z ERROR krun_vmm::linux::vstate] Received KVM_EXIT_INTERNAL_ERROR signal\n(boot process exited)"
    )
    line = probe.one_line(raw)
    assert "\n" not in line and "[2026" not in line and "KVM_EXIT_INTERNAL_ERROR" in line
    assert len(probe.one_line("x" * 1000)) == 238


def test_missing_cli_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(install.BINARY_ENV, raising=False)
    monkeypatch.setattr(install, "wheel_dir", lambda: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BottleError) as err:
        install.find_smolvm()
    assert "smolmachines==1.32.2" in str(err.value) and "\n" not in str(err.value)


def test_explicit_binary_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(install.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(BottleError, match="not an executable smolvm"):
        install.find_smolvm()


def test_wheel_binary_gets_its_smolvm_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "smol-vmm").write_bytes(b"\x7fELF")
    monkeypatch.delenv(install.BINARY_ENV, raising=False)
    monkeypatch.setattr(install, "wheel_dir", lambda: tmp_path)
    found = install.find_smolvm()
    assert found == tmp_path / "smolvm" and os.path.samefile(found, tmp_path / "smol-vmm")
    assert install.find_smolvm() == found  # a second call keeps the link
