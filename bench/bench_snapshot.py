"""Snapshot and fork a bottle whose agent holds 1 GB: what `bottle-tui snapshot` and `start --from` cost.

The agent writes 900 MB into its container's own filesystem (900 files of 1 MiB of random bytes in
/var/tmp/bench, which no compressor shrinks: the engine commits them to the snapshot's image) and
100 MB into its checkout on the work volume (1,000 files of 100 KB of text: the snapshot's home.tar).
Timed as an operator sees them, through the CLI: the plain start of the same bottle (for
comparison), the snapshot (the agent paused for the commit and the home's tar), and the fork
(`start --from`: a bring-up plus filling the new volume from home.tar). One round: each writes
gigabytes, and the figures are seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from common import cli, make_home, timed

FILL = r"""
set -e
mkdir -p /var/tmp/bench /home/agent/work/text
cd /var/tmp/bench
for i in $(seq 1 900); do head -c 1048576 /dev/urandom > $i.bin; done
cd /home/agent/work/text
for i in $(seq 1 1000); do yes "line $i of some source file, the kind an agent writes" | head -c 100000 > $i.txt; done
echo "$(du -sm /var/tmp/bench | cut -f1) $(du -sm /home/agent/work | cut -f1)"
"""


def agent(slug: str, script: str) -> str:
    return subprocess.run(
        ["docker", "exec", f"claude-bottle-{slug}-agent", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout


def main() -> None:
    home = make_home()
    cli(home, "images", "build")
    running: list[str] = []
    name = "bench-1g"
    try:
        start, out = timed(lambda: cli(home, "start", "bench", "--yes", "--detach"))
        slug = out.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        running.append(slug)
        print(f"start (for comparison): {start:.1f} s")
        fs_mb, home_mb = agent(slug, FILL).split()
        took, _ = timed(lambda: cli(home, "snapshot", slug, "--name", name))
        tar = home / "snapshots" / name / "home.tar"
        paused = json.loads((home / "snapshots" / name / "snapshot.json").read_text())["paused_seconds"]
        layer = subprocess.run(
            ["docker", "history", "--human=false", "--format", "{{.Size}}", f"bottle-tui/snapshot:{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[0]
        print(
            f"snapshot of {fs_mb} MB in the agent's filesystem + {home_mb} MB checkout: {took:.1f} s, the agent "
            f"paused {paused:.1f} s of it (image layer {int(layer) / 1e6:.0f} MB, home.tar {tar.stat().st_size / 1e6:.0f} MB)"
        )
        forked, out = timed(lambda: cli(home, "start", "bench", "--from", name, "--yes", "--detach"))
        fork = out.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        running.append(fork)
        check = agent(fork, "ls /var/tmp/bench | wc -l; ls /home/agent/work/text | wc -l").split()
        assert check == ["900", "1000"], check
        print(f"start --from that snapshot: {forked:.1f} s (the fork holds the 900 files and the 1,000)")
    finally:
        for slug in running:
            subprocess.run([sys.executable, "-m", "bottle_tui", "--home", str(home), "stop", slug], capture_output=True)
        subprocess.run(
            [sys.executable, "-m", "bottle_tui", "--home", str(home), "snapshots", "rm", name], capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
