#!/usr/bin/env python3
"""The gate's post-receive hook: in review mode, each branch a clean push moved in the mirror
becomes a git-push proposal for the operator (review.py). Runs after the refs moved, so a proposal
names only commits the mirror holds. What it prints reaches the agent as ``remote: ...``."""

from __future__ import annotations

import os
import subprocess
import sys

from held import hold
from push_policy import GateError, load_config, parse_updates
from review import held_lines, queue_pushes

from bottle_contract import layout


def main() -> int:
    state_dir = os.environ.get("GIT_GATE_STATE", "/state/git-gate")
    git_dir = os.path.abspath(os.environ.get("GIT_DIR", "."))
    try:
        cfg = load_config(os.path.join(state_dir, layout.GATE_CONFIG))
        if not cfg.review:
            return 0
        made = queue_pushes(git_dir, cfg, state_dir, parse_updates(sys.stdin.read()))
        if not cfg.local:
            # an https upstream's refresh must not take the held tips away (held.py)
            for p in made:
                hold(git_dir, p["change"]["branch"], p["change"]["new"])
    except (GateError, OSError, subprocess.SubprocessError, ValueError) as e:
        # The push is in the mirror already; the agent learns it is not queued, and why.
        print(
            f"git-gate: the push is in the gate but could not be queued for review ({e}); commit again and push",
            file=sys.stderr,
        )
        return 1
    for line in held_lines(made):
        print(line, file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
