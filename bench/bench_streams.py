"""What one long-running `docker exec` stream costs, on both ends: the price of the per-bottle
watch a cluster bottle's control channel holds open (issue 18; docs/scale.md reasons from it to
1,000 bottles). BENCH_STREAMS (default 50) streams into one container of ours, each opened the
way the console opens a long-running command (runner.lines: an asyncio child process with its
stdout piped), each an idle `sleep` like a watch with nothing to report.

Measured, with all streams open: in this process (the console's side), its threads and open
files; the docker CLI processes' private memory (PSS less shared, summed); on the engine's side,
the container's shim and, when this is the engine of /var/run/docker.pid, dockerd's PSS before
and after. The container has no network and is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

from bottle_tui.backends.docker.images import image_refs

STREAMS = int(os.environ.get("BENCH_STREAMS", "50"))
NAME = f"bottle-tui-bench-streams-{uuid.uuid4().hex[:6]}"
DOCKERD_PIDFILE = Path("/var/run/docker.pid")


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup of a process, in kB (Pss, Private_Dirty, ...); {} when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def shim_pid(container_id: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"containerd-shim" in cmd[0] and container_id.encode() in cmd:
            return int(proc.name)
    return None


def dockerd_pid() -> int | None:
    if os.environ.get("DOCKER_HOST") or os.environ.get("DOCKER_CONTEXT") or not DOCKERD_PIDFILE.exists():
        return None
    try:
        return int(DOCKERD_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None


async def main() -> None:
    image = image_refs()["sidecars"]
    cid = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--name",
            NAME,
            "--entrypoint",
            "sleep",
            image,
            "infinity",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    procs: list[asyncio.subprocess.Process] = []
    try:
        shim = shim_pid(cid)
        dockerd = dockerd_pid()
        base_threads = threading.active_count()
        base_fds = len(os.listdir("/proc/self/fd"))
        shim_before = rollup(shim) if shim else {}
        dockerd_before = rollup(dockerd) if dockerd else {}
        t0 = time.perf_counter()
        for _ in range(STREAMS):
            procs.append(
                await asyncio.create_subprocess_exec(
                    "docker",
                    "exec",
                    NAME,
                    "sleep",
                    "600",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        # Every exec has started once the container runs one sleep per stream (and its own).
        while True:
            top = subprocess.run(["docker", "top", NAME], capture_output=True, text=True).stdout
            if top.count("sleep 600") >= STREAMS:
                break
            if time.perf_counter() - t0 > 300:
                raise SystemExit(f"only {top.count('sleep 600')} of {STREAMS} execs started within 300 s")
            await asyncio.sleep(0.2)
        opened = time.perf_counter() - t0
        await asyncio.sleep(2)  # let the clients settle into their idle state
        clients = [rollup(p.pid) for p in procs]
        private = sum(c.get("Private_Dirty", 0) + c.get("Private_Clean", 0) for c in clients) / len(clients)
        pss = sum(c.get("Pss", 0) for c in clients) / len(clients)
        client_threads = sum(threads(p.pid) for p in procs) / len(procs)
        print(f"streams: {STREAMS} idle `docker exec` streams into one container, open in {opened:.1f} s")
        print(f"machine load while measuring: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
        print(
            f"this process (the console's side): {threading.active_count() - base_threads} more threads, "
            f"{len(os.listdir('/proc/self/fd')) - base_fds} more open files"
        )
        print(
            f"each docker CLI client: {private / 1024:.1f} MB private, PSS {pss / 1024:.1f} MB, {client_threads:.0f} threads"
        )
        if shim:
            after = rollup(shim)
            grew = (after.get("Pss", 0) - shim_before.get("Pss", 0)) / STREAMS
            print(f"the container's shim: PSS {after.get('Pss', 0) / 1024:.1f} MB, {grew:.0f} kB more per stream")
        if dockerd:
            after = rollup(dockerd)
            grew = (after.get("Pss", 0) - dockerd_before.get("Pss", 0)) / STREAMS
            print(f"dockerd: {grew:.0f} kB more PSS per stream (the engine is shared: other work moves it too)")
        else:
            print("dockerd: not measured (not the engine of /var/run/docker.pid)")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
        for p in procs:
            await p.wait()
        subprocess.run(["docker", "rm", "-f", NAME], capture_output=True)


if __name__ == "__main__":
    asyncio.run(main())
