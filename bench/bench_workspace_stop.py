"""Stop with a 200 MB checkout: what saving the agent's unsaved work costs, on one warm bottle.

The checkout is 100 MB of random bytes (100 files of 1 MiB, which no compressor shrinks) and
100 MB of text (1,000 files of 100 KB). Measured in the running agent container, as stop does it:
the git path with all of it untracked (`uncommitted.patch`) and with all of it committed on a
branch the gate does not hold (`refs.bundle`), then the whole `stop` of the bottle without git
(`work.tar.gz`, then compose down and the volume removed). One round each: the figures are
seconds, not milliseconds, and a round writes 200+ MB.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import cli, make_home, timed

from bottle_tui.backends.docker import workspace

FILL = r"""
set -e
cd /home/agent/work
mkdir -p random text
for i in $(seq 1 100); do head -c 1048576 /dev/urandom > random/$i.bin; done
for i in $(seq 1 1000); do yes "line $i of some source file, the kind an agent writes" | head -c 100000 > text/$i.txt; done
du -sm . | cut -f1
"""


def agent(slug: str, script: str) -> str:
    done = subprocess.run(
        ["docker", "exec", f"claude-bottle-{slug}-agent", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return done.stdout


def sizes(folder: Path) -> str:
    return ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in sorted(folder.iterdir()))


def main() -> None:
    home = make_home()
    cli(home, "images", "build")
    scratch = Path(tempfile.mkdtemp(prefix="bottle-bench-work-"))
    slug = None
    try:
        slug = cli(home, "start", "bench", "--yes", "--detach").stdout.strip().splitlines()[-1]
        megabytes = agent(slug, FILL).strip()
        place = workspace.exec_place(f"claude-bottle-{slug}-agent")

        agent(slug, "cd /home/agent/work && git init -q -b main")
        untracked, saved = timed(lambda: asyncio.run(workspace.archive(place, scratch / "a", mirror=None, git=True)))
        print(f"checkout of {megabytes} MB, all untracked: patch in {untracked:.1f} s ({sizes(scratch / 'a')})")

        agent(slug, "cd /home/agent/work && git add -A && git -c user.name=b -c user.email=b@b commit -qm all")
        committed, _ = timed(lambda: asyncio.run(workspace.archive(place, scratch / "b", mirror=None, git=True)))
        print(
            f"checkout of {megabytes} MB, all committed, no mirror: bundle in {committed:.1f} s ({sizes(scratch / 'b')})"
        )

        agent(slug, "rm -rf /home/agent/work/.git")
        stop, out = timed(lambda: cli(home, "stop", slug))
        slug = None
        line = next(x for x in out.stderr.splitlines() if x.startswith("checkout: "))  # type: ignore[attr-defined]
        tarball = Path(line.rsplit(" as ", 1)[1])
        print(
            f"stop of a bottle without git, {megabytes} MB checkout: {stop:.1f} s in all "
            f"(work.tar.gz {tarball.stat().st_size / 1e6:.0f} MB; compose down and volume removal included)"
        )
    finally:
        if slug is not None:
            subprocess.run([sys.executable, "-m", "bottle_tui", "--home", str(home), "stop", slug], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
