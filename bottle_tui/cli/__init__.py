"""`bottle-tui` subcommands: everything the console does, scriptable. Errors print one line, never a traceback.

Every subcommand is a thin shell over ``ops``: parse the arguments, ask, print.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__, ops
from ..errors import BottleError
from ..runner import handoff
from .common import _confirm, _home, _print_table, _say, _shown
from .pool import add_parsers as add_pool_parsers
from .pool import cmd_pool
from .review import MIN_WHAT_WIDTH, _proposal_line, cmd_diff, cmd_policy, cmd_proposals, proposal_table
from .snapshots import add_parsers as add_snapshot_parsers
from .snapshots import cmd_snapshot, cmd_snapshots

__all__ = ["MIN_WHAT_WIDTH", "_proposal_line", "main", "proposal_table"]


def _attach(argv: list[str], slug: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BottleError(
            f"claude needs a terminal: run `bottle-tui attach {slug}` from an interactive shell (or `bottle-tui exec {slug} -- CMD` for a command)"
        )
    handoff(argv)


# -- subcommands -------------------------------------------------------------------------------


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


def cmd_console(args: argparse.Namespace) -> int:
    from ..console.settings import run_console

    if getattr(args, "tmux", False) and not os.environ.get("TMUX"):
        return cmd_tmux(args)
    return run_console(_home(args), theme=getattr(args, "theme", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from ..console.settings import console_settings
    from ..console.web import serve

    home = _home(args)
    console_settings(home, args.theme)  # a bad config.yaml is one line here, not in every browser tab
    return serve(home, host=args.host, port=args.port, theme=args.theme, allow_remote=args.allow_remote, say=_say)


def cmd_notify(args: argparse.Namespace) -> int:
    from ..console.notifications import send_test
    from ..console.settings import run_notify_watch

    home = _home(args)
    if args.watch:
        return run_notify_watch(home)
    problems = send_test(home)
    for line in problems:
        _say(line)
    if problems:
        return 1
    _say("notify: a test message went to every sink config.yaml turns on")
    return 0


def tmux_session_name(home: Path) -> str:
    """The tmux session `--tmux` opens: one per home (the default home's is plain bottle-tui)."""
    import hashlib

    if home.resolve() == ops.home().resolve():
        return "bottle-tui"
    return "bottle-tui-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


def cmd_tmux(args: argparse.Namespace) -> int:
    """`bottle-tui --tmux`: attach to this home's tmux session with the console in it, creating the
    session (or a window with a console, when the one there has quit) first. Inside tmux already,
    the console simply runs in the current pane and splits beside it."""
    import libtmux
    from libtmux.exc import LibTmuxException

    from ..console.tmux import MIN_VERSION, session_has_console, tmux_version

    home = _home(args)
    version = tmux_version()
    if version is None:
        raise BottleError(
            "--tmux: tmux is not installed: install it (apt-get install tmux) or run bottle-tui without --tmux"
        )
    if version < MIN_VERSION:
        raise BottleError(
            f"--tmux: the split pane needs tmux {MIN_VERSION[0]}.{MIN_VERSION[1]} or later; run bottle-tui without --tmux"
        )
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BottleError("--tmux needs a terminal: run it from an interactive shell")
    # The settings are checked here, where an error can still be printed on one line.
    from ..console.settings import console_settings

    console_settings(home, getattr(args, "theme", None))
    console = [sys.executable, "-m", "bottle_tui", "--home", str(home)]
    if getattr(args, "theme", None):
        console += ["--theme", args.theme]
    console.append("console")
    name = tmux_session_name(home)
    server = libtmux.Server()
    try:
        exists = server.has_session(name, exact=True)
        if exists and not session_has_console(server, name):
            server.cmd("new-window", "-t", f"={name}:", "-n", "console", *console)
    except LibTmuxException as exc:
        raise BottleError(f"--tmux: tmux failed: {' '.join(str(exc).split())[:200]}") from None
    if exists:
        handoff(["tmux", "attach-session", "-t", f"={name}"])
    else:
        handoff(["tmux", "new-session", "-s", name, "-n", "console", *console])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bottle-tui", description="Run AI coding agents in bottles with no route out."
    )
    parser.add_argument("--version", action="version", version=f"bottle-tui {__version__}")
    parser.add_argument("--home", help="manifests and state folder (default: $CLAUDE_BOTTLE_HOME or ~/.claude-bottle)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    parser.add_argument(
        "--theme", help="the console's theme (bottle-dark, bottle-light, or a Textual built-in); overrides config.yaml"
    )
    parser.add_argument(
        "--tmux",
        action="store_true",
        help="run the console in tmux with claude in a right-hand pane: attaches to this home's session, creating it when needed",
    )
    sub.add_parser("console", help="open the operator console (the default)")
    p = sub.add_parser("serve", help="serve the console to a browser (a URL with a random token; loopback by default)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="needed with a --host that is not loopback: whoever reaches it with the URL drives the console",
    )
    p = sub.add_parser(
        "notify", help="the notifications config.yaml turns on: send a test message, or watch without a console"
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--test", action="store_true", help="send one test message through every sink now")
    mode.add_argument(
        "--watch",
        action="store_true",
        help="send this home's notifications while no console is open (a console that opens later takes over)",
    )
    p = sub.add_parser("start", help="show the plan, then start a bottle for AGENT and open claude in it")
    p.add_argument("agent")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit; touches neither docker nor state")
    p.add_argument("--detach", "-d", action="store_true", help="start and return (prints the slug)")
    p.add_argument(
        "--from",
        dest="from_snapshot",
        metavar="NAME",
        help="a fork: start from snapshot NAME of AGENT (`bottle-tui snapshots ls`); the original keeps running",
    )
    p = sub.add_parser("attach", help="open claude in a running bottle (continues the last conversation)")
    p.add_argument("slug")
    p.add_argument("--fresh", action="store_true", help="start a new conversation instead of continuing")
    p = sub.add_parser("exec", help="run a command in the agent container: exec SLUG -- CMD")
    p.add_argument("slug")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    p = sub.add_parser(
        "stop",
        help="stop a bottle (logs, transcript, egress decisions and the checkout's unsaved work go to archive/<slug>/)",
    )
    p.add_argument("slug")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the state folder (marks it .preserve) and the work volume, for `bottle-tui resume SLUG`",
    )
    p = sub.add_parser(
        "resume", help="bring back a bottle stopped with --keep, with its checkout and conversation, and open claude"
    )
    p.add_argument("slug")
    p.add_argument("--detach", "-d", action="store_true", help="resume and return (prints the slug)")
    p = sub.add_parser(
        "selftest", help="run the escape suite against a running bottle (attacks aim at a canary of ours)"
    )
    p.add_argument("slug")
    p = sub.add_parser("diff", help="what the agent changed since its checkout began (commits and files, read live)")
    p.add_argument("slug")
    p.add_argument(
        "--stat", action="store_true", help="one line per file (lines added and deleted) instead of the diffs"
    )
    p.add_argument("--json", action="store_true", help="branches, commits and files with their counts, as JSON")
    add_snapshot_parsers(sub)
    add_pool_parsers(sub)
    p = sub.add_parser("ls", help="list running bottles, whoever started them")
    p.add_argument("--json", action="store_true", help="with each bottle's spend (usage totals and budget)")
    p = sub.add_parser(
        "usage", help="what bottles spent on model calls, per model (running, kept and archived bottles)"
    )
    p.add_argument("slug", nargs="?", help="one bottle (default: every bottle of this home)")
    p.add_argument("--json", action="store_true", help="usage.json of each bottle, as egress wrote it")
    p = sub.add_parser(
        "cleanup", help="stop this home's bottles and remove its stray containers, networks and orphan state folders"
    )
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--yes", "-y", action="store_true")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--all-homes", action="store_true", help="every bottle-tui bottle on the engine, whichever home started it"
    )
    scope.add_argument(
        "--homes-under", metavar="DIR", help="bottles of every home below DIR (e.g. a test run's temporary folder)"
    )
    p = sub.add_parser(
        "images", help="build the agent and sidecar images (refs: print their tags; push REGISTRY: push them there)"
    )
    p.add_argument("action", choices=["build", "refs", "push"])
    p.add_argument("registry", nargs="?", help="push: the registry, as HOST[:PORT]")
    p.add_argument("--force", action="store_true", help="rebuild even when inputs did not change")
    sub.add_parser("agents", help="list agents and their bottles (validates the manifests)")
    p = sub.add_parser("proposals", help="what agents asked for (and drafts of what egress blocked): list and decide")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = psub.add_parser("ls", help="pending proposals of every bottle")
    q.add_argument("--json", action="store_true")
    q.add_argument("--all", action="store_true", help="decided ones too")
    q = psub.add_parser("show", help="one proposal in full (agent text shown inert)")
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q = psub.add_parser("approve", help="allow what was asked, live")
    q.add_argument("id")
    q.add_argument("--scope", choices=ops.SCOPES, default="always")
    q = psub.add_parser("modify", help="allow a narrower change (from --file, else $EDITOR)")
    q.add_argument("id")
    q.add_argument(
        "--file", help="YAML/JSON of the final change, e.g. {host: h, ports: [443], methods: [GET], paths: [/x/*]}"
    )
    q.add_argument("--scope", choices=ops.SCOPES, default="always")
    q = psub.add_parser("reject", help="refuse; the agent receives the note")
    q.add_argument("id")
    q.add_argument("--note", default="")
    p = sub.add_parser("routes", help="the egress policy in force of a running bottle")
    p.add_argument("action", choices=["edit"])
    p.add_argument("slug")
    p = sub.add_parser("dlp", help="the DLP settings in force of a running bottle (they live in its routes.yaml)")
    p.add_argument("action", choices=["edit"])
    p.add_argument("slug")
    return parser


COMMANDS = {
    "start": cmd_start,
    "attach": cmd_attach,
    "exec": cmd_exec,
    "diff": cmd_diff,
    "stop": cmd_stop,
    "resume": cmd_resume,
    "ls": cmd_ls,
    "snapshot": cmd_snapshot,
    "snapshots": cmd_snapshots,
    "pool": cmd_pool,
    "usage": cmd_usage,
    "selftest": cmd_selftest,
    "cleanup": cmd_cleanup,
    "images": cmd_images,
    "agents": cmd_agents,
    "proposals": cmd_proposals,
    "routes": cmd_policy,
    "dlp": cmd_policy,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in (None, "console"):
            return cmd_console(args)
        if args.command == "serve" and not args.tmux:
            return cmd_serve(args)  # runs its own event loop
        if args.command == "notify" and not args.tmux:
            return cmd_notify(args)
        if args.tmux:
            raise BottleError(f"--tmux opens the console: run `bottle-tui --tmux` without `{args.command}`")
        return asyncio.run(COMMANDS[args.command](args))
    except BottleError as exc:
        _say(f"bottle-tui: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("bottle-tui: interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`bottle-tui diff SLUG | head`): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug, not bad input: still one line, with a way to see more
        if os.environ.get("BOTTLE_DEBUG"):
            raise
        _say(
            f"bottle-tui: internal error: {type(exc).__name__}: {exc} (set BOTTLE_DEBUG=1 for the traceback, and please report it)"
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
