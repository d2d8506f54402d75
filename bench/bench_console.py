"""Console figures (issue 7's targets, issue 20's for the launch): launch to first paint <= 300 ms
and peak resident memory <= 60 MB, each measured side by side with its anchor (the tree before
issue 20, ANCHOR, run from a `git archive` of it in the same run, launches interleaved), with the
imports behind it; resident memory <= 100 MB loaded;
with 200 running compose projects carrying bottle-tui's labels and 2,000 queued proposals: CPU per
refresh in the console process <= 20 ms (issue 19: with the SPEND column; and, apart, with every
bottle's usage.json rewritten before each refresh, the worst case of agents all spending at once), docker CLI calls per refresh constant in the number of
bottles, key press to repaint <= 50 ms; proposal file written -> row on screen <= 100 ms.

Launch, memory and file -> screen are measured on the real console under a real tmux (the pane
read with capture-pane); CPU, CLI calls and key -> repaint in-process (Pilot) on the same home
and engine. The light projects are `docker compose` projects of one `sleep` container each,
without networks (network_mode: none), so they take no address pool from other bottles; they are
removed at the end. BENCH_CONSOLE_BOTTLES changes their number. BENCH_CONSOLE_ONLY=launch measures
the launch alone (no engine or images needed).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bottle_contract.files import atomic_write  # noqa: E402
from bottle_contract.usage import Budget, Ledger, default_prices, write_usage  # noqa: E402
from bottle_tui.backends.docker import engine, images, labels  # noqa: E402
from bottle_tui.state import state_dir  # noqa: E402

BOTTLES = int(os.environ.get("BENCH_CONSOLE_BOTTLES", "200"))
PROPOSALS = int(os.environ.get("BENCH_CONSOLE_PROPOSALS", "2000"))
IMAGE = images.BASE_IMAGE
ROUNDS = 15
RUN = uuid.uuid4().hex[:6]


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:5])} failed: {result.stderr.strip()[-500:]}")
    return result


def compose_file(home: Path, slug: str) -> Path:
    doc = {
        "name": f"claude-bottle-{slug}",
        "services": {
            "agent": {
                "image": IMAGE,
                "command": ["sleep", "infinity"],
                "init": True,
                "network_mode": "none",
                "labels": {
                    labels.MANAGED: "true",
                    labels.SLUG: slug,
                    labels.AGENT: "bench",
                    labels.BOTTLE: "bench",
                    labels.BACKEND: "docker",
                    labels.STARTED_AT: "2026-11-27T08:00:00+00:00",
                    labels.HOME: str(home),
                },
            }
        },
    }
    path = home / "compose" / f"{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def up(home: Path, slug: str) -> None:
    sh(
        "docker",
        "compose",
        "-p",
        f"claude-bottle-{slug}",
        "-f",
        str(compose_file(home, slug)),
        "up",
        "-d",
        "--quiet-pull",
        timeout=180,
    )


def down(slug: str) -> None:
    sh("docker", "compose", "-p", f"claude-bottle-{slug}", "down", "--timeout", "1", check=False, timeout=180)


def write_usages(home: Path, slugs: list[str], step: int) -> None:
    """Every bottle's usage.json as egress writes it, a little more spent at each ``step``; every
    fourth bottle near its budget (the cell is highlighted)."""
    prices = default_prices()
    for i, slug in enumerate(slugs):
        ledger = Ledger()
        c = ledger.counts("claude-sonnet-4-5-20250929")
        c.update(
            input_tokens=1_000 + step, output_tokens=20_000 + 97 * step, cache_read_input_tokens=400_000, requests=40
        )
        ledger.counts("claude-haiku-4-5-20251001").update(input_tokens=3_000, output_tokens=500, requests=9)
        s = state_dir(home, slug)
        s.egress.mkdir(parents=True, exist_ok=True)
        budget = Budget(usd=0.5) if i % 4 == 0 else None
        write_usage(s.usage, ledger.to_doc(slug, prices, budget, time.time()))


def queue_proposals(home: Path, slugs: list[str], count: int) -> None:
    for i in range(count):
        slug = slugs[i % len(slugs)]
        s = state_dir(home, slug)
        q = s.supervise / "queue"
        if not q.is_dir():
            q.mkdir(parents=True)
            (s.egress).mkdir(parents=True, exist_ok=True)
        pid = f"20261127t07{i:07d}-{RUN}aa"
        data = {
            "version": 1,
            "id": pid,
            "slug": slug,
            "kind": "egress-route",
            "change": {"host": f"h{i}.example.org", "ports": [443], "methods": ["GET"], "paths": ["/x/*"]},
            "reason": f"bench proposal {i}",
            "draft": False,
            "created_at": f"2026-11-27T07:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
            "status": "pending",
            "decision": None,
        }
        atomic_write(q / f"{pid}.json", json.dumps(data), mode=0o644)


def ms(samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return f"median {statistics.median(s) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (n={len(s)})"


# --- the real console under tmux -----------------------------------------------------------------


class Tmux:
    """A tmux server of our own; a fresh socket for each launch (a new session right after
    kill-server on the same socket can race the old server's exit)."""

    launches = 0

    def __init__(self) -> None:
        self.socket = f"bench-console-{RUN}"

    def fresh(self) -> None:
        self.kill()
        Tmux.launches += 1
        self.socket = f"bench-console-{RUN}-{Tmux.launches}"

    def cmd(self, *args: str, check: bool = True) -> str:
        return sh("tmux", "-L", self.socket, *args, check=check).stdout

    def screen(self) -> str:
        return self.cmd("capture-pane", "-p", "-t", "bench")

    def kill(self) -> None:
        self.cmd("kill-server", check=False)
        # tmux leaves its socket file behind after kill-server.
        Path(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", self.socket).unlink(missing_ok=True)


def launch(home: Path, tmux: Tmux, tree: Path | None = None) -> tuple[float, int]:
    """Seconds from starting the console to its first frame in the pane, and the console's pid.
    ``tree``: run that checkout's bottle_tui instead of this one (its folders first on the path)."""
    first, pid, _ = launch_timed(home, tmux, tree)
    return first, pid


@dataclass(frozen=True)
class Launch:
    seen: float  # s from tmux new-session to the first frame in the pane (capture-pane)
    written: float  # s from tmux new-session to the first frame handed to the driver
    cpu: float  # the console's CPU seconds then
    modules: int  # modules imported by then
    pid: int


def launch_timed(
    home: Path, tmux: Tmux, tree: Path | None = None, *, timed: bool = False
) -> tuple[float, int, Launch | None]:
    """As ``launch``; with ``timed``, run through bench/first_frame.py, which notes when the
    first frame was handed to the driver (a Launch; None without ``timed``)."""
    path = f"PYTHONPATH={shlex.quote(f'{tree}:{tree}/sidecars/common')} " if tree else ""
    note = Path(tempfile.mkdtemp(prefix="bottle-bench-frame-")) / "first-frame"
    console = f"--home {shlex.quote(str(home))} console"
    python = shlex.quote(sys.executable)
    program = f"{shlex.quote(str(ROOT / 'bench' / 'first_frame.py'))} {note} --" if timed else "-m bottle_tui"
    command = f"env -u COLUMNS -u LINES {path}{python} {program} {console}"
    tmux.fresh()
    t0 = time.perf_counter()
    m0 = time.monotonic()
    # The tree's own folder as the working directory: `python -m` puts it first on the path.
    tmux.cmd("new-session", "-d", "-s", "bench", "-x", "160", "-y", "50", "-c", str(tree or ROOT), command)
    pid = int(tmux.cmd("display", "-p", "-t", "bench", "#{pane_pid}").strip())
    while "Proposals" not in tmux.screen():
        if time.perf_counter() - t0 > 30:
            raise SystemExit("the console did not paint within 30 s:\n" + tmux.screen())
        time.sleep(0.003)
    first = time.perf_counter() - t0
    if not timed:
        return first, pid, None
    deadline = time.monotonic() + 5
    while not note.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    at, cpu, modules = note.read_text().split()
    shutil.rmtree(note.parent, ignore_errors=True)
    return first, pid, Launch(first, float(at) - m0, float(cpu), int(modules), pid)


def status_mb(pid: int, key: str) -> float:
    """A /proc/PID/status figure in MB (VmRSS: resident now, VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


# --- the launch, side by side with its anchor ----------------------------------------------------

# main before issue 20 (a quick console): its launch measured 332-493 ms to first paint, importing
# 586 modules before its first frame (ops, the backends, libtmux, yaml, the dialogs among them).
ANCHOR = "a624700"
LAUNCHES = int(os.environ.get("BENCH_CONSOLE_LAUNCHES", "7"))
# What the console's entry point imports before its first frame: the CLI, then the app.
FIRST_IMPORTS = "import bottle_tui.cli, bottle_tui.console.app"


def anchor_tree() -> Path | None:
    """ANCHOR's files in a temporary folder (`git archive`), or None when this checkout lacks it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ANCHOR], capture_output=True, stdin=subprocess.DEVNULL)
    if archive.returncode != 0:
        return None
    dest = Path(tempfile.mkdtemp(prefix="bottle-bench-anchor-"))
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def tree_env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}:{tree}/sidecars/common"
    return env


def group_of(module: str) -> str:
    top = module.split(".", 1)[0]
    if top in ("bottle_tui", "bottle_contract", "themes"):
        return "bottle_tui"
    if top in ("textual", "rich", "libtmux", "yaml", "watchfiles", "platformdirs", "markdown_it"):
        return top
    return "stdlib" if top in sys.stdlib_module_names or top.startswith("_") else "other"


def import_profile(tree: Path | None, rounds: int = 5) -> tuple[int, float, dict[str, tuple[int, float]], list[str]]:
    """``FIRST_IMPORTS`` under ``python -X importtime``, best of ``rounds`` (by the total): the
    module count, the total seconds, per group (count, seconds of the modules' own time), and
    the heaviest of ours (cumulative)."""
    best: tuple[int, float, dict[str, tuple[int, float]], list[str]] | None = None
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", FIRST_IMPORTS],
            capture_output=True,
            text=True,
            env=tree_env(tree),
            cwd=tree or ROOT,  # `-c` puts the working directory first on the path
            stdin=subprocess.DEVNULL,
            check=True,
        ).stderr
        groups: dict[str, tuple[int, float]] = {}
        ours: list[tuple[float, str]] = []
        count, total = 0, 0.0
        for line in out.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, cumulative, name = line.removeprefix("import time:").split("|")
            module = name.strip()
            n, t = groups.get(group_of(module), (0, 0.0))
            groups[group_of(module)] = (n + 1, t + int(own) / 1e6)
            count, total = count + 1, total + int(own) / 1e6
            if group_of(module) == "bottle_tui":
                ours.append((int(cumulative) / 1e6, module))
        heaviest = [f"{m} {t * 1000:.0f} ms" for t, m in sorted(ours, reverse=True)[:4]]
        if best is None or total < best[1]:
            best = (count, total, groups, heaviest)
    assert best is not None
    return best


def imports_line(name: str, profile: tuple[int, float, dict[str, tuple[int, float]], list[str]]) -> str:
    count, total, groups, heaviest = profile
    parts = ", ".join(f"{g} {n} / {t * 1000:.0f} ms" for g, (n, t) in sorted(groups.items(), key=lambda kv: -kv[1][1]))
    return f"  {name}: {count} modules, {total * 1000:.0f} ms [{parts}]; ours, cumulative: {'; '.join(heaviest)}"


def launch_side_by_side(home: Path, tmux: Tmux) -> dict[str, list[tuple[Launch, float, float]]]:
    """Launches of this tree and of ANCHOR, interleaved (the machine's load falls on both): per
    tree, each launch with its resident and peak resident MB 2 s after the first frame."""
    anchor = anchor_tree()
    trees: dict[str, Path | None] = {"this tree": None}
    if anchor is not None:
        trees[f"anchor {ANCHOR}"] = anchor
    figures: dict[str, list[tuple[Launch, float, float]]] = {name: [] for name in trees}
    profiles = {name: import_profile(tree) for name, tree in trees.items()}
    try:
        for _ in range(LAUNCHES):
            for name, tree in trees.items():
                _, pid, timed = launch_timed(home, tmux, tree, timed=True)
                assert timed is not None
                time.sleep(2.0)
                figures[name].append((timed, status_mb(pid, "VmRSS"), status_mb(pid, "VmHWM")))
                tmux.kill()
    finally:
        if anchor is not None:
            shutil.rmtree(anchor, ignore_errors=True)
    print(
        f"launch to first paint, empty home, {LAUNCHES} launches each, interleaved; from tmux new-session to "
        "the first frame handed to Textual's driver (bench/first_frame.py), and to that frame seen in the "
        "pane (capture-pane)  [target <= 300 ms, <= 60 MB]:"
    )
    for name, rows in figures.items():
        launches = [r[0] for r in rows]
        print(
            f"  {name}: written {ms([x.written for x in launches])}; seen {ms([x.seen for x in launches])}; "
            f"CPU by then {ms([x.cpu for x in launches])}; {statistics.median(x.modules for x in launches):.0f} modules by then; "
            f"2 s later resident {statistics.median(r[1] for r in rows):.0f} MB, peak {statistics.median(r[2] for r in rows):.0f} MB"
        )
    if anchor is None:
        print(f"  (no anchor: this checkout lacks {ANCHOR}; it measured 332-493 ms and imported 586 modules)")
    print(f"imports before the first frame (python -X importtime -c '{FIRST_IMPORTS}', best of 5):")
    for name, profile in profiles.items():
        print(imports_line(name, profile))
    print(f"machine load while measuring: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
    return figures


def key_to_repaint(tmux: Tmux) -> list[float]:
    """j/k in the proposals pane of the real console: from send-keys to a changed pane (colours
    included: the cursor row is a highlight)."""
    tmux.cmd("send-keys", "-t", "bench", "Tab")
    time.sleep(0.5)
    samples = []
    for i in range(ROUNDS * 2):
        before = tmux.cmd("capture-pane", "-e", "-p", "-t", "bench")
        t0 = time.perf_counter()
        tmux.cmd("send-keys", "-t", "bench", "j" if i % 2 == 0 else "k")
        while tmux.cmd("capture-pane", "-e", "-p", "-t", "bench") == before:
            if time.perf_counter() - t0 > 5:
                raise SystemExit("the pane did not change within 5 s of a key press")
            time.sleep(0.001)
        samples.append(time.perf_counter() - t0)
        time.sleep(0.1)
    return samples


def file_to_screen(home: Path, slug: str, tmux: Tmux) -> list[float]:
    from bottle_tui import proposals

    samples = []
    s = state_dir(home, slug)
    for i in range(ROUNDS):
        host = f"new{i}-{RUN}.example.org"
        t0 = time.perf_counter()
        proposals.create(s, "egress-route", {"host": host, "ports": [443], "methods": ["GET"], "paths": []}, "bench")
        while host not in tmux.screen():
            if time.perf_counter() - t0 > 10:
                raise SystemExit(f"{host} did not show within 10 s")
            time.sleep(0.001)
        samples.append(time.perf_counter() - t0)
        time.sleep(0.3)
    return samples


# --- in-process: CPU, CLI calls, key -> repaint -------------------------------------------------


async def in_process(home: Path, slugs: list[str]) -> dict[str, object]:
    from bottle_tui.console.app import BottleConsole
    from bottle_tui.runner import run as real_run

    calls: list[str] = []

    async def counting_run(argv, **kw):
        calls.append(" ".join(map(str, argv[:3])))
        return await real_run(argv, **kw)

    engine.run = counting_run  # count every docker CLI call discovery makes
    app = BottleConsole(home, watch_events=False, watch_files=False, poll_seconds=3600, tick=False)
    out: dict[str, object] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        while not (app.proposals_pane.loaded and app.versions):
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        cpu, wall, per_refresh, spent_cpu = [], [], [], []
        for _ in range(ROUNDS):
            calls.clear()
            c0, t0 = time.process_time(), time.perf_counter()
            worker = app.refresh_bottles()
            await worker.wait()
            await pilot.pause()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
            per_refresh.append(len(calls))
        for step in range(ROUNDS):
            # The worst case for the spend column: every bottle's usage.json rewritten (egress's
            # writes, outside the console's CPU) since the last refresh, so every cell changes.
            write_usages(home, slugs, step + 1)
            c0 = time.process_time()
            worker = app.refresh_bottles()
            await worker.wait()
            await pilot.pause()
            spent_cpu.append(time.process_time() - c0)
        out["spent_cpu"] = spent_cpu
        out["cpu"] = cpu
        out["wall"] = wall
        out["calls"] = per_refresh
        out["rows"] = (app.query_one("#bottles").row_count, app.query_one("#proposals").row_count)
        # Key press -> repaint: j/k in the proposals pane (2,000 rows), each press processed and
        # the screen refreshed before the next.
        app.query_one("#proposals").focus()
        keys = []
        for i in range(ROUNDS * 4):
            t0 = time.perf_counter()
            await pilot.press("j" if i % 2 == 0 else "k")
            await pilot.pause()
            keys.append(time.perf_counter() - t0)
        out["keys"] = keys
    engine.run = real_run
    return out


async def count_calls_only(home: Path) -> int:
    """docker CLI calls of one discovery (for the comparison at another number of bottles)."""
    from bottle_tui.runner import run as real_run

    calls = 0

    async def counting_run(argv, **kw):
        nonlocal calls
        calls += 1
        return await real_run(argv, **kw)

    engine.run = counting_run
    try:
        await engine.discover()
    finally:
        engine.run = real_run
    return calls


HOOK_LOOP = r"""
n=20; t0=$(date +%s%N)
for i in $(seq $n); do echo '{"hook_event_name":"PreToolUse","tool_name":"Bash"}' | /opt/bottle/claude/report-status; done
t1=$(date +%s%N); echo $(( (t1 - t0) / n / 1000 ))
"""


def hook_cost() -> tuple[float, float]:
    """What one claude hook costs inside a real bottle (ms per call, timed in the agent), with the
    bundle up and with the sidecars container stopped."""
    from common import cli as bench_cli
    from common import make_home

    home = make_home()
    slug = bench_cli(home, "start", "bench", "--yes", "--detach").stdout.strip().splitlines()[-1]
    agent, sidecars = f"claude-bottle-{slug}-agent", f"claude-bottle-{slug}-sidecars"
    try:
        up_us = int(sh("docker", "exec", agent, "sh", "-c", HOOK_LOOP).stdout.strip())
        sh("docker", "stop", "-t", "1", sidecars)
        down_us = int(sh("docker", "exec", agent, "sh", "-c", HOOK_LOOP).stdout.strip())
    finally:
        bench_cli(home, "stop", slug)
        shutil.rmtree(home, ignore_errors=True)
    return up_us / 1000, down_us / 1000


def main() -> int:
    if os.environ.get("BENCH_CONSOLE_ONLY") == "launch":
        home, tmux = Path(tempfile.mkdtemp(prefix="bottle-bench-console-")), Tmux()
        try:
            launch_side_by_side(home, tmux)
        finally:
            tmux.kill()
            shutil.rmtree(home, ignore_errors=True)
        return 0
    if sh("docker", "image", "inspect", IMAGE, check=False).returncode != 0:
        raise SystemExit(f"{IMAGE} is missing: run `make images` first")
    home = Path(tempfile.mkdtemp(prefix="bottle-bench-console-"))
    slugs = [f"bench{RUN}-{i:03d}" for i in range(BOTTLES)]
    tmux = Tmux()
    try:
        empty = launch_side_by_side(home, tmux)["this tree"]
        empty_launches, empty_rss = [r[0].seen for r in empty], statistics.median(r[1] for r in empty)
        calls_before = asyncio.run(count_calls_only(home))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda s: up(home, s), slugs))
        print(f"console bench: {BOTTLES} light compose projects up in {time.perf_counter() - t0:.0f} s", flush=True)
        queue_proposals(home, slugs, PROPOSALS)
        write_usages(home, slugs, 0)
        calls_after = asyncio.run(count_calls_only(home))
        loaded_launches = []
        for _ in range(2):
            first, pid = launch(home, tmux)
            loaded_launches.append(first)
            tmux.kill()
        first, pid = launch(home, tmux)
        loaded_launches.append(first)
        deadline = time.time() + 60
        while f"{PROPOSALS} pending" not in tmux.screen() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        loaded_rss = rss_mb(pid)
        keys_tmux = key_to_repaint(tmux)
        to_screen = file_to_screen(home, slugs[0], tmux)
        tmux.kill()
        figures = asyncio.run(in_process(home, slugs))
        print(
            f"launch to first paint (process start -> first frame in the pane): empty home {ms(empty_launches)}; "
            f"{BOTTLES} bottles, {PROPOSALS} proposals {ms(loaded_launches)}  [target <= 300 ms]"
        )
        print(f"machine load while measuring: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
        print(f"resident memory: {empty_rss:.0f} MB (empty), {loaded_rss:.0f} MB (loaded)  [target <= 100 MB]")
        print(
            f"CPU per refresh in the console process ({figures['rows'][0]} agent rows with their SPEND cells, "
            f"{figures['rows'][1]} proposal rows): "
            f"{ms(figures['cpu'])}; wall {ms(figures['wall'])}  [target <= 20 ms CPU]"
        )
        print(
            f"CPU per refresh when every one of the {BOTTLES} bottles' usage.json changed since the last "
            f"(every SPEND cell re-rendered): {ms(figures['spent_cpu'])}"
        )
        print(
            f"docker CLI calls per refresh: {calls_before} with no bottles, {calls_after} with {BOTTLES}; "
            f"in the console: {sorted(set(figures['calls']))}  [constant]"
        )
        print(
            f"key press to repaint (j/k over {figures['rows'][1]} proposal rows): {ms(keys_tmux)} in tmux (send-keys -> pane changed); "
            f"{ms(figures['keys'])} through Pilot (press + pause)  [target <= 50 ms]"
        )
        print(f"proposal file written -> row on screen (tmux capture-pane): {ms(to_screen)}  [target <= 100 ms]")
        hook_up, hook_down = hook_cost()
        print(
            f"one claude hook in a real bottle: {hook_up:.1f} ms with the bundle up, {hook_down:.1f} ms with it gone  [returns at once either way]"
        )
        print(
            f"(the console's own RUSAGE: maxrss of this bench process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
        )
    finally:
        tmux.kill()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(down, slugs))
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
