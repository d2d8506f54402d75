#!/usr/bin/env python3
"""The bundle's control command: how a host reaches a bundle whose state is not on its disk (a
swarm bottle on another machine). The host runs it with `docker exec` through the node's Docker
context, so the engine's own TLS or SSH is the only authentication and no port is opened.

    seed           a tar of the sidecar folders on stdin -> /state, then the seed mark (init waits for it)
    ready D[,D..]  wait until each daemon's ready file exists; print them as one JSON object
    read F NAME    print /state/F/NAME (a sidecar folder's file), bounded

Every path is the contract's (bottle_contract.layout); every write is its atomic one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import posixpath
import sys
import tarfile
import time

from bottle_contract import layout
from bottle_contract.files import atomic_write

# The seed is a few small files (policy, CA, gate and supervise settings): anything larger is not one.
MAX_SEED_BYTES = 8 << 20
MAX_READ_BYTES = 64 << 20
DAEMON_FOLDERS = {"egress": layout.EGRESS, "supervise": layout.SUPERVISE, "git-gate": layout.GIT_GATE}


def fail(message: str, code: int = 1) -> int:
    print(f"bottle_control: {message}", file=sys.stderr)
    return code


def _seed_target(root: str, name: str) -> str | None:
    """Where a seed member goes: inside a sidecar folder of ``root``, else None (refused)."""
    norm = posixpath.normpath(name)
    parts = norm.split("/")
    if norm.startswith("/") or ".." in parts or parts[0] not in layout.SIDECAR_FOLDERS:
        return None
    return os.path.join(root, *parts)


def seed(root: str, stream) -> int:
    mark = os.path.join(root, layout.SEEDED)
    if os.path.exists(mark):
        return fail(f"{root} is seeded already (a restarted task keeps its state)", 3)
    data = stream.read(MAX_SEED_BYTES + 1)
    if len(data) > MAX_SEED_BYTES:
        return fail(f"the seed is larger than {MAX_SEED_BYTES} bytes")
    for folder in layout.SIDECAR_FOLDERS:
        os.makedirs(os.path.join(root, folder), mode=0o700, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            target = _seed_target(root, member.name)
            if target is None or not (member.isfile() or member.isdir()):
                return fail(f"refusing seed member {member.name!r}: only files and folders inside a sidecar folder")
            if member.isdir():
                os.makedirs(target, mode=0o700, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            fh = tar.extractfile(member)
            assert fh is not None
            atomic_write(target, fh.read(), mode=member.mode & 0o644 or 0o600)
    atomic_write(mark, json.dumps({"seeded_at": time.time()}) + "\n", mode=0o644)
    return 0


def ready(root: str, daemons: list[str], timeout: float) -> int:
    unknown = [d for d in daemons if d not in DAEMON_FOLDERS]
    if unknown:
        return fail(f"no ready file for {unknown[0]!r} (known: {', '.join(DAEMON_FOLDERS)})", 2)
    paths = {d: os.path.join(root, DAEMON_FOLDERS[d], layout.READY) for d in daemons}
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths.values()):
        if time.monotonic() > deadline:
            missing = [d for d, p in paths.items() if not os.path.exists(p)]
            print(json.dumps({"missing": missing}))
            return 1
        time.sleep(0.05)
    found = {}
    for d, p in paths.items():
        try:
            with open(p, encoding="utf-8") as f:
                found[d] = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            found[d] = {}
    print(json.dumps(found))
    return 0


def read(root: str, folder: str, name: str) -> int:
    if folder not in layout.SIDECAR_FOLDERS or "/" in name or name.startswith("."):
        return fail(f"{folder}/{name} is not a file of a sidecar folder", 2)
    try:
        with open(os.path.join(root, folder, name), "rb") as f:
            sys.stdout.buffer.write(f.read(MAX_READ_BYTES))
    except FileNotFoundError:
        return fail(f"no {folder}/{name}", 4)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bottle_control")
    parser.add_argument("--root", default=layout.BUNDLE_STATE)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed")
    p = sub.add_parser("ready")
    p.add_argument("daemons")
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("read")
    p.add_argument("folder")
    p.add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "seed":
        return seed(args.root, sys.stdin.buffer)
    if args.command == "ready":
        return ready(args.root, [d for d in args.daemons.split(",") if d], args.timeout)
    return read(args.root, args.folder, args.name)


if __name__ == "__main__":
    sys.exit(main())
