"""`bottle-tui proposals`, `routes edit` / `dlp edit` and `diff`: deciding what an agent asks
for, editing the policy in force, and reading what an agent changed (the same library the console
uses; agent text is printed inert)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .. import ops
from ..errors import BottleError
from .common import _home, _say, _shown, _table


async def cmd_diff(args: argparse.Namespace) -> int:
    """What the agent changed since its checkout began: commits per branch, then the files
    (``--stat``: one line each; else every file's diff), or all of it as JSON (no diffs)."""
    where = await ops.locate(args.slug, _home(args))
    source = await ops.review_work(where.home, where.info)
    review = await source.review()
    if args.json or args.stat:
        review = await source.counted(review)
    if args.json:
        print(json.dumps(review.to_json(), indent=2))
        return 0
    print(_shown(f"{review.title}, {review.base_note}"))
    for note in review.notes:
        print(_shown(f"note: {note}"))
    for line in ops.review_commit_lines(review):
        print(_shown(line))
    if not review.files:
        print("no files differ from the start")
        return 0
    if args.stat:
        for line in ops.review_stat_lines(review):
            print(_shown(line))
        return 0
    patch = await source.patch(review)
    for raw in patch.data.decode("utf-8", errors="replace").splitlines():
        print(_shown(raw))
    if patch.truncated:
        _say(f"note: the diff is cut at {len(patch.data) >> 20} MiB; `--stat` lists every file")
    return 0


def _proposal_line(p: ops.Proposal) -> tuple[str, ...]:
    seen = f"x{p.data.get('count', 1)}" if p.data.get("draft") else ""
    return (p.id, p.slug, p.kind, p.status + (" draft" if p.data.get("draft") else ""), seen, _shown(p.summary()))


async def cmd_proposals(args: argparse.Namespace) -> int:
    home = _home(args)
    action = args.action
    if action == "ls":
        found = ops.list_proposals(home, include_decided=args.all)
        if args.json:
            print(json.dumps([p.data for p in found], indent=2))
            return 0
        if not found:
            _say("no proposals" if args.all else "no pending proposals (--all shows decided ones too)")
            return 0
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for line in proposal_table([_proposal_line(p) for p in found], width=width):
            print(line)
        return 0
    p = ops.find_proposal(home, args.id)
    if action == "show":
        if args.json:
            print(json.dumps(p.data, indent=2))
            return 0
        d = p.data
        for label, value in (
            ("id", p.id),
            ("bottle", p.slug),
            ("kind", p.kind),
            ("status", p.status),
            ("asked", p.summary()),
            ("draft", f"yes, seen {d.get('count')} times, last {d.get('last_seen')}" if d.get("draft") else "no"),
            ("created", d.get("created_at")),
            ("reason", d.get("reason") or "-"),
            ("context", d.get("context") or "-"),
        ):
            print(f"{label:<9}{_shown(value)}")
        if d.get("decision"):
            dec = d["decision"]
            scope = f", scope {dec['scope']}" if dec.get("scope") else ""
            print(f"{'decided':<9}{_shown(dec.get('by'))} at {dec.get('at')}{scope}")
            if dec.get("change"):
                print(f"{'final':<9}{_shown(json.dumps(dec['change']))}")
            if dec.get("note"):
                print(f"{'note':<9}{_shown(dec['note'])}")
            if dec.get("home"):
                print(f"{'home':<9}{_shown(dec['home'])}")
        if p.kind == "git-push":
            print(f"{'lands in':<9}{_shown(ops.git_push_target(p))}" + ("" if p.pending else " (as decided above)"))
            if d.get("stat"):
                print(f"{'stat':<9}{_shown(d['stat'])}")
            print("commits")
            for c in d.get("commits") or []:
                print(f"  {_shown(str(c.get('id', ''))[:12])} {_shown(c.get('subject'))} ({_shown(c.get('author'))})")
            if p.change.get("commits", 0) > len(d.get("commits") or []):
                print(f"  ... {p.change['commits']} commits in all")
            print("diff")
            for line in ops.proposal_diff(home, p).splitlines():
                print(f"  {_shown(line)}")
        elif p.kind == "budget":
            spent = d.get("budget") or {}
            if isinstance(spent.get("spent_usd"), (int, float)):
                print(
                    f"{'spent':<9}{ops.usd_text(spent['spent_usd'])}, {ops.tokens_text(int(spent.get('spent_tokens') or 0))} tokens"
                )
            if p.pending:
                print(f"{'budget':<9}{_shown(ops.proposal_diff(home, p))}")
        elif p.pending:
            print("policy   what approving it as asked does to routes.yaml:")
            for line in ops.proposal_diff(home, p).splitlines():
                print(f"  {_shown(line)}")
        print("history")
        for line in ops.proposal_history(home, p):
            print(f"  {_shown(line)}")
        return 0
    change = None
    if action == "modify":
        change = await _edit_change(p, args.file)
    decided = await ops.decide(
        home,
        p.id,
        action,
        by=ops.operator("cli"),
        scope=getattr(args, "scope", "always"),
        change=change,
        note=getattr(args, "note", "") or "",
    )
    if decided.reload_warning:
        _say(f"warning: {decided.reload_warning}")
    home_line = f" (brought home: {_shown(decided.home)})" if decided.home else ""
    _say(
        f"{p.id}: {decided.proposal.status}"
        + (
            (" (metering.json updated)" if p.kind == "budget" else " (routes.yaml updated)")
            if decided.policy_changed
            else ""
        )
        + home_line
        + decided.forwarding
    )
    return 0


PROPOSAL_HEADER = ("ID", "SLUG", "KIND", "STATUS", "SEEN", "WHAT")
MIN_WHAT_WIDTH = 30


def proposal_table(rows: list[tuple[str, ...]], *, width: int | None) -> list[str]:
    """`proposals ls` as lines. The last column (what is asked) is never cut: on a terminal of
    ``width`` columns it wraps onto lines of its own under the column (at least
    MIN_WHAT_WIDTH wide); with no width (a pipe) each proposal is one line, however long."""
    if width is None:
        return _table([PROPOSAL_HEADER, *rows])
    lines = _table([PROPOSAL_HEADER, *(row[:-1] + ("",) for row in rows)])
    indent = len(lines[0]) - len(PROPOSAL_HEADER[-1])
    room = max(width - indent - 1, MIN_WHAT_WIDTH)
    out = [lines[0]]
    for line, row in zip(lines[1:], rows, strict=True):
        what = row[-1]
        parts = [what[i : i + room] for i in range(0, len(what), room)] or [""]
        out.append(line.ljust(indent) + parts[0])
        out += [" " * indent + part for part in parts[1:]]
    return out


async def _edit_in_editor(text: str, suffix: str, problem: str = "") -> str:
    """Open ``text`` in $EDITOR (through the runner) and return what was saved."""
    from ..runner import edit_text

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise BottleError("no editor: set $EDITOR (or pass --file for proposals modify)")
    if not sys.stdin.isatty():
        raise BottleError("editing needs a terminal: run it from an interactive shell, or pass --file")
    header = "".join(f"# error: {line}\n" for line in problem.splitlines()) + (
        "# fix the error above and save; an unchanged file cancels\n" if problem else ""
    )
    return await edit_text(editor, header + text, suffix)


async def _edit_change(p: ops.Proposal, file: str | None) -> dict[str, Any]:
    import yaml

    if file:
        source = Path(file)
        try:
            return ops.check_change(p, yaml.safe_load(source.read_text()), source=source)
        except (OSError, yaml.YAMLError) as exc:
            raise BottleError(f"{file}: cannot read the change: {exc}") from exc
    text = yaml.safe_dump(p.change, sort_keys=False)
    problem = ""
    while True:
        saved = await _edit_in_editor(text, ".yaml", problem)
        body = "".join(line for line in saved.splitlines(keepends=True) if not line.startswith("# "))
        if body.strip() == text.strip() and problem:
            raise BottleError("modify cancelled: the change was saved unchanged")
        try:
            return ops.check_change(p, yaml.safe_load(body))
        except (BottleError, yaml.YAMLError) as exc:
            problem, text = str(exc), body


async def cmd_policy(args: argparse.Namespace) -> int:
    """routes edit SLUG / dlp edit SLUG: the policy in force (routes.yaml: the routes and their DLP
    settings) in $EDITOR, validated on save, applied live."""
    home = _home(args)
    state, before = ops.read_policy(home, args.slug)
    text, problem = before, ""
    while True:
        saved = await _edit_in_editor(text, ".yaml", problem)
        body = "".join(
            line
            for line in saved.splitlines(keepends=True)
            if not line.startswith("# error: ") and not line.startswith("# fix the error")
        )
        if body == before:
            _say("routes.yaml unchanged")
            return 0
        try:
            ops.check_policy(body, state)
            break
        except BottleError as exc:
            problem, text = str(exc), body
    warning = await ops.save_policy(home, state.slug, before, body, by=ops.operator("cli"))
    _say(f"warning: {warning}" if warning else f"routes.yaml of {state.slug} saved and reloaded")
    return 0
