"""A hostile agent's connection flood, run inside a bottle's agent container: idle connections
and half-sent requests held on the bundle's ports (and reopened when a server closes them), for
the abuse tests and the supervise benchmark."""

from __future__ import annotations

import json
import subprocess

from .bottles import Bottle

# Run in the agent: hold N idle connections and H half-sent requests on each target, reopen what
# the server closes (once a second, as a patient attacker would), and say what happened when told
# to stop on stdin (or after its deadline: the loop is bounded).
HOLDER = r"""
import json, selectors, socket, sys, time
targets = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in sys.argv[1].split(",")]
idle, half, deadline = int(sys.argv[2]), int(sys.argv[3]), time.monotonic() + float(sys.argv[4])
HALF = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le"
sel = selectors.DefaultSelector()
stats = {f"{h}:{p}": {"opened": 0, "closed_by_server": 0, "connect_failed": 0} for h, p in targets}
def open_one(t, first):
    st = stats[f"{t[0]}:{t[1]}"]
    try:
        s = socket.create_connection(t, timeout=3)
        if first:
            s.sendall(first)
    except OSError:
        st["connect_failed"] += 1
        return False
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, (t, first))
    st["opened"] += 1
    return True
for t in targets:
    for i in range(idle + half):
        open_one(t, HALF if i >= idle else b"")
print(json.dumps({"held": {k: v["opened"] for k, v in stats.items()}}), flush=True)
sel.register(sys.stdin, selectors.EVENT_READ, None)
closed, last_reopen, stop = [], time.monotonic(), False
while not stop and time.monotonic() < deadline:
    for key, _ in sel.select(0.2):
        if key.data is None:
            stop = True
            continue
        try:
            data = key.fileobj.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            t, first = key.data
            stats[f"{t[0]}:{t[1]}"]["closed_by_server"] += 1
            closed.append(key.data)
    if time.monotonic() - last_reopen >= 1.0:
        for t, first in closed:
            open_one(t, first)
        closed, last_reopen = [], time.monotonic()
held = {}
for key in list(sel.get_map().values()):
    if key.data is not None:
        k = f"{key.data[0][0]}:{key.data[0][1]}"
        held[k] = held.get(k, 0) + 1
print(json.dumps({"stats": stats, "open_at_end": held}), flush=True)
"""


class Flood:
    """Holds ``idle`` idle connections and ``half`` half-sent requests on each of ``targets``
    (name -> port, names as the agent resolves them) until ``stop``; bounded by ``seconds``."""

    def __init__(self, bottle: Bottle, targets: dict[str, int], *, idle: int, half: int, seconds: float = 240) -> None:
        spec = ",".join(f"{name}:{port}" for name, port in targets.items())
        self.proc = subprocess.Popen(
            ["docker", "exec", "-i", bottle.agent, "python3", "-c", HOLDER, spec, str(idle), str(half), str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.kill()
            raise RuntimeError(f"the flood did not start: {self.proc.communicate(timeout=30)[1][-2000:]}")
        self.held: dict[str, int] = json.loads(line)["held"]

    def stop(self) -> dict:
        """Ends the flood; what it saw: per target, connections opened, closed by the server and
        failed, and how many were open at the end."""
        out, err = self.proc.communicate("stop\n", timeout=120)
        lines = out.strip().splitlines()
        if not lines:
            raise RuntimeError(f"the flood ended without a report: {err[-2000:]}")
        return json.loads(lines[-1])
