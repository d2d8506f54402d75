"""The bottle's status daemon: Claude Code's hooks in the agent report here, and it keeps
``/state/status/status.json`` (the host's ``state/<slug>/status/``) saying what the agent is doing.

A tiny HTTP endpoint (stdlib only) on the bundle's address on the ``internal`` network, under the
name ``status``. The agent's hooks POST their JSON input to ``/hook``; only the event name is used,
and only when it is one we know, so nothing the agent writes reaches the operator's console. The
file is replaced atomically (one small file: its size is bounded by its fixed keys); ``since``
changes only when the state does. Times are the daemon's own: the agent's send time only orders
events that arrive close together (see ``record``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

from bottle_contract import layout, ports
from bottle_contract.clock import now_iso
from bottle_contract.files import atomic_write
from bottle_contract.serving import STATUS_LIMITS, BoundedHTTPServer

STATE_DIR = os.environ.get("BOTTLE_STATUS_STATE", "/state/status")
NAME = "status"
MAX_BODY = 256 * 1024
# Claude Code's hook events -> what the console shows. Notification fires when claude needs the
# operator (a permission prompt, or idle at its prompt for a while).
STATES = {
    "SessionStart": "idle",
    "UserPromptSubmit": "working",
    "PreToolUse": "working",
    "Notification": "waiting",
    "Stop": "idle",
    "SessionEnd": "ended",
}

# The agent's send time is believed only within this much of the daemon's own clock: the hook's
# curl gives up after 2 s, so a genuine report is never older; a later or earlier one is a lie.
REORDER_WINDOW_NS = 2_000_000_000

_lock = threading.Lock()


def read_current(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def order_time(sent: int | None, now_ns: int) -> int:
    """When an event counts as sent, in ns on the daemon's clock: the agent's ``sent`` when it lies
    within REORDER_WINDOW_NS before ``now_ns`` (two reports that raced keep their order), else
    ``now_ns``. A time in the future is never kept, so no report can hold the status still."""
    if sent is not None and now_ns - REORDER_WINDOW_NS <= sent <= now_ns:
        return sent
    return now_ns


def record(event: str, sent: int | None = None, state_dir: str | None = None) -> dict | None:
    """Apply one hook event the agent says it sent at ``sent`` (ns since the epoch); returns the
    new status, or None for an event we do not track or one sent before the last applied (hooks
    report in the background, so two can arrive out of order)."""
    state = STATES.get(event)
    if state is None:
        return None
    path = os.path.join(state_dir or STATE_DIR, layout.STATUS_FILE)
    with _lock:
        current = read_current(path)
        order = order_time(sent, time.time_ns())
        last = current.get("sent")
        if isinstance(last, int) and order < last:
            return None
        at = now_iso()
        since = current.get("since") if current.get("state") == state and isinstance(current.get("since"), str) else at
        doc = {"version": 1, "state": state, "since": since, "event": event, "at": at, "sent": order}
        atomic_write(path, (json.dumps(doc) + "\n").encode(), mode=0o644)
    return doc


class Handler(BaseHTTPRequestHandler):
    server_version = "bottle-status"

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/hook":
            self._answer(404)
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._answer(413)
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._answer(400)
            return
        event = body.get("hook_event_name") if isinstance(body, dict) else None
        sent = body.get("t") if isinstance(body, dict) else None
        sent = sent if isinstance(sent, int) and not isinstance(sent, bool) else None
        done = record(event, sent) if isinstance(event, str) else None
        self._answer(204 if done else 422)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def listen_address(name: str) -> str:
    """This container's address on the internal network: the one the ``status`` alias names."""
    return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def make_server(host: str, port: int) -> BoundedHTTPServer:
    """The daemon's server: bounded threads, connections and time (bottle_contract.serving)."""
    return BoundedHTTPServer((host, port), Handler, STATUS_LIMITS, name="status")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=ports.STATUS)
    ap.add_argument("--host", help="address to listen on (default: the address of the name --listen-name)")
    ap.add_argument("--listen-name", default=NAME)
    args = ap.parse_args()
    try:
        host = args.host or listen_address(args.listen_name)
    except OSError as e:
        print(f"status: cannot resolve {args.listen_name!r} to an address to listen on: {e}", file=sys.stderr)
        return 1
    try:
        server = make_server(host, args.port)
    except OSError as e:
        print(f"status: cannot listen on {host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(f"status: listening on {host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
