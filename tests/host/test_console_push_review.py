"""A git-push proposal's detail is the review screen (`d`'s), fed from the gate's mirror: Enter on
the proposal shows its files, the branch's commits and each file's diff, read by the real git from
a real bare repository where the gate keeps it; `a` there approves it (after asking) and `r`
rejects it with a note, through the real library. The bottle's upstream is https (git.review),
so approving is a decision the gate then acts on; no operator repository is touched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from bottle_contract import proposal as contract
from bottle_tui import proposals
from bottle_tui.console.review import ReviewScreen
from bottle_tui.console.screens import ConfirmScreen, NoteScreen, ProposalDetail
from tests.support.console import FakeEngine, info, make_app, make_state, until

SLUG = "coder-abc123"
ENV = {
    "GIT_AUTHOR_NAME": "agent",
    "GIT_AUTHOR_EMAIL": "a@b",
    "GIT_COMMITTER_NAME": "agent",
    "GIT_COMMITTER_EMAIL": "a@b",
}


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **ENV}
    ).stdout.strip()


@pytest.fixture
def held_push(tmp_path: Path):
    """The gate's mirror of a bottle with one held push of `feature`, and its proposal."""
    home = tmp_path / "home"
    state = make_state(home, SLUG)
    state.git_gate.mkdir(exist_ok=True)
    state.gate_config.write_text(json.dumps({"repo": "app", "branch": "main"}))
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("# app\n")
    git("add", "README.md", cwd=work)
    git("commit", "-qm", "first", cwd=work)
    base = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "hello.py").write_text("print('hello from the agent')\n")
    (work / "README.md").write_text("# app\n\nnow with hello\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "add hello [b]bold?[/b]", cwd=work)
    new = git("rev-parse", "HEAD", cwd=work)
    mirror = state.mirror_repo("app")
    git("init", "-q", "--bare", str(mirror))
    git("push", "-q", str(mirror), "main", "feature", cwd=work)
    change = {"branch": "feature", "new": new, "home": None, "base": base, "rewrites": False, "commits": 1}
    data = contract.new_proposal(SLUG, "git-push", change, "add hello", upstream_at_push=None)
    q = proposals.queue(state)
    with q.lock():
        q.write(data)
    fake = FakeEngine()
    fake.bottles = [info(SLUG, agent="coder")]
    return home, fake, proposals.Proposal(data, state.queue / f"{data['id']}.json")


def cells(screen: ReviewScreen, table: str, column: int) -> list[str]:
    t = screen.query_one(table, DataTable)
    return [str(t.get_row_at(i)[column]) for i in range(t.row_count)]


async def open_push(pilot, app) -> ReviewScreen:
    await until(pilot, lambda: app.proposals_pane.loaded and app.proposals_pane.pending, "the proposal")
    await pilot.press("tab", "enter")
    await until(pilot, lambda: isinstance(app.screen, ReviewScreen), "the review screen")
    screen = app.screen
    assert isinstance(screen, ReviewScreen) and not isinstance(screen, ProposalDetail)
    await until(pilot, lambda: screen.counted, "the files and their counts")
    return screen


async def test_enter_on_a_git_push_opens_the_review_screen_of_what_it_brings(held_push) -> None:
    home, fake, p = held_push
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await open_push(pilot, app)
        title = str(screen.query_one("#review-title", Static).render())
        assert title == f"{SLUG}: git push of feature (proposal {p.id}, pending)"
        status = str(screen.query_one("#review-status", Static).render())
        assert status.startswith("lands in upstream's feature (the git gate pushes it there); since ")
        assert cells(screen, "#review-files", 3) == ["README.md", "hello.py"]
        assert cells(screen, "#review-files", 2) == ["+2 -0", "+1 -0"]
        assert cells(screen, "#review-commits", 2) == ["add hello [b]bold?[/b]"]  # inert, not markup
        await until(
            pilot, lambda: "now with hello" in str(screen.query_one("#review-diff", Static).render()), "README's diff"
        )
        await pilot.press("down")
        await until(
            pilot,
            lambda: "+print('hello from the agent')" in str(screen.query_one("#review-diff", Static).render()),
            "hello.py's diff",
        )
        shown = {b.binding.id for b in screen.active_bindings.values() if b.enabled}
        assert {"review.approve", "review.reject"} <= shown
        await pilot.press("escape")
        await until(pilot, lambda: len(app.screen_stack) == 1, "the review to close")
        assert proposals.load(p.path).pending


async def test_a_in_the_review_screen_approves_the_push_after_asking(held_push) -> None:
    home, fake, p = held_push
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_push(pilot, app)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        question = "\n".join(str(w.render()) for w in app.screen.query(Static))
        assert "Push it to upstream's feature (the git gate pushes it there)?" in question
        await pilot.press("y")
        await until(pilot, lambda: not proposals.load(p.path).pending, "the decision")
        decided = proposals.load(p.path)
        assert decided.status == "approved" and decided.data["decision"]["by"].endswith("(console)")
        await until(pilot, lambda: any(n.title == "Decided" for n in app._notifications), "the notification")
        line = next(n.message for n in app._notifications if n.title == "Decided")
        assert (
            line
            == f"{p.id}: approved (the git gate pushes it upstream now; the agent hears how it went on its next push)"
        )


async def test_r_in_the_review_screen_rejects_it_with_a_note(held_push) -> None:
    home, fake, p = held_push
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await open_push(pilot, app)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, NoteScreen), "the note")
        await pilot.press(*"tests first", "enter")
        await until(pilot, lambda: not proposals.load(p.path).pending, "the decision")
        decided = proposals.load(p.path)
        assert decided.status == "rejected" and decided.data["decision"]["note"] == "tests first"


async def test_a_decided_push_is_reviewed_without_the_keys_to_decide_it(held_push) -> None:
    from bottle_tui.console import proposal_flows

    home, fake, p = held_push
    app = make_app(home, fake)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.proposals_pane.loaded, "the first load")
        decided = proposals.Proposal({**p.data, "status": "approved"}, p.path)
        app.run_worker(proposal_flows.open_detail(app, decided))
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen), "the review screen")
        shown = {b.binding.id for b in app.screen.active_bindings.values() if b.enabled}
        assert "review.approve" not in shown and "review.reject" not in shown
        await pilot.press("a")  # nothing to decide here
        assert isinstance(app.screen, ReviewScreen)
