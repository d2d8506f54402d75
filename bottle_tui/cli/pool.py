"""`bottle-tui pool fill|ls|drain`: the warm bottles `start` claims (`pool: {size: N}` in a bottle
file, or config.yaml's default for every docker bottle without git). The parsers are read at every
start, so ``ops`` is imported only when a command here runs."""

from __future__ import annotations

import argparse
import json

from .common import _home, _print_table, _say


async def cmd_pool(args: argparse.Namespace) -> int:
    from .. import ops

    home = _home(args)
    if args.action == "ls":
        members = await ops.list_pool(home)
        if args.json:
            print(json.dumps([m.to_json() for m in members], indent=2))
        elif members:
            _print_table(
                [("MEMBER", "BOTTLE", "MADE", "STATE")] + [(m.name, m.bottle, m.made_at, m.state) for m in members]
            )
        else:
            _say("no warm bottles in this home (`bottle-tui pool fill` starts them for bottles with pool:)")
        return 0
    if args.action == "fill":
        problems = await ops.fill_pool(home, _say, args.bottle)
        what = "filled"
    else:
        problems = await ops.drain_pool(home, _say, args.bottle)
        what = "drained"
    for line in problems:
        _say(f"warning: {line}")
    if problems:
        _say(f"pool {what}, but {len(problems)} step(s) failed (see the warnings above)")
        return 1
    _say(f"pool {what}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pool", help="warm bottles that `start` claims: start them, list them, take them down")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = psub.add_parser("fill", help="start warm bottles until each pooled bottle has its pool.size (waits its turn)")
    q.add_argument("bottle", nargs="?", help="only this bottle's pool (default: every bottle with pool:)")
    q = psub.add_parser("ls", help="this home's warm bottles: ready, starting or down")
    q.add_argument("--json", action="store_true")
    q = psub.add_parser("drain", help="take this home's warm bottles down (claimed ones are bottles: stop those)")
    q.add_argument("bottle", nargs="?", help="only this bottle's warm bottles")
