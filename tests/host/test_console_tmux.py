"""The console's right-hand tmux pane, against a real tmux server on an isolated socket (libtmux's
pytest fixtures). The console runs under Pilot in this process and is told, as `$TMUX` and
`$TMUX_PANE` would tell it, that it lives in the first pane of the test session. What the pane
runs for an agent is a shell that says which agent it is (the real `docker exec … claude` is
covered by tests/integration/test_console_tmux_live.py); everything tmux does is real.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import libtmux
import pytest

from bottle_tui.backends.docker.lifecycle import StopReport
from bottle_tui.console.agent_flows import follow_log_argv
from bottle_tui.console.screens import ConfirmScreen, LogScreen, PickerScreen
from bottle_tui.console.tmux import ROLE, RightPane
from bottle_tui.plan import claude_session
from tests.support.console import FakeEngine, info, make_app, rows, write_proposal

if shutil.which("tmux") is None:  # `make test` installs tmux (scripts/engine.sh) before it runs
    if os.environ.get("BOTTLE_REQUIRE_DOCKER"):
        raise RuntimeError("tmux is not installed: run `make engine` (it installs tmux)")
    pytest.skip("tmux is not installed (run `make engine`, which installs it)", allow_module_level=True)

A, B, C = "alpha-aaaaaa", "bravo-bbbbbb", "charlie-cccccc"
AGENT_SCRIPT = 'echo "claude for $1"; exec sleep 600'


async def until(pilot, predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if await asyncio.to_thread(predicate):
            return
    raise AssertionError(f"timed out waiting for {what}")


def text(pane: libtmux.Pane) -> str:
    return "\n".join(pane.capture_pane())


def panes(window: libtmux.Window) -> list[str]:
    return [p.pane_id for p in window.panes]


class Recorder:
    """What the console asked the bottles to do (stand-ins for docker at the process boundary)."""

    def __init__(self, fake: FakeEngine, home: Path) -> None:
        self.fake, self.home = fake, home
        self.ended: list[str] = []
        self.script = AGENT_SCRIPT
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    def pane_argv(self, home: Path, slug: str, backend: str) -> list[str]:
        return ["sh", "-c", self.script, "agent", slug]

    async def end_session(self, home: Path, slug: str, backend: str) -> None:
        self.ended.append(slug)

    async def stop(self, home: Path, bottle, say) -> StopReport:
        log = home / "state" / bottle.slug / "teardown.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"stopping claude-bottle-{bottle.slug}\n")
        self.stopping.set()
        await self.release.wait()
        self.fake.bottles = [b for b in self.fake.bottles if b.slug != bottle.slug]
        return StopReport(bottle.slug)

    async def start(self, plan, say) -> None:
        plan.state.create()
        say("warning: $TOKEN is not set here")
        with plan.state.bringup_log.open("a") as fh:
            fh.write(f"starting bottle {plan.slug}\n")
        await self.release.wait()
        with plan.state.bringup_log.open("a") as fh:
            fh.write("ready\n")
        self.fake.bottles = [*self.fake.bottles, info(plan.slug)]


@pytest.fixture
def session_params() -> dict[str, int]:
    """libtmux's session fixture: a window wide enough that half of it holds a log line."""
    return {"x": 220, "y": 50}


@pytest.fixture
def console_pane(session: libtmux.Session) -> tuple[libtmux.Pane, dict[str, str]]:
    """The test session's first pane stands where the console's terminal would be."""
    pane = session.active_window.active_pane
    assert pane is not None
    socket = session.server.cmd("display-message", "-p", "-t", pane.pane_id, "#{socket_path}").stdout[0]
    return pane, {"TMUX": f"{socket},1,0", "TMUX_PANE": str(pane.pane_id)}


@pytest.fixture
def fake() -> FakeEngine:
    f = FakeEngine()
    f.bottles = [info(A), info(B), info(C)]
    return f


def console(tmp_path: Path, fake: FakeEngine, env: dict[str, str], rec: Recorder | None = None, **kw):
    rec = rec or Recorder(fake, tmp_path / "home")
    app = make_app(
        tmp_path / "home",
        fake,
        tmux_env=env,
        pane_argv=rec.pane_argv,
        end_session=rec.end_session,
        stop=rec.stop,
        start=rec.start,
        **kw,
    )
    return app, rec


async def ready(pilot, app) -> None:
    await until(
        pilot,
        lambda: app.pane.split is not None and len(rows(app, "bottles")) == 3 and app.proposals_pane.loaded,
        "the console with its pane",
    )


async def split_off(pilot, console: libtmux.Pane) -> libtmux.Pane:
    """Wait for the right pane beside ``console`` and return it."""
    window = console.window
    await until(pilot, lambda: len(window.panes) == 2, "the right pane")
    return [p for p in window.panes if p.pane_id != console.pane_id][0]


def slug_cells(app) -> list[str]:
    return [r[0] for r in rows(app, "bottles")]


def marked(app) -> list[str]:
    table = app.query_one("#bottles")
    return [
        key.value
        for key in table.rows
        if table.get_row(key)[0].plain.startswith("* ") and "bold" in str(table.get_row(key)[0].style)
    ]


async def test_first_attach_splits_the_next_respawns_and_the_marker_follows(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    pane, env = console_pane
    window = pane.window
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        assert panes(window) == [pane.pane_id] and marked(app) == []
        await pilot.press("enter")  # the cursor is on alpha
        right = await split_off(pilot, pane)
        await until(pilot, lambda: f"claude for {A}" in text(right), "alpha's claude in the right pane")
        pane.refresh()
        right.refresh()
        assert right.at_right and not pane.at_right and right.pane_left > pane.pane_left
        right.refresh()
        assert right.pane_active == "1", "attach selects the right pane so the user can type at once"
        assert marked(app) == [A] and slug_cells(app)[0] == f"* {A}"
        # The second attach respawns the same pane: still two panes, the same id, bravo in it.
        await pilot.press("j", "enter")
        await until(pilot, lambda: f"claude for {B}" in text(right), "bravo's claude in the same pane")
        assert panes(window) == [pane.pane_id, right.pane_id]
        await until(pilot, lambda: marked(app) == [B], "bravo marked")
        assert slug_cells(app)[:2] == [A, f"* {B}"]
        # The pane left alpha's claude: the console ends it in alpha's bottle.
        await until(pilot, lambda: rec.ended == [A], "alpha's pane session to be ended")
        await pilot.press("q")


async def test_a_killed_pane_is_noticed_and_the_next_attach_splits_again(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    pane, env = console_pane
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        first = await split_off(pilot, pane)
        first.kill()
        await pilot.press("f5")  # a refresh (or the reconcile timer) looks at the pane again
        await until(pilot, lambda: marked(app) == [], "the marker to go with the pane")
        assert rec.ended == [A]  # the closed pane's claude is ended in its bottle
        await pilot.press("enter")
        second = await split_off(pilot, pane)
        assert second.pane_id != first.pane_id
        await until(pilot, lambda: f"claude for {A}" in text(second), "alpha's claude in the new pane")
        assert marked(app) == [A]


@pytest.mark.parametrize("remain", ["off", "on"])
async def test_a_dead_pane_is_respawned_in_place(tmp_path: Path, fake: FakeEngine, console_pane, remain: str) -> None:
    """A claude that fails leaves a dead pane with its last screen (the console asks tmux for that
    unless the operator's remain-on-exit keeps every pane); the next attach respawns that pane
    rather than adding one."""
    pane, env = console_pane
    window = pane.window
    pane.session.server.cmd("set-option", "-g", "remain-on-exit", remain)
    app, rec = console(tmp_path, fake, env)
    rec.script = 'echo "claude for $1 exits"; sleep 0.3; exit 3'
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        right = await split_off(pilot, pane)
        await until(pilot, lambda: right.display_message("#{pane_dead}", get_text=True) == ["1"], "the pane to be dead")
        await pilot.press("j", "enter")
        await until(pilot, lambda: f"claude for {B} exits" in text(right), "bravo in the respawned pane")
        assert panes(window) == [pane.pane_id, right.pane_id]
        # The console's own pane keeps the operator's setting: it is not kept dead on exit.
        assert pane.display_message("#{remain-on-exit}", get_text=True) == [remain]


async def test_stop_shows_the_teardown_then_the_next_agent_takes_the_pane(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    pane, env = console_pane
    window = pane.window
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("j", "enter")  # bravo, the middle row, in the pane
        await until(pilot, lambda: marked(app) == [B], "bravo in the pane")
        right = [p for p in window.panes if p.pane_id != pane.pane_id][0]
        pane.select()  # the operator comes back to the console to press x there
        rec.release.clear()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        await until(pilot, lambda: rec.stopping.is_set(), "the stop to begin")
        await until(pilot, lambda: f"stopping claude-bottle-{B}" in text(right), "bravo's teardown.log in the pane")
        assert len(app.screen_stack) == 1, "the teardown goes to the pane, not to a dialog on the console"
        rec.release.set()
        # charlie fills bravo's row, so charlie takes the pane; it is not selected (the operator
        # pressed x in the console and stays there).
        await until(pilot, lambda: f"claude for {C}" in text(right), "charlie in the pane")
        # (claude prints before the pane is tagged for it: the marker follows the tag)
        await until(pilot, lambda: marked(app) == [C], "charlie marked")
        assert panes(window) == [pane.pane_id, right.pane_id]
        pane.refresh()
        assert pane.pane_active == "1"
        # charlie is the last row: when it stops, the new last row (alpha) takes the pane.
        await until(pilot, lambda: slug_cells(app) == [A, f"* {C}"], "bravo's row to go")
        rec.stopping.clear()
        await pilot.press("j", "x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        await until(pilot, lambda: f"claude for {A}" in text(right), "alpha in the pane")
        await until(pilot, lambda: marked(app) == [A], "alpha marked")
        # The last agent stops: the pane closes.
        await until(pilot, lambda: slug_cells(app) == [f"* {A}"], "charlie's row to go")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        await until(pilot, lambda: panes(window) == [pane.pane_id], "the pane to close")
        await until(pilot, lambda: slug_cells(app) == [], "the last row to go")


async def test_a_bottle_stopped_from_outside_hands_the_pane_on_as_x_does(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    """bravo's claude is in the pane and bravo is stopped by the CLI (or another console): its
    claude's exec ends with the bottle (the pane dies on its last screen) and the engine's events
    say the bottle went. The pane goes to the next agent, exactly as after x; the console stays
    the active pane, and nothing is ended in the gone bottle."""
    pane, env = console_pane
    window = pane.window
    app, rec = console(tmp_path, fake, env)
    rec.script = 'echo "claude for $1"; read -r line; exit 1'  # dies (non-zero) when told, as a cut exec does
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("j", "enter")
        right = await split_off(pilot, pane)
        await until(pilot, lambda: f"claude for {B}" in text(right), "bravo's claude in the pane")
        pane.select()
        right.send_keys("gone", enter=True)  # the exec client ends with the bottle
        await until(pilot, lambda: right.display_message("#{pane_dead}", get_text=True) == ["1"], "the dead pane")
        fake.bottles = [info(A), info(C)]
        app.refresh_bottles()  # what a `docker events` line does
        await until(pilot, lambda: f"claude for {C}" in text(right), "charlie in the pane")
        await until(pilot, lambda: marked(app) == [C], "charlie marked")
        assert panes(window) == [pane.pane_id, right.pane_id]
        pane.refresh()
        assert pane.pane_active == "1" and rec.ended == []
        # The last row goes from outside too: the next (now last) row, alpha, takes the pane.
        right.send_keys("gone", enter=True)
        fake.bottles = [info(A)]
        app.refresh_bottles()
        await until(pilot, lambda: f"claude for {A}" in text(right), "alpha in the pane")
        await until(pilot, lambda: marked(app) == [A], "alpha marked")


async def test_stopping_another_agent_leaves_a_working_claude_alone(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    pane, env = console_pane
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        right = await split_off(pilot, pane)
        await until(pilot, lambda: f"claude for {A}" in text(right), "alpha in the pane")
        await pilot.press("j", "j", "x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirm")
        await pilot.press("y")
        await until(pilot, lambda: slug_cells(app) == [f"* {A}", B], "charlie to stop")
        assert f"claude for {A}" in text(right) and "teardown" not in text(right) and rec.ended == []


async def test_a_new_proposal_selects_the_console_pane(tmp_path: Path, fake: FakeEngine, console_pane) -> None:
    pane, env = console_pane
    window = pane.window
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        await pilot.press("enter")
        await until(pilot, lambda: len(window.panes) == 2, "the split")
        # the split and its selection are two tmux calls: the user types in claude's pane once both ran
        await until(
            pilot, lambda: pane.display_message("#{pane_active}", get_text=True) == ["0"], "claude's pane selected"
        )
        write_proposal(tmp_path / "home", A)
        app.reload_proposals()  # what the file watch does when the queue file appears
        await until(
            pilot,
            lambda: pane.display_message("#{pane_active}", get_text=True) == ["1"],
            "the console's pane to be selected",
        )
        assert app.bells == 1


async def test_a_new_agent_brings_up_in_the_pane_then_claude_replaces_the_log(
    tmp_path: Path, fake: FakeEngine, console_pane
) -> None:
    pane, env = console_pane
    window = pane.window
    app, rec = console(tmp_path, fake, env)
    rec.release.clear()
    async with app.run_test(size=(140, 50)) as pilot:
        await ready(pilot, app)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), "the picker")
        await pilot.press(*"impl", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the preflight")
        await pilot.press("y")
        right = await split_off(pilot, pane)
        await until(pilot, lambda: "starting bottle implementer-" in text(right), "bringup.log in the pane")
        shown = text(right)
        assert "warning: $TOKEN is not set here" in shown, "the console's own progress goes to the log the pane follows"
        assert len(app.screen_stack) == 1 and not isinstance(app.screen, LogScreen)
        slug = app.pane.occupant.slug
        rec.release.set()
        await until(pilot, lambda: f"claude for {slug}" in text(right), "the new agent's claude in the pane")
        await until(pilot, lambda: marked(app) == [slug], "the new agent marked")
        assert panes(window) == [pane.pane_id, right.pane_id]


async def test_tmux_failures_are_one_line_and_enter_falls_back(tmp_path: Path, fake: FakeEngine, console_pane) -> None:
    pane, env = console_pane
    app, rec = console(tmp_path, fake, env)
    async with app.run_test(size=(140, 30)) as pilot:
        await ready(pilot, app)
        pane.session.server.kill()
        await pilot.press("enter")
        await until(pilot, lambda: app.pane.split is None, "the split mode to end")
        messages = [n.message for n in app._notifications]
        gone = [m for m in messages if m.startswith("tmux: ")]
        assert gone and all("\n" not in m for m in gone) and "Enter opens claude full-screen" in gone[0]
        # The headless test terminal cannot hand over either: that, too, is a one-line message.
        await until(
            pilot, lambda: any("cannot hand over" in n.message for n in app._notifications), "the fallback to be tried"
        )
        assert "bottle-tui --tmux" in str(app.query_one("#hint").render())


async def test_no_tmux_on_path_is_a_message_not_a_crash(
    tmp_path: Path, fake: FakeEngine, console_pane, monkeypatch
) -> None:
    _, env = console_pane
    app, _ = console(tmp_path, fake, env)
    with monkeypatch.context() as patched:  # undone before the test's tmux server is reaped
        patched.setenv("PATH", str(tmp_path / "empty"))
        async with app.run_test(size=(140, 30)) as pilot:
            await until(
                pilot,
                lambda: any(n.message.startswith("tmux: $TMUX is set but no tmux") for n in app._notifications),
                "the message",
            )
            # the hint is written once the first discovery is in (the workers start after the first frame)
            await until(pilot, lambda: "`bottle-tui --tmux`" in str(app.query_one("#hint").render()), "the hint")
            assert app.pane.split is None


def test_a_console_restarted_in_the_window_adopts_the_pane(console_pane) -> None:
    pane, env = console_pane
    split = RightPane.from_env(env)
    occupant, before = split.show(["sleep", "60"], slug=A, shows="claude", select=False)
    assert before is None
    again = RightPane.from_env(env).find()
    assert again == occupant and (again.slug, again.shows) == (A, "claude")
    split.mark_console(True)
    assert pane.display_message("#{%s}" % ROLE, get_text=True) == ["console"]


def _fake_claude(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>" "$a"; done; echo; sleep 600\n')
    (bin_dir / "claude").chmod(0o755)
    return bin_dir


def test_the_continue_fallback_keeps_every_argument_as_it_was(tmp_path: Path, console_pane) -> None:
    """The pane's command (argv through tmux, then `sh -c` in the agent) with arguments that a
    shell would split or expand: each reaches claude whole, on both sides of the fallback."""
    pane, env = console_pane
    split = RightPane.from_env(env)
    transcripts = tmp_path / "my projects"
    transcripts.mkdir()
    args = [
        "--add-dir",
        "/work/a dir with spaces",
        'it\'s "quoted" $HOME `id` ;|&',
        "--append-system-prompt",
        "two\nlines",
    ]
    path_env = {"PATH": f"{_fake_claude(tmp_path)}:{os.environ['PATH']}"}
    expected = "".join(f"<{a}>" for a in args).split("\n")[0]

    def shown_after(argv: list[str], needle: str) -> str:
        occupant, _ = split.show(argv, slug=A, shows="claude", select=False, env=path_env)
        right = libtmux.Pane.from_pane_id(server=pane.server, pane_id=occupant.pane_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and needle not in text(right):
            time.sleep(0.05)
        return text(right)

    # Nothing to continue: a fresh session.
    out = shown_after(claude_session(args, fresh=False, pane=False, transcripts=str(transcripts)), "<--add-dir>")
    assert out.replace("\n", "").startswith(expected) and "<--continue>" not in out
    # A transcript there: --continue first, the rest unchanged.
    (transcripts / "w").mkdir()
    (transcripts / "w" / "s.jsonl").write_text("{}\n")
    out = shown_after(claude_session(args, fresh=False, pane=False, transcripts=str(transcripts)), "<--continue>")
    assert out.replace("\n", "").startswith("<--continue>" + expected)
    # --fresh never continues.
    out = shown_after(claude_session(args, fresh=True, pane=False, transcripts=str(transcripts)), "<--add-dir>")
    assert "<--continue>" not in out


def test_the_pane_session_ends_the_one_before_it(tmp_path: Path, monkeypatch) -> None:
    """Each pane session first ends the previous pane session (a respawned pane's `docker exec`
    leaves its process running in the bottle); sessions opened with `bottle-tui attach` are not
    the pane's and are left alone."""
    import bottle_tui.plan as plan

    monkeypatch.setattr(plan, "PANE_PIDFILE", str(tmp_path / "pane.pid"))
    env = {**os.environ, "PATH": f"{_fake_claude(tmp_path)}:{os.environ['PATH']}"}

    def launch(pane: bool) -> subprocess.Popen:
        argv = plan.claude_session(["x"], fresh=True, pane=pane, transcripts=str(tmp_path))
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, start_new_session=True)

    own = launch(pane=False)
    first = launch(pane=True)
    deadline = time.monotonic() + 5
    while not (tmp_path / "pane.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = launch(pane=True)
    try:
        assert first.wait(timeout=5) != 0, "the first pane session was ended"
        time.sleep(0.3)
        assert second.poll() is None and own.poll() is None
        subprocess.run(plan.end_pane_session_argv(), env=env, check=True, timeout=10)
        assert second.wait(timeout=5) != 0 and own.poll() is None
        assert not (tmp_path / "pane.pid").exists()
    finally:
        for p in (own, first, second):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()


def test_a_log_path_with_spaces_is_followed(tmp_path: Path, console_pane) -> None:
    pane, env = console_pane
    split = RightPane.from_env(env)
    log = tmp_path / "a home" / "state" / "x y" / "bringup.log"
    occupant, _ = split.show(follow_log_argv(log, "bringing up x y"), slug="x y", shows="bringup", select=False)
    right = libtmux.Pane.from_pane_id(server=pane.server, pane_id=occupant.pane_id)
    log.parent.mkdir(parents=True)
    log.write_text("first line\n")
    deadline = time.monotonic() + 10
    while "first line" not in text(right) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "bringing up x y" in text(right) and "first line" in text(right)


def test_bottle_tui_tmux_opens_one_session_per_home_and_reattaches(tmp_path: Path, console_pane) -> None:
    """`bottle-tui --tmux` typed in a terminal (the test session's pane, with $TMUX unset so the
    tmux it starts is a fresh server under its own TMUX_TMPDIR): a session with the console; run
    again, it attaches to that session; when the console there has quit but the session lives
    on, it adds a window with a console rather than a second session."""
    import sys

    from bottle_tui.cli import tmux_session_name

    # A plain sh as the terminal's shell: the operator's shell start-up files play no part.
    outer = console_pane[0].window.session.new_window(window_shell="/bin/sh").active_pane
    home = tmp_path / "a home"
    tmpdir = tmp_path / "tmux"
    tmpdir.mkdir()
    inner = libtmux.Server(socket_path=str(tmpdir / f"tmux-{os.getuid()}" / "default"))
    name = tmux_session_name(home)
    command = (
        f"env -u TMUX -u TMUX_PANE -u COLUMNS -u LINES TMUX_TMPDIR='{tmpdir}' "
        f"{sys.executable} -m bottle_tui --home '{home}' --tmux"
    )

    def consoles() -> list[str]:
        out = inner.cmd("list-panes", "-s", "-t", f"={name}", "-F", "#{pane_id} #{%s}" % ROLE).stdout
        return [line.split()[0] for line in out if line.endswith(" console")]

    def wait(predicate, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the terminal shows:\n{text(outer)}")

    try:
        outer.send_keys(command)
        wait(lambda: inner.has_session(name) and len(consoles()) == 1, "the session with its console")
        assert name.startswith("bottle-tui-") and [s.name for s in inner.sessions] == [name]
        wait(lambda: "Proposals" in text(outer), "the console on the terminal")
        outer.send_keys("C-b", enter=False, literal=False)
        outer.send_keys("d", enter=False)  # detach: the console keeps running in its session
        wait(lambda: "detached" in text(outer), "the detach")
        outer.send_keys("clear", enter=True)
        outer.send_keys(command)
        wait(lambda: "Proposals" in text(outer), "the console again")
        assert len(consoles()) == 1 and len(inner.sessions) == 1 and len(inner.sessions[0].windows) == 1
        # Another pane in the session, then the console quits: the session lives on without one.
        session = inner.sessions[0]
        session.active_window.active_pane.split(shell="sleep 600", attach=False)
        outer.send_keys("q", enter=False)
        wait(lambda: consoles() == [] and len(session.active_window.panes) == 1, "the console to quit")
        outer.send_keys("C-b", enter=False, literal=False)
        outer.send_keys("d", enter=False)
        wait(lambda: "detached" in text(outer), "the detach")
        outer.send_keys(command)
        wait(lambda: len(consoles()) == 1, "a console in a new window of the same session")
        assert len(inner.sessions) == 1 and len(inner.sessions[0].windows) == 2
    finally:
        if inner.is_alive():
            inner.kill()
