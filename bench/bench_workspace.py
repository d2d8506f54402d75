"""A bottle on a local repository: the time from `git push` in the agent to the git-push proposal
existing on the host (the gate's scan with the real gitleaks, the mirror taking the push, the
post-receive hook queueing it), and the time approving one takes to bring the branch home. One
real bottle on the engine, a repository in a temp folder; prints medians and extremes in ms and
asserts nothing."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.bottles import cli, sh, start_bottle, stop_bottle, write_home

ROUNDS = 9
MANIFESTS = {
    "agents/homer.md": "---\nbottle: homebox\n---\nA bench agent.\n",
    "bottles/homebox.md": "---\ngit: {upstream: ../../code/app}\nresources: {cpus: 1, memory: 1g, pids: 256}\n---\n",
}


def figures(name: str, ms: list[float]) -> None:
    print(f"{name}: median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}, n={len(ms)})")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-workspace-"))
    repo = root / "code" / "app"
    repo.mkdir(parents=True)
    ident = ["-c", "user.name=op", "-c", "user.email=op@example.test"]
    sh("git", "-C", str(repo), "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# app\n")
    sh("git", "-C", str(repo), "add", "README.md")
    sh("git", "-C", str(repo), *ident, "commit", "-qm", "first")
    home = write_home(root / "home")
    for rel, text in MANIFESTS.items():
        (home / rel).write_text(text)
    bottle = start_bottle(home, "homer")
    queue = bottle.state / "supervise" / "queue"
    to_proposal, push_alone, approve = [], [], []
    try:
        setup = "git config --global user.name a && git config --global user.email a@b.test && git checkout -q -b topic"
        sh("docker", "exec", bottle.agent, "sh", "-c", setup)
        for i in range(ROUNDS):
            made = f"echo {i} > f{i}.txt && git add f{i}.txt && git commit -qm 'round {i}' && git rev-parse HEAD"
            sha = sh("docker", "exec", bottle.agent, "sh", "-c", made).stdout.strip()
            start = time.monotonic()
            push = subprocess.Popen(
                ["docker", "exec", bottle.agent, "git", "push", "-q", "origin", "topic"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            found = None
            while found is None:
                for path in queue.glob("*.json"):
                    try:
                        data = json.loads(path.read_text())
                    except (OSError, ValueError):
                        continue
                    if data.get("kind") == "git-push" and data["change"].get("new") == sha:
                        found = data
                        break
                else:
                    time.sleep(0.005)
            to_proposal.append((time.monotonic() - start) * 1000)
            push.wait(timeout=60)
            push_alone.append((time.monotonic() - start) * 1000)
            t = time.monotonic()
            cli(home, "proposals", "approve", found["id"])
            approve.append((time.monotonic() - t) * 1000)
    finally:
        stop_bottle(bottle)
        shutil.rmtree(root, ignore_errors=True)
    print("bench_workspace: a bottle on a local repository (one small commit per push, real gitleaks in the gate)")
    figures("git push in the agent -> git-push proposal on the host", to_proposal)
    figures("git push in the agent, whole (docker exec included)", push_alone)
    figures("bottle-tui proposals approve (a CLI process; fetch + update-ref at home)", approve)


if __name__ == "__main__":
    main()
