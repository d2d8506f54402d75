"""Shared bits of the benchmarks: a throwaway home with a bench bottle, and the CLI as a subprocess."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AGENT = """---
bottle: bench
description: benchmark agent
---
Benchmark agent.
"""
BOTTLE = """---
description: benchmark bottle; routes only to a name nobody serves
egress:
  routes:
    - host: bench.fake.test
      ports: [80]
resources: {cpus: 1, memory: 512m, pids: 256}
---
"""


def make_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="bottle-bench-"))
    (home / "agents").mkdir()
    (home / "bottles").mkdir()
    (home / "agents" / "bench.md").write_text(AGENT)
    (home / "bottles" / "bench.md").write_text(BOTTLE)
    return home


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bottle_tui", "--home", str(home), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise SystemExit(f"bottle-tui {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def summary(label: str, samples: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(samples):.2f} s "
        f"(min {min(samples):.2f}, max {max(samples):.2f}, n={len(samples)})"
    )
