"""The swarm as bottle-tui reaches it: the docker CLI with ``--context``, through the one runner.

The manager's context places services and holds networks, secrets and configs; a node's own
context is how the host reaches a task's container on it (`docker exec`, `docker ps`, volumes),
since a manager cannot exec into a container on another node. The engine's TLS or SSH (whatever
the context says) is the only authentication.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from ...config import SwarmSettings
from ...errors import BottleError
from ...runner import CommandError, CommandNotFound, Completed, run

CALL_TIMEOUT = 30.0


def docker(context: str, *args: str) -> list[str]:
    return ["docker", "--context", context, *args]


def _last(result: Completed) -> str:
    return ((result.stderr or result.stdout).strip().splitlines() or ["no answer"])[-1][:240]


async def call(context: str, *args: str, timeout: float = CALL_TIMEOUT, input: bytes | None = None) -> Completed:
    """One docker call through ``context``; a failure is a CommandError (as the runner raises)."""
    return await run(docker(context, *args), timeout=timeout, input=input)


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    status: str  # Ready, Down, Unknown, Disconnected
    availability: str  # Active, Pause, Drain
    manager: bool = False

    @property
    def up(self) -> bool:
        return self.status.lower() == "ready"

    @property
    def schedulable(self) -> bool:
        return self.up and self.availability.lower() == "active"


class Cluster:
    """The swarm named by the home's ``swarm:`` settings."""

    def __init__(self, settings: SwarmSettings) -> None:
        self.settings = settings
        self.manager = settings.context
        self._node_context: dict[str, str] = {}
        self._contexts: set[str] | None = None  # the Docker contexts defined here
        self.calls: list[tuple[str, str]] = []  # (context, what): what `ls` cost (the bench reads it)

    async def _call(
        self, context: str, *args: str, timeout: float = CALL_TIMEOUT, input: bytes | None = None
    ) -> Completed:
        self.calls.append((context, args[0] if args else ""))
        return await call(context, *args, timeout=timeout, input=input)

    async def manager_call(self, *args: str, timeout: float = CALL_TIMEOUT, input: bytes | None = None) -> Completed:
        return await self._call(self.manager, *args, timeout=timeout, input=input)

    async def node_call(
        self, hostname: str, *args: str, timeout: float = CALL_TIMEOUT, input: bytes | None = None
    ) -> Completed:
        return await self._call(await self.node_context(hostname), *args, timeout=timeout, input=input)

    async def check_manager(self) -> None:
        """A one-line BottleError unless the manager's context exists and answers as a swarm manager."""
        try:
            info = await run(
                docker(self.manager, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"),
                check=False,
                timeout=CALL_TIMEOUT,
            )
        except CommandNotFound:
            raise BottleError("the docker CLI is not installed: swarm bottles are driven through it") from None
        except CommandError as exc:
            raise BottleError(f"the swarm manager (context {self.manager}) did not answer: {exc}") from None
        if info.returncode != 0:
            why = _last(info)
            if "context" in why and ("not found" in why or "does not exist" in why):
                raise BottleError(
                    f"config.yaml: swarm.context: no Docker context '{self.manager}' (`docker context ls` lists them; "
                    "`docker context create` makes one)"
                )
            raise BottleError(f"the swarm manager (context {self.manager}) did not answer: {why}")
        state, control = (info.stdout.split() + ["", ""])[:2]
        if state != "active" or control != "true":
            raise BottleError(
                f"the engine of context {self.manager} is not a swarm manager (swarm: {state or 'inactive'}); "
                "name a manager's context in config.yaml swarm.context"
            )

    async def nodes(self) -> list[Node]:
        out = await self.manager_call(
            "node", "ls", "--format", "{{.ID}}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}"
        )
        found = []
        for line in out.stdout.splitlines():
            cols = (line.split("\t") + [""] * 5)[:5]
            if cols[0]:
                found.append(Node(cols[0], cols[1], cols[2], cols[3], bool(cols[4])))
        return found

    async def node_context(self, hostname: str, *, verify: bool = False) -> str:
        """The Docker context that reaches the node ``hostname``: the first of
        SwarmSettings.node_contexts that exists here (a local lookup, no engine asked). With
        ``verify`` (bring-up), its engine must answer as that node."""
        if hostname in self._node_context and not verify:
            return self._node_context[hostname]
        if self._contexts is None:
            listing = await run(["docker", "context", "ls", "--format", "{{.Name}}"], timeout=CALL_TIMEOUT)
            self._contexts = set(listing.stdout.split())
        tried = [c for c in self.settings.node_contexts(hostname) if c in self._contexts]
        for context in tried:
            if verify:
                info = await run(docker(context, "info", "--format", "{{.Name}}"), check=False, timeout=CALL_TIMEOUT)
                if info.returncode != 0 or info.stdout.strip() != hostname:
                    continue
            self._node_context[hostname] = context
            return context
        raise BottleError(
            f"no Docker context reaches swarm node {hostname} (tried {', '.join(self.settings.node_contexts(hostname))}): "
            f"create one, or name it in config.yaml swarm.nodes.{hostname}"
        )

    def remember_context(self, hostname: str, context: str) -> None:
        """Reach ``hostname`` through ``context`` (a bottle's metadata recorded the checked one)."""
        self._node_context[hostname] = context

    def known_node_context(self, hostname: str) -> str:
        """The context of ``hostname`` as the settings name it first, unchecked (a bottle's
        metadata records the checked one at bring-up)."""
        return self._node_context.get(hostname) or self.settings.node_contexts(hostname)[0]

    async def container_of(self, hostname: str, service: str, *, running: bool = True) -> str | None:
        """The id of ``service``'s container on node ``hostname`` (the running one; with
        ``running`` False, any that is still there), or None."""
        args = ["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}"]
        args += ["--filter", "status=running"] if running else ["--all"]
        out = await self.node_call(hostname, *args)
        ids = out.stdout.split()
        return ids[0] if ids else None

    async def wait_container(self, hostname: str, service: str, deadline: float) -> str:
        """The running container of ``service`` on ``hostname``, waited for until ``deadline``
        (a monotonic time); a one-line error with the task's own complaint when it does not come."""
        loop = asyncio.get_running_loop()
        while True:
            found = await self.container_of(hostname, service)
            if found:
                return found
            if loop.time() > deadline:
                raise BottleError(f"{service} did not start on {hostname}: {await self.task_problem(service)}")
            await asyncio.sleep(0.1)

    async def task_problem(self, service: str) -> str:
        """What the swarm says of ``service``'s newest task (its state and error), in one line."""
        try:
            out = await self.manager_call(
                "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}: {{.Error}}", service
            )
        except CommandError as exc:
            return str(exc)
        lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        return lines[0] if lines else "no task yet"

    async def inspect_services(self, label: str) -> list[dict[str, object]]:
        """The spec of every service carrying ``label`` (one `service ls` and one `service inspect`)."""
        ids = (await self.manager_call("service", "ls", "-q", "--filter", f"label={label}")).stdout.split()
        if not ids:
            return []
        out = await self.manager_call("service", "inspect", *ids)
        data = json.loads(out.stdout or "[]")
        return [d for d in data if isinstance(d, dict)]
