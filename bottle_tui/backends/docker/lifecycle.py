"""Bring a docker bottle up and take it down: state folder, renders, compose, readiness, teardown."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from bottle_contract.clock import now_iso
from bottle_contract.files import atomic_write

from ... import local_repo
from ...config import ArchiveSettings, load_config
from ...errors import BottleError
from ...plan import CA_CERT_NAME, TRANSCRIPTS, WORKDIR, BottlePlan
from ...runner import CommandError, run
from ...state import (
    StateDir,
    archive_root,
    pool_root,
    project_name,
    prune_archive,
    state_dir,
    work_archive,
)
from .. import StopReport
from . import engine, images, snapshot, workspace
from .compose import render_compose, render_git_gate, render_metering, render_routes, to_yaml

READY_TIMEOUT = 60.0
# How often a bring-up looks for the daemons' ready files: a stat each, so often costs nothing,
# and the bottle is ready within this much of its last daemon.
READY_POLL = 0.01

Progress = Callable[[str], None]


def append_log(path: Path, message: str) -> None:
    """Append a timestamped line to a bottle's log (bringup.log, teardown.log)."""
    with path.open("a") as fh:
        fh.write(f"{now_iso()} {message.rstrip()}\n")


async def make_egress_ca(state: StateDir, slug: str) -> None:
    """A CA per bottle: the key stays in egress/ (sidecars only), the certificate goes to ca/ (agent)."""
    key, cert = state.egress / "ca-key.pem", state.egress / "ca-cert.pem"
    await run(
        [
            # EC P-256: 15 ms to generate where RSA-2048 takes 300 ms of a 3 s bring-up budget.
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-sha256",
            "-days",
            "825",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/O=bottle-tui/CN=bottle-tui egress CA {slug}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        timeout=60,
    )
    pem_key, pem_cert = key.read_bytes(), cert.read_bytes()
    key.unlink()
    cert.unlink()
    # mitmproxy reads its CA (key + certificate) from confdir/mitmproxy-ca.pem.
    atomic_write(state.egress / "mitmproxy-ca.pem", pem_key + pem_cert, mode=0o600)
    atomic_write(state.egress / "mitmproxy-ca-cert.pem", pem_cert, mode=0o644)
    atomic_write(state.ca / CA_CERT_NAME, pem_cert, mode=0o644)


def write_renders(
    plan: BottlePlan, *, git_start: str | None = None, keep_policy: bool = False, volume: str | None = None
) -> None:
    """Everything the bottle's containers read. ``git_start``: the tip a local upstream's mirror
    began at. ``keep_policy``: a resumed bottle keeps the routes.yaml in force (approved
    proposals, operator edits) instead of the manifest's. ``volume``: its work volume when that
    is not its slug's (a claimed pool member's, resumed)."""
    spec = render_compose(plan, host_uid=os.getuid(), host_gid=os.getgid(), volume=volume)
    atomic_write(plan.state.compose_file, to_yaml(spec), mode=0o600)
    write_bundle_files(plan, git_start=git_start, keep_policy=keep_policy)
    write_metadata(plan, **({"volume": volume} if volume else {}))


def write_bundle_files(plan: BottlePlan, *, git_start: str | None = None, keep_policy: bool = False) -> None:
    """What the bundle's daemons read, in the state folder's sidecar folders: the policy, the
    upstream trust, the gate's and supervise's settings (every backend's bundle reads the same)."""
    state = plan.state
    if not (keep_policy and state.routes.is_file()):
        atomic_write(state.routes, to_yaml(render_routes(plan)), mode=0o600)
    if not (keep_policy and state.metering.is_file()):
        # A resumed bottle keeps its budget as the operator last raised it.
        atomic_write(state.metering, json.dumps(render_metering(plan), indent=2) + "\n", mode=0o644)
    upstream_ca = images.upstream_ca_bundle()
    atomic_write(state.egress / "upstream-ca.pem", upstream_ca, mode=0o644)
    gate = render_git_gate(plan, start=git_start)
    if gate is not None:
        atomic_write(state.git_gate / "gate.json", json.dumps(gate, indent=2) + "\n", mode=0o600)
        # The gate trusts upstreams exactly as egress does.
        atomic_write(state.git_gate / "upstream-ca.pem", upstream_ca, mode=0o644)
    if plan.supervise_url:
        # Read by the supervise daemon at start (a file: init passes daemons few variables).
        atomic_write(
            state.supervise / "settings.json",
            json.dumps({"timeout_seconds": plan.bottle.supervise.timeout_seconds}) + "\n",
            mode=0o644,
        )


def write_metadata(plan: BottlePlan, **extra: object) -> None:
    """metadata.json (host only: mounted nowhere): who and what the bottle is; ``extra`` adds a
    backend's own facts (a swarm bottle's node)."""
    plan.state.write_metadata(
        {
            "agent": plan.agent.name,
            "bottle": plan.bottle.name,
            "backend": plan.backend,
            "slug": plan.slug,
            "project": plan.project,
            "started_at": plan.started_at,
            "images": plan.images,
            "agent_file": str(plan.agent.path),
            "bottle_file": str(plan.bottle.path),
            "started_by_pid": os.getpid(),
            "claude_args": plan.claude_args,
            # Host-only (metadata.json is not mounted anywhere): where approved pushes come home.
            **({"local_upstream": str(plan.bottle.git.local)} if plan.bottle.git and plan.bottle.git.local else {}),
            # A fork: the snapshot it started from (a resume brings back its image).
            **({"from_snapshot": plan.snapshot.name} if plan.snapshot else {}),
            **extra,
        }
    )


async def prepare_local_mirror(plan: BottlePlan) -> str | None:
    """A local upstream's mirror for the gate, made by the host before the bundle starts; the tip
    of git.branch it holds (None for other bottles)."""
    git = plan.bottle.git
    if git is None or git.local is None:
        return None
    tip = await local_repo.make_mirror(git, plan.bottle.path, plan.state.mirror_repo(plan.git_repo))
    append_log(plan.state.bringup_log, f"mirrored the local upstream for the gate at {tip[:12]} of {git.branch}")
    return tip


class Timings:
    """How long each step of a bring-up took: one line in bringup.log (`make bench` reads it)."""

    def __init__(self) -> None:
        self.began = self.last = time.monotonic()
        self.parts: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.parts.append((name, now - self.last))
        self.last = now

    def line(self) -> str:
        parts = ", ".join(f"{name} {seconds:.3f}" for name, seconds in self.parts)
        return f"timings (s): {parts}, total {time.monotonic() - self.began:.3f}"


async def _nothing() -> None:
    return None


async def _wait_ready(plan: BottlePlan, deadline: float, timings: Timings | None = None) -> None:
    ready = {"egress": plan.state.egress_ready} | (
        {"supervise": plan.state.supervise_ready} if plan.supervise_url else {}
    )
    seen: set[str] = set()
    began = time.monotonic()
    agent = engine.container_name(plan.project, "agent")
    # Registering supervise execs in the agent at the same time, which fails unless it runs: then
    # that is the check, and no `docker inspect` competes with the daemons' start for the cores.
    agent_up = plan.supervise_url is not None
    while time.monotonic() < deadline:
        if not agent_up:
            agent_up = await engine.container_running(agent)
        for name, path in ready.items():
            if name not in seen and path.exists():
                seen.add(name)
                if timings is not None:  # after compose up, each daemon's own time to be ready
                    timings.parts.append((f"{name} ready after up", time.monotonic() - began))
        if agent_up and len(seen) == len(ready):
            check_egress_policy(plan)
            return
        await asyncio.sleep(READY_POLL)
    missing = ", ".join(r.parent.name for r in ready.values() if not r.exists())
    what = "the agent container" if not agent_up else f"{missing} (no ready file)"
    raise BottleError(
        f"bottle {plan.slug} did not become ready within {READY_TIMEOUT:g} s: {what}; see {plan.state.bringup_log}"
    )


def check_egress_policy(plan: BottlePlan) -> None:
    """Egress is up, but did it take the policy? A routes.yaml it refused (e.g. a DLP rule id its
    pinned gitleaks rules do not have) means every request is blocked: say so now, in one line."""
    try:
        info = json.loads(plan.state.egress_ready.read_text())
    except (OSError, ValueError):
        return
    problem = info.get("routes_error")
    if problem:
        raise BottleError(
            f"egress of {plan.slug} refused its policy ({problem}); fix {plan.bottle.path} and start again"
        )


# Puts the supervise server into claude's user config (~/.claude.json, the entry `claude mcp add
# --transport http --scope user` writes), keeping whatever else is there: a resumed bottle's config
# on its volume holds it already. Written directly, not with `claude mcp add`: every claude run
# fetches claude's remote settings from the provider, and bring-up must not talk to anyone.
REGISTER_SUPERVISE = """
import json, os, sys
path = os.path.expanduser("~/.claude.json")
try:
    with open(path) as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{path} is not a JSON object")
servers = config.get("mcpServers")
config["mcpServers"] = {**(servers if isinstance(servers, dict) else {}), "supervise": {"type": "http", "url": sys.argv[1]}}
tmp = path + ".bottle-tui"
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
    json.dump(config, f, indent=2)
os.replace(tmp, path)
"""


async def register_supervise(plan: BottlePlan) -> None:
    """Claude Code in the agent gets the bundle's supervise MCP server in its user config."""
    if not plan.supervise_url:
        return
    agent = engine.container_name(plan.project, "agent")
    code, out = await engine.exec_capture(agent, ["python3", "-c", REGISTER_SUPERVISE, plan.supervise_url])
    if code != 0:
        raise BottleError(
            f"registering supervise in claude's config in {agent} failed (status {code}): {out.strip()[-200:]}"
        )


# Runs as the agent in its work folder: clone the gate's mirror, or, when the gate cannot serve one
# yet (upstream unreachable), an empty repository whose origin is the gate, so `git pull` works later.
# A folder that holds anything (a resumed bottle's checkout) is left as it is.
CHECKOUT_SCRIPT = """
[ -z "$(ls -A . 2>/dev/null)" ] || exit 4
why=$(git clone --quiet --origin origin "$1" . 2>&1) && exit 0
git init --quiet -b "$2" . && git remote add origin "$1" \\
  && git config "branch.$2.remote" origin && git config "branch.$2.merge" "refs/heads/$2" || exit 1
echo "$why" | tail -n 1
exit 3
"""


async def checkout_in_agent(plan: BottlePlan, deadline: float) -> None:
    """The agent's checkout at WORKDIR with origin = the gate (a bottle with git only)."""
    if plan.git_origin is None or plan.bottle.git is None:
        return
    ready = plan.state.git_gate_ready
    while not ready.exists():
        if time.monotonic() > deadline:
            raise BottleError(
                f"bottle {plan.slug}: the git gate did not become ready within {READY_TIMEOUT:g} s; see {plan.state.bringup_log}"
            )
        await asyncio.sleep(READY_POLL)
    agent = engine.container_name(plan.project, "agent")
    code, out = await engine.exec_capture(
        agent, ["sh", "-c", CHECKOUT_SCRIPT, "checkout", plan.git_origin, plan.bottle.git.branch], timeout=120
    )
    if code == 0:
        append_log(plan.state.bringup_log, f"agent checkout: cloned {plan.git_origin} into {WORKDIR}")
    elif code == 4:
        append_log(plan.state.bringup_log, f"agent checkout: kept the checkout in {WORKDIR} (on the bottle's volume)")
    elif code == 3:
        append_log(
            plan.state.bringup_log,
            f"agent checkout: cannot clone {plan.git_origin} yet ({out.strip()}); {WORKDIR} is an empty repository with origin {plan.git_origin} (git pull fetches it)",
        )
    else:
        raise BottleError(
            f"bottle {plan.slug}: cannot prepare the agent's checkout in {WORKDIR} (exit {code}): {out.strip()[-300:]}"
        )


async def start(plan: BottlePlan, progress: Progress) -> None:
    """Create the state folder, write the renders and bring the bottle up; tears down on failure."""
    plan.state.create()
    append_log(
        plan.state.bringup_log, f"starting bottle {plan.slug}: agent {plan.agent.name}, bottle {plan.bottle.name}"
    )
    await bring_up(plan, progress, resumed=False)


async def resume(plan: BottlePlan, progress: Progress) -> None:
    """Bring a bottle stopped with --keep back: the same slug, state folder (egress CA, the
    routes.yaml in force, proposals) and work volume (checkout, ~/.claude), with the images and
    manifests of today. A failed resume takes the containers down and keeps the rest."""
    state = plan.state
    volume = workspace.volume_of(state)
    if not await workspace.exists(volume):
        raise BottleError(
            f"bottle {plan.slug} has no kept volume ({volume}): only `bottle-tui stop {plan.slug} --keep` keeps one "
            f"(what stop saved is in {work_archive(plan.home, plan.slug)})"
        )
    append_log(state.bringup_log, f"resuming bottle {plan.slug}: agent {plan.agent.name}, bottle {plan.bottle.name}")
    # The daemons write these when they are up: last run's must not pass for this one's.
    for ready in (state.egress_ready, state.supervise_ready, state.git_gate_ready):
        ready.unlink(missing_ok=True)
    await bring_up(plan, progress, resumed=True, volume=volume)
    state.preserve_marker.unlink(missing_ok=True)  # kept for this resume; a plain stop removes it now


async def bring_up(plan: BottlePlan, progress: Progress, *, resumed: bool = False, volume: str | None = None) -> None:
    """Renders, the work volume, `compose up`, then wait until the daemons are ready; a failure
    takes the containers down (and a fresh bottle's volume) and raises one line."""
    state = plan.state
    volume = None if volume == workspace.volume_name(plan.slug) else volume
    log = state.bringup_log
    volume_made = False
    timings = Timings()
    try:
        # The CA, the volume and a local upstream's mirror need nothing of each other: made at once.
        need_ca = not (resumed and (state.egress / "mitmproxy-ca.pem").is_file())
        kept_gate = state.git_gate / "gate.json"
        keep_gate = resumed and kept_gate.is_file()
        made = await asyncio.gather(
            make_egress_ca(state, plan.slug) if need_ca else _nothing(),
            # the mirror holds the agent's held pushes: kept as it is, with the tip it began at
            _nothing() if keep_gate else prepare_local_mirror(plan),
            workspace.create(plan.slug, plan.home, plan.agent.name, plan.images["agent"], fresh=not resumed)
            if volume is None
            else _nothing(),
            return_exceptions=True,
        )
        volume_made = not resumed and not isinstance(made[2], BaseException)
        for result in made:
            if isinstance(result, BaseException):
                raise result
        mirrored = made[1] if isinstance(made[1], str) else None
        git_start = json.loads(kept_gate.read_text()).get("start") if keep_gate else mirrored
        timings.mark("ca, volume and mirror")
        forked = plan.snapshot if not resumed else None
        if forked is not None and forked.dir.routes.is_file():
            # a fork starts with the policy in force when the snapshot was taken
            atomic_write(state.routes, forked.dir.routes.read_bytes(), mode=0o600)
        write_renders(plan, git_start=git_start, keep_policy=resumed or forked is not None, volume=volume)
        timings.mark("renders")
        if forked is not None:
            progress(f"filling {plan.slug}'s work volume from snapshot {forked.name}")
            await snapshot.restore_home(plan.slug, forked)
            append_log(log, f"work volume filled from snapshot {forked.name} (of {forked.of}, {forked.created_at})")
            timings.mark("home from snapshot")
        append_log(log, "renders written; docker compose up")
        progress(f"starting {plan.project}")
        env = {name: os.environ[name] for name in plan.secret_env_names if name in os.environ}
        out = await engine.up(plan.project, state.compose_file, env=env)
        append_log(log, out)
        timings.mark("compose up")
        # compose up has started the agent: claude's config needs no daemon, so it overlaps the wait.
        await asyncio.gather(_wait_ready(plan, time.monotonic() + READY_TIMEOUT, timings), register_supervise(plan))
        timings.mark("daemons ready")
        if plan.git_origin is not None:
            await checkout_in_agent(plan, time.monotonic() + READY_TIMEOUT)
            timings.mark("checkout")
        append_log(log, timings.line())
        append_log(log, "ready")
    except BaseException as exc:
        append_log(log, f"bring-up failed: {exc}")
        try:
            append_log(log, await engine.logs(plan.project))
            await engine.down(plan.project)
            if volume_made:  # a fresh bottle's volume holds no work of the agent's yet
                await workspace.remove(workspace.volume_name(plan.slug))
        except (CommandError, OSError):
            pass
        if isinstance(exc, CommandError):
            explained = await engine.explain(exc)
            hint = ""
            if "address pool" in exc.stderr:
                hint = " (each bottle uses two networks: stop bottles you no longer need, or widen the engine's default-address-pools)"
            raise BottleError(f"bringing up {plan.slug} failed: {explained}{hint}; see {log}") from exc
        raise


async def stop(
    home: Path, slug: str, progress: Progress, *, keep: bool = False, agent_container: bool = True
) -> StopReport:
    """Take the bottle down, whatever else fails, and keep what an operator wants afterwards.

    Compose logs and the transcript are saved first (each failure is reported, none stops the
    teardown); `compose down` always runs; then logs, transcript, egress decisions and metadata
    are copied to ``archive/<slug>/`` (pruned by the config's retention), and the state folder is
    removed unless it carries a .preserve marker (``keep`` adds one). A failed `down` raises after
    the rest is done. ``agent_container`` is False for bottles whose agent is not a container of
    the project (a microVM's backend saved its transcript already).

    The work volume (checkout, ~/.claude) is looked at before `down`: what nothing else holds is
    saved in ``archive/<slug>/work/`` (``report.work`` says what, in one line); then the volume
    goes, unless ``keep`` (for `resume`) or its work could not be saved."""
    state = state_dir(home, slug)
    project = engine.project_of(state)
    agent = engine.container_name(project_name(slug), "agent")
    report = StopReport(slug)
    have_state = state.path.is_dir()
    volume = workspace.volume_of(state)
    has_volume = agent_container and await workspace.exists(volume)
    saved: workspace.Saved | None = None

    def problem(message: str) -> None:
        report.problems.append(message)
        progress(f"warning: {message}")
        if have_state:
            try:
                append_log(state.teardown_log, f"warning: {message}")
            except OSError:
                pass

    if have_state:
        try:
            if keep:
                state.preserve_marker.touch()
            append_log(state.teardown_log, f"stopping {project}")
        except OSError as exc:
            problem(f"cannot write in {state.path}: {exc.strerror or exc}")

        async def dump_logs() -> None:
            atomic_write(state.compose_log, await engine.logs(project), mode=0o600)

        async def snapshot() -> None:
            await engine.copy_out(agent, TRANSCRIPTS, state.transcript, missing_ok=True)

        steps = [dump_logs(), snapshot()] if agent_container else [dump_logs()]
        results = await asyncio.gather(*steps, return_exceptions=True)
        for what, result in zip(("saving compose logs", "saving the transcript"), results, strict=False):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                problem(f"{what} failed: {result}")
    if has_volume:
        progress(f"looking at the checkout of {slug}")
        try:
            saved = await save_work(home, slug, agent)
            report.work = saved.line
        except BottleError as exc:
            problem(str(exc))
    progress(f"stopping {project}")
    down_error: BottleError | None = None
    try:
        out = await engine.down(project)
    except CommandError as exc:
        down_error = BottleError(f"`docker compose down` of {project} failed: {await engine.explain(exc)}")
        out = str(down_error)
    if has_volume:
        if keep:
            report.work += f"; kept its volume {volume} (`bottle-tui resume {slug}` brings it back)"
        elif saved is not None and saved.safe_to_remove and down_error is None:
            gone = await workspace.remove(volume)
            if gone is not None:
                problem(f"{gone} (what it held is saved)")
        elif saved is not None and saved.safe_to_remove:
            problem(f"kept volume {volume}: the bottle did not go down (what it held is saved)")
        else:
            problem(f"kept volume {volume}: its unsaved work is not in the archive (`bottle-tui cleanup` tries again)")
        if report.work:
            progress(report.work)
            if have_state:
                try:
                    append_log(state.teardown_log, report.work)
                except OSError:
                    pass
    if have_state:
        try:
            append_log(state.teardown_log, out + ("\nstopped" if down_error is None else "\ndown failed"))
        except OSError as exc:
            problem(f"cannot write {state.teardown_log}: {exc.strerror or exc}")
        report.archive, archive_problems = archive_state(home, state, problem)
        if archive_problems:
            problem(f"kept {state.path}: not everything in it could be archived")
        elif down_error is None and not state.preserved:
            # A claimed warm bottle's volume is its member's, and so is the link its claim left
            # in the pool folder (backends/docker/pool.py): it goes with the bottle.
            member = workspace.slug_of_volume(volume)
            for line in state.remove():
                problem(line)
            link = pool_root(home) / str(member)
            if member != slug and link.is_symlink():
                link.unlink()
    if down_error is not None:
        raise down_error
    return report


def archive_state(home: Path, state: StateDir, problem: Callable[[str], None]) -> tuple[Path, list[str]]:
    """Copy what an operator wants of a stopped bottle's state folder into ``archive/<slug>/``
    and prune the archive by the home's retention; every problem goes to ``problem``. Returns
    the archive and the problems of the copy (the state folder stays when there are any)."""
    dest = archive_root(home) / state.slug
    archive_problems = state.archive_to(dest)
    for line in archive_problems:
        problem(line)
    try:
        settings = load_config(home).archive
    except BottleError as exc:
        problem(f"{exc} (archive retention uses its defaults)")
        settings = ArchiveSettings()
    _, pruned_problems = prune_archive(
        home, max_age_days=settings.max_age_days, max_total_mb=settings.max_total_mb, now=time.time(), keep=dest
    )
    for line in pruned_problems:
        problem(line)
    return dest, archive_problems


async def save_work(home: Path, slug: str, agent: str | None) -> workspace.Saved:
    """Archive what the bottle's work volume holds that nothing else does, looked at in the
    running agent container ``agent``, else (it is gone) in a throwaway one. Whether the bottle
    has git (and so a gate's mirror to compare with) is in its state folder."""
    state = state_dir(home, slug)
    volume = workspace.volume_of(state)
    if agent is not None and await engine.container_running(agent):
        place = workspace.exec_place(agent)
    else:
        place = workspace.helper_place(volume, await workspace.helper_image(volume))
    git = (state.git_gate / "gate.json").is_file()
    return await workspace.archive(place, work_archive(home, slug), mirror=state.git_mirror if git else None, git=git)
