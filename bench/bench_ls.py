"""`bottle-tui ls` with 20 running bottles: docker CLI calls made (target 2, independent of the
count) and wall time (median of 5). The calls are counted by a `docker` shim on PATH that logs
its argv and runs the real CLI."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import cli, make_home, summary, timed

from bottle_tui.backends.docker.workspace import volume_name

BOTTLES = 20
ROUNDS = 5


def docker_shim() -> tuple[Path, Path]:
    real = shutil.which("docker")
    assert real, "docker CLI not found"
    folder = Path(tempfile.mkdtemp(prefix="bottle-bench-shim-"))
    log = folder / "calls.log"
    shim = folder / "docker"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{real}" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return folder, log


def main() -> None:
    home = make_home()
    slugs: list[str] = []
    shim_dir, log = docker_shim()
    try:
        for _ in range(BOTTLES):
            slugs.append(cli(home, "start", "bench", "--yes", "--detach").stdout.strip().splitlines()[-1])
        env = {"PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}"}
        times, calls = [], []
        for _ in range(ROUNDS):
            log.write_text("")
            took, out = timed(lambda: cli(home, "ls", "--json", env=env))
            listed = sum(1 for s in slugs if s in out.stdout)
            assert listed == BOTTLES, f"ls listed {listed} of {BOTTLES}"
            times.append(took)
            calls.append(len(log.read_text().splitlines()))
        print(f"bottles running: {BOTTLES}")
        print(f"docker CLI calls per `ls`: {sorted(set(calls))} ({log.read_text().strip().splitlines()})")
        print(summary("`bottle-tui ls --json` wall time", times))
    finally:

        def down(slug: str) -> None:
            subprocess.run(
                ["docker", "compose", "-p", f"claude-bottle-{slug}", "down", "--timeout", "1"], capture_output=True
            )
            # the agent's work volume is not the project's: compose leaves it
            subprocess.run(["docker", "volume", "rm", "-f", volume_name(slug)], capture_output=True)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(down, slugs))
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(shim_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
