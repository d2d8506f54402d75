"""Bring-up and teardown of one docker bottle with warm images: median of 5 (targets 3 s / 2 s).

Bring-up is `start --detach` returning, which happens once the agent container runs and egress
has written its ready file; each round then checks that `claude --version` can be exec'd.
"""

from __future__ import annotations

import shutil
import subprocess

from common import cli, make_home, summary, timed

ROUNDS = 5


def main() -> None:
    home = make_home()
    cli(home, "images", "build")  # warm images (a no-op when they are up to date)
    ups, downs, execs = [], [], []
    try:
        for _ in range(ROUNDS):
            up, out = timed(lambda: cli(home, "start", "bench", "--yes", "--detach"))
            slug = out.stdout.strip().splitlines()[-1]
            ex, version = timed(
                lambda slug=slug: subprocess.run(
                    ["docker", "exec", f"claude-bottle-{slug}-agent", "claude", "--version"],
                    capture_output=True,
                    text=True,
                    check=True,
                )
            )
            assert "Claude Code" in version.stdout, version
            down, _ = timed(lambda slug=slug: cli(home, "stop", slug))
            ups.append(up)
            execs.append(ex)
            downs.append(down)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(summary("bring-up (start --detach until ready)", ups))
    print(summary("first `claude --version` exec after ready", execs))
    print(summary("teardown (stop, incl. log + transcript dump)", downs))


if __name__ == "__main__":
    main()
