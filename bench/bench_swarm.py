"""Swarm bottles on the lab (`make swarm-lab`, brought up here when it is not): bring-up and
teardown (targets <= 5 s and <= 3 s with the images on the node), a proposal written in the bundle
-> seen by the host (the control channel's watch stream; target <= 300 ms), approve -> route live
(<= 500 ms), and `ls` with BENCH_SWARM_BOTTLES (default 30) bottles on the 3 nodes: the calls it
makes of the manager and of each node, and its wall time; then the console's refresh with those
bottles (CPU of the console process and of the docker CLIs it runs). Prints figures; asserts only that the
things measured happened."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import summary  # noqa: E402

from tests.support import swarm  # noqa: E402
from tests.support.bottles import SECRET  # noqa: E402

BOTTLES = int(os.environ.get("BENCH_SWARM_BOTTLES", "30"))
ROUNDS = 3
PROPOSE = """
import sys
from bottle_contract import proposal as contract
data = contract.new_proposal(sys.argv[1], "egress-route", {"host": "bench-watch.fake.test"}, "bench")
contract.Queue("/state/supervise/queue").write(data)
print(data["id"])
"""
# Runs in the agent: request until egress stops answering 403; print when the first request that
# egress let through was sent (epoch seconds): the lab has no upstream, so its answer (a 502)
# comes only after egress gave up on it, which is no part of the route becoming live.
UNTIL_LIVE = """
import sys, time, urllib.request, urllib.error
opener = urllib.request.build_opener()  # the agent's HTTP_PROXY: egress
print("ready", flush=True)
while True:
    sent = time.time()
    try:
        opener.open(sys.argv[1], timeout=10)
        code = 200
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError:
        code = 0
    if code != 403:
        print(sent, code, flush=True)
        break
    time.sleep(0.01)
"""


async def console_refresh(home: Path, rounds: int = 10) -> tuple[list[float], list[float], list[float], int]:
    """The real console on ``home`` (in-process, Pilot): for each refresh of the agents pane, the
    CPU of the console process, the CPU of the docker CLI calls it waited for, and the wall time."""
    from bottle_tui.console.app import BottleConsole

    def child_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    app = BottleConsole(home, watch_events=False, watch_files=False, poll_seconds=3600, tick=False)
    own, children, wall = [], [], []
    async with app.run_test(size=(160, 50)) as pilot:
        while not (app.proposals_pane.loaded and app.versions):
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        for _ in range(rounds):
            c0, k0, t0 = time.process_time(), child_cpu(), time.perf_counter()
            worker = app.refresh_bottles()
            await worker.wait()
            await pilot.pause()
            own.append(time.process_time() - c0)
            children.append(child_cpu() - k0)
            wall.append(time.perf_counter() - t0)
        rows = app.query_one("#bottles").row_count
    return own, children, wall, rows


def main() -> None:
    was_up = swarm.lab_is_up()
    took = swarm.lab_up()
    print(f"swarm lab: {'was up' if was_up else 'brought up'} in {took:.1f} s (3 dockerds, images on each node)")
    home = swarm.write_swarm_home(Path(os.environ.get("TMPDIR", "/tmp")) / f"bottle-bench-swarm-{os.getpid()}")
    os.environ["CLAUDE_BOTTLE_HOME"] = str(home)
    os.environ["BOTTLE_TEST_TOKEN"] = SECRET
    from bottle_tui import ops
    from bottle_tui.backends.swarm import lifecycle
    from bottle_tui.backends.swarm.render import CONTROL
    from bottle_tui.config import load_config

    def quiet(_line: str) -> None:
        pass

    async def start_one() -> str:
        plan = ops.plan(home, "tester")
        await ops.start(plan, quiet)
        return plan.slug

    async def stop_one(slug: str) -> None:
        await ops.stop(home, await ops.find(slug), quiet)

    slugs: list[str] = []
    try:
        ups, downs = [], []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            slug = asyncio.run(start_one())
            ups.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            asyncio.run(stop_one(slug))
            downs.append(time.perf_counter() - t0)
        print(summary("swarm bottle bring-up (ops.start, images on the node)", ups))
        print(summary("swarm bottle teardown (ops.stop)", downs))

        slugs.append(asyncio.run(start_one()))
        b = swarm.SwarmBottle(slugs[0], home)
        # proposal written in the bundle -> the host's watch stream says it
        watch = subprocess.Popen(
            ["docker", "--context", swarm.node_context(b.node), "exec", b.container("sidecars"),
             *CONTROL, "watch"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert watch.stdout is not None
        seen = []
        for _ in range(5):
            while True:  # drain to the first synced line after the snapshot
                line = json.loads(watch.stdout.readline())
                if line.get("synced"):
                    break
            t0 = time.time()
            pid = b.exec("/opt/egress/bin/python", "-c", PROPOSE, b.slug, role="sidecars", check=True).stdout.strip()
            while True:
                line = json.loads(watch.stdout.readline())
                if (line.get("proposal") or {}).get("id") == pid:
                    seen.append(time.time() - t0)
                    break
        watch.kill()
        print(
            summary(
                "proposal written in the bundle -> on the host's watch stream (incl. the exec that writes it)", seen
            )
        )

        # approve -> route live, seen from the agent
        lives = []
        for i in range(3):
            host = f"live{i}.fake.test"
            b.exec("curl", "-s", "-m", "3", "-o", "/dev/null", f"http://{host}/")
            pending = None
            deadline = time.monotonic() + 30
            while pending is None and time.monotonic() < deadline:
                found = [p for p in ops.list_proposals(home) if p.change.get("host") == host]
                pending = found[0] if found else None
                time.sleep(0.1)
            assert pending is not None, f"no draft for {host}"
            agent = subprocess.Popen(
                ["docker", "--context", swarm.node_context(b.node), "exec", b.container("agent"),
                 "python3", "-c", UNTIL_LIVE, f"http://{host}/"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
            t0 = time.time()
            asyncio.run(ops.decide(home, pending.id, "approve", by="bench"))
            decided = time.time() - t0
            live_at = float(agent.stdout.readline().split()[0])
            agent.wait(timeout=30)
            lives.append(live_at - t0)
            print(f"  approve {host}: ops.decide returned after {decided:.2f} s, route live after {live_at - t0:.2f} s")
        print(summary("approve -> route live (seen by a request loop in the agent)", lives))
        asyncio.run(stop_one(slugs.pop()))

        # ls with BOTTLES bottles spread over the three nodes
        def start_in_process(_: int) -> str:
            return asyncio.run(start_one())

        t0 = time.perf_counter()
        with ThreadPoolExecutor(3) as pool:
            slugs += list(pool.map(start_in_process, range(BOTTLES)))
        print(f"started {BOTTLES} swarm bottles in {time.perf_counter() - t0:.1f} s (3 at a time)")
        settings = load_config(home).swarm
        assert settings is not None
        times, costs = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            infos, cluster = asyncio.run(lifecycle.discover(settings))
            times.append(time.perf_counter() - t0)
            assert sum(1 for i in infos if i.slug in slugs and i.status == "running(2)") == BOTTLES
            costs.append(cluster.calls)
        nodes = {i.slug: i for i in infos}
        per_node: dict[str, int] = {}
        for slug in slugs:
            host = json.loads((home / "state" / slug / "metadata.json").read_text())["node"]
            per_node[host] = per_node.get(host, 0) + 1
        calls = costs[-1]
        manager = [what for ctx, what in calls if ctx == swarm.MANAGER]
        by_node = {ctx: sum(1 for c, _ in calls if c == ctx) for ctx, _ in calls if ctx != swarm.MANAGER}
        print(f"bottles per node: {per_node} ({len(nodes)} listed)")
        print(f"`ls` calls: manager {len(manager)} ({', '.join(manager)}), nodes {by_node}")
        print(summary(f"swarm discovery with {BOTTLES} bottles on 3 nodes (wall time)", times))
        t0 = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "bottle_tui", "ls"], capture_output=True, text=True)
        print(
            f"`bottle-tui ls` (a process, every backend) with {BOTTLES} swarm bottles: {time.perf_counter() - t0:.2f} s"
        )
        assert cli.returncode == 0
        own, children, wall, rows = asyncio.run(console_refresh(home))

        def ms(xs: list[float]) -> str:
            return f"median {statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f}, n={len(xs)})"

        print(f"console refresh with {rows} swarm bottle rows: CPU in the console process {ms(own)}")
        print(f"  CPU of the docker CLI calls it ran {ms(children)}; wall {ms(wall)}")
    finally:

        def stop_quietly(slug: str) -> None:
            try:
                asyncio.run(stop_one(slug))
            except Exception as exc:  # a benchmark's teardown goes on
                print(f"stopping {slug}: {exc}")

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(stop_quietly, slugs))
        if not was_up:
            swarm.lab_down()


if __name__ == "__main__":
    main()
