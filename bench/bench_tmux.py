"""The console's right-hand tmux pane (issue 8), measured on the real console in a real tmux with
a real bottle:

- Enter on an agent -> the right pane runs a new command (its pid changed): the console's part;
- Enter -> claude's banner drawn in the pane: what the operator waits for (claude's own start
  inside the bottle included);
- the first attach (split) and later ones (respawn), alternating between two bottles and
  re-attaching to the same one;
- claude processes left in each bottle after all of that (the pane's old sessions are ended);
- a proposal file written -> the console's pane selected again.

The bottles have no route to a model; claude's first-run questions are answered in the agents'
~/.claude.json so that claude sits at its prompt, as it does for an operator after the first run.
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cli, make_home  # noqa: E402

from tests.support.console_screen import SKIP_CLAUDE_FIRST_RUN, agent_rows, focus_agents, settle  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_TMUX_ROUNDS", "8"))
SOCKET = f"bench-tmux-{uuid.uuid4().hex[:6]}"


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=check, timeout=30).stdout


def panes() -> list[tuple[str, str, str]]:
    """(pane id, pid, active) of each pane in the console's window."""
    out = tmux("list-panes", "-t", "console", "-F", "#{pane_id} #{pane_pid} #{pane_active}")
    return [tuple(line.split()) for line in out.splitlines()]  # type: ignore[misc]


def wait(predicate, what: str, timeout: float = 60) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter() - t0


def claude_count(slug: str) -> int:
    out = subprocess.run(
        ["docker", "exec", f"claude-bottle-{slug}-agent", "ps", "-eo", "args="], capture_output=True, text=True
    ).stdout
    return sum(1 for line in out.splitlines() if line.split()[:1] == ["claude"])


def ms(samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
    return f"median {statistics.median(s) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (n={len(s)})"


def main() -> int:
    home = make_home()
    slugs: list[str] = []
    try:
        for _ in range(2):
            slugs.append(cli(home, "start", "bench", "--yes", "--detach").stdout.strip().splitlines()[-1])
        for slug in slugs:
            subprocess.run(
                ["docker", "exec", f"claude-bottle-{slug}-agent", "python3", "-c", SKIP_CLAUDE_FIRST_RUN], check=True
            )
        command = f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m bottle_tui --home {shlex.quote(str(home))} console"
        tmux("new-session", "-d", "-s", "console", "-x", "300", "-y", "50", command)
        console = panes()[0][0]
        screen = lambda pane=console: tmux("capture-pane", "-p", "-t", pane)
        wait(
            lambda: all(s in agent_rows(screen()) for s in slugs) if "─ Agents" in screen() else False,
            "the bottles in the console",
        )
        order = agent_rows(screen())
        tmux("send-keys", "-t", console, *(["j"] * order.index(slugs[0])))
        time.sleep(0.3)
        split_cmd: list[float] = []
        respawn_cmd: list[float] = []
        to_banner: list[float] = []
        position = 0
        for i in range(ROUNDS):
            # alternate: the same bottle twice, then the other one
            target = 0 if i % 3 != 2 else 1
            if target != position:
                tmux("send-keys", "-t", console, "j" if target > position else "k")
                position = target
                time.sleep(0.3)
            tmux("select-pane", "-t", console)
            focus_agents(screen, lambda key: tmux("send-keys", "-t", console, key))
            before = {p[0]: p[1] for p in panes()}
            right_before = [p for p in before if p != console]
            t0 = time.perf_counter()
            tmux("send-keys", "-t", console, "Enter")

            def started() -> bool:
                now = [p for p in panes() if p[0] != console]
                return bool(now) and (not right_before or now[0][1] != before[right_before[0]])  # noqa: B023 - called at once

            wait(started, "the pane's new command")
            (split_cmd if not right_before else respawn_cmd).append(time.perf_counter() - t0)
            right = [p for p in panes() if p[0] != console][0][0]
            wait(
                lambda: "Claude Code v" in screen(right) and "❯" in screen(right),  # noqa: B023 - called at once
                "claude's banner and prompt",
                timeout=90,
            )
            to_banner.append(time.perf_counter() - t0)
            settle(screen, quiet=2.0)
        time.sleep(3.0)  # the ends of the left sessions are asynchronous
        counts = {slug: claude_count(slug) for slug in slugs}
        # a proposal while the operator types in claude's pane: the console's pane is selected
        right = [p for p in panes() if p[0] != console][0][0]
        selects: list[float] = []
        from bottle_tui import proposals
        from bottle_tui.state import state_dir

        for i in range(5):
            tmux("select-pane", "-t", right)
            time.sleep(0.5)
            t0 = time.perf_counter()
            proposals.create(
                state_dir(home, slugs[0]),
                "egress-route",
                {"host": f"n{i}.example.org", "ports": [443], "methods": ["GET"], "paths": []},
                "bench",
            )
            wait(
                lambda: next(p for p in panes() if p[0] == console)[2] == "1",
                "the console's pane to be selected",
                timeout=10,
            )
            selects.append(time.perf_counter() - t0)
        print(
            f"tmux pane: Enter -> the right pane runs the new command: first attach (split) {ms(split_cmd)}; later ones (respawn) {ms(respawn_cmd)}"
        )
        print(
            f"tmux pane: Enter -> claude's banner and prompt in the pane (claude's own start in the bottle included): {ms(to_banner)}"
        )
        print(
            f"tmux pane: claude processes left in the bottles after {ROUNDS} attaches: {counts}  [one where the pane is, none elsewhere]"
        )
        print(f"tmux pane: proposal file written -> the console's pane selected: {ms(selects)}")
        print(f"machine load while measuring: {os.getloadavg()[0]:.1f} (1-min load average, {os.cpu_count()} cores)")
    finally:
        tmux("kill-server", check=False)
        Path(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", SOCKET).unlink(missing_ok=True)
        for slug in slugs:
            cli(home, "stop", slug)
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
