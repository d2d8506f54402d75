"""Supervise latencies on a real bottle (targets: request visible <= 100 ms, approve -> through <= 300 ms).

1. request -> visible: the SDK's client in the agent calls request-egress-route (wait_seconds 0)
   in one session; a process on the host watching the queue folder with inotify (not a poll)
   notes when each proposal file appears. Both read the same kernel clock.
2. approve -> the agent's next request succeeds: a loop in the agent retries a blocked URL every
   5 ms through egress; the host approves the pending proposal (the library the CLI uses, then the
   reload signal) and the figure is the time from the approve call to the loop's first 200.
3. request -> visible again while the agent holds 1,000 idle connections and 400 half-sent
   requests on supervise's port (reopening what the server closes): the cost of a flood.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bottle_contract import ports  # noqa: E402
from bottle_tui import ops, proposals  # noqa: E402
from tests.support.bottles import (  # noqa: E402
    BLOCKED,
    FAKE_DIR,
    TEST_LABEL,
    connect_fake_internet,
    make_fake_pki,
    sh,
    start_bottle,
    stop_bottle,
    write_home,
)
from tests.support.flood import Flood  # noqa: E402
from tests.support.supervise import client_argv, install_mcp_client  # noqa: E402

ROUNDS = 20
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80

POLL_LOOP = """
import sys, time, urllib.request, urllib.error
url = sys.argv[1]
while True:
    try:
        urllib.request.urlopen(url, timeout=2).read()
        print(time.time(), flush=True)
        break
    except urllib.error.HTTPError:
        time.sleep(0.005)
"""


class QueueWatch:
    """inotify on the queue folder: the wall-clock time each proposal file first appeared."""

    def __init__(self, folder: Path):
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.libc.inotify_add_watch(self.fd, str(folder).encode(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self.seen: dict[str, float] = {}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            now = time.time()
            buf = os.read(self.fd, 65536)
            i = 0
            while i < len(buf):
                _, _, _, length = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode()
                i += 16 + length
                if name.endswith(".json") and not name.startswith("."):
                    self.seen.setdefault(name[:-5], now)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        os.close(self.fd)


def fake_internet(image: str, pki: Path) -> str:
    name = f"bottle-tui-bench-fake-internet-{uuid.uuid4().hex[:6]}"
    sh("docker", "network", "create", "--internal", "--label", TEST_LABEL, name)
    sh(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--label",
        TEST_LABEL,
        "--network",
        name,
        "--entrypoint",
        "python3",
        "-v",
        f"{FAKE_DIR}:/srv:ro",
        "-v",
        f"{pki}:/pki:ro",
        image,
        "/srv/server.py",
        "/pki/server.pem",
        "/pki/server-key.pem",
    )
    return name


def summary(label: str, samples: list[float], target_ms: float) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label}: median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)}; "
        f"target <= {target_ms:g} ms)"
    )


def bench_visible(bottle, n: int) -> list[float]:
    watch = QueueWatch(bottle.state / "supervise" / "queue")
    try:
        args = json.dumps({"host": "visible.fake.test", "reason": "benchmark", "wait_seconds": 0})
        out = sh(*client_argv(bottle, "request-egress-route", args, "--repeat", str(n)), timeout=300)
        time.sleep(0.2)
    finally:
        watch.close()
    samples = []
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        pid = json.loads(rec["text"].split("\n", 1)[1])["id"]
        samples.append(watch.seen[pid] - rec["sent_at"])
    return samples


def bench_approve(bottle, n: int) -> list[float]:
    samples = []
    for i in range(n):
        path = f"/bench/{i}/{uuid.uuid4().hex[:6]}"
        sh(
            *client_argv(
                bottle,
                "request-egress-route",
                json.dumps(
                    {
                        "host": BLOCKED,
                        "ports": [80],
                        "methods": ["GET"],
                        "paths": [path],
                        "reason": "benchmark",
                        "wait_seconds": 0,
                    }
                ),
            )
        )
        pending = next(p for p in proposals.list_all(bottle.home) if p.change.get("paths") == [path])
        loop = subprocess.Popen(
            ["docker", "exec", bottle.agent, "python3", "-c", POLL_LOOP, f"http://{BLOCKED}{path}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # the loop is running and being refused
        t0 = time.time()
        decided = asyncio.run(ops.decide(bottle.home, pending.id, "approve", by="bench"))
        assert decided.reload_warning is None, decided.reload_warning
        out, _ = loop.communicate(timeout=30)
        samples.append(float(out.strip()) - t0)
    return samples


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bottle-bench-supervise-"))
    home = write_home(tmp / "home")
    pki = tmp / "pki"
    pki.mkdir()
    os.chmod(pki, 0o755)
    make_fake_pki(pki)
    os.environ["CLAUDE_BOTTLE_UPSTREAM_CA"] = str(pki / "ca.pem")
    refs = dict(
        line.split("\t")
        for line in subprocess.run(
            [sys.executable, "-m", "bottle_tui", "--home", str(home), "images", "build"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        if "\t" in line
    )
    fake = fake_internet(refs["sidecars"], pki)
    bottle = None
    try:
        bottle = start_bottle(home)
        connect_fake_internet(bottle, fake)
        install_mcp_client(bottle)
        visible = bench_visible(bottle, ROUNDS)
        approve = bench_approve(bottle, ROUNDS)
        flood = Flood(bottle, {"supervise": ports.SUPERVISE}, idle=1000, half=400)
        try:
            flooded = bench_visible(bottle, ROUNDS)
        finally:
            flood_report = flood.stop()
    finally:
        if bottle:
            stop_bottle(bottle, fake)
        sh("docker", "rm", "-f", fake, check=False)
        sh("docker", "network", "rm", fake, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(summary("supervise: request -> visible to an inotify watcher on the host", visible, 100))
    print(summary("supervise: approve -> the agent's next request succeeds", approve, 300))
    print(
        summary("supervise: request -> visible, 1,000 idle + 400 half-sent connections held on its port", flooded, 100)
    )
    print(f"supervise: the flood: {json.dumps(flood_report)}")


if __name__ == "__main__":
    main()
