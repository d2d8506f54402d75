#!/usr/bin/env python3
"""The bundle's control command: how a host reaches a bundle whose state is not on its disk (a
swarm bottle on another machine). The host runs it with `docker exec` through the node's Docker
context, so the engine's own TLS or SSH is the only authentication and no port is opened.

    seed           a tar of the sidecar folders on stdin -> /state, then the seed mark (init waits for it)
    ready D[,D..]  wait until each daemon's ready file exists; print them as one JSON object
    read F NAME    print /state/F/NAME (a sidecar folder's file), bounded
    write F NAME   stdin -> /state/F/NAME, atomically; only the files the host writes outside a
                   commit (WRITABLE: egress's upstream trust, which selftest extends for its run)
    queue          every proposal of the queue, one JSON object per line
    commit         one decision or policy edit (JSON on stdin), applied by the contract's commit
    serve          queue, read, write and commit as JSON lines on stdin and stdout: one exec for many requests
    watch          a JSON line for each proposal and for the agent's status as it changes, until killed

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
from bottle_contract import proposal as contract
from bottle_contract.files import atomic_write

# The seed is a few small files (policy, CA, gate and supervise settings): anything larger is not one.
MAX_SEED_BYTES = 8 << 20
MAX_READ_BYTES = 64 << 20
# What `write` may replace: routes.yaml and the queue change only through the contract's commit.
WRITABLE = {(layout.EGRESS, layout.UPSTREAM_CA): 0o644}
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


def do_read(root: str, folder: object, name: object) -> tuple[int, dict]:
    if not isinstance(folder, str) or not isinstance(name, str):
        return 2, {"error": "read: folder and name are strings"}
    if folder not in layout.SIDECAR_FOLDERS or "/" in name or name.startswith("."):
        return 2, {"error": f"{folder}/{name} is not a file of a sidecar folder"}
    try:
        with open(os.path.join(root, folder, name), "rb") as f:
            return 0, {"data": f.read(MAX_READ_BYTES)}
    except FileNotFoundError:
        return 4, {"error": f"no {folder}/{name}"}


def do_write(root: str, folder: object, name: object, data: bytes) -> tuple[int, dict]:
    if (folder, name) not in WRITABLE:
        allowed = ", ".join(f"{f}/{n}" for f, n in WRITABLE)
        return 2, {"error": f"write: {folder}/{name} is not a file the host writes (only {allowed})"}
    if len(data) > MAX_SEED_BYTES:
        return 2, {"error": f"write: more than {MAX_SEED_BYTES} bytes"}
    assert isinstance(folder, str) and isinstance(name, str)
    os.makedirs(os.path.join(root, folder), mode=0o700, exist_ok=True)
    atomic_write(os.path.join(root, folder, name), data, mode=WRITABLE[(folder, name)])
    return 0, {}


def _queue(root: str) -> contract.Queue:
    return contract.Queue(os.path.join(root, layout.SUPERVISE, layout.QUEUE))


def do_queue(root: str) -> tuple[int, dict]:
    return 0, {"proposals": _queue(root).all()}


COMMIT_KEYS = {"expect_policy", "policy", "pending", "proposal"}


def do_commit(root: str, request: object) -> tuple[int, dict]:
    """0: applied. 5: a conflict (its problem, and the proposal as it is now). 2: bad input."""
    if not isinstance(request, dict) or set(request) != COMMIT_KEYS or not isinstance(request["expect_policy"], str):
        return 2, {"error": f"commit: expected an object with exactly {', '.join(sorted(COMMIT_KEYS))}"}
    proposal = request["proposal"]
    if proposal is not None and not (
        isinstance(proposal, dict) and contract.well_formed(proposal, str(proposal.get("id", "")))
    ):
        return 2, {"error": "commit: the proposal is not one"}
    try:
        contract.commit(
            _queue(root),
            os.path.join(root, layout.EGRESS, layout.ROUTES),
            expect_policy=request["expect_policy"],
            policy=request["policy"],
            pending=request["pending"],
            proposal=proposal,
        )
    except contract.Conflict as e:
        return 5, {"problem": str(e), "current": e.current}
    except contract.ChangeError as e:
        return 2, {"error": f"commit: {e}"}
    return 0, {}


def read(root: str, folder: str, name: str) -> int:
    code, answer = do_read(root, folder, name)
    if code:
        return fail(answer["error"], code)
    sys.stdout.buffer.write(answer["data"])
    return 0


def write(root: str, folder: str, name: str, stream) -> int:
    code, answer = do_write(root, folder, name, stream.read(MAX_SEED_BYTES + 1))
    return fail(answer["error"], code) if code else 0


def queue(root: str) -> int:
    for p in do_queue(root)[1]["proposals"]:
        sys.stdout.write(json.dumps(p, separators=(",", ":")) + "\n")
    return 0


def commit(root: str, stream) -> int:
    try:
        request = json.loads(stream.read(MAX_SEED_BYTES))
    except ValueError as e:
        return fail(f"commit: the request is not JSON: {e}", 2)
    code, answer = do_commit(root, request)
    if code == 5:
        print(json.dumps(answer))
    elif code:
        return fail(answer["error"], code)
    return code


def serve(root: str, stdin, stdout) -> int:
    """Requests as JSON lines on stdin ({"op": "queue"} / {"op": "read", "folder", "name"} /
    {"op": "write", "folder", "name", "text"} / {"op": "commit", "request": {...}}), one JSON answer line each ({"code": N, ...}: the exit
    status the one-shot command would have had), until stdin closes: a host keeps one session per
    bottle and pays for an exec once, not per request."""
    for line in stdin:
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        op = request.get("op") if isinstance(request, dict) else None
        if op == "queue":
            code, answer = do_queue(root)
        elif op == "read":
            code, answer = do_read(root, request.get("folder"), request.get("name"))
            if "data" in answer:
                answer = {"text": answer["data"].decode("utf-8", errors="replace")}
        elif op == "write":
            text = request.get("text")
            code, answer = (
                do_write(root, request.get("folder"), request.get("name"), text.encode("utf-8"))
                if isinstance(text, str)
                else (2, {"error": "write: text is a string"})
            )
        elif op == "commit":
            code, answer = do_commit(root, request.get("request"))
        else:
            code, answer = 2, {"error": "expected a JSON object with op: queue, read, write or commit"}
        stdout.write(json.dumps({"code": code, **answer}, separators=(",", ":")) + "\n")
        stdout.flush()
    return 0


def _snapshot(root: str) -> dict[str, tuple[float, int]]:
    """(mtime, size) of each proposal file and of the status file: what watch compares."""
    found = {}
    folder = os.path.join(root, layout.SUPERVISE, layout.QUEUE)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json") and contract.is_id(n[:-5])]
    except FileNotFoundError:
        names = []
    paths = [os.path.join(folder, n) for n in names] + [os.path.join(root, layout.STATUS, layout.STATUS_FILE)]
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        found[path] = (st.st_mtime, st.st_size)
    return found


def watch(root: str, interval: float, out=None) -> int:
    """One JSON line per proposal and for status.json, at once and again whenever one changes
    ({"proposal": {...}} / {"status": {...}} / {"gone": id}); then a {"synced": true} line after
    each round that said anything. Polls (the bundle has no inotify binding): ``interval`` apart."""
    out = out or sys.stdout
    seen: dict[str, tuple[float, int]] = {}
    status_path = os.path.join(root, layout.STATUS, layout.STATUS_FILE)
    q = _queue(root)
    first = True
    while True:
        now = _snapshot(root)
        said = first
        for path, mark in now.items():
            if seen.get(path) == mark:
                continue
            said = True
            if path == status_path:
                try:
                    with open(path, encoding="utf-8") as f:
                        out.write(json.dumps({"status": json.load(f)}, separators=(",", ":")) + "\n")
                except (OSError, ValueError):
                    continue
            else:
                data = q.read(os.path.basename(path)[:-5])
                if data is not None:
                    out.write(json.dumps({"proposal": data}, separators=(",", ":")) + "\n")
        for path in set(seen) - set(now):
            said = True
            if path != status_path:
                out.write(json.dumps({"gone": os.path.basename(path)[:-5]}) + "\n")
        if said:
            out.write('{"synced":true}\n')
            out.flush()
        seen, first = now, False
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bottle_control")
    parser.add_argument("--root", default=layout.BUNDLE_STATE)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed")
    p = sub.add_parser("ready")
    p.add_argument("daemons")
    p.add_argument("--timeout", type=float, default=60.0)
    for command in ("read", "write"):
        p = sub.add_parser(command)
        p.add_argument("folder")
        p.add_argument("name")
    sub.add_parser("queue")
    sub.add_parser("commit")
    sub.add_parser("serve")
    p = sub.add_parser("watch")
    p.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.command == "seed":
        return seed(args.root, sys.stdin.buffer)
    if args.command == "ready":
        return ready(args.root, [d for d in args.daemons.split(",") if d], args.timeout)
    if args.command == "write":
        return write(args.root, args.folder, args.name, sys.stdin.buffer)
    if args.command == "queue":
        return queue(args.root)
    if args.command == "commit":
        return commit(args.root, sys.stdin.buffer)
    if args.command == "serve":
        return serve(args.root, sys.stdin, sys.stdout)
    if args.command == "watch":
        try:
            return watch(args.root, args.interval)
        except (BrokenPipeError, KeyboardInterrupt):
            return 0
    return read(args.root, args.folder, args.name)


if __name__ == "__main__":
    sys.exit(main())
