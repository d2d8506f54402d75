"""The seam between the host and a bottle's shared files (its proposal queue and routes.yaml):
what deciding, listing and editing the policy read and write, wherever the files are.

A local bottle's files are its state folder's sidecar folders (``LocalFiles``); a bottle on
another machine (a swarm bottle) keeps them on its node's volume, and its backend gives a
``BottleFiles`` that reaches them through the engine. Both apply a change with the contract's
``commit``: under the queue's lock, only when the queue and the policy are still as read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from bottle_contract import proposal as contract

from .state import StateDir

Conflict = contract.Conflict


class BottleFiles(Protocol):
    """One bottle's queue and policy. Blocking: call from a worker thread."""

    @property
    def slug(self) -> str: ...

    @property
    def where(self) -> str:
        """Where the files are, for messages (a folder, or a node's volume)."""

    def proposals(self) -> list[dict[str, Any]]:
        """Every well-formed proposal of the queue, oldest first."""

    def policy_text(self) -> str:
        """routes.yaml as it is in force ("" when there is none)."""

    def commit(
        self, *, expect_policy: str, policy: str | None, pending: str | None, proposal: dict[str, Any] | None
    ) -> None:
        """The contract's commit (see bottle_contract.proposal.commit); raises Conflict."""


FilesFor = Callable[[StateDir], BottleFiles]


class LocalFiles:
    """A bottle whose sidecar folders are in its state folder on this machine (bind-mounted)."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    @property
    def slug(self) -> str:
        return self.state.slug

    @property
    def where(self) -> str:
        return str(self.state.routes)

    def proposals(self) -> list[dict[str, Any]]:
        return contract.Queue(self.state.queue).all()

    def policy_text(self) -> str:
        try:
            return self.state.routes.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def commit(
        self, *, expect_policy: str, policy: str | None, pending: str | None, proposal: dict[str, Any] | None
    ) -> None:
        contract.commit(
            contract.Queue(self.state.queue),
            self.state.routes,
            expect_policy=expect_policy,
            policy=policy,
            pending=pending,
            proposal=proposal,
        )


def local_files(state: StateDir) -> BottleFiles:
    return LocalFiles(state)
