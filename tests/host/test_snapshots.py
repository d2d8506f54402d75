"""Snapshots without an engine: names, the record and its folder (state.py's layout), the one-line
answers to bad input, a fork's plan, what a microVM bottle says, and the throwaway containers that
read and fill a work volume (no network, no capabilities beyond reading)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bottle_tui import ops, snapshots
from bottle_tui.backends.docker import snapshot as docker_snapshot
from bottle_tui.backends.docker.compose import render_compose
from bottle_tui.backends.docker.engine import BottleInfo
from bottle_tui.backends.smolvm.backend import SmolvmBackend
from bottle_tui.cli import build_parser
from bottle_tui.errors import BottleError
from bottle_tui.state import snapshot_dir, snapshot_root
from tests.support.manifests import BOTTLE, write_home
from tests.support.snapshots import write_snapshot


@pytest.mark.parametrize("name", ["a", "coder-abc123-20261204-011111", "v1.2_x", "0" * 63])
def test_names_the_engine_and_a_folder_both_take(name: str) -> None:
    assert snapshots.check_name(name) == name
    assert snapshots.image_ref(name) == f"bottle-tui/snapshot:{name}"


@pytest.mark.parametrize("name", ["", "Upper", "-dash", ".dot", "a/b", "a b", "0" * 64, "ä"])
def test_other_names_get_one_line(name: str) -> None:
    with pytest.raises(BottleError) as err:
        snapshots.check_name(name)
    assert str(err.value) == (
        f"--name {name!r}: a snapshot name is 1-63 characters of a-z, 0-9, '.', '_' and '-', "
        "starting with a letter or digit"
    )


def test_the_default_name_is_the_slug_and_the_time() -> None:
    when = datetime(2026, 12, 4, 1, 2, 3, tzinfo=UTC)
    assert snapshots.default_name("coder-abc123", when) == "coder-abc123-20261204-010203"


def test_records_round_trip_and_listing_skips_what_is_not_a_snapshot(tmp_path: Path) -> None:
    home = tmp_path / "home"
    late = write_snapshot(home, "late", created_at="2026-12-02T00:00:00+00:00")
    early = write_snapshot(home, "early", created_at="2026-12-01T00:00:00+00:00")
    (snapshot_root(home) / "junk").mkdir()  # no record
    (snapshot_root(home) / ".half.partial").mkdir()  # one being written
    renamed = snapshot_root(home) / "renamed"  # a record that names another folder
    renamed.mkdir()
    (renamed / "snapshot.json").write_text((late.path / "snapshot.json").read_text())
    assert snapshots.listing(home) == [early, late]
    assert snapshots.find(home, "late") == late


def test_unknown_and_taken_names_get_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with pytest.raises(BottleError) as err:
        snapshots.find(home, "nope")
    assert str(err.value) == f"no snapshot 'nope' in {home / 'snapshots'}; `bottle-tui snapshot SLUG` takes one"
    write_snapshot(home, "one")
    with pytest.raises(BottleError) as err:
        snapshots.find(home, "nope")
    assert str(err.value) == f"no snapshot 'nope' in {home / 'snapshots'}; there are: one"
    with pytest.raises(BottleError) as err:
        snapshots.check_free(home, "one")
    assert str(err.value) == (
        "snapshot 'one' exists (taken 2026-12-01T10:00:00+00:00 of coder-abc123): pick another --name, "
        "or `bottle-tui snapshots rm one` first"
    )
    assert snapshots.check_free(home, "two").path == home / "snapshots" / "two"
    with pytest.raises(BottleError, match="is not a snapshot name"):
        snapshot_dir(home, "../state")


def test_a_fork_plan_runs_the_snapshots_image_and_says_where_it_comes_from(tmp_path: Path) -> None:
    home = write_home(tmp_path / "home")
    snap = write_snapshot(home, "base")
    plan = ops.plan(home, "coder", from_snapshot="base")
    assert plan.snapshot == snap and plan.slug != snap.of
    assert plan.images["agent"] == "bottle-tui/snapshot:base"
    assert render_compose(plan, host_uid=1, host_gid=1)["services"]["agent"]["image"] == "bottle-tui/snapshot:base"
    text = ops.describe(plan)
    assert (
        "from       snapshot base of coder-abc123 (2026-12-01T10:00:00+00:00): its filesystem, checkout and "
        "~/.claude, and the policy in force then (a new CA, its own credentials)"
    ) in text.splitlines()
    assert not any(line.startswith("from ") for line in ops.describe(ops.plan(home, "coder")).splitlines())
    write_snapshot(home, "other", agent="reviewer")
    with pytest.raises(BottleError) as err:
        ops.plan(home, "coder", from_snapshot="other")
    assert str(err.value) == (
        "snapshot other is of agent reviewer, not coder: `bottle-tui start reviewer --from other`"
    )


def test_a_microvm_bottle_says_it_cannot(tmp_path: Path) -> None:
    home = write_home(tmp_path / "home", BOTTLE.replace("description: a bottle for the tests", "backend: smolvm"))
    write_snapshot(home, "base")
    plan = ops.plan(home, "coder", from_snapshot="base")
    with pytest.raises(BottleError) as err:
        asyncio.run(ops.preflight(dataclasses.replace(plan, bottle=dataclasses.replace(plan.bottle, git=None)), print))
    assert str(err.value) == (
        f"{plan.bottle.path}: backend: smolvm cannot start from snapshot base: snapshots need a docker bottle: "
        "a microVM's disk is not on the engine, so it cannot be committed"
    )
    info = BottleInfo("coder-abc123", "claude-bottle-coder-abc123", "coder", "web", "smolvm", "", str(home), "")
    said: list[str] = []
    with pytest.raises(BottleError) as err:
        asyncio.run(SmolvmBackend().snapshot(home, info, snapshot_dir(home, "x"), said.append))
    assert str(err.value) == (
        "coder-abc123 is a microVM bottle: snapshots need a docker bottle: a microVM's disk is not on the engine, "
        "so it cannot be committed"
    )
    assert said == []  # refused before saying it starts


def test_the_image_loses_every_label_of_the_agent_container() -> None:
    changes = docker_snapshot._blanked(
        {"com.docker.compose.project": "claude-bottle-x", "dev.bottle-tui.managed": "true"}
    )
    assert changes == ['LABEL "com.docker.compose.project"=""', 'LABEL "dev.bottle-tui.managed"=""']


def test_the_volume_is_read_and_filled_by_containers_with_no_way_out() -> None:
    read = docker_snapshot.tar_home_argv("bottle-tui-work-x", "img")
    fill = docker_snapshot.untar_home_argv("bottle-tui-work-y", "bottle-tui/snapshot:s")
    for argv in (read, fill):
        assert argv[argv.index("--network") + 1] == "none"
        assert argv[argv.index("--cap-drop") + 1] == "ALL"
        assert "no-new-privileges:true" in argv
    assert read[read.index("--mount") + 1] == "type=volume,source=bottle-tui-work-x,target=/home/agent,readonly"
    assert read[read.index("--cap-add") + 1] == "DAC_READ_SEARCH"  # reads every file, writes nothing
    assert "--cap-add" not in fill and fill[fill.index("--user") + 1] == "1000:1000"
    assert "--no-same-owner" in fill and fill[fill.index("--entrypoint") + 2] == "bottle-tui/snapshot:s"


def test_the_cli_takes_the_snapshot_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["start", "coder", "--from", "base"])
    assert args.from_snapshot == "base"
    args = parser.parse_args(["snapshot", "coder-abc123", "--name", "x"])
    assert (args.command, args.slug, args.name) == ("snapshot", "coder-abc123", "x")
    assert parser.parse_args(["snapshots", "ls", "--json"]).json
    assert parser.parse_args(["snapshots", "rm", "x"]).name == "x"


def test_cleanup_takes_a_snapshot_image_only_when_its_folder_no_longer_names_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    snap = write_snapshot(home, "kept")
    assert docker_snapshot.folder_holds(str(home), "kept", snap.image)
    assert not docker_snapshot.folder_holds(str(home), "kept", "bottle-tui/snapshot:other")  # a name reused
    assert not docker_snapshot.folder_holds(str(home), "gone", snapshots.image_ref("gone"))
    assert not docker_snapshot.folder_holds("", "kept", snap.image)  # an image without a home label
    assert not docker_snapshot.folder_holds(str(home), "../x", "bottle-tui/snapshot:x")
