"""Warm and cold starts side by side in one run (issue 20: agent ready <= 0.3 s from a claim,
<= 1.0 s cold; the cold anchor before this work was 2.26 s), with where a cold bring-up spends
its time, and the stop of each kind. Rounds alternate warm and cold, so both see the same machine.

- warm: `start --detach` of an agent whose bottle keeps a pool (`pool: {size: 1}`); its claim to
  ready is what bringup.log records ("ready (N s after the claim)"), the CLI's wall time includes
  Python's start, the plan, the preflight and the claim. Before each round the refill the last
  start left running has finished (the bench waits for it), so a member is ready and the cores idle.
- cold: the same bottle without a pool; its phases are bringup.log's "timings" line.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from common import BOTTLE, cli, make_home, summary, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.bottles import wait_for_fillers

ROUNDS = 5
WARM_TARGET, COLD_TARGET, COLD_ANCHOR = 0.3, 1.0, 2.26


def start(home: Path, agent: str) -> tuple[float, str]:
    seconds, out = timed(lambda: cli(home, "start", agent, "--yes", "--detach"))
    return seconds, out.stdout.strip().splitlines()[-1]


def check_agent(slug: str) -> None:
    version = subprocess.run(
        ["docker", "exec", f"claude-bottle-{slug}-agent", "claude", "--version"], capture_output=True, text=True
    )
    assert "Claude Code" in version.stdout, version


def phases(log: Path) -> dict[str, float]:
    line = next(line for line in reversed(log.read_text().splitlines()) if "timings (s):" in line)
    return {
        name.strip(): float(value) for name, value in re.findall(r"([a-z][a-z ,]*?) ([0-9.]+)", line.split(":", 3)[-1])
    }


def main() -> None:
    home = make_home()
    (home / "bottles" / "warm.md").write_text(BOTTLE.replace("---\n", "---\npool: {size: 1}\n", 1))
    (home / "agents" / "warm.md").write_text("---\nbottle: warm\n---\nWarm benchmark agent.\n")
    cli(home, "images", "build")  # warm images (a no-op when they are up to date)
    claims, warm_cli, warm_stops = [], [], []
    colds, cold_stops = [], []
    cold_phases: dict[str, list[float]] = defaultdict(list)
    try:
        cli(home, "pool", "fill")
        for _ in range(ROUNDS):
            wait_for_fillers(home)
            seconds, slug = start(home, "warm")
            log = (home / "state" / slug / "bringup.log").read_text()
            claims.append(float(re.findall(r"ready \(([0-9.]+) s after the claim\)", log)[-1]))
            warm_cli.append(seconds)
            check_agent(slug)
            wait_for_fillers(home)
            warm_stops.append(timed(lambda slug=slug: cli(home, "stop", slug))[0])

            seconds, slug = start(home, "bench")
            colds.append(seconds)
            for name, value in phases(home / "state" / slug / "bringup.log").items():
                cold_phases[name].append(value)
            check_agent(slug)
            cold_stops.append(timed(lambda slug=slug: cli(home, "stop", slug))[0])
    finally:
        wait_for_fillers(home)
        cli(home, "pool", "drain")
        cli(home, "cleanup", "--yes")
        shutil.rmtree(home, ignore_errors=True)
    print(summary(f"warm: agent ready from the claim (target {WARM_TARGET} s)", claims))
    print(summary("warm: start --detach, whole CLI (Python start, plan, preflight, claim)", warm_cli))
    print(summary(f"cold: start --detach, whole CLI (target {COLD_TARGET} s, anchor {COLD_ANCHOR} s)", colds))
    print(
        "cold bring-up phases, median s: "
        + "; ".join(f"{name} {statistics.median(values):.3f}" for name, values in cold_phases.items())
    )
    print(summary("stop of a claimed warm bottle", warm_stops))
    print(summary("stop of a cold bottle", cold_stops))


if __name__ == "__main__":
    main()
