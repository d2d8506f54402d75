"""Warm bottles without an engine: `pool:` in a bottle file and config.yaml, what a member is made
with (no agent identity), which member a claim may take (manifest digest, credential MAC), how
discovery tells a claimed member's slug, and supervise's slug after a claim."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import signal
import ssl
import time
from pathlib import Path

import pytest

from bottle_tui import ops
from bottle_tui.backends.docker import labels, lifecycle
from bottle_tui.backends.docker import pool as docker_pool
from bottle_tui.backends.docker.compose import render_compose
from bottle_tui.backends.docker.engine import claimed_slug, project_of
from bottle_tui.backends.docker.workspace import volume_of
from bottle_tui.cli import main
from bottle_tui.config import load_config
from bottle_tui.errors import BottleError
from bottle_tui.manifest import parse_bottle
from bottle_tui.state import StateDir, pool_root
from tests.support.egress import start_mitmdump, stop_mitmdump
from tests.support.manifests import plan_of
from tests.support.manifests import write_home as write_manifests
from tests.support.sidecars import supervise_module

POOLED = """---
egress:
  routes:
    - host: api.example.com
      auth: {scheme: bearer, token_env: EXAMPLE_KEY}
pool: {size: 2}
---
"""


def bottle(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_bottle(tmp_path / "bottles" / "web.md", text)


# -- pool: in the manifest and config.yaml -----------------------------------------------------------


def test_pool_size_is_read_and_bounded(tmp_path: Path) -> None:
    assert bottle(POOLED, tmp_path).pool == 2
    assert bottle("---\negress: {routes: []}\n---\n", tmp_path).pool is None
    with pytest.raises(BottleError, match=r"web\.md: pool\.size: 9 is out of range; it must be between 0 and 8"):
        bottle("---\npool: {size: 9}\n---\n", tmp_path)
    with pytest.raises(BottleError, match=r"pool\.sise: unknown key 'sise'; did you mean 'size'"):
        bottle("---\npool: {sise: 1}\n---\n", tmp_path)


def test_pool_is_refused_for_git_and_other_backends_in_one_line(tmp_path: Path) -> None:
    git = "---\ngit: {upstream: 'https://git.example.com/r.git'}\npool: {size: 1}\n---\n"
    with pytest.raises(BottleError, match=r"web\.md: pool\.size: a bottle with git: cannot be pooled") as exc:
        bottle(git, tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(BottleError, match=r"pool\.size: only docker bottles can be pooled, not smolvm"):
        bottle("---\nbackend: smolvm\npool: {size: 1}\n---\n", tmp_path)
    # size 0 is no pool: allowed anywhere
    assert bottle("---\nbackend: smolvm\npool: {size: 0}\n---\n", tmp_path).pool == 0


def test_config_pool_is_the_default_of_docker_bottles_without_git(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("pool: {size: 3}\n")
    config = load_config(tmp_path)
    assert config.pool_size == 3
    plain = dataclasses.replace(plan_of("---\negress: {routes: []}\n---\n"), config=config)
    assert plain.pool_size == 3
    assert dataclasses.replace(plan_of(), config=config).pool_size == 0  # the shared bottle has git
    own = dataclasses.replace(plan_of("---\npool: {size: 1}\n---\n"), config=config)
    assert own.pool_size == 1  # the bottle's own wins
    (tmp_path / "config.yaml").write_text("pool: {size: -1}\n")
    with pytest.raises(BottleError, match=r"config\.yaml: pool\.size: expected a whole number from 0 to 8, got -1"):
        load_config(tmp_path)


def test_pool_fill_names_the_bottle_without_a_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = write_manifests(tmp_path / "home")
    assert main(["--home", str(home), "pool", "fill", "web"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bottle-tui: error: bottle web keeps no warm bottles: add `pool: {size: 2}` to ")
    assert "\n" not in err
    with pytest.raises(BottleError, match="no bottle named 'nope'"):
        ops.pool.pool_plan(home, "nope")


def test_the_plan_says_a_start_may_claim_a_warm_bottle() -> None:
    text = ops.describe(plan_of(POOLED))
    assert "pool       2 warm bottle(s) of web kept: start claims a ready one" in text
    assert "pool  " not in ops.describe(plan_of("---\negress: {routes: []}\n---\n"))


# -- what a member is made with ----------------------------------------------------------------------


def test_a_member_carries_no_agent_identity() -> None:
    plan = docker_pool.member_plan(dataclasses.replace(plan_of(POOLED), pooled=True), "pool-web-abcdef")
    spec = render_compose(plan, host_uid=1000, host_gid=1000)
    agent = spec["services"]["agent"]
    assert "BOTTLE_SLUG" not in agent["environment"] and "BOTTLE_AGENT" not in agent["environment"]
    assert agent["hostname"] == "web"
    assert agent["labels"][labels.AGENT] == "" and agent["labels"][labels.POOL] == "web"
    assert agent["labels"][labels.SLUG] == "pool-web-abcdef"
    assert plan.state.path == pool_root(plan.home) / "pool-web-abcdef"
    # a bottle started cold keeps its identity in its environment, and carries no pool label
    cold = render_compose(plan_of(POOLED), host_uid=1000, host_gid=1000)["services"]["agent"]
    assert cold["environment"]["BOTTLE_SLUG"] == "coder-0a1b2c" and labels.POOL not in cold["labels"]


def _member(plan, environ: dict[str, str], digest: str) -> docker_pool.Member:  # type: ignore[no-untyped-def]
    salt = b"s" * 16
    return docker_pool.Member(
        name="pool-web-abcdef",
        bottle=plan.bottle.name,
        made_at="2026-12-06T00:00:00+00:00",
        digest=digest,
        credentials=docker_pool.credentials_mac(plan, environ, salt),
        salt=salt.hex(),
        containers={"agent": "a", "sidecars": "s"},
    )


def test_a_claim_takes_only_a_member_of_the_same_manifest_and_credentials(tmp_path: Path) -> None:
    path = tmp_path / "web.md"
    path.write_text(POOLED)
    plan = dataclasses.replace(plan_of(POOLED), bottle=parse_bottle(path, POOLED))
    digest = docker_pool.manifest_digest(plan, b"ca")
    member = _member(plan, {"EXAMPLE_KEY": "key-one-123456"}, digest)
    assert member.fits(digest, plan, {"EXAMPLE_KEY": "key-one-123456", "OTHER": "x"})
    assert not member.fits(digest, plan, {"EXAMPLE_KEY": "key-two-123456"})
    assert not member.fits(digest, plan, {})
    # the credential values are never written: only a keyed hash of them
    assert "key-one" not in json.dumps(dataclasses.asdict(member))
    # the slug is not part of it: every claim has another
    assert docker_pool.manifest_digest(dataclasses.replace(plan, slug="coder-ffffff"), b"ca") == digest
    # another manifest, other images, other upstream trust: another digest
    assert docker_pool.manifest_digest(plan, b"other ca") != digest
    other_images = dataclasses.replace(plan, images={**plan.images, "sidecars": "bottle-tui/sidecars:ccc"})
    assert docker_pool.manifest_digest(other_images, b"ca") != digest
    path.write_text(POOLED.replace("api.example.com", "api2.example.com"))
    changed = dataclasses.replace(plan, bottle=parse_bottle(path, path.read_text()))
    assert not member.fits(docker_pool.manifest_digest(changed, b"ca"), changed, {"EXAMPLE_KEY": "key-one-123456"})


def test_only_finished_members_are_listed_ready(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = dataclasses.replace(plan_of(POOLED), home=home)
    made = pool_root(home) / "pool-web-abcdef"
    made.mkdir(parents=True)
    (pool_root(home) / "pool-web-123456").mkdir()  # being made: no pool.json yet
    member = _member(plan, {}, "d")
    doc = {"format": docker_pool.FORMAT, **dataclasses.asdict(member), "member": member.name}
    del doc["name"]
    (made / docker_pool.RECORD).write_text(json.dumps(doc))
    assert docker_pool.ready_members(home) == [member]
    (made / docker_pool.RECORD).write_text(json.dumps({**doc, "member": "pool-web-999999"}))
    assert docker_pool.ready_members(home) == []  # a record of another folder is no member
    # a claimed member is a bottle: its record says so, and its old name is only a link to it
    claimed = home / "state" / "coder-0a1b2c"
    claimed.mkdir(parents=True)
    (claimed / docker_pool.RECORD).write_text(json.dumps({**doc, "claimed_by": "coder-0a1b2c"}))
    (made / docker_pool.RECORD).unlink()
    made.rmdir()
    made.symlink_to(claimed)
    assert docker_pool.read_member(made) is None
    assert docker_pool.ready_members(home) == [] and docker_pool.member_folders(home) == [
        pool_root(home) / "pool-web-123456"
    ]


# -- a claimed member's names -----------------------------------------------------------------------


def test_discovery_reads_a_claimed_members_slug_from_its_container_names() -> None:
    project = "claude-bottle-pool-web-abcdef"
    assert claimed_slug(project, "agent", f"{project}-agent") is None
    assert claimed_slug(project, "agent", "claude-bottle-coder-0a1b2c-agent") == "coder-0a1b2c"
    assert claimed_slug(project, "sidecars", "claude-bottle-coder-0a1b2c-sidecars") == "coder-0a1b2c"
    assert claimed_slug(project, "agent", "someone-else") is None


def test_a_claimed_bottle_keeps_its_members_project_and_volume(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state" / "coder-0a1b2c")
    assert (project_of(state), volume_of(state)) == ("claude-bottle-coder-0a1b2c", "bottle-tui-work-coder-0a1b2c")
    state.create()
    state.write_metadata({"project": "claude-bottle-pool-web-abcdef", "volume": "bottle-tui-work-pool-web-abcdef"})
    assert (project_of(state), volume_of(state)) == ("claude-bottle-pool-web-abcdef", "bottle-tui-work-pool-web-abcdef")
    state.write_metadata({"project": "not ours", "volume": "nor this"})
    assert (project_of(state), volume_of(state)) == ("claude-bottle-coder-0a1b2c", "bottle-tui-work-coder-0a1b2c")


def test_exec_in_a_claimed_bottle_passes_its_identity(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = StateDir(home / "state" / "coder-0a1b2c")
    state.create()
    state.write_metadata({"agent": "coder", "pool_member": "pool-web-abcdef"})
    argv = ops.attach_argv(home, "coder-0a1b2c", "docker", term="xterm")
    assert ["-e", "BOTTLE_SLUG=coder-0a1b2c"] == argv[argv.index("BOTTLE_SLUG=coder-0a1b2c") - 1 :][:2]
    assert "BOTTLE_AGENT=coder" in argv
    state.write_metadata({"agent": "coder"})  # started cold: its container has them already
    assert not any(a.startswith("BOTTLE_SLUG=") for a in ops.attach_argv(home, "coder-0a1b2c", "docker"))


def test_supervise_takes_the_slug_a_claim_wrote(tmp_path: Path) -> None:
    inbox = supervise_module("inbox")
    state = StateDir(tmp_path / "pool" / "pool-web-abcdef")
    state.create()
    queue = inbox.Queue(str(state.supervise), "pool-web-abcdef")
    assert queue.slug == "pool-web-abcdef"
    (state.supervise / "slug").write_text("coder-0a1b2c\n")
    proposal = queue.request("egress-route", {"host": "a.example.com"}, "to read the docs")
    assert proposal["slug"] == "coder-0a1b2c"


_signing_with = docker_pool._signing_with


def test_egress_signs_with_the_ca_a_claim_writes(tmp_path: Path) -> None:
    """A claim replaces the member's CA and sends SIGHUP: the real mitmdump then signs with the new
    one, and its ready file says which (what the claim waits for)."""
    state = StateDir(tmp_path / "pool-web-abcdef")
    state.create()
    (state.egress / "routes.yaml").write_text(
        "version: 1\nbottle: web\ndlp: {body: true, disabled_rules: [], max_body_bytes: 8388608}\nroutes: []\n"
    )
    asyncio.run(lifecycle.make_egress_ca(state, "pool-web-abcdef"))

    def fingerprint() -> str:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert((state.ca / "egress-ca.pem").read_text())).hexdigest()

    member_ca = fingerprint()
    proc, _ = start_mitmdump(state.egress, {})
    try:
        assert _signing_with(state.egress_ready) == member_ca
        asyncio.run(lifecycle.make_egress_ca(state, "coder-0a1b2c"))
        claimed_ca = fingerprint()
        assert claimed_ca != member_ca
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while _signing_with(state.egress_ready) != claimed_ca:
            assert proc.poll() is None and time.monotonic() < deadline, (state.egress / "mitmdump.log").read_text()
            time.sleep(0.05)
    finally:
        stop_mitmdump(proc)
