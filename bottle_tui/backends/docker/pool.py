"""Warm docker bottles: per bottle manifest, a few bottles started ahead with no agent identity,
so that `start` claims one instead of bringing a bottle up.

A member lives in ``<home>/pool/<member>/`` (a state folder like any other, plus ``pool.json``)
while it waits. Its ``pool.json`` says which bottle it was made for, a digest of what it was made
from (the bottle file, its routes and metering, the images, the upstream trust) and a MAC of the
credentials its bundle holds, so a member made for an older manifest or other credentials is
never claimed. A claim renames the folder to ``state/<slug>/`` (the rename is the claim: two
claimers cannot both win it), renames the containers to the slug's names, and writes who it is:
metadata.json, metering.json and routes.yaml with the slug, supervise's slug file, and a new
egress CA of its own; egress reloads them on SIGHUP, and the claim waits until egress signs with
that CA. A claimed member is never pooled again: no claim ever sees another's files, processes,
CA or credentials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract import layout, workers
from bottle_contract.clock import now_iso
from bottle_contract.files import atomic_write, try_lock

from ...errors import BottleError
from ...plan import CA_CERT_NAME, BottlePlan
from ...runner import CommandError
from ...state import StateDir, pool_root, project_name, remove_tree, state_root
from .. import Progress
from . import engine, images, lifecycle, workspace
from .compose import render_metering, render_routes, to_yaml

RECORD = "pool.json"
FORMAT = 1
MEMBER_PREFIX = "pool-"
FILL_LOCK = ".fill.lock"
LOCK_POLL = 0.1  # how often a filler waiting its turn tries the lock again
# At most this many members come up at once (each is a compose up and three daemons starting).
FILL_PARALLEL = 2
# How long a claim waits for egress to take the claimed bottle's policy and metering.
RELOAD_TIMEOUT = 10.0


def new_member(bottle: str) -> str:
    return f"{MEMBER_PREFIX}{bottle}-{secrets.token_hex(3)}"


def manifest_digest(plan: BottlePlan, upstream_ca: bytes) -> str:
    """What a member was made from, as one hash: a claim for a plan with another digest (the bottle
    file, its routes or metering, the images or the upstream trust changed) does not take it."""
    metering = render_metering(plan)
    metering.pop("slug", None)
    doc = {
        "format": FORMAT,
        "bottle": plan.bottle.name,
        "bottle_file": hashlib.sha256(plan.bottle.path.read_bytes()).hexdigest(),
        "routes": render_routes(plan),
        "metering": metering,
        "images": dict(sorted(plan.images.items())),
        "upstream_ca": hashlib.sha256(upstream_ca).hexdigest(),
        "uid": [os.getuid(), os.getgid()],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def credentials_mac(plan: BottlePlan, environ: Mapping[str, str], salt: bytes) -> str:
    """A keyed hash of the credential values this plan's bundle gets from ``environ`` (none stored)."""
    values = {name: environ.get(name) for name in sorted(plan.secret_env_names)}
    return hmac.new(salt, json.dumps(values, sort_keys=True).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Member:
    """One warm bottle of a home's pool, as its folder records it."""

    name: str
    bottle: str
    made_at: str
    digest: str
    credentials: str
    salt: str
    containers: dict[str, str]

    @property
    def project(self) -> str:
        return project_name(self.name)

    def fits(self, digest: str, plan: BottlePlan, environ: Mapping[str, str]) -> bool:
        """Whether a claim for ``plan`` (with ``digest``) and ``environ``'s credentials may take it."""
        if self.bottle != plan.bottle.name or self.digest != digest:
            return False
        try:
            salt = bytes.fromhex(self.salt)
        except ValueError:
            return False
        return hmac.compare_digest(self.credentials, credentials_mac(plan, environ, salt))


def read_member(folder: Path) -> Member | None:
    """The member in ``folder``, or None when it is not ready (being made, or torn)."""
    try:
        doc = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("member") != folder.name:
        return None
    if "claimed_by" in doc:
        return None  # a bottle now, never a member again
    try:
        return Member(
            name=str(doc["member"]),
            bottle=str(doc["bottle"]),
            made_at=str(doc["made_at"]),
            digest=str(doc["digest"]),
            credentials=str(doc["credentials"]),
            salt=str(doc["salt"]),
            containers={str(k): str(v) for k, v in dict(doc["containers"]).items()},
        )
    except (KeyError, TypeError, ValueError):
        return None


def member_folders(home: Path) -> list[Path]:
    root = pool_root(home)
    if not root.is_dir():
        return []
    # A claimed member's name is a link to the bottle's state folder (see ``claim``): not a member.
    return sorted(p for p in root.iterdir() if p.name.startswith(MEMBER_PREFIX) and p.is_dir() and not p.is_symlink())


def ready_members(home: Path) -> list[Member]:
    """The home's members that are ready to be claimed, oldest first."""
    found = [m for m in (read_member(p) for p in member_folders(home)) if m is not None]
    return sorted(found, key=lambda m: (m.made_at, m.name))


@asynccontextmanager
async def fill_lock(home: Path) -> AsyncIterator[None]:
    """One filler (or drain) of a home's pool at a time; the next one waits its turn."""
    root = pool_root(home)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    while (fd := try_lock(root / FILL_LOCK)) is None:
        await asyncio.sleep(LOCK_POLL)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


def member_plan(template: BottlePlan, member: str) -> BottlePlan:
    """The plan a member is made with: ``template``'s bottle, images and config, no agent identity."""
    return dataclasses.replace(
        template, slug=member, state=StateDir(pool_root(template.home) / member), started_at=now_iso(), pooled=True
    )


async def make_member(template: BottlePlan, progress: Progress, environ: Mapping[str, str]) -> Member:
    """Bring one member up for ``template``'s bottle and record it as ready."""
    upstream_ca = images.upstream_ca_bundle()
    plan = member_plan(template, new_member(template.bottle.name))
    plan.state.create()
    lifecycle.append_log(plan.state.bringup_log, f"pool member {plan.slug} of bottle {plan.bottle.name}")
    try:
        await lifecycle.bring_up(plan, progress)
    except BaseException:
        remove_tree(plan.state.path)  # bring_up took the containers and the volume down
        raise
    try:
        out = await engine.inspect_ids([engine.container_name(plan.project, s) for s in ("agent", "sidecars")])
    except CommandError:
        await _remove(plan.slug, plan.state.path)
        raise
    salt = secrets.token_bytes(16)
    member = Member(
        name=plan.slug,
        bottle=plan.bottle.name,
        made_at=now_iso(),
        digest=manifest_digest(plan, upstream_ca),
        credentials=credentials_mac(plan, environ, salt),
        salt=salt.hex(),
        containers=dict(zip(("agent", "sidecars"), out, strict=True)),
    )
    doc = {"format": FORMAT, **dataclasses.asdict(member), "member": member.name}
    del doc["name"]
    # Written last: a member is claimable only once it is up.
    atomic_write(plan.state.path / RECORD, json.dumps(doc, indent=2) + "\n", mode=0o600)
    lifecycle.append_log(plan.state.bringup_log, "pool member ready")
    return member


async def _remove(member: str, folder: Path | None) -> list[str]:
    """Take a member down, its work volume and its folder with it (it never held an agent's work)."""
    problems: list[str] = []
    try:
        await engine.down(project_name(member))
    except CommandError as exc:
        problems.append(f"`docker compose down` of pool member {member} failed: {exc}")
    gone = await workspace.remove(workspace.volume_name(member))
    if gone is not None:
        problems.append(gone)
    if folder is not None and not problems:
        problems += remove_tree(folder)
    return problems


async def retire(home: Path, name: str) -> list[str]:
    """Take an unclaimed member out of the pool (its folder renamed aside first, the way a claim
    takes one, so a member a claimer won meanwhile is left alone) and remove it."""
    if not (pool_root(home) / name).is_dir():
        if _claimed(home, name):
            return []
        return await _remove(name, None)  # the engine holds it, its folder is gone
    aside = pool_root(home) / f".retired-{name}"
    try:
        os.rename(pool_root(home) / name, aside)
    except FileNotFoundError:
        return []  # claimed meanwhile: it is a bottle now
    return await _remove(name, aside)


def _drop_dead_links(home: Path) -> None:
    """Links of claimed members whose bottle is gone (a stop removes its own; this is for the rest)."""
    root = pool_root(home)
    for link in root.iterdir() if root.is_dir() else ():
        if link.is_symlink() and not link.exists():
            link.unlink(missing_ok=True)


def _claimed(home: Path, name: str) -> bool:
    """Whether a claim moved member ``name`` into the home's state folders (its pool.json moves with it)."""
    root = state_root(home)
    for folder in root.iterdir() if root.is_dir() else ():
        try:
            if json.loads((folder / RECORD).read_text()).get("member") == name:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


async def fill(template: BottlePlan, size: int, progress: Progress, environ: Mapping[str, str]) -> list[str]:
    """Keep ``size`` members ready for ``template``'s bottle: members that no claim could take any
    more (made for an older manifest, other credentials) go, missing ones are made. Returns the
    problems met, one line each."""
    problems: list[str] = []
    home, bottle = template.home, template.bottle.name
    async with fill_lock(home):
        _drop_dead_links(home)
        digest = manifest_digest(template, images.upstream_ca_bundle())
        up = {b.slug for b in await engine.pool_members() if b.services_up == len(b.services) == 2}
        keep: list[Member] = []
        for folder in member_folders(home):
            member = read_member(folder)
            if member is None:  # a filler that died while making it (this one holds the lock)
                progress(f"removing pool member {folder.name}: it was never finished")
                problems += await retire(home, folder.name)
            elif member.bottle != bottle:
                continue
            elif not member.fits(digest, template, environ):
                progress(f"removing pool member {member.name}: made for another manifest, images or credentials")
                problems += await retire(home, member.name)
            elif member.name not in up:
                progress(f"removing pool member {member.name}: its containers are not running")
                problems += await retire(home, member.name)
            else:
                keep.append(member)
        for extra in keep[size:]:
            progress(f"removing pool member {extra.name}: the pool of {bottle} holds {size}")
            problems += await retire(home, extra.name)
        missing = max(0, size - len(keep))
        if missing:
            progress(f"starting {missing} warm bottle(s) of {bottle}")
        gate = asyncio.Semaphore(FILL_PARALLEL)

        async def one() -> None:
            async with gate:
                try:
                    made = await make_member(template, progress, environ)
                    progress(f"pool member {made.name} is ready")
                except BottleError as exc:
                    problems.append(str(exc))

        await asyncio.gather(*(one() for _ in range(missing)))
    return problems


async def drain(home: Path, progress: Progress, bottle: str | None = None) -> list[str]:
    """Take down the home's unclaimed members (of ``bottle`` only, when given): those its pool folder
    holds, and those the engine has that carry this home's label. Returns the problems met."""
    problems: list[str] = []
    async with fill_lock(home):
        _drop_dead_links(home)
        folders = {p.name: p for p in member_folders(home)}
        on_engine = {
            b.slug for b in await engine.pool_members() if b.home and os.path.realpath(b.home) == os.path.realpath(home)
        }
        for name in sorted(set(folders) | on_engine):
            member = read_member(folders[name]) if name in folders else None
            if bottle is not None and (member.bottle if member else _bottle_of(name)) != bottle:
                continue
            progress(f"removing pool member {name}")
            problems += await retire(home, name)
    return problems


def _bottle_of(member: str) -> str:
    return member.removeprefix(MEMBER_PREFIX).rsplit("-", 1)[0]


async def claim(plan: BottlePlan, progress: Progress, environ: Mapping[str, str]) -> str | None:
    """Give ``plan`` (a new bottle: its slug's state folder does not exist yet) a ready member of
    its bottle, made for the same manifest and credentials; the member's name, or None when there
    is none (the caller starts the bottle cold). A member that fails its claim is taken down."""
    digest = manifest_digest(plan, images.upstream_ca_bundle())
    for member in ready_members(plan.home):
        if not member.fits(digest, plan, environ):
            continue
        folder = pool_root(plan.home) / member.name
        plan.state.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.rename(folder, plan.state.path)  # the claim: only one claimer's rename finds it
        except FileNotFoundError:
            continue
        # The containers' bind mounts name the member's folder: the engine re-resolves them (a
        # `docker cp`, a restart) and would make empty folders there. The name now leads to the
        # bottle's folder, until its stop removes both.
        try:
            os.symlink(os.path.relpath(plan.state.path, folder.parent), folder)
            await _give_identity(plan, member)
        except (BottleError, OSError) as exc:
            lifecycle.append_log(plan.state.bringup_log, f"claim failed: {exc}")
            progress(f"warning: pool member {member.name} could not be claimed ({exc}); trying another")
            await _remove(member.name, plan.state.path)
            if folder.is_symlink():
                folder.unlink()
            continue
        return member.name
    return None


async def _give_identity(plan: BottlePlan, member: Member) -> None:
    state = plan.state
    started = time.monotonic()
    lifecycle.append_log(state.bringup_log, f"claimed by {plan.slug} (agent {plan.agent.name})")
    record = json.loads((state.path / RECORD).read_text())
    atomic_write(
        state.path / RECORD,
        json.dumps({**record, "claimed_by": plan.slug, "claimed_at": plan.started_at}, indent=2) + "\n",
        mode=0o600,
    )
    lifecycle.write_metadata(
        plan, project=member.project, volume=workspace.volume_name(member.name), pool_member=member.name
    )
    atomic_write(state.routes, to_yaml(render_routes(plan)), mode=0o600)
    atomic_write(state.metering, json.dumps(render_metering(plan), indent=2) + "\n", mode=0o644)
    if plan.supervise_url:
        atomic_write(state.supervise / layout.SLUG_FILE, plan.slug + "\n", mode=0o644)
    ids = member.containers
    await asyncio.gather(
        engine.rename(ids["agent"], engine.container_name(plan.project, "agent")),
        engine.rename(ids["sidecars"], engine.container_name(plan.project, "sidecars")),
        # its own CA: the member's, made when it was, is replaced before anyone used it
        lifecycle.make_egress_ca(state, plan.slug),
    )
    want = hashlib.sha256(ssl.PEM_cert_to_DER_cert((state.ca / CA_CERT_NAME).read_text())).hexdigest()
    await _reload(ids["sidecars"])
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while _signing_with(state.egress_ready) != want:
        if time.monotonic() > deadline:
            raise BottleError(f"egress of pool member {member.name} did not take the claimed bottle's CA and policy")
        await asyncio.sleep(lifecycle.READY_POLL)
    lifecycle.check_egress_policy(plan)
    lifecycle.append_log(state.bringup_log, f"ready ({time.monotonic() - started:.3f} s after the claim)")


async def _reload(container: str) -> None:
    problem = await engine.send_signal(container, "HUP")
    if problem is not None:
        raise BottleError(f"its bundle did not take the reload signal ({problem})")


def _signing_with(ready: Path) -> str | None:
    """The fingerprint of the CA every egress worker signs with, as the ready file says (each
    rewrites its entry on reload); None while one is missing or they differ."""
    try:
        doc = json.loads(ready.read_text())
    except (OSError, ValueError):
        return None
    entries = workers.ready_entries(doc)
    count = doc.get("workers", len(entries)) if isinstance(doc, dict) else 0
    found = {e.get("ca_sha256") for e in entries.values()}
    value = found.pop() if len(entries) == count and len(found) == 1 else None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Listed:
    """A member as `pool ls` shows it: ready, or what is wrong with it."""

    name: str
    bottle: str
    made_at: str
    state: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def listing(home: Path) -> list[Listed]:
    """The home's members: ready ones (with their containers up), ones being made, and ones the
    engine holds without a folder (a filler that died)."""
    on_engine = {
        b.slug: b for b in await engine.pool_members() if b.home and os.path.realpath(b.home) == os.path.realpath(home)
    }
    out: list[Listed] = []
    for folder in member_folders(home):
        member = read_member(folder)
        info = on_engine.pop(folder.name, None)
        up = info is not None and info.services_up == len(info.services) == 2
        if member is None:
            out.append(Listed(folder.name, _bottle_of(folder.name), "", "starting"))
        else:
            out.append(Listed(member.name, member.bottle, member.made_at, "ready" if up else "down"))
    out += [Listed(name, b.bottle, b.started_at, "no folder") for name, b in on_engine.items()]
    return out
