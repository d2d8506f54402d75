"""Thin async wrappers over the docker and docker compose CLIs, all through the one runner.

Discovery costs two CLI calls whatever the number of bottles: ``docker compose ls`` for the
projects and one label-filtered ``docker ps`` for the services of all of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BottleError
from ...runner import CommandError, CommandNotFound, run
from ...state import PROJECT_PREFIX, StateDir, project_name, slug_of_project, state_dir
from . import labels

ENGINE_HINT = "run `make engine` (installs and starts dockerd and compose as root) or start your Docker engine"


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}"


def project_of(state: StateDir) -> str:
    """The compose project of bottle ``state.slug``: a claimed pool member's is its member's (the
    engine cannot rename a project; its containers are renamed), as its metadata.json says."""
    meta = (state.read_metadata() if state.path.is_dir() else None) or {}
    project = meta.get("project")
    return project if isinstance(project, str) and slug_of_project(project) else project_name(state.slug)


@dataclass(frozen=True)
class EngineStatus:
    ok: bool
    server_version: str = ""
    compose_version: str = ""
    problem: str = ""


async def _server() -> EngineStatus:
    """Whether a Docker server answers, in one `docker version` call."""
    try:
        info = await run(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=15)
    except CommandNotFound:
        return EngineStatus(False, problem=f"the docker CLI is not installed: {ENGINE_HINT}")
    except CommandError as exc:
        return EngineStatus(False, problem=f"the Docker engine did not answer ({exc}): {ENGINE_HINT}")
    if info.returncode != 0 or not info.stdout.strip():
        why = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        return EngineStatus(False, problem=f"no Docker engine answers ({why}): {ENGINE_HINT}")
    return EngineStatus(True, info.stdout.strip())


async def engine_status() -> EngineStatus:
    """The server and the compose plugin: versions when both answer, else the problem in one line."""
    server = await _server()
    if not server.ok:
        return server
    comp = await run(["docker", "compose", "version", "--short"], check=False, timeout=15)
    if comp.returncode != 0:
        return EngineStatus(
            False, server_version=server.server_version, problem=f"docker compose v2 is missing: {ENGINE_HINT}"
        )
    return EngineStatus(True, server.server_version, comp.stdout.strip())


async def require_engine() -> None:
    """Fail with the engine's problem in one line unless a server answers (one cheap call; a
    missing compose plugin shows when compose is first used, through ``explain``)."""
    server = await _server()
    if not server.ok:
        raise BottleError(server.problem)


def compose_argv(project: str, *args: str, file: Path | None = None) -> list[str]:
    argv = ["docker", "compose", "-p", project]
    if file is not None:
        argv += ["-f", str(file)]
    return argv + list(args)


@dataclass(frozen=True)
class BottleInfo:
    """One running (or half-running) bottle as the engine reports it."""

    slug: str
    project: str
    agent: str
    bottle: str
    backend: str
    started_at: str
    home: str
    status: str  # compose's summary, e.g. "running(2)"
    services: dict[str, str] = field(default_factory=dict)  # service -> container state

    @property
    def services_up(self) -> int:
        return sum(1 for state in self.services.values() if state == "running")

    def to_json(self) -> dict[str, object]:
        return {
            "slug": self.slug,
            "project": self.project,
            "agent": self.agent,
            "bottle": self.bottle,
            "backend": self.backend,
            "started_at": self.started_at,
            "home": self.home,
            "status": self.status,
            "services": dict(sorted(self.services.items())),
            "services_up": self.services_up,
        }


_PS_FORMAT = (
    "\t".join(
        '{{.Label "%s"}}' % key
        for key in (
            labels.COMPOSE_PROJECT,
            labels.COMPOSE_SERVICE,
            labels.SLUG,
            labels.AGENT,
            labels.BOTTLE,
            labels.BACKEND,
            labels.STARTED_AT,
            labels.HOME,
            labels.POOL,
        )
    )
    + "\t{{.State}}\t{{.Names}}"
)


async def explain(error: CommandError) -> BottleError:
    """Turn a failed docker call into the engine's own one-line problem when the engine is the cause."""
    status = await engine_status()
    return BottleError(status.problem) if not status.ok else error


async def discover() -> list[BottleInfo]:
    """Every bottle on the engine, in two CLI calls (the engine is checked only if they fail)."""
    try:
        return await _discover()
    except CommandError as exc:
        raise await explain(exc) from exc


async def bottle_projects() -> dict[str, str]:
    """Compose projects named like ours (``claude-bottle-*``) and compose's status of each."""
    listing = await run(["docker", "compose", "ls", "--all", "--format", "json"], timeout=30)
    entries = json.loads(listing.stdout or "[]") or []
    return {e["Name"]: e.get("Status", "") for e in entries if e.get("Name", "").startswith(PROJECT_PREFIX)}


def claimed_slug(project: str, service: str, name: str) -> str | None:
    """The slug of a claimed pool member's container, from the name its claim gave it
    (``claude-bottle-<slug>-<service>``); None while it is unclaimed (still named after its project)."""
    if name == container_name(project, service):
        return None
    slug = slug_of_project(name.removesuffix(f"-{service}")) if name.endswith(f"-{service}") else None
    return slug or None


def _claimed_identity(home: str, slug: str, started: str) -> tuple[str, str]:
    """(agent, started_at) of a claimed pool member: what the metadata.json its claim wrote says,
    else what its slug (``<agent>-<hex>``) and its labels tell."""
    meta = (state_dir(Path(home), slug).read_metadata() if home else None) or {}
    return str(meta.get("agent") or slug.rsplit("-", 1)[0]), str(meta.get("started_at") or started)


async def _scan() -> tuple[list[BottleInfo], list[BottleInfo]]:
    """(bottles, unclaimed pool members) on the engine, in two CLI calls."""
    projects = await bottle_projects()
    ps = await run(
        ["docker", "ps", "--all", "--filter", f"label={labels.MANAGED}=true", "--format", _PS_FORMAT], timeout=30
    )
    found: dict[str, dict[str, object]] = {}
    pooled: set[str] = set()
    claimed: dict[str, dict[str, str]] = {}
    for line in ps.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) != 11:
            continue
        project, service, slug, agent, bottle, backend, started, home, pool, state, name = cols
        # Trust only our prefix, our labels, and a slug that matches the project name.
        if project not in projects or slug_of_project(project) != slug:
            continue
        if pool:
            pooled.add(project)
            named = claimed_slug(project, service, name)
            if named is not None:
                who, when = _claimed_identity(home, named, started)
                claimed[project] = {"slug": named, "agent": who, "started_at": when}
        entry = found.setdefault(
            project,
            {
                "slug": slug,
                "agent": agent,
                "bottle": bottle,
                "backend": backend,
                "started_at": started,
                "home": home,
                "services": {},
            },
        )
        entry["services"][service] = state  # type: ignore[index]
    for project, identity in claimed.items():  # a claimed member is the bottle its claim made
        found[project].update(identity)
        pooled.discard(project)
    infos = sorted(
        (BottleInfo(project=p, status=projects[p], **e) for p, e in found.items()),  # type: ignore[arg-type]
        key=lambda b: (b.started_at, b.slug),
    )
    return [b for b in infos if b.project not in pooled], [b for b in infos if b.project in pooled]


async def _discover() -> list[BottleInfo]:
    return (await _scan())[0]


async def pool_members() -> list[BottleInfo]:
    """The unclaimed warm pool members on the engine (each home's; not bottles yet: no agent)."""
    try:
        return (await _scan())[1]
    except CommandError as exc:
        raise await explain(exc) from exc


async def find(slug: str) -> BottleInfo:
    for info in await discover():
        if info.slug == slug:
            return info
    raise BottleError(f"no running bottle '{slug}': `bottle-tui ls` lists the running ones")


async def up(project: str, compose_file: Path, env: dict[str, str] | None = None) -> str:
    result = await run(
        compose_argv(project, "up", "--detach", "--no-build", "--pull", "never", "--quiet-pull", file=compose_file),
        timeout=180,
        env=env,
    )
    return result.stdout + result.stderr


async def down(project: str) -> str:
    result = await run(compose_argv(project, "down", "--volumes", "--remove-orphans", "--timeout", "3"), timeout=120)
    return result.stdout + result.stderr


async def logs(project: str) -> str:
    result = await run(compose_argv(project, "logs", "--no-color", "--timestamps"), timeout=60)
    return result.stdout + result.stderr


async def inspect_ids(names: list[str]) -> list[str]:
    """The ids of containers ``names``, in their order."""
    result = await run(["docker", "inspect", "--format", "{{.Id}}", *names], timeout=30)
    ids = result.stdout.split()
    if len(ids) != len(names):
        raise CommandError(result.argv, result.returncode, f"expected {len(names)} ids, got {result.stdout!r}")
    return ids


async def rename(container: str, name: str) -> None:
    await run(["docker", "rename", container, name], timeout=30)


async def container_running(name: str) -> bool:
    result = await run(["docker", "inspect", "--format", "{{.State.Running}}", name], check=False, timeout=30)
    return result.stdout.strip() == "true"


async def copy_out(container: str, src: str, dest: Path, *, missing_ok: bool = False) -> bool:
    """Copy ``src`` out of ``container``; False when it does not exist there and ``missing_ok``;
    any other failure raises."""
    result = await run(["docker", "cp", f"{container}:{src}", str(dest)], check=False, timeout=120)
    if result.returncode == 0:
        return True
    if missing_ok and "Could not find the file" in result.stderr:
        return False
    raise CommandError(result.argv, result.returncode, result.stderr)


async def send_signal(container: str, signal: str) -> str | None:
    """`docker kill --signal` to ``container``; the engine's last line of complaint when it failed, else None."""
    result = await run(["docker", "kill", "--signal", signal, container], check=False, timeout=30)
    if result.returncode != 0:
        return (result.stderr.strip().splitlines() or ["no answer"])[-1][:200]
    return None


async def exec_capture(container: str, argv: list[str], *, timeout: float = 60) -> tuple[int, str]:
    result = await run(["docker", "exec", container, *argv], check=False, timeout=timeout)
    return result.returncode, result.stdout


def exec_argv(container: str, argv: list[str], *, tty: bool, env: dict[str, str] | None = None) -> list[str]:
    """`docker exec` of ``argv`` in ``container``, stdin attached (and a terminal when ``tty``)."""
    flags = ["-it"] if tty else ["-i"]
    for name, value in (env or {}).items():
        flags += ["-e", f"{name}={value}"]
    return ["docker", "exec", *flags, container, *argv]


async def stray_resources(live_projects: Iterable[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Containers and networks carrying our labels that belong to none of ``live_projects``
    (those go with their project's `compose down`), as (id, home label) pairs."""
    live = set(live_projects)
    found: list[list[tuple[str, str]]] = []
    fmt = '{{.ID}}\t{{.Label "%s"}}\t{{.Label "%s"}}' % (labels.COMPOSE_PROJECT, labels.HOME)
    for argv in (["docker", "ps", "--all"], ["docker", "network", "ls"]):
        listing = await run([*argv, "--filter", f"label={labels.MANAGED}=true", "--format", fmt], timeout=30)
        rows = [(line.split("\t") + ["", ""])[:3] for line in listing.stdout.splitlines() if line.strip()]
        found.append([(row[0], row[2]) for row in rows if row[1] not in live])
    return found[0], found[1]


async def remove_containers(ids: list[str]) -> None:
    if ids:
        await run(["docker", "rm", "--force", "--volumes", *ids], check=False, timeout=120)


async def remove_networks(ids: list[str]) -> None:
    if ids:
        await run(["docker", "network", "rm", *ids], check=False, timeout=60)


def events_argv() -> list[str]:
    return [
        "docker",
        "events",
        "--filter",
        f"label={labels.MANAGED}=true",
        "--filter",
        "type=container",
        "--format",
        "{{.Action}}",
    ]
