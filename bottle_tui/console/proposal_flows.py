"""The proposal dialogs' flows: the detail screen, approve (scope), modify (editor, then scope),
reject (note), each ending in one decision through ``ops.decide``. Each runs as a worker of the
app (``run``): dialogs are awaited there, never on the event loop's own task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml

from .. import ops
from ..errors import BottleError
from ..ops import Proposal
from .inert import inert
from .screens import ConfirmScreen, EditorScreen, NoteScreen, ProposalDetail, ScopeScreen

if TYPE_CHECKING:
    from pathlib import Path

    from .app import BottleConsole


def detail_sections(home: Path, p: Proposal) -> list[tuple[str, str]]:
    """What the detail screen shows (file reads: runs in a thread)."""
    d = p.data
    sections = [
        (
            "Bottle",
            f"{p.slug} · {p.kind} · {p.status}"
            + (f" · draft, seen {d.get('count', 1)} times, last {d.get('last_seen')}" if d.get("draft") else ""),
        ),
        ("Asks for", p.summary()),
        ("Reason (the agent's words)", str(d.get("reason") or "-")),
    ]
    if d.get("context"):
        sections.append(("Context", str(d["context"])))
    # (A git-push's detail is the review screen: open_detail.)
    sections.append(("Policy before → after", ops.proposal_diff(home, p)))
    sections.append(("History", "\n".join(ops.proposal_history(home, p))))
    return sections


def change_validator(p: Proposal) -> Callable[[str], dict[str, Any]]:
    """The modify editor's check: YAML, a valid change of the proposal's kind, no wider than asked."""

    def validate(text: str) -> dict[str, Any]:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise BottleError(f"change: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
        return ops.check_change(p, raw)

    return validate


def run(app: BottleConsole, p: Proposal, what: str) -> None:
    """Start the flow ``what`` (open, approve, modify, reject) for ``p`` as a dialog worker."""
    flows = {"open": open_detail, "approve": approve, "modify": modify, "reject": reject}
    app.run_worker(flows[what](app, p), group="dialog", exit_on_error=False)


async def open_detail(app: BottleConsole, p: Proposal) -> None:
    if p.kind == "git-push":
        # A push is reviewed as the agent's work is: files, commits, each file's diff (`d`'s screen).
        from .review import ReviewScreen

        try:
            source = await asyncio.to_thread(ops.review_push, app.home, p)
        except BottleError as exc:
            app.notify(inert(str(exc)).plain[:300], title="Proposal", severity="error", markup=False)
            return
        choice = await app.push_screen_wait(ReviewScreen(source, decide=p.pending))
    else:
        sections = await asyncio.to_thread(detail_sections, app.home, p)
        choice = await app.push_screen_wait(ProposalDetail(sections, pending=p.pending))
    if choice in ("approve", "modify", "reject"):
        await {"approve": approve, "modify": modify, "reject": reject}[choice](app, p)


async def approve(app: BottleConsole, p: Proposal) -> None:
    if p.kind == "git-push":
        # No scope: approving brings this one push home, to one ref.
        target = ops.git_push_target(p)
        question = f"{p.summary()}\n\n" + (
            f"Bring it home as {target}?" if target.startswith("refs/") else f"Push it to {target}?"
        )
        if await app.push_screen_wait(ConfirmScreen(f"Approve the push of {p.slug}", question)):
            await decide(app, p, "approve")
        return
    if p.kind == "budget":
        # No scope: the budget is raised for good (the next reached limit asks again).
        question = f"{p.summary()}\n\n{await asyncio.to_thread(ops.proposal_diff, app.home, p)}"
        if await app.push_screen_wait(ConfirmScreen(f"Raise the budget of {p.slug}", question)):
            await decide(app, p, "approve")
        return
    scope = await app.push_screen_wait(ScopeScreen(f"{p.slug}: {p.summary()}"))
    if scope:
        await decide(app, p, "approve", scope=scope)


async def modify(app: BottleConsole, p: Proposal) -> None:
    if p.kind == "git-push":
        app.notify("a git push is approved or rejected as pushed; ask the agent for another push", markup=False)
        return
    text = yaml.safe_dump(p.change, sort_keys=False)
    title = (
        f"Set the budget of {p.slug} (usd, tokens; null: no such limit)"
        if p.kind == "budget"
        else f"Modify {p.kind} of {p.slug} (narrow it; validated on save)"
    )
    change = await app.push_screen_wait(EditorScreen(title, text, change_validator(p)))
    if change is None:
        return
    if p.kind == "budget":
        await decide(app, p, "modify", change=change)
        return
    scope = await app.push_screen_wait(ScopeScreen(f"{p.slug}: allow the modified change"))
    if scope:
        await decide(app, p, "modify", scope=scope, change=change)


async def reject(app: BottleConsole, p: Proposal) -> None:
    note = await app.push_screen_wait(NoteScreen(f"{p.slug}: {p.summary()}"))
    if note is not None:
        await decide(app, p, "reject", note=note)


async def decide(
    app: BottleConsole, p: Proposal, action: str, *, scope: str = "always", change: object = None, note: str = ""
) -> None:
    try:
        decided = await ops.decide(
            app.home, p.id, action, by=ops.operator("console"), scope=scope, change=change, note=note
        )
    except ops.AlreadyDecided as exc:
        app.notify(inert(str(exc)).plain, title="Already decided", severity="warning", markup=False)
        app.proposals_pane.forget(p.id)
        return
    except BottleError as exc:
        app.notify(inert(str(exc)).plain, title=f"Could not {action}", severity="error", markup=False)
        return
    app.proposals_pane.forget(p.id)
    app.notify(inert(decided.line()).plain, title="Decided", markup=False)
