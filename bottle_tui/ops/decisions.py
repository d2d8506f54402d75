"""The operations on proposals and the policy in force: listing, what a decision would change,
deciding (then having the bundle reload) and the operator's own edits of routes.yaml. Part of
the one ``ops`` namespace (``bottle_tui.ops`` re-exports each)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import audit, backends, policy_diff, proposals, work_review
from ..errors import BottleError
from ..proposals import Proposal
from ..state import StateDir, state_dir

AlreadyDecided = proposals.AlreadyDecided


def list_proposals(home: Path, *, include_decided: bool = False) -> list[Proposal]:
    """Proposals of every bottle of ``home``, oldest first; pending ones only unless asked (blocking)."""
    return proposals.list_all(home, include_decided=include_decided, files_for=backends.files_for)


def find_proposal(home: Path, pid: str) -> Proposal:
    """Proposal ``pid`` of any bottle of ``home``; a one-line error naming `proposals ls` (blocking)."""
    return proposals.find(home, pid, backends.files_for)[1]


def proposal_diff(home: Path, p: Proposal) -> str:
    """What approving ``p`` as asked would do: for a git-push, the diff it brings home (from the
    gate's mirror); else a unified diff of routes.yaml, or a sentence when there is nothing to
    change or it cannot be read (blocking)."""
    if p.kind == "git-push":
        return proposals.git_push_diff(state_dir(home, p.slug), p)
    try:
        state = state_dir(home, p.slug)
        return policy_diff.proposal_diff(state, p, backends.files_for(state))
    except BottleError as exc:
        return str(exc)


def review_push(home: Path, p: Proposal) -> work_review.PushReview:
    """What a git-push proposal brings, as a review source read from the gate's mirror on this
    machine (files, the branch's commits, each file's diff): what the console's review screen
    shows for it. A one-line BottleError when ``p`` is not a git-push or names no commit
    (blocking: reads gate.json)."""
    if p.kind != "git-push":
        raise BottleError(f"proposal {p.id} is a {p.kind}, not a git push: it has no commits to review")
    change = proposals.validate_change(p.kind, p.change)
    mirror = proposals.gate_mirror(state_dir(home, p.slug))
    base = change.get("base") or None
    return work_review.PushReview(
        work_review.local_exec(),
        str(mirror),
        base,
        title=f"{p.slug}: git push of {change['branch']} (proposal {p.id}, {p.status})",
        base_note=f"lands in {proposals.git_push_target(p)}; "
        + (f"since {base[:12]}" if base else "all of it is new to the operator"),
        new=str(change["new"]),
        branch=str(change["branch"]),
    )


def git_push_target(p: Proposal) -> str:
    """Where approving a git-push proposal puts its branch in the operator's repository."""
    return proposals.git_push_target(p)


def proposal_history(home: Path, p: Proposal) -> list[str]:
    """One line per event of ``p``, oldest first, from its bottle's audit log (blocking)."""
    return audit.proposal_history(state_dir(home, p.slug).audit_log, p.data)


def check_change(p: Proposal, change: object, *, source: Path | None = None) -> dict[str, Any]:
    """An operator's modification of ``p``'s change in normal form; a one-line error when it is
    not a valid change (naming ``source`` when given) or is wider than what was asked."""
    final = proposals.validate_change(p.kind, change, source=source)
    proposals.check_narrower(p.kind, final, p.change)
    return final


def check_policy(text: str, state: StateDir) -> None:
    """A one-line error naming the key when ``text`` is not a routes.yaml egress would load."""
    proposals.parse_policy(text, state.routes)


@dataclass(frozen=True)
class Decided:
    """A decision made: the proposal as decided, whether routes.yaml changed, and a warning
    when the bundle could not be asked to reload it (the policy is saved either way)."""

    proposal: proposals.Proposal
    policy_changed: bool
    reload_warning: str | None = None
    home: str | None = None  # a git-push approved: the ref it moved in the operator's repository

    @property
    def forwarding(self) -> str:
        """For a git-push approved on its way to an https upstream: what happens next."""
        if self.proposal.kind == "git-push" and self.proposal.status == "approved" and not self.home:
            return " (the git gate pushes it upstream now; the agent hears how it went on its next push)"
        return ""

    def line(self) -> str:
        """One line saying what happened (agent text in it: render it inert)."""
        updated = "metering.json" if self.proposal.kind == "budget" else "routes.yaml"
        text = f"{self.proposal.id}: {self.proposal.status}" + (f" ({updated} updated)" if self.policy_changed else "")
        text += f" (brought home: {self.home})" if self.home else ""
        text += self.forwarding
        return text + (f"; {self.reload_warning}" if self.reload_warning else "")


async def reload_policy(home: Path, slug: str) -> str | None:
    """Ask the bottle's bundle to re-read routes.yaml; a one-line warning when it could not be asked."""
    return await backends.for_state(state_dir(home, slug)).reload_policy(slug)


async def decide(
    home: Path, pid: str, action: str, *, by: str, scope: str = "always", change: object = None, note: str = ""
) -> Decided:
    """Approve, modify (``change``: the operator's narrower version) or reject proposal ``pid``
    exactly once, then have the bundle reload when the policy changed. Raises
    ``proposals.AlreadyDecided`` when someone else was first."""
    outcome = await asyncio.to_thread(
        proposals.decide,
        home,
        pid,
        action,
        by=by,
        scope=scope,
        change=change,
        note=note,
        files_for=backends.files_for,
    )
    warning = await reload_policy(home, outcome.proposal.slug) if outcome.policy_changed else None
    return Decided(outcome.proposal, outcome.policy_changed, warning, outcome.home)


def read_policy(home: Path, slug: str) -> tuple[StateDir, str]:
    """The bottle's state folder and the text of its routes.yaml (written whole, so read whole;
    blocking)."""
    state = proposals.state_for(home, slug)
    return state, proposals.read_policy(state, backends.files_for(state))[0]


async def save_policy(home: Path, slug: str, before: str, after: str, *, by: str) -> str | None:
    """Replace routes.yaml with an operator's edit ``after`` of ``before`` (validated; refused when
    a decision changed it meanwhile), audited, then reloaded. Returns the reload warning, if any."""
    state = proposals.state_for(home, slug)
    await asyncio.to_thread(proposals.save_policy_text, home, state, before, after, by, backends.files_for(state))
    return await reload_policy(home, slug)
