"""What a proposal would change in the policy in force: routes.yaml before and after, as a
unified diff (pure over the files it reads; blocking). The console's proposal detail shows it and
the CLI's `proposals show` can too."""

from __future__ import annotations

import difflib

from bottle_contract.policy import yaml_text

from . import proposals
from .bottle_files import BottleFiles
from .errors import BottleError
from .proposals import Proposal
from .state import StateDir

NO_CHANGE = "no change: the policy allows it already"


def policy_diff_text(before: str, after: str) -> str:
    """routes.yaml in force → approved, as a unified diff ('' when they are the same)."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), "routes.yaml (in force)", "routes.yaml (approved)"
        )
    )


def proposal_diff(state: StateDir, p: Proposal, files: BottleFiles | None = None) -> str:
    """The policy before → after approving ``p`` as asked; a sentence when there is no change or
    the change cannot be applied. Raises BottleError when routes.yaml cannot be read. A budget
    lives in metering.json: a sentence says what approving sets it to."""
    if p.kind == "budget":
        refused = proposals.budget_refusal(p.id, state, files) if files is not None else None
        return refused or proposals.budget_change_text(state, p.change)
    before, doc = proposals.read_policy(state, files)
    try:
        change = proposals.validate_change(p.kind, p.change)
        after = yaml_text(proposals.policy_with(doc, p.kind, change))
    except BottleError as exc:
        return f"the change cannot be applied as asked: {exc}"
    return policy_diff_text(before, after) or NO_CHANGE
