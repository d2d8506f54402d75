"""A small console on fixed data for the SVG snapshots: a fixed home under the temp folder (so
paths in the preflight are the same on every machine), a fake engine, a fixed clock, fixed image
refs and slug. Nothing here touches docker."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from bottle_contract.usage import Budget
from bottle_tui.backends.docker.engine import EngineStatus
from bottle_tui.ops import BottleInfo
from tests.support.console import (
    NOW,
    FakeEngine,
    RecordingConsole,
    info,
    make_state,
    write_proposal,
    write_status,
    write_usage,
)

HOME = Path(tempfile.gettempdir()) / "bottle-tui-console-snapshots" / "home"
SIZE = (150, 38)

AGENT = """---
bottle: dev
description: writes the code
---
You implement.
"""
REVIEWER = """---
bottle: dev
description: reads and comments
---
You review.
"""
BOTTLE = """---
description: a development bottle
egress:
  routes:
    - host: api.anthropic.com
    - host: pypi.org
      methods: [GET]
---
The development bottle.
"""


def fresh_home(populated: bool) -> Path:
    shutil.rmtree(HOME.parent, ignore_errors=True)
    for rel, text in (("agents/implementer.md", AGENT), ("agents/reviewer.md", REVIEWER), ("bottles/dev.md", BOTTLE)):
        (HOME / rel).parent.mkdir(parents=True, exist_ok=True)
        (HOME / rel).write_text(text)
    if populated:
        write_proposal(
            HOME,
            "implementer-aaaaaa",
            pid="20261127t075000000-aaaa0001",
            host="pypi.example.org",
            reason="pip install needs the package index\nsecond line of the reason",
            created_at="2026-11-27T07:50:00.000+00:00",
        )
        write_proposal(
            HOME,
            "implementer-aaaaaa",
            pid="20261127t075800000-aaaa0002",
            host="registry.npmjs.example",
            reason="[bold]npm install[/] \x1b[31mblocked",
            draft=True,
            created_at="2026-11-27T07:58:00.000+00:00",
        )
        write_proposal(
            HOME,
            "reviewer-bbbbbb",
            pid="20261127t075930000-bbbb0001",
            kind="dlp-exemption",
            change={"host": "api.example.com", "rule": "generic-api-key"},
            reason="the test fixture has a fake key",
            created_at="2026-11-27T07:59:30.000+00:00",
        )
        write_status(HOME, "implementer-aaaaaa", "waiting", since="2026-11-27T07:59:00+00:00")
        write_status(HOME, "reviewer-bbbbbb", "working", since="2026-11-27T07:57:00+00:00", event="PreToolUse")
        write_usage(HOME, "implementer-aaaaaa", output_tokens=48_000, budget=Budget(usd=2.0))
        write_usage(HOME, "reviewer-bbbbbb", output_tokens=2_000, model="claude-future-9")
    return HOME


class SnapshotConsole(RecordingConsole):
    def on_mount(self) -> None:
        super().on_mount()
        self.sub_title = "~/.claude-bottle"


def fixed_plan(home: Path, agent: str):
    from bottle_tui.ops import plan as plan_for
    from bottle_tui.state import state_dir

    plan = plan_for(home, agent)
    slug = f"{agent}-5n4p5h"
    return dataclasses.replace(
        plan,
        slug=slug,
        state=state_dir(home, slug),
        started_at="2026-11-27T08:00:00+00:00",
        images={"agent": "bottle-tui/agent:0123456789ab", "sidecars": "bottle-tui/sidecars:ba9876543210"},
    )


OTHER_HOME = "/srv/bottles/other-home"  # a home that is not the console's (no such folder is needed)


def make(
    *, populated: bool = True, engine_up: bool = True, theme: str | None = None, other_home: bool = False
) -> SnapshotConsole:
    home = fresh_home(populated)
    fake = FakeEngine()
    if populated:
        fake.bottles = [
            info("implementer-aaaaaa"),
            info("reviewer-bbbbbb", agent="reviewer", up=1, started="2026-11-27T07:45:00+00:00"),
        ]
    if other_home:
        fake.bottles = [
            dataclasses.replace(fake.bottles[0], home=str(home)),
            dataclasses.replace(info("implementer-cccccc", started="2026-11-27T07:30:00+00:00"), home=OTHER_HOME),
        ]
    if not engine_up:
        fake.status = EngineStatus(
            False,
            problem="no Docker engine answers (Cannot connect to the Docker daemon at unix:///var/run/docker.sock): run `make engine`",
        )
    return snapshot_console(home, fake, theme=theme, make_plan=fixed_plan)


def snapshot_console(home: Path, fake: FakeEngine, **kw) -> SnapshotConsole:
    """The console on ``fake``'s bottles: no watchers, a fixed clock, no ticking ages."""
    return SnapshotConsole(
        home,
        discover=fake.discover,
        status=fake.engine_status,
        watch_events=False,
        watch_files=False,
        clock=lambda: NOW,
        tick=False,
        **kw,
    )


# -- the review screen (`d`) on a repository made the same way every time ----------------------------

REVIEW_ROOT = Path(tempfile.gettempdir()) / "bottle-tui-review-snapshot"


def review_repo() -> tuple[Path, str]:
    """A repository with a start and an agent's work on it; the same commit ids on every run."""
    from tests.support.repos import git, make_repo, write

    shutil.rmtree(REVIEW_ROOT, ignore_errors=True)
    REVIEW_ROOT.mkdir(parents=True)
    repo, base = make_repo(REVIEW_ROOT / "repo")
    write(repo, b"old.py", b"def f():\n    return 1\n\n\ndef g(x):\n    return x * 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "old.py: a second function")
    base = git(repo, "rev-parse", "HEAD").decode().strip()
    write(repo, b"old.py", b"def f():\n    return 2  # [bold]changed[/bold]\n\n\ndef g(x):\n    return x * 3\n")
    git(repo, "mv", "gone.txt", "kept.txt")
    write(repo, b"\x1b[31mred\x1b[0m\nname.txt", b"hostile name\n")
    write(repo, b"logo.png", bytes(range(256)))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "\x1b[2J[bold]agent[/bold]: rework f and g\n\nWhy: the tests asked.")
    write(repo, b"notes.md", b"# notes\nnot added yet\n")
    return repo, base


def make_review() -> SnapshotConsole:
    from bottle_tui import work_review

    repo, base = review_repo()
    home = REVIEW_ROOT / "home"
    for rel, text in (("agents/implementer.md", AGENT), ("bottles/dev.md", BOTTLE)):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    state = make_state(home, "implementer-aaaaaa")
    state.git_gate.mkdir(exist_ok=True)
    state.gate_config.write_text('{"branch": "main"}')
    fake = FakeEngine()
    fake.bottles = [info("implementer-aaaaaa")]

    async def review(home_: Path, bottle: BottleInfo) -> work_review.GitReview:
        return work_review.GitReview(
            work_review.local_exec(),
            str(repo),
            base,
            title=f"{bottle.slug}: what the agent changed",
            base_note=f"since {base[:12]} on main, where its checkout began at bring-up",
        )

    return snapshot_console(home, fake, review=review)
