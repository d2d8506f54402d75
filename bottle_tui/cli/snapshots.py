"""`bottle-tui snapshot` and `snapshots ls|rm`: save a running bottle, list and remove what was saved
(a fork starts with `bottle-tui start AGENT --from NAME`). The parsers are read at every start, so
``ops`` is imported only when a command here runs."""

from __future__ import annotations

import argparse
import json

from .common import _home, _print_table, _say


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


async def cmd_snapshot(args: argparse.Namespace) -> int:
    from .. import ops

    snap = await ops.snapshot(_home(args), args.slug, _say, args.name)
    _say(
        f"snapshot {snap.name} of {snap.of}: filesystem in image {snap.image}, home and policy in {snap.path} "
        f"(fork it: bottle-tui start {snap.agent} --from {snap.name})"
    )
    print(snap.name)
    return 0


async def cmd_snapshots(args: argparse.Namespace) -> int:
    from .. import ops

    home = _home(args)
    if args.action == "rm":
        snap = await ops.remove_snapshot(home, args.name)
        _say(f"removed snapshot {snap.name} (image {snap.image} and {snap.path})")
        return 0
    listed = await ops.list_snapshots(home)
    if args.json:
        print(json.dumps([{**s.snapshot.to_json(), "image_present": s.image_present} for s in listed], indent=2))
        return 0
    if not listed:
        _say("no snapshots in this home (take one: bottle-tui snapshot SLUG)")
        return 0
    rows = [("NAME", "AGENT", "OF", "TAKEN", "HOME.TAR", "IMAGE")]
    rows += [
        (
            s.snapshot.name,
            s.snapshot.agent,
            s.snapshot.of,
            s.snapshot.created_at,
            _size(s.snapshot.home_bytes),
            s.snapshot.image if s.image_present else ("missing" if s.image_present is False else "?"),
        )
        for s in listed
    ]
    _print_table(rows)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "snapshot",
        help="save a running bottle: its agent's filesystem (an image on the engine), its checkout and ~/.claude, and its policy",
    )
    p.add_argument("slug")
    p.add_argument("--name", help="the snapshot's name (default: SLUG-DATE-TIME)")
    p = sub.add_parser("snapshots", help="the saved snapshots: list them, or remove one (its image too)")
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = psub.add_parser("ls", help="every snapshot of this home")
    q.add_argument("--json", action="store_true")
    q = psub.add_parser("rm", help="remove a snapshot and its image")
    q.add_argument("name")
