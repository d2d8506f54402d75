"""The engine as the control channel: a swarm bottle's queue and policy live on its node's
volume, and the host reaches them only by `docker exec` of the bundle's control command through
the node's Docker context (the engine's TLS or SSH is the authentication; no port, no credential
of ours). The commit runs in the bundle with the contract's code, under the queue's lock there.
"""

from __future__ import annotations

import json
from typing import Any

from bottle_contract import layout

from ...bottle_files import Conflict
from ...errors import BottleError
from ...runner import Completed, LineSession, run_blocking
from ...state import StateDir
from .cluster import docker
from .render import CONTROL, service_name

EXEC_TIMEOUT = 60.0
# The running bundle container of each bottle, by (node context, slug): looked up once per
# process, and again when an exec finds it gone (a restarted task is a new container).
_BUNDLES: dict[tuple[str, str], str] = {}
GONE = ("No such container", "is not running")
# One control session per bottle and process (a console keeps it for its life).
_SESSIONS: dict[tuple[str, str], LineSession] = {}


class RemoteFiles:
    """A swarm bottle's files, through its bundle's control command (blocking: a worker thread's)."""

    def __init__(self, state: StateDir, node: str, context: str) -> None:
        self.state = state
        self.node = node
        self.context = context
        self.calls = 0  # docker calls made (the bench reads it)

    @property
    def slug(self) -> str:
        return self.state.slug

    @property
    def where(self) -> str:
        return f"{layout.bundle_path(layout.EGRESS, layout.ROUTES)} of {self.slug} on node {self.node}"

    def _docker(self, *args: str, input: bytes | None = None, timeout: float = EXEC_TIMEOUT) -> Completed:
        self.calls += 1
        return run_blocking(docker(self.context, *args), check=False, timeout=timeout, input=input)

    def bundle(self) -> str:
        """The bundle's running container on the node."""
        key = (self.context, self.slug)
        if key not in _BUNDLES:
            label = f"label=com.docker.swarm.service.name={service_name(self.slug, 'sidecars')}"
            found = self._docker("ps", "-q", "--filter", label, "--filter", "status=running").stdout.split()
            if not found:
                raise BottleError(f"the bundle of {self.slug} is not running on node {self.node}")
            _BUNDLES[key] = found[0]
        return _BUNDLES[key]

    def _on_bundle(self, before: list[str], after: list[str], input: bytes | None = None) -> Completed:
        """``docker BEFORE <bundle> AFTER``, once more when the container is gone."""
        out = self._docker(*before, self.bundle(), *after, input=input)
        if out.returncode != 0 and any(marker in out.stderr for marker in GONE):
            _BUNDLES.pop((self.context, self.slug), None)  # a restarted task: find the new one once
            out = self._docker(*before, self.bundle(), *after, input=input)
        return out

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request to the bundle's control session (`bottle_control serve`, one exec kept per
        bottle and process); the session starts again, once, when its container has gone."""
        for _attempt in range(2):
            key = (self.context, self.slug)
            session = _SESSIONS.get(key)
            if session is None:
                self.calls += 1
                session = _SESSIONS[key] = LineSession(
                    docker(self.context, "exec", "-i", self.bundle(), *CONTROL, "serve"), timeout=EXEC_TIMEOUT
                )
            answer = session.ask(json.dumps(request))
            if answer is not None:
                data: dict[str, Any] = json.loads(answer)
                return data
            _SESSIONS.pop(key, None)
            _BUNDLES.pop(key, None)  # a restarted task: find the new container
        raise BottleError(f"the control session of {self.slug} on node {self.node} ended without answering")

    def watch_argv(self) -> list[str]:
        """The bundle's `bottle_control watch`: a JSON line per change of a proposal or the status."""
        return docker(self.context, "exec", self.bundle(), *CONTROL, "watch")

    def reload(self) -> None:
        """SIGHUP to the bundle: its init forwards it to egress, which re-reads routes.yaml."""
        out = self._on_bundle(["kill", "--signal", "HUP"], [])
        if out.returncode != 0:
            raise BottleError(_last(out))

    def proposals(self) -> list[dict[str, Any]]:
        answer = self.ask({"op": "queue"})
        if answer["code"] != 0:
            raise BottleError(f"reading the queue of {self.slug} on {self.node} failed: {answer.get('error')}")
        found: list[dict[str, Any]] = answer["proposals"]
        return found

    def policy_text(self) -> str:
        return self.read_text(layout.EGRESS, layout.ROUTES) or ""

    def read_text(self, folder: str, name: str) -> str | None:
        """A file of a sidecar folder on the bundle's volume (None: there is none)."""
        answer = self.ask({"op": "read", "folder": folder, "name": name})
        if answer["code"] == 4:
            return None
        if answer["code"] != 0:
            raise BottleError(f"reading {folder}/{name} of {self.slug} on {self.node} failed: {answer.get('error')}")
        return str(answer["text"])

    def write_text(self, folder: str, name: str, text: str) -> None:
        """Replace one of the files the host writes outside a commit (the control command's WRITABLE)."""
        answer = self.ask({"op": "write", "folder": folder, "name": name, "text": text})
        if answer["code"] != 0:
            raise BottleError(f"writing {folder}/{name} of {self.slug} on {self.node} failed: {answer.get('error')}")

    def commit(
        self, *, expect_policy: str, policy: str | None, pending: str | None, proposal: dict[str, Any] | None
    ) -> None:
        request = {"expect_policy": expect_policy, "policy": policy, "pending": pending, "proposal": proposal}
        answer = self.ask({"op": "commit", "request": request})
        if answer["code"] == 5:
            raise Conflict(str(answer.get("problem") or "conflict"), answer.get("current"))
        if answer["code"] != 0:
            raise BottleError(
                f"applying the decision in the bundle of {self.slug} on {self.node} failed: {answer.get('error')}"
            )


def _last(result: Completed) -> str:
    return ((result.stderr or result.stdout).strip().splitlines() or [f"status {result.returncode}"])[-1][:240]
