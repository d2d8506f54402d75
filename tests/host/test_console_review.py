"""`d` on an agent: the review screen, fed a real git repository's output (the same GitReview that
reads a bottle's checkout, run on a folder here), driven with Pilot. The engine listing is the
tests' FakeEngine (no engine in a unit test); everything git does is real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from bottle_tui import work_review as wr
from bottle_tui.console.review import DiffStyle, ReviewScreen, render_diff
from bottle_tui.ops import BottleInfo
from tests.support.console import FakeEngine, info, make_app, make_state, until
from tests.support.repos import HOSTILE, git, make_repo, make_worked_repo, write

SLUG = "implementer-aaaaaa"
PLAIN = "reviewer-bbbbbb"  # a bottle without git


def git_bottle(home: Path, slug: str) -> None:
    """The state a bottle with git leaves on the host: its gate config and where it started."""
    state = make_state(home, slug)
    state.git_gate.mkdir(exist_ok=True)
    state.gate_config.write_text(json.dumps({"branch": "main"}))


@pytest.fixture
def setup(tmp_path: Path):
    home = tmp_path / "home"
    repo, base = make_worked_repo(tmp_path / "repo")
    git_bottle(home, SLUG)
    make_state(home, PLAIN)
    fake = FakeEngine()
    fake.bottles = [info(SLUG), info(PLAIN, agent="reviewer")]
    asked: list[str] = []

    async def review(home_: Path, bottle: BottleInfo) -> wr.GitReview:
        asked.append(bottle.slug)
        return wr.GitReview(wr.local_exec(), str(repo), base, title=f"{bottle.slug}: what the agent changed")

    return home, fake, review, asked, repo, base


def screen_of(app) -> ReviewScreen:
    assert isinstance(app.screen, ReviewScreen)
    return app.screen


def view_text(screen: ReviewScreen) -> str:
    return str(screen.query_one("#review-diff", Static).render())


async def test_d_opens_the_review_of_the_selected_agent(setup) -> None:
    home, fake, review, asked, repo, base = setup
    app = make_app(home, fake, review=review)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.agents_pane.has_work.get(SLUG) is True, "the bottle's git to be known")
        app.agents_pane.focus()
        app.agents_pane.move_cursor(row=app.agents_pane.get_row_index(SLUG))
        await pilot.pause()
        assert "diff" in {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}
        await pilot.press("d")
        await until(
            pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.counted, "the review", timeout=20
        )
        screen = screen_of(app)
        assert asked == [SLUG]
        files = screen.query_one("#review-files", DataTable)
        assert files.row_count == len(HOSTILE) + 7
        names = [str(files.get_row(k)[3]) for k in files.rows]
        # Every name shows, and shows inert: an escape or newline in it is U+FFFD, markup stays literal.
        assert "[bold]markup[/bold].txt" in names
        assert "\ufffd[31mred\ufffd[0m.txt" in names
        assert "new\ufffdline.txt" in names
        assert all("\x1b" not in n and "\n" not in n for n in names)
        assert "old.py → renamed.py" in names
        # The first file's diff shows once highlighted; moving down loads the next one's.
        await until(pilot, lambda: "loading" not in view_text(screen) and view_text(screen), "the first diff")
        target = next(k for k in files.rows if str(files.get_row(k)[3]) == "README.md")
        files.move_cursor(row=files.get_row_index(target))
        await until(pilot, lambda: "+unstaged line" in view_text(screen), "README.md's diff")
        assert "wip" == str(files.get_row(target)[1]) and "+1 -0" == str(files.get_row(target)[2])
        # The commits, with their messages inert.
        commits = screen.query_one("#review-commits", DataTable)
        assert [str(c) for c in commits.get_row(next(iter(commits.rows)))][0] == "main"
        await pilot.press("tab")  # to the commits: the view shows the highlighted one's message
        assert commits.has_focus
        await until(pilot, lambda: "body line" in view_text(screen), "the commit message")
        assert "\ufffd[2J[bold]agent[/bold] work" in view_text(screen)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ReviewScreen), "the screen to close")


async def test_d_on_a_bottle_without_git_says_so_in_one_line(setup) -> None:
    home, fake, review, asked, *_ = setup
    app = make_app(home, fake, review=review)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: PLAIN in app.agents_pane.has_work, "the bottles' git to be known")
        app.agents_pane.focus()
        app.agents_pane.move_cursor(row=app.agents_pane.get_row_index(PLAIN))
        await pilot.pause()
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}
        assert "diff" not in shown  # the footer does not offer it here
        await pilot.press("d")
        await until(pilot, lambda: bool(app._notifications), "a notification")
        message = str(list(app._notifications)[-1].message)
        assert message == f"{PLAIN} has no git: in its bottle file, so there is no checkout to review"
        assert asked == [] and not isinstance(app.screen, ReviewScreen)


async def test_a_repository_gone_says_so_in_the_screen(setup, tmp_path: Path) -> None:
    home, fake, _, _, repo, base = setup

    async def review(home_: Path, bottle: BottleInfo) -> wr.GitReview:
        return wr.GitReview(wr.local_exec(), str(tmp_path / "nothing-here"), base, title="gone")

    (tmp_path / "nothing-here").mkdir()
    app = make_app(home, fake, review=review)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.agents_pane.has_work.get(SLUG) is True, "the bottle's git")
        app.agents_pane.focus()
        app.agents_pane.move_cursor(row=app.agents_pane.get_row_index(SLUG))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen), "the screen")
        status = app.screen.query_one("#review-status", Static)
        await until(pilot, lambda: "no git checkout" in str(status.render()), "the one-line error")
        assert status.has_class("-error")


async def test_five_thousand_files_stream_in_while_the_screen_answers(tmp_path: Path) -> None:
    repo, base = make_repo(tmp_path / "repo")
    for i in range(5000):
        write(repo, f"src/{i // 100}/module_{i}.py".encode(), f"VALUE = {i}\n".encode())
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "many files")
    home = tmp_path / "home"
    git_bottle(home, SLUG)
    fake = FakeEngine()
    fake.bottles = [info(SLUG)]
    fetched: list[bytes] = []

    class Counting(wr.GitReview):
        async def file_diff(self, change: wr.FileChange) -> wr.FileDiff:
            fetched.append(change.path)
            return await super().file_diff(change)

    async def review(home_: Path, bottle: BottleInfo) -> wr.GitReview:
        return Counting(wr.local_exec(), str(repo), base, title="many")

    app = make_app(home, fake, review=review)
    seen: list[int] = []
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.agents_pane.has_work.get(SLUG) is True, "the bottle's git")
        app.agents_pane.focus()

        def sample() -> None:  # a timer of the app: it runs only while the event loop is free
            if isinstance(app.screen, ReviewScreen) and app.screen.is_mounted:
                seen.append(app.screen.query_one("#review-files", DataTable).row_count)

        timer = app.set_interval(0.001, sample)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen), "the screen")
        screen = screen_of(app)
        files = screen.query_one("#review-files", DataTable)
        await until(pilot, lambda: screen.counted, "the list and its counts", timeout=60)
        timer.stop()
        assert files.row_count == 5000
        assert any(0 < n < 5000 for n in seen), (
            f"the rows arrived in batches, with the loop turning between: {sorted(set(seen))}"
        )
        # Only the diffs of rows shown were fetched: not one per file.
        for _ in range(3):
            await pilot.press("down")
        await until(pilot, lambda: "+VALUE = " in view_text(screen), "a diff")
        assert 1 <= len(fetched) <= 4
        assert str(files.get_row("4242")[2]) == "+1 -0"


def test_render_diff_is_inert_and_highlighted() -> None:
    change = wr.FileChange("M", b"app.py")
    diff = wr.parse_patch(
        b"diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,2 @@\n"
        b" def f():\n-    return '[red]x[/red]'\n+    return '\x1b]0;owned\x07\xe2\x80\xae'\n"
    )
    text = render_diff(change, diff, DiffStyle())
    assert "-    return '[red]x[/red]'" in text.plain  # markup is text
    assert "\x1b" not in text.plain and "\x07" not in text.plain and "\u202e" not in text.plain
    assert "+    return '\ufffd]0;owned\ufffd\ufffd'" in text.plain
    styles = {str(span.style) for span in text.spans}
    assert len(styles) > 4  # the Python lexer coloured the code, beyond the diff's own colours


async def test_ops_says_a_bottle_without_git_has_nothing_to_review(tmp_path: Path) -> None:
    from bottle_tui import ops
    from bottle_tui.errors import BottleError

    home = tmp_path / "home"
    make_state(home, PLAIN)
    with pytest.raises(BottleError, match=f"^{PLAIN} has no git: in its bottle file, so there is no checkout"):
        await ops.review_work(home, info(PLAIN))
    assert not ops.has_work(home, info(PLAIN))
    git_bottle(home, SLUG)
    assert ops.has_work(home, info(SLUG))
