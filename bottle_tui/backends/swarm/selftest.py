"""`bottle-tui selftest` on a swarm bottle: the docker selftest's ``run_suite`` through a ``Site``
that reaches the bottle the way every host call to a swarm bottle does.

- The bottle's policy and egress's upstream trust are on its node's volume: read, replaced (the
  policy by the contract's commit, so a decision taken meanwhile is not lost silently) and reloaded
  through the bundle's control command; egress's reload is seen in its ready file there.
- The canary is a service of ours on the bottle's egress overlay, the bundle's way out where the
  real internet would be, pinned to the bottle's node and named only there (``*.selftest.invalid``
  as aliases). Its throwaway certificate is a Docker config and its key a Docker secret, given to
  it alone. Service, config and secret carry the bottle's labels, so `stop` and `cleanup` remove
  what a selftest that was killed left.
- The attacks and the search for the real credentials run in the agent's container through the
  node's context.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from bottle_contract import layout, workers

from ... import escape_suite
from ...bottle_files import Conflict
from ...config import load_config
from ...errors import BottleError
from ...runner import CommandError
from ...state import StateDir
from .. import BottleInfo, Progress
from ..docker import selftest as docker_selftest
from ..docker.selftest import CANARY_ARGV, RELOAD_TIMEOUT, canary_labels, reload_problem
from .channel import RemoteFiles
from .cluster import Cluster, docker
from .lifecycle import cluster_of
from .render import CONTROL, network_name, service_name

CANARY_TIMEOUT = 60.0
# Run in the bundle (its egress python): until each canary name resolves to the canary's address
# on the egress overlay and its HTTPS port answers, or the deadline passes.
CANARY_UP = """
import socket, sys, time
ip, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
names = sys.argv[3:]
while True:
    try:
        if all(ip in {a[4][0] for a in socket.getaddrinfo(n, 443)} for n in names):
            socket.create_connection((ip, 443), timeout=2).close()
            sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the canary's names did not resolve to it, or it did not answer, in time")
    time.sleep(0.1)
"""


class SwarmSite:
    """A swarm bottle as the selftest reaches it (see the module's docstring)."""

    def __init__(self, info: BottleInfo, files: RemoteFiles, cluster: Cluster, node_id: str, agent: str) -> None:
        self.info = info
        self.files = files
        self.cluster = cluster
        self.node_id = node_id
        self._agent = agent
        self.suffix = uuid.uuid4().hex[:6]
        self.made: dict[str, str] = {}  # kind (service, secret, config) -> name, as each is made

    @property
    def slug(self) -> str:
        return self.info.slug

    @property
    def agent(self) -> str:
        return self._agent

    @property
    def network(self) -> str:
        return network_name(self.slug, "egress")

    @property
    def docker(self) -> list[str]:
        return docker(self.files.context)

    async def policy(self) -> tuple[str, bytes]:
        routes = await asyncio.to_thread(self.files.policy_text)
        trust = await asyncio.to_thread(self.files.read_text, layout.EGRESS, layout.UPSTREAM_CA)
        return routes, (trust or "").encode()

    async def put(self, routes: str, trust: bytes, *, was: str) -> None:
        """The policy first: when it changed meanwhile (a decision or an edit), nothing is written."""
        try:
            await asyncio.to_thread(self.files.commit, expect_policy=was, policy=routes, pending=None, proposal=None)
        except Conflict:
            raise BottleError(
                f"the policy of {self.slug} changed while selftest ran (a decision or an edit): "
                f"check it with `bottle-tui routes edit {self.slug}`"
            ) from None
        await asyncio.to_thread(self.files.write_text, layout.EGRESS, layout.UPSTREAM_CA, trust.decode())

    async def _ready(self) -> str:
        return await asyncio.to_thread(self.files.read_text, layout.EGRESS, layout.READY) or ""

    async def reload(self) -> None:
        before = _doc(await self._ready())
        await asyncio.to_thread(self.files.reload)
        deadline = asyncio.get_running_loop().time() + RELOAD_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            info = _doc(await self._ready())
            # Every worker took the new policy (or refused it), not only the first to answer.
            if workers.reloaded(before, info):
                reload_problem(info)
                return
            await asyncio.sleep(0.1)
        raise BottleError(f"egress of {self.slug} on node {self.files.node} did not reload within {RELOAD_TIMEOUT:g} s")

    async def requests_log(self) -> list[dict[str, Any]]:
        text = await asyncio.to_thread(self.files.read_text, layout.EGRESS, layout.REQUESTS_LOG)
        return escape_suite.parse_requests_log(text or "")

    def _labels(self) -> list[str]:
        return [f"--label={label}" for label in canary_labels(self.info)]

    async def start_canary(self, pki: Path, names: tuple[str, ...], progress: Progress) -> str:
        image = (
            await self.cluster.manager_call(
                "service",
                "inspect",
                "--format",
                "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                service_name(self.slug, "sidecars"),
            )
        ).stdout.strip()
        name = service_name(self.slug, f"selftest-{self.suffix}")
        progress(f"starting canary service {name} on {self.network}, on node {self.files.node}")
        for kind, file in (("secret", "key.pem"), ("config", "cert.pem")):
            object_name = f"{name}-{kind}"
            await self.cluster.manager_call(
                kind, "create", *self._labels(), object_name, "-", input=(pki / file).read_bytes()
            )
            self.made[kind] = object_name
        registry = load_config(Path(self.info.home)).registry if self.info.home else None
        container_labels = [f"--container-label={label}" for label in canary_labels(self.info)]
        self.made["service"] = name
        await self.cluster.manager_call(
            "service",
            "create",
            "--detach",
            "--name",
            name,
            *self._labels(),
            *container_labels,
            "--replicas",
            "1",
            "--restart-condition",
            "none",
            "--constraint",
            f"node.id=={self.node_id}",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            ",".join([f"name={self.network}", *(f"alias={n}" for n in names)]),
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_BIND_SERVICE",
            "--secret",
            f"source={self.made['secret']},target=canary-key.pem,mode=0400",
            "--config",
            f"source={self.made['config']},target=/pki/cert.pem,mode=0444",
            *(["--with-registry-auth"] if registry else ["--no-resolve-image"]),
            "--entrypoint",
            CANARY_ARGV[0],
            image,
            *CANARY_ARGV[1:],
            "/pki/cert.pem",
            "/run/secrets/canary-key.pem",
        )
        node = self.files.node
        deadline = asyncio.get_running_loop().time() + CANARY_TIMEOUT
        container = await self.cluster.wait_container(node, name, deadline)
        networks = json.loads(
            (
                await self.cluster.node_call(
                    node, "inspect", "--format", "{{json .NetworkSettings.Networks}}", container
                )
            ).stdout.strip()
            or "{}"
        )
        ip = str((networks.get(self.network) or {}).get("IPAddress") or "")
        if not ip:
            raise BottleError(f"the canary of {self.slug} has no address on {self.network}")
        bundle = await asyncio.to_thread(self.files.bundle)
        argv = ["exec", bundle, CONTROL[0], "-c", CANARY_UP, ip, f"{CANARY_TIMEOUT:g}", *names]
        try:
            await self.cluster.node_call(node, *argv, timeout=CANARY_TIMEOUT + 10)
        except CommandError as exc:
            raise BottleError(
                f"the canary of {self.slug} on node {node} is not reachable from its bundle: {exc.stderr.strip()[-200:]}"
            ) from None
        return ip

    async def remove_canary(self) -> None:
        """Remove what start_canary made (best effort: `stop` removes by label what stays)."""
        service = self.made.get("service")
        try:
            if service:
                await self.cluster.manager_call("service", "rm", service)
                label = f"label=com.docker.swarm.service.name={service}"
                ids = (await self.cluster.node_call(self.files.node, "ps", "-aq", "--filter", label)).stdout.split()
                if ids:
                    await self.cluster.node_call(self.files.node, "rm", "--force", *ids)
            for kind in ("secret", "config"):
                if kind in self.made:
                    await self.cluster.manager_call(kind, "rm", self.made[kind])
        except (BottleError, CommandError):
            pass


async def run_selftest(
    state: StateDir, info: BottleInfo, files: RemoteFiles, progress: Progress, *, environ: dict[str, str]
) -> docker_selftest.SelftestResult:
    """The escape suite against the running swarm bottle ``info``."""
    meta = state.read_metadata() or {}
    node_id = str(meta.get("node_id") or "")
    if not node_id:
        raise BottleError(f"{state.metadata} names no swarm node id: {info.slug} cannot be selftested")
    cluster = cluster_of(Path(info.home) if info.home else state.path.parents[1], meta)
    cluster.remember_context(files.node, files.context)
    agent = await cluster.container_of(files.node, service_name(info.slug, "agent"))
    if agent is None:
        raise BottleError(f"the agent of {info.slug} is not running on node {files.node}")
    site = SwarmSite(info, files, cluster, node_id, agent)
    return await docker_selftest.run_suite(site, progress, environ=environ)


def _doc(text: str) -> dict[str, Any]:
    """A ready file's JSON ({} when there is none yet, or it is not JSON)."""
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
