"""Bring a swarm bottle up and take it down; find every swarm bottle in a few calls.

Bring-up: the host makes the egress CA and the bundle's files in the state folder as for a
docker bottle, picks the schedulable node with the fewest bottles, creates the bottle's two
overlays, its secrets and the agent's CA config on the manager, then the bundle service and the
agent service, both pinned to that node (a restarted task comes back there, to its volumes). The
bundle's init waits until the host has seeded its state volume through `docker exec` of the
control command; then the sidecar folders leave the host (the bundle's copy is the one in force).
A failed bring-up removes what it made: services, networks, secrets, config and volumes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bottle_contract import layout
from bottle_contract.files import atomic_write

from ...config import SwarmSettings, load_config
from ...errors import BottleError
from ...manifest import default_home
from ...plan import CA_CERT_NAME, TRANSCRIPTS, BottlePlan
from ...runner import CommandError, run
from ...state import StateDir, project_name, remove_tree, state_dir
from .. import BottleInfo, StopReport
from ..docker import labels, workspace
from ..docker.lifecycle import (
    REGISTER_SUPERVISE,
    append_log,
    archive_state,
    make_egress_ca,
    write_bundle_files,
    write_metadata,
)
from .cluster import Cluster, Node
from .render import BUNDLE_UID, CONTROL, NODE_LABEL, render_swarm, service_name, state_volume

READY_TIMEOUT = 60.0
Progress = Callable[[str], None]
NODE_DOWN = "node down"


def settings_for(home: Path) -> SwarmSettings:
    """The home's ``swarm:`` settings; a one-line error naming config.yaml when there are none."""
    settings = load_config(home).swarm
    if settings is None:
        raise BottleError(
            f"{home / 'config.yaml'}: swarm: missing; backend: swarm bottles need the swarm manager's Docker context, "
            "e.g. swarm: {context: bottle-tui-lab}"
        )
    return settings


def cluster_of(home: Path, meta: dict[str, Any] | None = None) -> Cluster:
    """The cluster a bottle ran on: the manager context its metadata names, else the home's."""
    settings = load_config(home).swarm
    context = str((meta or {}).get("swarm_context") or "")
    if settings is None and not context:
        raise BottleError(f"{home / 'config.yaml'}: swarm: missing, and the bottle's metadata names no swarm")
    if settings is None or (context and context != settings.context):
        settings = SwarmSettings(context=context or (settings.context if settings else ""))
    return Cluster(settings)


def choose_node(nodes: list[Node], bottles_on: dict[str, int]) -> Node:
    """A schedulable node with the fewest bottles (ties: one at random, so that bottles started
    at the same time spread too); a one-line error when none is."""
    ready = [n for n in nodes if n.schedulable]
    if not ready:
        raise BottleError("no node of the swarm is ready and active: `docker node ls` on the manager says why")
    fewest = min(bottles_on.get(n.hostname, 0) for n in ready)
    return random.choice(sorted((n for n in ready if bottles_on.get(n.hostname, 0) == fewest), key=lambda n: n.id))


def seed_tar(state: StateDir) -> bytes:
    """The sidecar folders of ``state`` as the tar the bundle's `bottle_control seed` reads."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in layout.SIDECAR_FOLDERS:
            root = state.path / folder
            for path in sorted(root.rglob("*")) if root.is_dir() else []:
                if path.is_file() and not path.is_symlink():
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(state.path)))
                    info.uid = info.gid = BUNDLE_UID
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
    return buf.getvalue()


def _object_labels(plan: BottlePlan) -> list[str]:
    return [
        f"--label={labels.MANAGED}=true",
        f"--label={labels.SLUG}={plan.slug}",
        f"--label={labels.HOME}={plan.home}",
    ]


async def preflight(plan: BottlePlan) -> Cluster:
    settings = settings_for(plan.home)
    if plan.snapshot is not None:
        raise BottleError(
            f"snapshot {plan.snapshot.name}: a fork cannot start on a swarm yet ({plan.bottle.path} says backend: swarm, "
            f"and the snapshot's image is on this engine only); start {plan.agent.name} without --from"
        )
    if plan.bottle.git:
        raise BottleError(
            f"{plan.bottle.path}: git: a swarm bottle has no git gate yet (its mirror would live on the node's volume, "
            "which `diff` and git-push review cannot read yet); remove git: or use backend: docker"
        )
    cluster = Cluster(settings)
    await cluster.check_manager()
    return cluster


async def _exec(
    cluster: Cluster,
    node: str,
    container: str,
    argv: list[str],
    *,
    input: bytes | None = None,
    timeout: float = 60,
    user: str | None = None,
) -> tuple[int, str, str]:
    context = await cluster.node_context(node)
    args = ["exec", *(["-i"] if input is not None else []), *(["--user", user] if user else []), container, *argv]
    cluster.calls.append((context, "exec"))
    result = await run(["docker", "--context", context, *args], check=False, timeout=timeout, input=input)
    return result.returncode, result.stdout, result.stderr


async def start(plan: BottlePlan, progress: Progress) -> None:
    cluster = await preflight(plan)
    registry = load_config(plan.home).registry
    state = plan.state
    state.create()
    log = state.bringup_log
    append_log(log, f"starting swarm bottle {plan.slug}: agent {plan.agent.name}, bottle {plan.bottle.name}")
    node: Node | None = None
    try:
        await make_egress_ca(state, plan.slug)
        write_bundle_files(plan)
        nodes, services = await asyncio.gather(cluster.nodes(), cluster.inspect_services(f"{labels.MANAGED}=true"))
        bottles_on: dict[str, int] = {}
        for svc in services:
            host = _labels(svc).get(NODE_LABEL, "")
            bottles_on[host] = bottles_on.get(host, 0) + 1
        node = choose_node(nodes, bottles_on)
        node_context = await cluster.node_context(node.hostname, verify=True)
        write_metadata(
            plan, swarm_context=cluster.manager, node=node.hostname, node_id=node.id, node_context=node_context
        )
        progress(f"placing {plan.project} on node {node.hostname}")
        append_log(log, f"node {node.hostname} ({node.id})")
        if registry is None:
            await _require_images(cluster, node.hostname, plan)
        env_values = _secret_values(plan)
        spec = render_swarm(
            plan, node_id=node.id, node_hostname=node.hostname, registry=registry, given=list(env_values)
        )
        seed = seed_tar(state)
        ca = (state.ca / CA_CERT_NAME).read_bytes()
        await asyncio.gather(
            *(cluster.manager_call(*argv) for argv in spec.networks),
            *(
                cluster.manager_call(
                    "secret", "create", *_object_labels(plan), name, "-", input=env_values[env].encode()
                )
                for name, env in spec.secrets.items()
            ),
            cluster.manager_call("config", "create", *_object_labels(plan), spec.ca_config, "-", input=ca),
        )
        if missing_env := [env for env in plan.secret_env_names if env not in env_values]:
            append_log(log, f"not set here, so not given to the bundle: {', '.join(missing_env)}")
        await asyncio.gather(cluster.manager_call(*spec.bundle), cluster.manager_call(*spec.agent))
        append_log(log, "services created; seeding the bundle's state")
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        bundle = await cluster.wait_container(node.hostname, spec.names["sidecars"], deadline)
        code, _, err = await _exec(cluster, node.hostname, bundle, [*CONTROL, "seed"], input=seed)
        if code not in (0, 3):
            raise BottleError(f"seeding the bundle of {plan.slug} failed (status {code}): {err.strip()[-200:]}")
        for folder in layout.SIDECAR_FOLDERS:  # the bundle's copy is the one in force now
            remove_tree(state.path / folder)
        daemons = ["egress"] + (["supervise"] if plan.supervise_url else [])
        agent_ready = asyncio.ensure_future(cluster.wait_container(node.hostname, spec.names["agent"], deadline))
        try:
            code, out, err = await _exec(
                cluster,
                node.hostname,
                bundle,
                [*CONTROL, "ready", ",".join(daemons), "--timeout", f"{READY_TIMEOUT:g}"],
                timeout=READY_TIMEOUT + 10,
            )
            if code != 0:
                raise BottleError(
                    f"bottle {plan.slug} did not become ready within {READY_TIMEOUT:g} s: {(out or err).strip()[-200:]}; see {log}"
                )
            problem = (json.loads(out).get("egress") or {}).get("routes_error")
            if problem:
                raise BottleError(
                    f"egress of {plan.slug} refused its policy ({problem}); fix {plan.bottle.path} and start again"
                )
            agent = await agent_ready
        finally:
            agent_ready.cancel()
        if plan.supervise_url:
            code, out, err = await _exec(
                cluster, node.hostname, agent, ["python3", "-c", REGISTER_SUPERVISE, plan.supervise_url]
            )
            if code != 0:
                raise BottleError(
                    f"registering supervise in claude's config failed (status {code}): {(err or out).strip()[-200:]}"
                )
        append_log(log, "ready")
    except BaseException as exc:
        append_log(log, f"bring-up failed: {exc}")
        problems, _ = await remove_bottle(cluster, plan.slug, node.hostname if node else None, keep_volumes=False)
        for line in problems:
            append_log(log, f"while removing it: {line}")
        if isinstance(exc, CommandError):
            raise BottleError(f"bringing up {plan.slug} failed: {exc}; see {log}") from exc
        raise


async def _require_images(cluster: Cluster, node: str, plan: BottlePlan) -> None:
    refs = [plan.images["agent"], plan.images["sidecars"]]
    listing = await cluster.node_call(node, "image", "ls", "--format", IMAGE_LS_FORMAT)
    missing = missing_images(listing.stdout, refs)
    if missing:
        raise BottleError(no_images_message(node, await cluster.node_context(node), missing))


IMAGE_LS_FORMAT = "{{.Repository}}:{{.Tag}}"


def missing_images(listing: str, refs: list[str]) -> list[str]:
    """Which of ``refs`` a node's `docker image ls --format IMAGE_LS_FORMAT` does not list."""
    have = {line.strip() for line in listing.splitlines()}
    return [r for r in refs if r not in have]


def no_images_message(node: str, context: str, missing: list[str]) -> str:
    """A node without the bottle images: the one line naming it and the commands that fix it."""
    return (
        f"swarm node {node} does not have {', '.join(missing)}: load them there "
        f"(`docker save {' '.join(missing)} | docker --context {context} load`; `make swarm-lab` does, for the lab) "
        "or push them to a registry the nodes reach (`bottle-tui images push REGISTRY`, then images: {registry: REGISTRY} "
        "in config.yaml)"
    )


def _secret_values(plan: BottlePlan) -> dict[str, str]:
    return {name: os.environ[name] for name in plan.secret_env_names if os.environ.get(name)}


def _labels(service: dict[str, Any]) -> dict[str, str]:
    spec = service.get("Spec")
    found = spec.get("Labels") if isinstance(spec, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


async def remove_bottle(cluster: Cluster, slug: str, node: str | None, *, keep_volumes: bool) -> tuple[list[str], bool]:
    """Remove the bottle's services, then (its containers gone from ``node``) its volumes there,
    then its networks, secrets and config. Each failure is one line; none stops the rest. Returns
    the problems and whether something stays on the node (it did not answer)."""
    problems: list[str] = []
    on_node = False
    services = [service_name(slug, "agent"), service_name(slug, "sidecars")]

    async def attempt(what: str, *args: str, ok: tuple[str, ...] = ("not found", "No such")) -> None:
        try:
            await cluster.manager_call(*args, timeout=60)
        except CommandError as exc:
            if not any(marker in exc.stderr for marker in ok):
                problems.append(f"removing {what} failed: {exc}")

    by_label = f"label={labels.SLUG}={slug}"
    try:  # a selftest's canary too, when that selftest was killed before it removed it
        listed = await cluster.manager_call("service", "ls", "--filter", by_label, "--format", "{{.Name}}")
        others = [name for name in listed.stdout.split() if name not in services]
    except CommandError:
        others = []
    await attempt("the services", "service", "rm", *services, *others)
    if node is not None:
        try:
            # What stays of the bottle is saved already: the node's engine removes its containers at
            # once, where the swarm's own shutdown of removed tasks takes some 8 s.
            ids = (await cluster.node_call(node, "ps", "-aq", "--filter", by_label)).stdout.split()
            if ids:
                await cluster.node_call(node, "rm", "--force", *ids, timeout=60)
            await _wait_gone(cluster, node, services)
            if not keep_volumes:
                await cluster.node_call(
                    node, "volume", "rm", "--force", state_volume(slug), workspace.volume_name(slug)
                )
        except (BottleError, CommandError) as exc:
            on_node = True
            problems.append(
                f"the volumes of {slug} stay on node {node} ({exc}); `bottle-tui cleanup` removes them when it answers"
            )
    await _remove_networks(cluster, by_label, problems)
    for kind in ("secret", "config"):
        try:
            ids = (await cluster.manager_call(kind, "ls", "-q", "--filter", by_label)).stdout.split()
        except CommandError as exc:
            problems.append(f"listing the {kind}s of {slug} failed: {exc}")
            continue
        if ids:
            await attempt(f"{kind}s {' '.join(ids)}", kind, "rm", *ids)
    return problems, on_node


async def _remove_networks(cluster: Cluster, by_label: str, problems: list[str], timeout: float = 20.0) -> None:
    """Remove the bottle's overlay networks, and return once the manager lists none of them. For a
    few seconds after its services went, the manager refuses a network whose removed tasks it has
    not yet seen leave ("active endpoints"), and a removed one may still be listed while the
    manager's own engine lets go of it: wait for both."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ids = (await cluster.manager_call("network", "ls", "-q", "--filter", by_label)).stdout.split()
            if not ids:
                return
            await cluster.manager_call("network", "rm", *ids, timeout=60)
        except CommandError as exc:
            busy = any(m in exc.stderr for m in ("active endpoints", "in use", "not found", "No such"))
            if not busy or time.monotonic() > deadline:
                problems.append(f"removing the networks of {by_label.rpartition('=')[2]} failed: {exc}")
                return
        else:
            if time.monotonic() > deadline:
                problems.append(f"the networks of {by_label.rpartition('=')[2]} were removed but are still listed")
                return
        await asyncio.sleep(0.2)


async def _wait_gone(cluster: Cluster, node: str, services: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = [s for s in services if await cluster.container_of(node, s, running=False)]
        if not left:
            return
        if time.monotonic() > deadline:
            raise BottleError(f"the containers of {', '.join(left)} are still there after {timeout:g} s")
        await asyncio.sleep(0.1)


async def stop(home: Path, slug: str, progress: Progress, *, keep: bool = False) -> StopReport:
    """Save what an operator wants afterwards (the services' logs, the transcript, egress's
    decisions from the bundle's volume), remove the bottle, archive, and remove the state folder."""
    if keep:
        raise BottleError(f"{slug} is a swarm bottle, which cannot be kept for resume yet: stop it without --keep")
    state = state_dir(home, slug)
    meta = state.read_metadata() or {}
    cluster = cluster_of(home, meta)
    node = str(meta.get("node") or "") or None
    report = StopReport(slug)

    def problem(message: str) -> None:
        report.problems.append(message)
        progress(f"warning: {message}")
        if state.path.is_dir():
            append_log(state.teardown_log, f"warning: {message}")

    have_state = state.path.is_dir()
    if have_state:
        append_log(state.teardown_log, f"stopping swarm bottle {project_name(slug)} on node {node or '?'}")
        await _save_what_stays(cluster, state, node, slug, problem)
    progress(f"stopping {project_name(slug)}")
    problems, on_node = await remove_bottle(cluster, slug, node, keep_volumes=False)
    for line in problems:
        problem(line)
    if have_state:
        append_log(state.teardown_log, "stopped" if not on_node else "stopped; its volumes stay on its node")
        report.archive, archive_problems = archive_state(home, state, problem)
        if on_node:
            # Kept: `bottle-tui cleanup` finds the bottle by it and removes the volumes when the node answers.
            problem(f"kept {state.path} until the volumes on node {node} are removed")
        elif not archive_problems:
            for line in state.remove():
                problem(line)
    return report


async def service_logs(cluster: Cluster, slug: str) -> tuple[str, list[str]]:
    """What the bottle's two services logged (timestamped, through the manager), and one line per
    service whose logs could not be read (a service gone already is not one)."""
    logs, problems = [], []
    for service in ("sidecars", "agent"):
        try:
            got = await cluster.manager_call(
                "service", "logs", "--timestamps", "--no-task-ids", service_name(slug, service), timeout=60
            )
            logs.append(got.stdout + got.stderr)
        except CommandError as exc:
            if "no such task or service" not in exc.stderr:  # gone already: a stop finishing later
                problems.append(f"the logs of {service} failed: {exc}")
    return "".join(logs), problems


async def logs(info: BottleInfo) -> str:
    """`bottle-tui`'s logs view of a swarm bottle: both services' logs; a failure is a line in it."""
    home = Path(info.home) if info.home else default_home()
    meta = state_dir(home, info.slug).read_metadata() or {}
    text, problems = await service_logs(cluster_of(home, meta), info.slug)
    return text + "".join(f"error: {line}\n" for line in problems)


async def _save_what_stays(
    cluster: Cluster, state: StateDir, node: str | None, slug: str, problem: Callable[[str], None]
) -> None:
    logs, problems = await service_logs(cluster, slug)
    for line in problems:
        problem(f"saving {line}")
    if logs or not state.compose_log.exists():  # a stop finishing later keeps the first one's
        atomic_write(state.compose_log, logs, mode=0o600)
    if node is None:
        return
    try:
        bundle = await cluster.container_of(node, service_name(slug, "sidecars"))
        agent = await cluster.container_of(node, service_name(slug, "agent"))
        context = await cluster.node_context(node)
    except (BottleError, CommandError) as exc:
        problem(f"node {node} does not answer ({exc}): its egress decisions and transcript are not saved")
        return
    saved = ((layout.REQUESTS_LOG, "egress's decisions"), (layout.USAGE, "what the bottle spent"))
    for name, what in saved if bundle else ():
        assert bundle is not None
        code, out, err = await _exec(cluster, node, bundle, [*CONTROL, "read", layout.EGRESS, name])
        if code == 0:
            state.egress.mkdir(mode=0o700, exist_ok=True)
            atomic_write(state.egress / name, out, mode=0o600)
        elif code != 4:
            problem(f"reading {what} ({layout.EGRESS}/{name}) failed: {err.strip()[-200:]}")
    if agent:
        result = await run(
            ["docker", "--context", context, "cp", f"{agent}:{TRANSCRIPTS}", str(state.transcript)],
            check=False,
            timeout=120,
        )
        if result.returncode != 0 and "Could not find the file" not in result.stderr:
            problem(f"saving the transcript failed: {result.stderr.strip()[-200:]}")


def _status(states: dict[str, str]) -> str:
    up = sum(1 for s in states.values() if s == "running")
    return f"running({up})" if up else (next(iter(states.values()), "missing") if states else "missing")


async def discover(settings: SwarmSettings) -> tuple[list[BottleInfo], Cluster]:
    """Every swarm bottle: the manager asked for the services (with their labels) and the nodes,
    and each node that holds bottles asked once for its containers' states; a node that is down
    shows its bottles as ``node down``. Returns the cluster too (its ``calls`` say what it cost)."""
    cluster = Cluster(settings)
    specs, nodes = await asyncio.gather(cluster.inspect_services(f"{labels.MANAGED}=true"), cluster.nodes())
    by_host = {n.hostname: n for n in nodes}
    bottles: dict[str, dict[str, Any]] = {}
    for svc in specs:
        found = _labels(svc)
        slug = found.get(labels.SLUG, "")
        spec = svc.get("Spec")
        name = str(spec.get("Name", "")) if isinstance(spec, dict) else ""
        role = next((r for r in ("agent", "sidecars") if name == service_name(slug, r)), None)
        if not slug or role is None or found.get(labels.BACKEND) != "swarm":
            continue  # trust only our names and our labels
        entry = bottles.setdefault(slug, {"labels": found, "roles": []})
        entry["roles"].append(role)
    hosts = sorted({b["labels"].get(NODE_LABEL, "") for b in bottles.values()})

    async def states_on(host: str) -> dict[str, str] | None:
        node = by_host.get(host)
        if node is None or not node.up:
            return None
        try:
            out = await cluster.node_call(
                host,
                "ps",
                "--all",
                "--filter",
                f"label={labels.MANAGED}=true",
                "--format",
                '{{.Label "com.docker.swarm.service.name"}}\t{{.State}}',
            )
        except (BottleError, CommandError):
            return None
        found: dict[str, str] = {}
        for line in out.stdout.splitlines():
            service, _, st = line.partition("\t")
            if found.get(service) != "running":  # an older task's exited container beside the running one
                found[service] = st
        return found

    per_host = dict(zip(hosts, await asyncio.gather(*(states_on(h) for h in hosts)), strict=True))
    infos = []
    for slug, entry in bottles.items():
        lab = entry["labels"]
        host_states = per_host.get(lab.get(NODE_LABEL, ""))
        if host_states is None:
            states = {role: NODE_DOWN for role in entry["roles"]}
            status = NODE_DOWN
        else:
            states = {role: host_states.get(service_name(slug, role), "missing") for role in entry["roles"]}
            status = _status(states)
        infos.append(
            BottleInfo(
                slug=slug,
                project=project_name(slug),
                agent=lab.get(labels.AGENT, ""),
                bottle=lab.get(labels.BOTTLE, ""),
                backend="swarm",
                started_at=lab.get(labels.STARTED_AT, ""),
                home=lab.get(labels.HOME, ""),
                status=status,
                services=states,
            )
        )
    return sorted(infos, key=lambda b: (b.started_at, b.slug)), cluster
