"""`bottle-tui` subcommands: everything the console does, scriptable. Errors print one line, never a traceback.

Every subcommand is a thin shell over ``ops``: parse the arguments, ask, print. Each lives in a
module of its own (``COMMANDS``), imported when it runs: `bottle-tui` alone opens the console,
whose first frame needs none of them nor ``ops``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BottleError
from .common import _home, _say
from .pool import add_parsers as add_pool_parsers
from .snapshots import add_parsers as add_snapshot_parsers

__all__ = ["COMMANDS", "build_parser", "main"]


class _Scopes(Sequence[str]):
    """A decision's scopes as ``--scope`` offers them, read from ``ops`` only when a command line
    uses them (parsing `bottle-tui` alone must not load the operations). argparse lists choices
    in the usage line as it builds the parser, so ``--scope`` has a metavar, and its help lists
    them (help is formatted only when shown)."""

    def _all(self) -> tuple[str, ...]:
        from .. import ops

        return ops.SCOPES

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __contains__(self, value: object) -> bool:
        return value in self._all()


def cmd_console(args: argparse.Namespace) -> int:
    from ..console.settings import home_path, run_console

    if getattr(args, "tmux", False) and not os.environ.get("TMUX"):
        return cmd_tmux(args)
    return run_console(home_path(args.home), theme=getattr(args, "theme", None))


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

    from .. import ops

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
    from ..runner import handoff

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
    q.add_argument("--scope", choices=_Scopes(), default="always", metavar="SCOPE", help=SCOPE_HELP)
    q = psub.add_parser("modify", help="allow a narrower change (from --file, else $EDITOR)")
    q.add_argument("id")
    q.add_argument(
        "--file", help="YAML/JSON of the final change, e.g. {host: h, ports: [443], methods: [GET], paths: [/x/*]}"
    )
    q.add_argument("--scope", choices=_Scopes(), default="always", metavar="SCOPE", help=SCOPE_HELP)
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


SCOPE_HELP = "%(choices)s (default: %(default)s)"

# Subcommand -> (module of bottle_tui.cli, its function), imported when the subcommand runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "start": ("bottles", "cmd_start"),
    "attach": ("bottles", "cmd_attach"),
    "exec": ("bottles", "cmd_exec"),
    "diff": ("review", "cmd_diff"),
    "stop": ("bottles", "cmd_stop"),
    "resume": ("bottles", "cmd_resume"),
    "ls": ("bottles", "cmd_ls"),
    "snapshot": ("snapshots", "cmd_snapshot"),
    "pool": ("pool", "cmd_pool"),
    "snapshots": ("snapshots", "cmd_snapshots"),
    "usage": ("bottles", "cmd_usage"),
    "selftest": ("bottles", "cmd_selftest"),
    "cleanup": ("bottles", "cmd_cleanup"),
    "images": ("bottles", "cmd_images"),
    "agents": ("bottles", "cmd_agents"),
    "proposals": ("review", "cmd_proposals"),
    "routes": ("review", "cmd_policy"),
    "dlp": ("review", "cmd_policy"),
}


def command(name: str) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
    """The function of subcommand ``name``, its module imported now."""
    module, function = COMMANDS[name]
    found: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = getattr(
        importlib.import_module(f"{__name__}.{module}"), function
    )
    return found


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
        return asyncio.run(command(args.command)(args))
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
