"""`bottle-tui start`, `resume`, `attach`, `exec`, `stop`, `selftest`, `ls`, `usage`, `cleanup`,
`images` and `agents`: the subcommands that start, reach, list and stop bottles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import ops
from ..errors import BottleError
from ..runner import handoff
from .common import _confirm, _home, _print_table, _say, _shown


def _attach(argv: list[str], slug: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BottleError(
            f"claude needs a terminal: run `bottle-tui attach {slug}` from an interactive shell (or `bottle-tui exec {slug} -- CMD` for a command)"
        )
    handoff(argv)


async def cmd_start(args: argparse.Namespace) -> int:
    home = _home(args)
    plan = ops.plan(home, args.agent, from_snapshot=args.from_snapshot)
    print(ops.describe(plan))
    for warning in ops.start_warnings(plan):
        _say(f"warning: {warning}")
    if args.dry_run:
        _say("dry run: nothing was started and nothing was written")
        return 0
    await ops.preflight(plan, _say)
    if not _confirm(f"start bottle {plan.slug}?", args.yes):
        _say("not started")
        return 1
    plan = await ops.start(plan, _say, preflighted=True)
    _say(f"bottle {plan.slug} is up (attach: bottle-tui attach {plan.slug}; stop: bottle-tui stop {plan.slug})")
    return _open_claude(home, plan, detach=args.detach)


def _open_claude(home: Path, plan: ops.BottlePlan, *, detach: bool) -> int:
    """After a start or resume: claude in the bottle, or the slug printed (``detach``, or no terminal)."""
    if detach or not (sys.stdin.isatty() and sys.stdout.isatty()):
        if not detach:
            _say(f"not a terminal, so claude was not opened: run `bottle-tui attach {plan.slug}` from one")
        print(plan.slug)
        return 0
    _attach(ops.attach_argv(home, plan.slug, plan.backend), plan.slug)
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    home = _home(args)
    plan = await ops.resume_plan(home, args.slug)
    plan = await ops.resume(plan, _say)
    _say(f"bottle {plan.slug} is back with its checkout and conversation (stop: bottle-tui stop {plan.slug})")
    return _open_claude(home, plan, detach=args.detach)


async def cmd_attach(args: argparse.Namespace) -> int:
    where = await ops.locate(args.slug, _home(args))
    _attach(ops.attach_argv(where.home, args.slug, where.info.backend, fresh=args.fresh), args.slug)
    return 0


async def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise BottleError("exec needs a command: bottle-tui exec SLUG -- CMD [ARGS...]")
    info = await ops.find(args.slug)
    handoff(ops.exec_argv(info, command, tty=sys.stdin.isatty() and sys.stdout.isatty()))
    return 0


async def cmd_stop(args: argparse.Namespace) -> int:
    where = await ops.locate(args.slug, _home(args))
    report = await ops.stop(where.home, where.info, _say, keep=args.keep)
    archived = f"; logs, transcript, egress decisions and usage are in {report.archive}" if report.archive else ""
    _say(f"stopped {args.slug}{archived}")
    if report.problems:
        _say(f"stopped {args.slug}, but {len(report.problems)} step(s) failed (see the warnings above)")
    return 0


async def cmd_selftest(args: argparse.Namespace) -> int:
    result = await ops.selftest(_home(args), args.slug, _say)
    print(result.report())
    return 0 if result.ok else 1


async def cmd_ls(args: argparse.Namespace) -> int:
    bottles = await ops.discover()
    for name, known in ops.availability():
        if not known.ok:
            _say(f"{name} backend: unavailable here ({known.reason})")
    if args.json:
        print(json.dumps(ops.bottles_json(bottles, _home(args)), indent=2))
        return 0
    warm = ops.waiting(_home(args))
    if warm:  # not bottles yet (no agent): `start` claims them
        _say(f"{warm} warm bottle(s) of this home wait for a start (bottle-tui pool ls)")
    if not bottles:
        _say("no bottles are running (start one: bottle-tui start implementer)")
        return 0
    rows = [("SLUG", "AGENT", "BOTTLE", "BACKEND", "STARTED", "SERVICES")]
    rows += [
        (b.slug, b.agent, b.bottle, b.backend, b.started_at, f"{b.services_up}/{len(b.services)} up") for b in bottles
    ]
    _print_table(rows)
    return 0


async def cmd_usage(args: argparse.Namespace) -> int:
    found = ops.usage(_home(args), args.slug)
    if args.json:
        print(json.dumps([u.to_json() for u in found], indent=2))
        return 0
    if not found:
        _say("no bottle of this home has made a metered model call yet")
        return 0
    rows = [("SLUG", "WHERE", "MODEL", "INPUT", "OUTPUT", "CACHE-WRITE", "CACHE-READ", "CALLS", "ERRORS", "COST")]
    for u in found:
        for model, c in sorted(u.doc["models"].items()):
            rows.append(
                (
                    u.slug,
                    u.where,
                    _shown(model),
                    ops.tokens_text(int(c.get("input_tokens") or 0)),
                    ops.tokens_text(int(c.get("output_tokens") or 0)),
                    ops.tokens_text(int(c.get("cache_creation_input_tokens") or 0)),
                    ops.tokens_text(int(c.get("cache_read_input_tokens") or 0)),
                    str(c.get("requests") or 0),
                    str(c.get("errors") or 0),
                    ops.usd_text(c.get("usd")),
                )
            )
        t = u.totals
        budget = ops.budget_text(u.budget)
        rows.append(
            (u.slug, u.where, "total", "", "", "", "", str(t.get("requests") or 0), str(t.get("errors") or 0),
             ops.cost_text(t) + (f" {budget}" if budget else ""))
        )  # fmt: skip
    _print_table(rows)
    return 0


async def cmd_cleanup(args: argparse.Namespace) -> int:
    homes_under = Path(args.homes_under).expanduser() if args.homes_under else None
    plan = await ops.plan_cleanup(_home(args), all_homes=args.all_homes, homes_under=homes_under)
    if plan.empty:
        _say("nothing to clean up")
        return 0
    print(plan.describe())
    if args.dry_run:
        _say("dry run: nothing was removed")
        return 0
    if not _confirm("remove all of the above?", args.yes):
        _say("nothing removed")
        return 1
    problems = await ops.cleanup(plan, _say)
    if problems:
        for line in problems:
            _say(f"warning: {line}")
        _say(f"cleaned up, but {len(problems)} step(s) failed (see the warnings above)")
        return 1
    _say("cleaned up")
    return 0


async def cmd_images(args: argparse.Namespace) -> int:
    if args.action == "refs":
        refs = ops.image_refs()
    elif args.action == "push":
        if not args.registry:
            raise BottleError("images push needs a registry: bottle-tui images push HOST[:PORT]")
        refs = await ops.push_images(_home(args), args.registry, _say)
        _say(f"pushed; swarm bottles pull them when config.yaml says images: {{registry: {args.registry}}}")
    else:
        refs = await ops.ensure_images(_home(args), _say, force=args.force)
    for name, ref in refs.items():
        print(f"{name}\t{ref}")
    return 0


async def cmd_agents(args: argparse.Namespace) -> int:
    manifests = ops.agents(_home(args))
    for agent in sorted(manifests.agents.values(), key=lambda a: a.name):
        bottle = manifests.bottles[agent.bottle]
        print(
            f"{agent.name}\tbottle {bottle.name} ({bottle.backend}, {len(bottle.routes)} routes)\t{agent.description}"
        )
    return 0
