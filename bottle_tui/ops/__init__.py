"""The operations: everything the CLI and the console do to bottles, written once.

Both front ends call these and nothing below them; these reach a bottle only through the
``Backend`` protocol (``backends``), and the files of a home through the core modules
(``manifest``, ``plan``, ``state``, ``proposals``). Blocking file work that a caller on an event
loop must not run inline is said so in the docstring; every ``async`` one is safe to await there.

The package is one namespace (``ops.X`` for everything); its parts: ``homes.py`` (which home,
where a running bottle is), ``forks.py`` (snapshots and forks), and this module (the rest).

Errors are ``BottleError`` with one line for the operator; nothing here prints. What a step has to
say while it runs goes to a ``progress`` callback (one line per call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bottle_contract.clock import now_iso

from .. import backends, local_repo, proposals, snapshots, spend, work_review
from ..backends import (
    Availability,
    Backend,
    BottleInfo,
    CleanupPart,
    EngineStatus,
    Progress,
    SelftestReport,
    StopReport,
)
from ..config import load_config
from ..errors import BottleError
from ..manifest import Manifests, load_manifests
from ..plan import (
    WORKDIR,
    BottlePlan,
    claude_session,
    end_pane_session_argv,
    identity_env,
    missing_secrets,
    preflight_text,
    resolve,
    short_credentials,
)
from ..snapshots import Snapshot
from ..spend import budget_text, cost_text, spend_cell, tokens_of, tokens_text, usd_text
from ..state import all_state_dirs, new_slug, state_dir, state_root
from . import pool
from .decisions import (
    AlreadyDecided,
    Decided,
    check_change,
    check_policy,
    decide,
    find_proposal,
    git_push_target,
    list_proposals,
    proposal_diff,
    proposal_history,
    read_policy,
    reload_policy,
    review_push,
    save_policy,
)
from .forks import SnapshotListed, forked_plan, list_snapshots, remove_snapshot, saved_snapshots, snapshot
from .homes import Located, bottle_home, home, locate
from .pool import PoolMember, drain_pool, fill_pool, list_pool, waiting

__all__ = [
    "SCOPES",
    "PoolMember",
    "drain_pool",
    "fill_pool",
    "list_pool",
    "waiting",
    "AlreadyDecided",
    "git_push_target",
    "proposal_diff",
    "proposal_history",
    "Snapshot",
    "SnapshotListed",
    "list_snapshots",
    "remove_snapshot",
    "saved_snapshots",
    "snapshot",
    "Availability",
    "BottleInfo",
    "BottlePlan",
    "Cleanup",
    "Decided",
    "Proposal",
    "EngineStatus",
    "Located",
    "Progress",
    "SelftestReport",
    "StopReport",
    "agents",
    "attach_argv",
    "availability",
    "bottle_home",
    "bundle_logs",
    "check_change",
    "check_policy",
    "claude_argv",
    "cleanup",
    "decide",
    "describe",
    "find_proposal",
    "list_proposals",
    "discover",
    "end_pane_session",
    "engine_status",
    "ensure_images",
    "image_refs",
    "push_images",
    "events_argv",
    "watch_argv",
    "exec_argv",
    "find",
    "home",
    "locate",
    "operator",
    "plan",
    "plan_cleanup",
    "record_work_start",
    "FileChange",
    "FileDiff",
    "Review",
    "ReviewSource",
    "review_commit_lines",
    "review_stat_lines",
    "review_push",
    "review_work",
    "has_work",
    "preflight",
    "read_policy",
    "reload_policy",
    "resume",
    "resume_plan",
    "save_policy",
    "selftest",
    "start",
    "start_warnings",
    "stop",
    "BottleUsage",
    "bottles_json",
    "budget_text",
    "cost_text",
    "spend_cell",
    "tokens_of",
    "tokens_text",
    "usage",
    "usd_text",
]

BottleUsage = spend.BottleUsage


# -- plans and starting ---------------------------------------------------------------------------


def agents(home: Path) -> Manifests:
    """The home's manifests, validated (blocking: reads files)."""
    return load_manifests(home)


def plan(home: Path, agent: str, *, from_snapshot: str | None = None) -> BottlePlan:
    """A new bottle's plan for ``agent``: manifests loaded and resolved, a fresh slug, today's
    image tags; ``from_snapshot``: a fork of that snapshot (of this agent) of ``home``. Reads
    files only (no engine, nothing written; blocking)."""
    manifests = load_manifests(home)
    slug = new_slug(agent)
    made = resolve(
        manifests,
        agent,
        slug=slug,
        images=backends.image_refs(),
        started_at=now_iso(),
        state=state_dir(home, slug),
        config=load_config(home),
    )
    if from_snapshot is None:
        return made
    snap = snapshots.find(home, from_snapshot)
    if snap.agent != agent:
        raise BottleError(
            f"snapshot {snap.name} is of agent {snap.agent}, not {agent}: `bottle-tui start {snap.agent} --from {snap.name}`"
        )
    return forked_plan(made, snap)


def describe(plan: BottlePlan) -> str:
    """The plan as the operator reviews it before a start (routes, secrets by name, images, state)."""
    return preflight_text(plan)


def start_warnings(plan: BottlePlan, environ: Mapping[str, str] | None = None) -> list[str]:
    """What the operator should know before this plan starts, one line each (nothing stops it):
    credentials it injects that are not set here, and ones too short to be judged."""
    env = os.environ if environ is None else environ
    lines = [
        f"${name} is not set here: requests through routes that inject it will fail (export it and start again)"
        for name in missing_secrets(plan, env)
    ]
    lines += [
        f"${name} is too short to tell a leak from chance ({why}): selftest will not judge it, and egress "
        "scrubs it from every answer; use the real credential"
        for name, why in short_credentials(plan, env)
    ]
    return lines


async def preflight(plan: BottlePlan, progress: Progress) -> None:
    """Whether ``plan`` can start here (a local git upstream is a repository with the branch; the
    engine answers; for a microVM, smolvm's version and a boot probe); a one-line BottleError
    when not. Starts nothing."""
    if plan.bottle.git and plan.bottle.git.local:
        await local_repo.check(plan.bottle.git, plan.bottle.path)
    await backends.get(plan.backend).preflight(plan, progress)


async def start(
    plan: BottlePlan, progress: Progress, *, preflighted: bool = False, environ: Mapping[str, str] | None = None
) -> BottlePlan:
    """Start the bottle: preflight (unless the caller ran ``preflight`` already), the images
    (built where missing, log in <home>/images.log), then the backend's bring-up. Returns the plan
    with the image tags it started with. A failed bring-up is torn down and raises one line.

    A bottle that keeps warm bottles (``pool:``) claims one made for the same manifest, images and
    credentials (``environ``, default this process's: its credentials are what the bundle holds)
    instead, and its pool is refilled in the background either way."""
    backend = backends.get(plan.backend)
    if not preflighted:
        await preflight(plan, progress)
    if plan.pool_size and await pool.claim(plan, progress, os.environ if environ is None else environ):
        pool.refill(plan.home, plan.bottle.name)
        return plan
    plan = dataclasses.replace(plan, images=await backends.ensure_images(progress, plan.home / "images.log"))
    if plan.snapshot is not None:
        plan = forked_plan(plan, plan.snapshot)
    await backend.start(plan, progress)
    await record_work_start(plan, progress)
    if plan.pool_size and plan.snapshot is None:
        pool.refill(plan.home, plan.bottle.name)  # after the start: the two would share the cores
    return plan


async def resume_plan(home: Path, slug: str) -> BottlePlan:
    """The plan that brings back bottle ``slug``, kept by `stop --keep`: its slug and state folder,
    its agent's manifests as they are today. A one-line error when it runs already, or naming the
    kept bottles when ``slug`` is not one (one engine listing; the files are small reads)."""
    if any(b.slug == slug for b in await backends.discover()):
        raise BottleError(f"bottle {slug} is running already: `bottle-tui attach {slug}` opens it")
    state = state_dir(home, slug)
    meta = state.read_metadata() if state.path.is_dir() else None
    if meta is None or not state.preserved:
        kept = [s.slug for s in all_state_dirs(home) if s.preserved]
        raise BottleError(
            f"no kept bottle '{slug}' in {state_root(home)}: `bottle-tui stop SLUG --keep` keeps one"
            + (f"; kept here: {', '.join(kept)}" if kept else "; none is kept here")
        )
    agent = meta.get("agent")
    if not isinstance(agent, str) or not agent:
        raise BottleError(f"{state.metadata} does not say which agent ran in {slug}: it cannot be resumed")
    plan = resolve(
        load_manifests(home),
        agent,
        slug=slug,
        images=backends.image_refs(),
        started_at=now_iso(),
        state=state,
        config=load_config(home),
    )
    forked_from = meta.get("from_snapshot")
    if isinstance(forked_from, str) and forked_from:
        try:  # a fork comes back on its snapshot's image while there is one (else the agent image)
            plan = dataclasses.replace(plan, snapshot=snapshots.find(home, forked_from))
        except BottleError:
            pass
    ran_on = str(meta.get("backend") or "docker")
    if plan.backend != ran_on:
        raise BottleError(
            f"{slug} ran on {ran_on}, but {plan.bottle.path} now says backend: {plan.backend}; "
            "resume needs the backend it ran on"
        )
    return plan


async def resume(plan: BottlePlan, progress: Progress) -> BottlePlan:
    """Bring the kept bottle of ``plan`` (see ``resume_plan``) back with its checkout and claude's
    state: preflight, the images, then the backend's resume. Returns the plan it started with."""
    backend = backends.get(plan.backend)
    await backend.preflight(plan, progress)
    plan = dataclasses.replace(plan, images=await backends.ensure_images(progress, plan.home / "images.log"))
    if plan.snapshot is not None:
        plan = forked_plan(plan, plan.snapshot)
    await backend.resume(plan, progress)
    return plan


async def ensure_images(home: Path, progress: Progress, *, force: bool = False) -> dict[str, str]:
    """The agent and sidecars images, built where missing (every one with ``force``)."""
    await backends.require_engine()
    return await backends.ensure_images(progress, home / "images.log", force=force)


def image_refs() -> dict[str, str]:
    """The agent and sidecars images of today's sources, by name (nothing built, no engine asked)."""
    return backends.image_refs()


async def push_images(home: Path, registry: str, progress: Progress) -> dict[str, str]:
    """The images, built where missing, pushed to ``registry`` (where swarm nodes pull them from
    when config.yaml says images.registry)."""
    await backends.require_engine()
    return await backends.push_images(registry, progress, home / "images.log")


# -- running bottles ------------------------------------------------------------------------------


async def discover() -> list[BottleInfo]:
    """Every bottle of every backend on the engine, whichever home started it."""
    return await backends.discover()


def bottles_json(bottles: list[BottleInfo], fallback: Path) -> list[dict[str, Any]]:
    """`ls --json`: each bottle as the engine reports it, with its spend (usage.json's totals and
    budget, null before its first model call). Blocking (reads each bottle's usage.json)."""
    out = []
    for b in bottles:
        u = spend.read_state(state_dir(bottle_home(b, fallback), b.slug))
        out.append({**b.to_json(), "usage": {"totals": u.totals, "budget": u.budget} if u else None})
    return out


def usage(home: Path, slug: str | None = None) -> list[BottleUsage]:
    """What each bottle of ``home`` spent (running, kept and archived ones), or ``slug``'s alone;
    a one-line error when ``slug`` has no usage to show. Blocking (reads files)."""
    found = spend.all_usage(home)
    if slug is None:
        return found
    state = state_dir(home, slug)  # checks the slug
    mine = [u for u in found if u.slug == slug]
    meta = (state.read_metadata() or {}) if state.path.is_dir() else {}
    if not mine and meta.get("backend") == "swarm":
        raise BottleError(
            f"{slug} is a swarm bottle: what it spends is counted on the volume of node {meta.get('node') or '?'}, "
            f"which `usage` does not read while it runs yet; `bottle-tui stop {slug}` brings it to the archive, "
            f"where `bottle-tui usage {slug}` finds it"
        )
    if not mine:
        raise BottleError(
            f"no usage recorded for '{slug}' in {state_root(home)} or its archive: it made no metered model call "
            "yet, or is not a bottle of this home (`bottle-tui usage` lists them)"
        )
    return mine


async def find(slug: str) -> BottleInfo:
    return await backends.find(slug)


def availability() -> list[tuple[str, Availability]]:
    """Each backend's name and whether it can start bottles here (cached knowledge; no subprocess)."""
    return [(b.name, b.availability()) for b in backends.all_backends()]


async def engine_status() -> EngineStatus:
    return await backends.engine_status()


def events_argv() -> list[str]:
    """A command whose every output line marks a change of some bottle's containers."""
    return backends.events_argv()


def watch_argv(home: Path, info: BottleInfo) -> list[str] | None:
    """For a bottle whose queue and status are not in a local folder (a swarm bottle), a command
    whose every output line marks a change of them (one long-running watch per bottle); None
    when the state folder's own file watch sees them. Blocking (may ask the engine)."""
    state = state_dir(bottle_home(info, home), info.slug)
    return backends.get(info.backend).watch_argv(state)


async def bundle_logs(info: BottleInfo) -> str:
    return await backends.bundle_logs(info)


async def stop(home: Path, info: BottleInfo, progress: Progress, *, keep: bool = False) -> StopReport:
    """Stop ``info`` (whose state is in ``home``: see ``bottle_home``): logs, transcript and
    egress decisions go to archive/<slug>/, what the checkout holds that nothing else does to
    archive/<slug>/work/ (``StopReport.work`` says what); ``keep`` keeps the state folder and the
    work volume for `resume`."""
    return await backends.get(info.backend).stop(home, info.slug, progress, keep=keep)


def claude_argv(home: Path, slug: str, *, fresh: bool = False, pane: bool = False) -> list[str]:
    """What attach runs in the agent: claude with the bottle's arguments, continuing the last
    conversation unless ``fresh`` or there is none (checked in the agent as it starts).
    ``pane``: the console's tmux pane runs it (it ends the pane's previous session there).
    Blocking (reads the bottle's metadata)."""
    meta = state_dir(home, slug).read_metadata() or {}
    return claude_session(meta.get("claude_args", []), fresh=fresh, pane=pane)


def attach_argv(
    home: Path, slug: str, backend: str, *, fresh: bool = False, pane: bool = False, term: str | None = None
) -> list[str]:
    """The host command that opens claude in the bottle with a terminal (for a handoff, or the
    right-hand tmux pane with ``pane``). Blocking (reads the bottle's metadata)."""
    env = {"TERM": term or os.environ.get("TERM", "xterm-256color"), **_claimed_env(home, slug)}
    return backends.get(backend).exec_argv(slug, claude_argv(home, slug, fresh=fresh, pane=pane), tty=True, env=env)


def _claimed_env(home: Path, slug: str) -> dict[str, str]:
    """For a claimed warm bottle, who it is (its containers were made before it had a name); {} else."""
    meta = state_dir(home, slug).read_metadata() or {}
    return identity_env(slug, str(meta.get("agent", ""))) if meta.get("pool_member") else {}


def exec_argv(info: BottleInfo, command: list[str], *, tty: bool) -> list[str]:
    """The host command that runs ``command`` in the bottle's agent, stdin attached."""
    if not command:
        raise BottleError(f"exec needs a command: bottle-tui exec {info.slug} -- CMD [ARGS...]")
    env = _claimed_env(Path(info.home), info.slug) if info.home else {}
    return backends.get(info.backend).exec_argv(info.slug, command, tty=tty, env=env or None)


async def end_pane_session(slug: str, backend: str) -> None:
    """End the claude that the console's pane left running in a bottle (best effort: the bottle
    may be gone)."""
    try:
        await backends.get(backend).exec_capture(slug, end_pane_session_argv(), timeout=15)
    except BottleError:
        pass


async def selftest(
    home: Path, slug: str, progress: Progress, *, environ: Mapping[str, str] | None = None
) -> SelftestReport:
    """The escape suite against the running bottle ``slug``, aimed at a canary of ours; ``environ``
    (default: this process's) holds the real credentials it looks for."""
    where = await locate(slug, home)
    state = state_dir(where.home, slug)
    return await where.backend.selftest(
        state, where.info, progress, environ=dict(os.environ if environ is None else environ)
    )


# -- the agent's work: what it changed since its checkout began -----------------------------------


Review = work_review.Review
ReviewSource = work_review.ReviewSource
FileChange = work_review.FileChange
FileDiff = work_review.FileDiff
review_stat_lines = work_review.review_stat
review_commit_lines = work_review.commit_lines


def _agent_exec(backend: Backend, slug: str) -> work_review.Exec:
    async def exec_(argv: list[str], timeout: float) -> tuple[int, str]:
        return await backend.exec_capture(slug, argv, timeout=timeout)

    return exec_


async def record_work_start(plan: BottlePlan, progress: Progress) -> None:
    """Note where the agent's checkout begins (its commit and branch) in the state folder, on the
    host, where the agent cannot rewrite it: what `diff` compares with. Runs once the bring-up is
    done, before claude is ever attached. A bottle without git records nothing; a problem is one
    progress line, never a failed start."""
    if plan.git_origin is None:
        return
    reader = work_review.GitReview(_agent_exec(backends.get(plan.backend), plan.slug), WORKDIR, None)
    try:
        probe = await reader.probe()
    except BottleError as exc:
        progress(
            f"could not note where the agent's checkout starts ({exc}); `bottle-tui diff` will compare with origin"
        )
        return
    record = {
        "commit": probe.head or None,
        "branch": probe.on.removeprefix("refs/heads/"),
        "checkout": probe.repo,
        "workdir": WORKDIR,
        "recorded_at": now_iso(),
    }
    await asyncio.to_thread(plan.state.write_work_start, record)


def has_work(home: Path, info: BottleInfo) -> bool:
    """Whether the running bottle ``info`` has a checkout to review (it has git; blocking)."""
    state = state_dir(bottle_home(info, home), info.slug)
    return state.work_start.exists() or state.gate_config.exists()


async def review_work(home: Path, info: BottleInfo) -> work_review.GitReview:
    """What the agent of the running bottle ``info`` changed since its checkout began, as a
    review source (``review``, ``counted``, ``file_diff``, ``patch``), read live from the agent.
    ``home`` is the caller's (the bottle's own is found as ``bottle_home`` finds it). A one-line
    BottleError when the bottle has no git, or no starting point can be found."""
    state = state_dir(bottle_home(info, home), info.slug)
    record, gate = await asyncio.to_thread(lambda: (state.read_work_start(), state.read_gate_config()))
    if record is None and gate is None:
        raise BottleError(f"{info.slug} has no git: in its bottle file, so there is no checkout to compare")
    exec_ = _agent_exec(backends.get(info.backend), info.slug)
    title = f"{info.slug}: what the agent changed"
    commit = (record or {}).get("commit")
    if record is not None and isinstance(commit, str) and commit:
        branch = str(record.get("branch") or "")
        note = f"since {commit[:12]}{f' on {branch}' if branch else ''}, where its checkout began at bring-up"
        return work_review.GitReview(
            exec_, WORKDIR, commit, title=title, base_note=f"{note} ({record.get('recorded_at', '?')})"
        )
    # No commit to start from: the checkout began empty (upstream could not be cloned at bring-up:
    # what the agent pulled later is upstream's, not its work), or the bottle is older than the
    # record. Then: where HEAD forks from origin's branch, which the agent's own checkout holds.
    branch = str((record or {}).get("branch") or (gate or {}).get("branch") or "main")
    why = (
        "the checkout began empty (upstream could not be cloned at bring-up)"
        if record is not None
        else "no starting point was recorded at bring-up"
    )
    found = await work_review.run_git(
        exec_, ["git", "merge-base", "HEAD", f"refs/remotes/origin/{branch}"], workdir=WORKDIR, limit=4096
    )
    base = found.data.decode(errors="replace").strip()
    if found.status == 0 and base:
        note = f"since {base[:12]}, where HEAD forks from origin/{branch} ({why}; the agent can move that ref)"
        return work_review.GitReview(exec_, WORKDIR, base, title=title, base_note=note)
    if record is not None:
        note = f"since an empty checkout ({why}, and origin/{branch} has not been fetched)"
        return work_review.GitReview(exec_, WORKDIR, None, title=title, base_note=note)
    raise BottleError(f"{info.slug}: {why}, and its checkout has no origin/{branch} to compare with")


# -- proposals and the policy in force ------------------------------------------------------------


SCOPES = proposals.SCOPES
Proposal = proposals.Proposal
# -- cleanup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cleanup:
    """What cleanup would remove, per backend."""

    parts: list[tuple[Backend, CleanupPart]]

    @property
    def empty(self) -> bool:
        return all(part.empty for _, part in self.parts)

    def describe(self) -> str:
        return "\n".join(part.describe() for _, part in self.parts if not part.empty)


async def plan_cleanup(home: Path, *, all_homes: bool = False, homes_under: Path | None = None) -> Cleanup:
    """What `cleanup` removes: ``home``'s bottles and leftovers, every home's with ``all_homes``,
    or those of homes below a folder with ``homes_under``."""
    await backends.require_engine()
    return Cleanup(
        [(b, await b.plan_cleanup(home, all_homes=all_homes, homes_under=homes_under)) for b in backends.all_backends()]
    )


async def cleanup(plan: Cleanup, progress: Progress) -> list[str]:
    """Carry ``plan`` out; the problems met, one line each (one failure does not stop the rest)."""
    return [line for backend, part in plan.parts for line in await backend.cleanup(part, progress)]


def operator(front_end: str) -> str:
    """Who decides, as the audit log records it: the user and the front end (cli, console)."""
    return f"{proposals.operator()} ({front_end})"
